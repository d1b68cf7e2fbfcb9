"""The rejects file: each row that failed a check, with its file, line, rule and message before its
own columns, so a fixed file can be imported again."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO

import polars as pl

from importer.columns import COLUMN, ERROR, LINE, RAW, REJECT_META, RULE
from importer.files import open_output
from importer.jsontext import json_as_text, json_object, json_string


class RejectsWriter:
    """Appends rejected rows to `--rejects`, CSV or JSONL by the path's ending.

    Batches differ in their columns (JSONL keys, several inputs), so a CSV is written at close
    from a JSONL spool beside it, with the union of columns as its header.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._csv = path.suffix.lower() in (".csv", ".tsv")
        target = path.with_name(f".{path.name}.spool") if self._csv else path
        self._spool_path = target
        self._handle: IO[str] = open_output(target, "w", shown=path)

    def write(self, rejects: pl.DataFrame, *, source: str) -> None:
        """Append a batch's rejects (LINE, RULE, COLUMN, ERROR, then the row's JSON text cells)."""
        if rejects.height == 0:
            return
        row_columns = [c for c in rejects.columns if c not in (LINE, RULE, COLUMN, ERROR, RAW)]
        # `_raw` is the plain text of a line that could not be parsed, not a JSON text cell.
        raw = [(RAW, json_string(pl.col(RAW)))] if RAW in rejects.columns else []
        if self._csv:
            # The CSV holds the text a person typed, not JSON: strings decoded, objects as JSON.
            cells = [
                pl.coalesce(json_as_text(pl.col(c)), pl.col(c).replace("null", None))
                for c in row_columns
            ]
            values = [json_string(cell) for cell in cells]
        else:
            values = [pl.col(c) for c in row_columns]
        # Every column, empty ones too: a fixed rejects file must still fit the mapping.
        null = pl.lit("null")
        members = [(c, v.fill_null(null)) for c, v in zip(row_columns, values, strict=True)]
        meta = [
            ("_file", pl.lit(json.dumps(source, ensure_ascii=False))),
            ("_line", pl.col(LINE).cast(pl.String)),
            ("_rule", json_string(pl.col(RULE))),
            ("_error", json_string(pl.col(ERROR))),
        ]
        lines = rejects.select(json_object(meta + members + raw)).to_series()
        self._handle.write("\n".join(lines.to_list()) + "\n")

    def close(self) -> None:
        """Flush, and for a CSV target convert the spool."""
        self._handle.close()
        if not self._csv:
            return
        header: dict[str, None] = dict.fromkeys(REJECT_META)
        with self._spool_path.open(encoding="utf-8") as spool:
            for line in spool:
                header.update(dict.fromkeys(json.loads(line)))
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        with (
            self._spool_path.open(encoding="utf-8") as spool,
            self.path.open("w", encoding="utf-8", newline="") as out,
        ):
            writer = csv.DictWriter(out, fieldnames=list(header), delimiter=delimiter)
            writer.writeheader()
            for line in spool:
                writer.writerow(json.loads(line))
        self._spool_path.unlink()
