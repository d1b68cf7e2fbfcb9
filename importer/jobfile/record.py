"""STATE/job.json, the record of a job file's run, and what a job's state directory says.

The record keeps each step's last outcome and, once the step finished, its mapping, endpoint and
inputs (size, mtime) as they were read; steps.py writes it as the steps run. `importer status`
reads it with each step's checkpoint, without loading the machinery that runs a step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from importer.errors import OutputError
from importer.files import write_atomic
from importer.state.facts import StateStatus
from importer.state.layout import JOB_RECORD, LOG_NAME, STEPS_DIR, check_paths
from importer.state.status import read_status

if TYPE_CHECKING:
    from importer.jobfile.parse import JobFile, Step

RECORD_VERSION = 1
DONE = "done"
SKIPPED = "skipped (done before)"
FAILED = "failed"
STOPPED = "stopped"
INTERRUPTED = "interrupted"
NOT_RUN = "not run"
PENDING = "not finished"


def step_state(state_dir: Path, step: str) -> Path:
    """The state directory of one step of the job kept in `state_dir`."""
    return state_dir / STEPS_DIR / step


@dataclass(slots=True)
class JobRecord:
    """STATE/job.json: the job file and, per step, how its last run ended; a finished step also
    keeps what it was run with, so a resumed job knows whether to skip it."""

    state_dir: Path
    job_file: str = ""
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        """Where the record lives."""
        return self.state_dir / JOB_RECORD

    @classmethod
    def read(cls, state_dir: Path) -> JobRecord:
        """The record in `state_dir`; an empty one when there is none. A damaged record is a
        warning, not an error: without it every step runs again, and each step's checkpoint
        still sends only what it has not sent. A file where the directory belongs is an error."""
        check_paths(state_dir, (JOB_RECORD,))
        record = cls(state_dir)
        try:
            raw = json.loads(record.path.read_text(encoding="utf-8"))
            record.job_file = str(raw["job_file"])
            record.steps = {str(s["name"]): dict(s) for s in raw["steps"]}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            record.warnings.append(
                f"{record.path} cannot be read ({type(exc).__name__}): every step runs again, "
                "each sending only what its checkpoint has not"
            )
        return record

    def finished(
        self, step: Step, *, fingerprint: str, endpoint: str, stats: list[dict[str, Any]]
    ) -> bool:
        """Whether `step` finished before with the same mapping and shard (`fingerprint`),
        endpoint and inputs: a step done for one shard is not done for another."""
        entry = self.steps.get(step.name, {})
        return (
            entry.get("status") == DONE
            and entry.get("mapping_fingerprint") == fingerprint
            and entry.get("endpoint") == endpoint
            and entry.get("inputs") == stats
        )

    def begin(self, job: JobFile) -> None:
        """Take the job's steps, keeping what is known of those with the same name."""
        self.job_file = str(job.path)
        steps = {}
        for step in job.steps:
            entry = self.steps.get(step.name, {})
            entry.update(name=step.name, mapping=str(step.mapping.path))
            entry.setdefault("status", PENDING)
            steps[step.name] = entry
        self.steps = steps

    def note(self, name: str, status: str, **details: Any) -> None:
        """Set a step's outcome and save the record."""
        entry = self.steps[name]
        entry.pop("reason", None)  # a reason belongs to the outcome it explained
        entry["status"] = status
        entry["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        entry.update(details)
        self.save()

    def save(self) -> None:
        """Write the record atomically: a crash leaves the old one or the new one."""
        text = json.dumps(
            {
                "version": RECORD_VERSION,
                "job_file": self.job_file,
                "steps": list(self.steps.values()),
            },
            indent=2,
            ensure_ascii=False,
        )
        try:
            write_atomic(self.path, (text + "\n").encode())
        except OSError as exc:
            raise OutputError(f"cannot write the job record {self.path}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class StepStatus:
    """One step as `importer status` shows it: its last outcome and its checkpoint, if any."""

    name: str
    mapping: str
    status: str
    updated_at: str | None
    reason: str | None
    checkpoint: StateStatus | None


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job's state directory: the job file and each step's state."""

    job_file: str
    steps: tuple[StepStatus, ...]
    warnings: tuple[str, ...]


def is_job_state(state_dir: Path) -> bool:
    """Whether `state_dir` holds a job's state rather than a single run's."""
    return (state_dir / JOB_RECORD).is_file() and not (state_dir / LOG_NAME).exists()


def read_job_status(state_dir: Path) -> JobStatus:
    """What a job's state directory says, read without changing it."""
    record = JobRecord.read(state_dir)
    steps = []
    for name, entry in record.steps.items():
        folder = step_state(state_dir, name)
        checkpoint = read_status(folder) if (folder / LOG_NAME).is_file() else None
        steps.append(
            StepStatus(
                name=name,
                mapping=str(entry.get("mapping", "")),
                status=str(entry.get("status", PENDING)),
                updated_at=entry.get("updated_at"),
                reason=entry.get("reason"),
                checkpoint=checkpoint,
            )
        )
    return JobStatus(record.job_file, tuple(steps), tuple(record.warnings))
