"""Deliver request bodies: skip what the checkpoint says is done, send the rest, record each end.

A row is marked done only after the API acknowledged it; a row the API refuses for good goes to
the dead-letter file first and is then marked failed, so a crash between the two re-sends it
rather than losing it. Each mark reaches the OS at once (so kill -9 loses none); the dead-letter
file and the checkpoint are fsynced together every SYNC_EVERY results or SYNC_INTERVAL_S
seconds, and at the end (so a power cut loses at most that much, which is then re-sent).

Reading and body building run in a worker thread (Polars releases the GIL), so the event loop
keeps sockets busy while the next batch is prepared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import polars as pl

from importer.checkpoint import CheckpointLog, JobIdentity
from importer.destinations import Destination
from importer.mock_server import MockConfig, MockState, embedded_mock
from importer.model import Request, Result
from importer.payload import BODY
from importer.read import LINE
from importer.report import Summary, open_output
from importer.send import SendOptions, send_all

EMBEDDED = "embedded"
EMBEDDED_TOKEN = "embedded-mock-token"
METHOD = "__method"
PATH = "__path"
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
    handle_signals: bool = False

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

    def abandon(self) -> None:
        """A second interrupt: the checkpoint is synced, and the caller may end the process
        now rather than wait for the requests in flight. Returning goes on draining."""

    def end(self) -> None:
        """Sending ended."""


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
        request = result.request
        head = json.dumps({"method": request.method, "path": request.path}, separators=(",", ":"))
        tail = json.dumps(
            {
                "source": {"file": request.source_file, "line": request.line},
                "status": result.status,
                "error": result.error,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        self._handle.write(
            head[:-1].encode() + b',"body":' + request.body + b"," + tail[1:].encode() + b"\n"
        )
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


async def deliver(
    feeds: Iterator[Feed],
    *,
    identity: JobIdentity,
    destination: Destination,
    options: DeliveryOptions,
    summary: Summary,
    progress: DeliveryProgress | None = None,
    total: int | None = None,
) -> Summary:
    """Send every body of `feeds` not yet done under `identity`, and fill in `summary`.

    `summary.stopped` is set when the API ended the run (a refused token, a redirect);
    `summary.interrupted` when a signal did. With `options.endpoint == "embedded"` the built-in
    mock server runs inside this event loop and `summary.embedded` says what it received.
    """
    progress = progress or DeliveryProgress()
    checkpoint = CheckpointLog.open(options.state_dir, job=identity, fresh=options.fresh)
    summary.warnings.extend(checkpoint.warnings)
    dead = DeadLetters(options.dead_letter_path)
    stop = asyncio.Event()
    results = 0

    def sync() -> None:
        dead.sync()
        checkpoint.sync()

    def on_result(result: Result) -> None:
        nonlocal results
        request = result.request
        if result.delivered:
            checkpoint.mark_done(request.input_id, request.line)
            summary.rows_sent += 1
        else:
            dead.write(result)
            checkpoint.mark_failed(
                request.input_id, request.line, result.status, result.error or ""
            )
            summary.rows_failed += 1
        # In the OS at once (fsync comes in groups): a kill -9 then loses no acknowledgement.
        checkpoint.flush()
        results += 1
        progress.result(delivered=result.delivered, retries=result.attempts - 1)
        if results % SYNC_EVERY == 0:
            sync()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            sync()

    # The batch being read in a worker thread. A thread cannot be cancelled: when the run stops
    # while one is busy, deliver() waits for it, so nobody closes or reads `feeds` under it.
    reading: asyncio.Future[Feed | None] | None = None

    def settled() -> int:
        return summary.rows_skipped + summary.rows_rejected + summary.blank_lines

    async def requests() -> AsyncIterator[Request]:
        nonlocal reading
        registered: set[str] = set()
        shown = settled()
        while True:
            reading = asyncio.ensure_future(asyncio.to_thread(next, feeds, None))
            feed = await asyncio.shield(reading)
            if feed is None:
                progress.skip(settled() - shown)
                return
            if feed.fingerprint not in registered:
                checkpoint.register_input(feed.name, feed.fingerprint)
                registered.add(feed.fingerprint)
            done = checkpoint.done_mask(feed.fingerprint, feed.frame[LINE])
            summary.rows_skipped += int(done.sum())
            # The reading thread is idle until the next batch is asked for: the counts hold.
            progress.skip(settled() - shown)
            shown = settled()
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

    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_signal(signum: int) -> None:
        nonlocal interrupts
        interrupts += 1
        summary.interrupted = True
        if interrupts == 1:
            stop.set()
            name = signal.Signals(signum).name
            progress.notice(
                f"{name}: finishing the requests in flight, then saving the checkpoint "
                "(press Ctrl-C again to quit at once)"
            )
            return
        with contextlib.suppress(Exception):
            sync()
        progress.abandon()

    if options.handle_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
    tick = asyncio.create_task(ticker())
    try:
        async with _endpoint(options) as (url, token, mock_state):
            progress.begin(total)
            stats = await send_all(
                requests(),
                endpoint=url,
                token=token,
                destination=destination,
                options=options.send,
                on_result=on_result,
                on_retry=lambda request, message: progress.retry(
                    f"{request.source_file}, line {request.line}: {message}"
                ),
                stop=stop,
            )
            progress.end()
            if mock_state is not None:
                summary.embedded = mock_state.stats()
    finally:
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
        if reading is not None:
            # Its result or error was already seen, unless the run stopped while it was busy.
            await asyncio.gather(reading, return_exceptions=True)
        if options.handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        dead.close()
        checkpoint.close()
    summary.requests += stats.requests
    summary.retries += stats.retries
    summary.stopped = stats.stopped_reason
    if stats.abandoned:
        summary.warnings.append(
            f"{stats.abandoned} rows were sent but got no answer before the run stopped; the next "
            "run sends them again, so the API may receive them twice"
        )
    if dead.count:
        summary.dead_letter_file = str(dead.path)
    return summary


@contextlib.asynccontextmanager
async def _endpoint(
    options: DeliveryOptions,
) -> AsyncIterator[tuple[str, str, MockState | None]]:
    if options.endpoint != EMBEDDED:
        if options.token is None:
            raise AssertionError("the CLI resolves a token for every real endpoint")
        yield options.endpoint, options.token, None
        return
    token = options.token or EMBEDDED_TOKEN
    record = options.state_dir / EMBEDDED_RECORD_NAME
    async with embedded_mock(MockConfig(token=token, record=record)) as mock:
        yield mock.url, token, mock.state


def body_frame(frame: pl.DataFrame, *, method: str, path: str) -> pl.DataFrame:
    """Add the METHOD and PATH of one action to a frame of LINE and BODY."""
    return frame.with_columns(pl.lit(method).alias(METHOD), pl.lit(path).alias(PATH))
