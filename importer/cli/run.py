"""`importer run`: validate, build and send every row not yet acknowledged (or with --dry-run, build and write them); a job file runs its steps."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from importer.api.settings import (
    default_poll_s,
    delivery_options,
    order_time_for,
    ordered,
)
from importer.checks.shard import Shard
from importer.cli.events import (
    start_event,
)
from importer.cli.job_file import job_file_path, run_job
from importer.cli.options import (
    batch_option,
    check_window,
    concurrency_option,
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
)
from importer.cli.progress import delivery_progress, read_progress
from importer.cli.report import (
    finish,
    finish_delivery,
)
from importer.cli.shell import (
    LoggedCommand,
    accept_interrupts,
    deliver_with_signals,
    fail,
    interrupted,
    interrupted_delivery,
)
from importer.destinations.base import endpoint_of
from importer.errors import ImporterError
from importer.jobfile.steps import (
    per_step,
    step_state,
)
from importer.mapping.file import load_mapping
from importer.pipeline.outputs import check_outputs
from importer.pipeline.run import (
    RunOptions,
    open_inputs,
    send_inputs,
)
from importer.pipeline.run import dry_run as dry_run_job

if TYPE_CHECKING:
    pass


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
    window = window_of(since, until)
    state_dir = shard_state(state_dir, shard)
    job_path = job_file_path(inputs, mapping_path)
    if job_path is not None:
        run_job(
            job_path,
            endpoint=endpoint,
            window=window,
            past_failed=past_failed,
            outputs={
                "--rejects": rejects,
                "--report": report,
                "--out": out,
                "--dead-letter": dead_letter,
                **report_html_output(),
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
        raise AssertionError("job_file refuses inputs without --mapping")
    try:
        accept_interrupts()
        check_outputs(
            {
                "--rejects": rejects,
                "--report": report,
                "--out": out,
                "--dead-letter": dead_letter,
                **report_html_output(),
            },
            inputs=inputs,
            mapping=mapping_path,
            state_dir=state_dir,
        )
        mapping = load_mapping(mapping_path)
        order_time = order_time_for(mapping.action, per_user_order=per_user_order, order=order)
        check_window(window, mapping)
        target = endpoint or endpoint_of(mapping.destination, mapping.options)
        start_event(
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
                summary = dry_run_job(options, out=out, progress=read_progress(quiet))
            except KeyboardInterrupt:
                interrupted()
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
            bar = delivery_progress(quiet)
            summary = deliver_with_signals(
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
        fail(exc)
    except KeyboardInterrupt:  # before the sending loop took the signal over, or after
        interrupted_delivery(state_dir)
    if dry_run:
        finish(summary, report=report, quiet=quiet)
    finish_delivery(summary, report=report, quiet=quiet)
