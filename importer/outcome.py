"""What a job tells the user afterwards: the summary, the rejects file and the JSON report.

The summary is built as text here and printed by the CLI. The rejects file (`--rejects`) is CSV
or JSONL by its ending; each row carries `_file`, `_line`, `_rule`, `_error` and then the row's
own columns, so a fixed rejects file can be imported again (the reader drops those columns).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl

from importer.checks.dedup import DedupReport
from importer.columns import COLUMN, ERROR, LINE, RAW, REJECT_META, RULE
from importer.errors import ImporterError, OutputError
from importer.files import open_output, write_atomic
from importer.jsontext import json_as_text, json_object, json_string

EXAMPLES_PER_RULE = 3
# Dead letters are counted by reason (status and the API's message, cut to REASON_CHARS); past
# DEAD_REASONS distinct reasons the rest count as one, so a message naming each row's own value
# cannot grow the report with the file.
REASON_CHARS = 120
DEAD_REASONS = 20
OTHER_REASONS = "(other reasons)"
DEAD_REASONS_SHOWN = 5


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
    rows_sent: int = 0
    rows_skipped: int = 0
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
    warnings: list[str] = field(default_factory=list)
    # What the user should know about how rows travel, though nothing is wrong with them.
    notes: list[str] = field(default_factory=list)
    dead_by_reason: Counter[str] = field(default_factory=Counter)
    dead_examples: dict[str, str] = field(default_factory=dict)
    # Jobs of an action delivered as jobs: file, job id, rows, final state, rows completed.
    jobs: list[dict[str, Any]] = field(default_factory=list)
    shard: str | None = None  # `K/N` with --shard

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
            dry_run=self.dry_run,
            shard=self.shard,
            rows_other_shards=self.rows_other_shards,
            rows_outside_window=self.rows_outside_window,
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
        )
        return report


COUNTERS = (
    "rows_read",
    "rows_valid",
    "rows_rejected",
    "rows_sent",
    "rows_skipped",
    "rows_failed",
    "requests",
    "retries",
    "elapsed_s",
    "blank_lines",
    "naive_times",
    "rows_outside_window",
    "rows_other_shards",
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


def format_job_summary(job: JobSummary) -> str:
    """A header and the usual table per step, then the job's total."""
    lines = []
    for number, step in enumerate(job.steps, start=1):
        header = f"step {number}/{len(job.steps)} {step.name}: {step.status}"
        if step.reason:
            header += f" ({step.reason})"
        lines.append(f"{header}  [{', '.join(step.inputs)} -> {step.mapping}]")
        if step.summary is not None:
            lines.append(format_summary(step.summary))
        lines.append("")
    states = Counter(step.status for step in job.steps)
    shown = ", ".join(f"{count} {state}" for state, count in states.items())
    lines.append(f"job total ({job.job_file}: {len(job.steps)} step(s), {shown}):")
    total = job.total()
    # The table alone: each step's own section above already lists its rejects and warnings.
    counts = Summary(dry_run=job.dry_run)
    for name in COUNTERS:
        setattr(counts, name, getattr(total, name))
    lines.append(format_summary(counts))
    lines.extend(f"stopped early: {message}" for message in job.blocked)
    return "\n".join(lines)


def write_report(path: Path, summary: Summary | JobSummary) -> None:
    """Write the JSON report atomically, so a reader never sees half of one."""
    text = json.dumps(summary.as_report(), indent=2, ensure_ascii=False) + "\n"
    try:
        write_atomic(path, text.encode())
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def format_summary(summary: Summary) -> str:
    """The table printed at the end of a job."""
    rows = [
        ("rows read", summary.rows_read),
        ("valid", summary.rows_valid),
        ("rejected", summary.rows_rejected),
    ]
    if summary.shard is not None:
        rows.append(("left to other shards", summary.rows_other_shards))
    if summary.rows_outside_window:
        rows.append(("outside --since/--until", summary.rows_outside_window))
    if not summary.dry_run and (summary.requests or summary.rows_skipped or summary.rows_sent):
        rows += [
            ("delivered", summary.rows_sent),
            ("skipped (done before)", summary.rows_skipped),
            ("failed (dead letters)", summary.rows_failed),
            ("requests", summary.requests),
            ("retries", summary.retries),
        ]
    width = max(len(label) for label, _ in rows)
    lines = [f"  {label:<{width}}  {value:>10,}" for label, value in rows]
    lines.append(f"  {'elapsed':<{width}}  {summary.elapsed_s:>9.1f}s")
    if summary.shard is not None:
        lines.append(f"  (shard {summary.shard}: only the rows of its users were built or sent)")
    if summary.blank_lines:
        lines.append(f"  ({summary.blank_lines:,} blank line(s) skipped)")
    if summary.naive_times:
        lines.append(
            f"  {summary.naive_times:,} time(s) had no offset and were read in the mapping's timezone"
        )
    if summary.rejects_by_rule:
        lines.append("rejected by rule:")
        for rule, count in summary.rejects_by_rule.most_common():
            lines.append(f"  {rule:<14} {count:>8,}")
            lines.extend(f"      {example}" for example in summary.reject_examples.get(rule, []))
    lines.extend(_dedup_lines(summary.dedup))
    if summary.dead_letter_file:
        lines.append(f"dead letters: {summary.rows_failed:,} in {summary.dead_letter_file}")
        for reason, count in summary.dead_by_reason.most_common(DEAD_REASONS_SHOWN):
            lines.append(f"  {count:>8,}  {reason}")
            lines.append(f"            e.g. {summary.dead_examples[reason]}")
        lines.append("  fix them, then send them again with: importer replay <that file>")
    if summary.jobs:
        states = Counter(str(job["state"]) for job in summary.jobs)
        shown = ", ".join(f"{count:,} {state}" for state, count in states.most_common())
        lines.append(f"jobs: {len(summary.jobs):,} ({shown})")
    if summary.embedded is not None:
        embedded = summary.embedded
        what = "row(s) in its jobs" if summary.jobs else "accepted request(s)"
        lines.append(
            f"embedded server received {embedded['accepted']:,} {what}, "
            f"{embedded['duplicates']:,} of them duplicates the API would drop"
        )
    lines.extend(f"note: {note}" for note in summary.notes)
    lines.extend(f"warning: {warning}" for warning in summary.warnings)
    if summary.interrupted:
        lines.append("interrupted: run the same command again to send the rest")
    if summary.stopped:
        lines.append(f"stopped: {summary.stopped}")
    return "\n".join(lines)


def _dedup_lines(dedup: DedupReport | None) -> list[str]:
    if dedup is None:
        return []
    api = dedup.api
    lines = []
    if dedup.would_drop:
        same = (
            f"same data and the same {dedup.time_key} to the second"
            if dedup.time_key
            else "same data"
        )
        lines.append(
            f"dedup: {api} would drop {dedup.total:,} event(s) as duplicates (same user, same "
            f"event name, {same}, sent within {dedup.window}, as a replay does):"
        )
        lines.extend(
            f"  {name!r}: {count:,}" for name, count in list(dedup.would_drop.items())[:10]
        )
        if dedup.accepted:
            lines.append("  the mapping accepts these drops ([dedup] accept_drops = true)")
        else:
            lines.append(
                '  to keep them, set [dedup] data_key = "import_row" in the mapping (a row id '
                "in every event's data); to accept the drops, set [dedup] accept_drops = true"
            )
    elif dedup.protected:
        lines.append(f"dedup: every event carries a unique data key; {api} will drop none")
    elif dedup.time_key:
        lines.append(
            f"dedup: every event's data carries its time as {dedup.time_key!r}; {api} will "
            "drop none"
        )
    for folded, names in list(dedup.folded_names.items())[:10]:
        shown = ", ".join(repr(n) for n in names)
        lines.append(f"dedup: {shown} are one event to {api} ({folded!r})")
    return lines


class RejectsWriter:
    """Appends rejected rows to `--rejects`, CSV or JSONL by the path's ending.

    Batches differ in their columns (JSONL keys, several inputs), so a CSV is written at close
    from a JSONL spool beside it, with the union of columns as its header.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._csv = path.suffix.lower() in (".csv", ".tsv")
        target = path.with_name(f".{path.name}.spool") if self._csv else path
        self._spool_path = target
        self._handle: IO[str] = open_output(target, "w", shown=path)

    def write(self, rejects: pl.DataFrame, *, source: str) -> None:
        """Append a batch's rejects (LINE, RULE, COLUMN, ERROR, then the row's JSON text cells)."""
        if rejects.height == 0:
            return
        row_columns = [c for c in rejects.columns if c not in (LINE, RULE, COLUMN, ERROR, RAW)]
        # `_raw` is the plain text of a line that could not be parsed, not a JSON text cell.
        raw = [(RAW, json_string(pl.col(RAW)))] if RAW in rejects.columns else []
        if self._csv:
            # The CSV holds the text a person typed, not JSON: strings decoded, objects as JSON.
            cells = [
                pl.coalesce(json_as_text(pl.col(c)), pl.col(c).replace("null", None))
                for c in row_columns
            ]
            values = [json_string(cell) for cell in cells]
        else:
            values = [pl.col(c) for c in row_columns]
        # Every column, empty ones too: a fixed rejects file must still fit the mapping.
        null = pl.lit("null")
        members = [(c, v.fill_null(null)) for c, v in zip(row_columns, values, strict=True)]
        meta = [
            ("_file", pl.lit(json.dumps(source, ensure_ascii=False))),
            ("_line", pl.col(LINE).cast(pl.String)),
            ("_rule", json_string(pl.col(RULE))),
            ("_error", json_string(pl.col(ERROR))),
        ]
        lines = rejects.select(json_object(meta + members + raw)).to_series()
        self._handle.write("\n".join(lines.to_list()) + "\n")

    def close(self) -> None:
        """Flush, and for a CSV target convert the spool."""
        self._handle.close()
        if not self._csv:
            return
        header: dict[str, None] = dict.fromkeys(REJECT_META)
        with self._spool_path.open(encoding="utf-8") as spool:
            for line in spool:
                header.update(dict.fromkeys(json.loads(line)))
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        with (
            self._spool_path.open(encoding="utf-8") as spool,
            self.path.open("w", encoding="utf-8", newline="") as out,
        ):
            writer = csv.DictWriter(out, fieldnames=list(header), delimiter=delimiter)
            writer.writeheader()
            for line in spool:
                writer.writerow(json.loads(line))
        self._spool_path.unlink()
