"""A command's frame: the one place that turns the core's errors and interrupts into messages and exit codes, and wires Ctrl-C and SIGTERM to a run's drain."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from importer.cli.events import (
    EVENTS_KEY,
    JSON,
    EventLog,
    current_event_log,
)
from importer.cli.exit_codes import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEMS
from importer.cli.options import LOG_FORMAT_ENV
from importer.cli.progress import BarDelivery, EventDelivery, tick
from importer.delivery.deliver import DeliveryControl
from importer.delivery.loops import run as run_loop
from importer.errors import ImporterError, OptionError
from importer.outcome import JobSummary, Summary

if TYPE_CHECKING:
    pass


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
    """A delivery's exit code: 1 stopped (the stop is the error), 130 interrupted, 3 rows
    rejected or failed, else 0."""
    if summary.stop is not None:
        return EXIT_FATAL
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_PROBLEMS if summary.has_problems else EXIT_OK


def _asks_json(args: list[str]) -> bool:
    """Whether the command asks for --log-format json, read before click parsed it: the last
    --log-format on the command line, else IMPORTER_LOG_FORMAT (as click will read them)."""
    asked = os.environ.get(LOG_FORMAT_ENV)
    for arg, value in zip(args, [*args[1:], ""], strict=True):
        if arg.startswith("--log-format="):
            asked = arg.partition("=")[2]
        elif arg == "--log-format":
            asked = value
    return asked == JSON


class LoggedCommand(click.Command):
    """A command whose usage errors (exit 2) are, with --log-format json, an `error` event and
    nothing else on stderr: a log collector reads one JSON object a line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse as click does; a usage error becomes an event when JSON was asked for."""
        asked = _asks_json(list(args))  # click's parser consumes the list
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
    job: Callable[[DeliveryControl], Coroutine[Any, Any, Summary]],
    progress: BarDelivery | EventDelivery,
) -> Summary:
    """Run a delivery in its own event loop with SIGINT and SIGTERM wired to it: the first lets
    the requests in flight finish and saves; a second saves what was acknowledged and quits."""

    async def main() -> Summary:
        control = DeliveryControl()
        loop = asyncio.get_running_loop()
        signums = (signal.SIGINT, signal.SIGTERM)
        for signum in signums:
            loop.add_signal_handler(signum, on_signal, signum, control, progress)
        ticking = None
        if isinstance(progress, EventDelivery) and progress.every > 0:
            ticking = asyncio.create_task(tick(progress))
        try:
            return await job(control)
        finally:
            if ticking is not None:
                ticking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticking
            for signum in signums:
                loop.remove_signal_handler(signum)

    return run_loop(main())


def on_signal(signum: int, control: DeliveryControl, progress: BarDelivery | EventDelivery) -> None:
    if not control.stop.is_set():
        control.stop.set()
        progress.notice(
            f"{signal.Signals(signum).name}: finishing the requests in flight, then saving the "
            "checkpoint (press Ctrl-C again to quit at once)"
        )
        return
    # Quit even when the disk refuses the sync: every mark already reached the OS as it came.
    with contextlib.suppress(Exception):
        control.sync()
    progress.abandon()


def accept_interrupts() -> None:
    """From here on Ctrl-C raises KeyboardInterrupt, which the command turns into its answer."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
