"""A command's frame: the one place that turns the core's errors and interrupts into messages and
exit codes, and wires Ctrl-C and SIGTERM to a run's drain.

Every command uses it, so the sending machinery (which loads Polars) is imported by the functions
that start a run, not here: `mock-server` and `status` start without it (tests/test_startup.py)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from importer.api.report import delivery_exit_code
from importer.cli.early import asks_json
from importer.cli.events import (
    EVENTS_KEY,
    EventLog,
    current_event_log,
    start_event,
)
from importer.cli.exit_codes import EXIT_FATAL, EXIT_INTERRUPTED
from importer.cli.progress import (
    BarDelivery,
    EventDelivery,
    delivery_progress,
    read_progress,
    tick,
)
from importer.errors import ImporterError, OptionError
from importer.outcome import JobSummary, Summary

if TYPE_CHECKING:
    from importer.api.requests import Front
    from importer.delivery.deliver import DeliveryControl

T = TypeVar("T")


def fail(exc: ImporterError) -> NoReturn:
    if isinstance(exc, OptionError):
        raise click.UsageError(str(exc)) from None
    events = current_event_log()
    if events is not None:
        events.error(str(exc), hint=exc.hint, exit_code=EXIT_FATAL)
    else:
        click.echo(f"Error: {exc}", err=True)
        if exc.hint:
            click.echo(f"Hint: {exc.hint}", err=True)
    sys.exit(EXIT_FATAL)


def warning(message: str) -> None:
    """A warning on stderr: a line, or with --log-format json a `warning` event."""
    events = current_event_log()
    if events is not None:
        events.emit("warning", message=message)
    else:
        click.echo(f"warning: {message}", err=True)


def interrupted(
    what: str = "nothing was sent; run the command again to check every row",
) -> NoReturn:
    """Ctrl-C outside the sending loop (which drains and saves on its own): say where things
    stand and exit 130, not click's 'Aborted!' and 1."""
    events = current_event_log()
    if events is not None:
        events.error(f"interrupted: {what}", hint=None, exit_code=EXIT_INTERRUPTED)
    else:
        click.echo(f"\ninterrupted: {what}", err=True)
    sys.exit(EXIT_INTERRUPTED)


def interrupted_delivery(state_dir: Path) -> NoReturn:
    interrupted(
        f"the checkpoint in {state_dir} holds every row the API acknowledged; "
        "run the same command again to go on"
    )


def exit_code(summary: Summary | JobSummary) -> int:
    """A delivery's exit code, as the Python API's Report has it: 1 stopped (the stop is the
    error), 130 interrupted, 3 rows rejected or failed, else 0."""
    return delivery_exit_code(summary)


class LoggedCommand(click.Command):
    """A command whose usage errors (exit 2) are, with --log-format json, an `error` event and
    nothing else on stderr: a log collector reads one JSON object a line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse as click does; a usage error becomes an event when JSON was asked for."""
        asked = asks_json(list(args), os.environ)  # click's parser consumes the list
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _usage_event(ctx, exc, asked=asked)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a usage error it raises becomes an event too."""
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _usage_event(ctx, exc, asked=False)
            raise


def _usage_event(ctx: click.Context, exc: click.UsageError, *, asked: bool) -> None:
    """Write a usage error as an `error` event and exit with its code, when there is a JSON
    event writer (or the command line asked for one before it could be made)."""
    events = ctx.meta.get(EVENTS_KEY) or (EventLog(sys.stderr) if asked else None)
    if events is None:
        return
    events.error(
        exc.format_message(), hint=f"importer {ctx.info_name} --help", exit_code=exc.exit_code
    )
    raise click.exceptions.Exit(exc.exit_code)


def deliver_with_signals(
    job: Callable[[DeliveryControl], Coroutine[Any, Any, T]],
    progress: BarDelivery | EventDelivery,
) -> T:
    """Run a delivery in its own event loop with SIGINT and SIGTERM wired to it: the first lets
    the requests in flight finish and saves; a second saves what was acknowledged and quits."""
    from importer.api.runner import run_delivery

    ticking = isinstance(progress, EventDelivery) and progress.every > 0
    return run_delivery(
        job,
        notice=progress.notice,
        abandon=progress.abandon,
        beside=(lambda: tick(progress)) if ticking else None,  # type: ignore[arg-type]
    )


def cli_front(quiet: bool, *, ask: Callable[[str], bool] | None = None) -> Front:
    """What a command shows of a run: bars or JSON events, the signal frame, and the events of
    its start, its steps and its warnings."""
    from importer.api.requests import Front

    bar = delivery_progress(quiet)
    events = current_event_log()

    def step(name: str, status: str, **details: Any) -> None:
        if events is not None:
            events.emit("step", step=name, status=status, **details)

    return Front(
        deliver=lambda job: deliver_with_signals(job, bar),
        read=read_progress(quiet),
        delivery=bar,
        start=start_event,
        step=None if events is None else step,
        warning=warning,
        ask=ask,
    )


def accept_interrupts() -> None:
    """From here on Ctrl-C raises KeyboardInterrupt, which the command turns into its answer."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
