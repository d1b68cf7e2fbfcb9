"""Events as JSON lines, for schedulers and log collectors (`--log-format json`).

One JSON object per line, each with `ts` (ISO 8601, UTC) and `event`:

    start     the command, its inputs, mapping, destination and endpoint (never the token)
    step      a job file's step started ("started") or ended (its status)
    progress  every few seconds while rows go: rows done, rows a second, retries
    retry     a request will be tried again (at most one line per interval, with the count
              of those not shown)
    warning   something the user should look at; note: something worth knowing
    summary   the fields of the JSON report (--report), and the exit code
    error     message, hint and exit code of a run that ends in an error

The command line decides when each is written, from the core's progress and notice callbacks;
this module only shapes and writes them. It writes to the stream it is given and never exits.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

import click

from importer import __version__
from importer.cli.early import JSON
from importer.outcome import JobSummary, Summary
from importer.progress import DeliveryProgress

if TYPE_CHECKING:
    from importer.checks.validate import Window
    from importer.jobfile.parse import JobFile
    from importer.mapping.file import Mapping as MappingFile

TEXT = "text"
FORMATS = (TEXT, JSON)
DEFAULT_PROGRESS_S = 10.0


def utc_now() -> str:
    """Now, as the `ts` of an event: ISO 8601 UTC to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shown_endpoint(endpoint: str | None) -> str | None:
    """An endpoint as an event shows it: without user info, query or fragment, where secrets
    tend to hide (the endpoint check refuses them, but the start event may come first)."""
    if endpoint is None or "://" not in endpoint:
        return endpoint
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        return "(not a URL)"
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()


class EventLog:
    """Writes events, one JSON object a line, to `stream`; safe to call from several threads."""

    def __init__(self, stream: TextIO, *, now: Callable[[], str] = utc_now) -> None:
        self._stream = stream
        self._now = now
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event: `ts` and `event` first, then `fields` (values JSON cannot hold are
        written as their text)."""
        line = json.dumps(
            {"ts": self._now(), "event": event, **fields},
            ensure_ascii=False,
            default=str,
            separators=(",", ":"),
        )
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def error(self, message: str, *, hint: str | None, exit_code: int) -> None:
        """The error that ends the command."""
        self.emit("error", message=message, hint=hint, exit_code=exit_code)

    def summary(self, report: dict[str, Any], *, exit_code: int) -> None:
        """The warnings and notes of a finished run, one event each, then its summary."""
        for warning in report.get("warnings") or ():
            self.emit("warning", message=warning)
        for note in report.get("notes") or ():
            self.emit("note", message=note)
        self.emit("summary", **report, exit_code=exit_code)


class _Due:
    """Says when `every` seconds have passed since it last said so (0: every time)."""

    def __init__(self, every: float, clock: Callable[[], float]) -> None:
        self.every = every
        self._clock = clock
        self.started = clock()
        self._last = self.started

    def __call__(self) -> bool:
        now = self._clock()
        if now - self._last < self.every:
            return False
        self._last = now
        return True

    def elapsed(self) -> float:
        return self._clock() - self.started


def _rate(rows: int, seconds: float) -> float:
    return round(rows / seconds, 1) if seconds > 0 else 0.0


class ReadEvents:
    """`progress` events of `validate` and `run --dry-run`, as rows are read (job.Progress)."""

    def __init__(
        self, log: EventLog, *, every: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = log
        self._due = _Due(every, clock)
        self._rows = 0
        self._file: str | None = None
        self._total: int | None = None
        self._file_rows = 0

    def begin(self, name: str, total: int | None) -> None:
        """A new input starts."""
        self._file, self._total, self._file_rows = name, total, 0

    def advance(self, rows: int) -> None:
        """Count rows read; write a progress event when one is due."""
        self._rows += rows
        self._file_rows += rows
        if self._due():
            elapsed = self._due.elapsed()
            self._log.emit(
                "progress",
                stage="read",
                file=self._file,
                file_rows=self._file_rows,
                file_total=self._total,
                rows_done=self._rows,
                rows_per_s=_rate(self._rows, elapsed),
                elapsed_s=round(elapsed, 3),
            )

    def end(self) -> None:
        """The input is done."""


class DeliveryEvents(DeliveryProgress):
    """`progress`, `retry` and `note` events of a delivery (run, replay).

    Progress is written when due as results come in, and by `tick()`, which the caller runs
    every `every` seconds so that a run waiting on a slow API or a background job still says
    so. Retries are written at most one every `retry_every` seconds, as the terminal shows them.
    """

    def __init__(
        self,
        log: EventLog,
        *,
        every: float,
        retry_every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.every = every
        self._clock = clock
        self._due = _Due(every, clock)
        self._retry_every = retry_every
        self._retry_shown_at: float | None = None
        self._retries_unshown = 0
        self._total: int | None = None
        self._sent = self._failed = self._skipped = self._retries = self._rejected = 0

    def begin(self, total: int | None) -> None:
        """Sending starts (each step of a job file starts again)."""
        self._total = total
        self._sent = self._failed = self._skipped = self._retries = self._rejected = 0
        self._due = _Due(self.every, self._clock)

    def result(self, *, delivered: bool, retries: int) -> None:
        """Count one row; write a progress event when one is due."""
        self._retries += retries
        if delivered:
            self._sent += 1
        else:
            self._failed += 1
        if self._due():
            self._progress()

    def skip(self, rows: int, *, rejected: int = 0, blank: int = 0, failed: int = 0) -> None:
        """Count rows that will not be sent: done before (`rows_skipped`, as in the summary and
        the report) and rejected (`rows_rejected`)."""
        self._skipped += rows
        self._rejected += rejected

    def tick(self) -> None:
        """Write a progress event if one is due."""
        if self._due():
            self._progress()

    def _progress(self) -> None:
        elapsed = self._due.elapsed()
        done = self._sent + self._failed
        self.log.emit(
            "progress",
            stage="send",
            rows_done=done,
            rows_sent=self._sent,
            rows_failed=self._failed,
            rows_skipped=self._skipped,
            rows_rejected=self._rejected,
            total=self._total,
            rows_per_s=_rate(done, elapsed),
            retries=self._retries,
            elapsed_s=round(elapsed, 3),
        )

    def notice(self, message: str) -> None:
        """Something the user should read now, as a note."""
        self.log.emit("note", message=message)

    def retry(self, message: str) -> None:
        """The first retry, then at most one every `retry_every` seconds with the count of those
        not written: a throttled run of a million rows would otherwise write a line each."""
        now = self._clock()
        if self._retry_shown_at is not None and now - self._retry_shown_at < self._retry_every:
            self._retries_unshown += 1
            return
        more, self._retries_unshown, self._retry_shown_at = self._retries_unshown, 0, now
        self.log.emit("retry", message=message, more_since_last=more)


# Where a command keeps its --log-format json writer and --progress-every: click's ctx.meta,
# which a command's context shares with its parent's.
EVENTS_KEY = "importer.events"


EVERY_KEY = "importer.progress_every"


def current_event_log() -> EventLog | None:
    """The command's JSON event writer, when --log-format json asked for one."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.meta.get(EVENTS_KEY)


def progress_every() -> float:
    ctx = click.get_current_context(silent=True)
    every = None if ctx is None else ctx.meta.get(EVERY_KEY)
    return DEFAULT_PROGRESS_S if every is None else float(every)


def summary_event(summary: Summary | JobSummary, code: int) -> None:
    """With --log-format json: the summary's warnings and notes, then its report and exit code."""
    events = current_event_log()
    if events is not None:
        events.summary(summary.as_report(), exit_code=code)


def _shown_input(path: Path) -> str:
    """An input as the user named it: a cloud URL whole (a Path folds `s3://` into `s3:/`)."""
    # The readers load Polars: imported by the commands that name inputs, not by every one.
    from importer.inputs.cloud import cloud_url

    return cloud_url(path) or str(path)


def start_event(
    command: str,
    inputs: tuple[Path, ...],
    *,
    mapping: MappingFile | None = None,
    job: JobFile | None = None,
    endpoint: str | None = None,
    window: Window | None = None,
    **details: Any,
) -> None:
    """With --log-format json: what the command is about to do (never the token)."""
    events = current_event_log()
    if events is None:
        return
    fields: dict[str, Any] = {"command": command, "version": __version__}
    fields["inputs"] = [_shown_input(path) for path in inputs]
    if mapping is not None:
        fields.update(
            mapping=str(mapping.path),
            destination=mapping.destination.name,
            action=mapping.action.name,
        )
    if job is not None:
        fields["job_file"] = str(job.path)
        fields["steps"] = [
            {
                "name": step.name,
                "mapping": str(step.mapping.path),
                "destination": step.mapping.destination.name,
                "action": step.mapping.action.name,
                "inputs": [_shown_input(path) for path in step.inputs],
            }
            for step in job.steps
        ]
    fields["endpoint"] = shown_endpoint(endpoint)
    if window is not None:
        fields.update(
            since=None if window.since is None else window.since.isoformat(),
            until=None if window.until is None else window.until.isoformat(),
        )
    events.emit("start", **fields, **details)
