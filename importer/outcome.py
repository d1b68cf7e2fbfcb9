"""What a run counts, and the JSON report (`--report`) that carries it.

`Summary` is one run's (or one step's) outcome: rows read, valid, rejected, sent, skipped, failed,
with examples per rule, dead letters by reason and the duplicate report; `StepSummary` and
`JobSummary` add a job file's steps up. Every stage fills its counts in; the CLI prints them
(cli/report.py) and the Python API returns them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from importer.columns import ERROR, LINE, RULE
from importer.errors import ImporterError, OutputError
from importer.files import write_atomic

if TYPE_CHECKING:
    import polars as pl

EXAMPLES_PER_RULE = 3
# Dead letters are counted by reason (status and the API's message, cut to REASON_CHARS); past
# DEAD_REASONS distinct reasons the rest count as one, so a message naming each row's own value
# cannot grow the report with the file.
REASON_CHARS = 120
DEAD_REASONS = 20
OTHER_REASONS = "(other reasons)"
DEAD_REASONS_SHOWN = 5
# The timeline keeps at most this many intervals: past it, neighbours merge and the interval
# doubles, so an hour-long migration and a ten-second run both draw as a readable chart.
TIMELINE_POINTS = 240
TIMELINE_FIELDS = ("sent", "failed", "retries", "throttled")


@dataclass(slots=True)
class Timeline:
    """The sending over time, per interval from its start: rows delivered (`sent`) and
    dead-lettered (`failed`), retries, and how many of those were 429s (`throttled`)."""

    interval_s: float = 1.0
    points: list[list[int]] = field(default_factory=list)

    def add(self, elapsed_s: float, field_index: int) -> None:
        """Count one event of TIMELINE_FIELDS[field_index] at `elapsed_s` into the sending."""
        index = int(max(elapsed_s, 0.0) // self.interval_s)
        while index >= TIMELINE_POINTS:
            self._coarsen()
            index = int(max(elapsed_s, 0.0) // self.interval_s)
        while len(self.points) <= index:
            self.points.append([0] * len(TIMELINE_FIELDS))
        self.points[index][field_index] += 1

    def _coarsen(self) -> None:
        pairs = zip(
            self.points[0::2], [*self.points[1::2], [0] * len(TIMELINE_FIELDS)], strict=False
        )
        self.points = [[a + b for a, b in zip(x, y, strict=True)] for x, y in pairs]
        self.interval_s *= 2

    def as_report(self) -> dict[str, Any]:
        """`timeline` in the JSON report: the interval and one object per interval."""
        return {
            "interval_s": self.interval_s,
            "points": [
                {
                    "t_s": round(i * self.interval_s, 3),
                    **dict(zip(TIMELINE_FIELDS, point, strict=True)),
                }
                for i, point in enumerate(self.points)
            ],
        }


@dataclass(slots=True)
class Summary:
    """Counts of one job, filled in as it goes; `as_report()` is the `--report` JSON.

    `stop` is why the run ended before sending everything (a TokenRefusedError for a refused
    token), for the CLI to report as the error it is.
    """

    rows_read: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0
    # Valid rows another shard sends (`--shard`): neither sent nor rejected here.
    rows_other_shards: int = 0
    # Rows whose time lies outside --since/--until: neither sent nor rejected.
    rows_outside_window: int = 0
    # Rows the mapping's `where` left out: neither sent nor rejected.
    rows_filtered: int = 0
    # Cells each of the mapping's repairs changed (null_marker, coalesce, normalise, ...).
    repairs: Counter[str] = field(default_factory=Counter)
    rows_sent: int = 0
    rows_skipped: int = 0
    # Rows not sent because an earlier run dead-lettered them (not "done before").
    rows_failed_before: int = 0
    rows_failed: int = 0
    requests: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    blank_lines: int = 0
    naive_times: int = 0
    rejects_by_rule: Counter[str] = field(default_factory=Counter)
    reject_examples: dict[str, list[str]] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    dedup: DedupReport | None = None
    dry_run: bool = False
    stop: ImporterError | None = None
    interrupted: bool = False
    embedded: dict[str, Any] | None = None
    dead_letter_file: str | None = None
    # The whole command that sends the dead letters again (pipeline/next_step.py).
    replay_command: str | None = None
    warnings: list[str] = field(default_factory=list)
    # What the user should know about how rows travel, though nothing is wrong with them.
    notes: list[str] = field(default_factory=list)
    dead_by_reason: Counter[str] = field(default_factory=Counter)
    dead_examples: dict[str, str] = field(default_factory=dict)
    # Jobs of an action delivered as jobs: file, job id, rows, final state, rows completed.
    jobs: list[dict[str, Any]] = field(default_factory=list)
    shard: str | None = None  # `K/N` with --shard
    timeline: Timeline | None = None  # what was sent over time; None when nothing was

    @property
    def stopped(self) -> str | None:
        """The text of `stop`, as the summary and the report say it."""
        return None if self.stop is None else str(self.stop)

    @property
    def has_problems(self) -> bool:
        """Exit 3: rows rejected or undeliverable, or events the API would drop as duplicates
        that the mapping does not accept losing, or a changed input left out (not sent)."""
        dropped = self.dedup is not None and self.dedup.unaccepted
        changed = any(item.get("status") == "changed" for item in self.inputs)
        return bool(self.rows_rejected or self.rows_failed or dropped or changed)

    def add_rejects(self, rejects: pl.DataFrame, *, source: str) -> None:
        """Count a batch's rejects by rule and keep a few examples of each."""
        if rejects.height == 0:
            return
        self.rows_rejected += rejects.height
        for rule, count in rejects[RULE].value_counts().iter_rows():
            self.rejects_by_rule[rule] += count
        for rule, group in rejects.group_by(RULE, maintain_order=True):
            examples = self.reject_examples.setdefault(str(rule[0]), [])
            for line, message in group.select(LINE, ERROR).head(EXAMPLES_PER_RULE).iter_rows():
                if len(examples) < EXAMPLES_PER_RULE:
                    examples.append(f"{source}, line {line}: {message}")

    def add_dead(self, status: int | None, error: str | None, *, where: str) -> None:
        """Count one dead letter under its reason, keeping the first row of each as an example."""
        reason = error or "no answer"
        if status is not None and not reason.startswith(f"HTTP {status}"):
            reason = f"HTTP {status}: {reason}"
        if len(reason) > REASON_CHARS:
            reason = reason[: REASON_CHARS - 1] + "…"
        if reason not in self.dead_by_reason and len(self.dead_by_reason) >= DEAD_REASONS:
            reason = OTHER_REASONS
        self.dead_by_reason[reason] += 1
        self.dead_examples.setdefault(reason, where)

    def as_report(self) -> dict[str, Any]:
        """The JSON report: the contract's fields first, then the details."""
        report = {
            key: getattr(self, key)
            for key in (
                "rows_read",
                "rows_valid",
                "rows_rejected",
                "rows_sent",
                "rows_skipped",
                "rows_failed",
                "requests",
                "retries",
            )
        }
        report["elapsed_s"] = round(self.elapsed_s, 3)
        report.update(
            rows_failed_before=self.rows_failed_before,
            dry_run=self.dry_run,
            shard=self.shard,
            rows_other_shards=self.rows_other_shards,
            rows_outside_window=self.rows_outside_window,
            rows_filtered=self.rows_filtered,
            repairs=dict(sorted(self.repairs.items())),
            blank_lines=self.blank_lines,
            naive_times=self.naive_times,
            rejects_by_rule=dict(self.rejects_by_rule),
            reject_examples=self.reject_examples,
            dedup=asdict(self.dedup) if self.dedup else None,
            inputs=self.inputs,
            stopped=self.stopped,
            interrupted=self.interrupted,
            dead_letter_file=self.dead_letter_file,
            dead_letters_by_reason=dict(self.dead_by_reason.most_common()),
            dead_letter_examples=self.dead_examples,
            embedded_server=self.embedded,
            jobs=self.jobs,
            warnings=self.warnings,
            notes=self.notes,
            timeline=self.timeline.as_report() if self.timeline is not None else None,
        )
        return report


COUNTERS = (
    "rows_read",
    "rows_valid",
    "rows_rejected",
    "rows_sent",
    "rows_skipped",
    "rows_failed_before",
    "rows_failed",
    "requests",
    "retries",
    "elapsed_s",
    "blank_lines",
    "naive_times",
    "rows_outside_window",
    "rows_other_shards",
    "rows_filtered",
)


@dataclass(slots=True)
class StepSummary:
    """One step of a job file: what it read and sent (`summary`, None when it did not run this
    time) and how it ended: done, skipped (done before), failed (every row), stopped,
    interrupted or not run (`reason` says why)."""

    name: str
    mapping: str
    inputs: list[str]
    status: str
    summary: Summary | None = None
    reason: str | None = None
    # A step skipped as done before whose run then had rows rejected or failed.
    problems_before: bool = False

    def as_report(self) -> dict[str, Any]:
        """The step's section of the JSON report: its name, status and its own report."""
        report: dict[str, Any] = {
            "name": self.name,
            "mapping": self.mapping,
            "inputs": [{"file": name} for name in self.inputs],
            "status": self.status,
            "reason": self.reason,
        }
        if self.summary is not None:
            report.update(self.summary.as_report())
        return report


@dataclass(slots=True)
class JobSummary:
    """A job file's run: a StepSummary per step in running order, and why steps were not run."""

    job_file: str
    dry_run: bool = False
    steps: list[StepSummary] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    @property
    def ran(self) -> list[Summary]:
        """The summaries of the steps that ran this time."""
        return [step.summary for step in self.steps if step.summary is not None]

    @property
    def stop(self) -> ImporterError | None:
        """Why a step ended the job (a refused token, a redirect), if one did."""
        return next((s.stop for s in self.ran if s.stop is not None), None)

    @property
    def interrupted(self) -> bool:
        """Whether the user cut the job short."""
        return any(s.interrupted for s in self.ran)

    @property
    def has_problems(self) -> bool:
        """Exit 3: a step had problems, or steps were not run because one failed."""
        before = any(step.problems_before for step in self.steps)
        return before or bool(self.blocked) or any(s.has_problems for s in self.ran)

    def total(self) -> Summary:
        """The steps' counts summed, with their rejects, dead letters and warnings."""
        total = Summary(dry_run=self.dry_run)
        for step in self.steps:
            part = step.summary
            if part is None:
                continue
            for name in COUNTERS:
                setattr(total, name, getattr(total, name) + getattr(part, name))
            total.rejects_by_rule.update(part.rejects_by_rule)
            total.repairs.update(part.repairs)
            for rule, examples in part.reject_examples.items():
                kept = total.reject_examples.setdefault(rule, [])
                kept.extend(examples[: EXAMPLES_PER_RULE - len(kept)])
            total.inputs.extend(part.inputs)
            total.dead_by_reason.update(part.dead_by_reason)
            for reason, where in part.dead_examples.items():
                total.dead_examples.setdefault(reason, where)
            total.jobs.extend(part.jobs)
            if part.embedded is not None:
                embedded = total.embedded or {"accepted": 0, "duplicates": 0}
                for key in ("accepted", "duplicates"):
                    embedded[key] += part.embedded.get(key, 0)
                total.embedded = embedded
            total.warnings.extend(f"step {step.name}: {w}" for w in part.warnings)
            total.notes.extend(f"step {step.name}: {n}" for n in part.notes)
            total.stop = total.stop or part.stop
            total.shard = total.shard or part.shard
            total.interrupted = total.interrupted or part.interrupted
        total.warnings.extend(self.blocked)
        return total

    def as_report(self) -> dict[str, Any]:
        """The JSON report: the contract's fields summed over the steps at the top level, then
        the job file and a section per step."""
        report = self.total().as_report()
        report.update(job_file=self.job_file, steps=[step.as_report() for step in self.steps])
        return report


def write_report(path: Path, summary: Summary | JobSummary) -> None:
    """Write the JSON report atomically, so a reader never sees half of one."""
    text = json.dumps(summary.as_report(), indent=2, ensure_ascii=False) + "\n"
    try:
        write_atomic(path, text.encode())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True)
class DedupReport:
    """Per folded event name: rows the API would drop, and raw names that fold into one."""

    would_drop: dict[str, int]
    folded_names: dict[str, list[str]]
    protected: bool
    api: str = ""
    window: str = ""
    time_key: str | None = None
    accepted: bool = False

    @property
    def total(self) -> int:
        """How many rows in all would be dropped."""
        return sum(self.would_drop.values())

    @property
    def unaccepted(self) -> bool:
        """Whether the API would drop events the mapping does not say it accepts losing."""
        return self.total > 0 and not self.accepted
