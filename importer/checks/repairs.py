"""A mapping's repairs (mapping/repairs.py) as the first stage of validation's lazy query.

Every repair is a Polars expression over the batch's JSON text cells, added to the query that
validate.py collects once per batch (no pass of its own, no pass over rows in Python), in this
order: null markers, object members, the row filter, fallbacks, normalisers, time patterns. Each
repaired cell replaces its column, so every later stage sees it; the batch as read stays apart,
for the rejects file. The filter removes no row: FILTERED marks those it leaves out, which the
verdict counts as neither sent nor rejected (as it does the --since/--until window's), so the
query's rows line up with the batch's. Every repair is counted, so that nothing changes
silently: each adds a column of how many cells it changed in the row, summed once the query is
collected (Repaired.counted). Null markers are counted on every row read, the repairs after the
filter on the rows it keeps (rejected ones too), `dropped` (the field policy) on the rows sent.
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
_SCALAR = r'"(?:[^"\\]|\\.)*"|[^,{}\[\]"]+'
# A repaired time, naive ISO text that times.py reads in the mapping's timezone, or UTC with Z.
_ISO_NAIVE = "%Y-%m-%dT%H:%M:%S%.3f"
# Validation's working columns from the repairs: the values a row's field policy emptied, the
# rows the filter leaves out, and the prefix of each repair's count column and of the cells the
# filter's condition reads.
DROPPED = "__dropped"
FILTERED = "__filtered"
_REPAIR = "__repair:"


@dataclass(frozen=True, slots=True)
class Repaired:
    """A batch's query with its repairs: the repaired cells under their `columns` (the batch's
    and the object members read), FILTERED, and the count columns, named in `counts` with the
    repair each counts."""

    work: pl.LazyFrame
    columns: frozenset[str]
    counts: dict[str, str]

    def counted(self, result: pl.DataFrame, *, sent: pl.Series) -> dict[str, int]:
        """The cells each repair changed in the collected query (its count columns summed),
        with `dropped` on the rows `sent` alone; the repairs that changed nothing left out."""
        found: Counter[str] = Counter()
        for name, repair in self.counts.items():
            found[repair] += int(result[name].sum())
        found["dropped"] += int(result[DROPPED].filter(sent).sum())
        return dict(+found)


def repair_frame(work: pl.LazyFrame, mapping: Mapping, state: FileState) -> Repaired:
    """Add the mapping's repairs to `work` (JSON text cells); the filter after the null markers
    and members, so a condition sees the values as read with those, before the normalisers."""
    repairs = mapping.repairs
    for column, unit in repairs.epoch_units.items():
        state.epoch_units[column] = unit  # declared, not guessed from the first value
        state.declared.add(column)
    read_columns = work.collect_schema().names()
    names = set(read_columns)
    counts: dict[str, str] = {}

    def count_of(repair: str, changed: list[pl.Expr], *, kept: bool = True) -> list[pl.Expr]:
        # The filter's verdict is not there yet for the null markers (`kept=False`).
        name = f"{_REPAIR}{repair}:{len(counts)}"
        counts[name] = repair
        cells = pl.sum_horizontal([c.fill_null(False).cast(pl.UInt32) for c in changed])
        return [(cells * (~pl.col(FILTERED)).cast(pl.UInt32) if kept else cells).alias(name)]

    markers = {c: repairs.null_markers for c in read_columns if c != LINE}
    for column, extra in repairs.nulls.items():
        markers[column] = (*markers.get(column, ()), *extra)
    replaced = {
        c: pl.col(c).is_in([json.dumps(m, ensure_ascii=False) for m in found])
        for c, found in markers.items()
        if found and c in names
    }
    if replaced:
        work = work.with_columns(
            *count_of("null_marker", list(replaced.values()), kept=False),
            *(pl.when(e).then(None).otherwise(pl.col(c)).alias(c) for c, e in replaced.items()),
        )

    members = _members(mapping, names)
    work = work.with_columns(members)
    names |= {e.meta.output_name() for e in members}
    work = _filter(work, repairs.where, names)

    for column, fallbacks in repairs.coalesce.items():
        chain = [_present(pl.col(c)) for c in (column, *fallbacks) if c in names]
        if column not in names or len(chain) < 2:
            continue
        used = chain[0].is_null() & pl.coalesce(chain[1:]).is_not_null()
        # One column at a time: a later fallback chain may read a column coalesced before it.
        work = work.with_columns(*count_of("coalesce", [used]), pl.coalesce(chain).alias(column))

    normalised: dict[str, pl.Expr] = {}
    changes: list[pl.Expr] = []
    for column, steps in repairs.normalise.items():
        if column not in names:
            continue
        text = json_as_text(pl.col(column))
        new = text
        for step in steps:
            new = new.str.strip_chars() if step == "trim" else new.str.to_lowercase()
        changed = (json_kind(pl.col(column)) == "string") & (new != text)
        changes.append(changed)
        normalised[column] = pl.when(changed).then(json_string(new)).otherwise(pl.col(column))
    if normalised:
        work = work.with_columns(
            *count_of("normalise", changes), *(e.alias(c) for c, e in normalised.items())
        )

    read: dict[str, pl.Expr] = {}
    for column, patterns in repairs.time_formats.items():
        if column not in names:
            continue
        text = json_as_text(pl.col(column)).str.strip_chars()
        read[column] = pl.coalesce([_strptime(text, p) for p in patterns])
    if read:
        work = work.with_columns(
            *count_of("time_format", [p.is_not_null() for p in read.values()]),
            *(pl.coalesce(p, pl.col(c)).alias(c) for c, p in read.items()),
        )
    return Repaired(work=work, columns=frozenset(names), counts=counts)


def _filter(work: pl.LazyFrame, where: str | None, names: set[str]) -> pl.LazyFrame:
    """FILTERED: true where the mapping's `where` does not keep the row. The condition reads
    its columns as plain text (an absent one as null): each is swapped for its text around it."""
    if where is None:
        return work.with_columns(pl.lit(False).alias(FILTERED))
    condition = pl.sql_expr(where)
    roots = list(dict.fromkeys(condition.meta.root_names()))
    copies = {c: f"{_REPAIR}where:{c}" for c in roots if c in names}
    absent = [c for c in roots if c not in names]
    work = work.with_columns(pl.col(c).alias(copy) for c, copy in copies.items())
    work = work.with_columns(
        *(json_as_text(pl.col(c)).alias(c) for c in copies),
        *(pl.lit(None, pl.String).alias(c) for c in absent),
    )
    work = work.with_columns((~condition.fill_null(False)).alias(FILTERED))
    work = work.with_columns(pl.col(copy).alias(c) for c, copy in copies.items())
    return work.drop(*copies.values(), *absent)


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
