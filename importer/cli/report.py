"""The summary a person reads after a run, a step or a job file: counts, reasons, duplicates and
what to do next."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from importer.api.report import check_exit_code
from importer.cli.events import (
    current_event_log,
    summary_event,
)
from importer.cli.options import REPORT_HTML_KEY
from importer.cli.shell import (
    exit_code,
    fail,
)
from importer.errors import ImporterError
from importer.outcome import (
    COUNTERS,
    DEAD_REASONS_SHOWN,
    DedupReport,
    JobSummary,
    Summary,
    write_report,
)

if TYPE_CHECKING:
    pass


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
    if summary.rows_filtered:
        rows.append(("filtered (mapping's where)", summary.rows_filtered))
    rows += [(f"repaired: {name}", count) for name, count in sorted(summary.repairs.items())]
    if not summary.dry_run and (
        summary.requests or summary.rows_skipped or summary.rows_sent or summary.rows_failed_before
    ):
        rows += [
            ("delivered", summary.rows_sent),
            ("skipped (done before)", summary.rows_skipped),
            *(
                [("skipped (failed before)", summary.rows_failed_before)]
                if summary.rows_failed_before
                else []
            ),
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
        again = summary.replay_command or "importer replay <that file>"
        lines.append(f"  fix them, then send them again with: {again}")
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


def _write_report(report: Path | None, summary: Summary | JobSummary, code: int) -> None:
    """Write --report and --report-html after the summary was printed, so a bad path loses
    nothing else."""
    page = click.get_current_context().meta.get(REPORT_HTML_KEY)
    try:
        if report is not None:
            write_report(report, summary)
        if page is not None:
            from importer.pipeline.report_page import write_report_page  # only when asked for

            write_report_page(page, summary, exit_code=code)
    except ImporterError as exc:
        fail(exc)


def finish(summary: Summary, *, report: Path | None, quiet: bool) -> None:
    code = check_exit_code(summary)
    if not quiet:
        click.echo(format_summary(summary))
    _write_report(report, summary, code)
    summary_event(summary, code)
    sys.exit(code)


def finish_job(summary: JobSummary, *, report: Path | None, quiet: bool) -> NoReturn:
    """Print a job's summary, write its report, exit: 1 when a step stopped it (a refused
    token, a redirect), 130 when interrupted, 3 when rows were rejected or failed or steps
    were not run because one failed, else 0."""
    code = exit_code(summary)
    if not quiet or summary.stop is not None:
        click.echo(format_job_summary(summary))
    elif summary.blocked and current_event_log() is None:  # else among the summary event's warnings
        for message in summary.blocked:
            click.echo(f"stopped early: {message}", err=True)
    _write_report(report, summary, code)
    summary_event(summary, code)
    if summary.stop is not None:
        fail(summary.stop)
    sys.exit(code)


def finish_delivery(summary: Summary, *, report: Path | None, quiet: bool) -> None:
    code = exit_code(summary)
    if not quiet or summary.stop is not None:
        click.echo(format_summary(summary))
    _write_report(report, summary, code)
    summary_event(summary, code)
    if summary.stop is not None:
        fail(summary.stop)
    sys.exit(code)
