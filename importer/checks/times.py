"""Timestamps in the forms people export them, to the destination's UTC format, column-wise.

ISO 8601 with or without offset (`Z`, `+02:00`, `UTC`), a space for the `T`, fractional
seconds, a date alone, or epoch seconds or milliseconds; naive times are read in the mapping's
timezone. A column's epoch unit is decided once per file by its first epoch value, so the
verdict does not depend on how the file is cut into batches. The names of the columns that
validation materialises next to the input's (plain text, JSON kind, naive flag, message) live
here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import polars.selectors as cs

from importer.jsontext import json_as_text, json_string

MS_THRESHOLD = 1e11  # 1e11 s is the year 5138 and 1e11 ms is 1973: the magnitudes never overlap
ISO_RE = (
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ]([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d)(?:[.,](\d+))?)?)?"
    r" ?(Z|z|UTC|GMT|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)?$"
)
EPOCH_RE = r"^-?\d+(?:\.\d+)?$"
# The form most exports write (UTC with Z, whole seconds), parsed without ISO_RE's groups; the
# pattern keeps strptime from taking what ISO_RE refuses (unpadded fields, a 60th second).
UTC_Z_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
UTC_Z_RE = r"^\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\dZ$"


@dataclass(slots=True)
class FileState:
    """What validation learns about one input as its batches go by (epoch unit per column)."""

    epoch_units: dict[str, str] = field(default_factory=dict)
    # Columns whose unit the mapping declares (repairs.epoch_units): then every number is an
    # epoch in it, and neither its magnitude nor eight digits make it doubtful.
    declared: set[str] = field(default_factory=set)


def epoch_unit(frame: pl.DataFrame, column: str, state: FileState) -> str:
    """Seconds or milliseconds for the epoch values of `column`, decided once per file by its
    first epoch value, so the verdict does not depend on how the file is cut into batches."""
    if column in state.epoch_units:
        return state.epoch_units[column]
    # Validation has the plain text already; decoding it again was most of this function's time.
    has_text = text_of(column) in frame.columns
    text = pl.col(text_of(column)) if has_text else json_as_text(pl.col(column))
    numbers = frame.select(text.filter(text.str.contains(EPOCH_RE)).cast(pl.Float64)).to_series()
    if numbers.len() == 0:
        return "s"
    unit = "ms" if abs(numbers[0]) >= MS_THRESHOLD else "s"
    state.epoch_units[column] = unit
    return unit


def parse_times(
    work: pl.DataFrame,
    column: str,
    *,
    timezone: str,
    unit: str,
    now: datetime,
    required: bool,
    time_format: str,
    declared: bool = False,
) -> pl.DataFrame:
    """Replace `column` with the UTC time as JSON text in `time_format`; add `naive_of(column)` and `time_message_of(column)`.

    Rows in the UTC_Z form take a short way (a third of the work); the others, all of them when
    none is in that form, the whole one. Rows keep their order either way.
    """
    text = pl.col(text_of(column))
    stamp = text.str.to_datetime(UTC_Z_FORMAT, time_unit="ms", strict=False)
    quick = work.select(
        stamp.alias("stamp"), (text.str.contains(UTC_Z_RE) & stamp.is_not_null()).alias("ok")
    )
    ok = quick["ok"].fill_null(False)
    full = {
        "timezone": timezone,
        "unit": unit,
        "now": now,
        "required": required,
        "declared": declared,
    }
    if not ok.any():
        return _parse_any(work, column, time_format=time_format, **full)
    utc = quick["stamp"]
    if ok.all():
        return _utc_z_times(work, column, utc, now=now, time_format=time_format)
    rest = _parse_any(work.filter(~ok), column, time_format=time_format, **full)
    quick_part = _utc_z_times(
        work.filter(ok), column, utc.filter(ok), now=now, time_format=time_format
    )
    rows = pl.int_range(work.height, eager=True)
    # The rows of both parts, back in the order they came in.
    order = pl.concat([rows.filter(ok), rows.filter(~ok)]).arg_sort()
    return pl.concat([quick_part.select(rest.columns), rest])[order]


def _utc_z_times(
    work: pl.DataFrame, column: str, utc: pl.Series, *, now: datetime, time_format: str
) -> pl.DataFrame:
    """parse_times for rows whose text is in the UTC_Z form and a real time (`utc`): never naive,
    and the only rule they may break is the future one."""
    now_naive = now.astimezone(UTC).replace(tzinfo=None)
    timed = work.with_columns(utc.alias("__t_utc"))
    return timed.with_columns(
        pl.lit(False).alias(naive_of(column)),
        pl.when(pl.col("__t_utc") > pl.lit(now_naive))
        .then(pl.format("{} is in the future", pl.col(text_of(column))))
        .otherwise(pl.lit(None, pl.String))
        .alias(time_message_of(column)),
        _json_time(pl.col("__t_utc"), time_format).alias(column),
    ).drop("__t_utc")


def _parse_any(
    work: pl.DataFrame,
    column: str,
    *,
    timezone: str,
    unit: str,
    now: datetime,
    required: bool,
    time_format: str,
    declared: bool = False,
) -> pl.DataFrame:
    """parse_times for times in any form it reads.

    Done in stages of materialised columns: an eager frame does not share subexpressions, and
    the regex groups feed several later expressions.
    """
    text = pl.col(text_of(column)).str.strip_chars()
    work = work.with_columns(
        text.str.extract_groups(ISO_RE).alias("__t_iso"),
        text.str.contains(EPOCH_RE).fill_null(False).alias("__t_is_epoch"),
        text.cast(pl.Float64, strict=False).alias("__t_epoch"),
        text.alias("__t_text"),
    ).unnest("__t_iso", separator="")
    group = {i: pl.col(f"__t_iso{i}") for i in range(1, 9)}
    zone = group[8]
    sign = pl.when(zone.str.starts_with("-")).then(-1).otherwise(1)
    digits = zone.str.replace_all(r"[^0-9]", "")
    # Milliseconds are kept (a format with %.3f sends them); finer digits are cut, not rounded.
    millis = group[7].str.slice(0, 3).str.pad_end(3, "0").cast(pl.Int64).fill_null(0)
    work = work.with_columns(
        pl.concat_str(
            group[1],
            pl.lit("-"),
            group[2],
            pl.lit("-"),
            group[3],
            pl.lit(" "),
            group[4].fill_null("00"),
            pl.lit(":"),
            group[5].fill_null("00"),
            pl.lit(":"),
            group[6].fill_null("00"),
        )
        .str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="ms", strict=False)
        .add(pl.duration(milliseconds=millis))
        .alias("__t_local"),
        (
            sign
            * (
                digits.str.slice(0, 2).cast(pl.Int64, strict=False).fill_null(0) * 60
                + digits.str.slice(2, 2).cast(pl.Int64, strict=False).fill_null(0)
            )
        ).alias("__t_offset"),
        (group[1].is_not_null() & zone.is_null()).alias(naive_of(column)),
    )
    local = pl.col("__t_local")
    if timezone == "UTC":
        naive_utc = local
    else:
        naive_utc = (
            local.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
            .dt.convert_time_zone("UTC")
            .dt.replace_time_zone(None)
        )
    factor = 1000.0 if unit == "s" else 1.0
    from_epoch = pl.from_epoch(
        (pl.col("__t_epoch") * factor).cast(pl.Int64, strict=False), time_unit="ms"
    )
    work = work.with_columns(
        pl.when(pl.col("__t_is_epoch"))
        .then(from_epoch)
        .when(pl.col(naive_of(column)))
        .then(naive_utc)
        .otherwise(local - pl.duration(minutes=pl.col("__t_offset")))
        .alias("__t_utc")
    )
    utc = pl.col("__t_utc")
    is_epoch = pl.col("__t_is_epoch")
    text = pl.col("__t_text")
    wrong_unit = is_epoch & ((pl.col("__t_epoch").abs() >= MS_THRESHOLD) != (unit == "ms"))
    eight_digits = is_epoch & text.str.contains(r"^\d{8}$")
    if declared:
        wrong_unit = eight_digits = pl.lit(False)
    now_naive = now.astimezone(UTC).replace(tzinfo=None)
    message = (
        pl.when(pl.col(kind_of(column)).is_in(["object", "array", "boolean"]))
        .then(pl.format("{} is not a time", pl.col(column)))
        .when(text.is_null() | (text == ""))
        .then(
            pl.lit("time is empty; a row without its time is not sent as 'now'")
            if required
            else pl.lit(None, pl.String)
        )
        .when(eight_digits)
        .then(
            pl.format(
                "{} is ambiguous: a date written as YYYYMMDD, or epoch seconds in 1970-73; "
                "write dates as YYYY-MM-DD",
                text,
            )
        )
        .when(wrong_unit)
        .then(
            pl.format(
                "epoch {} does not look like {} as the column's first epoch value does",
                text,
                pl.lit("milliseconds" if unit == "ms" else "seconds"),
            )
        )
        .when(group[1].is_not_null() & local.is_null())
        .then(
            pl.format(
                "{} is not a calendar date: {}-{}-{} does not exist",
                text,
                group[1],
                group[2],
                group[3],
            )
        )
        .when(utc.is_null() & pl.col(naive_of(column)) & local.is_not_null())
        .then(pl.format("{} does not exist in {} (a daylight-saving gap)", text, pl.lit(timezone)))
        .when(utc.is_null())
        .then(pl.format("{} is not a time (ISO 8601, epoch seconds or milliseconds)", text))
        .when(utc > pl.lit(now_naive))
        .then(pl.format("{} is in the future", text))
    )
    work = work.with_columns(
        message.alias(time_message_of(column)),
        _json_time(utc, time_format).alias(column),
    )
    return work.drop(cs.starts_with("__t_"))


def _json_time(utc: pl.Expr, time_format: str) -> pl.Expr:
    """The time as JSON text in `time_format`. Where the format's own characters need no JSON
    escape (and its fields, digits and signs, never do) the quotes go into the format, which
    saves encoding every cell again."""
    if json.dumps(time_format, ensure_ascii=False) == f'"{time_format}"':
        return utc.dt.strftime(f'"{time_format}"')
    return json_string(utc.dt.strftime(time_format))


def text_of(column: str) -> str:
    """Name of the materialised plain-text view of a source column."""
    return f"__text:{column}"


def kind_of(column: str) -> str:
    """Name of the materialised JSON kind of a source column."""
    return f"__kind:{column}"


def naive_of(column: str) -> str:
    """Name of the flag: this row's time in `column` had no offset."""
    return f"__naive:{column}"


def time_message_of(column: str) -> str:
    """Name of the message column of the time rule on `column`."""
    return f"__time_message:{column}"
