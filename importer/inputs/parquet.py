"""Parquet: typed columns to the same JSON text as the text formats, read in row groups with the
file's size and time checked before each."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from importer.columns import COLUMN, ERROR, LINE, RULE
from importer.errors import InputError
from importer.inputs import common
from importer.inputs.common import (
    Batch,
    InputFile,
    unusable_names,
)
from importer.inputs.locate import (
    PARQUET_MAGIC,
)
from importer.jsontext import json_string


def open_parquet(path: Path) -> InputFile:
    """Check a Parquet file is whole (its magic at both ends, a footer Polars reads) and note
    its columns and row count; its bytes are hashed for the fingerprint, like a text file's."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            while chunk := handle.read(common.CHUNK_BYTES):
                digest.update(chunk)
            handle.seek(0)
            head = handle.read(len(PARQUET_MAGIC))
            handle.seek(max(info.st_size - len(PARQUET_MAGIC), 0))
            tail = handle.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if head != PARQUET_MAGIC or info.st_size < 2 * len(PARQUET_MAGIC) or tail != PARQUET_MAGIC:
        raise InputError(
            f"{path}: is not a whole Parquet file (it does not start and end with PAR1; "
            "a truncated file ends early); nothing from it was sent",
            hint="fetch or write the file again",
        )
    try:
        schema = pl.read_parquet_schema(path)
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{path}: cannot be read as Parquet ({_first_line(exc)})") from None
    names = list(schema)
    unusable = unusable_names(names)
    if unusable:
        raise InputError(
            f"{path}: column names {', '.join(map(repr, unusable))} cannot be column names "
            "here (the importer's own, or a pattern to Polars); rename the column(s)"
        )
    for name, dtype in schema.items():
        _parquet_json(name, dtype, path)  # a type JSON cannot carry is refused before any row
    return InputFile(
        path=path,
        format="parquet",
        fingerprint=digest.hexdigest(),
        size=info.st_size,
        lines=rows,
        columns=tuple(names),
        header=tuple(names),
        records=rows,
        stamp=(info.st_size, info.st_mtime_ns),
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.f"


def _parquet_json(name: str, dtype: pl.DataType, path: Path) -> pl.Expr:
    """Column `name` of Parquet type `dtype` as JSON text, keeping what the type says.

    Integers keep every digit (no float on the way); a decimal is a JSON number with its own
    digits (12.30 stays 12.30); a timestamp is ISO 8601 text, with its offset when the column has
    a time zone and without one when it is naive; lists and structs are JSON arrays and objects
    (as Polars' JSON writer writes them); binary is base64 text; a float that is NaN or infinite
    is left as its text for _split_non_finite to reject.
    """
    column = pl.col(name)
    if dtype.is_integer() or dtype.is_float() or isinstance(dtype, pl.Boolean | pl.Decimal):
        return column.cast(pl.String).alias(name)
    if isinstance(dtype, pl.Datetime):
        zone = "%:z" if dtype.time_zone else ""
        return json_string(column.dt.to_string(_TIME_FORMAT + zone)).alias(name)
    if isinstance(dtype, pl.Time):
        return json_string(column.dt.to_string("%H:%M:%S%.f")).alias(name)
    if isinstance(dtype, pl.Duration):
        return json_string(column.dt.to_string("iso")).alias(name)
    if isinstance(dtype, pl.Binary):
        return json_string(column.bin.encode("base64")).alias(name)
    if dtype.is_nested():
        if _holds(dtype, (pl.Binary, pl.Object)):
            raise InputError(f"{path}: column {name!r} holds binary values inside {dtype}")
        return json_string(column).alias(name)
    if isinstance(dtype, pl.Object):
        raise InputError(f"{path}: column {name!r} has a type JSON cannot carry ({dtype})")
    # Text, dates, categories, enums and all-null columns: their text.
    return json_string(column.cast(pl.String)).alias(name)


def _holds(dtype: pl.DataType, kinds: tuple[type, ...]) -> bool:
    """Whether a nested type has one of `kinds` somewhere inside."""
    if isinstance(dtype, kinds):
        return True
    if isinstance(dtype, pl.Struct):
        return any(_holds(field.dtype, kinds) for field in dtype.fields)
    inner = getattr(dtype, "inner", None)
    return inner is not None and _holds(inner, kinds)


def iter_parquet(source: InputFile, batch_rows: int) -> Iterator[Batch]:
    """The rows of a Parquet file, `batch_rows` at a time, each cell as JSON text (see
    _parquet_json); LINE is the row's number (1-based).

    Each batch is its own slice of a scan, which reads only the row groups it needs, so memory
    holds a batch and its row groups. (collect_batches streams the same way but runs ahead of a
    slow consumer: 275 MB for 3M rows where slices peaked at 105 MB.)
    """
    path = source.path
    schema = pl.read_parquet_schema(path)
    encode = [_parquet_json(name, dtype, path) for name, dtype in schema.items()]
    floats = [name for name, dtype in schema.items() if dtype.is_float()]
    for start in range(0, source.records, batch_rows):
        _check_stamp(source)
        scan = pl.scan_parquet(path).with_row_index(LINE, offset=1).slice(start, batch_rows)
        try:
            frame = scan.select(pl.col(LINE).cast(pl.Int64), *encode).collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise InputError(
                f"{path}, row {start + 1:,} on: cannot be read as Parquet ({_first_line(exc)})",
                hint="fetch or write the file again",
            ) from None
        rows, rejects = _split_non_finite(frame, floats)
        yield Batch(source, rows, rejects)


def _check_stamp(source: InputFile) -> None:
    """Stop when the file's size or mtime moved since it was opened (see CheckedReader)."""
    try:
        info = source.path.stat()
    except OSError as exc:
        raise InputError(f"{source.path}: cannot be read ({exc.strerror or exc})") from None
    if (info.st_size, info.st_mtime_ns) != source.stamp:
        raise InputError(
            f"{source.path}: the file changed while it was being read; nothing from the "
            "changed part was sent",
            hint="run again once it is final: the new content is a new input",
        )


def _split_non_finite(frame: pl.DataFrame, floats: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows without a NaN or infinite float, and those with one as rejects (rule "json",
    naming the first such column): JSON has no such number, as a JSONL line with NaN is a reject.
    """
    names = frame.columns[1:]
    hits = [(~pl.col(name).str.contains(r"^-?[0-9]"), name) for name in floats]
    empty = frame.clear().select(
        LINE,
        pl.lit(None, pl.String).alias(RULE),
        pl.lit(None, pl.String).alias(COLUMN),
        pl.lit(None, pl.String).alias(ERROR),
        *names,
    )
    if not hits:
        return frame, empty
    marked = frame.with_columns(
        pl.coalesce(pl.when(hit).then(pl.lit(name)) for hit, name in hits).alias(COLUMN),
        pl.coalesce(
            pl.when(hit).then(
                pl.format(f"column {name} holds {{}}, which JSON has no number for", pl.col(name))
            )
            for hit, name in hits
        ).alias(ERROR),
    )
    is_bad = pl.col(ERROR).is_not_null()
    rejects = marked.filter(is_bad).select(
        LINE,
        pl.lit("json").alias(RULE),
        COLUMN,
        ERROR,
        *(_float_text(name) if name in floats else name for name in names),
    )
    return marked.filter(~is_bad).drop(COLUMN, ERROR), rejects


def _float_text(name: str) -> pl.Expr:
    """A float cell as JSON text in a reject: NaN and infinities as strings."""
    value = pl.col(name)
    return pl.when(value.str.contains(r"^-?[0-9]")).then(value).otherwise(json_string(value))
