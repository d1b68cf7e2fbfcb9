"""Bodies as Vero gets them, the deterministic check_id, and the duplicates Vero would drop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline_helpers import IDENTIFY, NOW, make_mapping, run_file, write_csv

from importer.checks.dedup import DedupTracker
from importer.checks.validate import FileState, validate_frame
from importer.inputs.reader import iter_batches, open_input
from importer.outcome import DedupReport

HEADER = "user_id,email,event,occurred_at,product"
ROWS = [
    "u1,a@example.com,Logged in,2023-05-30T10:00:00Z,",
    "u1,a@example.com,Logged in,2023-05-30T11:00:00Z,",
    "u1,a@example.com,Purchased Item,2023-05-30T12:00:00Z,shoes",
    "u1,a@example.com,purchased_item,2023-05-30T13:00:00Z,shoes",
    "u2,b@example.com,Purchased Item,2023-05-30T14:00:00Z,shoes",
]


def test_track_body_shape(tmp_path: Path) -> None:
    outcome = run_file(write_csv(tmp_path, HEADER, *ROWS), make_mapping())
    first = outcome.bodies[2]
    assert first["identity"] == {"id": "u1", "email": "a@example.com"}
    assert first["event_name"] == "Purchased Item"
    assert first["data"] == {"product": "shoes"}
    assert first["extras"]["created_at"] == "2023-05-30T12:00:00+0000"
    assert "auth_token" not in json.dumps(outcome.bodies)


def test_check_id_is_deterministic_per_row_and_unique(tmp_path: Path) -> None:
    path = write_csv(tmp_path, HEADER, *ROWS)
    first = run_file(path, make_mapping())
    again = run_file(path, make_mapping())
    ids = [body["extras"]["check_id"] for body in first.bodies]
    assert ids == [body["extras"]["check_id"] for body in again.bodies]
    assert len(set(ids)) == len(ids)
    renamed = tmp_path / "renamed.csv"
    shutil.copy(path, renamed)
    assert [b["extras"]["check_id"] for b in run_file(renamed, make_mapping()).bodies] == ids
    changed = write_csv(
        tmp_path,
        HEADER,
        *ROWS,
        "u3,c@example.com,Logged in,2023-05-30T10:00:00Z,",
        name="changed.csv",
    )
    assert not set(ids) & {
        b["extras"]["check_id"] for b in run_file(changed, make_mapping()).bodies
    }


def test_logins_without_data_each_keep_their_own_check_id(tmp_path: Path) -> None:
    rows = [f"u1,a@example.com,Logged in,2023-05-{day:02d}T10:00:00Z," for day in range(1, 29)]
    outcome = run_file(write_csv(tmp_path, HEADER, *rows), make_mapping())
    assert all("data" not in body for body in outcome.bodies)
    assert len({body["extras"]["check_id"] for body in outcome.bodies}) == 28


def test_dedup_data_key_makes_identical_events_distinct(tmp_path: Path) -> None:
    outcome = run_file(
        write_csv(tmp_path, HEADER, *ROWS), make_mapping(dedup={"data_key": "import_row"})
    )
    rows = [body["data"]["import_row"] for body in outcome.bodies]
    assert rows == [body["extras"]["check_id"] for body in outcome.bodies]
    assert outcome.bodies[2]["data"] == {"product": "shoes", "import_row": rows[2]}


def test_a_mapped_check_id_is_kept_and_an_empty_one_is_generated(tmp_path: Path) -> None:
    header = "user_id,event,occurred_at,ref"
    rows = [
        "u1,Logged in,2023-05-30T10:00:00Z,ref-1",
        "u1,Logged in,2023-05-30T11:00:00Z,",
        "u1,Logged in,2023-05-30T12:00:00Z,",
    ]
    fields = {
        "identity.id": "user_id",
        "event_name": "event",
        "extras.created_at": "occurred_at",
        "extras.check_id": "ref",
    }
    outcome = run_file(write_csv(tmp_path, header, *rows), make_mapping(fields=fields))
    ids = [body["extras"]["check_id"] for body in outcome.bodies]
    assert ids[0] == "ref-1"
    # Without an id of their own, the two logins would be one event to Vero.
    assert ids[1] != ids[2]
    assert ids[1].endswith(":3")


def test_the_data_key_applies_when_check_id_is_mapped(tmp_path: Path) -> None:
    header = "user_id,event,occurred_at,ref,product"
    rows = [
        "u1,Purchased,2023-05-30T10:00:00Z,r1,shoes",
        "u1,Purchased,2023-05-30T11:00:00Z,r2,shoes",
    ]
    fields = {
        "identity.id": "user_id",
        "event_name": "event",
        "extras.created_at": "occurred_at",
        "extras.check_id": "ref",
        "data": "*",
    }
    mapping = make_mapping(fields=fields, dedup={"data_key": "import_row"})
    outcome = run_file(write_csv(tmp_path, header, *rows), mapping)
    keys = [body["data"]["import_row"] for body in outcome.bodies]
    assert len(set(keys)) == 2
    assert [body["extras"]["check_id"] for body in outcome.bodies] == ["r1", "r2"]


def dedup_report(path: Path, **changes: object) -> DedupReport:
    mapping = make_mapping(**changes)
    tracker = DedupTracker(mapping)
    source = open_input(path)
    state = FileState()
    for batch in iter_batches(source, batch_rows=2):
        tracker.add(validate_frame(batch.frame, mapping, state=state, now=NOW).valid)
    return tracker.report()


def test_dedup_counts_what_vero_would_drop_across_batches(tmp_path: Path) -> None:
    report = dedup_report(write_csv(tmp_path, HEADER, *ROWS))
    # The two logins have no data: their check_ids differ, so Vero keeps both. The two
    # purchases of u1 fold into one name with the same data: one of them would be dropped.
    assert report.would_drop == {"purchased item": 1}
    assert report.folded_names == {"purchased item": ["Purchased Item", "purchased_item"]}


def test_dedup_with_a_data_key_drops_nothing(tmp_path: Path) -> None:
    report = dedup_report(write_csv(tmp_path, HEADER, *ROWS), dedup={"data_key": "row"})
    assert report.would_drop == {}
    assert report.protected


def test_identify_is_never_counted_as_a_duplicate() -> None:
    # Identify updates a profile; Vero's event deduplication does not apply to it.
    assert not DedupTracker(make_mapping(IDENTIFY)).applies
