"""Run, check and report the steps of a job file, keeping one state directory for the job.

    STATE/job.json               the job record (record.py): each step's last outcome and,
                                 once it finished, its mapping, endpoint and inputs (size,
                                 mtime) as they were read
    STATE/steps/<name>/          the step's own checkpoint (bound to its mapping), dead letters
                                 and the embedded server's record

Each step is exactly `importer run INPUTS --mapping M` with the step's state directory. A resumed
job skips a finished step whose mapping, endpoint and inputs (by size and modification time:
no byte is read) are unchanged, and goes on inside the unfinished one through its checkpoint. A
step that stops (a refused token, a redirect) or is interrupted ends the job; a step whose every
row failed to deliver keeps the steps that wait for it from running. A renamed step takes over
the checkpoint of a step no longer in the job bound to the same mapping and endpoint; a step
whose checkpoint belongs to another mapping is refused with a way out for that step alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from importer.delivery.deliver import DeliveryControl
from importer.delivery.options import DeliveryOptions
from importer.errors import CheckpointError, ImporterError
from importer.inputs.common import InputFile
from importer.jobfile.parse import JobFile, Step
from importer.jobfile.record import (
    DONE,
    FAILED,
    INTERRUPTED,
    NOT_RUN,
    PENDING,
    SKIPPED,
    STOPPED,
    JobRecord,
)
from importer.outcome import JobSummary, StepSummary, Summary
from importer.pipeline.run import RunOptions, send_inputs
from importer.progress import DeliveryProgress
from importer.state.facts import RunIdentity
from importer.state.layout import LOG_NAME, STEPS_DIR
from importer.state.status import read_status


def per_step(path: Path | None, step: str) -> Path | None:
    """An output the user named once, for one step: `dead.jsonl` -> `dead.users.jsonl`, so
    each step's file keeps the format its ending asks for and no step overwrites another's."""
    if path is None:
        return None
    return path.with_name(f"{path.stem}.{step}{path.suffix}")


def input_stats(paths: tuple[Path, ...]) -> list[dict[str, Any]]:
    """What says an input changed without reading it: its size and modification time."""
    stats = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            stats.append({"file": str(path)})  # open_inputs says why it cannot be read
            continue
        stats.append({"file": str(path), "size": info.st_size, "mtime_ns": info.st_mtime_ns})
    return stats


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """A step ready to send: its options and, unless it is skipped, its opened inputs."""

    step: Step
    options: RunOptions
    delivery: DeliveryOptions
    stats: list[dict[str, Any]]
    sources: list[InputFile] | None  # None: finished before, skipped


def _step_summary(step: Step, status: str, summary: Summary | None = None) -> StepSummary:
    return StepSummary(
        name=step.name,
        mapping=str(step.mapping.path),
        inputs=[str(path) for path in step.inputs],
        status=status,
        summary=summary,
    )


async def send_steps(
    job: JobFile,
    planned: list[PlannedStep],
    record: JobRecord,
    *,
    progress: DeliveryProgress | None = None,
    control: DeliveryControl | None = None,
    past_failed: bool = False,
    resend_changed: bool = False,
) -> JobSummary:
    """Send each planned step in turn (one event loop, one `control` for the whole job), note
    each outcome in the job record, and stop where a step's outcome says to.

    A step is failed when, over all its runs, none of its rows was delivered and some failed:
    a rerun, which sends nothing of it, does not make it done. `past_failed` runs the steps
    that wait for it anyway (after its dead letters were replayed); `resend_changed` sends a
    step's changed inputs as new ones, as `importer run --resend-changed` does."""
    control = control or DeliveryControl()
    result = JobSummary(job_file=str(job.path))
    moved = adopt_renamed(planned, record)
    record.begin(job)
    record.save()
    blocked: dict[str, str] = {}  # step -> the failed step it waits for
    ended: str | None = None  # why the rest of the job does not run
    for item in planned:
        step = item.step
        if ended is None and control.stop.is_set():
            ended = "the job was interrupted"
        if ended is not None or step.name in blocked:
            reason = ended or f"it waits for {blocked[step.name]!r}, whose every row failed"
            result.steps.append(_step_summary(step, NOT_RUN))
            result.steps[-1].reason = reason
            record.note(step.name, NOT_RUN, reason=reason)
            continue
        if item.sources is None:
            before = record.steps[step.name]
            skipped = _step_summary(step, SKIPPED)
            rejected, failed = before.get("rows_rejected", 0), before.get("rows_failed", 0)
            if rejected or failed or before.get("problems"):
                # Not read again, but its rows that did not arrive still decide the exit code.
                skipped.reason = f"when it ran: {rejected:,} rejected, {failed:,} failed"
                skipped.problems_before = True
            result.steps.append(skipped)
            continue
        record.note(step.name, PENDING)
        try:
            _check_step_state(item)
            summary = await send_inputs(
                item.options,
                item.sources,
                item.delivery,
                progress=progress,
                control=control,
                resend_changed=resend_changed,
            )
        except ImporterError as exc:
            # The job ends here, but what the earlier steps did is still reported.
            summary = Summary(stop=exc)
        if step.name in moved:
            summary.notes.append(
                f"step {step.name!r} was called {moved[step.name]!r} when its rows were sent "
                "(same mapping and endpoint): its checkpoint was taken over, so only what it "
                "had not sent was sent"
            )
        if summary.stop is not None:
            status, ended = STOPPED, f"step {step.name!r} stopped: {summary.stop}"
        elif summary.interrupted:
            status, ended = INTERRUPTED, "the job was interrupted"
        elif summary.rows_sent == 0 and _never_delivered(item) and not past_failed:
            status = FAILED
            waiting = job.dependents(step.name)
            blocked.update(dict.fromkeys(waiting, step.name))
            if waiting:
                result.blocked.append(
                    f"step {step.name}: every row failed to deliver, so step(s) "
                    f"{', '.join(waiting)} that depend on it were not run; fix and replay its "
                    f"dead letters ({item.delivery.dead_letter_path}), then run the job again "
                    "with --past-failed"
                )
        else:
            status = DONE
        result.steps.append(_step_summary(step, status, summary))
        details: dict[str, Any] = {}
        if status == DONE:
            # A changed input left out keeps the step from being skipped: each run reads it
            # again and says so, as a nightly run does, until --resend-changed sends it.
            left_out = any(entry.get("status") == "changed" for entry in summary.inputs)
            details = {
                "mapping_fingerprint": item.options.run_fingerprint,
                "endpoint": item.delivery.endpoint,
                "inputs": None if left_out else item.stats,
                "rows_rejected": summary.rows_rejected,
                "rows_failed": summary.rows_failed,
                "problems": summary.has_problems,
            }
        record.note(step.name, status, **details)
    return result


def _identity(item: PlannedStep) -> RunIdentity:
    """What the step's checkpoint is bound to (as send_inputs binds it)."""
    return RunIdentity(
        mapping_fingerprint=item.options.run_fingerprint,
        destination=item.options.mapping.destination.name,
        endpoint=item.delivery.endpoint,
    )


def _bound_to(folder: Path) -> RunIdentity | None:
    """The run a step's checkpoint in `folder` belongs to; None when it has none to read."""
    if not (folder / LOG_NAME).is_file():
        return None
    try:
        return read_status(folder).job
    except ImporterError:
        return None


def adopt_renamed(planned: list[PlannedStep], record: JobRecord) -> dict[str, str]:
    """Give a step without a checkpoint the one of a step no longer in the job (a renamed step)
    bound to the same mapping, shard, destination and endpoint: what was delivered is known
    by content and mapping, not by the step's name. Returns new name -> old name."""
    names = {item.step.name for item in planned}
    folder = record.state_dir / STEPS_DIR
    try:
        orphans = sorted(p for p in folder.iterdir() if p.name not in names and p.is_dir())
    except OSError:
        return {}
    moved: dict[str, str] = {}
    for item in planned:
        mine = item.delivery.state_dir
        if item.sources is None or item.delivery.fresh or not item.delivery.checkpoint:
            continue
        if mine.exists() or mine.parent != folder:
            continue
        wanted = _identity(item)
        old = next((p for p in orphans if _bound_to(p) == wanted), None)
        if old is None:
            continue
        try:
            os.replace(old, mine)
        except OSError:
            continue  # sent from the start, as before: the checkpoint stays where it was
        orphans.remove(old)
        moved[item.step.name] = old.name
        if old.name in record.steps:
            record.steps[item.step.name] = {**record.steps.pop(old.name), "name": item.step.name}
    return moved


def _check_step_state(item: PlannedStep) -> None:
    """Refuse a step whose checkpoint belongs to another mapping, shard or endpoint, with a way
    out for that step alone: `--fresh` would start every step of the job over."""
    if item.delivery.fresh or not item.delivery.checkpoint:
        return
    folder = item.delivery.state_dir
    old, new = _bound_to(folder), _identity(item)
    if old is None or old == new:
        return
    mapping, _, shard = old.mapping_fingerprint.partition("+")
    now_mapping, _, now_shard = new.mapping_fingerprint.partition("+")
    diffs = [
        label
        for label, a, b in (
            ("mapping", mapping, now_mapping),
            ("shard", shard, now_shard),
            ("destination", old.destination, new.destination),
            ("endpoint", old.endpoint, new.endpoint),
        )
        if a != b
    ]
    if diffs == ["shard"]:
        raise CheckpointError(
            f"step {item.step.name!r}: its checkpoint ({folder}) belongs to another shard: it "
            f"holds {shard or 'all rows'}, this run is {now_shard or 'all rows'}",
            hint="each shard keeps its own state (by default .importer/shard-K-of-N): pass "
            "this shard's --state",
        )
    raise CheckpointError(
        f"step {item.step.name!r}: its checkpoint ({folder}) belongs to another job: its "
        f"{' and '.join(diffs)} changed since its rows were sent",
        hint=f"to send step {item.step.name!r} again from its first row, move its checkpoint "
        f"aside (mv {folder} {folder}.old) and run the job again: the other steps keep what "
        "they sent. --fresh would start every step of the job over",
    )


def _never_delivered(item: PlannedStep) -> bool:
    """Whether the step's checkpoint, over all runs, holds failed rows and no delivered one."""
    try:
        state = read_status(item.delivery.state_dir)
    except ImporterError:
        return False
    mine = {source.fingerprint for source in item.sources or ()}
    inputs = [inp for inp in state.inputs if inp.fingerprint in mine]
    return sum(i.delivered for i in inputs) == 0 and sum(i.failed for i in inputs) > 0


def check_steps(
    job: JobFile,
    options: Callable[[Step], RunOptions],
    check: Callable[[Step, RunOptions], Summary],
    *,
    dry_run: bool = True,
) -> JobSummary:
    """`validate` or `run --dry-run` of every step: `check` runs one step's options."""
    result = JobSummary(job_file=str(job.path), dry_run=dry_run)
    for step in job.steps:
        result.steps.append(_step_summary(step, DONE, check(step, options(step))))
    return result
