"""The command line: parses options, calls the core, prints results and chooses exit codes.

Exit codes (the contract in DESIGN.md): 0 all good; 1 a fatal error the user can fix (bad mapping,
unreadable file, refused token); 2 a usage error; 3 finished, but rows were rejected or failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from importer import __version__
from importer.api.credentials import read_token_file
from importer.api.settings import (
    AUTO_WORKERS_CAP,
    MAX_WORKERS,
    ONE_PROCESS_RATE,
    default_poll_s,
    delivery_options,
    order_time_for,
    ordered,
)
from importer.checks.shard import Shard, parse_shard
from importer.checks.validate import Window, window_column, window_refusal
from importer.cli.entry import accept_interrupts
from importer.cli.events import (
    DEFAULT_PROGRESS_S,
    FORMATS,
    JSON,
    TEXT,
    DeliveryEvents,
    EventLog,
    ReadEvents,
    shown_endpoint,
)
from importer.cli.report import format_job_summary, format_summary
from importer.cli.status import format_job_status, format_status, job_status_report, status_report
from importer.delivery.deliver import DeliveryControl
from importer.delivery.loops import run as run_loop
from importer.delivery.options import DeliveryOptions, is_loopback
from importer.destinations import DESTINATIONS, get_destination
from importer.destinations.base import endpoint_of
from importer.errors import ImporterError, OptionError
from importer.inputs.common import DEFAULT_BATCH_ROWS
from importer.jobfile.parse import JobFile, Step, is_job_file, load_job
from importer.jobfile.steps import (
    PENDING,
    SKIPPED,
    JobRecord,
    PlannedStep,
    check_steps,
    input_stats,
    is_job_state,
    per_step,
    read_job_status,
    send_steps,
    step_state,
)
from importer.mapping.file import load_mapping
from importer.outcome import JobSummary, Summary, write_report
from importer.pipeline.outputs import check_outputs
from importer.pipeline.run import (
    RunOptions,
    open_inputs,
    replay_payloads,
    send_inputs,
    validate_inputs,
)
from importer.pipeline.run import dry_run as dry_run_job
from importer.progress import DeliveryProgress
from importer.state.layout import DEFAULT_STATE
from importer.state.status import read_status

if TYPE_CHECKING:
    from tqdm import tqdm  # type: ignore[import-untyped]

    from importer.mapping.file import Mapping as MappingFile

FC = TypeVar("FC", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_PROBLEMS = 3
EXIT_INTERRUPTED = 130
RETRY_NOTICE_S = 10.0
# --shard's value when the option is not given: a Kubernetes Indexed Job or an Airflow mapped
# task sets it per copy, where each copy's command line is the same.
SHARD_ENV = "IMPORTER_SHARD"
# Where a command keeps its --log-format json writer and --progress-every: click's ctx.meta,
# which a command's context shares with its parent's.
EVENTS_KEY = "importer.events"
EVERY_KEY = "importer.progress_every"


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


def _events() -> EventLog | None:
    """The command's JSON event writer, when --log-format json asked for one."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.meta.get(EVENTS_KEY)


def _progress_every() -> float:
    ctx = click.get_current_context(silent=True)
    every = None if ctx is None else ctx.meta.get(EVERY_KEY)
    return DEFAULT_PROGRESS_S if every is None else float(every)


def _progress(quiet: bool) -> BarProgress | ReadEvents:
    events = _events()
    if events is not None:
        return ReadEvents(events, every=_progress_every())
    return BarProgress(enabled=not quiet and sys.stderr.isatty())


def _fail(exc: ImporterError) -> NoReturn:
    if isinstance(exc, OptionError):
        raise click.UsageError(str(exc)) from None
    events = _events()
    if events is not None:
        events.error(str(exc), hint=exc.hint, exit_code=EXIT_FATAL)
    else:
        click.echo(f"Error: {exc}", err=True)
        if exc.hint:
            click.echo(f"Hint: {exc.hint}", err=True)
    sys.exit(EXIT_FATAL)


def _warning(message: str) -> None:
    """A warning on stderr: a line, or with --log-format json a `warning` event."""
    events = _events()
    if events is not None:
        events.emit("warning", message=message)
    else:
        click.echo(f"warning: {message}", err=True)


def _summary_event(summary: Summary | JobSummary, code: int) -> None:
    """With --log-format json: the summary's warnings and notes, then its report and exit code."""
    events = _events()
    if events is not None:
        events.summary(summary.as_report(), exit_code=code)


def _start_event(
    command: str,
    inputs: tuple[Path, ...],
    *,
    mapping: MappingFile | None = None,
    job: JobFile | None = None,
    endpoint: str | None = None,
    window: Window | None = None,
    **details: Any,
) -> None:
    """With --log-format json: what the command is about to do (never the token)."""
    events = _events()
    if events is None:
        return
    fields: dict[str, Any] = {"command": command, "version": __version__}
    fields["inputs"] = [str(path) for path in inputs]
    if mapping is not None:
        fields.update(
            mapping=str(mapping.path),
            destination=mapping.destination.name,
            action=mapping.action.name,
        )
    if job is not None:
        fields["job_file"] = str(job.path)
        fields["steps"] = [
            {
                "name": step.name,
                "mapping": str(step.mapping.path),
                "destination": step.mapping.destination.name,
                "action": step.mapping.action.name,
                "inputs": [str(path) for path in step.inputs],
            }
            for step in job.steps
        ]
    fields["endpoint"] = shown_endpoint(endpoint)
    if window is not None:
        fields.update(
            since=None if window.since is None else window.since.isoformat(),
            until=None if window.until is None else window.until.isoformat(),
        )
    events.emit("start", **fields, **details)


def _write_report(report: Path | None, summary: Summary | JobSummary) -> None:
    """Write --report after the summary was printed, so a bad path loses nothing else."""
    if report is None:
        return
    try:
        write_report(report, summary)
    except ImporterError as exc:
        _fail(exc)


def _interrupted(
    what: str = "nothing was sent; run the command again to check every row",
) -> NoReturn:
    """Ctrl-C outside the sending loop (which drains and saves on its own): say where things
    stand and exit 130, not click's 'Aborted!' and 1."""
    events = _events()
    if events is not None:
        events.error(f"interrupted: {what}", hint=None, exit_code=EXIT_INTERRUPTED)
    else:
        click.echo(f"\ninterrupted: {what}", err=True)
    sys.exit(EXIT_INTERRUPTED)


def _interrupted_delivery(state_dir: Path) -> NoReturn:
    _interrupted(
        f"the checkpoint in {state_dir} holds every row the API acknowledged; "
        "run the same command again to go on"
    )


def _finish(summary: Summary, *, report: Path | None, quiet: bool) -> None:
    code = EXIT_PROBLEMS if summary.has_problems or summary.stopped else EXIT_OK
    if not quiet:
        click.echo(format_summary(summary))
    _write_report(report, summary)
    _summary_event(summary, code)
    sys.exit(code)


def _job_file(inputs: tuple[Path, ...], mapping_path: Path | None) -> Path | None:
    """The job file INPUTS names, if it is one; mixing a job file with --mapping or with
    inputs, or inputs without --mapping, is a usage error."""
    jobs = [path for path in inputs if is_job_file(path)]
    if not jobs:
        if mapping_path is None:
            raise click.UsageError(
                "Missing option '--mapping' / '--schema' (or give a job file: JOB.toml)"
            )
        return None
    if mapping_path is not None:
        raise click.UsageError(
            f"{jobs[0]} is a job file, which names each step's mapping: leave out --mapping"
        )
    if len(inputs) > 1:
        raise click.UsageError(f"{jobs[0]} is a job file: give it alone, its steps name inputs")
    return jobs[0]


def _check_job_outputs(job: JobFile, outputs: dict[str, Path | None], state_dir: Path) -> None:
    """check_outputs for each step: the step's own --rejects, --dead-letter and --out, beside
    the one --report, against every input and the job file."""
    kept = [job.path, *(path for step in job.steps for path in step.inputs)]
    for step in job.steps:
        named = {
            option: path if option == "--report" else per_step(path, step.name)
            for option, path in outputs.items()
        }
        check_outputs(
            named,
            inputs=kept,
            mapping=step.mapping.path,
            state_dir=step_state(state_dir, step.name),
        )


def _finish_job(summary: JobSummary, *, report: Path | None, quiet: bool) -> NoReturn:
    """Print a job's summary, write its report, exit: 1 when a step stopped it (a refused
    token, a redirect), 130 when interrupted, 3 when rows were rejected or failed or steps
    were not run because one failed, else 0."""
    code = _exit_code(summary)
    if not quiet or summary.stop is not None:
        click.echo(format_job_summary(summary))
    elif summary.blocked and _events() is None:  # else among the summary event's warnings
        for message in summary.blocked:
            click.echo(f"stopped early: {message}", err=True)
    _write_report(report, summary)
    _summary_event(summary, code)
    if summary.stop is not None:
        _fail(summary.stop)
    sys.exit(code)


def _exit_code(summary: Summary | JobSummary) -> int:
    """A delivery's exit code: 1 stopped (the stop is the error), 130 interrupted, 3 rows
    rejected or failed, else 0."""
    if summary.stop is not None:
        return EXIT_FATAL
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_PROBLEMS if summary.has_problems else EXIT_OK


def _step_options(
    step: Step,
    *,
    rejects: Path | None,
    batch_rows: int,
    shard: Shard | None,
    window: Window | None = None,
) -> RunOptions:
    """What one step reads, as `importer run` would for its inputs and mapping."""
    return RunOptions(
        inputs=step.inputs,
        mapping=step.mapping,
        rejects_path=per_step(rejects, step.name),
        batch_rows=batch_rows,
        shard=shard,
        window=window,
    )


def _step_events(
    check: Callable[[Step, RunOptions], Summary],
) -> Callable[[Step, RunOptions], Summary]:
    """`check` of one step of a job file, between `step` events with --log-format json."""
    events = _events()
    if events is None:
        return check

    def checked(step: Step, options: RunOptions) -> Summary:
        events.emit("step", step=step.name, status="started")
        summary = check(step, options)
        events.emit(
            "step",
            step=step.name,
            status="done",
            rows_rejected=summary.rows_rejected,
            rows_failed=summary.rows_failed,
        )
        return summary

    return checked


class EventRecord(JobRecord):
    """The job record, writing a `step` event for each outcome it notes (--log-format json):
    a step's start ("started") and its end (its status, and why)."""

    events: EventLog | None = None

    def note(self, name: str, status: str, **details: Any) -> None:
        """Note the outcome as the record does, then write it as an event."""
        super().note(name, status, **details)
        if self.events is None:
            return
        kept = ("reason", "rows_rejected", "rows_failed")
        shown = {key: value for key, value in details.items() if key in kept}
        self.events.emit(
            "step", step=name, status="started" if status == PENDING else status, **shown
        )


# A directory is its files with a known ending, and a quoted glob its matches (sources.py).
inputs_argument = click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
mapping_option = click.option(
    "--mapping",
    "--schema",
    "mapping_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Mapping file (TOML): destination, action, [fields], [types], [split], [dedup]. "
    "Presets for every action are in schemas/. (--schema is the old name, still accepted.) "
    "Required unless the one input is a job file (JOB.toml), which names each step's mapping.",
)
rejects_option = click.option(
    "--rejects",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write rejected rows here with _file, _line, _rule, _error and the row's own columns: "
    "CSV when the name ends in .csv (.tsv: tab-separated), JSONL otherwise.",
)
report_option = click.option(
    "--report",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a JSON summary here (rows_read, rows_valid, rows_rejected, ...).",
)
quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="Print only errors; no progress bar."
)
batch_option = click.option(
    "--batch-rows",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_ROWS,
    show_default=True,
    help="Rows read per batch; memory grows with this, not with the file.",
)


class ShardType(click.ParamType):
    """`K/N` as a Shard; a bad value is a usage error (exit 2) that says what K or N may be."""

    name = "K/N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse `K/N`; a Shard passes through (a default, or a value converted once already)."""
        if isinstance(value, Shard):
            return value
        try:
            return parse_shard(str(value))
        except ImporterError as exc:
            self.fail(str(exc), param, ctx)


shard_option = click.option(
    "--shard",
    type=ShardType(),
    envvar=SHARD_ENV,
    show_envvar=True,
    help="Build and send only the rows whose user (the first identity value, as sent) hashes "
    "to shard K of N, K from 0 to N-1 (JOB_COMPLETION_INDEX of a Kubernetes Indexed Job); "
    "every row is still validated. N machines with the same N and each K send disjoint parts, "
    "each user's rows in one part. Default state: .importer/shard-K-of-N.",
)


def _set_log_format(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--log-format json: the command's events go to stderr as JSON lines from here on."""
    if value == JSON:
        ctx.meta[EVENTS_KEY] = EventLog(sys.stderr)
    return value


def _set_progress_every(ctx: click.Context, param: click.Parameter, value: float) -> float:
    ctx.meta[EVERY_KEY] = value
    return value


def log_options(fn: FC) -> FC:
    """--log-format and --progress-every, for the commands that read or send rows."""
    for decorator in reversed(
        (
            click.option(
                "--log-format",
                type=click.Choice(FORMATS),
                default=TEXT,
                show_default=True,
                is_eager=True,  # before the other options, so their usage errors are events too
                expose_value=False,
                callback=_set_log_format,
                help="text: a progress bar and messages for people on stderr. json: one JSON "
                "object per line on stderr for each event (start, step, progress, retry, "
                "warning, note, summary, error), each with ts and event, for log collectors; "
                "the summary still goes to stdout unless --quiet.",
            ),
            click.option(
                "--progress-every",
                type=click.FloatRange(min=0),
                default=DEFAULT_PROGRESS_S,
                show_default=True,
                metavar="SECONDS",
                expose_value=False,
                callback=_set_progress_every,
                help="With --log-format json: seconds between progress events (0: at every row).",
            ),
        )
    ):
        fn = decorator(fn)
    return fn


class TimeType(click.ParamType):
    """An ISO 8601 date or time as an aware datetime; one without an offset is UTC."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse the option's text; a datetime passes through."""
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{text!r} is not an ISO 8601 date or time, such as 2024-05-01, "
                "2024-05-01T06:00:00Z or 2024-05-01T08:00:00+02:00",
                param,
                ctx,
            )
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def window_options(fn: FC) -> FC:
    """--since and --until: keep only the rows whose time falls in [since, until)."""
    what = (
        "ISO 8601 date or time (without an offset: UTC). The time is the action's required time "
        "field, else the first column the mapping types as a timestamp; rows outside are counted "
        "(rows_outside_window), neither sent nor rejected."
    )
    for decorator in reversed(
        (
            click.option(
                "--since",
                type=TimeType(),
                help=f"Keep only rows whose time is at or after this {what}",
            ),
            click.option(
                "--until",
                type=TimeType(),
                help=f"Keep only rows whose time is before this {what}",
            ),
        )
    ):
        fn = decorator(fn)
    return fn


def _window(since: datetime | None, until: datetime | None) -> Window | None:
    """--since and --until as a Window; None when neither is given."""
    if since is None and until is None:
        return None
    if since is not None and until is not None and since >= until:
        raise click.UsageError(
            f"--since {since.isoformat()} is not before --until {until.isoformat()}: "
            "no row could be kept"
        )
    return Window(since=since, until=until)


def _check_window(window: Window | None, mapping: MappingFile, step: str | None = None) -> None:
    """A usage error (exit 2) when the window is given for rows that have no time."""
    if window is not None and window_column(mapping) is None:
        where = "" if step is None else f"step {step}: "
        raise click.UsageError(where + window_refusal(mapping))


def _asks_json(args: list[str]) -> bool:
    """Whether the command line asks for --log-format json, read before click parsed it."""
    pairs = zip(args, [*args[1:], ""], strict=True)
    return any(
        arg == f"--log-format={JSON}" or (arg == "--log-format" and value == JSON)
        for arg, value in pairs
    )


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


def _shard_state(state_dir: Path, shard: Shard | None) -> Path:
    """--state as given, or with --shard and no --state, the shard's own directory."""
    source = click.get_current_context().get_parameter_source("state_dir")
    if shard is None or source not in (None, ParameterSource.DEFAULT):
        return state_dir
    return DEFAULT_STATE / shard.state_name


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="importer")
def main() -> None:
    """Import historical users and events from CSV/TSV/JSONL into Vero's Track API or Userpilot.

    Check files with `validate`, rehearse with `run --dry-run`, send with `run`, and re-send a
    reviewed payload file with `replay`. Exit codes: 0 all good, 1 fatal error, 2 usage error,
    3 finished but some rows were rejected or undeliverable (or the API would drop events as
    duplicates and the mapping does not accept that), 130 interrupted (run the same command
    again to go on).
    """


@main.command(cls=LoggedCommand)
@inputs_argument
@mapping_option
@rejects_option
@report_option
@batch_option
@shard_option
@window_options
@log_options
@quiet_option
def validate(
    inputs: tuple[Path, ...],
    mapping_path: Path | None,
    rejects: Path | None,
    report: Path | None,
    batch_rows: int,
    shard: Shard | None,
    since: datetime | None,
    until: datetime | None,
    quiet: bool,
) -> None:
    """Check INPUTS against the mapping and the API's rules; send nothing.

    Every row that would be refused is reported with its file, line, rule and message; the
    summary also counts events the API would drop as duplicates. Exit 3 when any row is
    rejected, or when the API would drop events the mapping does not accept losing. With a
    job file (JOB.toml) instead of INPUTS and --mapping, every step is checked. --since and
    --until keep only the rows whose time is in the window; the others are only counted.
    """
    window = _window(since, until)
    job_path = _job_file(inputs, mapping_path)
    if job_path is not None:
        _validate_job(
            job_path,
            rejects=rejects,
            report=report,
            batch_rows=batch_rows,
            shard=shard,
            window=window,
            quiet=quiet,
        )
    if mapping_path is None:
        raise AssertionError("_job_file refuses inputs without --mapping")
    try:
        accept_interrupts()
        check_outputs(
            {"--rejects": rejects, "--report": report},
            inputs=inputs,
            mapping=mapping_path,
            state_dir=DEFAULT_STATE if shard is None else DEFAULT_STATE / shard.state_name,
        )
        mapping = load_mapping(mapping_path)
        _check_window(window, mapping)
        _start_event("validate", inputs, mapping=mapping, window=window)
        options = RunOptions(
            inputs=inputs,
            mapping=mapping,
            rejects_path=rejects,
            batch_rows=batch_rows,
            shard=shard,
            window=window,
        )
        summary = validate_inputs(options, progress=_progress(quiet))
    except ImporterError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted()
    _finish(summary, report=report, quiet=quiet)


def _validate_job(
    job_path: Path,
    *,
    rejects: Path | None,
    report: Path | None,
    batch_rows: int,
    shard: Shard | None,
    window: Window | None,
    quiet: bool,
) -> NoReturn:
    """`importer validate JOB.toml`: validate each step as `validate INPUTS --mapping M` would."""
    try:
        accept_interrupts()
        job = load_job(job_path)
        for step in job.steps:
            _check_window(window, step.mapping, step.name)
        state = DEFAULT_STATE if shard is None else DEFAULT_STATE / shard.state_name
        _check_job_outputs(job, {"--rejects": rejects, "--report": report}, state)
        _start_event("validate", (job_path,), job=job, window=window)
        summary = check_steps(
            job,
            lambda step: _step_options(
                step, rejects=rejects, batch_rows=batch_rows, shard=shard, window=window
            ),
            _step_events(lambda _, options: validate_inputs(options, progress=_progress(quiet))),
        )
    except ImporterError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted()
    _finish_job(summary, report=report, quiet=quiet)


class BarDelivery(DeliveryProgress):
    """A tqdm bar of rows acknowledged, with retries and failures, on stderr."""

    def __init__(self, *, enabled: bool, retries_shown: bool = True) -> None:
        self._enabled = enabled
        self._bar: tqdm[Any] | None = None
        self._retries = 0
        self._failed = 0
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
                self._bar.set_postfix(retries=self._retries, failed=self._failed, refresh=False)

    def skip(self, rows: int) -> None:
        """Move the bar past rows that will not be sent, so it ends at its total."""
        if self._bar is not None and rows:
            self._bar.update(rows)

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


def _delivery_progress(quiet: bool) -> BarDelivery | EventDelivery:
    """The bar on a terminal, or with --log-format json the events."""
    events = _events()
    if events is not None:
        return EventDelivery(events, every=_progress_every(), retry_every=RETRY_NOTICE_S)
    return BarDelivery(enabled=_bar_enabled(quiet), retries_shown=not quiet)


async def _tick(progress: EventDelivery) -> None:
    """Progress events on time even while no row ends (a slow API, a background job)."""
    while True:
        await asyncio.sleep(progress.every)
        progress.tick()


def _deliver_with_signals(
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
            loop.add_signal_handler(signum, _on_signal, signum, control, progress)
        ticking = None
        if isinstance(progress, EventDelivery) and progress.every > 0:
            ticking = asyncio.create_task(_tick(progress))
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


def _on_signal(
    signum: int, control: DeliveryControl, progress: BarDelivery | EventDelivery
) -> None:
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


def destination_option(help_text: str) -> Callable[[FC], FC]:
    """--destination, one of the destinations the importer knows; commands differ in why."""
    return click.option(
        "--destination",
        type=click.Choice(sorted(DESTINATIONS)),
        default="vero",
        show_default=True,
        help=help_text,
    )


endpoint_option = click.option(
    "--endpoint",
    help="Base URL of the API (default: the destination's production URL), or 'embedded' to "
    "start the built-in mock server on a free loopback port and send there.",
)
state_option = click.option(
    "--state",
    "state_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_STATE,
    show_default=True,
    help="Checkpoint directory: running the same command again resumes from it.",
)
fresh_option = click.option(
    "--fresh", is_flag=True, help="Set the old checkpoint aside; start over."
)
token_file_option = click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    help="Read the API token from this file (default: the destination's environment variable, "
    "VERO_AUTH_TOKEN or USERPILOT_API_KEY).",
)
concurrency_option = click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=1024),
    default=32,
    show_default=True,
    help="Requests in flight at once.",
)
rate_option = click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="At most this many requests per second, across the run (default: the limit the "
    "destination documents; Vero documents none).",
)
retries_option = click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Retries of one request (429, 5xx, timeouts) before it becomes a dead letter.",
)
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds one request may take.",
)
dead_letter_option = click.option(
    "--dead-letter",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write undeliverable requests here (payload JSONL with status and error; default: "
    "STATE/dead-letters.jsonl). Fix them and send them again with `importer replay`.",
)


workers_option = click.option(
    "--workers",
    type=click.IntRange(min=1, max=MAX_WORKERS),
    help="Sender processes. Each user's rows all go through one of them; --concurrency and "
    f"--rate are totals across them. Default: 1 when the API is on this machine (it needs the "
    f"cores) or --rate is at most {ONE_PROCESS_RATE:g}/s (one process sends that easily), "
    f"else one per core, at most {AUTO_WORKERS_CAP}; never more than --concurrency. Actions "
    "delivered as jobs (import_*, bulk_*) use one: the API runs one job at a time.",
)
no_checkpoint_option = click.option(
    "--benchmark-no-checkpoint",
    "no_checkpoint",
    is_flag=True,
    hidden=True,
    help="Benchmarks only: keep no checkpoint, to measure what keeping one costs.",
)


def _finish_delivery(summary: Summary, *, report: Path | None, quiet: bool) -> None:
    code = _exit_code(summary)
    if not quiet or summary.stop is not None:
        click.echo(format_summary(summary))
    _write_report(report, summary)
    _summary_event(summary, code)
    if summary.stop is not None:
        _fail(summary.stop)
    sys.exit(code)


def _bar_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@main.command(cls=LoggedCommand)
@inputs_argument
@mapping_option
@endpoint_option
@concurrency_option
@rate_option
@state_option
@fresh_option
@click.option(
    "--dry-run", is_flag=True, help="Read, validate and build every payload; send nothing."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --dry-run: write the payloads here as JSONL (no credentials), for review or replay.",
)
@rejects_option
@dead_letter_option
@report_option
@token_file_option
@retries_option
@timeout_option
@batch_option
@workers_option
@shard_option
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.05),
    help="Actions delivered as jobs (import_*, bulk_*): seconds before the first look at a "
    "job's state, then 1.5 times longer each time up to 30 s. Default: 1 s; 0.1 s for a "
    "loopback endpoint or embedded (at least 1 s unless the endpoint is loopback).",
)
@click.option(
    "--job-wait",
    type=click.FloatRange(min=1.0),
    default=3600.0,
    show_default=True,
    help="Actions delivered as jobs: seconds to keep waiting while another job holds the API key "
    "(the API runs one at a time) before the run stops and says so.",
)
@click.option(
    "--per-user-order",
    is_flag=True,
    help="Send one user's rows one at a time, in order (--order); users still go in parallel, "
    "but one user with most of the rows makes the run as slow as sending them one by one.",
)
@click.option(
    "--order",
    type=click.Choice(["file", "time"]),
    default="file",
    show_default=True,
    help="With --per-user-order: each user's rows in input order, or by the action's time "
    "(Vero track: extras.created_at) when the input is not sorted by it.",
)
@window_options
@click.option(
    "--resend-changed",
    is_flag=True,
    help="Send a file whose content changed since it was sent (same path, other content, not "
    "grown) as a new input, all of it; without it such a file is reported, skipped and the exit "
    "code is 3.",
)
@click.option(
    "--past-failed",
    is_flag=True,
    help="Job files: run the steps that wait for a step whose every row failed to deliver "
    "(after you replayed its dead letters); without it they wait.",
)
@no_checkpoint_option
@log_options
@quiet_option
def run(
    inputs: tuple[Path, ...],
    mapping_path: Path | None,
    endpoint: str | None,
    concurrency: int,
    rate: float | None,
    state_dir: Path,
    fresh: bool,
    dry_run: bool,
    out: Path | None,
    rejects: Path | None,
    dead_letter: Path | None,
    report: Path | None,
    token_file: Path | None,
    max_retries: int,
    timeout: float,
    batch_rows: int,
    workers: int | None,
    shard: Shard | None,
    poll_interval: float | None,
    job_wait: float,
    per_user_order: bool,
    order: str,
    since: datetime | None,
    until: datetime | None,
    resend_changed: bool,
    past_failed: bool,
    no_checkpoint: bool,
    quiet: bool,
) -> None:
    """Validate INPUTS, build a payload per row and send them (with --dry-run: don't send).

    Each acknowledged row is recorded in the checkpoint (--state); run the same command again
    after a crash or Ctrl-C and only the rest is sent. Rejected rows go to --rejects, rows the
    API refuses for good to --dead-letter. The token comes from VERO_AUTH_TOKEN (Vero) or
    USERPILOT_API_KEY (Userpilot), or --token-file. Userpilot's import_* and bulk_* actions go
    as files, one job at a time, each followed to its end (--poll-interval, --job-wait).
    A job file (JOB.toml) instead of INPUTS and --mapping runs its steps in order, each with
    its own checkpoint in STATE/steps/<name>/; running it again skips the finished ones.

    \b
    Example, against the built-in mock server (for Userpilot's bulk identify, the same with
    samples/userpilot-users.csv and schemas/userpilot-bulk-identify.toml):
      importer run samples/events.csv --mapping schemas/vero-track.toml --endpoint embedded
      importer run samples/migration.toml --endpoint embedded --state .importer/migration
    """
    if out is not None and not dry_run:
        raise click.UsageError("--out goes with --dry-run")
    window = _window(since, until)
    state_dir = _shard_state(state_dir, shard)
    job_path = _job_file(inputs, mapping_path)
    if job_path is not None:
        _run_job(
            job_path,
            endpoint=endpoint,
            window=window,
            past_failed=past_failed,
            outputs={
                "--rejects": rejects,
                "--report": report,
                "--out": out,
                "--dead-letter": dead_letter,
            },
            dry_run=dry_run,
            state_dir=state_dir,
            batch_rows=batch_rows,
            shard=shard,
            quiet=quiet,
            delivery=lambda step: ordered(
                dataclasses.replace(
                    delivery_options(
                        endpoint=endpoint,
                        destination=step.mapping.destination,
                        token_file=token_file,
                        state_dir=step_state(state_dir, step.name),
                        fresh=fresh,
                        dead_letter=per_step(dead_letter, step.name),
                        concurrency=concurrency,
                        rate=rate,
                        max_retries=max_retries,
                        timeout=timeout,
                        workers=workers,
                        checkpoint=not no_checkpoint,
                        options=step.mapping.options,
                    ),
                    poll_s=poll_interval or default_poll_s(endpoint),
                    busy_wait_s=job_wait,
                ),
                step.mapping.action,
                per_user_order=per_user_order,
                order=order,
            ),
        )
    if mapping_path is None:
        raise AssertionError("_job_file refuses inputs without --mapping")
    try:
        accept_interrupts()
        check_outputs(
            {"--rejects": rejects, "--report": report, "--out": out, "--dead-letter": dead_letter},
            inputs=inputs,
            mapping=mapping_path,
            state_dir=state_dir,
        )
        mapping = load_mapping(mapping_path)
        order_time = order_time_for(mapping.action, per_user_order=per_user_order, order=order)
        _check_window(window, mapping)
        target = endpoint or endpoint_of(mapping.destination, mapping.options)
        _start_event(
            "run",
            inputs,
            mapping=mapping,
            endpoint=None if dry_run else target,
            window=window,
            dry_run=dry_run,
            state=None if dry_run else str(state_dir),
            shard=None if shard is None else shard.label,
        )
        options = RunOptions(
            inputs=inputs,
            mapping=mapping,
            rejects_path=rejects,
            batch_rows=batch_rows,
            shard=shard,
            window=window,
        )
        if dry_run:
            try:
                summary = dry_run_job(options, out=out, progress=_progress(quiet))
            except KeyboardInterrupt:
                _interrupted()
        else:
            delivery = delivery_options(
                endpoint=endpoint,
                destination=mapping.destination,
                token_file=token_file,
                state_dir=state_dir,
                fresh=fresh,
                dead_letter=dead_letter,
                concurrency=concurrency,
                rate=rate,
                max_retries=max_retries,
                timeout=timeout,
                workers=workers,
                checkpoint=not no_checkpoint,
                options=mapping.options,
            )
            delivery = dataclasses.replace(
                delivery,
                poll_s=poll_interval or default_poll_s(delivery.endpoint),
                busy_wait_s=job_wait,
                order_time=order_time,
                send=dataclasses.replace(delivery.send, per_user_order=per_user_order),
            )
            # Opened before the event loop, whose own SIGINT handler would let Ctrl-C wait
            # until every input was read through once.
            known = None if fresh or no_checkpoint else state_dir  # for grown files
            sources = open_inputs(options, state_dir=known)
            bar = _delivery_progress(quiet)
            summary = _deliver_with_signals(
                lambda control: send_inputs(
                    options,
                    sources,
                    delivery,
                    progress=bar,
                    control=control,
                    resend_changed=resend_changed,
                ),
                bar,
            )
    except ImporterError as exc:
        _fail(exc)
    except KeyboardInterrupt:  # before the sending loop took the signal over, or after
        _interrupted_delivery(state_dir)
    if dry_run:
        _finish(summary, report=report, quiet=quiet)
    _finish_delivery(summary, report=report, quiet=quiet)


def _run_job(
    job_path: Path,
    *,
    endpoint: str | None,
    window: Window | None,
    outputs: dict[str, Path | None],
    dry_run: bool,
    state_dir: Path,
    batch_rows: int,
    shard: Shard | None,
    quiet: bool,
    delivery: Callable[[Step], DeliveryOptions],
    past_failed: bool = False,
) -> NoReturn:
    """`importer run JOB.toml` (or with --dry-run): each step as `importer run INPUTS
    --mapping M` would run it, with STATE/steps/<name>/ as its state directory."""
    rejects, out = outputs["--rejects"], outputs["--out"]
    try:
        accept_interrupts()
        job = load_job(job_path)
        for step in job.steps:
            _check_window(window, step.mapping, step.name)
        _check_job_outputs(job, outputs, state_dir)
        _start_event(
            "run",
            (job_path,),
            job=job,
            endpoint=None if dry_run else endpoint,
            window=window,
            dry_run=dry_run,
            state=None if dry_run else str(state_dir),
            shard=None if shard is None else shard.label,
        )

        def options(step: Step) -> RunOptions:
            return _step_options(
                step, rejects=rejects, batch_rows=batch_rows, shard=shard, window=window
            )

        if dry_run:
            try:
                summary = check_steps(
                    job,
                    options,
                    _step_events(
                        lambda step, o: dry_run_job(
                            o, out=per_step(out, step.name), progress=_progress(quiet)
                        )
                    ),
                )
            except KeyboardInterrupt:
                _interrupted()
        else:
            fresh = False
            planned = []
            record = EventRecord.read(state_dir)
            record.events = _events()
            # Every step's inputs are opened and checked against its mapping before the first
            # row is sent, except those of a step finished before, which are not read at all.
            for step in job.steps:
                step_delivery = delivery(step)
                fresh = step_delivery.fresh
                stats = input_stats(step.inputs)
                step_options = options(step)
                done = not fresh and record.finished(
                    step,
                    fingerprint=step_options.run_fingerprint,
                    endpoint=step_delivery.endpoint,
                    stats=stats,
                )
                sources = None if done else open_inputs(step_options)
                planned.append(PlannedStep(step, step_options, step_delivery, stats, sources))
            if not fresh:
                for warning in record.warnings:
                    _warning(warning)
            if record.events is not None:
                for item in planned:
                    if item.sources is None:  # the job record notes nothing for these
                        record.events.emit("step", step=item.step.name, status=SKIPPED)
            bar = _delivery_progress(quiet)
            summary = _deliver_with_signals(
                lambda control: send_steps(
                    job, planned, record, progress=bar, control=control, past_failed=past_failed
                ),
                bar,
            )
    except ImporterError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted_delivery(state_dir)
    _finish_job(summary, report=outputs["--report"], quiet=quiet)


@main.command(cls=LoggedCommand)
@click.argument("payloads", type=click.Path(path_type=Path, dir_okay=False))
@endpoint_option
@concurrency_option
@rate_option
@state_option
@fresh_option
@destination_option("The API the payloads are for.")
@rejects_option
@dead_letter_option
@report_option
@token_file_option
@retries_option
@timeout_option
@log_options
@quiet_option
def replay(
    payloads: Path,
    endpoint: str | None,
    concurrency: int,
    rate: float | None,
    state_dir: Path,
    fresh: bool,
    destination: str,
    rejects: Path | None,
    dead_letter: Path | None,
    report: Path | None,
    token_file: Path | None,
    max_retries: int,
    timeout: float,
    quiet: bool,
) -> None:
    """Send a payload file as it is: a reviewed dry run (--out) or fixed dead letters.

    Uses the same engine, limits and checkpoint as `run`; running it again resumes. Each line is
    {"method", "path", "body", "source"}; a line that is not such a request is rejected.
    """
    try:
        accept_interrupts()
        target = get_destination(destination)
        delivery = delivery_options(
            endpoint=endpoint,
            destination=target,
            token_file=token_file,
            state_dir=state_dir,
            fresh=fresh,
            dead_letter=dead_letter,
            concurrency=concurrency,
            rate=rate,
            max_retries=max_retries,
            timeout=timeout,
        )
        check_outputs(
            {
                "--rejects": rejects,
                "--report": report,
                "--dead-letter": delivery.dead_letter_path,
            },
            inputs=[payloads],
            state_dir=state_dir,
        )
        _start_event(
            "replay",
            (payloads,),
            endpoint=delivery.endpoint,
            destination=target.name,
            state=str(state_dir),
        )
        bar = _delivery_progress(quiet)
        summary = _deliver_with_signals(
            lambda control: replay_payloads(
                payloads, target, delivery, rejects_path=rejects, progress=bar, control=control
            ),
            bar,
        )
    except ImporterError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _interrupted_delivery(state_dir)
    _finish_delivery(summary, report=report, quiet=quiet)


@main.command()
@state_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(state_dir: Path, as_json: bool) -> None:
    """Say how far the job in --state got: per input, rows delivered and failed, and why; for
    a job file's state, each step's outcome and its inputs' progress."""
    try:
        if is_job_state(state_dir):
            job = read_job_status(state_dir)
            if as_json:
                click.echo(json.dumps(job_status_report(job), indent=2, default=str))
            else:
                click.echo(format_job_status(job))
            return
        state = read_status(state_dir)
    except ImporterError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(status_report(state), indent=2, default=str))
    else:
        click.echo(format_status(state))


@main.command("mock-server")
@destination_option("The API to stand in for: its routes, credential, rules and answers.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8787,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append every accepted request body (without the token) to this JSONL file.",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    help="File holding the token to accept (default: the destination's environment variable, "
    "such as $VERO_AUTH_TOKEN, else 'test-token').",
)
@click.option(
    "--dedup-window",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds in which Vero drops a repeated event; 0 turns the emulation off.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault dice.")
@click.option("--rate-429", type=click.FloatRange(0, 1), default=0.0, help="Share answered 429.")
@click.option(
    "--retry-after",
    help="Retry-After of a 429: seconds, an HTTP date, or 'none' to send no header (default: "
    "the API's: 1 for Vero, none for Userpilot).",
)
@click.option(
    "--rate-5xx", type=click.FloatRange(0, 1), default=0.0, help="Share answered 500/502/503."
)
@click.option(
    "--rate-drop", type=click.FloatRange(0, 1), default=0.0, help="Share dropped unanswered."
)
@click.option("--rate-slow", type=click.FloatRange(0, 1), default=0.0, help="Share answered late.")
@click.option(
    "--slow", type=click.FloatRange(min=0), default=0.0, help="Seconds a slow answer waits."
)
@click.option(
    "--fail-first",
    type=click.IntRange(min=0),
    default=0,
    help="Answer the first N requests of each distinct body with 503.",
)
@click.option(
    "--status-script",
    default="",
    help="Comma-separated statuses for the first requests (200: real answer, 0: drop).",
)
@click.option(
    "--limit-rps",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Requests per second each token may make, a second's worth in a burst; beyond, 429 "
    "with the seconds to wait in Retry-After (default 0: no limit).",
)
@click.option(
    "--limit-window",
    metavar="N/SECONDS",
    help="At most N requests per token and rate bucket in any SECONDS; beyond, 429. 'off' for "
    "none (default: the API's documented limit: Userpilot 600/60 for each of track and "
    "identify, Vero none).",
)
@click.option(
    "--job-seconds",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="How long a background job (Userpilot's imports and bulk identify) takes.",
)
@click.option(
    "--job-fail",
    type=click.IntRange(min=1),
    multiple=True,
    metavar="N",
    help="Fail the Nth background job created (repeatable).",
)
@click.option(
    "--job-drop-answer",
    type=click.IntRange(min=1),
    multiple=True,
    metavar="N",
    help="Create the Nth background job but close the connection instead of answering "
    "(repeatable).",
)
def mock_server(
    destination: str,
    host: str,
    port: int,
    record: Path | None,
    token_file: Path | None,
    dedup_window: float,
    seed: int,
    rate_429: float,
    retry_after: str | None,
    rate_5xx: float,
    rate_drop: float,
    rate_slow: float,
    slow: float,
    fail_first: int,
    status_script: str,
    limit_rps: float,
    limit_window: str | None,
    job_seconds: float,
    job_fail: tuple[int, ...],
    job_drop_answer: tuple[int, ...],
) -> None:
    """Run a mock of the destination's API for rehearsals and tests; Ctrl-C stops it.

    It checks the token where the API expects it (Vero: auth_token in the body or query;
    Userpilot: the Authorization header) and the API's documented rules and rate limit, flags
    calls the API would drop as duplicates, runs background jobs on a timer, and injects faults
    or a rate limit on request.
    """
    target = get_destination(destination)
    try:
        if token_file is not None:
            token = read_token_file(token_file)
        else:
            token = os.environ.get(target.token_env) or "test-token"
    except ImporterError as exc:
        _fail(exc)
    try:
        script = tuple(int(s) for s in status_script.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(
            "a comma-separated list of HTTP statuses", param_hint="--status-script"
        ) from None
    given: dict[str, object] = {}  # left out: the API's own default applies
    if retry_after is not None:
        given["retry_after"] = None if retry_after.lower() == "none" else retry_after
    if limit_window is not None:
        given["limit_window"] = _limit_window(limit_window)
    if not is_loopback(host):
        click.echo(
            f"Warning: {host} is not loopback: the mock speaks plain HTTP to the network.",
            err=True,
        )
    try:
        from importer.mock.registry import mock_for
        from importer.mock.server import mock_config, serve  # aiohttp.web only for this command

        api = mock_for(target.name)
        config = mock_config(
            api,
            token=token,
            record=record,
            dedup_window_s=dedup_window,
            seed=seed,
            rate_429=rate_429,
            rate_5xx=rate_5xx,
            rate_drop=rate_drop,
            rate_slow=rate_slow,
            slow_s=slow,
            fail_first=fail_first,
            status_script=script,
            limit_rps=limit_rps,
            job_seconds=job_seconds,
            job_fail=job_fail,
            job_drop_answer=job_drop_answer,
            **given,
        )

        def on_ready(url: str) -> None:
            click.echo(f"Mock {target.title} API listening: --endpoint {url}", err=True)
            click.echo("Press Ctrl-C to stop.", err=True)

        serve(config, host, port, on_ready=on_ready, api=api)
    except ImporterError as exc:
        _fail(exc)


def _limit_window(text: str) -> tuple[int, float] | None:
    """--limit-window's N/SECONDS as (N, SECONDS); 'off' as None."""
    if text.lower() == "off":
        return None
    count, _, seconds = text.partition("/")
    try:
        return int(count), float(seconds)
    except ValueError:
        raise click.BadParameter(
            "N/SECONDS, such as 600/60, or off", param_hint="--limit-window"
        ) from None


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--destination",
    type=click.Choice(sorted(DESTINATIONS)),
    default="vero",
    show_default=True,
    help="The API the mapping is for.",
)
@click.option(
    "--action",
    help="The action (default: guessed: an event column means the destination's event action, "
    "else its identify).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the mapping here (an existing file is never overwritten); default: print it.",
)
def init(input_path: Path, destination: str, action: str | None, out: Path | None) -> None:
    """Write a commented mapping for INPUT, guessed from its header and first rows: which
    columns hold the user's id, the email, the event's name and its time (by their names and
    values). It loads as written; read it through before a run.

    \b
    Example:
      importer init samples/events.csv --out events.toml
      importer validate samples/events.csv --mapping events.toml
    """
    from importer.files import write_atomic
    from importer.inputs.reader import open_input
    from importer.pipeline.guess import guess_mapping  # only this command needs it

    try:
        target = get_destination(destination)
        chosen = None
        if action is not None:
            chosen = target.actions.get(action)
            if chosen is None:
                raise click.BadParameter(
                    f"{action!r} is not an action of {destination} ({', '.join(target.actions)})",
                    param_hint="--action",
                )
        if out is not None and out.exists():
            raise ImporterError(f"{out} exists: the mapping is not written over it")
        check_outputs({"--out": out}, inputs=(input_path,), mapping=None, state_dir=None)
        text = guess_mapping(open_input(input_path), target, chosen)
        if out is None:
            click.echo(text, nl=False)
        else:
            write_atomic(out, text.encode())
            click.echo(
                f"wrote {out}: check it, then: importer validate {input_path} --mapping {out}"
            )
    except ImporterError as exc:
        _fail(exc)


if __name__ == "__main__":
    main()
