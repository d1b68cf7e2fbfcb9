"""`importer run`: validate, build and send every row not yet acknowledged (or with --dry-run, build
and write them); a job file runs its steps."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from importer.api.engine import run_summary
from importer.api.requests import Reading, Sending
from importer.checks.shard import Shard
from importer.cli.options import (
    batch_option,
    concurrency_option,
    confirmation,
    dead_letter_option,
    endpoint_option,
    fresh_option,
    from_env,
    inputs_argument,
    log_options,
    mapping_option,
    no_checkpoint_option,
    quiet_option,
    rate_option,
    rejects_option,
    report_html_output,
    report_option,
    retries_option,
    shard_option,
    shard_state,
    state_option,
    timeout_option,
    token_file_option,
    window_of,
    window_options,
    workers_option,
    yes_option,
)
from importer.cli.report import finish, finish_delivery, finish_job
from importer.cli.shell import (
    LoggedCommand,
    accept_interrupts,
    cli_front,
    fail,
    interrupted,
    interrupted_delivery,
)
from importer.errors import ImporterError
from importer.outcome import JobSummary


@click.command(cls=LoggedCommand)
@inputs_argument
@mapping_option
@endpoint_option
@concurrency_option
@rate_option
@state_option
@fresh_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Read, validate and build every payload; send nothing.",
    **from_env("--dry-run"),
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    **from_env("--out"),
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
    **from_env("--poll-interval"),
    help="Actions delivered as jobs (import_*, bulk_*): seconds before the first look at a "
    "job's state, then 1.5 times longer each time up to 30 s. Default: 1 s; 0.1 s for a "
    "loopback endpoint or embedded (at least 1 s unless the endpoint is loopback).",
)
@click.option(
    "--job-wait",
    type=click.FloatRange(min=1.0),
    **from_env("--job-wait"),
    default=3600.0,
    show_default=True,
    help="Actions delivered as jobs: seconds to keep waiting while another job holds the API key "
    "(the API runs one at a time) before the run stops and says so.",
)
@click.option(
    "--per-user-order",
    is_flag=True,
    **from_env("--per-user-order"),
    help="Send one user's rows one at a time, in order (--order); users still go in parallel, "
    "but one user with most of the rows makes the run as slow as sending them one by one.",
)
@click.option(
    "--order",
    type=click.Choice(["file", "time"]),
    **from_env("--order"),
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
@yes_option
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
    yes: bool,
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
    window = window_of(since, until)
    state_dir = shard_state(state_dir, shard)
    try:
        accept_interrupts()
        summary = run_summary(
            Reading(
                inputs=inputs,
                mapping=mapping_path,
                rejects=rejects,
                report=report,
                report_html=report_html_output()["--report-html"],
                batch_rows=batch_rows,
                shard=shard,
                window=window,
            ),
            Sending(
                endpoint=endpoint,
                token_file=token_file,
                fresh=fresh,
                dead_letter=dead_letter,
                concurrency=concurrency,
                rate=rate,
                max_retries=max_retries,
                timeout=timeout,
                workers=workers,
                checkpoint=not no_checkpoint,
                poll_interval=poll_interval,
                job_wait=job_wait,
                per_user_order=per_user_order,
                order=order,
                yes=yes,
            ),
            cli_front(quiet, ask=confirmation()),
            state_dir=state_dir,
            dry_run=dry_run,
            out=out,
            resend_changed=resend_changed,
            past_failed=past_failed,
        )
    except ImporterError as exc:
        fail(exc)
    except KeyboardInterrupt:  # before the sending loop took the signal over, or after
        if dry_run:
            interrupted()
        interrupted_delivery(state_dir)
    if isinstance(summary, JobSummary):
        finish_job(summary, report=report, quiet=quiet)
    if dry_run:
        finish(summary, report=report, quiet=quiet)
    finish_delivery(summary, report=report, quiet=quiet)
