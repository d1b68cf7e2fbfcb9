"""What a person sees while a command works: a tqdm bar per input while reading, one of rows
acknowledged while sending (silent with --quiet or off a terminal), or with --log-format json the
same as progress events."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from importer.cli.events import (
    DeliveryEvents,
    ReadEvents,
    current_event_log,
    progress_every,
)
from importer.progress import DeliveryProgress

if TYPE_CHECKING:
    from tqdm import tqdm  # type: ignore[import-untyped]

from importer.cli.exit_codes import EXIT_INTERRUPTED

RETRY_NOTICE_S = 10.0


class BarProgress:
    """A tqdm bar per input on stderr; silent with --quiet or when stderr is not a terminal."""

    def __init__(self, *, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: tqdm[Any] | None = None

    def begin(self, name: str, total: int | None) -> None:
        """Start a bar for one input."""
        if self._enabled:
            from tqdm import tqdm  # only when a bar is drawn: start-up stays short

            self._bar = tqdm(
                total=total,
                desc=Path(name).name,
                unit=" rows",
                unit_scale=True,
                file=sys.stderr,
                leave=False,
            )

    def advance(self, rows: int) -> None:
        """Move the bar on."""
        if self._bar is not None:
            self._bar.update(rows)

    def end(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def read_progress(quiet: bool) -> BarProgress | ReadEvents:
    events = current_event_log()
    if events is not None:
        return ReadEvents(events, every=progress_every())
    return BarProgress(enabled=not quiet and sys.stderr.isatty())


class BarDelivery(DeliveryProgress):
    """A tqdm bar of rows acknowledged, with retries and failures, on stderr."""

    def __init__(self, *, enabled: bool, retries_shown: bool = True) -> None:
        self._enabled = enabled
        self._bar: tqdm[Any] | None = None
        self._retries = 0
        self._failed = 0
        self._rejected = 0
        self._seen = 0
        self._retries_shown = retries_shown
        self._retry_shown_at: float | None = None
        self._retries_unshown = 0

    def begin(self, total: int | None) -> None:
        """Start the bar."""
        if self._enabled:
            from tqdm import tqdm  # only when a bar is drawn: start-up stays short

            self._bar = tqdm(
                total=total, desc="sent", unit=" rows", unit_scale=True, file=sys.stderr
            )

    def result(self, *, delivered: bool, retries: int) -> None:
        """Count one row."""
        self._retries += retries
        self._failed += not delivered
        self._seen += 1
        if self._bar is not None:
            self._bar.update(1)
            if self._seen % 500 == 0:
                shown = {"rejected": self._rejected} if self._rejected else {}
                self._bar.set_postfix(
                    retries=self._retries, failed=self._failed, **shown, refresh=False
                )

    def skip(self, rows: int, *, rejected: int = 0, blank: int = 0, failed: int = 0) -> None:
        """Take rows that will not be sent out of the bar's total, so it counts what is sent
        (and ends at its total); rejected rows show beside it."""
        self._rejected += rejected
        if self._bar is not None and (rows or rejected or blank or failed):
            if self._bar.total is not None:
                self._bar.total = max(
                    self._bar.n, self._bar.total - rows - rejected - blank - failed
                )
            if self._rejected:
                self._bar.set_postfix(
                    retries=self._retries,
                    failed=self._failed,
                    rejected=self._rejected,
                    refresh=False,
                )
            self._bar.refresh()

    def notice(self, message: str) -> None:
        """Print a message above the bar."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            click.echo(message, err=True)

    def retry(self, message: str) -> None:
        """Show the first retry, then at most one every RETRY_NOTICE_S: a throttled run of a
        million rows would otherwise print a line per request."""
        if not self._retries_shown:
            return
        now = time.monotonic()
        if self._retry_shown_at is not None and now - self._retry_shown_at < RETRY_NOTICE_S:
            self._retries_unshown += 1
            return
        if self._retries_unshown:
            message += f" (and {self._retries_unshown:,} more retries since the last notice)"
        self._retry_shown_at, self._retries_unshown = now, 0
        self.notice(f"retrying {message}")

    def abandon(self) -> None:
        """Quit at once on a second Ctrl-C (the caller synced what was acknowledged)."""
        self.notice("quit at once; the checkpoint holds every acknowledged row synced so far")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)  # not sys.exit: that would wait for the requests in flight

    def end(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.set_postfix(retries=self._retries, failed=self._failed)
            self._bar.close()
            self._bar = None


class EventDelivery(DeliveryEvents):
    """A delivery's events with --log-format json; a second Ctrl-C quits as BarDelivery's does."""

    def abandon(self) -> None:
        """Quit at once on a second Ctrl-C (the caller synced what was acknowledged)."""
        self.log.error(
            "interrupted: quit at once; the checkpoint holds every acknowledged row synced so far",
            hint=None,
            exit_code=EXIT_INTERRUPTED,
        )
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)  # not sys.exit: that would wait for the requests in flight


def delivery_progress(quiet: bool) -> BarDelivery | EventDelivery:
    """The bar on a terminal, or with --log-format json the events."""
    events = current_event_log()
    if events is not None:
        return EventDelivery(events, every=progress_every(), retry_every=RETRY_NOTICE_S)
    return BarDelivery(enabled=_bar_enabled(quiet), retries_shown=not quiet)


async def tick(progress: EventDelivery) -> None:
    """Progress events on time even while no row ends (a slow API, a background job)."""
    while True:
        await asyncio.sleep(progress.every)
        progress.tick()


def _bar_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()
