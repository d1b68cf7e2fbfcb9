"""What the Python API returns: `Report`, the JSON report (`--report`) as a typed, frozen value, and the exit code a run ends with, which the CLI exits with too.

Built from the summaries' own `as_report()` (importer/outcome.py), so the report file, the JSON
summary event and `Report.as_dict()` never disagree; schemas/report.schema.json describes them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from importer.outcome import JobSummary, StepSummary, Summary

# The exit codes, the contract other tools rely on (DESIGN.md).
EXIT_OK = 0
EXIT_FATAL = 1
EXIT_PROBLEMS = 3
EXIT_INTERRUPTED = 130


def check_exit_code(summary: Summary | JobSummary) -> int:
    """`validate` or a dry run: 3 when any row is rejected (or the API would drop events the
    mapping does not accept losing), else 0."""
    return EXIT_PROBLEMS if summary.has_problems or summary.stop is not None else EXIT_OK


def delivery_exit_code(summary: Summary | JobSummary) -> int:
    """A delivery's exit code: 1 stopped (the stop is the error), 130 interrupted, 3 rows
    rejected or failed, else 0."""
    if summary.stop is not None:
        return EXIT_FATAL
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_PROBLEMS if summary.has_problems else EXIT_OK


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


def _frozen(value: Any) -> Any:
    """`value` with its dicts read-only and its lists tuples, all the way down."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _frozen(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class StepReport:
    """One step of a job file: how it ended and, when it ran this time, its own report."""

    name: str
    mapping: str
    inputs: tuple[str, ...]
    status: str
    reason: str | None
    report: Report | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """The outcome of `run`, `validate`, `dry_run` or `replay`: the JSON report's fields.

    The counters first (the contract), then the details. Mappings are read-only and lists are
    tuples: a Report is a value. `as_dict()` is the JSON report, with `exit_code`.
    """

    rows_read: int
    rows_valid: int
    rows_rejected: int
    rows_sent: int
    rows_skipped: int
    rows_failed: int
    requests: int
    retries: int
    elapsed_s: float
    exit_code: int
    dry_run: bool = False
    shard: str | None = None
    rows_other_shards: int = 0
    rows_outside_window: int = 0
    blank_lines: int = 0
    naive_times: int = 0
    rejects_by_rule: Mapping[str, int] = field(default_factory=_empty)
    reject_examples: Mapping[str, tuple[str, ...]] = field(default_factory=_empty)
    dedup: Mapping[str, Any] | None = None
    inputs: tuple[Mapping[str, Any], ...] = ()
    stopped: str | None = None
    interrupted: bool = False
    dead_letter_file: str | None = None
    dead_letters_by_reason: Mapping[str, int] = field(default_factory=_empty)
    dead_letter_examples: Mapping[str, str] = field(default_factory=_empty)
    embedded_server: Mapping[str, Any] | None = None
    jobs: tuple[Mapping[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    job_file: str | None = None
    steps: tuple[StepReport, ...] = ()
    _raw: Mapping[str, Any] = field(default_factory=_empty, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """Whether the run ended with exit code 0: every valid row delivered (or, checking
        only, every row valid)."""
        return self.exit_code == EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        """The JSON report, as `--report` writes it, with `exit_code`: a fresh copy each time."""
        return {**copy.deepcopy(dict(self._raw)), "exit_code": self.exit_code}

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], *, exit_code: int, steps: tuple[StepReport, ...] = ()
    ) -> Report:
        """A Report of a JSON report (`as_report()` of a summary)."""
        known = {name for name in cls.__dataclass_fields__ if not name.startswith("_")}
        fields = {key: _frozen(value) for key, value in raw.items() if key in known}
        fields.update(steps=steps, exit_code=exit_code)
        return cls(**fields, _raw=copy.deepcopy(dict(raw)))


def report_of(summary: Summary | JobSummary, *, checking: bool = False) -> Report:
    """The Report of a finished run (`checking`: of validate or a dry run, whose exit code
    only looks at the rows)."""
    code = check_exit_code if checking else delivery_exit_code
    steps: tuple[StepReport, ...] = ()
    if isinstance(summary, JobSummary):
        steps = tuple(_step_report(step, checking=checking) for step in summary.steps)
    return Report.from_dict(summary.as_report(), exit_code=code(summary), steps=steps)


def _step_report(step: StepSummary, *, checking: bool) -> StepReport:
    return StepReport(
        name=step.name,
        mapping=step.mapping,
        inputs=tuple(step.inputs),
        status=step.status,
        reason=step.reason,
        report=None if step.summary is None else report_of(step.summary, checking=checking),
    )
