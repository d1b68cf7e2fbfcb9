"""The progress interfaces the core calls, with no-op defaults: what a front end (the CLI's bar,
its JSON events, a Python caller's callback) implements to see a run move."""

from __future__ import annotations

from typing import Protocol


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
