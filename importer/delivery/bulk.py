"""Deliver an action the API takes as jobs (an Action with a `BulkUpload`): rows are cut into chunks,
each chunk is one upload that starts a job on the API's side, and the job is polled to its end.

One job at a time, strictly in order, because the API runs one per token:

    build a chunk -> record it (fsync) -> upload -> record the job id (fsync) -> poll until the
    job ends -> mark the chunk's rows (done, or dead-lettered and failed) -> record the end

so after a crash nothing the API accepted is uploaded again: a chunk whose job id is recorded
is polled, not re-sent, and a chunk recorded without one (the crash came between the upload
and its answer) is first looked for in the API's job list by its file name, which holds the
chunk's content hash. A chunk's identity is that hash, so the same rows make the same chunk on
every run while the mapping (and so the chunk size) stays the same.

The next chunk is built (its batches read, cut, hashed) while a job runs, and recorded only
when its upload is next (chunks.built_ahead): a chunk built ahead and stopped before its
upload was never recorded, so its rows are cut again, and uploaded once, by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import io
import json
import math
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import yarl

from importer.delivery.chunks import Chunk, Chunker, built_ahead, upload_body
from importer.delivery.deliver import DeliveryControl, rate_dir_of, stop_error
from importer.delivery.options import DeliveryOptions, Feed, check_endpoint, is_loopback
from importer.delivery.proxy import client_session
from importer.delivery.record import DeadLetters
from importer.delivery.throttle import RateWindows, remember_starts
from importer.destinations.base import Action, BulkUpload, Destination
from importer.errors import ImporterError
from importer.files import write_atomic
from importer.model import Request, Result, Verdict
from importer.outcome import Summary
from importer.progress import DeliveryProgress, record_timeline
from importer.state.checkpoint import CheckpointLog
from importer.state.facts import ChunkState, RunIdentity
from importer.state.layout import CHUNKS_DIR, JOBS_DIR

MESSAGE_CHARS = 500
ANSWER_BYTES = 64 * 1024
LIST_BYTES = 16 * 1024 * 1024  # a job list is read whole, or not trusted
UPLOAD_BYTES_PER_S = 250_000  # the slowest upload allowed for: 2 Mbit/s
STILL_RUNNING_NOTICE_S = 300.0
# Far below any documented limit: a poll a second is 60 of the 600 requests a minute.
MIN_REMOTE_POLL_S = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadPolling:
    """How jobs are waited for.

    `poll_s`: the first wait before asking how a job is doing, then 1.5 times longer each time
    up to `poll_cap_s`. `busy_wait_s`: how long to keep waiting while another job holds the
    token (409, or 429 on create) before the run stops and says so.
    """

    poll_s: float = 1.0
    poll_cap_s: float = 30.0
    busy_wait_s: float = 3600.0

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be a number above 0, not {getattr(self, name)!r}"
            for name in ("poll_s", "poll_cap_s", "busy_wait_s")
            if not getattr(self, name) > 0
        ]
        if problems:
            raise ImporterError("; ".join(problems))


# What upload() returns for an accepted upload that starts no job anyone can follow.
NO_JOB = ""


class _Stop(Exception):
    """The API or the endpoint ended the run (a refused key, a lost job, a redirect)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Interrupted(Exception):
    """The caller set `control.stop`."""


class _Listed(enum.Enum):
    """What the API's job list says of a file name, when it does not name the job."""

    ABSENT = "absent"  # the list was read whole and no job has the name
    UNKNOWN = "unknown"  # the list could not be read, or not whole


@dataclass(slots=True)
class _Counts:
    requests: int = 0
    retries: int = 0
    jobs: list[dict[str, Any]] = field(default_factory=list)


class _UploadClient:
    """Uploads chunks and follows their jobs, one at a time, with the API's answers judged by
    the destination."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base: str,
        token: str,
        destination: Destination,
        batch: BulkUpload,
        options: DeliveryOptions,
        polling: UploadPolling,
        stop: asyncio.Event,
        progress: DeliveryProgress,
    ) -> None:
        from importer.delivery.scrub import make_scrubber

        self._session = session
        self._base = base
        self._token = token
        self._destination = destination
        self._batch = batch
        self._send = options.send
        self._stop = stop
        self._progress = progress
        self.scrub = make_scrubber(token, fields=destination.credential_fields)
        self.counts = _Counts()
        # Uploads and polls keep to the API's window of their family, as live requests do,
        # from the starts of earlier runs (read under the checkpoint's lock, taken before).
        self.windows = RateWindows(destination, remember_starts(options.send, rate_dir_of(options)))
        self._last_upload = -math.inf
        if not is_loopback(urlsplit(base).hostname or ""):
            polling = UploadPolling(
                poll_s=max(polling.poll_s, MIN_REMOTE_POLL_S),
                poll_cap_s=max(polling.poll_cap_s, MIN_REMOTE_POLL_S),
                busy_wait_s=polling.busy_wait_s,
            )
        self._polling = polling

    def check_stop(self) -> None:
        """End the run here if the caller asked it to stop."""
        if self._stop.is_set():
            raise _Interrupted

    async def wait(self, seconds: float) -> None:
        """Sleep, unless the caller stops the run first."""
        self.check_stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        self.check_stop()

    async def call(
        self, method: str, path: str, *, data: Any = None, limit: int = ANSWER_BYTES
    ) -> tuple[int | None, bytes, str | None, str]:
        """One request: (status or None, its answer up to `limit` bytes, Retry-After, a message
        when no answer came). Redirects are never followed."""
        from importer.delivery.answers import read_capped

        url = yarl.URL(self._base + path, encoded=True)
        window = self.windows.of(path)
        if window is not None:
            await window.wait()
            window.started()
        self.counts.requests += 1
        headers = dict(self._destination.authorize(b"{}", self._token)[1])
        size = 0
        if isinstance(data, aiohttp.FormData):
            headers.pop("Content-Type", None)  # aiohttp writes the multipart boundary
            size = int(getattr(data, "size", 0) or 0)
        elif isinstance(data, io.BytesIO):
            size = len(data.getbuffer())
        # An upload of 50 MB takes longer than one request may: allow it 2 Mbit/s on top.
        timeout = aiohttp.ClientTimeout(total=self._send.timeout_s + size / UPLOAD_BYTES_PER_S)
        try:
            response = await self._session.request(
                method, url, data=data, headers=headers, allow_redirects=False, timeout=timeout
            )
            try:
                answer = await read_capped(response, limit)
            finally:
                response.release()
            return response.status, answer, response.headers.get("Retry-After"), ""
        except TimeoutError:
            return None, b"", None, f"no answer within {timeout.total:g} s"
        except (aiohttp.ClientSSLError, aiohttp.InvalidURL) as exc:
            raise _Stop(f"cannot reach the endpoint: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            return None, b"", None, f"{type(exc).__name__}: {exc}"

    def _judge(self, status: int, answer: bytes) -> tuple[Verdict, str]:
        verdict, message = self._destination.classify(status, answer)
        return verdict, _clip(self.scrub(message))

    def _payload(self, content: bytes, file: str) -> Any:
        """A fresh request body for each try (aiohttp consumes it)."""
        if self._batch.kind in ("list", "ids"):
            return io.BytesIO(upload_body(self._batch, content))
        form = aiohttp.FormData()
        form.add_field(
            "file", io.BytesIO(content), filename=file, content_type="application/x-ndjson"
        )
        return form

    async def upload(self, content: bytes, file: str) -> tuple[str | None, str]:
        """Start the job of a chunk: (its id, "") or (None, why the API refused the chunk)."""
        batch = self._batch
        failures = throttled = 0
        busy_since: float | None = None
        unanswered = False
        while True:
            self.check_stop()
            if failures or throttled:
                self.counts.retries += 1
            if batch.min_interval_s:
                await self.wait(
                    max(0.0, self._last_upload + batch.min_interval_s - time.monotonic())
                )
                self._last_upload = time.monotonic()
            status, answer, retry_after, problem = await self.call(
                batch.method, batch.create_path, data=self._payload(content, file)
            )
            if status is None or (unanswered and status == HTTPStatus.CONFLICT):
                # The upload may have reached the API (a 409 may be our own job): look for its
                # job before sending it again.
                unanswered = unanswered or status is None
                found = await self.find_job(file)
                if isinstance(found, str):
                    self._progress.notice(
                        f"{file}: its upload's answer was lost; found job {found}"
                    )
                    return found, ""
                if found is _Listed.UNKNOWN:
                    raise _Stop(
                        f"the upload of {file} got no answer ({problem or f'HTTP {status}'}) and "
                        "the API's job list could not be read to tell whether it started a job; "
                        "run again to look once more"
                    )
            if status is None:
                failures += 1
                self._check_retries(failures, f"uploading {file}: {problem}")
                self._progress.retry(f"{file}: {problem}; trying again")
                await self.wait(self._backoff(failures))
                continue
            verdict, message = self._judge(status, answer)
            if verdict is Verdict.DELIVERED:
                if not batch.status_path:
                    return NO_JOB, ""  # accepted, with no job to follow
                job = _job_id(answer)
                if job is None:
                    raise _Stop(
                        f"the API accepted {file} (HTTP {status}) but its answer names no "
                        f"job_id, so the job cannot be followed: {_clip(self.scrub(_text(answer)))}"
                    )
                return job, ""
            if verdict is Verdict.DEAD:
                return None, f"HTTP {status}: {message}"
            if verdict is Verdict.STOP:
                raise _Stop(message, status)
            if status in (HTTPStatus.CONFLICT, HTTPStatus.TOO_MANY_REQUESTS):
                now = time.monotonic()
                busy_since = now if busy_since is None else busy_since
                if now - busy_since > self._polling.busy_wait_s:
                    raise _Stop(
                        f"another job has held this API key for over "
                        f"{self._polling.busy_wait_s:g} s (HTTP {status}: {message}); the API "
                        "runs one at a time: run again when it has ended"
                    )
                throttled += 1
                delay = self._busy_delay(throttled, retry_after)
                self._progress.retry(f"{file}: HTTP {status}: {message}; waiting {delay:.1f} s")
                await self.wait(delay)
                continue
            failures += 1
            self._check_retries(failures, f"uploading {file}: HTTP {status}: {message}")
            delay = self._backoff(failures)
            self._progress.retry(f"{file}: HTTP {status}: {message}; retry in {delay:.1f} s")
            await self.wait(delay)

    async def follow(self, file: str, job: str) -> dict[str, Any]:
        """Poll the job until it ends; its last status answer."""
        batch = self._batch
        path = batch.status_path.replace("{job_id}", quote(job, safe=""))
        interval, failures = self._polling.poll_s, 0
        started = told = time.monotonic()
        while True:
            await self.wait(interval)
            interval = min(self._polling.poll_cap_s, interval * 1.5)
            status, answer, _, problem = await self.call("GET", path)
            if status is not None and 200 <= status < 300:
                job_status = _json(answer)
                state = job_status.get("status") if isinstance(job_status, dict) else None
                if not isinstance(state, str) or not isinstance(job_status, dict):
                    raise _Stop(
                        f"the status of job {job} is not the API's JSON: "
                        f"{_clip(self.scrub(_text(answer)))}"
                    )
                if state in batch.finished or state in batch.failed:
                    return job_status
                if state not in batch.running:
                    raise _Stop(
                        f"job {job} of {file} is in state {state!r}, which the importer does "
                        "not know: nothing of it is marked; run again to follow it"
                    )
                failures = 0
                now = time.monotonic()
                if now - told >= STILL_RUNNING_NOTICE_S:
                    told = now
                    self._progress.retry(
                        f"job {job} ({file}) is still {state} after {now - started:.0f} s"
                    )
                continue
            if status == HTTPStatus.NOT_FOUND:
                raise _Stop(
                    f"the API does not know job {job} of {file} (HTTP 404): its rows are not "
                    "marked. If the job never ran, start over with --fresh (which sends every "
                    "row again); else mark nothing and ask the API's support about the job"
                )
            if status is not None:
                verdict, message = self._judge(status, answer)
                if verdict is Verdict.STOP:
                    raise _Stop(message, status)
                problem = f"HTTP {status}: {message}"
            failures += 1
            self._check_retries(failures, f"reading the state of job {job}: {problem}")
            self._progress.retry(f"job {job}: {problem}; asking again")

    async def find_job(self, file: str) -> str | _Listed:
        """The id of the job the API lists for `file`; else whether the list says none has it."""
        if self._batch.kind != "file":
            return _Listed.ABSENT  # a list upload has no file name to look for
        listing = self._batch.status_path.partition("/{job_id}")[0]
        status, answer, _, _ = await self.call("GET", listing, limit=LIST_BYTES)
        if status is None or not 200 <= status < 300 or len(answer) >= LIST_BYTES:
            return _Listed.UNKNOWN
        jobs = _json(answer)
        if isinstance(jobs, dict):
            jobs = jobs.get("jobs", jobs.get("data"))
        if not isinstance(jobs, list):
            return _Listed.UNKNOWN
        for item in jobs:
            if isinstance(item, dict) and item.get("filename") == file:
                job = item.get("job_id")
                if isinstance(job, str) and job:
                    return job
        return _Listed.ABSENT

    def _check_retries(self, failures: int, what: str) -> None:
        if failures > self._send.max_retries:
            raise _Stop(
                f"gave up after {failures} tries {what}; nothing of this chunk is marked, so a "
                "later run tries it again"
            )

    def _backoff(self, failures: int) -> float:
        base = min(self._send.backoff_cap_s, self._send.backoff_base_s * 2 ** (failures - 1))
        return max(base, self._send.throttle_floor_s) * random.uniform(1.0, 1.25)

    def _busy_delay(self, throttled: int, retry_after: str | None) -> float:
        """A 429's Retry-After when it gives one; else doubling from the destination's floor
        (or the poll interval), at most the poll cap."""
        from importer.delivery.throttle import parse_retry_after

        seconds = None
        if retry_after is not None:
            seconds = parse_retry_after(retry_after, now=datetime.now(UTC))
        floor = max(self._send.throttle_floor_s, self._polling.poll_s)
        doubled = min(self._polling.poll_cap_s, floor * 2 ** (throttled - 1))
        return max(seconds or 0.0, doubled) * random.uniform(1.0, 1.25)


@dataclass(slots=True)
class _Settle:
    """What ending a chunk's job needs besides the client: where its rows are recorded."""

    checkpoint: CheckpointLog
    dead: DeadLetters
    summary: Summary
    progress: DeliveryProgress
    action: Action
    bulk: BulkUpload
    chunk_dir: Path


async def deliver_uploads(
    feeds: Iterator[Feed],
    *,
    identity: RunIdentity,
    destination: Destination,
    action: Action,
    options: DeliveryOptions,
    summary: Summary,
    max_bytes: int | None = None,
    progress: DeliveryProgress | None = None,
    total: int | None = None,
    control: DeliveryControl | None = None,
) -> Summary:
    """Deliver every row of `feeds` not yet done under `identity` as `action`'s jobs, and fill
    in `summary` (as delivery.deliver does for one request per row). Jobs an earlier run left
    open are settled first, for exactly the rows they were given."""
    batch = action.bulk
    if batch is None:
        raise AssertionError("deliver_uploads is for actions delivered as jobs")
    progress = record_timeline(progress, summary)
    control = control or DeliveryControl()
    polling = UploadPolling(poll_s=options.poll_s, busy_wait_s=options.busy_wait_s)
    checkpoint = CheckpointLog.open(options.state_dir, job=identity, fresh=options.fresh)
    summary.warnings.extend(checkpoint.warnings)
    settle = _Settle(
        checkpoint,
        DeadLetters(options.dead_letter_path),
        summary,
        progress,
        action,
        batch,
        options.state_dir / CHUNKS_DIR,
    )
    chunker = Chunker(
        feeds,
        batch,
        max_bytes=min(max_bytes or batch.max_bytes, batch.max_bytes),
        checkpoint=checkpoint,
        summary=summary,
        progress=progress,
    )
    client: _UploadClient | None = None
    try:
        base = check_endpoint(options.endpoint) + "/"
        async with _session(base) as session:
            client = _UploadClient(
                session,
                base=base,
                token=options.real_token,
                destination=destination,
                batch=batch,
                options=options,
                polling=polling,
                stop=control.stop,
                progress=progress,
            )
            progress.begin(total)
            try:
                for earlier in checkpoint.open_chunks():
                    if await _settle_earlier(earlier, client, settle):
                        for fp, lines in checkpoint.sharing(
                            earlier.fingerprint, earlier.lines
                        ).items():
                            chunker.settled.setdefault(fp, []).extend(lines)
                # Only now: a chunk cut before the open jobs were settled could hold their rows.
                async with contextlib.aclosing(built_ahead(chunker.chunks())) as chunks:
                    async for chunk in chunks:
                        client.check_stop()
                        await _deliver_chunk(chunk, client, settle)
            except _Stop as stop:
                summary.stop = stop_error(str(stop), stop.status)
            except _Interrupted:
                summary.interrupted = True
            progress.end()
    finally:
        try:
            settle.dead.close()
            if client is not None:
                client.windows.close()
        finally:
            checkpoint.close()
    if chunker.error is not None:
        if client is None or not client.counts.requests:
            raise chunker.error  # nothing went out: the error alone says it all
        summary.stop = summary.stop or chunker.error
    if client is not None:
        summary.requests += client.counts.requests
        summary.retries += client.counts.retries
        summary.jobs = client.counts.jobs
    if settle.dead.count:
        summary.dead_letter_file = str(settle.dead.path)
    return summary


async def _deliver_chunk(chunk: Chunk, client: _UploadClient, settle: _Settle) -> None:
    """Keep the chunk, record it, upload it, record its job, and follow the job to its end."""
    checkpoint = settle.checkpoint
    path = settle.chunk_dir / chunk.file
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, chunk.content)  # the dead letters' bodies if the job fails
    checkpoint.record_chunk(
        chunk.key,
        fingerprint=chunk.fingerprint,
        file=chunk.file,
        lines=chunk.lines,
        size=len(chunk.content),
    )
    state = checkpoint.chunk(chunk.key)
    if state is None:
        raise AssertionError("a chunk just recorded is known")
    job, refused = await client.upload(chunk.content, chunk.file)
    if job is None:
        _end_rows(
            state, delivered=False, error=f"the API refused {chunk.file}: {refused}", settle=settle
        )
        checkpoint.record_job_end(chunk.key, "refused", completed=None, total=None)
        path.unlink(missing_ok=True)
        return
    if job == NO_JOB:
        # Accepted (a deletion the API schedules): no job to follow, the rows are done.
        client.counts.jobs.append(
            {"file": chunk.file, "job": NO_JOB, "rows": state.rows, "state": "accepted"}
        )
        _end_rows(state, delivered=True, error="", settle=settle)
        checkpoint.record_job_end(chunk.key, "accepted", completed=None, total=None)
        path.unlink(missing_ok=True)
        return
    checkpoint.record_upload(chunk.key, job)
    await _finish(state, job, client, settle)


async def _settle_earlier(state: ChunkState, client: _UploadClient, settle: _Settle) -> bool:
    """End a chunk an earlier run left open: follow its job, or find it by the chunk's file
    name; a chunk the API never took is forgotten, and its rows are cut into chunks anew.
    Whether its rows were marked (and counted)."""
    client.check_stop()
    job = state.job
    if job is None:
        found = await client.find_job(state.file)
        if found is _Listed.UNKNOWN:
            raise _Stop(
                f"an earlier run uploaded {state.file} and got no answer, and the API's job list "
                "could not be read to tell whether it started a job; run again to look once more"
            )
        if found is _Listed.ABSENT:
            settle.summary.warnings.append(
                f"{state.file} ({state.rows:,} rows) was being uploaded when an earlier run "
                "ended, and the API lists no job for it: its rows are sent again"
            )
            settle.checkpoint.record_job_end(state.key, "not_uploaded", completed=None, total=None)
            (settle.chunk_dir / state.file).unlink(missing_ok=True)
            return False
        job = found
        settle.checkpoint.record_upload(state.key, job)
    settle.progress.notice(f"{state.file}: following job {job}, started by an earlier run")
    await _finish(state, job, client, settle)
    return True


async def _finish(state: ChunkState, job: str, client: _UploadClient, settle: _Settle) -> None:
    """Follow the job to its end, then mark the chunk's rows and record the end."""
    status = await client.follow(state.file, job)
    outcome = str(status["status"])
    completed, total = _int(status.get("completed_rows")), _int(status.get("total_rows"))
    client.counts.jobs.append(
        {
            "file": state.file,
            "job": job,
            "rows": state.rows,
            "state": outcome,
            "completed_rows": completed,
            "total_rows": total,
        }
    )
    finished = outcome in settle.bulk.finished
    error = ""
    if finished and completed is not None and total is not None and completed < total:
        settle.summary.warnings.append(
            f"job {job} ({state.file}) completed with {completed:,} of {total:,} rows; the "
            "API does not say which rows it left out, so all are counted as delivered"
        )
    if not finished:
        kept = _keep_status(settle.chunk_dir.parent, state.file, status)
        shown = _clip(client.scrub(json.dumps(status, sort_keys=True)))
        error = (
            f"job {job} ended {outcome} ({_of(completed, total)} rows completed; its whole "
            f"status is in {kept}): {shown}"
        )
    _end_rows(state, delivered=finished, error=error, settle=settle)
    settle.checkpoint.record_job_end(state.key, outcome, completed=completed, total=total)
    (settle.chunk_dir / state.file).unlink(missing_ok=True)


def _end_rows(state: ChunkState, *, delivered: bool, error: str, settle: _Settle) -> None:
    """Mark a chunk's rows done, or dead-letter each (durably, before its mark) and fail it."""
    checkpoint, summary, progress = settle.checkpoint, settle.summary, settle.progress
    lines = state.lines
    if delivered:
        for line in lines:
            checkpoint.mark_done(state.fingerprint, line)
            progress.result(delivered=True, retries=0)
        summary.rows_sent += len(lines)
        return
    bodies = _kept_bodies(settle.chunk_dir / state.file, len(lines))
    action = settle.action
    for line, body in zip(lines, bodies, strict=True):
        request = Request(
            action.method, action.path, body, state.fingerprint, state.input_name, line
        )
        settle.dead.write(Result(request, False, None, error, 1))
        summary.add_dead(None, error, where=f"{state.input_name}, line {line}")
    settle.dead.sync()
    for line in lines:
        checkpoint.mark_failed(state.fingerprint, line, None, error)
        progress.result(delivered=False, retries=0)
    summary.rows_failed += len(lines)


def _kept_bodies(path: Path, rows: int) -> list[bytes]:
    """The bodies of a chunk from the file kept for it, one per row."""
    try:
        bodies = path.read_bytes().splitlines()
    except OSError as exc:
        raise _Stop(
            f"the rows of a failed job cannot be written to the dead letters: the chunk kept in "
            f"{path} cannot be read ({exc.strerror}); nothing of it is marked"
        ) from None
    if len(bodies) != rows:
        raise _Stop(f"{path} holds {len(bodies):,} rows, not the chunk's {rows:,}; nothing marked")
    return bodies


@contextlib.asynccontextmanager
async def _session(base: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session(
        base,
        connector=aiohttp.TCPConnector(limit=2),
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        yield session


def _keep_status(state_dir: Path, file: str, status: dict[str, Any]) -> Path:
    """The whole status of a job that did not complete, beside the checkpoint, for a person."""
    path = state_dir / JOBS_DIR / (file.rsplit(".", 1)[0] + ".status.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(status, indent=2, sort_keys=True).encode() + b"\n")
    return path


def _job_id(answer: bytes) -> str | None:
    parsed = _json(answer)
    job = parsed.get("job_id") if isinstance(parsed, dict) else None
    return job if isinstance(job, str) and job else None


def _json(answer: bytes) -> object:
    try:
        return json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        return None


def _int(value: object) -> int | None:
    """A count the API may send as a number or as text (its schemas disagree)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _of(completed: int | None, total: int | None) -> str:
    if completed is None:
        return "an unknown number of"
    return f"{completed:,} of {total:,}" if total is not None else f"{completed:,}"


def _text(answer: bytes) -> str:
    return " ".join(answer.decode("utf-8", "replace").split()) or "an empty body"


def _clip(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


__all__ = ["UploadPolling", "deliver_uploads"]
