"""Deliver request bodies: skip what the checkpoint says is done, send the rest, record each end.

A row is marked done only after the API acknowledged it; a row the API refuses for good goes to
the dead-letter file first and is then marked failed, so a crash between the two re-sends it
rather than losing it. The marks of one turn of the event loop reach the OS together, in one
write early in the next turn (so after kill -9 the next run re-sends the requests in flight and
at most those answered in the turn it struck: never more than twice --concurrency); the
dead-letter file and the checkpoint are fsynced together, off the event loop, every SYNC_EVERY
results or SYNC_INTERVAL_S seconds, and at the end (so a power cut loses at most that much,
which is then re-sent).

Three parts: a RequestFeed turns the input batches into requests (reading the next batch in a
worker thread while the current one is sent, as Polars releases the GIL, so the event loop keeps
sockets busy; with `order_time`, in each user's time order), send_all sends them, and a Recorder
files each result. The caller ends a run
early through a DeliveryControl (the CLI wires SIGINT and SIGTERM to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import IO, TYPE_CHECKING

import polars as pl

from importer.columns import BODY, LINE, METHOD, PATH, ROUTE
from importer.delivery.options import SendOptions
from importer.destinations import Action, Destination
from importer.errors import ImporterError, TokenRefusedError
from importer.files import open_output
from importer.model import Request, Result
from importer.outcome import Summary
from importer.payloads.payload_file import dead_letter_line
from importer.state.checkpoint import CheckpointLog
from importer.state.facts import JobIdentity
from importer.state.layout import DEAD_LETTER_NAME, ORDER_SPILL_NAME

if TYPE_CHECKING:
    from importer.delivery.send import SendStats

SYNC_EVERY = 2_000
SYNC_INTERVAL_S = 0.5
# RequestFeed's working columns for --order time.
_INPUT, _NAME, _TIME, _POS, _SEQ, _RELEASE = (
    "__input",
    "__name",
    "__time",
    "__pos",
    "__seq",
    "__release",
)


@dataclass(frozen=True, slots=True)
class Feed:
    """Bodies of one input, ready to send: LINE, BODY, METHOD and PATH columns."""

    fingerprint: str
    name: str
    frame: pl.DataFrame


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryOptions:
    """Where to send and where to keep state; `token` is None only until the embedded mock starts.

    `workers` is how many processes send (1: this one; more: importer.delivery.workers, each user's rows
    through one of them by the ROUTE column). `checkpoint=False` is for benchmarks only: the
    checkpoint log is neither read nor written (every row is sent, nothing is resumable), so a
    run shows what the log costs.
    """

    endpoint: str
    token: str | None
    state_dir: Path
    fresh: bool = False
    dead_letter: Path | None = None
    send: SendOptions = field(default_factory=SendOptions)
    workers: int = 1
    checkpoint: bool = True
    # For actions delivered as jobs: the first wait before asking how a job is doing (then
    # 1.5 times longer each time), and how long to wait while another job holds the key.
    poll_s: float = 1.0
    busy_wait_s: float = 3600.0
    # With send.per_user_order: the body path of the time each user's rows are sent by
    # (--order time, from order_time_path); None: in the order of the input.
    order_time: str | None = None

    @property
    def real_token(self) -> str:
        """The token to send: a run reaches delivery with one (the embedded mock's included)."""
        if self.token is None:
            # An internal invariant, not a user's mistake: a missing token is refused first.
            raise AssertionError(
                "delivery needs a token; the embedded mock's is set when it starts"
            )
        return self.token

    @property
    def dead_letter_path(self) -> Path:
        """The dead-letter file: the one asked for, else one in the state directory."""
        return self.dead_letter or self.state_dir / DEAD_LETTER_NAME


class DeliveryProgress:
    """Callbacks the CLI draws; the defaults do nothing."""

    def begin(self, total: int | None) -> None:
        """Sending starts; `total` rows at most will be sent."""

    def result(self, *, delivered: bool, retries: int) -> None:
        """One row ended."""

    def skip(self, rows: int) -> None:
        """Rows that will not be sent: done by an earlier run, rejected, or blank."""

    def notice(self, message: str) -> None:
        """Something the user should read now (an interruption, a stop)."""

    def retry(self, message: str) -> None:
        """A request will be tried again: where it came from, why, and when."""

    def end(self) -> None:
        """Sending ended."""


class DeliveryControl:
    """The caller's hold on a delivery it may cut short (the CLI wires SIGINT and SIGTERM to it).

    Setting `stop` lets the requests in flight finish, saves, and returns; `sync()` saves every
    result recorded so far at once, for a caller about to quit without waiting for them.
    """

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self._recorder: Recorder | None = None

    def sync(self) -> None:
        """Make every result recorded so far durable; nothing to do before the delivery opened
        its files or after it closed them."""
        if self._recorder is not None:
            self._recorder.sync()

    @contextlib.contextmanager
    def recording(self, recorder: Recorder) -> Iterator[None]:
        """Let `sync()` reach `recorder` while it is open."""
        self._recorder = recorder
        try:
            yield
        finally:
            self._recorder = None


class DeadLetters:
    """The dead-letter file: payload-file lines plus the final status and error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None
        self.count = 0

    def write(self, result: Result) -> None:
        """Append one undeliverable request (its body has no credential in it)."""
        if self._handle is None:
            self._handle = open_output(self.path, "ab")
        self._handle.write(dead_letter_line(result))
        self._handle.flush()  # before the checkpoint marks the row failed, never after
        self.count += 1

    def sync(self) -> None:
        """Make every line written so far durable."""
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def fileno(self) -> int | None:
        """The open file's descriptor, for an fsync elsewhere; None before the first line."""
        return None if self._handle is None else self._handle.fileno()

    def close(self) -> None:
        """Sync and close."""
        if self._handle is not None:
            self.sync()
            self._handle.close()
            self._handle = None


class Recorder:
    """Records the end of each request where it belongs: the checkpoint, the dead-letter file,
    the summary's counts and the progress; and makes them durable together, in groups.

    Marks are handed to the OS in one write per turn of the event loop (a group commit): one
    write per acknowledgement cost more CPU than the rest of recording it. `checkpoint` None
    (a benchmark's) records no marks at all.
    """

    def __init__(
        self,
        checkpoint: CheckpointLog | None,
        dead: DeadLetters,
        *,
        summary: Summary,
        progress: DeliveryProgress,
    ) -> None:
        self.checkpoint = checkpoint
        self.dead = dead
        self._summary = summary
        self._progress = progress
        self._results = 0
        self._flush_due = False
        self._flush_error: BaseException | None = None
        self._sync_due = asyncio.Event()

    def record(self, result: Result) -> None:
        """Mark one row done, or dead-letter it and then mark it failed."""
        if self._flush_error is not None:
            raise self._flush_error  # the marks cannot reach the log: end the run
        request = result.request
        checkpoint = self.checkpoint
        if result.delivered:
            if checkpoint is not None:
                checkpoint.mark_done(request.input_id, request.line)
            self._summary.rows_sent += 1
        else:
            self.dead.write(result)
            where = f"{request.source_file}, line {request.line}"
            self._summary.add_dead(result.status, result.error, where=where)
            if checkpoint is not None:
                checkpoint.mark_failed(
                    request.input_id, request.line, result.status, result.error or ""
                )
            self._summary.rows_failed += 1
        if checkpoint is not None and not self._flush_due:
            self._schedule_flush()
        self._results += 1
        self._progress.result(delivered=result.delivered, retries=result.attempts - 1)
        if self._results % SYNC_EVERY == 0:
            self._sync_due.set()

    def _schedule_flush(self) -> None:
        """Write this turn's marks first thing in the next turn; at once outside an event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        self._flush_due = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        # Run by the event loop, which would only log an error: keep it for record() to raise.
        self._flush_due = False
        if self.checkpoint is None or self.checkpoint.closed:
            return  # close() wrote every mark
        try:
            self.checkpoint.flush()
        except Exception as exc:
            self._flush_error = exc

    def sync(self) -> None:
        """Make every dead letter and mark so far durable."""
        self.dead.sync()
        if self.checkpoint is not None:
            self.checkpoint.sync()

    async def sync_every(self, seconds: float) -> None:
        """Sync every `seconds`, or sooner after SYNC_EVERY results, until cancelled, so a power
        cut loses little. The fsync runs in a thread: on the event loop its wait for the disk
        held up every socket (a tenth of the run, measured on a busy disk)."""
        while True:
            # Not wait_for: on Python 3.11 it can swallow a cancel that lands as the wait ends.
            due = asyncio.ensure_future(self._sync_due.wait())
            try:
                await asyncio.wait((due,), timeout=seconds)
            finally:
                due.cancel()
            self._sync_due.clear()
            if self.checkpoint is not None:  # dead letters are flushed as they are written
                self.checkpoint.flush()
            # What was handed to the OS above is durable when the thread returns.
            syncing = asyncio.ensure_future(asyncio.to_thread(self._fsync))
            try:
                await asyncio.shield(syncing)
            except asyncio.CancelledError:
                # A thread cannot be stopped: let it end before anyone closes the files.
                await asyncio.gather(syncing, return_exceptions=True)
                raise

    def _fsync(self) -> None:
        for fd in (self.dead.fileno(), self.checkpoint.fileno() if self.checkpoint else None):
            if fd is not None:
                os.fsync(fd)

    def close(self) -> None:
        """Sync and close the dead-letter file and the checkpoint."""
        try:
            self.dead.close()
        finally:
            if self.checkpoint is not None:
                self.checkpoint.close()


class RequestFeed:
    """The Requests of `feeds` not done yet, for send_all.

    The next batch is read in a worker thread (Polars releases the GIL) while the current one is
    sent, so the sockets never wait for a batch. Each input is registered with the checkpoint,
    the rows it says are done are skipped, and the progress moves past every row that will not be
    sent. `checkpoint` None (a benchmark's) skips nothing.

    With `order_time` (a body path) each user's rows come in the order of that time (ties in
    input order) rather than the input's: see `_by_time`. Its files are kept in `spill_dir`.
    """

    def __init__(
        self,
        feeds: Iterator[Feed],
        *,
        checkpoint: CheckpointLog | None,
        summary: Summary,
        progress: DeliveryProgress,
        order_time: str | None = None,
        time_format: str = "",
        spill_dir: Path | None = None,
    ) -> None:
        self._feeds = feeds
        self._checkpoint = checkpoint
        self._summary = summary
        self._progress = progress
        self._reading: asyncio.Future[Feed | None] | None = None
        self._loading: asyncio.Future[pl.DataFrame] | None = None  # a spill file, read back
        self._registered: set[str] = set()
        self._shown = 0
        self._order_time = order_time
        self._time_format = time_format
        self._spill_dir = spill_dir
        self.held_most = 0  # with order_time: the most rows held back at once

    async def requests(self) -> AsyncIterator[Request]:
        """Every request to send, batch by batch."""
        if self._order_time is not None:
            async with contextlib.aclosing(self._by_time(self._order_time)) as ordered:
                async for request in ordered:
                    yield request
            return
        self._shown = self._not_sent()
        self._reading = self._read_next()
        while True:
            feed = await asyncio.shield(self._reading)
            if feed is None:
                self._progress.skip(self._not_sent() - self._shown)
                return
            self._reading = self._read_next()
            todo = self._todo(feed)
            for request in _requests_of(todo, feed.fingerprint, feed.name):
                yield request

    def _todo(self, feed: Feed) -> pl.DataFrame:
        """The rows of `feed` the checkpoint does not hold as done; moves the progress past the
        others."""
        todo = feed.frame
        checkpoint = self._checkpoint
        if checkpoint is not None:
            if feed.fingerprint not in self._registered:
                checkpoint.register_input(feed.name, feed.fingerprint)
                self._registered.add(feed.fingerprint)
            done = checkpoint.done_mask(feed.fingerprint, todo[LINE])
            skipped = int(done.sum())
            if skipped:
                self._summary.rows_skipped += skipped
                todo = todo.filter(~done)
        # Counts of the batch being read may move meanwhile; the last skip() settles them.
        self._progress.skip(self._not_sent() - self._shown)
        self._shown = self._not_sent()
        return todo

    async def _by_time(self, path: str) -> AsyncIterator[Request]:
        """The rows not done, each user's in time order: a first pass keeps them in spill files
        and ranks them, the second sends each as soon as every earlier one of its user went.

        The time cannot be known before the whole input is read: a user's earliest row may be
        its last line. A row whose user has an earlier row further down the input is held back
        (in memory) until that row came; a file sorted by time holds none (`held_most`).
        """
        if self._spill_dir is None:
            raise ValueError("order_time needs a spill_dir")
        shutil.rmtree(self._spill_dir, ignore_errors=True)  # a killed run's
        self._spill_dir.mkdir(parents=True)
        # Nothing is sent before the first pass ends, so its writes may hold the event loop.
        self._shown = self._not_sent()
        chunks: list[tuple[Path, int]] = []
        keys: list[pl.DataFrame] = []
        self._reading = self._read_next()
        while (feed := await asyncio.shield(self._reading)) is not None:
            self._reading = self._read_next()
            todo = self._todo(feed)
            if not todo.height:
                continue
            todo = todo.with_columns(
                pl.lit(feed.fingerprint).alias(_INPUT), pl.lit(feed.name).alias(_NAME)
            )
            file = self._spill_dir / f"{len(chunks)}.arrow"
            todo.write_ipc(file)
            chunks.append((file, todo.height))
            keys.append(todo.select(_route_key(todo), _time_key(path, self._time_format)))
        self._progress.skip(self._not_sent() - self._shown)
        if not chunks:
            return
        order = release_order(pl.concat(keys))
        del keys
        held: pl.DataFrame | None = None
        start = 0
        for file, rows in chunks:
            self._loading = asyncio.ensure_future(asyncio.to_thread(pl.read_ipc, file))
            frame = await asyncio.shield(self._loading)
            frame = pl.concat([frame, order.slice(start, rows)], how="horizontal")
            start += rows
            # Every row released by one of this chunk's rows goes now, in its user's time order.
            late = pl.col(_RELEASE) >= start
            both = frame if held is None else pl.concat([held, frame], how="vertical_relaxed")
            ready = both.filter(~late).sort(_RELEASE, _SEQ)
            held = both.filter(late)
            self.held_most = max(self.held_most, held.height)
            for input_id, name, part in _by_input(ready):
                for request in _requests_of(part, input_id, name):
                    yield request

    def _read_next(self) -> asyncio.Future[Feed | None]:
        return asyncio.ensure_future(asyncio.to_thread(next, self._feeds, None))

    async def settle(self) -> None:
        """Wait for the batch being read, if one is, and remove the spill files. A thread cannot
        be cancelled: when the run stops while one is busy, this waits for it, so nobody closes
        or reads `feeds` under it. Its result or error was already seen otherwise."""
        for reading in (self._reading, self._loading):
            if reading is not None:
                await asyncio.gather(reading, return_exceptions=True)
        if self._order_time is not None and self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)

    def _not_sent(self) -> int:
        summary = self._summary
        return summary.rows_skipped + summary.rows_rejected + summary.blank_lines


def _requests_of(todo: pl.DataFrame, fingerprint: str, name: str) -> Iterator[Request]:
    """The Requests of one input's rows, in the frame's order."""
    routes = todo[ROUTE].to_list() if ROUTE in todo.columns else itertools.repeat(0, todo.height)
    for line, body, method, path, route in zip(
        todo[LINE].to_list(),
        todo[BODY].cast(pl.Binary).to_list(),
        _values(todo[METHOD]),
        _values(todo[PATH]),
        routes,
        strict=True,
    ):
        yield Request(method, path, body, fingerprint, name, line, route)


def _by_input(frame: pl.DataFrame) -> Iterator[tuple[str, str, pl.DataFrame]]:
    """`frame` cut into runs of rows of one input, in order: rows held back from an earlier
    input may go out among another's."""
    if not frame.height:
        return
    runs = frame.select((pl.col(_INPUT) != pl.col(_INPUT).shift()).fill_null(True).cum_sum())
    for (_,), part in frame.with_columns(runs.to_series().alias("__run")).group_by(
        "__run", maintain_order=True
    ):
        yield part[_INPUT][0], part[_NAME][0], part


def _route_key(frame: pl.DataFrame) -> pl.Expr:
    return pl.col(ROUTE) if ROUTE in frame.columns else pl.lit(0, pl.UInt64).alias(ROUTE)


def _time_key(path: str, time_format: str) -> pl.Expr:
    """The time at `path` in each body (a row without one sorts first)."""
    text = pl.col(BODY).str.json_path_match("$." + path)
    when = text.str.to_datetime(time_format, strict=False) if time_format else text
    return when.alias(_TIME)


def release_order(keys: pl.DataFrame) -> pl.DataFrame:
    """For rows of ROUTE and _TIME, in input order: _SEQ, each row's place in the (route, time,
    input position) order, and _RELEASE, the input position after which it may go: the last
    position among its user's rows up to it in that order.

    Sending the rows read so far with _RELEASE reached, sorted by (_RELEASE, _SEQ), gives each
    user's rows in time order: all rows of one _RELEASE are the user of the row at it.
    """
    return (
        keys.with_row_index(_POS)
        .sort(ROUTE, _TIME, _POS, nulls_last=False)
        .with_row_index(_SEQ)
        .with_columns(pl.col(_POS).cum_max().over(ROUTE).alias(_RELEASE))
        .sort(_POS)
        .select(_RELEASE, _SEQ)
    )


def order_time_path(action: Action) -> str | None:
    """The body path of the time an action's rows are ordered by with --order time: its one
    required time field (an event's original time); None when it has none."""
    required = [p for p in sorted(action.time_fields) if action.fields[p].required]
    return required[0] if len(required) == 1 else None


def _values(column: pl.Series) -> Iterator[str] | list[str]:
    """A column's values as Python strings; one value repeated when the column holds only one
    (an action's method and path), rather than a string object per row."""
    if len(column) and column.n_unique() == 1:
        return itertools.repeat(column[0], len(column))
    return column.to_list()


def stop_error(reason: str | None, status: int | None) -> ImporterError | None:
    """Why the run stopped, as the error it is: a 401 is a refused token."""
    if reason is None:
        return None
    if status == HTTPStatus.UNAUTHORIZED:
        return TokenRefusedError(reason)
    return ImporterError(reason)


async def deliver(
    feeds: Iterator[Feed],
    *,
    identity: JobIdentity,
    destination: Destination,
    options: DeliveryOptions,
    summary: Summary,
    progress: DeliveryProgress | None = None,
    total: int | None = None,
    control: DeliveryControl | None = None,
) -> Summary:
    """Send every body of `feeds` not yet done under `identity`, and fill in `summary`.

    `summary.stop` is set when the API ended the run (a TokenRefusedError for a refused token,
    an ImporterError for a redirect); `summary.interrupted` when the caller set `control.stop`.
    """
    progress = progress or DeliveryProgress()
    control = control or DeliveryControl()
    checkpoint: CheckpointLog | None = None
    if options.checkpoint:
        checkpoint = CheckpointLog.open(options.state_dir, job=identity, fresh=options.fresh)
        summary.warnings.extend(checkpoint.warnings)
    recorder = Recorder(
        checkpoint, DeadLetters(options.dead_letter_path), summary=summary, progress=progress
    )
    feed = RequestFeed(
        feeds,
        checkpoint=checkpoint,
        summary=summary,
        progress=progress,
        order_time=options.order_time,
        time_format=destination.time_format,
        spill_dir=options.state_dir / ORDER_SPILL_NAME,
    )
    tick = asyncio.create_task(recorder.sync_every(SYNC_INTERVAL_S))
    try:
        with control.recording(recorder):
            progress.begin(total)
            stats = await _sender(options.workers)(
                feed.requests(),
                endpoint=options.endpoint,
                token=options.real_token,
                destination=destination,
                options=options.send,
                on_result=recorder.record,
                on_retry=lambda request, message: progress.retry(
                    f"{request.source_file}, line {request.line}: {message}"
                ),
                stop=control.stop,
            )
            progress.end()
    finally:
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
        await feed.settle()
        recorder.close()
    summary.requests += stats.requests
    summary.retries += stats.retries
    summary.stop = stop_error(stats.stopped_reason, stats.stopped_status)
    summary.interrupted = control.stop.is_set()
    if feed.held_most:
        summary.notes.append(
            f"--order time held up to {feed.held_most:,} rows in memory until an earlier row of "
            "their user came: the input is not in time order"
        )
    if stats.abandoned:
        summary.warnings.append(
            f"{stats.abandoned} rows were sent but got no answer before the run stopped; the next "
            "run sends them again, so the API may receive them twice"
        )
    if recorder.dead.count:
        summary.dead_letter_file = str(recorder.dead.path)
    return summary


def _sender(workers: int) -> Callable[..., Awaitable[SendStats]]:
    """send_all in this process, or the same spread over `workers` sender processes."""
    if workers == 1:
        from importer.delivery.send import send_all  # the HTTP client only for a run that sends

        return send_all
    from importer.delivery.workers import send_across_workers  # subprocess machinery only when used

    return functools.partial(send_across_workers, workers=workers)


def body_frame(frame: pl.DataFrame, *, method: str, path: str) -> pl.DataFrame:
    """Add the METHOD and PATH of one action to a frame of LINE and BODY."""
    return frame.with_columns(pl.lit(method).alias(METHOD), pl.lit(path).alias(PATH))
