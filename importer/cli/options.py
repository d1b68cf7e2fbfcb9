"""The options several commands share, each family one decorator (as sqlite-utils does), with the
parameter types they need (a shard, a moment) and the checks that only the command line can make.

`mock-server` and `status` use this module too, so the parts of the core that load Polars (the
readers, the checks, the API's settings) are imported by the decorators and checks that need
them, when a command that reads rows applies them (tests/test_startup.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from importer.cli.events import (
    DEFAULT_PROGRESS_S,
    EVENTS_KEY,
    EVERY_KEY,
    FORMATS,
    JSON,
    TEXT,
    EventLog,
)
from importer.destinations import DESTINATIONS
from importer.errors import ImporterError, OptionError
from importer.state.layout import DEFAULT_STATE

if TYPE_CHECKING:
    from importer.checks.shard import Shard
    from importer.checks.validate import Window


FC = TypeVar("FC", bound=Callable[..., Any])


# --shard's value when the option is not given: a Kubernetes Indexed Job or an Airflow mapped
# task sets it per copy, where each copy's command line is the same.
SHARD_ENV = "IMPORTER_SHARD"
# Every option of run, validate and replay may come from IMPORTER_<OPTION> (IMPORTER_ENDPOINT,
# IMPORTER_LOG_FORMAT, ...), one name whichever command uses it, so a cron line or a container
# can set them once; a flag wins. Not click's auto_envvar_prefix: it puts the command's name in
# the variable (IMPORTER_RUN_ENDPOINT). Options that set state aside or send again (--fresh,
# --resend-changed, --past-failed) and the hidden benchmark switches have none: a variable left
# in a cron environment must never re-send a migration.
ENV_PREFIX = "IMPORTER_"


def from_env(option: str) -> dict[str, Any]:
    """click.option's keywords that read `--some-option` from IMPORTER_SOME_OPTION, shown in
    --help."""
    name = ENV_PREFIX + option.removeprefix("--").replace("-", "_").upper()
    return {"envvar": name, "show_envvar": True}


# A directory is its files with a known ending, and a quoted glob its matches (inputs/locate.py).
inputs_argument = click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))


mapping_option = click.option(
    "--mapping",
    "--schema",
    "mapping_path",
    type=click.Path(path_type=Path, dir_okay=False),
    **from_env("--mapping"),
    help="Mapping file (TOML): destination, action, [fields], [types], [split], [dedup]; or "
    "the name of a preset (vero-track, userpilot-identify, ...: `importer presets` lists them), "
    "used when no file has that name. (--schema is the old name, still accepted.) "
    "Required unless the one input is a job file (JOB.toml), which names each step's mapping.",
)


rejects_option = click.option(
    "--rejects",
    **from_env("--rejects"),
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write rejected rows here with _file, _line, _rule, _error and the row's own columns: "
    "CSV when the name ends in .csv (.tsv: tab-separated), JSONL otherwise.",
)


REPORT_HTML_KEY = "importer.report_html"


def _keep_report_html(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    ctx.meta[REPORT_HTML_KEY] = value


def report_option(fn: FC) -> FC:
    """--report (the JSON summary, a parameter of the command) and --report-html (the same as
    a page; kept in the context, for the report writer and the output guard)."""
    fn = click.option(
        "--report-html",
        **from_env("--report-html"),
        type=click.Path(path_type=Path, dir_okay=False),
        expose_value=False,
        callback=_keep_report_html,
        help="Write the report as one self-contained HTML page here: outcomes, rejects by "
        "rule with examples, rows a second and retries/429s over time, dead letters by reason.",
    )(fn)
    return click.option(
        "--report",
        **from_env("--report"),
        type=click.Path(path_type=Path, dir_okay=False),
        help="Write a JSON summary here (rows_read, rows_valid, rows_rejected, ...).",
    )(fn)


def report_html_output() -> dict[str, Path | None]:
    """--report-html for the output guard (pipeline/outputs.py), beside the other outputs."""
    return {"--report-html": click.get_current_context().meta.get(REPORT_HTML_KEY)}


quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="Print only errors; no progress bar.", **from_env("--quiet")
)


def batch_option(fn: FC) -> FC:
    """--batch-rows, whose default is the readers'."""
    from importer.inputs.common import DEFAULT_BATCH_ROWS

    return click.option(
        "--batch-rows",
        **from_env("--batch-rows"),
        type=click.IntRange(min=1),
        default=DEFAULT_BATCH_ROWS,
        show_default=True,
        help="Rows read per batch; memory grows with this, not with the file.",
    )(fn)


class ShardType(click.ParamType):
    """`K/N` as a Shard; a bad value is a usage error (exit 2) that says what K or N may be."""

    name = "K/N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse `K/N`; a Shard passes through (a default, or a value converted once already)."""
        from importer.checks.shard import Shard, parse_shard

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
                **from_env("--log-format"),
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
                **from_env("--progress-every"),
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
                **from_env("--since"),
                type=TimeType(),
                help=f"Keep only rows whose time is at or after this {what}",
            ),
            click.option(
                "--until",
                **from_env("--until"),
                type=TimeType(),
                help=f"Keep only rows whose time is before this {what}",
            ),
        )
    ):
        fn = decorator(fn)
    return fn


def window_of(since: datetime | None, until: datetime | None) -> Window | None:
    """--since and --until as a Window; None when neither is given; a usage error when no row
    could be kept."""
    from importer.api.requests import window_of as api_window_of

    try:
        return api_window_of(since, until)
    except OptionError as exc:
        raise click.UsageError(str(exc)) from None


def shard_state(state_dir: Path, shard: Shard | None) -> Path:
    """--state as given, or with --shard and no --state, the shard's own directory."""
    source = click.get_current_context().get_parameter_source("state_dir")
    if shard is None or source not in (None, ParameterSource.DEFAULT):
        return state_dir
    return DEFAULT_STATE / shard.state_name


def destination_option(help_text: str, *, default: str | None = "vero") -> Callable[[FC], FC]:
    """--destination, one of the destinations the importer knows; commands differ in why (and
    `replay` in its default: none, the payload file tells)."""
    return click.option(
        "--destination",
        **from_env("--destination"),
        type=click.Choice(sorted(DESTINATIONS)),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


endpoint_option = click.option(
    "--endpoint",
    **from_env("--endpoint"),
    help="Base URL of the API (default: the destination's production URL), or 'embedded' to "
    "start the built-in mock server on a free loopback port and send there.",
)


state_option = click.option(
    "--state",
    "state_dir",
    type=click.Path(path_type=Path),  # a file there is a fatal error (1), said by the run
    **from_env("--state"),
    default=DEFAULT_STATE,
    show_default=True,
    help="Checkpoint directory: running the same command again resumes from it.",
)


fresh_option = click.option(
    "--fresh", is_flag=True, help="Set the old checkpoint aside; start over."
)


token_file_option = click.option(
    "--token-file",
    **from_env("--token-file"),
    type=click.Path(path_type=Path),
    help="Read the API token from this file (default: the destination's environment variable, "
    "VERO_AUTH_TOKEN or USERPILOT_API_KEY).",
)


concurrency_option = click.option(
    "--concurrency",
    **from_env("--concurrency"),
    type=click.IntRange(min=1, max=1024),
    default=32,
    show_default=True,
    help="Requests in flight at once.",
)


rate_option = click.option(
    "--rate",
    **from_env("--rate"),
    type=click.FloatRange(min=0, min_open=True),
    help="At most this many requests per second, across the run (default: the limit the "
    "destination documents; Vero documents none).",
)


retries_option = click.option(
    "--max-retries",
    **from_env("--max-retries"),
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Retries of one request (429, 5xx, timeouts) before it becomes a dead letter.",
)


timeout_option = click.option(
    "--timeout",
    **from_env("--timeout"),
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds one request may take.",
)


dead_letter_option = click.option(
    "--dead-letter",
    **from_env("--dead-letter"),
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write undeliverable requests here (payload JSONL with status and error; default: "
    "STATE/dead-letters.jsonl). Fix them and send them again with `importer replay`.",
)


def workers_option(fn: FC) -> FC:
    """--workers, bounded and explained by the API's settings."""
    from importer.api.settings import AUTO_WORKERS_CAP, MAX_WORKERS, ONE_PROCESS_RATE

    return click.option(
        "--workers",
        **from_env("--workers"),
        type=click.IntRange(min=1, max=MAX_WORKERS),
        help="Sender processes. Each user's rows all go through one of them; --concurrency and "
        f"--rate are totals across them. Default: 1 when the API is on this machine (it needs "
        f"the cores) or --rate is at most {ONE_PROCESS_RATE:g}/s (one process sends that "
        f"easily), else one per core, at most {AUTO_WORKERS_CAP}; never more than "
        "--concurrency. Actions delivered as jobs (import_*, bulk_*) use one: the API runs one "
        "job at a time.",
    )(fn)


no_checkpoint_option = click.option(
    "--benchmark-no-checkpoint",
    "no_checkpoint",
    is_flag=True,
    hidden=True,
    help="Benchmarks only: keep no checkpoint, to measure what keeping one costs.",
)


yes_option = click.option(
    "--yes",
    is_flag=True,
    help="Confirm an action that cannot be undone (deleting users or companies) without being "
    "asked; without it such a run asks on a terminal and refuses elsewhere.",
)


def confirm_on_terminal(question: str) -> bool:
    """Ask a yes/no question on stderr; the default is no."""
    return click.confirm(question, default=False, err=True)


def confirmation() -> Callable[[str], bool] | None:
    """How to ask for a confirmation: on a terminal, else nothing can ask (None)."""
    return confirm_on_terminal if sys.stdin.isatty() else None
