"""CSV and TSV: the record pass, the type profile and the batches, with every record's line as a
spreadsheet numbers it.

A file in a declared encoding (Windows-1252, Latin-1: one byte a character) is read as its bytes
by every pass, offsets and all; Python's csv reads its text decoded line by line, and Polars each
slice transcoded to UTF-8 (common.utf8_of)."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import IO

import polars as pl

from importer.columns import COLUMN, ERROR, LINE, RULE
from importer.errors import InputError
from importer.inputs import common
from importer.inputs.bytescan import CheckedReader
from importer.inputs.common import (
    EXTRA,
    INTEGER_TEXT,
    KINDS,
    NUMBER_TEXT,
    SEPARATORS,
    Batch,
    InputFile,
    split_nul,
    unusable_names,
    utf8_of,
    without_meta,
)
from importer.inputs.locate import (
    open_bytes,
)
from importer.jsontext import json_string

# Python's csv refuses fields over 128 KiB by default and calls it a quoting error; a long
# description or an embedded JSON document is still a field. Polars has no such limit.
csv.field_size_limit(1 << 30)


def profile_csv(facts: InputFile, *, pinned: Collection[str] = ()) -> InputFile:
    """Find the header, the records with a wrong field count, and each column's lossless type;
    a `pinned` column (its type fixed by the mapping) is text without a look at its cells."""
    separator = facts.separator or SEPARATORS[facts.format]
    encoding = facts.encoding
    found = _profile_plain(facts.path, separator, pinned, encoding) if facts.plain else None
    if found is None:
        header, records, bad, blank, offsets = _check_records(facts.path, separator, encoding)
        if not header:
            return facts
        stats = _pinned_stats(header, pinned)
        chunks = _iter_chunks(
            facts.path, header, separator, offsets, records, step=10, encoding=encoding
        )
        for chunk in chunks:
            checks = _kind_checks([pl.col(column) for column in header], stats)
            if checks:
                stats = _and_stats(stats, chunk.select(checks))
    else:
        header, records, bad, blank, offsets, stats = found
    kinds = {}
    for index, column in enumerate(header):
        kinds[column] = next(
            (kind for kind in KINDS if stats.get(f"{index}\x00{kind}", True)), "string"
        )
    return replace(
        facts,
        columns=tuple(without_meta(header)),
        header=tuple(header),
        column_kinds=kinds,
        records=records,
        bad_records=bad,
        blank_records=frozenset(blank),
        chunk_offsets=offsets,
    )


def _kind_checks(
    values: list[pl.Expr], stats: dict[str, bool], *, split: bool = False
) -> list[pl.Expr]:
    """Per value column (by position), whether every cell could be sent as an integer, a number
    or a boolean without changing its text: aggregates named `<index>\x00<kind>`, for the kinds
    `stats` (the slices before) have not ruled out already; most columns are text by the first
    slice and cost nothing after it. `split`: the values are a line split at the separator,
    where an empty field is "" (Polars' CSV reader makes it null, but a quoted "" stays "")."""
    checks: list[pl.Expr] = []
    for index, value in enumerate(values):
        # A failed cast is null too (an integer beyond Int64), so only an empty cell may pass
        # as null: the others must round-trip.
        is_int = value.str.contains(INTEGER_TEXT) & (
            value.str.to_integer(strict=False).cast(pl.String) == value
        ).fill_null(False)
        is_number = value.str.contains(NUMBER_TEXT) & (
            value.cast(pl.Float64, strict=False).cast(pl.String) == value
        ).fill_null(False)
        is_empty = (value.is_null() | (value == "")) if split else value.is_null()
        checks += [
            check.all().alias(name)
            for check, name in (
                (is_empty | is_int, f"{index}\x00integer"),
                (is_empty | is_int | is_number, f"{index}\x00number"),
                (is_empty | value.is_in(["true", "false"]), f"{index}\x00boolean"),
            )
            if stats.get(name, True)
        ]
    return checks


def _pinned_stats(header: list[str], pinned: Collection[str]) -> dict[str, bool]:
    """The kind checks of the `pinned` columns, ruled out before any cell is looked at: their
    type is the mapping's, so they are read as text and cost the profile nothing."""
    return {
        f"{index}\x00{kind}": False
        for index, column in enumerate(header)
        if column in pinned
        for kind in KINDS
    }


def _and_stats(stats: dict[str, bool], part: pl.DataFrame) -> dict[str, bool]:
    """The kind checks so far and one more slice's: a kind holds only if it held in every slice."""
    return {**stats, **{name: bool(ok) for name, ok in part.row(0, named=True).items()}}


# Bytes of a plain CSV looked at in one Polars frame by _profile_plain: as fast as 8 MiB, and
# peak memory grows with it (124 MB for 2 MiB, 320 MB for 8 MiB, on a 74 MB file).
PLAIN_PIECE_BYTES = 2 * common.CHUNK_BYTES


def _profile_plain(
    path: Path, separator: str, pinned: Collection[str] = (), encoding: str = ""
) -> tuple[list[str], int, dict[int, int], list[int], tuple[int, ...], dict[str, bool]] | None:
    """What _check_records and the kinds pass find, for a file without quotes or lone CRs, in
    one pass of Polars string expressions; None when the first line is blank (left to them).

    Without quotes Python's csv splits records at LF (dropping a CR before it) and fields at
    the separator, so a line's field count is its separators plus one and an empty line is a
    blank record. Offsets come from the lines' byte lengths (in a declared encoding, their
    lengths in characters: one byte each in the file).
    """
    with open_bytes(path) as raw:
        if raw.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            raw.seek(0)
        first = raw.readline().decode(encoding or "utf-8").removesuffix("\n").removesuffix("\r")
        if not first:
            return None
        header = first.split(separator)
        _check_header(path, header)
        offsets = [raw.tell()]
        width = len(header)
        values = [pl.col(f"field_{index}") for index in range(width)]
        stats = _pinned_stats(header, pinned)
        records = 0
        base = offsets[0]  # where the next piece starts
        bad: dict[int, int] = {}
        blank: list[int] = []
        pending = b""
        while True:
            block = raw.read(PLAIN_PIECE_BYTES)
            data = pending + block
            cut = data.rfind(b"\n") + 1 if block else len(data)
            if not cut:
                if not block:
                    break
                pending = data  # a line longer than a piece
                continue
            piece, pending = data[:cut], data[cut:]
            # The byte pass checked the text; split leaves an empty string after the last LF.
            text = pl.Series("line", [utf8_of(piece, encoding)], pl.Binary).cast(pl.String)
            frame = text.str.split("\n").explode().to_frame()
            if piece.endswith(b"\n"):
                frame = frame.head(-1)
            line_bytes = (
                pl.col("line").str.len_chars() if encoding else pl.col("line").str.len_bytes()
            )
            length = line_bytes.cast(pl.Int64)
            fields = pl.col("line").str.count_matches(separator, literal=True) + 1
            counted = frame.select(
                pl.int_range(records, records + pl.len(), dtype=pl.Int64).alias("index"),
                fields.alias("fields"),
                (length + 1).cum_sum().alias("end"),
                # Only a line of at most one byte may be blank ("" or the CR of a CRLF).
                ((fields != width) | (length <= 1)).alias("odd"),
                pl.col("line"),
            )
            is_blank = pl.col("line").is_in(["", "\r"])
            odd = counted.filter("odd").with_columns(is_blank.alias("blank"))
            wrong = ~pl.col("blank") & (pl.col("fields") != width)
            bad.update(odd.filter(wrong).select("index", "fields").iter_rows())
            blank.extend(odd.filter("blank")["index"].to_list())
            # The offset after every CHUNK_RECORDS-th record, as _check_records notes them (the
            # last line may have no LF to count).
            ends = counted.filter((pl.col("index") + 1) % common.CHUNK_RECORDS == 0)["end"]
            offsets.extend((ends.clip(upper_bound=len(piece)) + base).to_list())
            checks = _kind_checks(values, stats, split=True)
            if checks:
                line = pl.col("line").str.strip_suffix("\r")
                parts = frame.select(line.str.split_exact(separator, width - 1).alias("parts"))
                stats = _and_stats(stats, parts.unnest("parts").select(checks))
            records += frame.height
            base += len(piece)
            if not block:
                break
    if records % common.CHUNK_RECORDS:
        offsets.append(base)
    return header, records, bad, blank, tuple(offsets), stats


def _check_records(
    path: Path, separator: str, encoding: str = ""
) -> tuple[list[str], int, dict[int, int], list[int], tuple[int, ...]]:
    """The header, the record count, records with the wrong field count, blank records, and the
    byte offset of every common.CHUNK_RECORDS-th record (the first after the header, the last the end).

    Python's csv module (strict) gives the exact field count of every record, which Polars does
    not: it pads short records with nulls. Counting lengths runs in C, common.CHUNK_RECORDS at a time;
    the binary file's position after each slice is where the next record starts. Only a file
    that has odd records gets a second pass to find which ones.
    """
    with open_bytes(path) as raw:
        if raw.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            raw.seek(0)
        # Binary lines split at LF only; a lone CR splits a line for Python's csv as it reads
        # text, so such a file goes through the (slower) text reader to keep its meaning. So
        # does a file in a declared encoding: decoding it line by line is slower still.
        position = _TextPosition(raw, encoding) if encoding or _has_lone_cr(raw) else None
        lines = position.lines() if position else map(bytes.decode, raw)
        tell = position.tell if position else raw.tell
        rows = csv.reader(lines, delimiter=separator, strict=True)
        lengths: Counter[int] = Counter()
        try:
            header = next(rows, [])
            if not header and next(rows, None) is not None:
                raise InputError(
                    f"{path}, line 1: the first line is blank, but the header (the column "
                    "names) must be on line 1",
                    hint="remove the blank line(s) before the header",
                )
            offsets = [tell()]
            records = 0
            while True:
                lengths.update(map(len, islice(rows, common.CHUNK_RECORDS)))
                counted = lengths.total()
                if counted == records:
                    break
                records = counted
                offsets.append(tell())
        except csv.Error as exc:
            line = rows.line_num
            broken = _find_broken_record(path, separator, encoding)
            raise broken or _csv_error(path, line, str(exc)) from None
    if not header:
        return [], 0, {}, [], ()
    _check_header(path, header)
    if set(lengths) <= {len(header)}:
        return header, records, {}, [], tuple(offsets)
    bad: dict[int, int] = {}
    blank: list[int] = []
    with _text(path, encoding) as text:
        rows = csv.reader(text, delimiter=separator, strict=True)
        next(rows)
        for index, record in enumerate(rows):
            if not record:
                blank.append(index)
            elif len(record) != len(header):
                bad[index] = len(record)
    return header, records, bad, blank, tuple(offsets)


class _TextPosition:
    """Text lines split as Python's text mode splits them, with the byte offset reached."""

    def __init__(self, raw: IO[bytes], encoding: str = "") -> None:
        self._start = raw.tell()
        self._consumed = 0
        self._single = bool(encoding)  # a declared encoding: one byte a character
        self._text = io.TextIOWrapper(raw, encoding=encoding or "utf-8", newline="")

    def lines(self) -> Iterator[str]:
        """Each line; the byte pass checked the text, so a line's encoding is exactly the bytes
        it came from."""
        for line in iter(self._text.readline, ""):
            self._consumed += len(line) if self._single else len(line.encode())
            yield line

    def tell(self) -> int:
        """The byte offset after the last line handed out."""
        return self._start + self._consumed


def _has_lone_cr(raw: IO[bytes]) -> bool:
    """Whether the file has a CR that is not part of a CRLF; leaves the position where it was."""
    start = raw.tell()
    found = False
    while chunk := raw.read(common.CHUNK_BYTES):
        # A chunk ending in CR may be followed by LF in the next one: read one byte more.
        if chunk.endswith(b"\r"):
            chunk += raw.read(1)
        if chunk.count(b"\r") != chunk.count(b"\r\n"):
            found = True
            break
    raw.seek(start)
    return found


def _text(path: Path, encoding: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(open_bytes(path), encoding=encoding or "utf-8-sig", newline="")


def _csv_error(path: Path, line: int, reason: str) -> InputError:
    return InputError(
        f"{path}, line {line}: the CSV quoting is broken ({reason})",
        hint="a field with a quote, separator or line break is quoted whole; a quoted field "
        "ends with a quote followed by a separator or the end of the line; a quote inside a "
        'quoted field is written twice ("")',
    )


def _find_broken_record(path: Path, separator: str, encoding: str) -> InputError | None:
    """The first record that is not RFC 4180 CSV, named by the line (as an editor counts) it
    starts on; None if every record is well formed.

    Runs only when the parsers fail or disagree, so it can afford to look at each record's text:
    Python's csv takes a quote inside an unquoted field as text where Polars opens a quoted
    field, and a lone CR ends a record for one and not the other.
    """
    sep = re.escape(separator)
    quoted = '"(?:[^"]|"")*"'
    strict = re.compile(_record_re(f'[^"{sep}\\r\\n]*', quoted, sep) + "(?:\\r?\\n)?")
    loose_cr = re.compile(_record_re(f'[^"{sep}\\n]*', quoted, sep) + "\\n?")
    consumed: list[str] = []

    def lines(handle: io.TextIOWrapper) -> Iterator[str]:
        for line in handle:
            consumed.append(line)
            yield line

    start = 1
    with _text(path, encoding) as handle:
        records = csv.reader(lines(handle), delimiter=separator, strict=True)
        while True:
            try:
                if next(records, None) is None:
                    return None
            except csv.Error as exc:
                return _csv_error(path, start, str(exc))
            text = "".join(consumed)
            consumed.clear()
            if not strict.fullmatch(text):
                reason = (
                    "a lone CR inside a field that is not quoted"
                    if loose_cr.fullmatch(text)
                    else "a quote inside a field that is not quoted, or text after a closing quote"
                )
                return _csv_error(path, start, reason)
            start += text.count("\n")


def _record_re(unquoted: str, quoted: str, sep: str) -> str:
    field = f"(?:{unquoted}|{quoted})"
    return f"{field}(?:{sep}{field})*"


def _check_header(path: Path, header: list[str]) -> None:
    empty = [index + 1 for index, name in enumerate(header) if not name.strip()]
    if empty:
        raise InputError(f"{path}, line 1: header column(s) {empty} have no name")
    unusable = unusable_names(header)
    if unusable:
        raise InputError(
            f"{path}, line 1: header names {', '.join(map(repr, unusable))} cannot be column "
            "names here (the importer's own, or a pattern to Polars); rename the column(s)"
        )
    seen = Counter(header)
    twice = sorted(name for name, count in seen.items() if count > 1)
    if twice:
        raise InputError(
            f"{path}, line 1: header names {', '.join(map(repr, twice))} more than once"
        )


def _iter_chunks(
    path: Path,
    header: list[str],
    separator: str,
    offsets: tuple[int, ...],
    records: int,
    *,
    step: int,
    checked: InputFile | None = None,
    encoding: str = "",
) -> Iterator[pl.DataFrame]:
    """The records of `path`, `step` offsets (step x common.CHUNK_RECORDS records) at a time, as text;
    with `checked`, read through a check against its byte pass (see CheckedReader).

    Each slice is parsed on its own, so memory is bounded by the slice; a slice whose record
    count differs from the record pass's means the two parsers disagree on the quoting there.
    """
    # One column more than the header catches the fields of records that are too long;
    # records that are too short are known from the record pass.
    schema = dict.fromkeys([*header, EXTRA], pl.String)
    with open_bytes(path) as handle:
        reader = CheckedReader(checked, handle) if checked is not None else None
        for first in range(0, len(offsets) - 1, step):
            last = min(first + step, len(offsets) - 1)
            if reader is None:
                handle.seek(offsets[first])
                data = handle.read(offsets[last] - offsets[first])
            else:
                data = reader.read(offsets[first], offsets[last])
                if last == len(offsets) - 1:
                    reader.finish()
            expected = min(last * common.CHUNK_RECORDS, records) - first * common.CHUNK_RECORDS
            try:
                chunk = pl.read_csv(
                    utf8_of(data, encoding),
                    has_header=False,
                    separator=separator,
                    schema=schema,
                    missing_columns="insert",
                    extra_columns="ignore",
                    truncate_ragged_lines=True,
                    row_index_name=LINE,
                    row_index_offset=first * common.CHUNK_RECORDS + 2,
                )
            except pl.exceptions.PolarsError as exc:
                raise _disagreement(path, separator, encoding, f"{exc}") from exc
            if chunk.height != expected:
                raise _disagreement(
                    path,
                    separator,
                    encoding,
                    f"two CSV parsers disagree on the number of records from row "
                    f"{first * common.CHUNK_RECORDS + 2} ({expected} vs {chunk.height}); "
                    "the file's quoting is probably broken",
                )
            yield chunk


def _disagreement(path: Path, separator: str, encoding: str, detail: str) -> InputError:
    broken = _find_broken_record(path, separator, encoding)
    if broken is not None:
        return broken
    return InputError(f"{path}: cannot be parsed as CSV: {detail}")


def iter_csv(source: InputFile, batch_rows: int) -> Iterator[Batch]:
    separator = source.separator or SEPARATORS[source.format]
    encode = [_json_text(column, source.column_kinds[column]) for column in source.columns]
    bad_lines = pl.DataFrame(
        {
            LINE: [index + 2 for index in source.bad_records],
            "fields": list(source.bad_records.values()),
        },
        schema={LINE: pl.Int64, "fields": pl.Int64},
    )
    blank_lines = pl.Series(LINE, [index + 2 for index in source.blank_records], dtype=pl.Int64)
    is_blank = pl.col(LINE).is_in(blank_lines.implode())
    is_bad = pl.col(LINE).is_in(bad_lines[LINE].implode())
    step = max(1, batch_rows // common.CHUNK_RECORDS)
    chunks = _iter_chunks(
        source.path,
        list(source.header),
        separator,
        source.chunk_offsets,
        source.records,
        step=step,
        checked=source,
        encoding=source.encoding,
    )
    for chunk in chunks:
        for start in range(0, chunk.height, batch_rows):
            part = chunk.slice(start, batch_rows).with_columns(pl.col(LINE).cast(pl.Int64))
            rows = part.filter(~is_blank).select(LINE, *encode)
            blanks = part.height - rows.height
            rejects = (
                rows.filter(is_bad)
                .join(bad_lines, on=LINE, how="left")
                .select(
                    LINE,
                    pl.lit("csv_fields").alias(RULE),
                    pl.lit(None, pl.String).alias(COLUMN),
                    pl.format(
                        "record has {} fields, the header has {}",
                        pl.col("fields"),
                        pl.lit(len(source.columns)),
                    ).alias(ERROR),
                    *source.columns,
                )
            )
            rows = rows.filter(~is_bad)
            if source.nul_bytes:  # in CSV a NUL character is a NUL byte
                rows, nul = split_nul(rows)
                rejects = pl.concat([rejects, nul]).sort(LINE)
            yield Batch(source, rows, rejects, blanks)


def _json_text(column: str, kind: str) -> pl.Expr:
    """The CSV cell as JSON text: lossless numbers and booleans are already JSON; text is quoted."""
    if kind == "string":
        return json_string(pl.col(column)).alias(column)
    return pl.col(column)
