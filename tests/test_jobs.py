"""Actions delivered as jobs: chunking, chunk identity, and the checkpoint's chunk records."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from importer.cli.status import format_status
from importer.columns import BODY, LINE
from importer.delivery.bulk import deliver_uploads
from importer.delivery.chunks import Chunker, build_chunk, cut_point, upload_body
from importer.delivery.deliver import DeliveryControl
from importer.delivery.options import DeliveryOptions, Feed
from importer.destinations.base import BulkUpload
from importer.destinations.userpilot.api import USERPILOT
from importer.mock.registry import mock_for
from importer.mock.server import mock_config, start_mock_server
from importer.outcome import Summary
from importer.progress import DeliveryProgress
from importer.state.checkpoint import CheckpointLog
from importer.state.facts import RunIdentity
from importer.state.layout import LOG_NAME
from importer.state.status import read_status

JOB = RunIdentity(mapping_fingerprint="m1", destination="made-up", endpoint="embedded")
FILE_BATCH = BulkUpload(
    kind="file",
    create_path="v1/imports",
    status_path="v1/jobs/{job_id}",
    max_rows=3,
    max_bytes=1_000,
)
LIST_BATCH = BulkUpload(
    kind="list",
    create_path="v1/bulk",
    status_path="v1/jobs/{job_id}",
    max_rows=3,
    max_bytes=1_000,
    list_key="users",
)


def test_cut_point_takes_at_most_max_rows_and_max_bytes() -> None:
    sizes = pl.Series([10, 10, 10, 10])
    assert cut_point(sizes, max_rows=3, max_bytes=100) == 3
    assert cut_point(sizes, max_rows=9, max_bytes=25) == 2
    assert cut_point(sizes, max_rows=9, max_bytes=40) == 4


def test_a_row_larger_than_a_chunk_still_goes_alone() -> None:
    assert cut_point(pl.Series([500, 10]), max_rows=9, max_bytes=100) == 1


def test_chunk_contents_and_identity() -> None:
    bodies = pl.Series(['{"user_id":"1"}', '{"user_id":"2"}'])
    chunk = build_chunk(fingerprint="a", name="in.csv", lines=[2, 3], bodies=bodies)
    assert chunk.content == b'{"user_id":"1"}\n{"user_id":"2"}\n'
    assert chunk.file.startswith(f"importer-{chunk.key[:16]}-")
    assert chunk.file.endswith(".ndjson")
    assert json.loads(upload_body(LIST_BATCH, chunk.content)) == {
        "users": [{"user_id": "1"}, {"user_id": "2"}]
    }
    again = build_chunk(fingerprint="a", name="in.csv", lines=[2, 3], bodies=bodies)
    assert again.key == chunk.key, "the same rows make the same chunk on every run"
    assert again.file != chunk.file, "each attempt has a name of its own to be found by"
    other_input = build_chunk(fingerprint="b", name="x", lines=[2, 3], bodies=bodies)
    other_lines = build_chunk(fingerprint="a", name="x", lines=[4, 5], bodies=bodies)
    assert len({chunk.key, other_input.key, other_lines.key}) == 3


def _feed(fingerprint: str, lines: list[int]) -> Feed:
    frame = pl.DataFrame(
        {LINE: lines, BODY: [json.dumps({"user_id": str(line)}) for line in lines]},
        schema={LINE: pl.Int64, BODY: pl.String},
    )
    return Feed(fingerprint=fingerprint, name=f"{fingerprint}.csv", frame=frame)


def _chunks(
    feeds: list[Feed], log: CheckpointLog, batch: BulkUpload = FILE_BATCH
) -> list[tuple[str, list[int]]]:
    chunker = Chunker(
        iter(feeds),
        batch,
        max_bytes=batch.max_bytes,
        checkpoint=log,
        summary=Summary(),
        progress=DeliveryProgress(),
    )

    async def collect() -> list[tuple[str, list[int]]]:
        return [(chunk.fingerprint, chunk.lines) async for chunk in chunker.chunks()]

    return asyncio.run(collect())


def test_chunks_fill_across_batches_but_never_span_inputs(tmp_path: Path) -> None:
    feeds = [_feed("a", [2, 3]), _feed("a", [4, 5, 6, 7]), _feed("b", [2]), _feed("b", [3])]
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        assert _chunks(feeds, log) == [("a", [2, 3, 4]), ("a", [5, 6, 7]), ("b", [2, 3])]


def test_chunks_skip_rows_already_done(tmp_path: Path) -> None:
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("a.csv", "a")
        for line in (2, 3, 5):
            log.mark_done("a", line)
        assert _chunks([_feed("a", [2, 3, 4, 5, 6])], log) == [("a", [4, 6])]


def test_chunks_stay_within_max_bytes(tmp_path: Path) -> None:
    small = BulkUpload(
        kind="file", create_path="x", status_path="x/{job_id}", max_rows=100, max_bytes=40
    )
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        # each body is 17 bytes plus a newline: two fit in 40
        chunks = _chunks([_feed("a", [2, 3, 4, 5, 6])], log, small)
        assert [lines for _, lines in chunks] == [[2, 3], [4, 5], [6]]


def test_chunk_records_survive_a_reopen_and_show_in_status(tmp_path: Path) -> None:
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("a.csv", "a")
        log.record_chunk("k1", fingerprint="a", file="importer-k1.ndjson", lines=[2, 3, 5], size=60)
        log.record_upload("k1", "import:jobs:NX-1:abc")
        log.record_chunk("k2", fingerprint="a", file="importer-k2.ndjson", lines=[6, 7], size=40)
        log.record_chunk("k3", fingerprint="a", file="importer-k3.ndjson", lines=[8], size=20)
        log.record_upload("k3", "import:jobs:NX-3:def")
        log.mark_done("a", 8)
        log.record_job_end("k3", "completed", completed=1, total=1)
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        first, second, third = log.chunk("k1"), log.chunk("k2"), log.chunk("k3")
        assert first is not None
        assert (first.stage, first.job) == (
            "uploaded",
            "import:jobs:NX-1:abc",
        )
        assert second is not None
        assert (second.stage, second.job) == ("built", None)
        assert third is not None
        assert (third.stage, third.outcome) == ("ended", "completed")
        assert log.chunk("k4") is None
        assert first.lines == [2, 3, 5], "a chunk keeps exactly the lines it was given"
        assert [chunk.key for chunk in log.open_chunks()] == ["k1", "k2"]
    status = read_status(tmp_path)
    assert [chunk.key for chunk in status.open_jobs] == ["k1", "k2"]
    shown = format_status(status)
    assert "importer-k1.ndjson (3 rows): job import:jobs:NX-1:abc not seen to end" in shown
    assert "importer-k2.ndjson (2 rows): built; the answer to its upload was not recorded" in shown


def test_a_job_end_is_written_after_the_rows_marks(tmp_path: Path) -> None:
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("a.csv", "a")
        log.record_chunk("k1", fingerprint="a", file="f", lines=[2, 3], size=10)
        log.record_upload("k1", "job-1")
        log.mark_done("a", 2)
        log.mark_done("a", 3)
        log.record_job_end("k1", "completed", completed=2, total=2)
    kinds = [json.loads(line[9:])["t"] for line in (tmp_path / LOG_NAME).read_bytes().splitlines()]
    # a crash after the end record can never leave the chunk's rows unmarked
    assert kinds.index("done") < kinds.index("jobend")


def test_a_job_end_and_its_marks_reach_the_log_in_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill between the marks and the end would leave a job open that no run follows."""
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("a.csv", "a")
        log.record_chunk("k1", fingerprint="a", file="f", lines=[2, 3], size=10)
        log.record_upload("k1", "job-1")
        log.mark_done("a", 2)
        log.mark_done("a", 3)
        writes: list[bytes] = []
        real_write = os.write

        def counting_write(fd: int, data: bytes | memoryview) -> int:
            writes.append(bytes(data))
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", counting_write)
        log.record_job_end("k1", "completed", completed=2, total=2)
        monkeypatch.undo()
    assert len(writes) == 1
    assert b'"t":"done"' in writes[0]
    assert b'"t":"jobend"' in writes[0]


def test_a_torn_job_end_leaves_the_job_open_to_poll(tmp_path: Path) -> None:
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("a.csv", "a")
        log.record_chunk("k1", fingerprint="a", file="f", lines=[2], size=10)
        log.record_upload("k1", "job-1")
        log.record_job_end("k1", "completed", completed=1, total=1)
    path = tmp_path / LOG_NAME
    path.write_bytes(path.read_bytes()[:-5])
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        chunk = log.chunk("k1")
        assert chunk is not None
        assert chunk.stage == "uploaded"


TOKEN = "jobs-test-key"


def _track_feed(fingerprint: str, lines: list[int]) -> Feed:
    bodies = [
        json.dumps(
            {
                "event_type": "track",
                "source": "backend-http-import",
                "user_id": f"u{line}",
                "event_name": "Signed Up",
                "inserted_at": "2023-03-14T09:30:00.000Z",
                "metadata": {"row": line},
            },
            separators=(",", ":"),
        )
        for line in lines
    ]
    frame = pl.DataFrame({LINE: lines, BODY: bodies}, schema={LINE: pl.Int64, BODY: pl.String})
    return Feed(fingerprint=fingerprint, name=f"{fingerprint}.csv", frame=frame)


async def _deliver(
    url: str, state: Path, feeds: list[Feed], control: DeliveryControl | None = None
) -> Summary:
    options = DeliveryOptions(endpoint=url, token=TOKEN, state_dir=state, poll_s=0.05)
    return await deliver_uploads(
        iter(feeds),
        identity=RunIdentity(mapping_fingerprint="m", destination="userpilot", endpoint=url),
        destination=USERPILOT,
        action=USERPILOT.actions["import_track"],
        options=options,
        summary=Summary(),
        control=control,
    )


def test_a_job_left_open_is_settled_for_its_own_rows_when_the_rows_left_change(
    tmp_path: Path,
) -> None:
    """Run 1 is stopped while its job runs; by run 2 one more row is valid, so the rows left
    would make another chunk. The open job is followed for exactly its rows, and only the new
    row is uploaded: nothing reaches the API twice."""
    state = tmp_path / "state"

    async def scenario() -> dict[str, object]:
        api = mock_for("userpilot")
        config = mock_config(api, token=TOKEN, keep_bodies=True, job_seconds=0.5)
        mock = await start_mock_server(config, api=api)
        try:
            control = DeliveryControl()

            async def stop_once_uploaded() -> None:
                while not any(chunk.job for chunk in read_status(state).open_jobs):  # noqa: ASYNC110 - a file the run writes
                    await asyncio.sleep(0.01)
                control.stop.set()

            stopper = asyncio.ensure_future(stop_once_uploaded())
            first = await _deliver(mock.url, state, [_track_feed("a", [2, 3])], control)
            await stopper
            assert first.interrupted
            assert first.rows_sent == 0
            second = await _deliver(mock.url, state, [_track_feed("a", [2, 3, 4])])
            assert second.stop is None
            assert second.rows_sent == 3
            assert [job["rows"] for job in second.jobs] == [2, 1]
            rows = sorted(body["metadata"]["row"] for body in mock.state.bodies)
            assert rows == [2, 3, 4]
            return mock.state.stats()
        finally:
            await mock.close()

    stats = asyncio.run(scenario())
    assert stats["jobs_created"] == 2
    assert read_status(state).open_jobs == ()


def test_the_next_chunk_is_built_while_a_job_runs(tmp_path: Path) -> None:
    """Reading and cutting the next chunk only once a job ended left the API idle meanwhile.
    Three inputs make three chunks; the third input is read (to end the second chunk) while
    the first job still runs, and nothing is uploaded twice."""
    state = tmp_path / "state"
    completed_when_asked: list[int] = []

    async def scenario() -> dict[str, object]:
        api = mock_for("userpilot")
        config = mock_config(api, token=TOKEN, keep_bodies=True, job_seconds=2.0)
        mock = await start_mock_server(config, api=api)

        def feeds() -> Iterator[Feed]:
            yield _track_feed("a", [2, 3])
            yield _track_feed("b", [2, 3])
            completed_when_asked.append(int(mock.state.stats()["jobs_completed"]))
            yield _track_feed("c", [2])

        try:
            options = DeliveryOptions(endpoint=mock.url, token=TOKEN, state_dir=state, poll_s=0.05)
            summary = await deliver_uploads(
                feeds(),
                identity=RunIdentity("m", "userpilot", mock.url),
                destination=USERPILOT,
                action=USERPILOT.actions["import_track"],
                options=options,
                summary=Summary(),
            )
            assert summary.rows_sent == 5
            return mock.state.stats()
        finally:
            await mock.close()

    stats = asyncio.run(scenario())
    assert completed_when_asked == [0]  # the second chunk was cut during the first job
    assert stats["jobs_created"] == stats["jobs_completed"] == 3
    assert list(stats["uploads_by_filename"].values()) == [1, 1, 1]


def test_a_failed_job_dead_letters_every_row_with_its_body(tmp_path: Path) -> None:
    state = tmp_path / "state"

    async def scenario() -> Summary:
        api = mock_for("userpilot")
        config = mock_config(api, token=TOKEN, job_seconds=0.05, job_fail=(1,))
        mock = await start_mock_server(config, api=api)
        try:
            return await _deliver(mock.url, state, [_track_feed("a", [2, 3])])
        finally:
            await mock.close()

    summary = asyncio.run(scenario())
    assert (summary.rows_sent, summary.rows_failed) == (0, 2)
    dead = [json.loads(line) for line in (state / "dead-letters.jsonl").read_text().splitlines()]
    assert [line["body"]["metadata"]["row"] for line in dead] == [2, 3]
    assert all("ended failed" in line["error"] for line in dead)
    assert list((state / "jobs").glob("*.status.json"))
    assert not list((state / "chunks").iterdir()), "a chunk's file goes when its job ends"


def test_jobs_on_this_machine_are_looked_at_sooner() -> None:
    from importer.api.settings import default_poll_s

    assert default_poll_s("embedded") == 0.1
    assert default_poll_s("http://127.0.0.1:8787") == 0.1
    assert default_poll_s("https://analytex.userpilot.io") == 1.0
    assert default_poll_s(None) == 1.0
