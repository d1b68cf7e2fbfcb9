"""Guess a mapping from an input file, for `importer init`: which columns hold the user's id,
the email, the event's name and its time, from their names and their first rows.

The guess is written as a commented TOML mapping that loads as written; every choice says why it
was made, so a person can check it before a run. The destination's actions say which payload
paths exist: nothing here names an API.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import polars as pl

from importer.checks.times import EPOCH_RE, ISO_RE
from importer.destinations import Action, Destination
from importer.errors import ImporterError, InputError, MappingError
from importer.inputs.bytescan import NotUtf8Error
from importer.inputs.common import FORMATS, InputFile
from importer.inputs.locate import open_bytes, text_ending
from importer.inputs.reader import iter_batches, open_input
from importer.jsontext import json_as_text
from importer.mapping.file import ALL_COLUMNS
from importer.pipeline.exports import (
    dump_repairs,
    dump_values,
    export_mapping,
    recognise,
    written_as,
)

SAMPLE_ROWS = 1_000
# A column is taken for what its values look like when this share of its values does.
CONTENT_SHARE = 0.8
ID_NAME = re.compile(
    r"^(?:(?:user|customer|member|account|contact|person|client|external|distinct|visitor)"
    r"[_ .-]?)?id$|^uid$",
    re.IGNORECASE,
)
EMAIL_NAME = re.compile(r"e-?mail", re.IGNORECASE)
EVENT_NAME = re.compile(r"^(?:event|event[_ .-]?(?:name|type)|action|activity)$", re.IGNORECASE)
TIME_NAME = re.compile(
    r"(?:^|[_ .-])(?:time|timestamp|ts|at|on|date|datetime)$"
    r"|^(?:created|occurred|happened|sent|updated|inserted)$",
    re.IGNORECASE,
)
EMAIL_VALUE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


@dataclass(slots=True)
class Columns:
    """What the first rows say each column holds."""

    names: list[str]
    ids: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    times: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)


def open_to_guess(path: Path) -> InputFile:
    """Open `path` as a spreadsheet may have written it: a CSV whose header has more `;` than
    `,` with the separator `;`, and bytes that are not UTF-8 but read as Windows-1252 in that
    encoding; the mapping guessed then says both (see exports.written_as)."""
    separator = ";" if _semicolons(path) else ""
    try:
        return open_input(path, separator=separator)
    except NotUtf8Error as exc:
        try:
            return open_input(path, separator=separator, encoding="cp1252")
        except InputError:
            raise exc from None  # not Windows-1252 either: the hint says what else to try


def _semicolons(path: Path) -> bool:
    """Whether `path` is a CSV whose first line has more `;` than `,` (the same bytes in every
    encoding a mapping may declare)."""
    if FORMATS.get(text_ending(path)) != "csv":
        return False
    try:
        with open_bytes(path) as handle:
            first = handle.readline(1 << 16)
    except (OSError, ImporterError):
        return False  # opening it says why
    return first.count(b";") > first.count(b",")


def read_columns(source: InputFile) -> Columns:
    """Sort the input's columns into ids, emails, event names and times."""
    first = next(islice(iter_batches(source, batch_rows=SAMPLE_ROWS), 1), None)
    names = list(source.columns)
    found = Columns(names=names)
    if first is None or not names:
        return found
    frame = first.frame
    texts = frame.select(json_as_text(pl.col(name)).alias(name) for name in names)
    shares = texts.select(
        *(_share(pl.col(name), EMAIL_VALUE).alias(f"email:{name}") for name in names),
        *(_share(pl.col(name), ISO_RE).alias(f"iso:{name}") for name in names),
        *(_share(pl.col(name), EPOCH_RE).alias(f"epoch:{name}") for name in names),
    ).row(0, named=True)
    for name in names:
        if EMAIL_NAME.search(name) or shares[f"email:{name}"] >= CONTENT_SHARE:
            found.emails.append(name)
            found.why[name] = "its values are email addresses"
        elif TIME_NAME.search(name) and (
            shares[f"iso:{name}"] >= CONTENT_SHARE or shares[f"epoch:{name}"] >= CONTENT_SHARE
        ):
            found.times.append(name)
            found.why[name] = "its name and values say it is a time"
        elif shares[f"iso:{name}"] >= CONTENT_SHARE:
            found.times.append(name)
            found.why[name] = "its values are ISO 8601 times"
        elif EVENT_NAME.search(name):
            found.events.append(name)
            found.why[name] = "its name says it is the event"
        elif ID_NAME.search(name):
            found.ids.append(name)
            found.why[name] = "its name says it identifies the user"
    # The most specific id first: `user_id` before a bare `id`.
    found.ids.sort(key=lambda name: (name.lower() in ("id", "uid"), names.index(name)))
    return found


def _share(text: pl.Expr, pattern: str) -> pl.Expr:
    """The share of a column's values (blanks left out) that match `pattern`."""
    present = text.is_not_null() & (text.str.strip_chars() != "")
    matches = text.str.strip_chars().str.contains(pattern).fill_null(False)
    return pl.when(present.sum() > 0).then(matches.sum() / present.sum()).otherwise(0.0)


def choose_action(destination: Destination, columns: Columns) -> Action:
    """An event column means an action that takes an event (a required text that is neither an
    identity nor a time); else one that takes properties and nothing more. Among those, the
    first whose identity a column is named after (`company_id`), else the first."""
    candidates = []
    for action in destination.actions.values():
        if action.bulk is not None:
            continue
        takes_event = bool(_event_paths(action))
        takes_only_properties = bool(action.object_fields) and not takes_event
        identified = all(path in action.identity for path in action.required)
        if (columns.events and takes_event) or (
            not columns.events and takes_only_properties and identified
        ):
            candidates.append(action)
    named = [action for action in candidates if _named_after(action, columns)]
    if named or candidates:
        return (named or candidates)[0]
    raise MappingError(
        f"cannot guess an action of {destination.name} for columns "
        f"{', '.join(columns.names) or '(none)'}: name one with --action"
    )


def _named_after(action: Action, columns: Columns) -> list[str]:
    """Columns named as one of the action's identity paths ends (`company_id`, `id`)."""
    ends = {path.rsplit(".", 1)[-1].lower() for path in action.identity}
    return [name for name in columns.names if name.lower() in ends]


def _event_paths(action: Action) -> list[str]:
    return [
        path
        for path, spec in action.fields.items()
        if spec.required and spec.kind == "text" and path not in action.identity
    ]


def guess_mapping(source: InputFile, destination: Destination, action: Action | None) -> str:
    """A commented mapping of `source` for `action` (guessed when None), as TOML text."""
    # A known export (by its keys) gets the mapping written for it (pipeline/exports.py).
    first = next(islice(iter_batches(source, batch_rows=SAMPLE_ROWS), 1), None)
    sample = first.frame if first is not None else pl.DataFrame()
    shape = recognise(list(source.columns), sample)
    if shape is not None:
        return export_mapping(source, destination, action, shape, sample, datetime.now(UTC))
    markers, formats = dump_values(sample, list(source.columns))
    columns = read_columns(source)
    action = action or choose_action(destination, columns)
    fields: dict[str, tuple[str, str]] = {}  # path -> (column, why)
    used: set[str] = set()

    def take(path: str, candidates: list[str], what: str) -> None:
        for column in candidates:
            if column not in used:
                fields[path] = (column, f"{what}: {columns.why[column]}")
                used.add(column)
                return

    for path in action.identity:
        spec = action.fields[path]
        end = path.rsplit(".", 1)[-1].lower()
        named = [name for name in columns.names if name.lower() == end]
        for name in named:
            columns.why.setdefault(name, "its name is the payload's")
        likely = columns.emails if spec.pattern_rule == "email" else columns.ids
        take(path, named + likely, "identity")
    if action.identity and not any(path in fields for path in action.identity):
        # No id column: an email is the best id there is.
        take(action.identity[0], columns.emails, "identity (an email, as no id column was found)")
    for path in _event_paths(action):
        take(path, columns.events, "event")
    times = [path for path, spec in action.fields.items() if spec.kind == "time"]
    for path in sorted(times, key=lambda path: not action.fields[path].required):
        if action.fields[path].required or "." not in path:
            take(path, columns.times, "time")
    missing = [path for path in action.required if path not in fields]
    if action.identity and not any(path in fields for path in action.identity):
        # A mapping must name an identity path to load: say so rather than write one that won't.
        missing = [" or ".join(action.identity), *(p for p in missing if p not in action.identity)]
    if missing:
        raise MappingError(
            f"{source.name}: no column looks like {', '.join(missing)} of {action.name} "
            f"(columns: {_names(columns.names)}); write the mapping by hand, "
            "starting from a preset (importer presets lists them; importer init --preset NAME "
            "copies one)"
        )
    # The first object the action declares: its properties (not, say, a company's).
    star = next((path for path in action.fields if path in action.object_fields), None)
    left = [name for name in columns.names if name not in used]
    typed = [name for name in columns.times if name not in used]
    typed += [name for name in formats if name not in used and name not in typed]
    dedup = action.duplicates
    time_key = None
    if dedup is not None and dedup.time in fields and star == dedup.data:
        time_key = _free_key(fields[dedup.time][0], left)
    emails = list(columns.emails)  # mapped or sent among the properties, trimmed either way
    repairs = dump_repairs(markers, formats, emails, written_as(source))
    return _render(source, destination, action, fields, star, left, typed, time_key) + repairs


def _free_key(name: str, taken: list[str]) -> str:
    key = name
    while key in taken:
        key = f"original_{key}"
    return key


def _render(
    source: InputFile,
    destination: Destination,
    action: Action,
    fields: dict[str, tuple[str, str]],
    star: str | None,
    left: list[str],
    typed: list[str],
    time_key: str | None,
) -> str:
    lines = [
        f"# Mapping guessed by `importer init` from {_q(source.name)} (its header and first rows).",
        "# Check every line, then: importer validate <file> --mapping <this file>",
        f"destination = {_q(destination.name)}",
        f"action = {_q(action.name)}",
        f"# Actions: {', '.join(destination.actions)}.",
    ]
    lines += ['timezone = "UTC"  # times without an offset are read in this zone', "", "[fields]"]
    for path, (column, why) in fields.items():
        lines.append(f"# {why}")
        lines.append(f"{_q(path)} = {_q(column)}")
    if star is not None and left:
        lines.append(f"# every other column ({_names(left)})")
        lines.append(f"{_q(star)} = {_q(ALL_COLUMNS)}")
    if typed:
        lines += ["", "[types]", "# sent as times, in the API's format"]
        lines += [f"{_q(name)} = {_q('timestamp')}" for name in typed]
    if time_key is not None:
        lines += [
            "",
            "[dedup]",
            "# the event's time, copied into its properties, so the API does not drop the same",
            "# event of the same user at another time as a duplicate",
            f"time_key = {_q(time_key)}",
        ]
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's), on one line and safe in a comment too.

    JSON leaves DEL and the line and paragraph separators raw; TOML refuses a raw DEL, and an
    editor may break a line at the separators. A lone surrogate has no TOML escape: it becomes
    U+FFFD, as the text could not be written to the file anyway.
    """
    quoted = json.dumps(_SURROGATE.sub("\ufffd", text), ensure_ascii=False)
    return quoted.translate(_MORE_ESCAPES)


def _names(names: list[str]) -> str:
    """Column names as a comment or message lists them: each quoted, so that a header holding
    a line break or TOML cannot end the comment and start a line of the mapping."""
    return ", ".join(map(_q, names)) or "(none)"


_SURROGATE = re.compile("[\ud800-\udfff]")
_MORE_ESCAPES = {0x7F: "\\u007f", 0x2028: "\\u2028", 0x2029: "\\u2029"}
