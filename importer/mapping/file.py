"""Load a mapping file (TOML) and check it against its destination before any row is read.

A mapping says which destination and action a kind of input goes to, which source column fills
which payload path, which columns have a forced type, and the timezone of naive timestamps.
Every problem in the file is collected and reported together, each naming the file and the key.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from importer.destinations import DESTINATIONS, Action, Destination, get_destination
from importer.destinations.base import options_of
from importer.errors import ImporterError, MappingError
from importer.mapping.presets import resolve_mapping
from importer.mapping.repairs import MEMBERS, Repairs, check_repairs, object_of, parse_repairs

ALL_COLUMNS = "*"
COLUMN_TYPES = frozenset({"string", "integer", "number", "boolean", "timestamp", "json"})
TOP_LEVEL_KEYS = frozenset(
    {"destination", "action", "timezone", "fields", "types", "split", "dedup", "where", "repairs"}
)
DEDUP_KEYS = frozenset({"data_key", "time_key", "accept_drops"})


@dataclass(frozen=True, slots=True)
class Mapping:
    """A checked mapping: where rows go and how columns become payload fields.

    `fields` maps payload paths to source columns (`"*"` for every column not mapped elsewhere);
    `types` forces a source column's type; `split` names the columns that hold a delimited
    list (column -> delimiter) rather than a JSON array; `fingerprint` identifies the mapping's
    meaning (not its formatting) so a checkpoint can refuse to resume under a different one.
    `dedup_data_key` and `dedup_time_key` add a row id or the original time to the data object,
    so the API's duplicate suppression keeps every event; `accept_drops` says that events the
    API would still drop as duplicates are expected (the run then ends 0, not 3).
    """

    path: Path
    destination: Destination
    action: Action
    fields: dict[str, str]
    types: dict[str, str]
    timezone: str
    dedup_data_key: str | None
    fingerprint: str
    split: dict[str, str] = field(default_factory=dict)
    dedup_time_key: str | None = None
    accept_drops: bool = False
    # The destination's own top-level keys (a region, say), every one
    # the destination declares, with its default where the file leaves it out.
    options: dict[str, object] = field(default_factory=dict)
    # Filter and repairs for files as systems export them (mapping/repairs.py).
    repairs: Repairs = field(default_factory=Repairs)

    @property
    def source_columns(self) -> list[str]:
        """The named source columns the mapping reads (without `"*"`), in mapping order; a
        member of an object column (`properties.time`) is named as the mapping names it."""
        named = [column for column in self.fields.values() if column != ALL_COLUMNS]
        return list(dict.fromkeys([*named, *self.types, *self.repairs.read_columns()]))

    @property
    def star_path(self) -> str | None:
        """The payload path that takes every unmapped column, if any."""
        return next((p for p, column in self.fields.items() if column == ALL_COLUMNS), None)

    def check_columns(self, columns: Iterable[str], *, source: str) -> None:
        """Raise when a column the mapping names is not among `columns` of the input `source`."""
        present = set(columns)
        missing = [
            column
            for column in self.source_columns
            if column not in present and (object_of(column) or ("",))[0] not in present
        ]
        if missing:
            where = ", ".join(f"{_key_of(self, column)} = {column!r}" for column in missing)
            raise MappingError(
                f"{source}: column(s) {', '.join(map(repr, missing))} named in mapping "
                f"{self.path} ({where}) are not in the file",
                hint=f"the file has: {', '.join(sorted(present)) or '(no columns)'}",
            )


def _key_of(mapping: Mapping, column: str) -> str:
    for payload_path, source in mapping.fields.items():
        if source == column:
            return f"fields.{payload_path!r}"
    return f"types.{column}"


def load_mapping(path: Path | str) -> Mapping:
    """Read and check the mapping at `path` (or the preset a bare name names); raise
    MappingError listing every problem found."""
    path = resolve_mapping(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # Notepad writes a BOM
    except FileNotFoundError:
        raise MappingError(f"mapping file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"mapping file {path} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"mapping file {path} is not valid TOML: {exc}") from exc
    return parse_mapping(raw, path=path)


def parse_mapping(raw: dict[str, object], *, path: Path) -> Mapping:
    """Check an already parsed mapping; `path` is only used in messages."""
    problems: list[str] = []
    destination: Destination | None = None
    action: Action | None = None
    destination_name = raw.get("destination")
    if not isinstance(destination_name, str):
        known = ", ".join(sorted(DESTINATIONS))
        problems.append(f"'destination' is required and must be a string, one of: {known}")
    else:
        try:
            destination = get_destination(destination_name)
        except ImporterError as exc:
            problems.append(str(exc))
    declared = options_of(destination) if destination is not None else {}
    known_keys = TOP_LEVEL_KEYS | set(declared)
    for key in sorted(set(raw) - known_keys):
        problems.append(f"unknown key {key!r} (known: {', '.join(sorted(known_keys))})")
    options: dict[str, object] = {}
    for key, option in declared.items():
        value = raw.get(key, option.default)
        problem = option.problem(key, value)
        if problem is not None:
            problems.append(problem)
        options[key] = value
    action_name = raw.get("action")
    if not isinstance(action_name, str):
        problems.append("'action' is required and must be a string, e.g. \"track\"")
    elif destination is not None:
        action = destination.actions.get(action_name)
        if action is None:
            known = ", ".join(sorted(destination.actions))
            problems.append(
                f"unknown action {action_name!r} for destination {destination.name!r} "
                f"(supported: {known})"
            )

    fields = _string_table(raw, "fields", problems)
    types = _string_table(raw, "types", problems)
    if not fields and "fields" in raw:
        problems.append("[fields] is empty: map at least the user's identity")
    elif "fields" not in raw:
        problems.append("[fields] is required")
    if action is not None:
        problems.extend(_check_fields(action, fields))
    for column, type_name in types.items():
        if type_name not in COLUMN_TYPES:
            problems.append(
                f"types.{column} = {type_name!r} is not a type "
                f"(known: {', '.join(sorted(COLUMN_TYPES))})"
            )

    timezone = raw.get("timezone", "UTC")
    if not isinstance(timezone, str) or not _is_timezone(timezone):
        problems.append(f'timezone = {timezone!r} is not an IANA time zone such as "Europe/Berlin"')

    split = _string_table(raw, "split", problems, what="a delimiter")
    for column in split:
        if column not in fields.values():
            problems.append(f"split.{column}: the column is not mapped in [fields]")
        elif action is not None and not any(
            source == column and action.field_of(path).kind == "array"
            for path, source in fields.items()
        ):
            problems.append(f"split.{column}: only a column mapped to a list (array) is split")

    data_key, time_key, accept_drops = _dedup_options(raw, action, problems)
    repairs = parse_repairs(raw, problems)
    if action is not None:
        identity = {fields[p] for p in action.identity if p in fields}
        identity |= {
            fields[s] for sources in action.fallback.values() for s in sources if s in fields
        }
        identity |= {c for column in identity for c in repairs.coalesce.get(column, ())}
        # Any column but one a required field takes: a column "*" puts in an object is optional.
        required = {
            c for p, c in fields.items() if action.accepts(p) and action.field_of(p).required
        }
        optional = {c for c in repairs.drop_invalid if c not in identity and c not in required}
        check_repairs(
            repairs, identity_columns=identity, optional_columns=optional, problems=problems
        )

    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise MappingError(f"mapping file {path} has {len(problems)} problem(s):\n{listing}")
    if destination is None or action is None or not isinstance(timezone, str):
        raise AssertionError("a mapping without problems has a destination, action and timezone")
    canonical = json.dumps(
        {
            "destination": destination.name,
            "action": action.name,
            "fields": fields,
            "types": types,
            "timezone": timezone,
            "dedup_data_key": data_key,
            "dedup_time_key": time_key,
            "split": split,
            # Only when there are any: state directories of mappings without options stay valid.
            **({"options": options} if options else {}),
            **({"repairs": repairs.canonical()} if repairs.canonical() else {}),
        },
        sort_keys=True,
    )
    return Mapping(
        path=path,
        destination=destination,
        action=action,
        fields=fields,
        types=types,
        timezone=timezone,
        dedup_data_key=data_key,
        fingerprint=hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest(),
        split=split,
        dedup_time_key=time_key,
        accept_drops=accept_drops,
        options=options,
        repairs=repairs,
    )


def _dedup_options(
    raw: dict[str, object], action: Action | None, problems: list[str]
) -> tuple[str | None, str | None, bool]:
    """[dedup]: data_key, time_key (keys added to the data object) and accept_drops."""
    dedup = raw.get("dedup", {})
    if not isinstance(dedup, dict):
        problems.append("[dedup] must be a table")
        return None, None, False
    for key in sorted(set(dedup) - DEDUP_KEYS):
        problems.append(f"unknown key dedup.{key} (known: {', '.join(sorted(DEDUP_KEYS))})")
    keys: list[str | None] = []
    for name in ("data_key", "time_key"):
        value = dedup.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            problems.append(f"dedup.{name} must be a non-empty string")
            value = None
        keys.append(value)
    accept = dedup.get("accept_drops", False)
    if not isinstance(accept, bool):
        problems.append("dedup.accept_drops must be true or false")
        accept = False
    if action is not None and action.duplicates is None and (any(keys) or accept):
        problems.append(
            f"[dedup] only applies to calls the API drops as duplicates; {action.name} "
            "calls are never dropped"
        )
    if keys[0] is not None and keys[0] == keys[1]:
        problems.append("dedup.data_key and dedup.time_key must be different keys")
    return keys[0], keys[1], accept


def _string_table(
    raw: dict[str, object], name: str, problems: list[str], *, what: str = "a column name"
) -> dict[str, str]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        problems.append(f"[{name}] must be a table")
        return {}
    result: dict[str, str] = {}
    for key, value in _dotted(table).items():
        if not isinstance(value, str) or not value:
            problems.append(f"{name}.{key!r} must be {what} (a non-empty string)")
        else:
            result[key] = value
    return result


def _dotted(table: dict[str, object], prefix: str = "") -> dict[str, object]:
    """Nested tables as dotted keys: TOML reads an unquoted `user.id = ...` as a table."""
    flat: dict[str, object] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_fields(action: Action, fields: dict[str, str]) -> list[str]:
    problems = []
    for payload_path, column in fields.items():
        if not action.accepts(payload_path):
            problems.append(
                f"fields.{payload_path!r}: the {action.name} payload has no such path "
                f"(it has: {', '.join(action.paths_shown())})"
            )
        elif (
            column == ALL_COLUMNS or column.endswith(MEMBERS)
        ) and payload_path not in action.object_fields:
            problems.append(
                f"fields.{payload_path!r} = {json.dumps(column)} is only allowed for an object such as "
                f"{' or '.join(sorted(action.object_fields)) or '(none in this action)'}"
            )
    stars = [p for p, column in fields.items() if column == ALL_COLUMNS]
    if len(stars) > 1:
        problems.append(f'only one payload path may take "*", not {", ".join(stars)}')
    if action.identity and not any(p in fields for p in action.identity):
        problems.append(f"map at least one of {' or '.join(action.identity)} to identify the user")
    for required in action.required:
        if required not in fields:
            problems.append(f"fields.{required!r} is required for {action.name}")
    return problems


def _is_timezone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True
