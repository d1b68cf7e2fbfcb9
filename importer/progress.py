"""The progress interfaces the core calls, with no-op defaults: what a front end (the CLI's bar,
its JSON events, a Python caller's callback) implements to see a run move."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from importer.outcome import TIMELINE_FIELDS, Summary, Timeline

SENT, FAILED, RETRIES, THROTTLED = range(len(TIMELINE_FIELDS))
# A retry's message names the status first (delivery/send.py and bulk.py: "HTTP 429: ...").
TOO_MANY = re.compile(r"\bHTTP 429\b")


class DeliveryProgress:
    """Callbacks the CLI draws; the defaults do nothing."""

    def begin(self, total: int | None) -> None:
        """Sending starts; `total` rows at most will be sent."""

    def result(self, *, delivered: bool, retries: int) -> None:
        """One row ended."""

    def skip(self, rows: int, *, rejected: int = 0, blank: int = 0, failed: int = 0) -> None:
        """Rows that will not be sent: `rows` done by an earlier run, `rejected` rows rejected,
        `blank` blank lines (neither), `failed` rows an earlier run dead-lettered."""

    def notice(self, message: str) -> None:
        """Something the user should read now (an interruption, a stop)."""

    def retry(self, message: str) -> None:
        """A request will be tried again: where it came from, why, and when."""

    def end(self) -> None:
        """Sending ended."""


class Progress(Protocol):
    """How the core reports progress; the CLI draws it, tests may count it."""

    def begin(self, name: str, total: int | None) -> None:
        """A new input starts; `total` is its row count where known."""

    def advance(self, rows: int) -> None:
        """`rows` more rows were read."""

    def end(self) -> None:
        """The input is done."""


class NoProgress:
    """Progress that goes nowhere."""

    def begin(self, name: str, total: int | None) -> None:
        """Ignore."""

    def advance(self, rows: int) -> None:
        """Ignore."""

    def end(self) -> None:
        """Ignore."""


class TimelineProgress(DeliveryProgress):
    """Passes every callback on to `inner` and counts it into the summary's timeline: the
    sending over time is recorded here, out of the sender's hot path, the same way for every
    front end (bar, JSON events, a Python caller)."""

    def __init__(
        self,
        inner: DeliveryProgress,
        timeline: Timeline,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._timeline = timeline
        self._clock = clock
        self._start = clock()

    def begin(self, total: int | None) -> None:
        """The timeline starts with the sending."""
        self._start = self._clock()
        self._inner.begin(total)

    def result(self, *, delivered: bool, retries: int) -> None:
        """One row delivered or dead-lettered, in this interval."""
        self._timeline.add(self._clock() - self._start, SENT if delivered else FAILED)
        self._inner.result(delivered=delivered, retries=retries)

    def retry(self, message: str) -> None:
        """One retry in this interval; a 429 counts as throttled too."""
        elapsed = self._clock() - self._start
        self._timeline.add(elapsed, RETRIES)
        if TOO_MANY.search(message):
            self._timeline.add(elapsed, THROTTLED)
        self._inner.retry(message)

    def skip(self, rows: int, *, rejected: int = 0, blank: int = 0, failed: int = 0) -> None:
        """Pass on."""
        self._inner.skip(rows, rejected=rejected, blank=blank, failed=failed)

    def notice(self, message: str) -> None:
        """Pass on."""
        self._inner.notice(message)

    def end(self) -> None:
        """Pass on."""
        self._inner.end()

    def __getattr__(self, name: str) -> Any:
        # whatever else the front end's progress offers
        return getattr(self._inner, name)


def record_timeline(progress: DeliveryProgress | None, summary: Summary) -> DeliveryProgress:
    """`progress` (or none) with the sending counted into `summary.timeline`."""
    if summary.timeline is None:
        summary.timeline = Timeline()
    return TimelineProgress(progress or DeliveryProgress(), summary.timeline)
