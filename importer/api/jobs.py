"""A job file as the input: its steps checked or run in order, each with its own options, state directory and outputs, with one summary for the job; the same for the CLI and the Python API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from importer.api.confirm import confirm_destructive
from importer.api.requests import Front, Reading, Sending, check_window, default_state
from importer.destinations.base import endpoint_of
from importer.jobfile.parse import JobFile, Step, load_job
from importer.jobfile.record import PENDING, SKIPPED, JobRecord, step_state
from importer.jobfile.steps import (
    PlannedStep,
    check_steps,
    input_stats,
    per_step,
    send_steps,
)
from importer.outcome import JobSummary, Summary
from importer.pipeline.outputs import check_outputs
from importer.pipeline.run import RunOptions, open_inputs, validate_inputs
from importer.pipeline.run import dry_run as dry_run_inputs


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


def _step_options(step: Step, reading: Reading) -> RunOptions:
    """What one step reads, as `importer run` would for its inputs and mapping."""
    return RunOptions(
        inputs=step.inputs,
        mapping=step.mapping,
        rejects_path=per_step(reading.rejects, step.name),
        batch_rows=reading.batch_rows,
        shard=reading.shard,
        window=reading.window,
    )


Check = Callable[[Step, RunOptions], Summary]


def _checked(front: Front, check: Check) -> Check:
    """`check` of one step, between the front's step hooks ("started", then "done")."""
    if front.step is None:
        return check
    hook = front.step

    def checked(step: Step, options: RunOptions) -> Summary:
        hook(step.name, "started")
        summary = check(step, options)
        hook(
            step.name,
            "done",
            rows_rejected=summary.rows_rejected,
            rows_failed=summary.rows_failed,
        )
        return summary

    return checked


def validate_job(job_path: Path, reading: Reading, front: Front) -> JobSummary:
    """`validate JOB.toml`: each step as `validate INPUTS --mapping M` would check it."""
    job = load_job(job_path)
    for step in job.steps:
        check_window(reading.window, step.mapping, step.name)
    outputs = {
        "--rejects": reading.rejects,
        "--report": reading.report,
        "--report-html": reading.report_html,
    }
    _check_job_outputs(job, outputs, default_state(reading.shard))
    front.start("validate", (job_path,), job=job, window=reading.window)
    return check_steps(
        job,
        lambda step: _step_options(step, reading),
        _checked(front, lambda _, options: validate_inputs(options, progress=front.read)),
    )


class _HookedRecord(JobRecord):
    """The job record, telling the front each outcome it notes: a step's start ("started")
    and its end (its status, and why)."""

    hook: Any = None

    def note(self, name: str, status: str, **details: Any) -> None:
        """Note the outcome as the record does, then tell the front."""
        super().note(name, status, **details)
        if self.hook is None:
            return
        kept = ("reason", "rows_rejected", "rows_failed")
        shown = {key: value for key, value in details.items() if key in kept}
        self.hook(name, "started" if status == PENDING else status, **shown)


def run_job(
    job_path: Path,
    reading: Reading,
    sending: Sending,
    front: Front,
    *,
    outputs: dict[str, Path | None],
    state_dir: Path,
    dry_run: bool,
    past_failed: bool = False,
    resend_changed: bool = False,
) -> JobSummary:
    """`run JOB.toml` (or with `dry_run`): each step as `importer run INPUTS --mapping M` would
    run it, with STATE/steps/<name>/ as its state directory."""
    job = load_job(job_path)
    for step in job.steps:
        check_window(reading.window, step.mapping, step.name)
    _check_job_outputs(job, outputs, state_dir)
    front.start(
        "run",
        (job_path,),
        job=job,
        endpoint=None if dry_run else sending.endpoint,
        window=reading.window,
        dry_run=dry_run,
        state=None if dry_run else str(state_dir),
        shard=None if reading.shard is None else reading.shard.label,
    )
    if dry_run:
        out = outputs["--out"]
        return check_steps(
            job,
            lambda step: _step_options(step, reading),
            _checked(
                front,
                lambda step, options: dry_run_inputs(
                    options, out=per_step(out, step.name), progress=front.read
                ),
            ),
        )
    for step in job.steps:
        confirm_destructive(
            step.mapping.destination,
            step.mapping.action,
            yes=sending.yes,
            ask=front.ask,
            where=sending.endpoint or endpoint_of(step.mapping.destination, step.mapping.options),
        )
    fresh = False
    planned = []
    record = _HookedRecord.read(state_dir)
    record.hook = front.step
    # Every step's inputs are opened and checked against its mapping before the first row is
    # sent, except those of a step finished before, which are not read at all.
    for step in job.steps:
        step_delivery = sending.for_step(step, state_dir)
        fresh = step_delivery.fresh
        stats = input_stats(step.inputs)
        step_options = _step_options(step, reading)
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
            front.warning(warning)
    if front.step is not None:
        for item in planned:
            if item.sources is None:  # the job record notes nothing for these
                front.step(item.step.name, SKIPPED)
    summary: JobSummary = front.deliver(
        lambda control: send_steps(
            job,
            planned,
            record,
            progress=front.delivery,
            control=control,
            past_failed=past_failed,
            resend_changed=resend_changed,
        )
    )
    return summary
