"""Find the events the API would silently drop as duplicates, before anything is sent.

Where an action declares `Duplicates` (an event API that drops the same user's same event name,
folded as the API folds it, with the same data, within minutes), every such collision in the
input is an event lost when a replay sends history within minutes. Rows without data get a
unique id (payloads/build.py), so what remains are identical events with identical data; `[dedup]
data_key` in the mapping prevents those, `time_key` adds the event's original time to data so
only the same event in the same second still collides.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

import polars as pl

from importer.columns import EVENT, USER
from importer.mapping.file import Mapping
from importer.outcome import DedupReport

FOLDED = "__folded"
KEY = "__key"
# 8 MB of hashes (half a million rows) in memory before they go to disk; 64 partitions keep
# report() to 1/64 of them at a time (5 MB at 20M rows).
SPILL_BYTES = 8 << 20
PARTITIONS = 64


class DedupTracker:
    """Keeps two 8-byte hashes per candidate row across all batches, then counts collisions.

    16 bytes a row, not the text of the rows, and not in memory: past `spill_bytes` the hashes
    go to `partitions` files in a temporary directory, split by the row key so that equal keys
    meet in one file, and `report()` counts one partition at a time. Memory stays flat however
    long the input; a small input never touches the disk. Counted with n_unique per group:
    `DataFrame.unique()` over millions of rows costs hundreds of MB, n_unique a few.
    """

    def __init__(
        self,
        mapping: Mapping,
        *,
        spill_bytes: int = SPILL_BYTES,
        partitions: int = PARTITIONS,
    ) -> None:
        if spill_bytes < 0 or partitions < 1:
            raise ValueError("spill_bytes must be >= 0 and partitions >= 1")
        self._mapping = mapping
        self._rules = mapping.action.duplicates
        self._keys: list[pl.DataFrame] = []
        self._buffered = 0
        self._names: list[pl.DataFrame] = []
        self._spill_bytes = spill_bytes
        self._partitions = partitions
        self._spill_dir: Path | None = None
        self._spilled: list[list[Path]] = [[] for _ in range(partitions)]
        self._spills = 0
        self._cleanup: weakref.finalize[[Path, int], None] | None = None
        self._report: DedupReport | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes of row hashes held in memory now; at most `spill_bytes` between batches."""
        return self._buffered

    @property
    def spill_dir(self) -> Path | None:
        """Where the hashes went once they outgrew memory; None before that and after report."""
        return self._spill_dir

    @property
    def applies(self) -> bool:
        """Only calls the API deduplicates (events); a profile update is never dropped."""
        return self._rules is not None and self._rules.event in self._mapping.fields

    def add(self, valid: pl.DataFrame) -> None:
        """Take note of a validated batch (the frame validate_frame returned)."""
        if self._report is not None:
            raise RuntimeError("DedupTracker.add after report(): its spilled hashes are gone")
        rules = self._rules
        if rules is None or not self.applies or valid.height == 0:
            return
        folded = rules.fold(pl.col(EVENT))
        names = valid.select(folded.alias("name"), pl.col(EVENT)).unique()
        # A few rows kept for the whole run: copy their text, or each row's string view would
        # keep its batch's whole string buffer alive (25 bytes a row of the input, for ever).
        self._names.append(
            names.select(_copied("name"), _copied(EVENT), pl.col("name").hash().alias(FOLDED))
        )
        if len(self._names) > 64:
            kept = pl.concat(self._names).unique()
            self._names = [kept.select(_copied("name"), _copied(EVENT), FOLDED)]
        if self._mapping.dedup_data_key is not None:
            return
        if rules.data in valid.columns:
            data = pl.col(rules.data)
            has_data = data.is_not_null() & (data != "{}")
            if self._mapping.dedup_time_key is not None and rules.time in valid.columns:
                data = data + pl.lit("\x1f") + pl.col(rules.time)
            payload: pl.Expr | None = pl.when(has_data).then(pl.lit("d") + data).otherwise(None)
        else:
            payload = None
        if rules.unique in valid.columns:
            unique = pl.lit("c") + pl.col(rules.unique)
            payload = unique if payload is None else pl.coalesce(payload, unique)
        if payload is None:
            # Not filtered by a literal: Polars 2.1 fails a one-chunk frame of 20k rows or more
            # with "filter predicate length of 2", and no row could be a candidate anyway.
            return
        # Without data or a mapped unique id, each row gets a unique generated one.
        candidates = valid.filter(payload.is_not_null()).select(
            folded.hash().alias(FOLDED),
            pl.concat_str([pl.col(USER), folded, payload], separator="\x1f").hash().alias(KEY),
        )
        self._keys.append(candidates)
        self._buffered += candidates.estimated_size()
        if self._buffered > self._spill_bytes:
            self._spill()

    def _spill(self) -> None:
        """Move the buffered hashes to one file per partition of KEY, so memory stays flat."""
        if self._spill_dir is None:
            # The machine's temp, never beside the user's input: these are scratch files.
            self._spill_dir = Path(tempfile.mkdtemp(prefix="importer-dedup-"))
            self._cleanup = weakref.finalize(self, _remove_dir, self._spill_dir, os.getpid())
        keys = pl.concat(self._keys)
        self._keys = []
        self._buffered = 0
        parts = keys.with_columns((pl.col(KEY) % self._partitions).alias("part")).partition_by(
            "part", as_dict=True, include_key=False
        )
        for (part, *_), frame in parts.items():
            path = self._spill_dir / f"{part:04d}-{self._spills:06d}.arrow"
            frame.write_ipc(path)
            self._spilled[int(part)].append(path)
        self._spills += 1

    def _dropped(self) -> pl.DataFrame:
        """Rows minus distinct keys per FOLDED: one partition in memory at a time, where
        equal keys always share a partition, so the partitions' counts add up exactly."""
        count = (pl.len() - pl.col(KEY).n_unique()).alias("dropped")
        if self._spill_dir is None:
            partials = [pl.concat(self._keys).group_by(FOLDED).agg(count)] if self._keys else []
        else:
            if self._keys:
                self._spill()
            partials = [
                pl.scan_ipc(paths, glob=False).group_by(FOLDED).agg(count).collect()
                for paths in self._spilled
                if paths
            ]
        if not partials:
            return pl.DataFrame(schema={FOLDED: pl.UInt64, "dropped": pl.UInt32})
        return pl.concat(partials).group_by(FOLDED).agg(pl.col("dropped").sum())

    def report(self) -> DedupReport:
        """The collisions over everything added; the spilled hashes are deleted after, so
        this is the tracker's last word (called again, it returns the same report)."""
        if self._report is not None:
            return self._report
        self._report = self._counted_report()
        self._keys = []
        self._buffered = 0
        if self._cleanup is not None:
            self._cleanup()
        self._spill_dir = None
        self._spilled = [[] for _ in range(self._partitions)]
        return self._report

    def _counted_report(self) -> DedupReport:
        """The report from the buffered and spilled hashes and the names seen."""
        rules = self._rules
        mapping = self._mapping
        empty = DedupReport(
            would_drop={},
            folded_names={},
            protected=mapping.dedup_data_key is not None,
            api=rules.api if rules else "",
            window=rules.window if rules else "",
            time_key=mapping.dedup_time_key,
            accepted=mapping.accept_drops,
        )
        names = pl.concat(self._names).unique() if self._names else None
        if names is None:
            return empty
        folds = (
            names.group_by("name")
            .agg(pl.col(EVENT).sort())
            .filter(pl.col(EVENT).list.len() > 1)
            .sort("name")
        )
        folded_names = dict(zip(folds["name"].to_list(), folds[EVENT].to_list(), strict=True))
        would_drop: dict[str, int] = {}
        if self._keys or self._spill_dir is not None:
            counts = (
                self._dropped()
                .join(names.select(FOLDED, "name").unique(), on=FOLDED)
                .filter(pl.col("dropped") > 0)
                .sort("dropped", "name", descending=[True, False])
            )
            would_drop = dict(
                zip(counts["name"].to_list(), counts["dropped"].to_list(), strict=True)
            )
        return DedupReport(
            would_drop=would_drop,
            folded_names=folded_names,
            protected=empty.protected,
            api=empty.api,
            window=empty.window,
            time_key=empty.time_key,
            accepted=empty.accepted,
        )


def _copied(column: str) -> pl.Expr:
    """The column's strings in a buffer of their own: concat_str with a second part writes new
    strings (with one part it returns the column as it is, and so does shrink_to_fit)."""
    return pl.concat_str([pl.col(column), pl.lit("")]).alias(column)


def _remove_dir(path: Path, pid: int) -> None:
    """Delete the spill directory, but only from the process that made it (not a fork)."""
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)
