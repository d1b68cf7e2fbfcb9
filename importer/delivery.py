"""Deliver request bodies: skip what the checkpoint says is done, send the rest, record each end.

A row is marked done only after the API acknowledged it; a row the API refuses for good goes to
the dead-letter file first and is then marked failed, so a crash between the two re-sends it
rather than losing it. Each mark reaches the OS at once (so kill -9 loses none); the dead-letter
file and the checkpoint are fsynced together every SYNC_EVERY results or SYNC_INTERVAL_S
seconds, and at the end (so a power cut loses at most that much, which is then re-sent).

Three parts: a RequestFeed turns the input batches into requests (reading the next batch in a
worker thread, as Polars releases the GIL, so the event loop keeps sockets busy), send_all
sends them, and a Recorder files each result. The caller ends a run early through a
DeliveryControl (the CLI wires SIGINT and SIGTERM to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any, cast

import polars as pl

from importer.checkpoint import CheckpointLog, JobIdentity
from importer.columns import METHOD, PATH
from importer.destinations import Destination
from importer.errors import ImporterError, TokenRefusedError
from importer.files import open_output
from importer.mock_server import MockConfig, MockState, embedded_mock
from importer.model import Request, Result, Verdict
from importer.payload import BODY
from importer.payload_file import dead_letter_line
from importer.read import LINE
from importer.report import Summary
from importer.send import SendOptions, send_all

EMBEDDED = "embedded"
EMBEDDED_TOKEN = "embedded-mock-token"
SYNC_EVERY = 2_000
SYNC_INTERVAL_S = 0.5
# Files this module keeps in the state directory beside the checkpoint log.
DEAD_LETTER_NAME = "dead-letters.jsonl"
EMBEDDED_RECORD_NAME = "embedded-received.jsonl"


@dataclass(frozen=True, slots=True)
class Feed:
    """Bodies of one input, ready to send: LINE, BODY, METHOD and PATH columns."""

    fingerprint: str
    name: str
    frame: pl.DataFrame


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryOptions:
    """Where to send and where to keep state; `token` may be None only for the embedded server."""

    endpoint: str
    token: str | None
    state_dir: Path
    fresh: bool = False
    dead_letter: Path | None = None
    send: SendOptions = field(default_factory=SendOptions)

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

    def close(self) -> None:
        """Sync and close."""
        if self._handle is not None:
            self.sync()
            self._handle.close()
            self._handle = None


class Recorder:
    """Records the end of each request where it belongs: the checkpoint, the dead-letter file,
    the summary's counts and the progress; and makes them durable together, in groups."""

    def __init__(
        self,
        checkpoint: CheckpointLog,
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

    def record(self, result: Result) -> None:
        """Mark one row done, or dead-letter it and then mark it failed."""
        request = result.request
        if result.delivered:
            self.checkpoint.mark_done(request.input_id, request.line)
            self._summary.rows_sent += 1
        else:
            self.dead.write(result)
            self.checkpoint.mark_failed(
                request.input_id, request.line, result.status, result.error or ""
            )
            self._summary.rows_failed += 1
        # In the OS at once (fsync comes in groups): a kill -9 then loses no acknowledgement.
        self.checkpoint.flush()
        self._results += 1
        self._progress.result(delivered=result.delivered, retries=result.attempts - 1)
        if self._results % SYNC_EVERY == 0:
            self.sync()

    def sync(self) -> None:
        """Make every dead letter and mark so far durable."""
        self.dead.sync()
        self.checkpoint.sync()

    async def sync_every(self, seconds: float) -> None:
        """Sync every `seconds` until cancelled, so a slow run loses little to a power cut."""
        while True:
            await asyncio.sleep(seconds)
            self.sync()

    def close(self) -> None:
        """Sync and close the dead-letter file and the checkpoint."""
        try:
            self.dead.close()
        finally:
            self.checkpoint.close()


class RequestFeed:
    """The Requests of `feeds` not done yet, for send_all.

    Each next batch is read in a worker thread (Polars releases the GIL), so the event loop keeps
    sockets busy meanwhile. Each input is registered with the checkpoint, the rows it says are
    done are skipped, and the progress moves past every row that will not be sent.
    """

    def __init__(
        self,
        feeds: Iterator[Feed],
        *,
        checkpoint: CheckpointLog,
        summary: Summary,
        progress: DeliveryProgress,
    ) -> None:
        self._feeds = feeds
        self._checkpoint = checkpoint
        self._summary = summary
        self._progress = progress
        self._reading: asyncio.Future[Feed | None] | None = None

    async def requests(self) -> AsyncIterator[Request]:
        """Every request to send, batch by batch."""
        registered: set[str] = set()
        shown = self._not_sent()
        while True:
            self._reading = asyncio.ensure_future(asyncio.to_thread(next, self._feeds, None))
            feed = await asyncio.shield(self._reading)
            if feed is None:
                self._progress.skip(self._not_sent() - shown)
                return
            if feed.fingerprint not in registered:
                self._checkpoint.register_input(feed.name, feed.fingerprint)
                registered.add(feed.fingerprint)
            done = self._checkpoint.done_mask(feed.fingerprint, feed.frame[LINE])
            self._summary.rows_skipped += int(done.sum())
            # The reading thread is idle until the next batch is asked for: the counts hold.
            self._progress.skip(self._not_sent() - shown)
            shown = self._not_sent()
            todo = feed.frame.filter(~done)
            for line, body, method, path in zip(
                todo[LINE].to_list(),
                todo[BODY].cast(pl.Binary).to_list(),
                todo[METHOD].to_list(),
                todo[PATH].to_list(),
                strict=True,
            ):
                yield Request(
                    method=method,
                    path=path,
                    body=body,
                    input_id=feed.fingerprint,
                    source_file=feed.name,
                    line=line,
                )

    async def settle(self) -> None:
        """Wait for the batch being read, if one is. A thread cannot be cancelled: when the run
        stops while one is busy, this waits for it, so nobody closes or reads `feeds` under it.
        Its result or error was already seen otherwise."""
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)

    def _not_sent(self) -> int:
        summary = self._summary
        return summary.rows_skipped + summary.rows_rejected + summary.blank_lines


class _StopWatch:
    """The destination as send_all sees it, noting the status of the first answer that stopped
    the run: SendStats keeps only the stop's text, and a refused token is an error of its own."""

    def __init__(self, destination: Destination) -> None:
        self._destination = destination
        self.stopped_by: int | None = None
        self._stopped = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._destination, name)

    def classify(self, status: int, body: bytes) -> tuple[Verdict, str]:
        """The destination's verdict, unchanged."""
        verdict, message = self._destination.classify(status, body)
        if verdict is Verdict.STOP and not self._stopped:
            self._stopped, self.stopped_by = True, status
        return verdict, message


def _stop_error(reason: str | None, status: int | None) -> ImporterError | None:
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
    With `options.endpoint == "embedded"` the built-in mock server runs inside this event loop
    and `summary.embedded` says what it received.
    """
    progress = progress or DeliveryProgress()
    control = control or DeliveryControl()
    checkpoint = CheckpointLog.open(options.state_dir, job=identity, fresh=options.fresh)
    summary.warnings.extend(checkpoint.warnings)
    recorder = Recorder(
        checkpoint, DeadLetters(options.dead_letter_path), summary=summary, progress=progress
    )
    feed = RequestFeed(feeds, checkpoint=checkpoint, summary=summary, progress=progress)
    watch = _StopWatch(destination)
    tick = asyncio.create_task(recorder.sync_every(SYNC_INTERVAL_S))
    try:
        with control.recording(recorder):
            async with _endpoint(options, destination) as (url, token, mock_state):
                progress.begin(total)
                stats = await send_all(
                    feed.requests(),
                    endpoint=url,
                    token=token,
                    # Stands in for the destination it wraps; only its classify() is its own.
                    destination=cast(Destination, watch),
                    options=options.send,
                    on_result=recorder.record,
                    on_retry=lambda request, message: progress.retry(
                        f"{request.source_file}, line {request.line}: {message}"
                    ),
                    stop=control.stop,
                )
                progress.end()
                if mock_state is not None:
                    summary.embedded = mock_state.stats()
    finally:
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
        await feed.settle()
        recorder.close()
    summary.requests += stats.requests
    summary.retries += stats.retries
    summary.stop = _stop_error(stats.stopped_reason, watch.stopped_by)
    summary.interrupted = control.stop.is_set()
    if stats.abandoned:
        summary.warnings.append(
            f"{stats.abandoned} rows were sent but got no answer before the run stopped; the next "
            "run sends them again, so the API may receive them twice"
        )
    if recorder.dead.count:
        summary.dead_letter_file = str(recorder.dead.path)
    return summary


@contextlib.asynccontextmanager
async def _endpoint(
    options: DeliveryOptions, destination: Destination
) -> AsyncIterator[tuple[str, str, MockState | None]]:
    if options.endpoint != EMBEDDED:
        if options.token is None:
            # An internal invariant, not a user's mistake: the CLI refuses a missing token first.
            raise AssertionError("the CLI resolves a token for every real endpoint")
        yield options.endpoint, options.token, None
        return
    token = options.token or EMBEDDED_TOKEN
    record = options.state_dir / EMBEDDED_RECORD_NAME
    config = MockConfig(token=token, record=record)
    async with embedded_mock(config, api=destination.mock()) as mock:
        yield mock.url, token, mock.state


def body_frame(frame: pl.DataFrame, *, method: str, path: str) -> pl.DataFrame:
    """Add the METHOD and PATH of one action to a frame of LINE and BODY."""
    return frame.with_columns(pl.lit(method).alias(METHOD), pl.lit(path).alias(PATH))
