"""`importer status`: what a state directory says about a job, as text or as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from importer.cli.options import (
    state_option,
)
from importer.cli.shell import (
    fail,
)
from importer.errors import ImporterError
from importer.jobfile.record import (
    JobStatus,
    is_job_state,
    read_job_status,
)
from importer.state.facts import StateStatus
from importer.state.status import read_status


def status_report(state: StateStatus) -> dict[str, Any]:
    """The status as JSON-ready values."""
    return asdict(state)


def format_status(state: StateStatus) -> str:
    """The status as a few lines a person reads: the job, then what was sent from each input
    and when, the names it was seen under, and the content it grew from."""
    lines = []
    if state.job is not None:
        lines.append(
            f"job: {state.job.destination} at {state.job.endpoint}, "
            f"mapping {state.job.mapping_fingerprint[:12]}"
        )
    if state.created_at is not None:
        lines.append(f"started: {state.created_at:%Y-%m-%d %H:%M:%S %Z}")
    if not state.inputs:
        lines.append("no input has been sent yet")
    for item in state.inputs:
        when = f", first {item.first_at:%Y-%m-%d %H:%M:%S}" if item.first_at else ""
        if item.updated_at:
            when += f", last update {item.updated_at:%Y-%m-%d %H:%M:%S}"
        lines.append(
            f"{item.name}: {item.delivered:,} delivered, {item.failed:,} failed{when}"
            f" (content {item.fingerprint[:12]})"
        )
        if len(item.names) > 1:
            lines.append(f"    seen as {', '.join(item.names)}")
        if item.grew_from is not None:
            lines.append(
                f"    grew from content {item.grew_from[:12]}: {item.inherited:,} rows taken "
                "over (sent before as part of it)"
            )
        for status, error, rows, line in item.reasons:
            # A failure without a status is described by its error ("no answer within 30 s",
            # "job ... ended failed"): no label of its own.
            why = error if status is None else f"HTTP {status}: {error}"
            lines.append(f"    {rows:,} failed: {why} (first: line {line})")
        if item.other_failed:
            lines.append(f"    {item.other_failed:,} failed for other reasons")
        if item.replayed:
            lines.append(
                f"    {item.replayed:,} of the rows that failed were delivered since by the "
                "replay (counted as delivered above; reasons above are as they failed)"
            )
    for chunk in state.open_jobs:
        if chunk.job is None:
            what = "built; the answer to its upload was not recorded (the next run looks for it)"
        else:
            what = f"job {chunk.job} not seen to end yet (the next run polls it)"
        lines.append(f"chunk {chunk.file} ({chunk.rows:,} rows): {what}")
    lines.extend(f"warning: {warning}" for warning in state.warnings)
    return "\n".join(lines)


def job_status_report(job: JobStatus) -> dict[str, Any]:
    """A job's status as JSON-ready values: each step's outcome and its checkpoint's status."""
    return asdict(job)


def format_job_status(job: JobStatus) -> str:
    """A job's status: the job file, then each step's outcome and its inputs' progress."""
    lines = [f"job file: {job.job_file}"]
    for step in job.steps:
        when = f", {step.updated_at}" if step.updated_at else ""
        why = f": {step.reason}" if step.reason else ""
        lines.append(f"step {step.name} ({step.mapping}): {step.status}{why}{when}")
        if step.checkpoint is None:
            lines.append("    nothing sent yet")
        else:
            lines.extend(f"    {line}" for line in format_status(step.checkpoint).splitlines())
    lines.extend(f"warning: {warning}" for warning in job.warnings)
    return "\n".join(lines)


@click.command()
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
        fail(exc)
    if as_json:
        click.echo(json.dumps(status_report(state), indent=2, default=str))
    else:
        click.echo(format_status(state))
