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
from dataclasses import dataclass
from pathlib import Path

from importer.destinations import Action, Destination, get_destination
from importer.errors import ImporterError, MappingError

ALL_COLUMNS = "*"
COLUMN_TYPES = frozenset({"string", "integer", "number", "boolean", "timestamp", "json"})
TOP_LEVEL_KEYS = frozenset({"destination", "action", "timezone", "fields", "types", "dedup"})
DEDUP_KEYS = frozenset({"data_key"})

# The payload paths that identify a user, per action: at least one must be mapped.
IDENTITY_PATHS = {
    "track": ("identity.id", "identity.email"),
    "identify": ("id", "email"),
}
# Without extras.created_at Vero stamps every event with the time it arrives: history is lost.
REQUIRED_PATHS = {"track": ("event_name", "extras.created_at"), "identify": ()}


@dataclass(frozen=True, slots=True)
class Mapping:
    """A checked mapping: where rows go and how columns become payload fields.

    `fields` maps payload paths to source columns (`"*"` for every column not mapped elsewhere);
    `types` forces a source column's type; `fingerprint` identifies the mapping's meaning (not
    its formatting) so a checkpoint can refuse to resume under a different one.
    """

    path: Path
    destination: Destination
    action: Action
    fields: dict[str, str]
    types: dict[str, str]
    timezone: str
    dedup_data_key: str | None
    fingerprint: str

    @property
    def source_columns(self) -> list[str]:
        """The named source columns the mapping reads (without `"*"`), in mapping order."""
        named = [column for column in self.fields.values() if column != ALL_COLUMNS]
        return list(dict.fromkeys([*named, *self.types]))

    @property
    def star_path(self) -> str | None:
        """The payload path that takes every unmapped column, if any."""
        return next((p for p, column in self.fields.items() if column == ALL_COLUMNS), None)

    def check_columns(self, columns: Iterable[str], *, source: str) -> None:
        """Raise when a column the mapping names is not among `columns` of the input `source`."""
        present = set(columns)
        missing = [column for column in self.source_columns if column not in present]
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


def load_mapping(path: Path) -> Mapping:
    """Read and check the mapping at `path`; raise MappingError listing every problem found."""
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
    for key in sorted(set(raw) - TOP_LEVEL_KEYS):
        problems.append(f"unknown key {key!r} (known: {', '.join(sorted(TOP_LEVEL_KEYS))})")

    destination: Destination | None = None
    action: Action | None = None
    destination_name = raw.get("destination")
    if not isinstance(destination_name, str):
        problems.append("'destination' is required and must be a string, e.g. \"vero\"")
    else:
        try:
            destination = get_destination(destination_name)
        except ImporterError as exc:
            problems.append(str(exc))
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

    dedup = raw.get("dedup", {})
    data_key: str | None = None
    if not isinstance(dedup, dict):
        problems.append("[dedup] must be a table")
    else:
        for key in sorted(set(dedup) - DEDUP_KEYS):
            problems.append(f"unknown key dedup.{key} (known: {', '.join(sorted(DEDUP_KEYS))})")
        value = dedup.get("data_key")
        if value is not None and (not isinstance(value, str) or not value):
            problems.append("dedup.data_key must be a non-empty string")
        elif isinstance(value, str):
            data_key = value
            if action is not None and "event_name" not in action.fields:
                problems.append(
                    f"dedup.data_key only applies to track: Vero never drops {action.name} "
                    "calls as duplicates"
                )

    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise MappingError(f"mapping file {path} has {len(problems)} problem(s):\n{listing}")
    assert destination is not None
    assert action is not None
    assert isinstance(timezone, str)
    canonical = json.dumps(
        {
            "destination": destination.name,
            "action": action.name,
            "fields": fields,
            "types": types,
            "timezone": timezone,
            "dedup_data_key": data_key,
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
    )


def _string_table(raw: dict[str, object], name: str, problems: list[str]) -> dict[str, str]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        problems.append(f"[{name}] must be a table")
        return {}
    result: dict[str, str] = {}
    for key, value in _dotted(table).items():
        if not isinstance(value, str) or not value:
            problems.append(f"{name}.{key!r} must be a column name (a non-empty string)")
        else:
            result[key] = value
    return result


def _dotted(table: dict[str, object], prefix: str = "") -> dict[str, object]:
    """Nested tables as dotted keys: TOML reads an unquoted `identity.id = ...` as a table."""
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
            allowed = sorted(action.fields) + sorted(
                f"{p}, {p}.<key>" for p in action.object_fields
            )
            problems.append(
                f"fields.{payload_path!r}: the {action.name} payload has no such path "
                f"(it has: {', '.join(allowed)})"
            )
        elif column == ALL_COLUMNS and payload_path not in action.object_fields:
            problems.append(
                f'fields.{payload_path!r} = "*" is only allowed for an object such as data'
            )
    stars = [p for p, column in fields.items() if column == ALL_COLUMNS]
    if len(stars) > 1:
        problems.append(f'only one payload path may take "*", not {", ".join(stars)}')
    identity = IDENTITY_PATHS.get(action.name, ())
    if identity and not any(p in fields for p in identity):
        problems.append(f"map at least one of {' or '.join(identity)} to identify the user")
    for required in REQUIRED_PATHS.get(action.name, ()):
        if required not in fields:
            problems.append(f"fields.{required!r} is required for {action.name}")
    return problems


def _is_timezone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True
