"""Actions delivered as jobs: chunking, chunk identity, and the checkpoint's chunk records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import polars as pl

from importer.checkpoint import LOG_NAME, CheckpointLog, JobIdentity, read_status
from importer.delivery import DeliveryProgress, Feed
from importer.destinations.base import Batch
from importer.jobs import _Chunker, build_chunk, cut_point
from importer.payload import BODY
from importer.read import LINE
from importer.report import Summary
from importer.status import format_status

JOB = JobIdentity(mapping_fingerprint="m1", destination="made-up", endpoint="embedded")
FILE_BATCH = Batch(
    kind="file",
    create_path="v1/imports",
    status_path="v1/jobs/{job_id}",
    max_rows=3,
    max_bytes=1_000,
)
LIST_BATCH = Batch(
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
    bodies = [b'{"user_id":"1"}', b'{"user_id":"2"}']
    ndjson = build_chunk(FILE_BATCH, fingerprint="a", name="in.csv", lines=[2, 3], bodies=bodies)
    assert ndjson.content == b'{"user_id":"1"}\n{"user_id":"2"}\n'
    assert ndjson.file == f"importer-{ndjson.key[:20]}.ndjson"
    listed = build_chunk(LIST_BATCH, fingerprint="a", name="in.csv", lines=[2, 3], bodies=bodies)
    assert json.loads(listed.content) == {"users": [{"user_id": "1"}, {"user_id": "2"}]}
    again = build_chunk(FILE_BATCH, fingerprint="a", name="in.csv", lines=[2, 3], bodies=bodies)
    assert again.key == ndjson.key, "the same rows make the same chunk on every run"
    other_input = build_chunk(FILE_BATCH, fingerprint="b", name="x", lines=[2, 3], bodies=bodies)
    other_lines = build_chunk(FILE_BATCH, fingerprint="a", name="x", lines=[4, 5], bodies=bodies)
    assert len({ndjson.key, other_input.key, other_lines.key}) == 3


def _feed(fingerprint: str, lines: list[int]) -> Feed:
    frame = pl.DataFrame(
        {LINE: lines, BODY: [json.dumps({"user_id": str(line)}) for line in lines]},
        schema={LINE: pl.Int64, BODY: pl.String},
    )
    return Feed(fingerprint=fingerprint, name=f"{fingerprint}.csv", frame=frame)


def _chunks(
    feeds: list[Feed], log: CheckpointLog, batch: Batch = FILE_BATCH
) -> list[tuple[str, list[int]]]:
    chunker = _Chunker(
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
    small = Batch(
        kind="file", create_path="x", status_path="x/{job_id}", max_rows=100, max_bytes=40
    )
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        # each body is 17 bytes plus a newline: two fit in 40
        chunks = _chunks([_feed("a", [2, 3, 4, 5, 6])], log, small)
        assert [lines for _, lines in chunks] == [[2, 3], [4, 5], [6]]


def test_chunk_records_survive_a_reopen_and_show_in_status(tmp_path: Path) -> None:
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("a.csv", "a")
        log.record_chunk("k1", fingerprint="a", file="importer-k1.ndjson", rows=3, size=60)
        log.record_upload("k1", "import:jobs:NX-1:abc")
        log.record_chunk("k2", fingerprint="a", file="importer-k2.ndjson", rows=2, size=40)
        log.record_chunk("k3", fingerprint="a", file="importer-k3.ndjson", rows=1, size=20)
        log.record_upload("k3", "import:jobs:NX-3:def")
        for line in (2, 3, 4):
            log.mark_done("a", line)
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
    status = read_status(tmp_path)
    assert [chunk.key for chunk in status.open_jobs] == ["k1", "k2"]
    shown = format_status(status)
    assert "importer-k1.ndjson (3 rows): job import:jobs:NX-1:abc not seen to end" in shown
    assert "importer-k2.ndjson (2 rows): built; the answer to its upload was not recorded" in shown


def test_a_job_end_is_written_after_the_rows_marks(tmp_path: Path) -> None:
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("a.csv", "a")
        log.record_chunk("k1", fingerprint="a", file="f", rows=2, size=10)
        log.record_upload("k1", "job-1")
        log.mark_done("a", 2)
        log.mark_done("a", 3)
        log.record_job_end("k1", "completed", completed=2, total=2)
    kinds = [json.loads(line[9:])["t"] for line in (tmp_path / LOG_NAME).read_bytes().splitlines()]
    # a crash after the end record can never leave the chunk's rows unmarked
    assert kinds.index("done") < kinds.index("jobend")


def test_a_torn_job_end_leaves_the_job_open_to_poll(tmp_path: Path) -> None:
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("a.csv", "a")
        log.record_chunk("k1", fingerprint="a", file="f", rows=1, size=10)
        log.record_upload("k1", "job-1")
        log.record_job_end("k1", "completed", completed=1, total=1)
    path = tmp_path / LOG_NAME
    path.write_bytes(path.read_bytes()[:-5])
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        chunk = log.chunk("k1")
        assert chunk is not None
        assert chunk.stage == "uploaded"
