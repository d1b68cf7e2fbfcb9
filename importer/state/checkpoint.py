"""The checkpoint log: which rows the API acknowledged or dead-lettered, durable across crashes.

A state directory (`--state DIR`) holds:

    checkpoint.log          the append-only log described below
    lock                    flock-ed while a run uses the directory
    checkpoint.prev.log     the log that `--fresh` set aside
    checkpoint.corrupt.log  a copy of a log found corrupt in the middle, taken before rewriting it

The log is ASCII text, one record a line: `CRC JSON\\n`, CRC being the 8 hex digits of the CRC32
of the JSON bytes. A record without its newline or with a wrong CRC is damaged. Damaged bytes are
cut into records where `CRC {"t":` starts one (a flipped newline joins two records, a byte flipped
into a newline splits one), so damage costs only the records it touched. A damaged record is
never trusted: its rows count as not done and are sent again. A good record that cannot be applied
(a `done` whose `input` record was damaged) is skipped the same way. Damage at the end of the file
with nothing good after it is the torn tail of an interrupted write: a writer cuts it before
appending. Damage in the middle is corruption: a writer keeps a copy of the log, then rewrites it
atomically with only the records it applied, so the next run starts clean. The reader reports
either in `warnings`, with the rows to be sent again as far as the damaged content still tells
them. A damaged `job` record (the first) makes the log unusable: resuming needs `--fresh`.
Records, by their `t`:

    job    the first record: v (format), mapping, destination, endpoint, created (ISO, UTC)
    input  id (small int), fp (content fingerprint), name (display name; again on rename);
           since nightly loads also, all optional: size (content bytes), path (the file's
           absolute path, resolved), open (the last row's line when the content does not end
           in a newline), grows (the id of a known input whose whole content this one starts
           with) and upto (the last of its lines taken over, null for all): the new input
           takes over the done lines of the one it grew from, as they stand at this record
    done   id, at (unix time), ranges: [[first, last], ...] of newly finished lines, inclusive
    fail   id, at, line, status (int or null), error (cut to 1000 characters)

A row is (input fingerprint, line). A dead-lettered row counts as done (a resumed run does not
send it again; the user replays the dead-letter file) but is counted apart. `mark_done` and
`mark_failed` only buffer; `sync` encodes in bulk, writes and fsyncs, and what it covered
survives kill -9. Not thread-safe: one event loop owns a log.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import polars as pl

from importer.errors import CheckpointError, MappingError
from importer.files import write_atomic

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
    """Progress of one input file, for `importer status`: `delivered` and `failed` count the
    rows sent from this content; `inherited` the rows it took over from the content it grew
    from (`grew_from`, a fingerprint); `names` every name it was seen under, first to last."""

    name: str
    fingerprint: str
    delivered: int
    failed: int
    failures: tuple[Failure, ...]
    updated_at: datetime | None
    first_at: datetime | None = None
    names: tuple[str, ...] = ()
    grew_from: str | None = None
    inherited: int = 0
    size: int | None = None


@dataclass(frozen=True, slots=True)
class InputFacts:
    """What the log keeps of an input's content besides its fingerprint, so that a later run
    tells a grown or a changed file from a new one: its size, its resolved path, and the line
    of its last row when that row has no newline yet (it may be cut short)."""

    size: int
    path: str
    open_line: int | None = None


@dataclass(frozen=True, slots=True)
class KnownInput:
    """An input the log knows, as a later run compares its inputs with it."""

    id: int
    fingerprint: str
    name: str
    delivered: int  # rows of this content done and not dead-lettered, taken over ones included
    size: int | None
    path: str | None
    open_line: int | None


@dataclass(frozen=True, slots=True)
class Admission:
    """What `CheckpointLog.admit` made of an input: `kind` is "known", "grown", "new",
    "changed" (not registered: skip it) or "resent" (changed, sent as a new input anyway);
    `previous` the known input it is, grew from or replaces; `cut_line` the line of a grown
    input's row that was cut short before (not taken over: sent again, complete)."""

    kind: str
    previous: KnownInput | None = None
    cut_line: int | None = None


@dataclass(slots=True)
class ChunkState:
    """One chunk of an action delivered as jobs: the file built from some rows of one input,
    the job the API started for it, and how that job ended.

    `stage` is "built" (recorded before the upload: the answer may have been lost), "uploaded"
    (the API gave `job` for it) or "ended" (`outcome` holds the job's final state).
    """

    key: str
    input_id: int
    file: str
    rows: int
    bytes: int
    ranges: list[tuple[int, int]] = field(default_factory=list)  # the rows' lines
    stage: str = "built"
    job: str | None = None
    outcome: str | None = None
    fingerprint: str = ""
    input_name: str = ""

    @property
    def lines(self) -> list[int]:
        """Every line of the chunk's rows, in order."""
        return [line for first, last in self.ranges for line in range(first, last + 1)]


@dataclass(frozen=True, slots=True)
class StateStatus:
    """What a state directory says, read without the mapping or the inputs at hand.

    `open_jobs` are chunks uploaded whose job has not been seen to end: a rerun polls them.
    """

    job: JobIdentity | None
    created_at: datetime | None
    inputs: tuple[InputStatus, ...]
    warnings: tuple[str, ...]
    open_jobs: tuple[ChunkState, ...] = ()


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

    def ranges(self) -> Iterator[tuple[int, int]]:
        """The ranges, first to last."""
        return zip(self._starts, self._ends, strict=True)

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
    first: float | None = None
    names: list[str] = field(default_factory=list)
    size: int | None = None
    path: str | None = None
    open_line: int | None = None
    grew_from: int | None = None
    inherited: int = 0
    inherited_failed: int = 0

    def touch(self, at: float) -> None:
        """Note a row finished at `at`."""
        self.updated = at
        if self.first is None:
            self.first = at

    def known(self) -> KnownInput:
        """What a later run compares its inputs with."""
        delivered = self.lines.count - self.failed - self.inherited_failed
        return KnownInput(
            self.id, self.fingerprint, self.name, delivered, self.size, self.path, self.open_line
        )


class _State:
    """The log replayed into memory; the writer and the read-only status share it."""

    def __init__(self) -> None:
        self.version: object = None
        self.job: JobIdentity | None = None
        self.created: datetime | None = None
        self.by_id: dict[int, _Input] = {}
        self.by_fp: dict[str, _Input] = {}
        self.chunks: dict[str, ChunkState] = {}

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
            base = self.by_id[rec["grows"]] if rec.get("grows") is not None else None
            upto = rec.get("upto")
            if inp is None:
                inp = _Input(int(rec["id"]), str(rec["fp"]), str(rec["name"]))
                if base is not None:
                    _inherit(inp, base, None if upto is None else int(upto))
                self.by_id[inp.id] = self.by_fp[inp.fingerprint] = inp
            elif (inp.id, inp.fingerprint) != (rec["id"], rec["fp"]):
                raise ValueError("an input id and fingerprint disagree with earlier records")
            inp.name = str(rec["name"])
            if inp.name not in inp.names:
                inp.names.append(inp.name)
            if "size" in rec:
                inp.size, inp.path = int(rec["size"]), str(rec["path"])
                inp.open_line = None if rec.get("open") is None else int(rec["open"])
        elif kind == "done":
            # Check the whole record before changing anything: a skipped record must leave no trace.
            inp, at = self.by_id[rec["id"]], float(rec["at"])
            ranges = [(int(a), int(b)) for a, b in rec["ranges"]]
            if any(a > b for a, b in ranges):
                raise ValueError("an empty range")
            for a, b in ranges:
                inp.lines.add_range(a, b)
            inp.touch(at)
        elif kind == "fail":
            inp, at = self.by_id[rec["id"]], float(rec["at"])
            failure = Failure(int(rec["line"]), rec["status"], str(rec["error"]))
            if failure.line not in inp.lines:
                inp.lines.add_range(failure.line, failure.line)
                inp.failed += 1
                if len(inp.failures) < _EXAMPLES:
                    inp.failures.append(failure)
            inp.touch(at)
        elif kind == "chunk":
            inp = self.by_id[rec["id"]]
            key = str(rec["key"])
            ranges = [(int(a), int(b)) for a, b in rec["ranges"]]
            if any(a > b for a, b in ranges) or sum(b - a + 1 for a, b in ranges) != rec["rows"]:
                raise ValueError("a chunk's ranges do not hold its rows")
            self.chunks[key] = ChunkState(
                key,
                inp.id,
                str(rec["file"]),
                int(rec["rows"]),
                int(rec["bytes"]),
                ranges,
                fingerprint=inp.fingerprint,
                input_name=inp.name,
            )
        elif kind == "upload":
            chunk = self.chunks[str(rec["key"])]
            chunk.job, chunk.stage = str(rec["job"]), "uploaded"
        elif kind == "jobend":
            chunk = self.chunks[str(rec["key"])]
            chunk.outcome, chunk.stage = str(rec["state"]), "ended"
        else:
            raise ValueError(f"unknown record type {kind!r}")


def _inherit(inp: _Input, base: _Input, upto: int | None) -> None:
    """Give a grown input the done lines of the content it starts with (up to `upto`)."""
    inp.grew_from = base.id
    for first, last in base.lines.ranges():
        if upto is not None and first > upto:
            break
        inp.lines.add_range(first, last if upto is None else min(last, upto))
    inp.inherited = inp.lines.count
    # The log keeps how many rows were dead-lettered, not which: when the last line is not
    # taken over, this may count one too many.
    inp.inherited_failed = base.failed + base.inherited_failed


@dataclass(slots=True)
class _Skipped:
    """Records a replay left out, and the rows they held as far as their content tells."""

    damaged: int = 0  # records cut short or failing their CRC
    dependent: int = 0  # good records that do not fit, as a `done` whose `input` was damaged
    rows: int = 0  # rows held by the records that could be counted
    unknown: int = 0  # records whose rows cannot be counted

    def count(self, raw: bytes) -> None:
        """Add what one skipped record held to the totals."""
        rows = _rows_held(raw)
        if rows is None:
            self.unknown += 1
        else:
            self.rows += rows

    def add(self, other: _Skipped) -> None:
        """Take over another tally, as when a good record shows a tail was in the middle."""
        self.damaged += other.damaged
        self.dependent += other.dependent
        self.rows += other.rows
        self.unknown += other.unknown


@dataclass(frozen=True, slots=True)
class _Damage:
    """What a replay left out: records in the middle (corruption) and a torn tail."""

    middle: _Skipped  # skipped with good records after them
    tail: _Skipped  # damaged records after the last good one: an interrupted write
    end: int  # where the last good record ends, so where the torn tail starts
    size: int  # the file's size
    kept: int  # records applied
    spans: tuple[tuple[int, int], ...]  # byte ranges of the applied records, for a rewrite

    @property
    def in_middle(self) -> bool:
        """Whether the log must be rewritten: cutting a tail would not drop what was skipped."""
        return bool(self.middle.damaged or self.middle.dependent)


# Where a record starts inside damaged bytes: JSON escapes quotes inside strings, so `{"t":`
# with a bare quote can only open a record.
_RECORD_START = re.compile(rb'[0-9a-f]{8} \{"t":')


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


def _rows_held(raw: bytes) -> int | None:
    """Rows a skipped record names, read without trusting it; None when that cannot be told."""
    try:
        rec, _ = json.JSONDecoder().raw_decode(raw[9:].decode("latin-1"))
        kind = rec["t"]
        if kind in ("job", "input", "chunk", "upload", "jobend"):
            return 0
        if kind == "fail":
            return 1
        if kind == "done":
            rows = [int(b) - int(a) + 1 for a, b in rec["ranges"]]
            if all(n > 0 for n in rows):
                return sum(rows)
    except (KeyError, TypeError, ValueError):
        pass
    return None


class _Replay:
    """Applies records to a _State, noting the bytes it applied and what it had to skip."""

    def __init__(self) -> None:
        self.state = _State()
        self.kept = 0
        self.end = 0
        self.spans: list[list[int]] = []
        self.middle = _Skipped()
        self.pending = _Skipped()  # damaged since the last good record: a tail unless one follows

    def good(self, rec: dict[str, Any], start: int, raw: bytes) -> None:
        """Apply a record whose CRC holds, or skip it when it does not fit what came before."""
        if self.pending.damaged:
            self.middle.add(self.pending)
            self.pending = _Skipped()
        self.end = start + len(raw)
        try:
            self.state.apply(rec)
        except (KeyError, TypeError, ValueError):
            if self.middle.damaged:
                self.middle.dependent += 1
            else:
                self.middle.damaged += 1  # nothing it could depend on was lost: it is bad itself
            self.middle.count(raw)
            return
        self.kept += 1
        if self.spans and self.spans[-1][1] == start:
            self.spans[-1][1] = self.end
        else:
            self.spans.append([start, self.end])

    def damaged(self, data: bytes, start: int) -> None:
        """Take bytes that failed their CRC apart into records; keep those whose CRC holds."""
        cuts = [0, *(m.start() for m in _RECORD_START.finditer(data, 1)), len(data)]
        for a, b in pairwise(cuts):
            piece = data[a:b]
            rec = _decode(piece)
            if rec is not None:
                self.good(rec, start + a, piece)
            else:
                self.pending.damaged += 1
                self.pending.count(piece)


def _load(path: Path) -> tuple[_State, _Damage | None]:
    """Replay every good record of the log, skipping the others, and say what was skipped.

    Stops at once when the first record is not a good `job` record: nothing after it can be
    trusted, and the caller refuses such a log for want of a job.
    """
    replay, offset, bad = _Replay(), 0, bytearray()
    with path.open("rb") as f:
        for raw in f:
            rec = _decode(raw)
            if rec is None:
                bad += raw
            else:
                if bad:
                    replay.damaged(bytes(bad), offset - len(bad))
                    bad.clear()
                replay.good(rec, offset, raw)
            if replay.state.job is None:
                return replay.state, None
            offset += len(raw)
        if bad:
            replay.damaged(bytes(bad), offset - len(bad))
    if not (replay.middle.damaged or replay.middle.dependent or replay.pending.damaged):
        return replay.state, None
    spans = tuple((a, b) for a, b in replay.spans)
    return replay.state, _Damage(
        replay.middle, replay.pending, replay.end, offset, replay.kept, spans
    )


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _resent(skipped: _Skipped, they: str) -> str:
    """How many rows will be sent again, and how far that figure can be trusted."""
    guess = f"about {skipped.rows} (counted from unverified content)"
    if not skipped.unknown:
        if not skipped.rows:
            return f"{they} held no rows (by their unverified content): nothing more is sent"
        return f"the rows {they} held will be sent again: {guess}"
    if skipped.unknown == skipped.damaged + skipped.dependent:
        return (
            f"the rows {they} held will be sent again: how many is unknown ({they} cannot be read)"
        )
    unreadable = _plural(skipped.unknown, "unreadable record")
    return (
        f"the rows {they} held will be sent again: {guess}, plus an unknown number in {unreadable}"
    )


def _describe(path: Path, damage: _Damage) -> str:
    if damage.in_middle:
        skipped = _Skipped()
        skipped.add(damage.middle)
        skipped.add(damage.tail)  # a rewrite drops a torn tail too
        what = _plural(skipped.damaged, "damaged record")
        if skipped.dependent:
            it = "it" if skipped.damaged == 1 else "them"
            what += f" and {_plural(skipped.dependent, 'record')} that depended on {it}"
        return (
            f"{path} is corrupt: skipped {what}, kept {_plural(damage.kept, 'good record')}; "
            f"{_resent(skipped, 'it' if skipped.damaged + skipped.dependent == 1 else 'they')}"
        )
    return (
        f"{path} ended with an incomplete record ({damage.size - damage.end} bytes) from an "
        f"interrupted run; ignored it: {_resent(damage.tail, 'it')}"
    )


def _write_atomic(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Replace a whole file of the state directory so that a crash leaves the old or the new one.

    The temporary file has a fixed name (`<name>.tmp`): the lock makes this job its only writer,
    and a crash leaves one file that the next run overwrites rather than a new one each time.
    """
    write_atomic(path, data, temp=path.with_name(path.name + ".tmp"))


def _read_spans(path: Path, spans: Iterable[tuple[int, int]]) -> Iterator[bytes]:
    """The bytes of a file in the given ranges, a bounded piece at a time."""
    with path.open("rb") as f:
        for start, end in spans:
            f.seek(start)
            while start < end:
                chunk = f.read(min(end - start, 1 << 20))
                if not chunk:
                    raise OSError(errno.EIO, "the file shrank while it was being copied", str(path))
                start += len(chunk)
                yield chunk


def _lock(state_dir: Path) -> int:
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            raise CheckpointError(
                f"another importer run is using {state_dir}",
                hint="wait for it to finish, or pass another --state directory",
            ) from None
        raise
    return fd


def _check_paths(state_dir: Path, names: Iterable[str]) -> None:
    """Refuse a --state that is not a directory, or a directory where one of our files goes.

    Caught before anything moves: `--fresh` would otherwise rename a directory into place.
    """
    if state_dir.exists() and not state_dir.is_dir():
        raise CheckpointError(
            f"--state {state_dir} is not a directory",
            hint="pass a directory for --state (it is created when missing)",
        )
    for name in names:
        path = state_dir / name
        if path.exists() and not path.is_file():
            what = "a directory" if path.is_dir() else "not a regular file"
            raise CheckpointError(
                f"{path} is {what}, where the importer keeps a file",
                hint="move it out of the way, or pass another --state directory",
            )


_HINTS = {
    errno.EACCES: "give this user read and write access to it, or pass another --state directory",
    errno.EPERM: "give this user read and write access to it, or pass another --state directory",
    errno.EROFS: "the disk is read-only: pass a --state directory on a writable one",
    errno.ENOSPC: "free some disk space, then run the same command again",
    errno.EDQUOT: "free some disk space, then run the same command again",
    errno.EISDIR: "move that directory out of the way, or pass another --state directory",
    errno.ENOTDIR: "a file stands where a directory belongs: pass another --state directory",
    errno.EEXIST: "a file stands where a directory belongs: pass another --state directory",
}


def _unusable(state_dir: Path, exc: OSError) -> CheckpointError:
    """Say which path of the state directory the OS refused, and why, without a traceback."""
    named = exc.filename is not None and str(exc.filename) != str(state_dir)
    where = f"{exc.filename}: " if named else ""
    if exc.filename2:
        where = f"{exc.filename} -> {exc.filename2}: "
    reason = (exc.strerror or str(exc)).lower()
    return CheckpointError(
        f"cannot use the state directory {state_dir}: {where}{reason}",
        hint=_HINTS.get(exc.errno or 0, "pass another --state directory"),
    )


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
        try:
            _check_paths(state_dir, (LOG_NAME, LOCK_NAME, PREV_NAME, CORRUPT_NAME))
            state_dir.mkdir(parents=True, exist_ok=True)
            lock_fd = _lock(state_dir)
        except OSError as exc:
            raise _unusable(state_dir, exc) from exc
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
        except OSError as exc:
            os.close(lock_fd)
            raise _unusable(state_dir, exc) from exc
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, state, fd, lock_fd, warnings)

    def register_input(
        self,
        name: str,
        fingerprint: str,
        *,
        facts: InputFacts | None = None,
        grows: tuple[int, int | None] | None = None,
    ) -> None:
        """Declare an input before marking its rows; a known fingerprint just takes the new name
        (and `facts`, when the log lacks them). `grows` (id, last line) makes a new input take
        over the done lines of a known one up to that line (None: all)."""
        inp = self._state.by_fp.get(fingerprint)
        if inp is not None and inp.name == name and (facts is None or inp.path == facts.path):
            return
        ident = inp.id if inp is not None else max(self._state.by_id, default=0) + 1
        rec: dict[str, Any] = {"t": "input", "id": ident, "fp": fingerprint, "name": name}
        if facts is not None:
            rec.update(size=facts.size, path=facts.path)
            if facts.open_line is not None:
                rec["open"] = facts.open_line
        if grows is not None and inp is None:
            rec.update(grows=grows[0], upto=grows[1])
        self._add(rec)
        self._pending_done.setdefault(fingerprint, [])

    def known_inputs(self) -> list[KnownInput]:
        """Every input the log knows, oldest first."""
        self._fold()
        return [inp.known() for inp in self._state.by_id.values()]

    def admit(
        self,
        name: str,
        fingerprint: str,
        facts: InputFacts,
        prefixes: Mapping[int, tuple[str, bool]],
        *,
        resend_changed: bool = False,
    ) -> Admission:
        """Tell what an input is to this job, and register it unless it is to be skipped.

        Known content (under any name) is "known". Content that starts with the whole of a
        known one (`prefixes`: the hash of its first bytes, and whether its line goes on, by
        size) "grew" from the longest such: it takes over its done lines, but for a last line
        that had no newline and goes on now (that row is sent again, complete). Otherwise a
        file at the path of a known input whose content is not known is "changed" and is not
        registered, unless `resend_changed` ("resent": a new input). Else it is "new". Call it
        for the known contents first, so that a renamed file's path moves before the others are
        judged (a rotated log's new file is new, not a change of the old one).
        """
        state = self._state
        inp = state.by_fp.get(fingerprint)
        if inp is not None:
            self.register_input(name, fingerprint, facts=facts)
            return Admission("known", inp.known())
        grown = max(
            (
                k
                for k in state.by_id.values()
                if k.size is not None and k.fingerprint == prefixes.get(k.size, ("", False))[0]
            ),
            key=lambda k: k.size or 0,
            default=None,
        )
        if grown is not None and grown.size is not None:
            upto = None
            if grown.open_line is not None and prefixes[grown.size][1]:
                upto = grown.open_line - 1
            self.register_input(name, fingerprint, facts=facts, grows=(grown.id, upto))
            return Admission("grown", grown.known(), cut_line=None if upto is None else upto + 1)
        before = [k for k in state.by_id.values() if k.path == facts.path]
        if before and not resend_changed:
            return Admission("changed", before[-1].known())
        self.register_input(name, fingerprint, facts=facts)
        return Admission("resent" if before else "new", before[-1].known() if before else None)

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

    def chunk(self, key: str) -> ChunkState | None:
        """What the log knows of the chunk whose content hashes to `key`."""
        return self._state.chunks.get(key)

    def open_chunks(self) -> list[ChunkState]:
        """Chunks whose job has not been seen to end, oldest first: a run settles them before
        it cuts new ones."""
        return [chunk for chunk in self._state.chunks.values() if chunk.stage != "ended"]

    def record_chunk(
        self, key: str, *, fingerprint: str, file: str, lines: Sequence[int], size: int
    ) -> None:
        """Note a chunk about to be uploaded, with its rows' lines, durably: if the answer is
        lost, the next run looks for its job by `file` before its rows are sent again, and a
        job found is settled for exactly these lines."""
        inp = self._state.by_fp.get(fingerprint)
        if inp is None:
            raise ValueError(f"input {fingerprint} was not registered")
        ranges: list[list[int]] = []
        for line in lines:
            if ranges and ranges[-1][1] == line - 1:
                ranges[-1][1] = line
            else:
                ranges.append([line, line])
        rec = {"t": "chunk", "key": key, "id": inp.id, "file": file, "rows": len(lines)}
        self._add({**rec, "bytes": size, "ranges": ranges})
        self.sync()

    def record_upload(self, key: str, job: str) -> None:
        """Note, durably, the job the API started for a chunk: it is never uploaded again."""
        self._add({"t": "upload", "key": key, "job": job})
        self.sync()

    def record_job_end(
        self, key: str, state: str, *, completed: int | None, total: int | None
    ) -> None:
        """Note how a chunk's job ended, after its rows' marks, in the same write: a crash
        leaves both or neither."""
        self._fold()
        rec = {"t": "jobend", "key": key, "state": state, "completed": completed, "total": total}
        self._add(rec)
        self.sync()

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

    @property
    def closed(self) -> bool:
        """Whether `close` ran: nothing can be written any more."""
        return self._fd < 0

    def flush(self) -> None:
        """Hand every buffered record to the OS without fsync: it survives kill -9, not a power cut.

        One write for every mark since the last flush. The caller flushes once per group of
        acknowledgements that arrived together (delivery does it once per turn of the event
        loop), which keeps a resumed run from re-sending more than about the requests that were
        in flight when the process died, at a fraction of the cost of a write per row.
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

    def fileno(self) -> int:
        """The log's descriptor: an fsync of it in another thread makes what `flush` wrote
        durable without holding up this one."""
        return self._fd

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
    """Drop what the replay skipped, so that new records are not appended behind damage."""
    message = _describe(path, damage)
    if damage.in_middle:
        # The copy is durable before the rewrite: the skipped bytes are never only in memory.
        corrupt = path.with_name(CORRUPT_NAME)
        _write_atomic(corrupt, _read_spans(path, [(0, damage.size)]))
        _write_atomic(path, _read_spans(path, damage.spans))
        return (
            f"{message}; a copy of the damaged log is in {corrupt}, and the log was rewritten "
            "with only the good records"
        )
    with path.open("r+b") as f:
        f.truncate(damage.end)
        os.fsync(f.fileno())
    return message


def read_status(state_dir: Path) -> StateStatus:
    """Summarise a state directory without changing it (safe while a run is appending)."""
    path = state_dir / LOG_NAME
    try:
        _check_paths(state_dir, (LOG_NAME,))
        if not path.is_file():
            raise CheckpointError(
                f"no checkpoint log in {state_dir}: nothing has run with this --state"
            )
        state, damage = _load(path)
    except OSError as exc:
        raise _unusable(state_dir, exc) from exc
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
            delivered=inp.lines.count - inp.inherited - inp.failed,
            failed=inp.failed,
            failures=tuple(inp.failures),
            updated_at=_time(inp.updated),
            first_at=_time(inp.first),
            names=tuple(inp.names),
            grew_from=None if inp.grew_from is None else state.by_id[inp.grew_from].fingerprint,
            inherited=inp.inherited,
            size=inp.size,
        )
        for inp in state.by_id.values()
    )
    open_jobs = tuple(chunk for chunk in state.chunks.values() if chunk.stage != "ended")
    return StateStatus(state.job, state.created, inputs, tuple(warnings), open_jobs)


def _time(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)


def known_sizes(state_dir: Path) -> set[int]:
    """The content sizes of the inputs a state directory knows, for the byte pass to probe (see
    read.open_input); empty when there is no usable log (opening it later says why)."""
    path = state_dir / LOG_NAME
    try:
        if not path.is_file():
            return set()
        state, _ = _load(path)
    except OSError:
        return set()
    return {inp.size for inp in state.by_id.values() if inp.size}
