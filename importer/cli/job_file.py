"""A job file on the command line: its steps run (or are checked) in order, each with its own options, state directory and outputs, with one summary for the job."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from importer.checks.shard import Shard
from importer.checks.validate import Window
from importer.cli.events import (
    EventRecord,
    current_event_log,
    start_event,
    step_events,
)
from importer.cli.options import (
    check_window,
    report_html_output,
)
from importer.cli.progress import delivery_progress, read_progress
from importer.cli.report import (
    finish_job,
)
from importer.cli.shell import (
    accept_interrupts,
    deliver_with_signals,
    fail,
    interrupted,
    interrupted_delivery,
)
from importer.delivery.options import DeliveryOptions
from importer.errors import ImporterError
from importer.jobfile.parse import JobFile, Step, is_job_file, load_job
from importer.jobfile.steps import (
    SKIPPED,
    PlannedStep,
    check_steps,
    input_stats,
    per_step,
    send_steps,
    step_state,
)
from importer.pipeline.outputs import check_outputs
from importer.pipeline.run import (
    RunOptions,
    open_inputs,
    validate_inputs,
)
from importer.pipeline.run import dry_run as dry_run_job
from importer.state.layout import DEFAULT_STATE

if TYPE_CHECKING:
    pass


def job_file_path(inputs: tuple[Path, ...], mapping_path: Path | None) -> Path | None:
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
            option: path if option in ("--report", "--report-html") else per_step(path, step.name)
            for option, path in outputs.items()
        }
        check_outputs(
            named,
            inputs=kept,
            mapping=step.mapping.path,
            state_dir=step_state(state_dir, step.name),
        )


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


def validate_job(
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
            check_window(window, step.mapping, step.name)
        state = DEFAULT_STATE if shard is None else DEFAULT_STATE / shard.state_name
        _check_job_outputs(
            job, {"--rejects": rejects, "--report": report, **report_html_output()}, state
        )
        start_event("validate", (job_path,), job=job, window=window)
        summary = check_steps(
            job,
            lambda step: _step_options(
                step, rejects=rejects, batch_rows=batch_rows, shard=shard, window=window
            ),
            step_events(lambda _, options: validate_inputs(options, progress=read_progress(quiet))),
        )
    except ImporterError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted()
    finish_job(summary, report=report, quiet=quiet)


def run_job(
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
            check_window(window, step.mapping, step.name)
        _check_job_outputs(job, outputs, state_dir)
        start_event(
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
                    step_events(
                        lambda step, o: dry_run_job(
                            o, out=per_step(out, step.name), progress=read_progress(quiet)
                        )
                    ),
                )
            except KeyboardInterrupt:
                interrupted()
        else:
            fresh = False
            planned = []
            record = EventRecord.read(state_dir)
            record.events = current_event_log()
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
                    warning(warning)
            if record.events is not None:
                for item in planned:
                    if item.sources is None:  # the job record notes nothing for these
                        record.events.emit("step", step=item.step.name, status=SKIPPED)
            bar = delivery_progress(quiet)
            summary = deliver_with_signals(
                lambda control: send_steps(
                    job, planned, record, progress=bar, control=control, past_failed=past_failed
                ),
                bar,
            )
    except ImporterError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted_delivery(state_dir)
    finish_job(summary, report=outputs["--report"], quiet=quiet)
