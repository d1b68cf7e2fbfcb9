"""The duplicate analysis keeps its memory flat: hashes go to disk, kept names own their text."""

from __future__ import annotations

import gc
import sys
import tempfile
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from pipeline_helpers import NOW, make_mapping, write_csv

from importer.checks.dedup import DedupTracker
from importer.checks.validate import FileState, validate_frame
from importer.columns import EVENT, USER
from importer.inputs.reader import iter_batches, open_input
from importer.outcome import DedupReport

HEADER = "user_id,email,event,occurred_at,product"
EVENTS = ["Purchased Item", "purchased_item", "Viewed Product", "Logged in"]


def many_rows() -> list[tuple[str, str, str]]:
    """(user, event, product) with collisions within and across batches; no product, no data."""
    return [(f"u{i % 7}", EVENTS[i % 4], f"sku-{i % 5}" if i % 3 else "") for i in range(600)]


def expected_drops(rows: list[tuple[str, str, str]]) -> dict[str, int]:
    """Rows minus distinct (user, folded name, data), per folded name, counted in plain Python."""
    rows_with_data = [(u, e.lower().replace("_", " "), p) for u, e, p in rows if p]
    per_name = Counter(name for _, name, _ in rows_with_data)
    distinct = Counter(name for _, name, _ in set(rows_with_data))
    return {
        name: per_name[name] - distinct[name]
        for name in per_name
        if per_name[name] > distinct[name]
    }


def track(path: Path, tracker: DedupTracker, *, batch_rows: int) -> list[int]:
    """Feed every validated batch of `path` to `tracker`; the bytes it buffered after each."""
    mapping = make_mapping()
    state = FileState()
    buffered = []
    for batch in iter_batches(open_input(path), batch_rows=batch_rows):
        tracker.add(validate_frame(batch.frame, mapping, state=state, now=NOW).valid)
        buffered.append(tracker.buffered_bytes)
    return buffered


def test_spilled_hashes_count_exactly_what_memory_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = many_rows()
    lines = [f"{u},{u}@example.com,{e},2023-05-30T10:00:00Z,{p}" for u, e, p in rows]
    path = write_csv(tmp_path, HEADER, *lines)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    # 200 bytes: twelve rows' two hashes; batches of 7 rows spill every other time or so.
    spilling = DedupTracker(make_mapping(), spill_bytes=200, partitions=4)
    buffered = track(path, spilling, batch_rows=7)
    assert max(buffered) <= 200
    # Some hashes are still in memory at the end: report() counts them with the spilled ones.
    assert buffered[-1] > 0
    spill_dir = spilling.spill_dir
    assert spill_dir is not None
    # On the machine's temp, never beside the input.
    assert spill_dir.parent == temp
    assert len(list(spill_dir.iterdir())) > 4
    in_memory = DedupTracker(make_mapping())
    track(path, in_memory, batch_rows=7)
    assert in_memory.spill_dir is None
    expected = expected_drops(rows)
    assert set(expected) == {"purchased item", "viewed product", "logged in"}
    report = spilling.report()
    assert report.would_drop == expected
    assert report == in_memory.report()
    assert report.folded_names == {"purchased item": ["Purchased Item", "purchased_item"]}
    assert not spill_dir.exists()
    assert spilling.report() is report


def test_a_tracker_dropped_without_report_deletes_its_spill(tmp_path: Path) -> None:
    path = write_csv(tmp_path, HEADER, "u1,a@example.com,Bought,2023-05-30T10:00:00Z,shoes")
    tracker = DedupTracker(make_mapping(), spill_bytes=0)
    track(path, tracker, batch_rows=1)
    spill_dir = tracker.spill_dir
    assert spill_dir is not None
    assert spill_dir.exists()
    del tracker
    gc.collect()
    assert not spill_dir.exists()


def rss_bytes() -> int:
    """This process's resident memory now (not its peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_the_names_kept_do_not_hold_on_to_their_batches() -> None:
    # A view of a string keeps its whole batch's string buffer alive: 10 MB a batch here,
    # 200 MB (with the folded copies) if the few distinct names kept were not copied out.
    tracker = DedupTracker(make_mapping())
    name = "Purchased Item " + "x" * 485
    grown = 0
    for batch in range(12):
        before = rss_bytes()
        tracker.add(pl.DataFrame({USER: [f"u{batch}"] * 20_000, EVENT: [name] * 20_000}))
        # The first batches warm Polars and the allocator up; what comes after must not add up.
        grown += rss_bytes() - before if batch >= 2 else 0
    assert grown < 60 << 20, f"{grown >> 20} MB kept for one event name"
    report: DedupReport = tracker.report()
    assert report.would_drop == {}


def test_events_without_data_or_an_id_of_their_own_are_never_candidates() -> None:
    # Each such row gets a generated check_id, so none collides; a one-chunk batch of 20k rows
    # must not reach Polars' filter by a literal predicate, which fails on it.
    tracker = DedupTracker(make_mapping())
    tracker.add(pl.DataFrame({USER: ["u1"] * 20_000, EVENT: ["Logged in"] * 20_000}))
    assert tracker.buffered_bytes == 0
    assert tracker.report().would_drop == {}
