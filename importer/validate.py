"""Check a batch against the destination's rules, column-wise, and normalise what passes.

Input: a Batch frame (JSON text cells, see read.py) and a Mapping. Output: a frame with one JSON
text column per payload path (`identity.id`, `event_name`, `extras.created_at`, `data`), ready
for payload.py, and a rejects frame naming line, rule, column and message for every row that
fails. Rules are Polars expressions that yield a message where a row breaks them; the first
failing rule of a row is its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import polars.selectors as cs

from importer.jsontext import json_as_text, json_kind, json_object, json_string
from importer.read import COLUMN, ERROR, LINE, RULE, dump_json, load_json
from importer.schema import ALL_COLUMNS, Mapping

MAX_CHARS = 255
USER = "__user"
EVENT = "__event"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S+0000"
MS_THRESHOLD = 1e11  # 1e11 s is the year 5138 and 1e11 ms is 1973: the magnitudes never overlap

# WHATWG's e-mail grammar, with a dot required in the domain as Vero wants a deliverable address.
EMAIL_RE = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
ISO_RE = (
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ]([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d)(?:[.,]\d+)?)?)?"
    r" ?(Z|z|UTC|GMT|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)?$"
)
EPOCH_RE = r"^-?\d+(?:\.\d+)?$"
INT_RE = r"^-?(?:0|[1-9]\d*)$"
NUMBER_RE = r"^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$"
TRUE_WORDS = ["true", "yes", "1"]
FALSE_WORDS = ["false", "no", "0"]

IDENTITY_PATHS = frozenset({"id", "email", "identity.id", "identity.email"})
STRING_PATHS = frozenset(
    {
        "id",
        "email",
        "identity.id",
        "identity.email",
        "event_name",
        "extras.source",
        "extras.check_id",
    }
)


@dataclass(slots=True)
class FileState:
    """What validation learns about one input as its batches go by (epoch unit per column)."""

    epoch_units: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Checked:
    """A validated batch: payload-path columns of the good rows, and the rejected rows."""

    valid: pl.DataFrame
    rejects: pl.DataFrame
    naive_times: int


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    column: str | None
    message: pl.Expr


def validate_frame(
    frame: pl.DataFrame, mapping: Mapping, *, state: FileState, now: datetime
) -> Checked:
    """Split `frame` into normalised good rows and rejects, following the mapping's destination."""
    columns = [c for c in frame.columns if c != LINE]
    original = frame
    work = frame.with_columns(
        [pl.lit(None, pl.String).alias(c) for c in mapping.source_columns if c not in columns]
    )
    rules: list[_Rule] = []

    def add_rules(new_rules: list[_Rule], *converted: pl.Expr) -> pl.DataFrame:
        # Messages are materialised next to the conversion, so both see the value as it was.
        named = [r.message.alias(f"__message{len(rules) + i}") for i, r in enumerate(new_rules)]
        for i, rule in enumerate(new_rules):
            rules.append(_Rule(rule.name, rule.column, pl.col(f"__message{len(rules)}")))
            del i
        return work.with_columns(*named, *converted)

    for column, type_name in mapping.types.items():
        if type_name != "timestamp":
            converted, message = _coerce(pl.col(column), type_name)
            work = add_rules([_Rule("type", column, message)], converted.alias(column))
    named = mapping.source_columns
    work = work.with_columns(
        *[json_as_text(pl.col(c)).alias(text_of(c)) for c in named],
        *[json_kind(pl.col(c)).alias(kind_of(c)) for c in named],
    )
    # The event time may never be empty (it would be sent as "now"); other times may.
    required_times = {mapping.fields[p] for p in mapping.action.time_fields if p in mapping.fields}
    time_columns = required_times | {c for c, t in mapping.types.items() if t == "timestamp"}
    naive: list[pl.Expr] = []
    for column in sorted(time_columns):
        unit = _epoch_unit(work, column, state)
        work = _parse_times(
            work,
            column,
            timezone=mapping.timezone,
            unit=unit,
            now=now,
            required=column in required_times,
        )
        naive.append(pl.col(naive_of(column)))
        rules.append(_Rule("timestamp", column, pl.col(time_message_of(column))))

    data_path = next(iter(mapping.action.object_fields), None)
    outputs: dict[str, pl.Expr] = {}
    checks: list[_Rule] = []
    for payload_path, column in mapping.fields.items():
        if column == ALL_COLUMNS or payload_path.startswith(f"{data_path}."):
            continue
        value = pl.col(column)
        if payload_path in STRING_PATHS:
            checks.extend(_string_rules(payload_path, column))
            text = pl.col(text_of(column))
            if payload_path in IDENTITY_PATHS:
                text = _present(text)  # "" or "  " identifies nobody: leave it out
            outputs[payload_path] = json_string(text)
        elif payload_path in mapping.action.object_fields:
            checks.append(_Rule("data_object", column, _object_message(value, payload_path)))
            outputs[payload_path] = value
        elif payload_path == "channels":
            checks.append(_Rule("channels", column, _channels_message(value)))
            outputs[payload_path] = value
        else:
            outputs[payload_path] = value
    checks.extend(_identity_rules(mapping))
    work = add_rules(checks)

    if data_path is not None:
        outputs[data_path] = _data_object(mapping, data_path, columns)
    identity = [p for p in ("identity.id", "id", "identity.email", "email") if p in mapping.fields]
    user = pl.coalesce([_present(pl.col(text_of(mapping.fields[p]))) for p in identity])
    event = (
        pl.col(text_of(mapping.fields["event_name"])) if "event_name" in mapping.fields else None
    )
    if mapping.action.name == "identify" and "email" in outputs:
        # Vero uses an email alone as the id; say so in the payload rather than rely on it.
        outputs["id"] = (
            pl.coalesce(outputs["id"], outputs["email"]) if "id" in outputs else outputs["email"]
        )

    nothing = pl.lit(None, pl.String)
    work = work.with_columns(
        pl.coalesce([r.message for r in rules] or [nothing]).alias(ERROR),
        pl.coalesce([_when(r.message, pl.lit(r.name)) for r in rules] or [nothing]).alias(RULE),
        pl.coalesce([_when(r.message, pl.lit(r.column)) for r in rules] or [nothing]).alias(COLUMN),
        pl.any_horizontal(naive).alias("__naive") if naive else pl.lit(False).alias("__naive"),
    )
    is_bad = work[ERROR].is_not_null()
    rejects = pl.concat(
        [
            work.filter(is_bad).select(LINE, RULE, COLUMN, ERROR),
            original.filter(is_bad).select(columns),
        ],
        how="horizontal",
    )
    good = work.filter(~is_bad)
    valid = good.select(
        LINE,
        *[expr.alias(path) for path, expr in outputs.items()],
        user.alias(USER),
        (event if event is not None else nothing).alias(EVENT),
    )
    return Checked(valid=valid, rejects=rejects, naive_times=int(good["__naive"].sum()))


def _present(text: pl.Expr) -> pl.Expr:
    """The text where it has a character other than white space, else null."""
    return pl.when(text.str.strip_chars() != "").then(text)


def _when(message: pl.Expr, value: pl.Expr) -> pl.Expr:
    """`value` on the rows where a rule has a message, null elsewhere."""
    return pl.when(message.is_not_null()).then(value).otherwise(None)


# ------------------------------------------------------------------------------ value rules


def _string_rules(payload_path: str, column: str) -> list[_Rule]:
    value = pl.col(column)
    kind = pl.col(kind_of(column))
    text = pl.col(text_of(column))
    rules = [
        _Rule(
            "type",
            column,
            pl.when(kind.is_in(["object", "array"])).then(
                pl.format("{} must be text, not a JSON {}", pl.lit(payload_path), kind)
            ),
        ),
        _Rule(
            "length",
            column,
            pl.when(text.str.len_chars() >= MAX_CHARS).then(
                pl.format(
                    "{} is {} characters; Vero needs fewer than 255",
                    pl.lit(payload_path),
                    text.str.len_chars(),
                )
            ),
        ),
    ]
    if payload_path.endswith("email"):
        rules.append(
            _Rule(
                "email",
                column,
                pl.when(text.is_not_null() & (text != "") & ~text.str.contains(EMAIL_RE)).then(
                    pl.format("{} {} is not a valid email address", pl.lit(payload_path), value)
                ),
            )
        )
    if payload_path == "event_name":
        rules.append(
            _Rule(
                "event_name",
                column,
                pl.when(text.is_null() | (text.str.strip_chars() == "")).then(
                    pl.lit("event_name is empty")
                ),
            )
        )
    return rules


def _identity_rules(mapping: Mapping) -> list[_Rule]:
    paths = [p for p in ("identity.id", "identity.email", "id", "email") if p in mapping.fields]
    if not paths:
        return []
    present = [
        (pl.col(text_of(mapping.fields[p])).str.strip_chars() != "").fill_null(False) for p in paths
    ]
    names = " and ".join(f"{p} ({mapping.fields[p]})" for p in paths)
    return [
        _Rule(
            "identity",
            mapping.fields[paths[0]],
            pl.when(~pl.any_horizontal(present)).then(pl.lit(f"no user identity: {names} empty")),
        )
    ]


def _object_message(value: pl.Expr, payload_path: str) -> pl.Expr:
    kind = json_kind(value)
    return pl.when(value.is_not_null() & (kind != "object")).then(
        pl.format(
            "{} must be a JSON object, not {} {} (a text column holding JSON needs "
            '[types] <column> = "json")',
            pl.lit(payload_path),
            pl.when(kind.str.contains("^[aeiou]")).then(pl.lit("an")).otherwise(pl.lit("a")),
            kind,
        )
    )


def _channels_message(value: pl.Expr) -> pl.Expr:
    """Vero's channels: an array of device objects ({"type", "address", "platform"})."""
    objects = value.str.contains(r"^\[\s*(?:\]|\{)")
    return pl.when(value.is_not_null() & (value != "null") & ~objects).then(
        pl.format(
            "channels must be a JSON array of objects such as "
            '[{{"type": "push", "address": "...", "platform": "ios"}}], not {} (a text column '
            'holding JSON needs [types] <column> = "json")',
            value,
        )
    )


def _data_object(mapping: Mapping, data_path: str, columns: list[str]) -> pl.Expr:
    """The data object: the column mapped to it, or every unmapped column, plus `data.<key>` ones.

    Null cells are left out: an empty CSV cell or an absent JSONL key is no value, not a null.
    """
    named = {c for c in mapping.fields.values() if c != ALL_COLUMNS}
    prefix = f"{data_path}."
    keyed = [(p[len(prefix) :], c) for p, c in mapping.fields.items() if p.startswith(prefix)]
    members: list[tuple[str, str]] = []
    if mapping.fields.get(data_path) == ALL_COLUMNS:
        # A key named in the mapping wins over a column of the same name: a JSON object with
        # one key twice means whatever the receiver's parser makes of it.
        taken = named | {key for key, _ in keyed}
        members += [(c, c) for c in columns if c not in taken]
    members += keyed
    base = (
        pl.col(mapping.fields[data_path])
        if mapping.fields.get(data_path, ALL_COLUMNS) != ALL_COLUMNS
        else None
    )
    if not members:
        return base if base is not None else pl.lit(None, pl.String)
    body = json_object([(key, pl.col(column)) for key, column in members])
    if base is None:
        return body
    # A data column and data.<key> columns together: merge by splicing the members in.
    extra = body.str.slice(1).str.strip_suffix("}")
    return (
        pl.when(base.is_null() | (base == "{}"))
        .then(body)
        .when(body.is_null() | (extra == ""))
        .then(base)
        .otherwise(base.str.strip_suffix("}") + pl.lit(",") + extra + pl.lit("}"))
    )


# --------------------------------------------------------------------------------- coercion


def _coerce(value: pl.Expr, type_name: str) -> tuple[pl.Expr, pl.Expr]:
    """The cell converted to the forced type, and a message where it cannot be."""
    kind = json_kind(value)
    text = json_as_text(value)
    if type_name == "string":
        converted = (
            pl.when(kind == "string").then(value).otherwise(json_string(pl.coalesce(text, value)))
        )
        return pl.when(kind == "null").then(None).otherwise(converted), pl.lit(None, pl.String)
    if type_name in ("integer", "number"):
        pattern = INT_RE if type_name == "integer" else NUMBER_RE
        ok = text.str.contains(pattern)
        message = pl.when(value.is_not_null() & (kind != "null") & ~ok.fill_null(False)).then(
            pl.format(
                "{} is not {}",
                value,
                pl.lit("an integer" if type_name == "integer" else "a number"),
            )
        )
        return pl.when(ok).then(text), message
    if type_name == "boolean":
        lowered = text.str.to_lowercase()
        converted = (
            pl.when(lowered.is_in(TRUE_WORDS))
            .then(pl.lit("true"))
            .when(lowered.is_in(FALSE_WORDS))
            .then(pl.lit("false"))
        )
        message = pl.when(value.is_not_null() & (kind != "null") & converted.is_null()).then(
            pl.format("{} is not a boolean (true/false, yes/no, 1/0)", value)
        )
        return converted, message
    # json: a text cell that holds JSON, as CSV exports write nested data
    parsed = (
        pl.when(kind == "string")
        .then(text)
        .otherwise(value)
        .map_batches(_reencode, return_dtype=pl.String)
    )
    message = pl.when(value.is_not_null() & parsed.is_null()).then(
        pl.format("{} is not valid JSON", value)
    )
    return parsed, message


def _reencode(texts: pl.Series) -> pl.Series:
    """Each text's JSON re-encoded compactly, null where it is not JSON (a Python pass, json only)."""

    def one(text: str | None) -> str | None:
        if text is None:
            return None
        try:
            return dump_json(load_json(text))
        except (ValueError, RecursionError):
            return None

    return pl.Series(texts.name, [one(t) for t in texts.to_list()], dtype=pl.String)


# ---------------------------------------------------------------------------------- time


def _epoch_unit(frame: pl.DataFrame, column: str, state: FileState) -> str:
    """Seconds or milliseconds for the epoch values of `column`, decided once per file by its
    first epoch value, so the verdict does not depend on how the file is cut into batches."""
    if column in state.epoch_units:
        return state.epoch_units[column]
    numbers = frame.select(
        json_as_text(pl.col(column))
        .filter(json_as_text(pl.col(column)).str.contains(EPOCH_RE))
        .cast(pl.Float64)
    ).to_series()
    if numbers.len() == 0:
        return "s"
    unit = "ms" if abs(numbers[0]) >= MS_THRESHOLD else "s"
    state.epoch_units[column] = unit
    return unit


def _parse_times(
    work: pl.DataFrame,
    column: str,
    *,
    timezone: str,
    unit: str,
    now: datetime,
    required: bool,
) -> pl.DataFrame:
    """Replace `column` with Vero's UTC text; add `naive_of(column)` and `time_message_of(column)`.

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
    group = {i: pl.col(f"__t_iso{i}") for i in range(1, 8)}
    sign = pl.when(group[7].str.starts_with("-")).then(-1).otherwise(1)
    digits = group[7].str.replace_all(r"[^0-9]", "")
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
        .alias("__t_local"),
        (
            sign
            * (
                digits.str.slice(0, 2).cast(pl.Int64, strict=False).fill_null(0) * 60
                + digits.str.slice(2, 2).cast(pl.Int64, strict=False).fill_null(0)
            )
        ).alias("__t_offset"),
        (group[1].is_not_null() & group[7].is_null()).alias(naive_of(column)),
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
        .when(is_epoch & text.str.contains(r"^\d{8}$"))
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
        json_string(utc.dt.strftime(TIME_FORMAT)).alias(column),
    )
    return work.drop(cs.starts_with("__t_"))


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
