"""One run, from files to checked payloads and on to delivery: what `validate`, `run --dry-run`,
`run` and `replay` share.

Every input is opened and checked (encoding, structure, mapped columns) before the first row of
any of them is read, so a bad file fails the job before anything is sent. Then batches flow
read -> validate -> rejects file, dedup analysis -> payload bodies. Reading runs a batch ahead
in its own thread, and a dry run writes its lines in another, so the stages overlap on a second
core; everything the caller sees (counts, rejects, bodies) comes in order.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import polars as pl

from importer.checks.dedup import DedupTracker
from importer.checks.rejects import RejectsWriter
from importer.checks.shard import Shard
from importer.checks.validate import (
    Checked,
    FileState,
    Window,
    receipt_time_note,
    validate_frame,
    window_column,
    window_refusal,
)
from importer.columns import BODY, LINE, METHOD, PATH, ROUTE
from importer.delivery.deliver import DeliveryControl, body_frame, deliver
from importer.delivery.options import DeliveryOptions, Feed
from importer.destinations import Action, Destination
from importer.destinations.base import deleted_things
from importer.errors import InputError, MappingError
from importer.files import open_output
from importer.inputs.cloud import open_sources
from importer.inputs.common import DEFAULT_BATCH_ROWS, SAMPLE_LINES, Batch, InputFile
from importer.inputs.jsonl import jsonl_keys
from importer.inputs.reader import iter_batches
from importer.mapping.file import ALL_COLUMNS, Mapping
from importer.outcome import Summary
from importer.payloads.build import build_bodies
from importer.payloads.payload_file import payload_lines
from importer.pipeline.admit import admit_inputs, note_admissions, to_read, without_overlaps
from importer.pipeline.endpoint import open_endpoint
from importer.pipeline.next_step import replay_command
from importer.pipeline.replay import iter_payload_feeds
from importer.progress import DeliveryProgress, NoProgress, Progress
from importer.state.checkpoint import CheckpointLog
from importer.state.facts import RunIdentity
from importer.state.status import known_sizes, known_whole

# A replay has no mapping; its checkpoint is bound to this instead.
REPLAY_MAPPING = "replay-of-payload-file"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """What to read and how; `now` fixes the clock that future times are judged by; `shard`
    keeps only its users' rows for payloads and sending (every row is still validated);
    `window` keeps only the rows whose time is in it (--since/--until)."""

    inputs: tuple[Path, ...]
    mapping: Mapping
    rejects_path: Path | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    shard: Shard | None = None
    window: Window | None = None
    # Whether validated rows carry ROUTE even without --shard: --workers > 1 and per-user
    # order read it (send_inputs sets it from its delivery options).
    route: bool = False

    def __post_init__(self) -> None:
        if self.batch_rows < 1:
            raise ValueError("batch_rows must be positive")
        action = self.mapping.action
        if self.shard is not None and not any(p in self.mapping.fields for p in action.identity):
            raise MappingError(
                f"--shard needs each row's user, and mapping {self.mapping.path} maps none of "
                f"{action.name}'s identity paths ({', '.join(action.identity) or 'it has none'})"
            )
        if self.window is not None and window_column(self.mapping) is None:
            raise MappingError(window_refusal(self.mapping))

    @property
    def run_fingerprint(self) -> str:
        """What binds a state directory to this job's rows: the mapping, and the shard, so that
        a shard never resumes from another shard's checkpoint."""
        fingerprint = self.mapping.fingerprint
        return fingerprint if self.shard is None else f"{fingerprint}+{self.shard.state_name}"


def _check_data_keys(mapping: Mapping, source: InputFile, columns: Iterable[str]) -> None:
    """Refuse a key of data that gets two values: one key, one value, or the receiver's parser
    decides which one wins (json.loads keeps the last).

    Two ways lead there: `data = "*"` takes a column whose name is also mapped as
    `data.<name>`, or a [dedup] data_key or time_key is already a key of data.
    """
    star = mapping.star_path
    present = set(columns)
    named = {column for column in mapping.fields.values() if column != ALL_COLUMNS}
    from_star = present - named if star is not None else set()
    problems = [
        f'fields.{path!r} = {column!r} and {star} = "*" both fill {path}: {source.name} has '
        f'a column {path.partition(".")[2]!r}, which "*" puts in {star} too'
        for path, column in mapping.fields.items()
        if star is not None and path.startswith(f"{star}.") and path.partition(".")[2] in from_star
    ]
    duplicates = mapping.action.duplicates
    data = duplicates.data if duplicates is not None else None
    for option, key in (("data_key", mapping.dedup_data_key), ("time_key", mapping.dedup_time_key)):
        twice = key is not None and (
            (star == data and key in from_star) or f"{data}.{key}" in mapping.fields
        )
        if twice:
            problems.append(
                f"dedup.{option} {key!r} is also a key of {data} (from {source.name}); choose "
                f"a name the {data} does not use"
            )
    if problems:
        raise MappingError(
            f"mapping {mapping.path}: " + "; ".join(problems),
            hint="rename the key in the mapping, or map that column to another path",
        )


def open_inputs(options: RunOptions, *, state_dir: Path | None = None) -> list[InputFile]:
    """Open every input and check the mapping against each CSV header, before any row is read.

    With `state_dir`, the byte pass also hashes each input's first bytes at the sizes of the
    inputs its checkpoint knows, so that `send_inputs` knows a grown file without reading it
    again, and an input every row of which the checkpoint knows as handled is not profiled
    (`whole_before`): `send_inputs` skips it.
    """
    probes = None if state_dir is None else known_sizes(state_dir)
    whole = None if state_dir is None else known_whole(state_dir)
    sources = open_sources(
        options.inputs,
        probes=probes,
        whole=whole,
        pinned=options.mapping.types.keys(),
        separator=options.mapping.repairs.separator,  # a spreadsheet's ";", when declared
        encoding=options.mapping.repairs.encoding,  # and its Windows-1252
    )
    for source in sources:
        if not source.columns:
            continue
        columns: Iterable[str] = source.columns
        if (
            source.format == "jsonl"
            and source.lines >= SAMPLE_LINES
            and _needs_every_key(options.mapping, source)
        ):
            # JSONL has no header: a key the first lines lack may still come later. Only then
            # is the whole file read for its keys.
            columns = jsonl_keys(source.path, encoding=source.encoding)
        options.mapping.check_columns(columns, source=source.name)
        _check_data_keys(options.mapping, source, columns)
    return sources


def _needs_every_key(mapping: Mapping, source: InputFile) -> bool:
    """Whether a check needs keys beyond the sampled lines: a mapped column they lack, or
    keys of data that "*" could also fill."""
    star = mapping.star_path
    keyed = star is not None and any(p.startswith(f"{star}.") for p in mapping.fields)
    sampled = set(source.columns)
    return keyed or any(column not in sampled for column in mapping.source_columns)


def iter_valid(
    options: RunOptions,
    sources: list[InputFile],
    summary: Summary,
    *,
    dedup: DedupTracker,
    progress: Progress,
    read_whole: dict[str, int] | None = None,
) -> Iterator[tuple[InputFile, pl.DataFrame]]:
    """Each input's validated batches; rejects are counted, written and left behind. Each input
    read to its end adds its fingerprint and its rows' count to `read_whole`."""
    rejects = RejectsWriter(options.rejects_path) if options.rejects_path else None
    summary.shard = None if options.shard is None else options.shard.label
    try:
        for source in sources:
            summary.inputs.append({"file": source.name, "fingerprint": source.fingerprint})
            if source.blank or (source.format != "jsonl" and source.records == 0):
                # A night with no events may leave a file of blank lines: as empty as no bytes.
                if source.blank and source.lines:
                    what = "only blank lines"
                else:
                    what = "empty" if source.blank or not source.header else "only a header"
                summary.warnings.append(f"{source.name} is {what}: nothing to send")
                continue
            progress.begin(source.name, source.records or source.lines)
            rows_before = summary.rows_read
            # Validated in this thread: a second thread ahead of it saved 3% of the time but held
            # one batch more (30 MB), and memory is the harder limit on a 20M-row file.
            for batch, checked in _checked(source, options):
                summary.rows_read += batch.frame.height + batch.rejects.height
                summary.blank_lines += batch.blank_lines
                bad = pl.concat([batch.rejects, checked.rejects], how="diagonal_relaxed").sort(LINE)
                summary.add_rejects(bad, source=source.name)
                if rejects is not None:
                    rejects.write(bad, source=source.name)
                summary.rows_valid += checked.valid.height
                summary.naive_times += checked.naive_times
                summary.rows_outside_window += checked.outside
                summary.rows_filtered += checked.filtered  # issue 20: the mapping's repairs
                summary.repairs.update(checked.repairs)
                valid = checked.valid
                if options.shard is not None:
                    mine = valid.filter(options.shard.mask(pl.col(ROUTE)))
                    summary.rows_other_shards += valid.height - mine.height
                    valid = mine
                dedup.add(valid)
                yield source, valid
                progress.advance(batch.frame.height + batch.rejects.height + batch.blank_lines)
            progress.end()
            if read_whole is not None:
                read_whole[source.fingerprint] = summary.rows_read - rows_before
            if summary.rows_read == rows_before:
                summary.warnings.append(f"{source.name} has no rows: nothing to send")
        if summary.repairs.get("dropped"):  # issue 20: the mapping's field policy
            summary.warnings.append(
                f"{summary.repairs['dropped']:,} invalid value(s) of "
                f"{', '.join(options.mapping.repairs.drop_invalid)} left out of rows sent "
                "without them (repairs.drop_invalid)"
            )
        note = receipt_time_note(options.mapping, summary.rows_valid - summary.rows_other_shards)
        if note is not None:
            summary.notes.append(note)
    finally:
        if rejects is not None:
            rejects.close()


def _checked(
    source: InputFile, options: RunOptions
) -> Generator[tuple[Batch, Checked], None, None]:
    """The batches of `source`, each with its validation."""
    state = FileState()
    route = options.route or options.shard is not None
    for batch in iter_batches(source, batch_rows=options.batch_rows):
        checked = validate_frame(
            batch.frame,
            options.mapping,
            state=state,
            now=options.now,
            window=options.window,
            route=route,
        )
        yield batch, checked


def validate_inputs(options: RunOptions, *, progress: Progress | None = None) -> Summary:
    """`importer validate`: every check, no payloads."""
    started = time.monotonic()
    summary = Summary(dry_run=True)
    dedup = DedupTracker(options.mapping)
    sources = open_inputs(options)
    for _ in iter_valid(options, sources, summary, dedup=dedup, progress=progress or NoProgress()):
        pass
    summary.dedup = dedup.report() if dedup.applies else None
    summary.elapsed_s = time.monotonic() - started
    return summary


def dry_run(
    options: RunOptions, *, out: Path | None = None, progress: Progress | None = None
) -> Summary:
    """`importer run --dry-run`: build every payload, send nothing, write them to `out`."""
    started = time.monotonic()
    summary = Summary(dry_run=True)
    dedup = DedupTracker(options.mapping)
    sources = open_inputs(options)
    handle = open_output(out, "wb") if out is not None else None
    # Lines are written in a thread while the next batch is built (Polars releases the GIL);
    # one write at a time, in order, and its error is raised before the next one starts.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="importer-out")
    # Its thread is started here, outside the try: a Ctrl-C inside a later submit() could
    # otherwise leave a thread that shutdown() does not wait for, writing to a closed file.
    writer.submit(int).result()
    written: Future[None] | None = None
    try:
        for source, valid in iter_valid(
            options, sources, summary, dedup=dedup, progress=progress or NoProgress()
        ):
            bodies = build_bodies(valid, options.mapping, source=source)
            if handle is not None and bodies.height:
                if written is not None:
                    written.result()
                written = writer.submit(_write_lines, handle, bodies, options, source.name)
        if written is not None:
            written.result()
    finally:
        writer.shutdown(wait=True)
        if handle is not None:
            handle.close()
    summary.dedup = dedup.report() if dedup.applies else None
    if options.mapping.action.destructive:
        summary.notes.append(
            f"this would delete {summary.rows_valid:,} {deleted_things(options.mapping.action)} "
            f"({options.mapping.action.name}), which cannot be undone; a run asks for "
            "confirmation on a terminal and needs --yes elsewhere"
        )
    summary.elapsed_s = time.monotonic() - started
    return summary


def _write_lines(handle: IO[bytes], bodies: pl.DataFrame, options: RunOptions, name: str) -> None:
    """A dry run's payload lines of one batch, written in one go from Polars' own buffers: a
    line is JSON, which never holds a raw line break or needs CSV quoting."""
    action = options.mapping.action
    line = payload_lines(
        pl.col(BODY), pl.col(LINE), method=action.method, path=action.path, source=name
    )
    bodies.select(line).write_csv(handle, include_header=False, quote_style="never")


def iter_feeds(
    options: RunOptions,
    sources: list[InputFile],
    summary: Summary,
    *,
    dedup: DedupTracker,
    progress: Progress,
    read_whole: dict[str, int] | None = None,
) -> Generator[Feed, None, None]:
    """The bodies of every input, batch by batch, for `delivery.deliver`."""
    action = options.mapping.action
    valid_batches = iter_valid(
        options, sources, summary, dedup=dedup, progress=progress, read_whole=read_whole
    )
    for source, valid in valid_batches:
        bodies = build_bodies(valid, options.mapping, source=source)
        yield Feed(
            fingerprint=source.fingerprint,
            name=source.name,
            frame=body_frame(bodies, method=action.method, path=action.path),
        )


async def send_inputs(
    options: RunOptions,
    sources: list[InputFile],
    delivery: DeliveryOptions,
    *,
    progress: DeliveryProgress | None = None,
    control: DeliveryControl | None = None,
    resend_changed: bool = False,
) -> Summary:
    """`importer run`: read, validate, build and send every row of `sources` (from
    `open_inputs`, called before the event loop starts) not yet acknowledged; `control`
    lets the caller end it early. A file whose content changed since it was sent is skipped
    unless `resend_changed` (see `admit_inputs`)."""
    started = time.monotonic()
    summary = Summary()
    dedup = DedupTracker(options.mapping)
    identity = RunIdentity(
        mapping_fingerprint=options.run_fingerprint,
        destination=options.mapping.destination.name,
        endpoint=delivery.endpoint,
    )
    if delivery.checkpoint:
        admitted, warnings = admit_inputs(
            sources, delivery, identity, resend_changed=resend_changed
        )
        summary.warnings.extend(warnings)  # a repaired log says so once, here
        delivery = replace(delivery, fresh=False)  # admit_inputs set the old log aside
    else:
        admitted = without_overlaps(sources)
    sources = [s for s, admission in admitted if to_read(s, admission)]
    read_whole: dict[str, int] = {}
    quick = {s.fingerprint: (s.quick, s.disk_size, s.blocks[:1]) for s in sources}
    if needs_route(delivery):
        options = replace(options, route=True)
    feeds = iter_feeds(
        options, sources, summary, dedup=dedup, progress=NoProgress(), read_whole=read_whole
    )
    total = sum(source.records or source.lines for source in sources)
    action = options.mapping.action
    try:
        async with open_endpoint(delivery, options.mapping.destination, summary) as endpoint:
            await _deliver_feeds(
                feeds,
                identity=identity,
                destination=options.mapping.destination,
                action=action if action.bulk is not None else None,
                delivery=endpoint,
                summary=summary,
                max_bytes=_chunk_bytes(options.mapping),
                progress=progress,
                total=total,
                control=control,
            )
    finally:
        feeds.close()
    if delivery.checkpoint and summary.stop is None and not summary.interrupted and read_whole:
        with CheckpointLog.open(delivery.state_dir, job=identity) as log:
            for fingerprint, rows in read_whole.items():
                fast, disk_size, head = quick[fingerprint]
                log.mark_whole(
                    fingerprint, rows, quick=fast, disk_size=disk_size, head=b"".join(head)
                )
    _note_replay(summary, delivery, options.mapping.destination)
    note_admissions(summary, admitted)
    summary.dedup = dedup.report() if dedup.applies else None
    summary.elapsed_s = time.monotonic() - started
    return summary


def needs_route(delivery: DeliveryOptions) -> bool:
    """Whether sending reads each row's ROUTE: to pick its sender process, or to keep one
    user's rows in order (per-user order, --order time)."""
    return delivery.workers > 1 or delivery.send.per_user_order or delivery.order_time is not None


async def replay_payloads(
    payloads: Path,
    destination: Destination,
    delivery: DeliveryOptions,
    *,
    rejects_path: Path | None = None,
    progress: DeliveryProgress | None = None,
    control: DeliveryControl | None = None,
) -> Summary:
    """`importer replay`: send a payload file as it is, resumable like a run; `control` lets
    the caller end it early."""
    started = time.monotonic()
    summary = Summary()
    rejects = RejectsWriter(rejects_path) if rejects_path else None
    identity = RunIdentity(
        mapping_fingerprint=REPLAY_MAPPING, destination=destination.name, endpoint=delivery.endpoint
    )
    feeds = iter_payload_feeds(payloads, destination=destination, summary=summary, rejects=rejects)
    first = next(feeds, None)
    batched = _batch_action(destination, first)
    chained = itertools.chain(() if first is None else (first,), feeds)
    try:
        async with open_endpoint(delivery, destination, summary) as endpoint:
            await _deliver_feeds(
                chained if batched is None else _only_call(chained, batched, payloads),
                identity=identity,
                destination=destination,
                action=batched,
                delivery=endpoint,
                summary=summary,
                progress=progress,
                control=control,
            )
    finally:
        feeds.close()
        if rejects is not None:
            rejects.close()
    _note_replay(summary, delivery, destination)
    summary.elapsed_s = time.monotonic() - started
    return summary


def _note_replay(summary: Summary, delivery: DeliveryOptions, destination: Destination) -> None:
    """The command that sends this run's dead letters again, into this run's state."""
    if summary.dead_letter_file:
        summary.replay_command = replay_command(
            summary.dead_letter_file,
            endpoint=delivery.endpoint,
            destination=destination,
            state_dir=delivery.state_dir,
        )


async def _deliver_feeds(
    feeds: Iterator[Feed],
    *,
    identity: RunIdentity,
    destination: Destination,
    action: Action | None,
    delivery: DeliveryOptions,
    summary: Summary,
    max_bytes: int | None = None,
    progress: DeliveryProgress | None = None,
    total: int | None = None,
    control: DeliveryControl | None = None,
) -> None:
    """Send `feeds` request by request, or as the API's bulk uploads when `action` is one."""
    if action is None:
        await deliver(
            feeds,
            identity=identity,
            destination=destination,
            options=delivery,
            summary=summary,
            progress=progress,
            total=total,
            control=control,
        )
        return
    from importer.delivery.bulk import deliver_uploads  # the upload machinery only when used

    await deliver_uploads(
        feeds,
        identity=identity,
        destination=destination,
        action=action,
        options=delivery,
        summary=summary,
        max_bytes=max_bytes,
        progress=progress,
        total=total,
        control=control,
    )


def _chunk_bytes(mapping: Mapping) -> int | None:
    """The mapping's `chunk_mb` option in bytes, when it sets one."""
    chunk_mb = mapping.options.get("chunk_mb")
    return chunk_mb * 1_000_000 if isinstance(chunk_mb, int) else None


def _batch_action(destination: Destination, feed: Feed | None) -> Action | None:
    """The action delivered as jobs that a payload file's first request calls, if it is one."""
    if feed is None or not feed.frame.height:
        return None
    call = (feed.frame[METHOD][0], feed.frame[PATH][0])
    return next(
        (
            action
            for action in destination.actions.values()
            if action.bulk is not None and (action.method, action.path) == call
        ),
        None,
    )


def _only_call(feeds: Iterator[Feed], action: Action, payloads: Path) -> Iterator[Feed]:
    """`feeds`, refusing a request of any other call: jobs take rows of one call only."""
    for feed in feeds:
        other = feed.frame.filter((pl.col(METHOD) != action.method) | (pl.col(PATH) != action.path))
        if other.height:
            raise InputError(
                f"{payloads}, line {other[LINE][0]}: {other[METHOD][0]} {other[PATH][0]} in a "
                f"file of {action.method} {action.path} rows, which are delivered as jobs: "
                "replay each call's lines from a file of their own"
            )
        yield feed
