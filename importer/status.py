"""`importer status`: what a state directory says about a job, as text or as JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from importer.checkpoint import StateStatus


def status_report(state: StateStatus) -> dict[str, Any]:
    """The status as JSON-ready values."""
    return asdict(state)


def format_status(state: StateStatus) -> str:
    """The status as a few lines a person reads: the job, then each input's progress."""
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
        when = f", last update {item.updated_at:%Y-%m-%d %H:%M:%S}" if item.updated_at else ""
        lines.append(
            f"{item.name}: {item.delivered:,} delivered, {item.failed:,} failed{when}"
            f" (content {item.fingerprint[:12]})"
        )
        for failure in item.failures:
            status = failure.status if failure.status is not None else "no answer"
            lines.append(f"    line {failure.line}: {status}: {failure.error}")
    for chunk in state.open_jobs:
        if chunk.job is None:
            what = "built; the answer to its upload was not recorded (the next run looks for it)"
        else:
            what = f"job {chunk.job} not seen to end yet (the next run polls it)"
        lines.append(f"chunk {chunk.file} ({chunk.rows:,} rows): {what}")
    lines.extend(f"warning: {warning}" for warning in state.warnings)
    return "\n".join(lines)
