"""File each result: a delivered row is marked done in the checkpoint; a refused one goes to the dead-letter file, then is marked failed; both reach the disk together."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING

from importer.files import open_output
from importer.model import Result
from importer.outcome import Summary
from importer.payloads.payload_file import dead_letter_line
from importer.state.checkpoint import CheckpointLog

if TYPE_CHECKING:
    pass
from importer.progress import DeliveryProgress

SYNC_EVERY = 2_000


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
