"""The checkpoint log: which rows the API acknowledged or dead-lettered, durable across crashes.

A state directory (`--state DIR`) holds:

    checkpoint.log          the append-only log described below
    lock                    flock-ed while a run uses the directory
    checkpoint.prev.log     the log that `--fresh` set aside
    checkpoint.corrupt.log  a copy of a log found corrupt in the middle, taken before cutting it

The log is ASCII text, one record a line: `CRC JSON\\n`, CRC being the 8 hex digits of the CRC32
of the JSON bytes. A line without its newline or with a wrong CRC is bad and reading stops there,
keeping what came before. At the end of the file it is the torn tail of an interrupted write; in
the middle (good records follow) it is corruption. Either way a writer cuts the log there before
appending, and the reader reports it in `warnings`. Records, by their `t`:

    job    the first record: v (format), mapping, destination, endpoint, created (ISO, UTC)
    input  id (small int), fp (content fingerprint), name (display name; again on rename)
    done   id, at (unix time), ranges: [[first, last], ...] of newly finished lines, inclusive
    fail   id, at, line, status (int or null), error (cut to 1000 characters)

A row is (input fingerprint, line). A dead-lettered row counts as done (a resumed run does not
send it again; the user replays the dead-letter file) but is counted apart. `mark_done` and
`mark_failed` only buffer; `sync` encodes in bulk, writes and fsyncs, and what it covered
survives kill -9. Not thread-safe: one event loop owns a log.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import zlib
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import polars as pl

from importer.errors import CheckpointError, MappingError

FORMAT_VERSION = 1
LOG_NAME = "checkpoint.log"
PREV_NAME = "checkpoint.prev.log"
CORRUPT_NAME = "checkpoint.corrupt.log"
LOCK_NAME = "lock"
_MAX_ERROR = 1000  # the dead-letter file keeps the whole message; the log keeps a reminder
_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """What a state directory is bound to; `endpoint` is logical: "embedded" or a base URL."""

    mapping_fingerprint: str
    destination: str
    endpoint: str

    def __post_init__(self) -> None:
        for name in ("mapping_fingerprint", "destination", "endpoint"):
            if not getattr(self, name):
                raise ValueError(f"JobIdentity.{name} must not be empty")
        parts = urlsplit(self.endpoint)
        if parts.username or parts.password or parts.query:
            # The log is not a secret store: credentials travel in headers, never in the URL.
            raise MappingError("--endpoint must not carry credentials or a query string")


@dataclass(frozen=True, slots=True)
class Failure:
    """One dead-lettered row as the log remembers it."""

    line: int
    status: int | None
    error: str


@dataclass(frozen=True, slots=True)
class InputStatus:
    """Progress of one input file, for `importer status`."""

    name: str
    fingerprint: str
    delivered: int
    failed: int
    failures: tuple[Failure, ...]
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class StateStatus:
    """What a state directory says, read without the mapping or the inputs at hand."""

    job: JobIdentity | None
    created_at: datetime | None
    inputs: tuple[InputStatus, ...]
    warnings: tuple[str, ...]


class _LineSet:
    """Finished lines as sorted, disjoint, inclusive ranges: memory grows with gaps, not rows."""

    __slots__ = ("_cache", "_ends", "_starts", "count")

    def __init__(self) -> None:
        self._starts = array("q")
        self._ends = array("q")
        self._cache: tuple[pl.Series, pl.Series] | None = None
        self.count = 0

    def __contains__(self, line: int) -> bool:
        k = bisect_right(self._starts, line) - 1
        return k >= 0 and line <= self._ends[k]

    def add_range(self, first: int, last: int) -> None:
        """Add first..last, merging every range it overlaps or touches."""
        starts, ends = self._starts, self._ends
        i = bisect_left(ends, first - 1)
        j = bisect_right(starts, last + 1)
        covered = 0
        if i < j:
            first, last = min(first, starts[i]), max(last, ends[j - 1])
            covered = sum(ends[k] - starts[k] + 1 for k in range(i, j))
            del starts[i:j], ends[i:j]
        starts.insert(i, first)
        ends.insert(i, last)
        self.count += last - first + 1 - covered
        self._cache = None

    def mask(self, lines: pl.Series) -> pl.Series:
        """True where a line falls in a range: one binary search per row, in Polars."""
        if not self._starts:
            return pl.repeat(False, len(lines), eager=True).alias(lines.name)
        if self._cache is None:
            self._cache = (
                pl.Series(self._starts, dtype=pl.Int64),
                pl.Series(self._ends, dtype=pl.Int64),
            )
        starts, ends = self._cache
        x = lines.cast(pl.Int64)
        k = starts.search_sorted(x, side="right").cast(pl.Int64) - 1
        hit = (k >= 0) & (x <= ends.gather(k.clip(lower_bound=0)))
        return hit.fill_null(False).alias(lines.name)


@dataclass(slots=True)
class _Input:
    id: int
    fingerprint: str
    name: str
    lines: _LineSet = field(default_factory=_LineSet)
    failed: int = 0
    failures: list[Failure] = field(default_factory=list)
    updated: float | None = None


class _State:
    """The log replayed into memory; the writer and the read-only status share it."""

    def __init__(self) -> None:
        self.version: object = None
        self.job: JobIdentity | None = None
        self.created: datetime | None = None
        self.by_id: dict[int, _Input] = {}
        self.by_fp: dict[str, _Input] = {}

    def apply(self, rec: dict[str, Any]) -> None:
        """Apply one record; KeyError, TypeError or ValueError mean it does not belong here."""
        kind = rec["t"]
        if kind == "job" and self.job is None:
            self.version = rec["v"]
            self.job = JobIdentity(
                str(rec["mapping"]), str(rec["destination"]), str(rec["endpoint"])
            )
            self.created = datetime.fromisoformat(rec["created"])
        elif self.job is None or kind == "job":
            raise ValueError("the job record must come first, and once")
        elif kind == "input":
            inp = self.by_id.get(rec["id"]) or self.by_fp.get(rec["fp"])
            if inp is None:
                inp = _Input(int(rec["id"]), str(rec["fp"]), str(rec["name"]))
                self.by_id[inp.id] = self.by_fp[inp.fingerprint] = inp
            elif (inp.id, inp.fingerprint) != (rec["id"], rec["fp"]):
                raise ValueError("an input id and fingerprint disagree with earlier records")
            inp.name = str(rec["name"])
        elif kind == "done":
            inp = self.by_id[rec["id"]]
            ranges = [(int(a), int(b)) for a, b in rec["ranges"]]
            if any(a > b for a, b in ranges):
                raise ValueError("an empty range")
            for a, b in ranges:
                inp.lines.add_range(a, b)
            inp.updated = float(rec["at"])
        elif kind == "fail":
            inp = self.by_id[rec["id"]]
            line = int(rec["line"])
            if line not in inp.lines:
                inp.lines.add_range(line, line)
                inp.failed += 1
                if len(inp.failures) < _EXAMPLES:
                    inp.failures.append(Failure(line, rec["status"], str(rec["error"])))
            inp.updated = float(rec["at"])
        else:
            raise ValueError(f"unknown record type {kind!r}")


@dataclass(frozen=True, slots=True)
class _Damage:
    offset: int  # where the first bad record starts: the log is good up to here
    size: int  # bytes from there to the end
    kept: int  # good records before it
    middle: bool  # good records follow, so this is corruption, not a torn write


def _encode(rec: dict[str, Any]) -> bytes:
    payload = json.dumps(rec, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _decode(raw: bytes) -> dict[str, Any] | None:
    if len(raw) < 11 or raw[-1:] != b"\n" or raw[8:9] != b" ":
        return None
    payload = raw[9:-1]
    try:
        if int(raw[:8], 16) != zlib.crc32(payload):
            return None
        rec = json.loads(payload)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _load(path: Path) -> tuple[_State, _Damage | None]:
    """Replay the log up to its first bad record, and say where and what that was."""
    state, kept, offset = _State(), 0, 0
    with path.open("rb") as f:
        for raw in f:
            rec = _decode(raw)
            try:
                if rec is None:
                    raise ValueError
                state.apply(rec)
            except (KeyError, TypeError, ValueError):
                middle = any(_decode(later) is not None for later in f)
                size = os.fstat(f.fileno()).st_size - offset
                return state, _Damage(offset, size, kept, middle)
            kept += 1
            offset += len(raw)
    return state, None


def _describe(path: Path, damage: _Damage) -> str:
    if damage.middle:
        return (
            f"{path} is corrupt at byte {damage.offset}: kept the {damage.kept} records before "
            f"it and ignored the {damage.size} bytes after it; rows recorded there will be sent again"
        )
    return (
        f"{path} ended with an incomplete record ({damage.size} bytes) from an interrupted run; "
        "ignored it: rows it held will be sent again"
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace a whole file so that a crash leaves either the old one or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _lock(state_dir: Path) -> int:
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CheckpointError(
            f"another importer run is using {state_dir}",
            hint="wait for it to finish, or pass another --state directory",
        ) from None
    return fd


def _check_job(path: Path, state: _State, job: JobIdentity) -> None:
    """Refuse a log written for another job: resuming it would skip the wrong rows."""
    if state.job is None:
        raise CheckpointError(f"{path} has no readable job header; run with --fresh to start over")
    if state.version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state.version!r}, this importer reads "
            f"{FORMAT_VERSION}; run with --fresh to start over"
        )
    diffs = [
        f"{label} differs (state: {old!r}, now: {new!r})"
        for label, old, new in (
            ("mapping fingerprint", state.job.mapping_fingerprint, job.mapping_fingerprint),
            ("destination", state.job.destination, job.destination),
            ("endpoint", state.job.endpoint, job.endpoint),
        )
        if old != new
    ]
    if diffs:
        raise CheckpointError(
            f"state directory {path.parent} belongs to another job: {'; '.join(diffs)}. "
            "Run with --fresh to start over, or pass another --state directory"
        )


class CheckpointLog:
    """The append-only record of finished rows of one job, open for appending under a lock."""

    def __init__(
        self, path: Path, state: _State, fd: int, lock_fd: int, warnings: list[str]
    ) -> None:
        self.path = path
        self.warnings = warnings
        self._state = state
        self._fd = fd
        self._lock_fd = lock_fd
        self._size = os.fstat(fd).st_size
        self._pending_done: dict[str, list[int]] = {fp: [] for fp in state.by_fp}
        self._pending_failed: list[tuple[_Input, int, int | None, str]] = []
        self._unsynced: list[dict[str, Any]] = []

    @classmethod
    def open(cls, state_dir: Path, *, job: JobIdentity, fresh: bool = False) -> CheckpointLog:
        """Resume the log in `state_dir` (or start one); `fresh` sets an old log aside first."""
        state_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(state_dir)
        try:
            path = state_dir / LOG_NAME
            warnings: list[str] = []
            if fresh and path.exists():
                os.replace(path, state_dir / PREV_NAME)
            if path.exists() and path.stat().st_size > 0:
                state, damage = _load(path)
                _check_job(path, state, job)
                if damage is not None:
                    warnings.append(_repair(path, damage))
            else:
                header = {
                    "t": "job",
                    "v": FORMAT_VERSION,
                    "mapping": job.mapping_fingerprint,
                    "destination": job.destination,
                    "endpoint": job.endpoint,
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                state = _State()
                state.apply(header)
                _write_atomic(path, _encode(header))
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, state, fd, lock_fd, warnings)

    def register_input(self, name: str, fingerprint: str) -> None:
        """Declare an input before marking its rows; a known fingerprint just takes the new name."""
        inp = self._state.by_fp.get(fingerprint)
        if inp is not None and inp.name == name:
            return
        ident = inp.id if inp is not None else max(self._state.by_id, default=0) + 1
        self._add({"t": "input", "id": ident, "fp": fingerprint, "name": name})
        self._pending_done.setdefault(fingerprint, [])

    def mark_done(self, fingerprint: str, line: int) -> None:
        """Note that the API acknowledged a row; durable after the next `sync`."""
        try:
            self._pending_done[fingerprint].append(line)
        except KeyError:
            raise ValueError(f"input {fingerprint} was not registered") from None

    def mark_failed(self, fingerprint: str, line: int, status: int | None, error: str) -> None:
        """Note that a row went to the dead-letter file; it counts as handled, not delivered."""
        inp = self._state.by_fp.get(fingerprint)
        if inp is None:
            raise ValueError(f"input {fingerprint} was not registered")
        self._pending_failed.append((inp, line, status, error[:_MAX_ERROR]))

    def done_mask(self, fingerprint: str, lines: pl.Series) -> pl.Series:
        """A boolean Series, True where that row of the input was already handled."""
        self._fold()
        inp = self._state.by_fp.get(fingerprint)
        if inp is None:
            return pl.repeat(False, len(lines), eager=True).alias(lines.name)
        return inp.lines.mask(lines)

    def is_done(self, fingerprint: str, line: int) -> bool:
        """Whether one row was already delivered or dead-lettered."""
        self._fold()
        inp = self._state.by_fp.get(fingerprint)
        return inp is not None and line in inp.lines

    def delivered_count(self, fingerprint: str) -> int:
        """Rows of the input the API acknowledged, over all runs."""
        self._fold()
        inp = self._state.by_fp.get(fingerprint)
        return 0 if inp is None else inp.lines.count - inp.failed

    def failed_count(self, fingerprint: str) -> int:
        """Rows of the input that went to the dead-letter file, over all runs."""
        self._fold()
        inp = self._state.by_fp.get(fingerprint)
        return 0 if inp is None else inp.failed

    def flush(self) -> None:
        """Hand every buffered record to the OS without fsync: it survives kill -9, not a power cut.

        Cheap enough to call after every acknowledged row, which is what keeps a resumed run
        from re-sending more than the requests that were in flight when the process died.
        """
        if self._fd < 0:
            raise ValueError("the checkpoint log is closed")
        self._fold()
        if not self._unsynced:
            return
        data = b"".join(map(_encode, self._unsynced))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            # Cut a half-written record (disk full) so later appends do not land behind it.
            os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        self._unsynced.clear()

    def sync(self) -> None:
        """Write every buffered record, then fsync: on return they survive a crash."""
        self.flush()
        os.fsync(self._fd)

    def close(self) -> None:
        """Sync, then release the file and the lock; closing twice is harmless."""
        if self._fd < 0:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)
            os.close(self._lock_fd)
            self._fd = self._lock_fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Acknowledged rows are done even when the run fails, so record them either way.
        self.close()

    def _add(self, rec: dict[str, Any]) -> None:
        self._state.apply(rec)
        self._unsynced.append(rec)

    def _fold(self) -> None:
        """Turn buffered marks into records: sorted, deduplicated, new lines only, as ranges."""
        now = round(time.time(), 3)
        for fingerprint, pending in self._pending_done.items():
            if not pending:
                continue
            inp = self._state.by_fp[fingerprint]
            lines = sorted(set(pending))
            pending.clear()
            ranges: list[list[int]] = []
            for line in lines:
                if line in inp.lines:
                    continue
                if ranges and ranges[-1][1] == line - 1:
                    ranges[-1][1] = line
                else:
                    ranges.append([line, line])
            if ranges:
                self._add({"t": "done", "id": inp.id, "at": now, "ranges": ranges})
        for inp, line, status, error in self._pending_failed:
            if line not in inp.lines:
                rec = {"t": "fail", "id": inp.id, "at": now, "line": line, "status": status}
                self._add({**rec, "error": error})
        self._pending_failed.clear()


def _repair(path: Path, damage: _Damage) -> str:
    """Cut the log at its first bad record so new records are not appended behind it."""
    message = _describe(path, damage)
    if damage.middle:
        shutil.copyfile(path, path.with_name(CORRUPT_NAME))
        message += f" (a copy of the damaged log is in {path.with_name(CORRUPT_NAME)})"
    with path.open("r+b") as f:
        f.truncate(damage.offset)
        os.fsync(f.fileno())
    return message


def read_status(state_dir: Path) -> StateStatus:
    """Summarise a state directory without changing it (safe while a run is appending)."""
    path = state_dir / LOG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint log in {state_dir}: nothing has run with this --state"
        )
    state, damage = _load(path)
    warnings = [] if damage is None else [_describe(path, damage)]
    if state.job is None:
        warnings.append(f"{path} has no readable job header")
    elif state.version != FORMAT_VERSION:
        warnings.append(
            f"{path} has checkpoint format {state.version!r}, expected {FORMAT_VERSION}"
        )
    inputs = tuple(
        InputStatus(
            name=inp.name,
            fingerprint=inp.fingerprint,
            delivered=inp.lines.count - inp.failed,
            failed=inp.failed,
            failures=tuple(inp.failures),
            updated_at=None if inp.updated is None else datetime.fromtimestamp(inp.updated, UTC),
        )
        for inp in state.by_id.values()
    )
    return StateStatus(state.job, state.created, inputs, tuple(warnings))
