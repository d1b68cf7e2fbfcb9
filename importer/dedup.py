"""Find the events the API would silently drop as duplicates, before anything is sent.

Where an action declares `Duplicates` (an event API that drops the same user's same event name,
folded as the API folds it, with the same data, within minutes), every such collision in the
input is an event lost when a replay sends history within minutes. Rows without data get a
unique id (payload.py), so what remains are identical events with identical data; `[dedup]
data_key` in the mapping prevents those, `time_key` adds the event's original time to data so
only the same event in the same second still collides.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from importer.mapping import Mapping
from importer.validate import EVENT, USER

FOLDED = "__folded"
KEY = "__key"


@dataclass(frozen=True, slots=True)
class DedupReport:
    """Per folded event name: rows the API would drop, and raw names that fold into one."""

    would_drop: dict[str, int]
    folded_names: dict[str, list[str]]
    protected: bool
    api: str = ""
    window: str = ""
    time_key: str | None = None
    accepted: bool = False

    @property
    def total(self) -> int:
        """How many rows in all would be dropped."""
        return sum(self.would_drop.values())

    @property
    def unaccepted(self) -> bool:
        """Whether the API would drop events the mapping does not say it accepts losing."""
        return self.total > 0 and not self.accepted


class DedupTracker:
    """Keeps two 8-byte hashes per candidate row across all batches, then counts collisions.

    16 bytes a row, not the text of the rows. Counted with n_unique per group at the end:
    `DataFrame.unique()` over millions of rows costs hundreds of MB, n_unique a few.
    """

    def __init__(self, mapping: Mapping) -> None:
        self._mapping = mapping
        self._rules = mapping.action.duplicates
        self._keys: list[pl.DataFrame] = []
        self._names: list[pl.DataFrame] = []

    @property
    def applies(self) -> bool:
        """Only calls the API deduplicates (events); a profile update is never dropped."""
        return self._rules is not None and self._rules.event in self._mapping.fields

    def add(self, valid: pl.DataFrame) -> None:
        """Take note of a validated batch (the frame validate_frame returned)."""
        rules = self._rules
        if rules is None or not self.applies or valid.height == 0:
            return
        folded = rules.fold(pl.col(EVENT))
        names = valid.select(folded.alias("name"), pl.col(EVENT)).unique()
        self._names.append(names.with_columns(pl.col("name").hash().alias(FOLDED)))
        if len(self._names) > 64:
            self._names = [pl.concat(self._names).unique()]
        if self._mapping.dedup_data_key is not None:
            return
        if rules.data in valid.columns:
            data = pl.col(rules.data)
            has_data = data.is_not_null() & (data != "{}")
            if self._mapping.dedup_time_key is not None and rules.time in valid.columns:
                data = data + pl.lit("\x1f") + pl.col(rules.time)
            payload: pl.Expr = pl.when(has_data).then(pl.lit("d") + data).otherwise(None)
        else:
            payload = pl.lit(None, pl.String)
        if rules.unique in valid.columns:
            payload = pl.coalesce(payload, pl.lit("c") + pl.col(rules.unique))
        # Without data or a mapped unique id, each row gets a unique generated one.
        candidates = valid.filter(payload.is_not_null()).select(
            folded.hash().alias(FOLDED),
            pl.concat_str([pl.col(USER), folded, payload], separator="\x1f").hash().alias(KEY),
        )
        self._keys.append(candidates)

    def report(self) -> DedupReport:
        """The collisions over everything added so far."""
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
        if self._keys:
            counts = (
                pl.concat(self._keys)
                .group_by(FOLDED)
                .agg((pl.len() - pl.col(KEY).n_unique()).alias("dropped"))
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
