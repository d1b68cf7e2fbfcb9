"""A mapping's repairs (mapping/repairs.py) applied to a batch as read, before its checks.

Every repair is a Polars expression over the batch's JSON text cells (no pass over rows in
Python), and every one is counted, so that nothing changes silently: cells a null marker emptied,
members taken out of an object column, rows the filter left out, fallbacks used, values trimmed or
lower-cased, times read by a declared pattern. validate.py calls `repair_frame` in one marked
place; the frames it returns line up row for row (`original` is the batch as read, filtered).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

import polars as pl

from importer.checks.times import FileState, kind_of, text_of
from importer.columns import COLUMN, ERROR, LINE, RULE
from importer.jsontext import json_as_text, json_kind, json_string
from importer.mapping.file import ALL_COLUMNS, Mapping
from importer.mapping.repairs import MEMBERS, object_of

# A JSON scalar as the reader writes it (compact): a string literal, or a number or literal.
# The values a row's field policy emptied (validation's working column, summed per batch).
DROPPED = "__dropped"
_SCALAR = r'"(?:[^"\\]|\\.)*"|[^,{}\[\]"]+'
# A repaired time, naive ISO text that times.py reads in the mapping's timezone, or UTC with Z.
_ISO_NAIVE = "%Y-%m-%dT%H:%M:%S%.3f"


@dataclass(frozen=True, slots=True)
class Repaired:
    """A batch after its repairs: `frame` to check, `original` (as read) for rejects, the rows
    the filter left out, and how many cells each repair changed."""

    frame: pl.DataFrame
    original: pl.DataFrame
    filtered: int
    counts: Counter[str]


def repair_frame(frame: pl.DataFrame, mapping: Mapping, state: FileState) -> Repaired:
    """Apply the mapping's repairs to `frame` (JSON text cells); the filter last but one, so a
    condition sees the values as read with their nulls and members, then the normalisers."""
    repairs = mapping.repairs
    counts: Counter[str] = Counter()
    for column, unit in repairs.epoch_units.items():
        state.epoch_units[column] = unit  # declared, not guessed from the first value
        state.declared.add(column)
    original = frame
    columns = [c for c in frame.columns if c != LINE]

    markers = {c: repairs.null_markers for c in columns}
    for column, extra in repairs.nulls.items():
        markers[column] = (*markers.get(column, ()), *extra)
    replaced = {
        c: pl.col(c).is_in([json.dumps(m, ensure_ascii=False) for m in found])
        for c, found in markers.items()
        if found and c in frame.columns
    }
    if replaced:
        hits = frame.select(pl.sum_horizontal([e.fill_null(False) for e in replaced.values()]))
        counts["null_marker"] += int(hits.to_series().sum())
        frame = frame.with_columns(
            pl.when(e).then(None).otherwise(pl.col(c)).alias(c) for c, e in replaced.items()
        )

    frame = frame.with_columns(_members(mapping, set(frame.columns)))

    if repairs.where is not None:
        condition = pl.sql_expr(repairs.where)
        roots = condition.meta.root_names()
        plain = frame.select(
            [json_as_text(pl.col(c)).alias(c) if c in frame.columns else _absent(c) for c in roots]
        )
        keep = plain.select(condition.fill_null(False)).to_series()
        filtered = int((~keep).sum())
        if filtered:
            frame, original = frame.filter(keep), original.filter(keep)
    else:
        filtered = 0

    for column, fallbacks in repairs.coalesce.items():
        chain = [_present(pl.col(c)) for c in (column, *fallbacks) if c in frame.columns]
        if column not in frame.columns or len(chain) < 2:
            continue
        used = frame.select((chain[0].is_null() & pl.coalesce(chain[1:]).is_not_null()).sum())
        counts["coalesce"] += int(used.item())
        frame = frame.with_columns(pl.coalesce(chain).alias(column))

    for column, steps in repairs.normalise.items():
        if column not in frame.columns:
            continue
        text = json_as_text(pl.col(column))
        new = text
        for step in steps:
            new = new.str.strip_chars() if step == "trim" else new.str.to_lowercase()
        is_string = json_kind(pl.col(column)) == "string"
        changed = is_string & (new != text)
        counts[_NORMALISED] += int(frame.select(changed.fill_null(False).sum()).item())
        frame = frame.with_columns(
            pl.when(changed).then(json_string(new)).otherwise(pl.col(column)).alias(column)
        )

    for column, patterns in repairs.time_formats.items():
        if column not in frame.columns:
            continue
        text = json_as_text(pl.col(column)).str.strip_chars()
        parsed = pl.coalesce([_strptime(text, p) for p in patterns])
        counts["time_format"] += int(frame.select(parsed.is_not_null().sum()).item())
        frame = frame.with_columns(
            pl.when(parsed.is_not_null()).then(parsed).otherwise(pl.col(column)).alias(column)
        )
    return Repaired(frame=frame, original=original, filtered=filtered, counts=+counts)


_NORMALISED = "normalise"


def _members(mapping: Mapping, present: set[str]) -> list[pl.Expr]:
    """A column for each source that names a member of an object column (`properties.sku`),
    with the member's JSON text, and for `properties.*` the object without the members mapped
    elsewhere; a source that is itself a column of the file is left as it is."""
    wanted = [c for c in mapping.fields.values() if c != ALL_COLUMNS and c not in present]
    wanted += [c for c in mapping.repairs.read_columns() if c not in present]
    taken: dict[str, list[str]] = {}
    members: list[tuple[str, str, str]] = []
    for source in dict.fromkeys(wanted):
        found = object_of(source)
        if found is None or found[0] not in present:
            continue
        members.append((source, *found))
        if not source.endswith(MEMBERS):
            taken.setdefault(found[0], []).append(found[1])
    for source in mapping.repairs.exclude:
        column, member = source.split(".", 1)
        taken.setdefault(column, []).append(member)
    expressions = []
    for source, column, member in members:
        if source.endswith(MEMBERS):
            expressions.append(_without(pl.col(column), taken.get(column, [])).alias(source))
        else:
            expressions.append(_member(pl.col(column), member).alias(source))
    return expressions


def _member(value: pl.Expr, key: str) -> pl.Expr:
    """The JSON text of member `key` of an object cell; null where it is absent or not an object.

    json_path_match gives a string member without its quotes, as it gives a number; which one
    it was is read off the text: the reader writes JSON compactly, so a string member follows
    `"key":"`. Only where the key occurs twice (also in a nested object) is a value that reads
    as a number, true, false or null taken as that."""
    found = value.str.json_path_match(f"$[{json.dumps(key)}]")
    opener = json.dumps(key, ensure_ascii=False) + ":"
    once = value.str.count_matches(opener, literal=True) == 1
    quoted = value.str.contains(opener + '"', literal=True)
    looks_plain = found.str.contains(r"^(?:-?\d[\d.eE+-]*|true|false|null|\{.*|\[.*)$")
    is_string = pl.when(once).then(quoted).otherwise(~looks_plain)
    return pl.when(is_string).then(json_string(found)).otherwise(found)


def _without(value: pl.Expr, keys: list[str]) -> pl.Expr:
    """The object cell without top-level members `keys` (those mapped elsewhere). A key is cut
    only where it occurs once in the text and the object has it: then that is the member itself,
    not one of a nested object; elsewhere the object goes as it is."""
    for key in keys:
        opener = re.escape(json.dumps(key, ensure_ascii=False)) + ":"
        member = f"(?:{opener})(?:{_SCALAR})"
        once = value.str.count_matches(opener) == 1
        has = value.str.json_path_match(f"$[{json.dumps(key)}]").is_not_null()
        cut = value.str.replace(f"{member},", "").str.replace(f",?{member}", "")
        value = pl.when(once & has).then(cut).otherwise(value)
    return value


def _strptime(text: pl.Expr, pattern: str) -> pl.Expr:
    """The text read by `pattern`, as JSON text times.py reads: UTC with `Z` when the pattern
    has an offset, else naive (read later in the mapping's timezone); null where it does not fit."""
    aware = "%z" in pattern or "%Z" in pattern
    parsed = text.str.to_datetime(pattern, strict=False, time_unit="ms")
    if aware:
        parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return json_string(parsed.dt.strftime(_ISO_NAIVE + "Z"))
    return json_string(parsed.dt.strftime(_ISO_NAIVE))


def drop_invalid(
    work: pl.LazyFrame, rules: list[tuple[str | None, pl.Expr]], droppable: set[str]
) -> tuple[list[bool], pl.LazyFrame]:
    """The field policy (repairs.drop_invalid), given validation's rules as (column, message):
    which rules still reject a row, and the query with each droppable column emptied where its
    rules fail (so the row is sent without it) and, in DROPPED, how many values that empties
    in the row when nothing else rejects it."""
    keep = [column not in droppable for column, _ in rules]
    failing: dict[str, list[pl.Expr]] = {}
    for column, message in rules:
        if column in droppable:
            failing.setdefault(column, []).append(message.is_not_null())
    bad = {column: pl.any_horizontal(found) for column, found in failing.items()}
    kept = [message.is_not_null() for (_, message), k in zip(rules, keep, strict=True) if k]
    rejected = pl.any_horizontal(kept) if kept else pl.lit(False)
    dropped = pl.sum_horizontal([(b & ~rejected).cast(pl.Int64) for b in bad.values()])
    names = set(work.collect_schema().names())
    emptied = [
        pl.when(b).then(None).otherwise(pl.col(name)).alias(name)
        for column, b in bad.items()
        for name in (column, text_of(column), kind_of(column))
        if name in names
    ]
    return keep, work.with_columns(dropped.alias(DROPPED), *emptied)


def with_reasons(
    bad: pl.DataFrame, patterns: list[tuple[str, str, tuple[tuple[str, str], ...]]]
) -> pl.DataFrame:
    """Rejected rows with the reason a value breaks its field's pattern added to the message
    ("... is not a valid email address: non-ASCII local part"); `patterns` are (rule, column,
    (regular expression, reason) pairs). On the rejected rows alone: nothing on rows that pass."""
    if bad.height == 0:
        return bad
    for rule, column, reasons in patterns:
        hit = (pl.col(RULE) == rule) & (pl.col(COLUMN) == column)
        text = pl.col(text_of(column))
        reason = pl.coalesce(
            [pl.when(text.str.contains(rx)).then(pl.lit(f": {why}")) for rx, why in reasons]
        )
        bad = bad.with_columns(
            pl.when(hit)
            .then(pl.concat_str(pl.col(ERROR), reason, ignore_nulls=True))
            .otherwise(pl.col(ERROR))
            .alias(ERROR)
        )
    return bad


def _present(value: pl.Expr) -> pl.Expr:
    """A cell with a value: not null, not JSON null, not text of only white space."""
    text = json_as_text(value)
    return pl.when(value.is_not_null() & (value != "null") & (text.str.strip_chars() != "")).then(
        value
    )


def _absent(column: str) -> pl.Expr:
    return pl.lit(None, pl.String).alias(column)
