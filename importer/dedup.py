"""Find the events Vero would silently drop as duplicates, before anything is sent.

Vero drops an event when the same user sends the same event name (case, spaces and underscores
folded) with the same `data` within a few minutes; without `data` the key is the event name, the
user and `extras.check_id`. A replay of history sends thousands of events within minutes, so
every such collision in the input is an event lost. Rows without data get a unique check_id
(payload.py), so what remains are identical events with identical data; `[dedup] data_key` in
the mapping prevents those too.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from importer.schema import Mapping
from importer.validate import EVENT, USER

FOLDED = "__folded"
KEY = "__key"


def fold_event_name(name: pl.Expr) -> pl.Expr:
    """Vero's notion of one event name: `Purchased Item` = `purchased item` = `purchased_item`."""
    return name.str.to_lowercase().str.replace_all("_", " ", literal=True)


@dataclass(frozen=True, slots=True)
class DedupReport:
    """Per folded event name: rows Vero would drop, and raw names that fold into one."""

    would_drop: dict[str, int]
    folded_names: dict[str, list[str]]
    protected: bool

    @property
    def total(self) -> int:
        """How many rows in all would be dropped."""
        return sum(self.would_drop.values())


class DedupTracker:
    """Keeps two 8-byte hashes per candidate row across all batches, then counts collisions.

    16 bytes a row, not the text of the rows. Counted with n_unique per group at the end:
    `DataFrame.unique()` over millions of rows costs hundreds of MB, n_unique a few.
    """

    def __init__(self, mapping: Mapping) -> None:
        self._mapping = mapping
        self._keys: list[pl.DataFrame] = []
        self._names: list[pl.DataFrame] = []

    @property
    def applies(self) -> bool:
        """Only events deduplicate; identify calls update a profile and are never dropped."""
        return "event_name" in self._mapping.fields

    def add(self, valid: pl.DataFrame) -> None:
        """Take note of a validated batch (the frame validate_frame returned)."""
        if not self.applies or valid.height == 0:
            return
        folded = fold_event_name(pl.col(EVENT))
        names = valid.select(folded.alias("name"), pl.col(EVENT)).unique()
        self._names.append(names.with_columns(pl.col("name").hash().alias(FOLDED)))
        if len(self._names) > 64:
            self._names = [pl.concat(self._names).unique()]
        if self._mapping.dedup_data_key is not None:
            return
        if "data" in valid.columns:
            has_data = pl.col("data").is_not_null() & (pl.col("data") != "{}")
            payload: pl.Expr = pl.when(has_data).then(pl.lit("d") + pl.col("data")).otherwise(None)
        else:
            payload = pl.lit(None, pl.String)
        if "extras.check_id" in valid.columns:
            payload = pl.coalesce(payload, pl.lit("c") + pl.col("extras.check_id"))
        # Without data or a mapped check_id, each row gets a unique generated check_id.
        candidates = valid.filter(payload.is_not_null()).select(
            folded.hash().alias(FOLDED),
            pl.concat_str([pl.col(USER), folded, payload], separator="\x1f").hash().alias(KEY),
        )
        self._keys.append(candidates)

    def report(self) -> DedupReport:
        """The collisions over everything added so far."""
        names = pl.concat(self._names).unique() if self._names else None
        folded_names: dict[str, list[str]] = {}
        would_drop: dict[str, int] = {}
        if names is None:
            return DedupReport(would_drop, folded_names, self._mapping.dedup_data_key is not None)
        folds = (
            names.group_by("name")
            .agg(pl.col(EVENT).sort())
            .filter(pl.col(EVENT).list.len() > 1)
            .sort("name")
        )
        folded_names = dict(zip(folds["name"].to_list(), folds[EVENT].to_list(), strict=True))
        if not self._keys:
            return DedupReport(would_drop, folded_names, self._mapping.dedup_data_key is not None)
        counts = (
            pl.concat(self._keys)
            .group_by(FOLDED)
            .agg((pl.len() - pl.col(KEY).n_unique()).alias("dropped"))
            .join(names.select(FOLDED, "name").unique(), on=FOLDED)
            .filter(pl.col("dropped") > 0)
            .sort("dropped", "name", descending=[True, False])
        )
        would_drop = dict(zip(counts["name"].to_list(), counts["dropped"].to_list(), strict=True))
        return DedupReport(
            would_drop=would_drop,
            folded_names=folded_names,
            protected=self._mapping.dedup_data_key is not None,
        )
