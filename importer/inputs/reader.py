"""Read CSV, TSV, JSON lines and Parquet inputs (plain, gzip or zstd) into bounded batches of rows
that keep every value exactly.

Every batch is a DataFrame with a `LINE` column (the row's line: JSONL's line number, or the CSV
record's row as a spreadsheet numbers it, header = 1) and one String column per input column that
holds the cell as JSON text: `"007"` for text, `7` for a number, `{"a":1}` for an object, null
when the cell is empty or the key absent. Text stays text unless every value of a CSV column
round-trips exactly as a number or boolean, so `007`, zip codes and 9007199254740993 survive.

Polars' own defaults lose data and hide bad input (type widening, keys dropped after row 100,
silent padding of short rows, one bad line failing a whole NDJSON read), so a file is read in
passes: a byte pass (encoding, line endings, fingerprint), for CSV a record pass that finds
records with the wrong number of fields, and a streaming Polars pass that decides column types;
then the batches. A CSV without quotes or lone CRs (most exports) has its record and type passes
done as one pass of Polars string expressions over its lines, since there a record is a line;
others go through Python's csv module. Rows that cannot be read become rejects; files that
cannot be read raise InputError with the file, line and column. Should the two CSV parsers fail
or disagree (a bare quote or a lone CR in an unquoted field), a last pass names the first record
that is not RFC 4180. The batches are read through a check of each block against the byte pass's
hash, so a file rewritten during a run stops it instead of sending new rows under the old
content's fingerprint; CSV batches are read one ahead, in a thread.

This module opens an input and hands it to its format's reader: delimited.py (CSV, TSV),
jsonl.py, parquet.py, all after bytescan.py's byte pass; common.py holds what they share.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from importer.errors import InputError
from importer.inputs.bytescan import quick_fingerprint, refuse_special, scan_bytes
from importer.inputs.common import (
    DEFAULT_BATCH_ROWS,
    FORMATS,
    SAMPLE_LINES,
    Batch,
    InputFile,
    read_ahead,
)
from importer.inputs.delimited import iter_csv, profile_csv
from importer.inputs.jsonl import iter_jsonl, jsonl_keys
from importer.inputs.locate import (
    COMPRESSED_ENDINGS,
    compression_of,
    open_bytes,
    text_ending,
)
from importer.inputs.parquet import iter_parquet, open_parquet

# What a checkpoint knows of the inputs it handled every row of: by (size on disk, quick
# fingerprint), the content's
# fingerprint, size and the hash after its first block.
Whole = Mapping[tuple[int, str], tuple[str, int, bytes]]


def open_input(
    path: Path,
    *,
    probes: Collection[int] | None = None,
    whole: Whole | None = None,
    pinned: Collection[str] = (),
    separator: str = "",
    encoding: str = "",
) -> InputFile:
    """Check `path` can be read (format, encoding, line endings, CSV structure) and profile it.

    `pinned` names CSV columns whose type the mapping's [types] fixes: the profile does not
    look for their lossless type (their cells are read as text, which [types] converts).

    `probes` are sizes (of inputs sent before) at which the byte pass also hashes the content's
    first bytes, so that a grown input is known without reading it again (`prefixes`). `whole`
    are the contents every row of which a checkpoint knows as handled: a file of the same size
    on disk is hashed with the quick fingerprint first, and when it is one of them, it is not
    scanned or profiled (`whole_before`): its rows are not read again.
    `separator` replaces a CSV's comma (a mapping's repairs.separator); `encoding` (codecs'
    name, a mapping's repairs.encoding) is a text input's, when not UTF-8 (""). Parquet's text
    is UTF-8 by its format: one declared for it is refused."""
    refuse_special(path)
    input_format = FORMATS.get(text_ending(path))
    if input_format == "parquet" and path.suffix.lower() in COMPRESSED_ENDINGS:
        input_format = None  # Parquet compresses its own pages
    if input_format is None:
        known = ", ".join(sorted(FORMATS))
        packed = "/".join(COMPRESSED_ENDINGS)
        raise InputError(
            f"{path}: cannot tell the format from the name (known endings: {known}; "
            f"text formats also compressed, as {packed})"
        )
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    if input_format == "parquet":
        if encoding:
            raise InputError(
                f"{path}: the mapping declares the encoding {encoding} (repairs.encoding), but "
                "a Parquet file's text is UTF-8 by its format; the encoding is a CSV, TSV or "
                "JSON lines file's",
                hint="import the Parquet file with a mapping without the `encoding` line",
            )
        parquet = open_parquet(path)
        return parquet if probes is None else replace(parquet, prefixes={})
    try:
        disk_size = path.stat().st_size
        with path.open("rb") as handle:
            compression = compression_of(handle.read(4))
        known = _known_whole(path, disk_size, whole)
        if known is not None:
            quick, (fingerprint, size, head) = known
            return InputFile(
                path=path,
                format=input_format,
                fingerprint=fingerprint,
                size=size,
                lines=0,
                blocks=(head,) if head else (),
                compression=compression,
                whole_before=True,
                quick=quick,
                disk_size=disk_size,
            )
        scan = scan_bytes(path, probes or (), encoding=encoding)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    facts = InputFile(
        path=path,
        format=input_format,
        fingerprint=scan.fingerprint,
        size=scan.size,
        lines=scan.lines,
        blocks=scan.blocks,
        blank=scan.blank,
        nul_bytes=scan.nul_bytes,
        plain=scan.plain,
        compression=compression,
        ends_open=scan.ends_open,
        prefixes=None if probes is None else scan.prefixes,
        quick=scan.quick,
        disk_size=disk_size,
        encoding=encoding,
    )
    if scan.blank:
        return facts
    if input_format == "jsonl":
        if text_ending(path) == ".json":
            _refuse_json_document(path)
        return replace(facts, columns=jsonl_keys(path, limit=SAMPLE_LINES, encoding=encoding))
    return profile_csv(replace(facts, separator=separator), pinned=pinned)


def _known_whole(
    path: Path, disk_size: int, whole: Whole | None
) -> tuple[str, tuple[str, int, bytes]] | None:
    """The quick fingerprint of `path` and what the checkpoint knows of it, when it is one of
    the contents `whole` names; only a file of the size of one of them is hashed for it."""
    if not whole or not any(size == disk_size for size, _ in whole):
        return None
    quick = quick_fingerprint(path)
    found = whole.get((disk_size, quick))
    return None if found is None else (quick, found)


def _refuse_json_document(path: Path) -> None:
    """A `.json` input is read as JSON lines; one document (an array, or an object over many
    lines) is not, and every line of it would be a reject: say so once instead."""
    with open_bytes(path) as handle:
        first = handle.readline().lstrip(b"\xef\xbb\xbf").strip()
    if first.startswith(b"[") or first == b"{":
        raise InputError(
            f"{path}: line 1 starts one JSON document ({first[:1].decode()}...), not JSON lines: "
            "a .json input must hold one JSON object per line (convert it with "
            "`jq -c '.[]' FILE > FILE.jsonl`)"
        )


def iter_batches(source: InputFile, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Batch]:
    """The rows of `source` in batches of at most `batch_rows`, in file order."""
    if source.blank:
        return iter(())
    if source.format == "jsonl":
        return iter_jsonl(source, batch_rows)
    if source.format == "parquet":
        return iter_parquet(source, batch_rows)
    if not source.columns or source.records == 0:
        return iter(())
    return read_ahead(iter_csv(source, batch_rows), name="importer-read")


# ---------------------------------------------------------------------------------------- CSV


# -------------------------------------------------------------------------------------- JSONL


# ------------------------------------------------------------------------------------ Parquet
