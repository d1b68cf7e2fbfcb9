"""Exports `init` knows by their keys (Segment, RudderStack, PostHog, Mixpanel, Amplitude) and
database dumps it knows by their values (`\\N` nulls, `MM/DD/YYYY` times, spaced emails): the
mapping a careful person writes for each, and a check of any mapping on a sample of the file.

A known export gets the event's own time (Segment's `timestamp`, not `receivedAt`), the user id
with its fallback, the event name, the properties object as data without the envelope, and the
filter for its event rows. The destination's actions decide the paths: an event action that
keeps the event's time when the sample's times are older than a day, else the first event action.
"""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from importer.checks.validate import FileState, validate_frame
from importer.columns import ERROR, RULE
from importer.destinations import Action, Destination
from importer.errors import ImporterError
from importer.inputs.common import InputFile
from importer.inputs.reader import iter_batches
from importer.jsontext import json_as_text
from importer.mapping.file import parse_mapping

RECENT = timedelta(days=1)
NULL_MARKERS = ("\\N", "NULL", "n/a", "N/A")
# Times as spreadsheets and databases write them, with the strftime pattern that reads them.
TIME_SHAPES = (
    (r"^\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}$", "%m/%d/%Y %H:%M"),
    (r"^\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}:\d{2}$", "%m/%d/%Y %H:%M:%S"),
    (r"^\d{1,2}/\d{1,2}/\d{4}$", "%m/%d/%Y"),
)


@dataclass(frozen=True, slots=True)
class Shape:
    """A known export: the columns that hold the user (then its fallback), the event and its
    time, the object of its properties, the rows that are events, and the envelope left out."""

    name: str
    keys: frozenset[str]
    user: str
    event: str
    time: str
    properties: str
    fallback: str | None = None
    where: str | None = None
    epoch_unit: str | None = None
    time_formats: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    why: str = ""


SHAPES = (
    Shape(
        name="Segment/RudderStack",
        keys=frozenset({"type", "messageId", "anonymousId", "timestamp", "event", "properties"}),
        user="userId",
        fallback="anonymousId",
        event="event",
        time="timestamp",
        properties="properties.*",
        where="type = 'track'",
        why="`timestamp` is when the event happened; `receivedAt` is when it arrived",
    ),
    Shape(
        name="Mixpanel",
        keys=frozenset({"event", "properties"}),
        user="properties.distinct_id",
        event="event",
        time="properties.time",
        properties="properties.*",
        epoch_unit="s",
        exclude=(
            "properties.$insert_id",
            "properties.mp_processing_time_ms",
            "properties.token",
        ),
        why="Mixpanel keeps the user and the epoch time inside `properties`",
    ),
    Shape(
        name="PostHog",
        keys=frozenset({"event", "distinct_id", "timestamp", "properties", "uuid"}),
        user="distinct_id",
        event="event",
        time="timestamp",
        properties="properties.*",
        why="`timestamp` is when the event happened",
    ),
    Shape(
        name="Amplitude",
        keys=frozenset({"user_id", "event_type", "event_time", "event_properties"}),
        user="user_id",
        event="event_type",
        time="event_time",
        properties="event_properties.*",
        time_formats=("%Y-%m-%d %H:%M:%S%.f",),
        why="`event_time` is the event's time in UTC; client_event_time is the device's clock",
    ),
)


def recognise(columns: list[str], frame: pl.DataFrame) -> Shape | None:
    """The known export whose keys the input has (the most specific first); Mixpanel only
    when its properties hold a distinct_id."""
    present = set(columns)
    for shape in sorted(SHAPES, key=lambda s: -len(s.keys)):
        if not shape.keys <= present:
            continue
        if shape.name == "Mixpanel":
            ids = frame.select(pl.col("properties").str.json_path_match("$.distinct_id"))
            if ids.to_series().null_count() == frame.height:
                continue
        return shape
    return None


def export_mapping(
    source: InputFile,
    destination: Destination,
    action: Action | None,
    shape: Shape,
    frame: pl.DataFrame,
    now: datetime,
) -> str:
    """The mapping of a known export for `destination` (its action chosen when None)."""
    recent = _times_recent(frame, shape, now)
    action = action or _event_action(destination, recent)
    identity = action.identity[0]
    event = next(p for p, f in action.fields.items() if f.required and f.kind == "text"
                 and p not in action.identity)  # fmt: skip
    times = [p for p, f in action.fields.items() if f.kind == "time"]
    time = next((p for p in times if action.fields[p].required), times[0] if times else None)
    data = next((p for p in action.fields if p in action.object_fields), None)
    lines = [
        f"# Mapping written by `importer init` for an export from {shape.name} ({source.name}).",
        f"# {shape.why}.",
        "# Check every line, then: importer validate <file> --mapping <this file>",
        f"destination = {_q(destination.name)}",
        f"action = {_q(action.name)}",
    ]
    if action.receipt_time:
        lines.append(f"# {destination.title} stamps {action.name} with the time it arrives: the")
        lines.append("# sample's times are recent. For history, use an action that keeps them.")
    elif not recent:
        lines.append("# the sample's times are older than a day: an action that keeps each time")
    lines.append('timezone = "UTC"')
    if shape.where is not None:
        lines.append("# only these rows are events; the others are counted as filtered")
        lines.append(f"where = {_q(shape.where)}")
    lines += [
        "",
        "[fields]",
        f"{_q(identity)} = {_q(shape.user)}",
        f"{_q(event)} = {_q(shape.event)}",
    ]
    if time is not None:
        lines.append(f"{_q(time)} = {_q(shape.time)}")
    if data is not None:
        lines.append("# the event's properties, without the export's envelope")
        lines.append(f"{_q(data)} = {_q(shape.properties)}")
    repairs = written_as(source)
    if shape.exclude:
        repairs.append(f"exclude = [{', '.join(map(_q, shape.exclude))}]")
    tables: list[str] = []
    if shape.fallback is not None:
        tables += ["", "[repairs.coalesce]", "# anonymous rows go under their anonymous id"]
        tables.append(f"{_q(shape.user)} = [{_q(shape.fallback)}]")
    if shape.epoch_unit is not None:
        tables += ["", "[repairs.epoch_units]", f"{_q(shape.time)} = {_q(shape.epoch_unit)}"]
    if shape.time_formats:
        tables += ["", "[repairs.time_formats]"]
        tables.append(f"{_q(shape.time)} = [{', '.join(map(_q, shape.time_formats))}]")
    if repairs:
        lines += ["", "[repairs]", *repairs]
    return "\n".join([*lines, *tables]) + "\n"


def _event_action(destination: Destination, recent: bool) -> Action:
    """An action that takes an event: one that keeps its time unless the times are recent,
    when the first (the live one) will do."""
    events = [
        a
        for a in destination.actions.values()
        if any(f.required and f.kind == "text" and p not in a.identity for p, f in a.fields.items())
        and a.object_fields
    ]
    timed = [a for a in events if any(f.kind == "time" for f in a.fields.values())]
    chosen = (events if recent else timed) or events
    if not chosen:
        raise ImporterError(f"{destination.name} has no action that takes an event")
    return chosen[0]


def _times_recent(frame: pl.DataFrame, shape: Shape, now: datetime) -> bool:
    """Whether every time in the sample is within a day of `now` (or there is none)."""
    column, _, member = shape.time.partition(".")
    if column not in frame.columns:
        return True
    value = pl.col(column)
    text = value.str.json_path_match(f"$.{member}") if member else json_as_text(value)
    seconds = text.cast(pl.Float64, strict=False)
    parsed = pl.coalesce(
        pl.from_epoch(seconds.cast(pl.Int64, strict=False), time_unit="s"),
        text.str.slice(0, 19)
        .str.replace("T", " ")
        .str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="ms"),
    )
    oldest = frame.select(parsed.min()).item()
    if oldest is None:
        return True
    return bool(oldest >= now.replace(tzinfo=None) - RECENT)


def dump_values(frame: pl.DataFrame, columns: list[str]) -> tuple[list[str], dict[str, str]]:
    """What a database dump's values show: the null markers it writes, and the columns whose
    times only a pattern reads (column -> strftime pattern)."""
    if not columns or frame.height == 0:
        return [], {}
    texts = frame.select(json_as_text(pl.col(c)).alias(c) for c in columns)
    found = [m for m in NULL_MARKERS if texts.select(pl.any_horizontal(pl.all() == m).any()).item()]
    formats: dict[str, str] = {}
    for column in columns:
        values = texts[column].drop_nulls().filter(~texts[column].drop_nulls().is_in(found))
        if values.len() == 0:
            continue
        for pattern, strftime in TIME_SHAPES:
            if values.str.contains(pattern).mean() >= 0.5:
                formats[column] = strftime
                break
    return found, formats


def written_as(source: InputFile) -> list[str]:
    """The [repairs] lines that say how `source` is written where it is not as its format's
    default: the separator and the encoding it was opened with (a spreadsheet's `;` and
    Windows-1252)."""
    lines: list[str] = []
    if source.separator:
        lines.append("# the file's separator (a spreadsheet's, in a comma-decimal locale)")
        lines.append(f"separator = {_q(source.separator)}")
    if source.encoding:
        lines.append("# the file's bytes are not UTF-8 but read as Windows-1252, as spreadsheets")
        lines.append("# export: check a few names with accents in the rows sent")
        lines.append(f"encoding = {_q(source.encoding)}")
    return lines


def dump_repairs(
    found: list[str], formats: dict[str, str], emails: list[str], written: list[str]
) -> str:
    """The [repairs] a dump's values call for, as TOML text ("" for none): how the file is
    `written` (see written_as), its null markers, trimmed emails, and the patterns of its
    times."""
    lines: list[str] = []
    if found or written:
        lines += ["", "[repairs]", *written]
    if found:
        lines.append("# the dump writes a missing value as this text: it is no value")
        lines.append(f"null_markers = [{', '.join(map(_q, found))}]")
    if emails:
        lines += ["", "[repairs.normalise]", "# surrounding spaces are never part of an email"]
        lines += [f'{_q(column)} = ["trim"]' for column in emails]
    if formats:
        lines += ["", "[repairs.time_formats]", "# times only this pattern reads"]
        lines += [f"{_q(column)} = [{_q(p)}]" for column, p in formats.items()]
    return "\n".join(lines) + ("\n" if lines else "")


@dataclass(slots=True)
class SampleCheck:
    """A mapping tried on the first rows of a file: how many were rejected or filtered, why."""

    rows: int = 0
    rejected: int = 0
    filtered: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)


def check_sample(source: InputFile, text: str, *, now: datetime, rows: int) -> SampleCheck:
    """Validate the first `rows` rows of `source` with the mapping `text` (nothing is sent)."""
    mapping = parse_mapping(tomllib.loads(text), path=Path("(guessed mapping)"))
    found = SampleCheck()
    batch = next(iter(iter_batches(source, batch_rows=rows)), None)
    if batch is None:
        return found
    mapping.check_columns(source.columns, source=source.name)
    checked = validate_frame(batch.frame, mapping, state=FileState(), now=now)
    found.rows = batch.frame.height + batch.rejects.height
    found.filtered = checked.filtered
    bad = pl.concat([batch.rejects, checked.rejects], how="diagonal_relaxed")
    found.rejected = bad.height
    found.reasons.update(bad[RULE].to_list() if bad.height else [])
    if bad.height:
        first = bad.group_by(RULE, maintain_order=True).agg(pl.col(ERROR).first())
        found.examples = dict(zip(first[RULE].to_list(), first[ERROR].to_list(), strict=True))
    return found


def describe_check(found: SampleCheck, *, top: int = 3) -> str:
    """The sample check in a few lines, for a person to see a wrong guess before a run."""
    if found.rows == 0:
        return "checked on the sample: the file has no rows"
    share = lambda n: f"{n:,} ({n / found.rows:.0%})"  # noqa: E731
    lines = [
        f"checked on the first {found.rows:,} rows: {share(found.rejected)} would be rejected, "
        f"{share(found.filtered)} filtered"
    ]
    for rule, count in found.reasons.most_common(top):
        lines.append(f"  {rule} ({count:,}): {found.examples.get(rule, '')}")
    return "\n".join(lines)


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
