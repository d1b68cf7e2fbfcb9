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
           and as they are done later; whole (rows): a run read every row of this content and
           each is done or failed, so a later run need not read it again
    done   id, at (unix time), ranges: [[first, last], ...] of newly finished lines, inclusive
    fail   id, at, line, status (int or null), error (cut to 1000 characters)

A row is (input fingerprint, line). A dead-lettered row counts as done (a resumed run does not
send it again; the user replays the dead-letter file) but is counted apart. `mark_done` and
`mark_failed` only buffer; `sync` encodes in bulk, writes and fsyncs, and what it covered
survives kill -9. Not thread-safe: one event loop owns a log.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import polars as pl

from importer.errors import CheckpointError
from importer.state.facts import (
    Admission,
    ChunkState,
    InputFacts,
    KnownInput,
    RunIdentity,
)
from importer.state.layout import (
    CORRUPT_NAME,
    LOCK_NAME,
    LOG_NAME,
    PREV_NAME,
    check_paths,
    unusable_state,
)
from importer.state.records import FORMAT_VERSION, encode_record, load_log, repair_log, write_log
from importer.state.rows import InputRows, StateRows

_MAX_ERROR = 1000  # the dead-letter file keeps the whole message; the log keeps a reminder


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


def _check_run(path: Path, state: StateRows, job: RunIdentity) -> None:
    """Refuse a log written for another job: resuming it would skip the wrong rows."""
    if state.job is None:
        raise CheckpointError(f"{path} has no readable job header; run with --fresh to start over")
    if state.version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state.version!r}, this importer reads "
            f"{FORMAT_VERSION}; run with --fresh to start over"
        )
    other_shard = _other_shard(state.job, job)
    if other_shard is not None:
        raise CheckpointError(
            f"state directory {path.parent} belongs to another shard: {other_shard}. Each "
            "shard keeps its own state (by default .importer/shard-K-of-N): pass this shard's "
            "--state, or run with --fresh to start over"
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


# A shard's run fingerprint is its mapping's with `+shard-K-of-N` (pipeline.run, Shard.state_name).
_SHARD_SUFFIX = re.compile(r"\+(shard-[0-9]+-of-[0-9]+)$")


def _other_shard(old: RunIdentity, new: RunIdentity) -> str | None:
    """What tells the two runs apart when only their shards do (None: something else does)."""
    old_shard, new_shard = (
        _SHARD_SUFFIX.search(old.mapping_fingerprint),
        _SHARD_SUFFIX.search(new.mapping_fingerprint),
    )
    if (old_shard and old_shard[1]) == (new_shard and new_shard[1]):
        return None
    old_base = (
        old.mapping_fingerprint[: old_shard.start()] if old_shard else old.mapping_fingerprint
    )
    new_base = (
        new.mapping_fingerprint[: new_shard.start()] if new_shard else new.mapping_fingerprint
    )
    if (old_base, old.destination, old.endpoint) != (new_base, new.destination, new.endpoint):
        return None
    held = f"it holds {old_shard[1]}" if old_shard else "it holds a run of every shard"
    now = f"this run is {new_shard[1]}" if new_shard else "this run sends every shard"
    return f"{held}, {now}"


class CheckpointLog:
    """The append-only record of finished rows of one job, open for appending under a lock."""

    def __init__(
        self, path: Path, state: StateRows, fd: int, lock_fd: int, warnings: list[str]
    ) -> None:
        self.path = path
        self.warnings = warnings
        self._state = state
        self._fd = fd
        self._lock_fd = lock_fd
        self._size = os.fstat(fd).st_size
        self._pending_done: dict[str, list[int]] = {fp: [] for fp in state.by_fp}
        self._pending_failed: list[tuple[InputRows, int, int | None, str]] = []
        self._unsynced: list[dict[str, Any]] = []

    @classmethod
    def open(cls, state_dir: Path, *, job: RunIdentity, fresh: bool = False) -> CheckpointLog:
        """Resume the log in `state_dir` (or start one); `fresh` sets an old log aside first."""
        try:
            check_paths(state_dir, (LOG_NAME, LOCK_NAME, PREV_NAME, CORRUPT_NAME))
            state_dir.mkdir(parents=True, exist_ok=True)
            lock_fd = _lock(state_dir)
        except OSError as exc:
            raise unusable_state(state_dir, exc) from exc
        try:
            path = state_dir / LOG_NAME
            warnings: list[str] = []
            if fresh and path.exists():
                os.replace(path, state_dir / PREV_NAME)
            if path.exists() and path.stat().st_size > 0:
                state, damage = load_log(path)
                _check_run(path, state, job)
                if damage is not None:
                    warnings.append(repair_log(path, damage))
            else:
                header = {
                    "t": "job",
                    "v": FORMAT_VERSION,
                    "mapping": job.mapping_fingerprint,
                    "destination": job.destination,
                    "endpoint": job.endpoint,
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                state = StateRows()
                state.apply(header)
                write_log(path, encode_record(header))
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            os.close(lock_fd)
            raise unusable_state(state_dir, exc) from exc
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

    def mark_whole(
        self, fingerprint: str, rows: int, *, quick: str, disk_size: int, head: bytes
    ) -> bool:
        """Note that a run read the input to its end and found `rows` rows, when every one of
        them is handled (done or dead-lettered): later runs that find its `quick` fingerprint
        (taken in the same pass as `fingerprint`) at `disk_size` skip it without reading it.
        `head` is the content hash after its first block, to tell what may start like it.
        Written as the input's record again with `whole`, keys readers before it ignore.
        Whether it was noted."""
        self._fold()
        inp = self._state.by_fp.get(fingerprint)
        if inp is None or not quick or inp.is_whole or inp.lines.count != rows:
            return False
        rec = {"t": "input", "id": inp.id, "fp": inp.fingerprint, "name": inp.name}
        self._add({**rec, "whole": rows, "quick": quick, "disk": disk_size, "head": head.hex()})
        return True

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
        registered, unless `resend_changed` ("resent": a new input); a known content of which
        no row was delivered does not count. Else it is "new". Call it
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
        # Content of which nothing was delivered (every row rejected, or a damaged file fetched
        # again) is new content: nothing of the old one can be sent twice.
        before = [k for k in state.by_id.values() if k.path == facts.path and k.known().delivered]
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

    def sharing(self, fingerprint: str, lines: Sequence[int]) -> dict[str, list[int]]:
        """The input's `lines`, and the same lines of every input that grew from it and took
        them over (by fingerprint): what marking them marks."""
        self._fold()
        inp = self._state.by_fp.get(fingerprint)
        found: dict[str, list[int]] = {}
        todo = [] if inp is None else [(inp, list(lines))]
        while todo:
            inp, held = todo.pop()
            found.setdefault(inp.fingerprint, []).extend(held)
            for heir in inp.heirs:
                upto = heir.grew_upto
                todo.append((heir, [n for n in held if upto is None or n <= upto]))
        return found

    def failed_mask(self, fingerprint: str, lines: pl.Series) -> pl.Series:
        """A boolean Series, True where that row of the input went to the dead letters."""
        self._fold()
        inp = self._state.by_fp.get(fingerprint)
        if inp is None:
            return pl.repeat(False, len(lines), eager=True).alias(lines.name)
        return inp.failed_lines.mask(lines)

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
        data = b"".join(map(encode_record, self._unsynced))
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
