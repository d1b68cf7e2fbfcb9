"""One path from a caller's request to a finished summary, for the CLI and the Python API alike: which outputs may be written, the mapping and its window, the run's and the delivery's options, the inputs opened before the first row goes, and the delivery run where the caller says.

What differs between callers is a `Front` (api/requests.py): how progress is shown, where the
event loop runs (the CLI's signal frame, or the API's runner), and the hooks that write the CLI's
JSON events. Job files (JOB.toml as the input) take the same path, step by step (api/jobs.py).
"""

from __future__ import annotations

from pathlib import Path

from importer.api.confirm import confirm_destructive
from importer.api.jobs import run_job, validate_job
from importer.api.requests import (
    Front,
    Reading,
    Sending,
    check_window,
    default_state,
    job_file_path,
)
from importer.api.settings import order_time_for
from importer.destinations import DEFAULT_DESTINATION, get_destination
from importer.destinations.base import endpoint_of
from importer.errors import OptionError
from importer.mapping.file import load_mapping
from importer.outcome import JobSummary, Summary
from importer.pipeline.morsels import polars_morsels
from importer.pipeline.outputs import check_outputs
from importer.pipeline.replay import destination_of_payloads, destructive_calls
from importer.pipeline.run import dry_run as dry_run_inputs
from importer.pipeline.run import open_inputs, replay_payloads, send_inputs, validate_inputs


@polars_morsels()
def validate_summary(reading: Reading, front: Front) -> Summary | JobSummary:
    """`importer validate`: every check of every row, nothing sent."""
    job_path = job_file_path(reading.inputs, reading.mapping)
    if job_path is not None:
        return validate_job(job_path, reading, front)
    if reading.mapping is None:
        raise AssertionError("job_file_path refuses inputs without a mapping")
    check_outputs(
        {
            "--rejects": reading.rejects,
            "--report": reading.report,
            "--report-html": reading.report_html,
        },
        inputs=reading.inputs,
        mapping=reading.mapping,
        state_dir=default_state(reading.shard),
    )
    mapping = load_mapping(reading.mapping)
    check_window(reading.window, mapping)
    front.start("validate", reading.inputs, mapping=mapping, window=reading.window)
    return validate_inputs(reading.options(mapping), progress=front.read)


@polars_morsels()
def run_summary(
    reading: Reading,
    sending: Sending,
    front: Front,
    *,
    state_dir: Path,
    dry_run: bool = False,
    out: Path | None = None,
    resend_changed: bool = False,
    past_failed: bool = False,
) -> Summary | JobSummary:
    """`importer run` (with `dry_run`, build and write the payloads, send nothing): a job
    file's steps, or the inputs against the mapping."""
    if out is not None and not dry_run:
        raise OptionError("--out goes with --dry-run")
    job_path = job_file_path(reading.inputs, reading.mapping)
    outputs = {
        "--rejects": reading.rejects,
        "--report": reading.report,
        "--report-html": reading.report_html,
        "--out": out,
        "--dead-letter": sending.dead_letter,
    }
    if job_path is not None:
        return run_job(
            job_path,
            reading,
            sending,
            front,
            outputs=outputs,
            state_dir=state_dir,
            dry_run=dry_run,
            past_failed=past_failed,
            resend_changed=resend_changed,
        )
    if reading.mapping is None:
        raise AssertionError("job_file_path refuses inputs without a mapping")
    check_outputs(outputs, inputs=reading.inputs, mapping=reading.mapping, state_dir=state_dir)
    mapping = load_mapping(reading.mapping)
    order_time_for(mapping.action, per_user_order=sending.per_user_order, order=sending.order)
    check_window(reading.window, mapping)
    front.start(
        "run",
        reading.inputs,
        mapping=mapping,
        endpoint=None
        if dry_run
        else sending.endpoint or endpoint_of(mapping.destination, mapping.options),
        window=reading.window,
        dry_run=dry_run,
        state=None if dry_run else str(state_dir),
        shard=None if reading.shard is None else reading.shard.label,
    )
    options = reading.options(mapping)
    if dry_run:
        return dry_run_inputs(options, out=out, progress=front.read)
    delivery = sending.for_run(mapping, state_dir)
    confirm_destructive(
        mapping.destination,
        mapping.action,
        yes=sending.yes,
        ask=front.ask,
        where=sending.endpoint or endpoint_of(mapping.destination, mapping.options),
    )
    # Opened before the event loop, whose own SIGINT handler would let Ctrl-C wait until every
    # input was read through once.
    known = None if sending.fresh or not sending.checkpoint else state_dir  # for grown files
    sources = open_inputs(options, state_dir=known)
    summary: Summary = front.deliver(
        lambda control: send_inputs(
            options,
            sources,
            delivery,
            progress=front.delivery,
            control=control,
            resend_changed=resend_changed,
        )
    )
    return summary


@polars_morsels()
def replay_summary(
    payloads: Path,
    sending: Sending,
    front: Front,
    *,
    destination: str | None,
    state_dir: Path,
    rejects: Path | None = None,
    report: Path | None = None,
    report_html: Path | None = None,
) -> Summary:
    """`importer replay`: a payload file sent as it is, resumable like a run; for
    `destination`, or (None) the one whose calls the file's lines name."""
    target = (
        get_destination(destination)
        if destination is not None
        else destination_of_payloads(payloads) or get_destination(DEFAULT_DESTINATION)
    )
    delivery = sending.for_replay(target.name, state_dir)
    check_outputs(
        {
            "--rejects": rejects,
            "--report": report,
            "--report-html": report_html,
            "--dead-letter": delivery.dead_letter_path,
        },
        inputs=[payloads],
        state_dir=state_dir,
    )
    for action in destructive_calls(payloads, target):
        confirm_destructive(target, action, yes=sending.yes, ask=front.ask, where=delivery.endpoint)
    front.start(
        "replay",
        (payloads,),
        endpoint=delivery.endpoint,
        destination=target.name,
        state=str(state_dir),
    )
    summary: Summary = front.deliver(
        lambda control: replay_payloads(
            payloads,
            target,
            delivery,
            rejects_path=rejects,
            progress=front.delivery,
            control=control,
        )
    )
    return summary
