"""The checkpoint log on disk: one CRC-checked JSON record a line, read back record by record, with
damage found, described and repaired."""

from __future__ import annotations

import copy
import errno
import hashlib
import io
import json
import os
import re
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, BinaryIO

from importer.files import write_atomic
from importer.state.layout import CORRUPT_NAME
from importer.state.rows import SkippedRecords, StateRows

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Damage:
    """What a replay left out: records in the middle (corruption) and a torn tail."""

    middle: SkippedRecords  # skipped with good records after them
    tail: SkippedRecords  # damaged records after the last good one: an interrupted write
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


def encode_record(rec: dict[str, Any]) -> bytes:
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


class _Replay:
    """Applies records to a StateRows, noting the bytes it applied and what it had to skip."""

    def __init__(self) -> None:
        self.state = StateRows()
        self.kept = 0
        self.end = 0
        self.spans: list[list[int]] = []
        self.middle = SkippedRecords()
        self.pending = (
            SkippedRecords()
        )  # damaged since the last good record: a tail unless one follows

    def good(self, rec: dict[str, Any], start: int, raw: bytes) -> None:
        """Apply a record whose CRC holds, or skip it when it does not fit what came before."""
        if self.pending.damaged:
            self.middle.add(self.pending)
            self.pending = SkippedRecords()
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


# The last replay of each log, by its size and content hash. One run reads its log several
# times (admission, the status of whole and grown files, the sender), and a log of a year of
# nights is thousands of records, each decoded and applied in Python: hashing its bytes again
# costs a hundredth of that. The content, not a size and a time, says it is unchanged: a damaged
# byte rewritten in place keeps both.
_replays: dict[Path, tuple[tuple[int, bytes], tuple[StateRows, Damage | None]]] = {}
_replays_lock = threading.Lock()


def load_log(path: Path) -> tuple[StateRows, Damage | None]:
    """Replay every good record of the log, skipping the others, and say what was skipped.

    Stops at once when the first record is not a good `job` record: nothing after it can be
    trusted, and the caller refuses such a log for want of a job. The caller owns what it is
    given (a copy, when the log's content is what it was when last replayed).
    """
    # Read whole once: the bytes hashed are the bytes replayed, even while a run appends.
    data = path.read_bytes()
    seen = (len(data), hashlib.blake2b(data, digest_size=16).digest())
    key = path.resolve()
    with _replays_lock:
        known = _replays.get(key)
    if known is not None and known[0] == seen:
        return copy.deepcopy(known[1])
    replayed = _replay_log(io.BytesIO(data))
    with _replays_lock:
        _replays[key] = (seen, copy.deepcopy(replayed))
    return replayed


def _replay_log(f: BinaryIO) -> tuple[StateRows, Damage | None]:
    replay, offset, bad = _Replay(), 0, bytearray()
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
    return replay.state, Damage(
        replay.middle, replay.pending, replay.end, offset, replay.kept, spans
    )


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _resent(skipped: SkippedRecords, they: str) -> str:
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


def describe_damage(path: Path, damage: Damage) -> str:
    if damage.in_middle:
        skipped = SkippedRecords()
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


def write_log(path: Path, data: bytes | Iterable[bytes]) -> None:
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


def repair_log(path: Path, damage: Damage) -> str:
    """Drop what the replay skipped, so that new records are not appended behind damage."""
    message = describe_damage(path, damage)
    if damage.in_middle:
        # The copy is durable before the rewrite: the skipped bytes are never only in memory.
        corrupt = path.with_name(CORRUPT_NAME)
        write_log(corrupt, _read_spans(path, [(0, damage.size)]))
        write_log(path, _read_spans(path, damage.spans))
        return (
            f"{message}; a copy of the damaged log is in {corrupt}, and the log was rewritten "
            "with only the good records"
        )
    with path.open("r+b") as f:
        f.truncate(damage.end)
        os.fsync(f.fileno())
    return message
