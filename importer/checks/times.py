"""Timestamps in the forms people export them, to the destination's UTC format, column-wise.

ISO 8601 with or without offset (`Z`, `+02:00`, `UTC`), a space for the `T`, fractional
seconds, a date alone, or epoch seconds or milliseconds; naive times are read in the mapping's
timezone. A column's epoch unit is decided once per file by its first epoch value (in a row the
mapping's filter keeps), so the verdict does not depend on how the file is cut into batches.
The names of the columns that validation materialises next to the input's (plain text, JSON
kind, naive flag, message) live here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import polars.selectors as cs

from importer.columns import LINE
from importer.jsontext import json_string

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


def epoch_unit_is_ms(column: str, state: FileState, *, among: pl.Expr) -> pl.Expr:
    """Whether the epoch values of `column` are milliseconds, as a boolean expression: the unit
    the file's first epoch value decided, or where no batch has decided it yet, this batch's
    first epoch value in the rows `among` marks (null when it has none); `learn_epoch_units`
    keeps the verdict."""
    if column in state.epoch_units:
        return pl.lit(state.epoch_units[column] == "ms")
    text = pl.col(text_of(column))
    first = text.filter(text.str.contains(EPOCH_RE) & among).cast(pl.Float64).first()
    return first.abs() >= MS_THRESHOLD


def learn_epoch_units(checked: pl.DataFrame, columns: list[str], state: FileState) -> None:
    """Keep the epoch unit a batch decided (its `epoch_of` columns, see parse_times) for the
    batches after it, so the verdict does not depend on how the file is cut into batches."""
    for column in columns:
        if column in state.epoch_units:
            continue
        verdicts = checked[epoch_of(column)].drop_nulls()
        if verdicts.len():
            verdict = verdicts[0]
            state.epoch_units[column] = "ms" if verdict else "s"


def parse_times(
    work: pl.LazyFrame,
    column: str,
    *,
    timezone: str,
    unit_ms: pl.Expr,
    now: datetime,
    required: bool,
    time_format: str,
    quick: bool = True,
    declared: bool = False,
) -> pl.LazyFrame:
    """Replace `column` with the UTC time as JSON text in `time_format`; add `naive_of(column)`,
    `time_message_of(column)` and `epoch_of(column)` (the batch's epoch unit, `unit_ms`, on the
    rows that took the general way). `work` needs LINE, unique in a batch, to put rows together.

    Rows in the UTC_Z form take a short way (a third of the work); the general way is given
    only the other rows, none when every time is in that form, and joined back by LINE.
    `quick=False` sends every row the general way (for tests). `declared`: the mapping declares
    the column's epoch unit, so neither a number's magnitude nor eight digits make it doubtful.
    """
    text = pl.col(text_of(column))
    stamp = text.str.to_datetime(UTC_Z_FORMAT, time_unit="ms", strict=False)
    ok = (text.str.contains(UTC_Z_RE) & stamp.is_not_null()).fill_null(False)
    if not quick:
        ok = pl.lit(False)
    work = work.with_columns(stamp.alias("__t_stamp"), ok.alias("__t_ok"))
    rest = work.filter(~pl.col("__t_ok")).select(
        LINE,
        pl.col(kind_of(column)),
        pl.col(column),
        text.alias("__t_rest"),
        unit_ms.alias(epoch_of(column)),
    )
    rest = _parse_any(
        rest, column, timezone=timezone, now=now, required=required, declared=declared
    ).select(LINE, "__t_utc", "__t_naive", "__t_message", epoch_of(column))
    work = work.join(rest, on=LINE, how="left", maintain_order="left")
    quick_ok = pl.col("__t_ok")
    stamp = pl.col("__t_stamp")
    now_naive = now.astimezone(UTC).replace(tzinfo=None)
    quick_text = _quick_json_time(text, time_format)
    if quick_text is None:
        utc = pl.when(quick_ok).then(stamp).otherwise(pl.col("__t_utc"))
        sent = _json_time(utc, time_format)
    else:  # strftime only for the general way's rows (null on the others, which is free)
        sent = (
            pl.when(quick_ok).then(quick_text).otherwise(_json_time(pl.col("__t_utc"), time_format))
        )
    future = pl.when(stamp > pl.lit(now_naive)).then(pl.format("{} is in the future", text))
    work = work.with_columns(
        pl.when(quick_ok)
        .then(pl.lit(False))
        .otherwise(pl.col("__t_naive"))
        .alias(naive_of(column)),
        pl.when(quick_ok)
        .then(future)
        .otherwise(pl.col("__t_message"))
        .alias(time_message_of(column)),
        sent.alias(column),
    )
    return work.drop(cs.starts_with("__t_"))


# A format that starts with the UTC_Z form's fields, then milliseconds or not, then characters
# of its own: what the short way can write from the text, which it matched field by field.
_WHOLE_SECONDS = "%Y-%m-%dT%H:%M:%S"


def _quick_json_time(text: pl.Expr, time_format: str) -> pl.Expr | None:
    """The JSON text of a time in the UTC_Z form in `time_format`, cut from its text (its first
    19 characters are the fields, in order; it has no fraction); None for a format that needs
    strftime."""
    if not time_format.startswith(_WHOLE_SECONDS):
        return None
    rest = time_format[len(_WHOLE_SECONDS) :]
    if rest.startswith("%.3f"):
        rest = ".000" + rest[len("%.3f") :]
    if "%" in rest or json.dumps(rest, ensure_ascii=False) != f'"{rest}"':
        return None
    return pl.concat_str(pl.lit('"'), text.str.head(19), pl.lit(rest + '"'))


def _parse_any(
    work: pl.LazyFrame,
    column: str,
    *,
    timezone: str,
    now: datetime,
    required: bool,
    declared: bool = False,
) -> pl.LazyFrame:
    """The general way, on the text in `__t_rest`: adds `__t_utc` (naive UTC), `__t_naive` and
    `__t_message`. Times in any form it reads; the epoch unit is `epoch_of(column)`.

    Done in stages of materialised columns, as the regex groups feed several later expressions.
    """
    text = pl.col("__t_rest").str.strip_chars()
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
        (group[1].is_not_null() & zone.is_null()).alias("__t_naive"),
    )
    local = pl.col("__t_local")
    naive = pl.col("__t_naive")
    if timezone == "UTC":
        naive_utc = local
    else:
        naive_utc = (
            local.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
            .dt.convert_time_zone("UTC")
            .dt.replace_time_zone(None)
        )
    unit_ms = pl.col(epoch_of(column)).fill_null(False)
    factor = pl.when(unit_ms).then(pl.lit(1.0)).otherwise(pl.lit(1000.0))
    from_epoch = pl.from_epoch(
        (pl.col("__t_epoch") * factor).cast(pl.Int64, strict=False), time_unit="ms"
    )
    work = work.with_columns(
        pl.when(pl.col("__t_is_epoch"))
        .then(from_epoch)
        .when(naive)
        .then(naive_utc)
        .otherwise(local - pl.duration(minutes=pl.col("__t_offset")))
        .alias("__t_utc")
    )
    utc = pl.col("__t_utc")
    is_epoch = pl.col("__t_is_epoch")
    text = pl.col("__t_text")
    wrong_unit = is_epoch & ((pl.col("__t_epoch").abs() >= MS_THRESHOLD) != unit_ms)
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
                pl.when(unit_ms).then(pl.lit("milliseconds")).otherwise(pl.lit("seconds")),
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
        .when(utc.is_null() & naive & local.is_not_null())
        .then(pl.format("{} does not exist in {} (a daylight-saving gap)", text, pl.lit(timezone)))
        .when(utc.is_null())
        .then(pl.format("{} is not a time (ISO 8601, epoch seconds or milliseconds)", text))
        .when(utc > pl.lit(now_naive))
        .then(pl.format("{} is in the future", text))
    )
    return work.with_columns(message.alias("__t_message"))


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


def epoch_of(column: str) -> str:
    """Name of the flag: the batch read the epoch values of `column` as milliseconds (null:
    it had none and the file's unit is still open)."""
    return f"__epoch:{column}"
