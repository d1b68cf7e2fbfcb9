"""The Python API: `run`, `dry_run`, `validate` and `replay`, the same engine as the commands of the same names, returning a `Report` instead of printing and exiting.

Errors raise `ImporterError` and its subclasses (importer/errors.py), never SystemExit. A run the
API stopped (a refused token: TokenRefusedError) raises that error with the run's Report as its
`report`; an interrupted delivery (Ctrl-C, SIGTERM, a notebook's interrupt) drains the requests
in flight, saves the checkpoint and raises KeyboardInterrupt. Options are keyword-only, with the
command line's defaults.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from importer.api.callback import DeliveryCallback, OnProgress, ReadCallback
from importer.api.engine import replay_summary, run_summary, validate_summary
from importer.api.report import Report, report_of
from importer.api.requests import Front, Reading, Sending, default_state, window_of
from importer.api.runner import run_delivery
from importer.checks.shard import Shard, parse_shard
from importer.errors import ImporterError, OptionError
from importer.inputs.common import DEFAULT_BATCH_ROWS
from importer.outcome import JobSummary, Summary, write_report
from importer.progress import DeliveryProgress, NoProgress

PathLike = str | os.PathLike[str]
Inputs = PathLike | Sequence[PathLike]
Moment = datetime | str


def _paths(inputs: Inputs) -> tuple[Path, ...]:
    """One path or several, as paths; a bare string is one input, not its characters."""
    if isinstance(inputs, str | os.PathLike):
        return (Path(inputs),)
    paths = tuple(Path(item) for item in inputs)
    if not paths:
        raise OptionError("no inputs: give at least one file, folder, glob or job file")
    return paths


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def _moment(value: Moment | None, name: str) -> datetime | None:
    """An ISO 8601 date or time (a string or a datetime) as an aware datetime; UTC when it has
    no offset, as --since and --until read it."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise OptionError(
                f"{name}: {value!r} is not an ISO 8601 date or time, such as 2024-05-01 or "
                "2024-05-01T06:00:00Z"
            ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _shard(shard: Shard | str | None) -> Shard | None:
    return parse_shard(shard) if isinstance(shard, str) else shard


def _reading(
    inputs: Inputs,
    *,
    mapping: PathLike | None,
    rejects: PathLike | None,
    report: PathLike | None,
    batch_rows: int,
    shard: Shard | None,
    since: Moment | None,
    until: Moment | None,
) -> Reading:
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise OptionError(f"batch_rows must be a whole number of at least 1, not {batch_rows!r}")
    return Reading(
        inputs=_paths(inputs),
        mapping=_path(mapping),
        rejects=_path(rejects),
        report=_path(report),
        batch_rows=batch_rows,
        shard=shard,
        window=window_of(_moment(since, "since"), _moment(until, "until")),
    )


def _front(progress: OnProgress | None) -> Front:
    delivery = DeliveryProgress() if progress is None else DeliveryCallback(progress)
    return Front(
        deliver=lambda job: run_delivery(job, notice=delivery.notice),
        read=NoProgress() if progress is None else ReadCallback(progress),
        delivery=delivery,
        # A damaged job record, say: the caller's callback hears it as a notice.
        warning=delivery.notice,
    )


def _finish(
    summary: Summary | JobSummary, *, report: PathLike | None, checking: bool = False
) -> Report:
    """The Report; the report file written first when asked for. A stopped run raises its
    error (with the Report), an interrupted one KeyboardInterrupt, after both were saved."""
    result = report_of(summary, checking=checking)
    if report is not None:
        write_report(Path(report), summary)
    if summary.stop is not None and not checking:
        stop: ImporterError = summary.stop
        stop.report = result
        raise stop
    if summary.interrupted:
        raise KeyboardInterrupt(
            "interrupted: the checkpoint holds every row the API acknowledged; run again to go on"
        )
    return result


def validate(
    inputs: Inputs,
    *,
    mapping: PathLike | None = None,
    rejects: PathLike | None = None,
    report: PathLike | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    shard: Shard | str | None = None,
    since: Moment | None = None,
    until: Moment | None = None,
    progress: OnProgress | None = None,
) -> Report:
    """Check `inputs` (paths, folders, globs, s3:// or gs:// URLs; or one job file, JOB.toml,
    without `mapping`) against the mapping and the API's rules; send nothing.

    Returns the Report: `exit_code` 3 when a row was rejected or the API would drop events as
    duplicates that the mapping does not accept losing, else 0. `rejects` writes the bad rows
    (CSV or JSONL by the name's ending); `report` the JSON report.
    """
    reading = _reading(
        inputs,
        mapping=mapping,
        rejects=rejects,
        report=report,
        batch_rows=batch_rows,
        shard=_shard(shard),
        since=since,
        until=until,
    )
    summary = validate_summary(reading, _front(progress))
    return _finish(summary, report=report, checking=True)


def dry_run(
    inputs: Inputs,
    *,
    mapping: PathLike | None = None,
    out: PathLike | None = None,
    rejects: PathLike | None = None,
    report: PathLike | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    shard: Shard | str | None = None,
    since: Moment | None = None,
    until: Moment | None = None,
    progress: OnProgress | None = None,
) -> Report:
    """Read, validate and build every payload of `inputs`, send nothing (`importer run
    --dry-run`); `out` writes the payloads as JSONL, for review or `replay`."""
    reading = _reading(
        inputs,
        mapping=mapping,
        rejects=rejects,
        report=report,
        batch_rows=batch_rows,
        shard=_shard(shard),
        since=since,
        until=until,
    )
    summary = run_summary(
        reading,
        Sending(),
        _front(progress),
        state_dir=default_state(reading.shard),
        dry_run=True,
        out=_path(out),
    )
    return _finish(summary, report=report, checking=True)


def run(
    inputs: Inputs,
    *,
    mapping: PathLike | None = None,
    endpoint: str | None = None,
    state: PathLike | None = None,
    token: str | None = None,
    token_file: PathLike | None = None,
    concurrency: int = 32,
    rate: float | None = None,
    max_retries: int = 8,
    timeout: float = 30.0,
    workers: int | None = None,
    per_user_order: bool = False,
    order: Literal["file", "time"] = "file",
    since: Moment | None = None,
    until: Moment | None = None,
    shard: Shard | str | None = None,
    rejects: PathLike | None = None,
    dead_letter: PathLike | None = None,
    report: PathLike | None = None,
    fresh: bool = False,
    resend_changed: bool = False,
    past_failed: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    poll_interval: float | None = None,
    job_wait: float = 3600.0,
    yes: bool = False,
    progress: OnProgress | None = None,
) -> Report:
    """Validate `inputs`, build a payload per row and send every one not yet acknowledged
    (`importer run`); or, with one job file (JOB.toml) and no `mapping`, run its steps.

    `endpoint`: the API's base URL (default: the destination's production URL), or "embedded"
    for the built-in mock. `state` (default .importer/, or .importer/shard-K-of-N with a
    `shard`) keeps the checkpoint: call again with the same arguments and only the rest is sent.
    The token is `token`, else read from `token_file`, else the destination's environment
    variable. An action that cannot be undone (a deletion) runs only with `yes=True`: nobody
    can be asked here. Returns the Report (`exit_code` 3 when rows were
    rejected or undeliverable); raises TokenRefusedError when the API refused the token, and
    KeyboardInterrupt after saving when interrupted.
    """
    chosen = _shard(shard)
    reading = _reading(
        inputs,
        mapping=mapping,
        rejects=rejects,
        report=report,
        batch_rows=batch_rows,
        shard=chosen,
        since=since,
        until=until,
    )
    sending = Sending(
        endpoint=endpoint,
        token=token,
        token_file=_path(token_file),
        fresh=fresh,
        dead_letter=_path(dead_letter),
        concurrency=concurrency,
        rate=rate,
        max_retries=max_retries,
        timeout=timeout,
        workers=workers,
        poll_interval=poll_interval,
        job_wait=job_wait,
        per_user_order=per_user_order,
        order=order,
        yes=yes,
    )
    summary = run_summary(
        reading,
        sending,
        _front(progress),
        state_dir=default_state(chosen) if state is None else Path(state),
        resend_changed=resend_changed,
        past_failed=past_failed,
    )
    return _finish(summary, report=report)


def replay(
    payloads: PathLike,
    *,
    destination: str | None = None,
    endpoint: str | None = None,
    state: PathLike | None = None,
    token: str | None = None,
    token_file: PathLike | None = None,
    concurrency: int = 32,
    rate: float | None = None,
    max_retries: int = 8,
    timeout: float = 30.0,
    fresh: bool = False,
    rejects: PathLike | None = None,
    dead_letter: PathLike | None = None,
    report: PathLike | None = None,
    yes: bool = False,
    progress: OnProgress | None = None,
) -> Report:
    """Send a payload file as it is (`importer replay`): a reviewed dry run's `out`, or fixed
    dead letters, for `destination` (its name, as a mapping's `destination` says it; None: the
    one whose calls the file's lines name); resumable like `run`, with its options and errors.
    Deletions in the file are sent only with `yes=True`."""
    sending = Sending(
        endpoint=endpoint,
        token=token,
        token_file=_path(token_file),
        fresh=fresh,
        dead_letter=_path(dead_letter),
        concurrency=concurrency,
        rate=rate,
        max_retries=max_retries,
        timeout=timeout,
        yes=yes,
    )
    summary = replay_summary(
        Path(payloads),
        sending,
        _front(progress),
        destination=destination,
        state_dir=default_state(None) if state is None else Path(state),
        rejects=_path(rejects),
        report=_path(report),
    )
    return _finish(summary, report=report)
