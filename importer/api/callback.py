"""A Python caller's progress callback: one plain callable receiving `ProgressEvent`s, adapted onto the core's progress interfaces (importer/progress.py) while rows are read and sent.

The callback runs in the thread that does the work (a worker thread when the caller's own loop is
running); an exception it raises ends the run, as any error would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from importer.progress import DeliveryProgress

Stage = Literal["read", "send"]
Kind = Literal["begin", "advance", "end", "result", "skip", "notice", "retry"]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One step of a run, as it happens.

    stage "read" (validate, dry run): `begin` of an input (`file`, its `total` rows where
    known), `advance` by `rows`, `end`. Stage "send" (run, replay): `begin` (`total` rows at
    most), `result` of one row (`delivered`, its `retries`), `skip` of `rows` done before (and
    `rows_rejected`, `blank_lines`, `rows_failed_before` apart), `notice` and `retry` with a `message`, `end`. `rows_done` counts
    the stage's rows so far: read, or ended (delivered or failed).
    """

    stage: Stage
    kind: Kind
    rows: int = 0
    rows_done: int = 0
    total: int | None = None
    file: str | None = None
    delivered: bool | None = None
    retries: int = 0
    message: str | None = None
    # With a `skip`: `rows` were done before; these were rejected, blank, or failed before.
    rows_rejected: int = 0
    blank_lines: int = 0
    rows_failed_before: int = 0


OnProgress = Callable[[ProgressEvent], None]


class ReadCallback:
    """The reading stage's progress (importer.progress.Progress) as events."""

    def __init__(self, callback: OnProgress) -> None:
        self._callback = callback
        self._done = 0
        self._file: str | None = None

    def begin(self, name: str, total: int | None) -> None:
        """An input starts."""
        self._file = name
        self._callback(ProgressEvent("read", "begin", rows_done=self._done, total=total, file=name))

    def advance(self, rows: int) -> None:
        """Rows were read."""
        self._done += rows
        self._callback(
            ProgressEvent("read", "advance", rows=rows, rows_done=self._done, file=self._file)
        )

    def end(self) -> None:
        """The input is done."""
        self._callback(ProgressEvent("read", "end", rows_done=self._done, file=self._file))


class DeliveryCallback(DeliveryProgress):
    """The sending stage's progress (importer.progress.DeliveryProgress) as events."""

    def __init__(self, callback: OnProgress) -> None:
        self._callback = callback
        self._done = 0

    def begin(self, total: int | None) -> None:
        """Sending starts (again for each step of a job file)."""
        self._done = 0
        self._callback(ProgressEvent("send", "begin", total=total))

    def result(self, *, delivered: bool, retries: int) -> None:
        """One row ended."""
        self._done += 1
        self._callback(
            ProgressEvent(
                "send",
                "result",
                rows=1,
                rows_done=self._done,
                delivered=delivered,
                retries=retries,
            )
        )

    def skip(self, rows: int, *, rejected: int = 0, blank: int = 0, failed: int = 0) -> None:
        """Rows that will not be sent: `rows` done before, then rejected, blank and failed
        before as counts of their own."""
        self._callback(
            ProgressEvent(
                "send",
                "skip",
                rows=rows,
                rows_done=self._done,
                rows_rejected=rejected,
                blank_lines=blank,
                rows_failed_before=failed,
            )
        )

    def notice(self, message: str) -> None:
        """Something to read now: an interruption, a stop."""
        self._callback(ProgressEvent("send", "notice", rows_done=self._done, message=message))

    def retry(self, message: str) -> None:
        """A request will be tried again."""
        self._callback(ProgressEvent("send", "retry", rows_done=self._done, message=message))

    def end(self) -> None:
        """Sending ended."""
        self._callback(ProgressEvent("send", "end", rows_done=self._done))
