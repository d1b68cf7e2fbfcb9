"""JSON lines: each line an object, read with the strict codec; a line that is not one is a reject,
not the end of the file."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import polars as pl

from importer.columns import COLUMN, ERROR, LINE, RAW, RULE
from importer.inputs.bytescan import CheckedReader
from importer.inputs.common import (
    JSON_KINDS,
    JSON_SPACE,
    SURROGATE_ESCAPE,
    Batch,
    InputFile,
    split_nul,
    unusable_names,
    without_meta,
)
from importer.inputs.locate import (
    open_bytes,
)
from importer.jsoncodec import DECODER, ENCODER, LINE_DECODER, WrittenNumber, json_error


def iter_jsonl(source: InputFile, batch_rows: int) -> Iterator[Batch]:
    """Parse JSONL a line at a time: one bad line is a reject, not the end of the file.

    Polars' NDJSON reader fails the whole read on one bad line and coerces types across lines, so
    lines go through Python's json (C); each value is kept as its own JSON text.
    """
    numbers: list[int] = []
    texts: list[bytes] = []
    blanks = 0
    with open_bytes(source.path) as handle:
        for number, text in enumerate(CheckedReader(source, handle).lines(), start=1):
            if number == 1 and text.startswith(codecs.BOM_UTF8):
                text = text[len(codecs.BOM_UTF8) :]
                if not text:
                    break  # a BOM and nothing else: an empty file
            if not text.strip(JSON_SPACE):
                blanks += 1
                continue
            numbers.append(number)
            texts.append(text)
            if len(texts) >= batch_rows:
                yield _jsonl_batch(source, numbers, texts, blanks)
                numbers, texts, blanks = [], [], 0
    if texts or blanks:
        yield _jsonl_batch(source, numbers, texts, blanks)


def jsonl_keys(path: Path, *, limit: int | None = None, encoding: str = "") -> tuple[str, ...]:
    """The keys of the objects on the first `limit` lines (all lines: None), in first-seen order,
    without a rejects file's own columns; for checking a mapping before any row is read.
    `encoding`: the file's declared one (codecs' name), "" for UTF-8."""
    keys: dict[str, None] = {}
    with open_bytes(path) as handle:
        for raw in islice(handle, limit):
            try:
                value = DECODER.decode(raw.decode(encoding or "utf-8").lstrip("\ufeff"))
            except (ValueError, RecursionError):
                continue  # a bad line is a reject later, with its line number
            if isinstance(value, dict):
                keys.update(dict.fromkeys(value))
    return tuple(without_meta(list(keys)))


def _jsonl_batch(source: InputFile, numbers: list[int], texts: list[bytes], blanks: int) -> Batch:
    good_lines: list[int] = []
    rows: list[dict[str, str]] = []
    bad: list[tuple[int, str, str, str]] = []
    encode = ENCODER.encode
    # The lines of a file mostly share their keys: the names are checked again only when a
    # line's keys differ from the line before's.
    last_keys: object = None
    last_unusable: list[str] = []
    # The byte pass checked the file is in it (json.loads(bytes) would guess one per line).
    encoding = source.encoding or "utf-8"
    for number, raw in zip(numbers, texts, strict=True):
        # Without its line ending, an error's column is the column in the line.
        text = raw.decode(encoding).removesuffix("\n").removesuffix("\r")
        try:
            if text.startswith("\ufeff"):  # json.loads says so; JSONDecoder alone does not
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
            value = LINE_DECODER.decode(text)
        except (ValueError, RecursionError) as exc:
            bad.append((number, "json", json_error(exc), text))
            continue
        if not isinstance(value, dict):
            kind = JSON_KINDS.get(type(value), "boolean" if isinstance(value, bool) else "null")
            bad.append((number, "json_object", f"line is a JSON {kind}, not an object", text))
            continue
        keys = value.keys()
        if keys != last_keys:
            last_keys, last_unusable = keys, unusable_names(keys)
        unusable = last_unusable
        if unusable:
            message = (
                f"key(s) {', '.join(map(repr, unusable))} cannot be column names here "
                "(the importer's own, or a pattern to Polars)"
            )
            bad.append((number, "json_object", message, text))
            continue
        # A number keeps the text it was written as (1e3, not 1000.0): it may be an id. Text
        # and null, the most common values, skip the encoder's own call, which costs more than
        # the encoding (text goes to the C function the encoder itself calls for it).
        row = {
            key: _string(item)
            if item.__class__ is str
            else "null"
            if item is None
            else item.text
            if item.__class__ is WrittenNumber
            else encode(item)
            for key, item in value.items()
        }
        if SURROGATE_ESCAPE.search(text) and not _encodable(row):
            bad.append((number, "json", "a string holds a lone UTF-16 surrogate escape", text))
            continue
        good_lines.append(number)
        rows.append(row)
    frame = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
    frame = frame.select(pl.Series(LINE, good_lines, dtype=pl.Int64), pl.all().cast(pl.String))
    frame = frame.select(LINE, *without_meta(frame.columns[1:]))
    # In JSON a NUL character is the escape \u0000; no backslash in the batch, no escape.
    nul = None
    if b"\\" in b"".join(texts):
        frame, nul = split_nul(frame)
    rejects = pl.DataFrame(
        {
            LINE: [item[0] for item in bad],
            RULE: [item[1] for item in bad],
            COLUMN: [None] * len(bad),
            ERROR: [item[2] for item in bad],
            RAW: [item[3] for item in bad],
        },
        schema={
            LINE: pl.Int64,
            RULE: pl.String,
            COLUMN: pl.String,
            ERROR: pl.String,
            RAW: pl.String,
        },
    )
    if nul is not None and nul.height:
        rejects = pl.concat([rejects, nul], how="diagonal").sort(LINE)
    return Batch(source, frame, rejects, blanks)


# What ENCODER (ensure_ascii=False) returns for a str: the string as a JSON literal.
_string = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _encodable(row: dict[str, str]) -> bool:
    try:
        for key, value in row.items():
            key.encode("utf-8")
            value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
