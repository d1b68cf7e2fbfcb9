"""Check a batch against the destination's rules, column-wise, and normalise what passes.

Input: a Batch frame (JSON text cells, see inputs/reader.py) and a Mapping. Output: a frame
with one JSON text column per payload path the mapping fills, ready for payloads/build.py, and
a rejects frame naming line, rule, column and message for every row that fails. The rules come
from the action's declaration (destinations/base.py): each field's kind and limits, the
identity paths, and the API's own rules across paths. Each rule is a Polars expression that
yields a message where a row breaks it; the first failing rule of a row is its reason.

The whole batch is one lazy query, collected once (validate_frame), in stages per source column:

    repair     the mapping's repairs (checks/repairs.py): null markers, object members, the
               row filter, fallbacks, trim and lower case, time patterns; each repaired cell
               replaces pl.col(column), and each repair adds the count of cells it changed
    source     pl.col(column): the cell as read and repaired (JSON text), an absent one null
    normalise  [types] conversion (checks/coerce.py), with its rule; then the column's plain
               text (text_of) and JSON kind (kind_of), which every later stage reads
    check      per path its field's rules (_field_rules), times parsed (checks/times.py),
               then rules across paths; each rule a message expression
    value      the JSON text each path sends (`outputs`), objects merged from their members
    verdict    a row's first failing rule; a row the filter (FILTERED) or the --since/--until
               window (`__outside`) leaves out is neither sent nor rejected, only counted

No stage removes a row, so the batch as read lines up with the query's result: a reject shows
the row as it was read, before its repairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from importer.checks.coerce import INT_RE, coerce
from importer.checks.repairs import DROPPED, FILTERED, drop_invalid, repair_frame, with_reasons
from importer.checks.shard import user_hashes
from importer.checks.times import (
    FileState,
    epoch_of,
    epoch_unit_is_ms,
    kind_of,
    learn_epoch_units,
    naive_of,
    parse_times,
    text_of,
    time_message_of,
)
from importer.columns import COLUMN, ERROR, EVENT, LINE, ROUTE, RULE, USER
from importer.destinations import Action
from importer.destinations.base import AnyPresent, Distinct, ExprRule, Field, Requires, options_of
from importer.errors import MappingError
from importer.jsoncodec import dump_json, load_json
from importer.jsontext import (
    json_as_text,
    json_kind,
    json_object,
    json_outside_strings,
    json_string,
    json_text_of,
)
from importer.mapping.file import ALL_COLUMNS, Mapping

# A JSON array of strings, none empty: what a list field sends. Escapes and characters only as
# JSON allows them, since the text is spliced into the body as it is.
_STRING = r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))+"'
ARRAY_OF_STRINGS = rf"^\s*\[\s*(?:{_STRING}\s*(?:,\s*{_STRING}\s*)*)?\]\s*$"
# JSON text that holds nothing: an empty array, object or string, or white space.
_EMPTY = r'^\s*(?:\[\s*\]|\{\s*\}|"\s*")?\s*$'

__all__ = ["EVENT", "USER", "Checked", "FileState", "Window", "validate_frame", "window_column"]


@dataclass(frozen=True, slots=True)
class Checked:
    """A validated batch: payload-path columns of the good rows, and the rejected rows;
    `outside` counts the rows left out as outside the --since/--until window (neither)."""

    valid: pl.DataFrame
    rejects: pl.DataFrame
    naive_times: int
    outside: int = 0
    # The mapping's repairs (checks/repairs.py): rows its filter left out, cells each changed.
    filtered: int = 0
    repairs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Window:
    """`--since`/`--until`: keep the rows whose mapped time is in [since, until); an end left
    as None is open. Both are aware datetimes, compared in UTC."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for end in (self.since, self.until):
            if end is not None and end.tzinfo is None:
                raise ValueError("window ends must be aware datetimes")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must come before until")

    def excludes(self, when: pl.Expr) -> pl.Expr:
        """True where a naive UTC time lies outside the window; null where it is null."""
        out = pl.lit(False)
        if self.since is not None:
            out = out | (when < pl.lit(_naive_utc(self.since)))
        if self.until is not None:
            out = out | (when >= pl.lit(_naive_utc(self.until)))
        return out


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def window_column(mapping: Mapping) -> str | None:
    """The source column a window filters on: the one mapped to the action's required time
    field, else the first column the mapping types as a timestamp; None when there is none."""
    action = mapping.action
    required = [p for p in sorted(action.time_fields) if action.fields[p].required]
    for path in required:
        column = mapping.fields.get(path)
        if column is not None and column != ALL_COLUMNS:
            return column
    return next((c for c, t in mapping.types.items() if t == "timestamp"), None)


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    column: str | None
    message: pl.Expr


def validate_frame(
    frame: pl.DataFrame,
    mapping: Mapping,
    *,
    state: FileState,
    now: datetime,
    window: Window | None = None,
    route: bool = False,
) -> Checked:
    """Split `frame` into normalised good rows and rejects, following the mapping's action;
    with `window`, rows whose time lies outside it are neither (only counted); with `route`,
    the good rows carry ROUTE (for --shard, --workers and per-user order; it costs a hash of
    every distinct user, so it is left out where nothing reads it)."""
    action = mapping.action
    columns = [c for c in frame.columns if c != LINE]
    # 0. repairs (checks/repairs.py): the query starts with them; `frame` stays as read.
    repaired = repair_frame(frame.lazy(), mapping, state)
    paths = filled_paths(mapping, columns)
    absent = [c for c in mapping.source_columns if c not in repaired.columns]
    work = repaired.work.with_columns(pl.lit(None, pl.String).alias(c) for c in absent)
    rules: list[_Rule] = []

    def add_rules(work: pl.LazyFrame, new_rules: list[_Rule], *converted: pl.Expr) -> pl.LazyFrame:
        # Messages are materialised next to the conversion, so both see the value as it was.
        first = len(rules)
        named = [r.message.alias(f"__message{first + i}") for i, r in enumerate(new_rules)]
        rules.extend(
            _Rule(r.name, r.column, pl.col(f"__message{first + i}"))
            for i, r in enumerate(new_rules)
        )
        return work.with_columns(*named, *converted)

    # 1. normalise: [types] conversions, on the repaired cells
    for column, type_name in mapping.types.items():
        if type_name != "timestamp":
            converted, message = coerce(pl.col(column), type_name)
            work = add_rules(work, [_Rule("type", column, message)], converted.alias(column))
    read = list(dict.fromkeys([*mapping.source_columns, *paths.values()]))
    work = work.with_columns(
        *[json_as_text(pl.col(c)).alias(text_of(c)) for c in read],
        *[json_kind(pl.col(c)).alias(kind_of(c)) for c in read],
    )

    # 2. times: parsed, replaced by the time as sent, with their rule's message
    # A required time may never be empty (it would be sent as "now"); other times may.
    times = {c: action.field_of(p).required for p, c in paths.items() if _kind(action, p) == "time"}
    for column, type_name in mapping.types.items():
        if type_name == "timestamp":
            times.setdefault(column, False)
    naive: list[pl.Expr] = []
    for column in sorted(times):
        work = parse_times(
            work,
            column,
            timezone=mapping.timezone,
            unit_ms=epoch_unit_is_ms(column, state, among=~pl.col(FILTERED)),
            now=now,
            required=times[column],
            time_format=mapping.destination.time_format,
            declared=column in state.declared,  # issue 20: repairs.epoch_units
        )
        naive.append(pl.col(naive_of(column)))
        rules.append(_Rule("timestamp", column, pl.col(time_message_of(column))))

    # 3. checks and values: each path's rules and the JSON text it sends, then rules across paths
    outputs: dict[str, pl.Expr] = {}
    checks: list[_Rule] = []
    for path, column in paths.items():
        field = action.field_of(path)
        found, output = _field_rules(path, column, field, mapping)
        checks.extend(found)
        outputs[path] = output
    checks.extend(_identity_rules(mapping))
    checks.extend(_action_rules(mapping, paths, outputs))

    for object_path in action.object_fields:
        members = _members(mapping, object_path, columns, paths, outputs)
        base = mapping.fields.get(object_path)
        whole = outputs.pop(object_path, None) if base not in (None, ALL_COLUMNS) else None
        if action.field_of(object_path).members == "primitive":
            found, whole, members = _primitive(mapping, object_path, whole, members)
            checks.extend(found)
        merged = _merge_object(whole, [(key, value) for key, _, value in members])
        if merged is not None:
            outputs[object_path] = merged
    checks.extend(_requires_rules(mapping, paths, outputs))
    work = add_rules(work, checks)
    for path, sources in action.fallback.items():
        found_sources = [outputs[p] for p in sources if p in outputs]
        if found_sources:
            outputs[path] = pl.coalesce(found_sources)

    # The field policy (repairs.drop_invalid): an optional value that breaks its rule leaves
    # the row, which goes without it, instead of rejecting the row.
    droppable = set(mapping.repairs.drop_invalid)
    if droppable and rules:
        keep, work = drop_invalid(work, [(r.column, r.message) for r in rules], droppable)
        rules = [rule for rule, kept in zip(rules, keep, strict=True) if kept]
    else:
        work = work.with_columns(pl.lit(0, pl.Int64).alias(DROPPED))

    # 4. verdict: a row's first failing rule, and whether the window leaves it out
    patterns = _patterns(mapping, paths)  # to say why a rejected value breaks its pattern
    reason_texts = list(dict.fromkeys(text_of(column) for _, column, _ in patterns))
    nothing = pl.lit(None, pl.String)
    verdict = [
        pl.coalesce([r.message for r in rules] or [nothing]).alias(ERROR),
        pl.coalesce([_when(r.message, pl.lit(r.name)) for r in rules] or [nothing]).alias(RULE),
        pl.coalesce([_when(r.message, pl.lit(r.column)) for r in rules] or [nothing]).alias(COLUMN),
        pl.any_horizontal(naive).alias("__naive") if naive else pl.lit(False).alias("__naive"),
    ]
    if window is not None:
        column = window_column(mapping)
        if column is None:
            raise MappingError(window_refusal(mapping))
        # The time as it will be sent, parsed back: rows whose time is unreadable keep their
        # place and their reject; a row outside the window is left out whatever else it breaks.
        when = json_as_text(pl.col(column)).str.to_datetime(
            mapping.destination.time_format, time_unit="ms", strict=False
        )
        verdict.append(window.excludes(when).fill_null(False).alias("__outside"))
    else:
        verdict.append(pl.lit(False).alias("__outside"))
    result = (
        work.with_columns(verdict)
        .select(
            LINE,
            ERROR,
            RULE,
            COLUMN,
            "__naive",
            "__outside",
            FILTERED,
            *repaired.counts,
            *[pl.col(epoch_of(c)) for c in sorted(times)],
            *[expr.alias(path) for path, expr in outputs.items()],
            *_duplicate_keys(mapping, paths),
            *(_route(mapping, paths) if route else []),
            DROPPED,
            *reason_texts,
        )
        .collect()
    )
    # Rows the filter leaves out are neither sent nor rejected, whatever else they break.
    filtered, outside = result[FILTERED], result["__outside"] & ~result[FILTERED]
    learn_epoch_units(result, sorted(times), state)  # decided among the rows kept (`among`)
    is_bad = result[ERROR].is_not_null() & ~result["__outside"] & ~filtered
    is_good = result[ERROR].is_null() & ~result["__outside"] & ~filtered
    rejects = pl.concat(
        [
            # the reason a value breaks its pattern, found on the rejected rows alone
            with_reasons(result.filter(is_bad), patterns).select(LINE, RULE, COLUMN, ERROR),
            # no row left the query: `frame`, as read, lines up with `result` row for row
            frame.filter(is_bad).select(columns),
        ],
        how="horizontal",
    )
    good = result.filter(is_good)
    working = {ERROR, RULE, COLUMN, "__naive", "__outside", FILTERED, DROPPED, *reason_texts}
    working |= set(repaired.counts)
    kept = [c for c in good.columns if c not in working]
    valid = good.select(c for c in kept if not c.startswith("__epoch:"))
    return Checked(
        valid=valid,
        rejects=rejects,
        naive_times=int(good["__naive"].sum()),
        outside=int(outside.sum()),
        filtered=int(filtered.sum()),
        repairs=repaired.counted(result, sent=is_good),
    )


def window_refusal(mapping: Mapping) -> str:
    """Why --since/--until cannot apply to the mapping: its rows have no time to filter by."""
    return (
        f"--since/--until: action {mapping.action.name!r} of mapping {mapping.path} has no time "
        'field, and the mapping types no column as "timestamp": its rows have no time to '
        "filter by"
    )


def receipt_time_note(mapping: Mapping, rows: int) -> str | None:
    """One line for a job whose action the API stamps with the moment it receives it, when the
    mapping sends a timestamp column anyway: that time travels only as a property."""
    action = mapping.action
    timed = [c for c, type_name in mapping.types.items() if type_name == "timestamp"]
    if not action.receipt_time or not timed or rows == 0:
        return None
    star = mapping.star_path
    sent = [p for p, c in mapping.fields.items() if c in timed]
    if star is not None:
        sent += [f"{star}.{c}" for c in timed if c not in mapping.fields.values()]
    if not sent:
        return None
    parents = {p.partition(".")[0] for p in sent}
    keys = ", ".join(json.dumps(p.partition(".")[2] or p, ensure_ascii=False) for p in sent)
    if len(parents) == 1 and all("." in p for p in sent):
        plural = "properties" if len(sent) > 1 else "property"
        where = f"the {parents.pop()} {plural} {keys}"
    else:
        where = ", ".join(sent)
    time_format = mapping.destination.time_format
    form = "ISO 8601 UTC" if time_format.startswith("%Y-%m-%dT") else "UTC"
    keeper = _dated_action(mapping)
    advice = f'use action = "{keeper}"' if keeper else "use an action that takes the event's time"
    events = "event" if rows == 1 else "events"
    return (
        f"{rows:,} {action.name} {events}: {mapping.destination.title} stamps each with the "
        f"moment it receives it; their original times travel only as {where} ({form}). To keep "
        f"the dates, {advice}."
    )


def _dated_action(mapping: Mapping) -> str | None:
    """An action of the destination that takes every path of the mapping's action and a
    required time: the one that keeps an event's date."""
    action = mapping.action
    for other in mapping.destination.actions.values():
        times = [f for f in other.fields.values() if f.kind == "time" and f.required]
        if other is not action and times and set(action.fields) <= set(other.fields):
            return other.name
    return None


def filled_paths(mapping: Mapping, columns: list[str]) -> dict[str, str]:
    """Every payload path a row fills, with its source column, `"*"` left out.

    A column that `"*"` puts in an object under the name of a declared sub-field (a `timezone`
    column beside a declared `data.timezone`) is checked as that field, as if the mapping named it.
    """
    paths = {p: c for p, c in mapping.fields.items() if c != ALL_COLUMNS}
    star = mapping.star_path
    if star is not None:
        named = set(paths.values())
        for column in columns:
            sub = f"{star}.{column}"
            if column not in named and sub in mapping.action.fields and sub not in paths:
                paths[sub] = column
    return paths


def _kind(action: Action, path: str) -> str:
    return action.field_of(path).kind


def _present(text: pl.Expr) -> pl.Expr:
    """The text where it has a character other than white space, else null."""
    return pl.when(text.str.strip_chars() != "").then(text)


def _when(message: pl.Expr, value: pl.Expr) -> pl.Expr:
    """`value` on the rows where a rule has a message, null elsewhere."""
    return pl.when(message.is_not_null()).then(value).otherwise(None)


def _article(kind: pl.Expr) -> pl.Expr:
    return pl.when(kind.str.contains("^[aeiou]")).then(pl.lit("an")).otherwise(pl.lit("a"))


# ------------------------------------------------------------------------------ field rules


def _field_rules(
    path: str, column: str, field: Field, mapping: Mapping
) -> tuple[list[_Rule], pl.Expr]:
    """The rules of one mapped path by its kind, and the JSON text it sends."""
    value, kind, text = pl.col(column), pl.col(kind_of(column)), pl.col(text_of(column))
    rules: list[_Rule] = []
    if field.required and field.kind not in ("time", "array"):
        empty = text.is_null() | (text.str.strip_chars() == "")
        rules.append(_Rule("required", column, pl.when(empty).then(pl.lit(f"{path} is empty"))))
    if field.kind == "text":
        rules.extend(_text_rules(path, column, field, mapping))
        if path in mapping.action.identity or path in mapping.action.fallback:
            text = _present(text)  # "" or "  " identifies nobody: leave it out
        return rules, json_text_of(value, text)
    if field.kind == "object":
        rules.append(_Rule("data_object", column, _object_message(value, path)))
        return rules, value
    if field.kind == "array":
        delimiter = mapping.split.get(column)
        message, output = _array(value, kind, text, path, delimiter)
        rules.append(_Rule("list", column, message))
        return rules, output
    if field.kind == "integer":
        rules.append(_Rule("integer", column, _integer_message(text, kind, path, field)))
        return rules, pl.when(text.str.strip_chars() != "").then(text.str.strip_chars())
    return rules, value  # time (converted already) and json


def _text_rules(path: str, column: str, field: Field, mapping: Mapping) -> list[_Rule]:
    kind, text = pl.col(kind_of(column)), pl.col(text_of(column))
    api = mapping.destination.title
    rules = [
        _Rule(
            "type",
            column,
            pl.when(kind.is_in(["object", "array"])).then(
                pl.format("{} must be text, not a JSON {}", pl.lit(path), kind)
            ),
        )
    ]
    if field.max_chars is not None:
        rules.append(
            _Rule(
                "length",
                column,
                pl.when(text.str.len_chars() >= field.max_chars).then(
                    pl.format(
                        "{} is {} characters; {} needs fewer than {}",
                        pl.lit(path),
                        text.str.len_chars(),
                        pl.lit(api),
                        pl.lit(field.max_chars),
                    )
                ),
            )
        )
    if field.pattern is not None:
        bad = text.is_not_null() & (text != "") & ~text.str.contains(field.pattern)
        rules.append(
            _Rule(
                field.pattern_rule,
                column,
                pl.when(bad).then(
                    pl.format(
                        "{} {} {}", pl.lit(path), pl.col(column), pl.lit(field.pattern_message)
                    )
                ),
            )
        )
    return rules


def _patterns(
    mapping: Mapping, paths: dict[str, str]
) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
    """(rule, column, reasons) of each mapped field whose pattern says why a value breaks it."""
    found = []
    for path, column in paths.items():
        spec = mapping.action.field_of(path)
        if spec.pattern_reasons:
            found.append((spec.pattern_rule, column, spec.pattern_reasons))
    return found


def _object_message(value: pl.Expr, path: str) -> pl.Expr:
    kind = json_kind(value)
    return pl.when(value.is_not_null() & (kind != "object")).then(
        pl.format(
            "{} must be a JSON object, not {} {} (a text column holding JSON needs "
            '[types] <column> = "json")',
            pl.lit(path),
            _article(kind),
            kind,
        )
    )


def _array(
    value: pl.Expr, kind: pl.Expr, text: pl.Expr, path: str, delimiter: str | None
) -> tuple[pl.Expr, pl.Expr]:
    """A list of strings from a JSON array (or text holding one), or from text split at the
    mapping's delimiter. Returns the message where a cell is none of these, and the JSON
    array text to send."""
    if delimiter is not None:
        parts = (
            text.str.split(delimiter)
            .list.eval(pl.element().str.strip_chars())
            .list.eval(pl.element().filter(pl.element() != ""))
        )
        from_text = pl.struct(parts.alias("")).struct.json_encode().str.slice(4)
        from_text = from_text.str.strip_suffix("}")
        hint = f"a JSON array of strings or text split at {delimiter!r}"
    else:
        from_text = text
        hint = 'a JSON array of strings such as ["vip", "beta"], or text split at a delimiter'
        hint += ' set in the mapping ([split] <column> = ";")'
    as_array = (
        pl.when(kind == "array")
        .then(value)
        .when((kind == "string") & (delimiter is None or text.str.contains(r"^\s*\[")))
        .then(text)
        .when(kind == "string")
        .then(from_text)
    )
    strings = as_array.str.contains(ARRAY_OF_STRINGS).fill_null(False)
    message = pl.when(value.is_not_null() & (kind != "null") & ~strings).then(
        pl.format("{} must be {}, not {}", pl.lit(path), pl.lit(hint), value)
    )
    return message, as_array


def _integer_message(text: pl.Expr, kind: pl.Expr, path: str, field: Field) -> pl.Expr:
    cleaned = text.str.strip_chars()
    number = cleaned.str.to_integer(strict=False)
    bad = kind.is_in(["object", "array", "boolean"]) | (
        (cleaned != "") & ~cleaned.str.contains(INT_RE).fill_null(False)
    )
    low, high = field.minimum, field.maximum
    out_of_range = pl.lit(False)
    if low is not None:
        out_of_range = out_of_range | (number < low)
    if high is not None:
        out_of_range = out_of_range | (number > high)
    bounds = (
        f" from {low} to {high}"
        if low is not None and high is not None
        else f" of at least {low}"
        if low is not None
        else f" of at most {high}"
        if high is not None
        else ""
    )
    return (
        pl.when(bad | out_of_range.fill_null(False))
        .then(pl.format("{} must be a whole number{}, not {}", pl.lit(path), pl.lit(bounds), text))
        .otherwise(None)
    )


# ------------------------------------------------------------------------------ row rules


def _identity_rules(mapping: Mapping) -> list[_Rule]:
    paths = [p for p in mapping.action.identity if p in mapping.fields]
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


def _action_rules(
    mapping: Mapping, paths: dict[str, str], outputs: dict[str, pl.Expr]
) -> list[_Rule]:
    """The API's own rules across paths, as the action declares them, on the values as they
    would be sent (`outputs`): a list split into nothing is empty."""
    rules = []
    for rule in mapping.action.rules:
        if isinstance(rule, Distinct):
            first, second = rule.paths
            if first not in paths or second not in paths:
                continue
            one, other = pl.col(text_of(paths[first])), pl.col(text_of(paths[second]))
            message = pl.when(one == other).then(
                pl.format("{} is the same as {} ({})", pl.lit(second), pl.lit(first), one)
            )
            rules.append(_Rule(rule.rule, paths[second], message))
        elif isinstance(rule, AnyPresent):
            mapped = [p for p in rule.paths if p in paths]
            if not mapped:
                continue
            filled = [
                (outputs[p].is_not_null() & ~outputs[p].str.contains(_EMPTY)).fill_null(False)
                for p in mapped
            ]
            names = ", ".join(f"{p} ({paths[p]})" for p in mapped)
            message = pl.when(~pl.any_horizontal(filled)).then(
                pl.lit(f"nothing to do: {names} all empty")
            )
            rules.append(_Rule(rule.rule, paths[mapped[0]], message))
        elif isinstance(rule, ExprRule) and rule.path in paths:
            column = paths[rule.path]
            rules.append(_Rule(rule.rule, column, rule.message(pl.col(column))))
    return rules


def _requires_rules(
    mapping: Mapping, paths: dict[str, str], outputs: dict[str, pl.Expr]
) -> list[_Rule]:
    """`Requires`: where the object `when` has any member as sent, `path` must hold a value;
    a sub-key is looked up in its object, so it counts from `"*"`, a sub-key or a whole object."""
    rules = []
    for rule in mapping.action.rules:
        if not isinstance(rule, Requires) or rule.when not in outputs:
            continue
        when = outputs[rule.when]
        parent, _, key = rule.path.rpartition(".")
        if parent:
            value = outputs[parent].str.json_path_match(f"$.{key}") if parent in outputs else None
        else:
            value = json_as_text(outputs[rule.path]) if rule.path in outputs else None
        empty = pl.lit(True) if value is None else (value.str.strip_chars() == "").fill_null(True)
        present = when.is_not_null() & (when != "{}")
        base = mapping.fields.get(rule.when)
        column = paths.get(rule.path, base if base != ALL_COLUMNS else None)
        message = pl.when(present & empty).then(
            pl.lit(f"{rule.when} has properties but no {rule.path}")
        )
        rules.append(_Rule(rule.rule, column, message))
    return rules


# ------------------------------------------------------------------------------ objects


def _members(
    mapping: Mapping,
    object_path: str,
    columns: list[str],
    paths: dict[str, str],
    outputs: dict[str, pl.Expr],
) -> list[tuple[str, str, pl.Expr]]:
    """The members of an object as (key, source column, JSON text): every unmapped column when
    it takes `"*"`, then its sub-keys (converted, as `data.timezone` is). Null cells are left out
    by json_object: an empty CSV cell or an absent JSONL key is no value, not a null."""
    prefix = f"{object_path}."
    keyed = [(p[len(prefix) :], p) for p in paths if p.startswith(prefix)]
    members: list[tuple[str, str, pl.Expr]] = []
    if mapping.fields.get(object_path) == ALL_COLUMNS:
        # A key named in the mapping wins over a column of the same name: a JSON object with
        # one key twice means whatever the receiver's parser makes of it.
        taken = {c for c in mapping.fields.values() if c != ALL_COLUMNS}
        taken |= {key for key, _ in keyed} | set(paths.values())
        members += [(c, c, pl.col(c)) for c in columns if c not in taken]
    members += [(key, paths[path], outputs.pop(path)) for key, path in keyed]
    return members


def _primitive(
    mapping: Mapping,
    object_path: str,
    whole: pl.Expr | None,
    members: list[tuple[str, str, pl.Expr]],
) -> tuple[list[_Rule], pl.Expr | None, list[tuple[str, str, pl.Expr]]]:
    """An object whose members may only be primitives: a nested object or array is a reject
    (rule `nested`) unless the mapping's `nested = "json"` sends it as its JSON text; numbers
    and booleans travel as they were typed (the destination's docs say which; see docs/) and a JSON null
    is left out. Returns the rules and the object column
    and members as they are then sent."""
    as_json = mapping.options.get("nested") == "json"
    hint = (
        ': set nested = "json" in the mapping to send it as JSON text'
        if "nested" in options_of(mapping.destination)
        else ""
    )
    takes = f"{mapping.destination.title} takes only text, numbers and dates in {object_path}{hint}"
    rules: list[_Rule] = []
    sent: list[tuple[str, str, pl.Expr]] = []
    for key, column, value in members:
        nested = value.str.starts_with("{") | value.str.starts_with("[")
        if not as_json:
            what = (
                pl.when(value.str.starts_with("{"))
                .then(pl.lit("object"))
                .otherwise(pl.lit("array"))
            )
            message = pl.format(
                "column {} ({}) holds a JSON {}; {}",
                pl.lit(json.dumps(column, ensure_ascii=False)),
                pl.lit(f"{object_path}.{key}"),
                what,
                pl.lit(takes),
            )
            rules.append(_Rule("nested", column, pl.when(nested).then(message)))
        primitive = (
            pl.when(value == "null")
            .then(pl.lit(None, pl.String))
            .when(nested)
            .then(json_string(value) if as_json else value)
            .otherwise(value)
        )
        sent.append((key, column, primitive))
    column = mapping.fields.get(object_path)
    if whole is None or column is None:
        return rules, whole, sent
    # A whole object from one column: its members are checked on its JSON text.
    nested = json_outside_strings(whole).str.slice(1).str.contains(r"[\[{]")
    if not as_json:
        message = pl.lit(
            f"column {json.dumps(column, ensure_ascii=False)} ({object_path}) holds a nested "
            f"JSON object or array; {takes}"
        )
        rules.append(_Rule("nested", column, pl.when(nested.fill_null(False)).then(message)))
        return rules, whole, sent
    flattened = pl.when(nested).then(whole).map_batches(_members_as_text, return_dtype=pl.String)
    return rules, pl.coalesce(flattened, whole), sent


def _members_as_text(objects: pl.Series) -> pl.Series:
    """Each JSON object with its nested members as their JSON text; a
    Python pass over only the rows that nest (the others are null here), as no expression
    can cut nested JSON at its brackets."""

    def one(text: str | None) -> str | None:
        try:
            members = load_json(text) if text is not None else None
        except (ValueError, RecursionError):
            return text  # not JSON, so not an object: its own rule rejects it
        if not isinstance(members, dict):
            return text
        return dump_json(
            {
                key: dump_json(value) if isinstance(value, dict | list) else value
                for key, value in members.items()
            }
        )

    return pl.Series(objects.name, [one(t) for t in objects.to_list()], dtype=pl.String)


def _merge_object(whole: pl.Expr | None, members: list[tuple[str, pl.Expr]]) -> pl.Expr | None:
    """An object column and member columns together: the members spliced into the object."""
    if not members:
        return whole
    body = json_object(members)
    if whole is None:
        return body
    extra = body.str.slice(1).str.strip_suffix("}")
    return (
        pl.when(whole.is_null() | (whole == "{}"))
        .then(body)
        .when(body.is_null() | (extra == ""))
        .then(whole)
        .otherwise(whole.str.strip_suffix("}") + pl.lit(",") + extra + pl.lit("}"))
    )


def _route(mapping: Mapping, paths: dict[str, str]) -> list[pl.Expr]:
    """ROUTE, a stable hash of the row's user (its first identity value that has one, as the
    text sent), so that every row of one user goes through the same sender process and lands
    in the same shard on every machine (checks/shard.py defines the hash)."""
    users = [_present(pl.col(text_of(paths[p]))) for p in mapping.action.identity if p in paths]
    if not users:
        return []
    return [pl.coalesce(users).map_batches(user_hashes, return_dtype=pl.Int64).alias(ROUTE)]


def _duplicate_keys(mapping: Mapping, paths: dict[str, str]) -> list[pl.Expr]:
    """USER and EVENT, for the duplicate report, where the API drops repeated calls."""
    duplicates = mapping.action.duplicates
    if duplicates is None:
        return []
    users = [_present(pl.col(text_of(paths[p]))) for p in duplicates.user if p in paths]
    user = pl.coalesce(users) if users else pl.lit(None, pl.String)
    event = (
        pl.col(text_of(paths[duplicates.event]))
        if duplicates.event in paths
        else pl.lit(None, pl.String)
    )
    return [user.alias(USER), event.alias(EVENT)]
