"""The repairs a mapping declares for files as real systems export them, parsed and checked.

A row filter (`where`, an SQL condition such as `type = 'track'`), null markers (`\\N`, `n/a`)
for every column or per column, strftime patterns and epoch units per time column, normalisers
(trim, lower), fallbacks (`userId` else `anonymousId`), the columns whose value is dropped
from a row, not the row rejected, when it breaks its rule, and how the file is written: a CSV's
separator and the text's encoding (a spreadsheet's `;` and Windows-1252). Source columns may
name a member of a JSON object column (`properties.revenue`), or every member of one
(`properties.*`).
checks/repairs.py turns these into Polars expressions; here they are only read and checked, each
problem added to the mapping's list so that all are reported together.
"""

from __future__ import annotations

import codecs
from dataclasses import asdict, dataclass, field

import polars as pl

REPAIR_KEYS = frozenset(
    {
        "null_markers",
        "nulls",
        "time_formats",
        "epoch_units",
        "normalise",
        "coalesce",
        "drop_invalid",
        "normalise_identity",
        "exclude",
        "separator",
        "encoding",
    }
)
NORMALISERS = ("trim", "lower")
EPOCH_UNITS = ("s", "ms")
MEMBERS = ".*"  # `properties.*`: every member of the object column `properties`
# The encodings a text input may be declared in, by the name codecs gives them, with the names
# messages list: UTF-8 (the default, read as it is) and the single-byte ones spreadsheets and
# old systems export. inputs/ relies on each being one byte a character (see common.utf8_of).
ENCODINGS = {
    "utf-8": '"utf-8"',
    "cp1252": '"cp1252" (or "windows-1252")',
    "iso8859-1": '"latin-1" (or "iso-8859-1")',
}


@dataclass(frozen=True, slots=True)
class Repairs:
    """What a mapping repairs; empty by default, and then no part of its fingerprint."""

    where: str | None = None
    null_markers: tuple[str, ...] = ()
    nulls: dict[str, tuple[str, ...]] = field(default_factory=dict)
    time_formats: dict[str, tuple[str, ...]] = field(default_factory=dict)
    epoch_units: dict[str, str] = field(default_factory=dict)
    normalise: dict[str, tuple[str, ...]] = field(default_factory=dict)
    coalesce: dict[str, tuple[str, ...]] = field(default_factory=dict)
    drop_invalid: tuple[str, ...] = ()
    normalise_identity: bool = False
    # Members `properties.*` leaves out besides those mapped elsewhere (an export's envelope).
    exclude: tuple[str, ...] = ()
    # A CSV's separator when it is not a comma (a spreadsheet's ";"); "" = the format's own.
    separator: str = ""
    # The text's encoding as codecs names it ("cp1252", "iso8859-1"); "" = UTF-8, which alone
    # is read without transcoding and, being the default, is no part of the fingerprint.
    encoding: str = ""
    # The columns `where` reads, found once when the mapping is parsed (not part of its meaning).
    where_reads: tuple[str, ...] = ()

    def canonical(self) -> dict[str, object]:
        """The repairs as plain values, without the ones left empty (for the fingerprint)."""
        return {k: v for k, v in asdict(self).items() if v and k != "where_reads"}

    def read_columns(self) -> list[str]:
        """Source columns the repairs read beyond those mapped: fallbacks and the filter's."""
        fallbacks = [c for columns in self.coalesce.values() for c in columns]
        return list(dict.fromkeys([*fallbacks, *self.where_reads]))


def where_columns(where: str | None) -> list[str]:
    """The columns an SQL condition reads."""
    if where is None:
        return []
    return list(dict.fromkeys(pl.sql_expr(where).meta.root_names()))


def object_of(source: str) -> tuple[str, str] | None:
    """(object column, member) for a source naming a member (`properties.revenue`, or
    `properties.*` for every member), None for a plain column name."""
    column, dot, member = source.partition(".")
    if not dot or not column or not member:
        return None
    return column, member


def parse_repairs(raw: dict[str, object], problems: list[str]) -> Repairs:
    """Read `where` and the [repairs] table of a mapping, adding every problem to `problems`."""
    where = raw.get("where")
    reads: list[str] = []
    if where is not None:
        if not isinstance(where, str) or not where.strip():
            problems.append("where must be an SQL condition such as \"type = 'track'\"")
            where = None
        else:
            try:
                reads = where_columns(where)
            except Exception as exc:  # Polars' SQL parser raises several kinds
                problems.append(f"where = {where!r} is not an SQL condition Polars reads: {exc}")
                where = None
    table = raw.get("repairs", {})
    if not isinstance(table, dict):
        problems.append("[repairs] must be a table")
        return Repairs(where=where if isinstance(where, str) else None, where_reads=tuple(reads))
    for key in sorted(set(table) - REPAIR_KEYS):
        problems.append(f"unknown key repairs.{key} (known: {', '.join(sorted(REPAIR_KEYS))})")
    markers = _strings(table.get("null_markers", []), "repairs.null_markers", problems)
    nulls = _lists(table, "nulls", problems)
    time_formats = _lists(table, "time_formats", problems)
    for column, patterns in time_formats.items():
        for pattern in patterns:
            if "%" not in pattern:
                problems.append(
                    f"repairs.time_formats.{column!r}: {pattern!r} is not a strftime pattern "
                    'such as "%m/%d/%Y %H:%M"'
                )
    epoch_units = _table(table, "epoch_units", problems)
    for column, unit in epoch_units.items():
        if unit not in EPOCH_UNITS:
            problems.append(
                f"repairs.epoch_units.{column!r} = {unit!r} is not an epoch unit "
                f"(known: {', '.join(EPOCH_UNITS)})"
            )
    normalise = _lists(table, "normalise", problems)
    for column, steps in normalise.items():
        for step in steps:
            if step not in NORMALISERS:
                problems.append(
                    f"repairs.normalise.{column!r}: {step!r} is not a normaliser "
                    f"(known: {', '.join(NORMALISERS)})"
                )
    coalesce = _lists(table, "coalesce", problems)
    drop = _strings(table.get("drop_invalid", []), "repairs.drop_invalid", problems)
    exclude = _strings(table.get("exclude", []), "repairs.exclude", problems)
    for source in exclude:
        if object_of(source) is None or source.endswith(MEMBERS):
            problems.append(
                f"repairs.exclude: {source!r} does not name a member of an object column "
                'such as "properties.token"'
            )
    separator = table.get("separator", "")
    if not isinstance(separator, str) or len(separator) > 1 or separator in ('"', "\n", "\r"):
        problems.append(
            f'repairs.separator = {separator!r} must be one character such as ";" '
            "(not a quote or a line break)"
        )
        separator = ""
    encoding = _encoding(table.get("encoding", ""), problems)
    identity = table.get("normalise_identity", False)
    if not isinstance(identity, bool):
        problems.append("repairs.normalise_identity must be true or false")
        identity = False
    return Repairs(
        where=where if isinstance(where, str) else None,
        null_markers=markers,
        nulls=nulls,
        time_formats=time_formats,
        epoch_units=epoch_units,
        normalise=normalise,
        coalesce=coalesce,
        drop_invalid=drop,
        normalise_identity=identity,
        exclude=exclude,
        separator=separator,
        encoding=encoding,
        where_reads=tuple(reads),
    )


def check_repairs(
    repairs: Repairs,
    *,
    identity_columns: set[str],
    optional_columns: set[str],
    problems: list[str],
) -> None:
    """The checks that need the mapping's fields: what may be dropped or normalised."""
    for column in repairs.drop_invalid:
        if column in identity_columns:
            problems.append(
                f"repairs.drop_invalid: {column!r} identifies the user (or is its fallback); "
                "a row is never sent without it, so it cannot be dropped"
            )
        elif column not in optional_columns:
            problems.append(
                f"repairs.drop_invalid: {column!r} is not mapped to an optional field in [fields]"
            )
    # Trimming never makes another user (surrounding spaces are never part of an id or an
    # email); lower-casing may, so it is opt-in on an identity column.
    touched = sorted(
        c for c in set(repairs.normalise) & identity_columns if set(repairs.normalise[c]) - {"trim"}
    )
    if touched and not repairs.normalise_identity:
        problems.append(
            f"repairs.normalise: {', '.join(map(repr, touched))} identifies the user; "
            "normalising it may make another user (lower-casing an email id does): set "
            "repairs.normalise_identity = true to do it anyway"
        )


def _encoding(value: object, problems: list[str]) -> str:
    """A declared encoding by codecs' name ("" for UTF-8), or "" with a problem added."""
    known = "; ".join(ENCODINGS.values())
    if value == "":
        return ""
    try:
        name = codecs.lookup(value).name if isinstance(value, str) else None
    except (LookupError, ValueError):  # ValueError: a name holding NUL
        name = None
    if name not in ENCODINGS:
        problems.append(
            f"repairs.encoding = {value!r} is not an encoding read here (known: {known})"
        )
        return ""
    return "" if name == "utf-8" else name


def _strings(value: object, name: str, problems: list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{name} must be a list of non-empty strings")
        return ()
    return tuple(value)


def _table(table: dict[str, object], name: str, problems: list[str]) -> dict[str, str]:
    value = table.get(name, {})
    if not isinstance(value, dict):
        problems.append(f"[repairs.{name}] must be a table of column = value")
        return {}
    result: dict[str, str] = {}
    for column, item in value.items():
        if not isinstance(item, str) or not item:
            problems.append(f"repairs.{name}.{column!r} must be a non-empty string")
        else:
            result[column] = item
    return result


def _lists(table: dict[str, object], name: str, problems: list[str]) -> dict[str, tuple[str, ...]]:
    value = table.get(name, {})
    if not isinstance(value, dict):
        problems.append(f"[repairs.{name}] must be a table of column = [values]")
        return {}
    return {
        column: _strings(item, f"repairs.{name}.{column!r}", problems)
        for column, item in value.items()
    }
