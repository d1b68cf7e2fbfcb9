"""The checkpoint in memory: which lines of each input are done or failed, as ranges."""

from __future__ import annotations

import json
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from importer.state.facts import (
    ChunkState,
    Failure,
    KnownInput,
    RunIdentity,
)

if TYPE_CHECKING:
    import polars as pl

_EXAMPLES = 5  # failures kept per input for the status
MAX_REASONS = 20  # distinct failure reasons counted per input; the rest count as other


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
        # Here, not at the top: the runs that mask rows have Polars loaded already, and
        # `importer status`, which only counts them, starts without it.
        import polars as pl

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
class InputRows:
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
    whole: int | None = None  # rows of it a run read to its end, every one of them handled
    quick: str = ""  # its quick fingerprint or the store's checksum, noted with `whole`
    disk_size: int | None = None  # its file's size on disk (compressed), noted with `whole`
    head: bytes = b""  # the content hash after its first block, noted with `whole`
    grew_from: int | None = None
    grew_upto: int | None = None  # the last line taken over from `grew_from` (None: all)
    heirs: list[InputRows] = field(default_factory=list)  # the inputs that grew from this one
    inherited: int = 0
    inherited_failed: int = 0
    # The lines dead-lettered (by this content; a grown input's inherited ones are not here).
    failed_lines: _LineSet = field(default_factory=_LineSet)
    # (status, error) -> [rows, first line], for the status's one line per reason.
    reasons: dict[tuple[int | None, str], list[int]] = field(default_factory=dict)
    other_failed: int = 0

    def touch(self, at: float) -> None:
        """Note a row finished at `at`."""
        self.updated = at
        if self.first is None:
            self.first = at

    def known(self) -> KnownInput:
        """What a later run compares its inputs with."""
        delivered = self.lines.count - self.failed - self.inherited_failed
        return KnownInput(
            self.id,
            self.fingerprint,
            self.name,
            delivered,
            self.size,
            self.path,
            self.open_line,
            whole=self.is_whole,
            failed=self.failed + self.inherited_failed,
        )

    @property
    def is_whole(self) -> bool:
        """Whether every row of this content was handled (delivered or dead-lettered): a run
        read it to its end and found no row it left out (rejected, outside a window)."""
        return self.whole is not None and self.lines.count >= self.whole


class StateRows:
    """The log replayed into memory; the writer and the read-only status share it."""

    def __init__(self) -> None:
        self.version: object = None
        self.job: RunIdentity | None = None
        self.created: datetime | None = None
        self.by_id: dict[int, InputRows] = {}
        self.by_fp: dict[str, InputRows] = {}
        self.chunks: dict[str, ChunkState] = {}

    def apply(self, rec: dict[str, Any]) -> None:
        """Apply one record; KeyError, TypeError or ValueError mean it does not belong here."""
        kind = rec["t"]
        if kind == "job" and self.job is None:
            self.version = rec["v"]
            self.job = RunIdentity(
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
                inp = InputRows(int(rec["id"]), str(rec["fp"]), str(rec["name"]))
                if base is not None:
                    _inherit(inp, base, None if upto is None else int(upto))
                self.by_id[inp.id] = self.by_fp[inp.fingerprint] = inp
            elif (inp.id, inp.fingerprint) != (rec["id"], rec["fp"]):
                raise ValueError("an input id and fingerprint disagree with earlier records")
            inp.name = str(rec["name"])
            if inp.name not in inp.names:
                inp.names.append(inp.name)
            if rec.get("whole") is not None:
                inp.whole = int(rec["whole"])
                inp.quick, inp.disk_size = str(rec["quick"]), int(rec["disk"])
                inp.head = bytes.fromhex(str(rec.get("head") or ""))
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
                _pass_on(inp, a, b, failed=False)
            inp.touch(at)
        elif kind == "fail":
            inp, at = self.by_id[rec["id"]], float(rec["at"])
            failure = Failure(int(rec["line"]), rec["status"], str(rec["error"]))
            if failure.line not in inp.lines:
                inp.lines.add_range(failure.line, failure.line)
                inp.failed += 1
                inp.failed_lines.add_range(failure.line, failure.line)
                if len(inp.failures) < _EXAMPLES:
                    inp.failures.append(failure)
                reason = inp.reasons.get((failure.status, failure.error))
                if reason is not None:
                    reason[0] += 1
                elif len(inp.reasons) < MAX_REASONS:
                    inp.reasons[(failure.status, failure.error)] = [1, failure.line]
                else:
                    inp.other_failed += 1
                _pass_on(inp, failure.line, failure.line, failed=True)
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


def _pass_on(inp: InputRows, first: int, last: int, *, failed: bool) -> None:
    """Give the inputs that grew from `inp` its lines first..last that they took over, done
    after they were registered: an open job of the old content settled by a later run (its
    rows are the grown input's too, and must not be sent again)."""
    for heir in inp.heirs:
        top = last if heir.grew_upto is None else min(last, heir.grew_upto)
        if first > top:
            continue
        before = heir.lines.count
        heir.lines.add_range(first, top)
        added = heir.lines.count - before
        if failed:
            heir.inherited_failed += added
            heir.failed_lines.add_range(first, top)
        heir.inherited += added
        if added:
            _pass_on(heir, first, top, failed=failed)


def _inherit(inp: InputRows, base: InputRows, upto: int | None) -> None:
    """Give a grown input the done lines of the content it starts with (up to `upto`), and
    later ones as they come (see _pass_on)."""
    inp.grew_from = base.id
    inp.grew_upto = upto
    base.heirs.append(inp)
    for first, last in base.lines.ranges():
        if upto is not None and first > upto:
            break
        inp.lines.add_range(first, last if upto is None else min(last, upto))
    inp.inherited = inp.lines.count
    for first, last in base.failed_lines.ranges():
        if upto is not None and first > upto:
            break
        inp.failed_lines.add_range(first, last if upto is None else min(last, upto))
    # The log keeps how many rows were dead-lettered, not which: when the last line is not
    # taken over, this may count one too many.
    inp.inherited_failed = base.failed + base.inherited_failed


@dataclass(slots=True)
class SkippedRecords:
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

    def add(self, other: SkippedRecords) -> None:
        """Take over another tally, as when a good record shows a tail was in the middle."""
        self.damaged += other.damaged
        self.dependent += other.dependent
        self.rows += other.rows
        self.unknown += other.unknown
