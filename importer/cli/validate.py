"""`importer validate`: check inputs (or a job file's steps) against a mapping, report every bad
row, send nothing."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from importer.api.engine import validate_summary
from importer.api.requests import Reading
from importer.checks.shard import Shard
from importer.cli.options import (
    batch_option,
    inputs_argument,
    log_options,
    mapping_option,
    quiet_option,
    rejects_option,
    report_html_output,
    report_option,
    shard_option,
    window_of,
    window_options,
)
from importer.cli.report import finish, finish_job
from importer.cli.shell import (
    LoggedCommand,
    accept_interrupts,
    cli_front,
    fail,
    interrupted,
)
from importer.errors import ImporterError
from importer.outcome import JobSummary


@click.command(cls=LoggedCommand)
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
    window = window_of(since, until)
    try:
        accept_interrupts()
        summary = validate_summary(
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
            cli_front(quiet),
        )
    except ImporterError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted()
    if isinstance(summary, JobSummary):
        finish_job(summary, report=report, quiet=quiet)
    finish(summary, report=report, quiet=quiet)
