"""`importer validate`: check inputs (or a job file's steps) against a mapping, report every bad row, send nothing."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from importer.checks.shard import Shard
from importer.cli.events import (
    start_event,
)
from importer.cli.job_file import job_file_path, validate_job
from importer.cli.options import (
    batch_option,
    check_window,
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
from importer.cli.progress import read_progress
from importer.cli.report import (
    finish,
)
from importer.cli.shell import (
    LoggedCommand,
    accept_interrupts,
    fail,
    interrupted,
)
from importer.errors import ImporterError
from importer.mapping.file import load_mapping
from importer.pipeline.outputs import check_outputs
from importer.pipeline.run import (
    RunOptions,
    validate_inputs,
)
from importer.state.layout import DEFAULT_STATE

if TYPE_CHECKING:
    pass


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
    job_path = job_file_path(inputs, mapping_path)
    if job_path is not None:
        validate_job(
            job_path,
            rejects=rejects,
            report=report,
            batch_rows=batch_rows,
            shard=shard,
            window=window,
            quiet=quiet,
        )
    if mapping_path is None:
        raise AssertionError("job_file refuses inputs without --mapping")
    try:
        accept_interrupts()
        check_outputs(
            {"--rejects": rejects, "--report": report, **report_html_output()},
            inputs=inputs,
            mapping=mapping_path,
            state_dir=DEFAULT_STATE if shard is None else DEFAULT_STATE / shard.state_name,
        )
        mapping = load_mapping(mapping_path)
        check_window(window, mapping)
        start_event("validate", inputs, mapping=mapping, window=window)
        options = RunOptions(
            inputs=inputs,
            mapping=mapping,
            rejects_path=rejects,
            batch_rows=batch_rows,
            shard=shard,
            window=window,
        )
        summary = validate_inputs(options, progress=read_progress(quiet))
    except ImporterError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted()
    finish(summary, report=report, quiet=quiet)
