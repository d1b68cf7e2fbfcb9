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
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from importer.columns import METHOD, PATH
from importer.delivery.feed import RequestFeed
from importer.delivery.options import DeliveryOptions, Feed
from importer.delivery.record import DeadLetters, Recorder
from importer.delivery.throttle import remember_starts
from importer.destinations import Destination
from importer.errors import ImporterError, TokenRefusedError
from importer.outcome import Summary
from importer.progress import DeliveryProgress, record_timeline
from importer.state.checkpoint import CheckpointLog
from importer.state.facts import RunIdentity
from importer.state.layout import ORDER_SPILL_NAME

if TYPE_CHECKING:
    from importer.delivery.send import SendStats

SYNC_INTERVAL_S = 0.5


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
    identity: RunIdentity,
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
    progress = record_timeline(progress, summary)
    control = control or DeliveryControl()
    checkpoint: CheckpointLog | None = None
    if options.checkpoint:
        checkpoint = CheckpointLog.open(options.state_dir, job=identity, fresh=options.fresh)
        summary.warnings.extend(checkpoint.warnings)
    recorder = Recorder(
        checkpoint, DeadLetters(options.dead_letter_path), summary=summary, progress=progress
    )
    # Read under the checkpoint's lock: no other run of this state directory writes the log.
    send_options = remember_starts(options.send, rate_dir_of(options))
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
                options=send_options,
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
    if feed.error is not None and not stats.requests:
        raise feed.error  # nothing went out: the error alone says it all, as before reading
    summary.requests += stats.requests
    summary.retries += stats.retries
    # A damaged batch found once rows were sent ends the run with its account (point 4).
    summary.stop = stop_error(stats.stopped_reason, stats.stopped_status) or feed.error
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


def rate_dir_of(options: DeliveryOptions) -> Path | None:
    """Where the API's recent request starts are kept: none for a run without a checkpoint."""
    if not options.checkpoint:
        return None
    return options.rate_dir or options.state_dir


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
