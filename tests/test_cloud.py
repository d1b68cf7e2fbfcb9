"""s3:// and gs:// inputs, imported from a real local S3 server (moto's server mode) and a local
GCS emulator (gcp-storage-emulator), each on 127.0.0.1, started and ended by these tests: a pattern is listed and each object read like a local file, named by
its URL; a rerun sends nothing new; a changed object is reported, not sent again; a missing
bucket or object is one clear error with nothing sent."""

from __future__ import annotations

import gc
import gzip
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from pipeline_helpers import ROOT

from importer.cli.app import main

boto3 = pytest.importorskip("boto3", reason="boto3 is in the test extras: pip install -e .[test]")
pytest.importorskip("moto.server", reason="moto[server] is in the test extras")

TRACK = str(ROOT / "schemas" / "vero-track.toml")
HEADER = "row_id,user_id,email,event,occurred_at\n"
RECORD = "embedded-received.jsonl"
START_SECONDS = 30


def rows(first: int, last: int) -> str:
    """CSV rows first..last, each its own row id, user and second (none is a duplicate)."""
    return "".join(
        f"{i},u{i},u{i}@example.com,Viewed,2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z\n"
        for i in range(first, last + 1)
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _serve(command: list[str], port: int, what: str) -> Iterator[str]:
    """Run a local server in its own process group until the caller is done with it."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _answers(port):
            assert process.poll() is None, f"{what} ended before it answered"
            assert time.monotonic() < deadline, f"{what} did not answer in time"
            time.sleep(0.05)  # polling a condition with a deadline, not waiting for time
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; its process group is ended with the module."""
    port = _free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    yield from _serve(command, port, "moto's server")


@pytest.fixture(scope="module")
def gcs_server() -> Iterator[str]:
    """A GCS emulator, in memory, on a free loopback port; ended with the module."""
    pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator is in the test extras")
    port = _free_port()
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"]
    yield from _serve(
        [*command, "--port", str(port), "--in-memory", "--quiet"], port, "the emulator"
    )


@pytest.fixture
def gcs(gcs_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A client of the emulator; the importer finds it through STORAGE_EMULATOR_HOST, which the
    library honours by itself (anonymously). Temporary copies go under tmp_path/tmp."""
    storage = pytest.importorskip("google.cloud.storage", reason="in the test extras")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return storage.Client()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A client of the local server; the importer finds it through the same environment
    (boto3 honours AWS_ENDPOINT_URL by itself). Temporary copies go under tmp_path/tmp."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return boto3.client("s3")


# A bucket in the store under test, by name: the URL scheme, and how to put an object in it.
Bucket = Callable[[str], tuple[str, Callable[[str, str | bytes], None]]]


@pytest.fixture(params=["s3", "gs"])
def bucket(request: pytest.FixtureRequest) -> Bucket:
    """Each store's tests in one: makes (or reuses) a bucket in the local S3 server or GCS
    emulator, which live for the module."""
    scheme = str(request.param)
    client = request.getfixturevalue("s3" if scheme == "s3" else "gcs")

    def make(name: str) -> tuple[str, Callable[[str, str | bytes], None]]:
        if scheme == "s3":
            client.create_bucket(Bucket=name)  # moto answers OK for a bucket it already has
            return scheme, lambda key, body: client.put_object(Bucket=name, Key=key, Body=body)
        found = client.bucket(name)
        found = found if found.exists() else client.create_bucket(name)
        return scheme, lambda key, body: found.blob(key).upload_from_string(body)

    return make


def run(state: Path, *inputs: str, extra: tuple[str, ...] = ()) -> tuple[int, str]:
    """`importer run INPUTS` to the embedded mock: the exit code and everything it said."""
    args = ["run", *inputs, "--mapping", TRACK, "--endpoint", "embedded", "--state", str(state)]
    result = CliRunner().invoke(main, [*args, *extra], catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def received(state: Path) -> list[int]:
    """Row ids the embedded mock received, over every run into `state`."""
    record = state / RECORD
    lines = record.read_text().splitlines() if record.exists() else []
    return sorted(int(json.loads(line)["data"]["row_id"]) for line in lines)


def parquet_bytes(first: int, last: int) -> bytes:
    frame = pl.read_csv(io.StringIO(HEADER + rows(first, last)))
    out = io.BytesIO()
    frame.write_parquet(out)
    return out.getvalue()


def test_a_pattern_is_imported_by_url_and_a_rerun_sends_nothing_new(
    bucket: Bucket, tmp_path: Path
) -> None:
    scheme, put = bucket("nightly")
    put("exports/a.csv", HEADER + rows(1, 3))
    put("exports/b.csv.gz", gzip.compress((HEADER + rows(11, 12)).encode()))
    put("exports/c.parquet", parquet_bytes(21, 22))
    # A wildcard stops at `/`, as in a local glob; other prefixes are not listed.
    put("exports/old/d.csv", HEADER + rows(31, 31))
    put("other/e.csv", HEADER + rows(41, 41))
    state, report = tmp_path / "state", tmp_path / "report.json"

    patterns = (f"{scheme}://nightly/exports/*.csv*", f"{scheme}://nightly/exports/*.parquet")
    code, said = run(state, *patterns, extra=("--report", str(report)))
    assert code == 0, said
    assert received(state) == [1, 2, 3, 11, 12, 21, 22]
    files = [item["file"] for item in json.loads(report.read_text())["inputs"]]
    assert files == [
        f"{scheme}://nightly/exports/a.csv",
        f"{scheme}://nightly/exports/b.csv.gz",
        f"{scheme}://nightly/exports/c.parquet",
    ]
    # The temporary copies go with the run's inputs (a CLI process: at its exit at the latest).
    gc.collect()
    assert list((tmp_path / "tmp").iterdir()) == []

    code, said = run(state, *patterns)
    assert code == 0, said
    assert received(state) == [1, 2, 3, 11, 12, 21, 22]


def test_objects_holding_the_same_rows_are_sent_once(bucket: Bucket, tmp_path: Path) -> None:
    """Issue 23, point 1: a pattern over equal objects, a grown copy, and cumulative snapshots
    after a missed night: each row is sent once, as in a local folder."""
    scheme, put = bucket("overlaps")
    put("copies/a.csv", HEADER + rows(1, 5))
    put("copies/b.csv", HEADER + rows(1, 5))
    put("copies/c.csv.gz", gzip.compress((HEADER + rows(1, 7)).encode()))  # grown, compressed
    put("copies/d.parquet", parquet_bytes(21, 22))
    put("copies/e.parquet", parquet_bytes(21, 22))
    state = tmp_path / "state"
    code, said = run(state, f"{scheme}://overlaps/copies/*")
    assert code == 0, said
    assert received(state) == [1, 2, 3, 4, 5, 6, 7, 21, 22]

    put("days/day1.csv", HEADER + rows(31, 33))
    days = tmp_path / "days"
    assert run(days, f"{scheme}://overlaps/days/*.csv")[0] == 0
    put("days/day2.csv", HEADER + rows(31, 35))
    put("days/day3.csv", HEADER + rows(31, 37))
    code, said = run(days, f"{scheme}://overlaps/days/*.csv")
    assert code == 0, said
    assert received(days) == list(range(31, 38))


def test_an_object_sent_whole_is_not_downloaded_again(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: the store's own checksum (S3's ETag, GCS's MD5) tells an object sent whole
    before, so a night does not download it; one rewritten at the same size is downloaded and
    judged by its content."""
    from importer.inputs import cloud

    downloaded: list[str] = []
    real = cloud._download

    def counted(store: Any, url: str, copy: Path) -> str:
        downloaded.append(url)
        return real(store, url, copy)

    monkeypatch.setattr(cloud, "_download", counted)
    scheme, put = bucket("whole")
    put("n/a.csv", HEADER + rows(1, 3))
    put("n/b.parquet", parquet_bytes(21, 22))
    state = tmp_path / "state"
    pattern = f"{scheme}://whole/n/*"
    assert run(state, pattern)[0] == 0
    assert len(downloaded) == 2

    put("n/c.csv", HEADER + rows(11, 12))
    code, said = run(state, pattern)
    assert code == 0, said
    assert downloaded[2:] == [f"{scheme}://whole/n/c.csv"]
    assert received(state) == [1, 2, 3, 11, 12, 21, 22]

    put("n/a.csv", HEADER + rows(1, 2) + rows(9, 9))  # the same size, other bytes
    code, said = run(state, pattern)
    assert code == 3, said
    assert f"{scheme}://whole/n/a.csv changed since it was sent" in said
    assert downloaded[3:] == [f"{scheme}://whole/n/a.csv"]
    assert received(state) == [1, 2, 3, 11, 12, 21, 22]


def test_an_object_changed_since_it_was_sent_is_reported_not_sent_again(
    s3: Any, tmp_path: Path
) -> None:
    s3.create_bucket(Bucket="changes")
    s3.put_object(Bucket="changes", Key="a.csv", Body=HEADER + rows(1, 3))
    state = tmp_path / "state"
    assert run(state, "s3://changes/a.csv")[0] == 0

    # Known by its URL from run to run, though each run reads another temporary copy.
    s3.put_object(Bucket="changes", Key="a.csv", Body=HEADER + rows(1, 1) + rows(9, 10))
    code, said = run(state, "s3://changes/a.csv")
    assert code == 3, said
    assert "s3://changes/a.csv changed since it was sent" in said
    assert received(state) == [1, 2, 3]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("no-such-bucket/exports/*.csv", "no such bucket", id="bucket"),
        pytest.param("no-such-bucket/exports/a.csv", "no such bucket", id="bucket-key"),
        pytest.param("missing/exports/gone.csv", "no such object", id="key"),
        pytest.param("missing/exports/*.tsv", "the pattern matches no object", id="pattern"),
    ],
)
def test_a_missing_bucket_or_object_is_one_clear_error_and_nothing_is_sent(
    bucket: Bucket, tmp_path: Path, url: str, message: str
) -> None:
    scheme, put = bucket("missing")
    put("exports/a.csv", HEADER + rows(1, 3))
    state, url = tmp_path / "state", f"{scheme}://{url}"
    code, said = run(state, f"{scheme}://missing/exports/a.csv", url)
    assert code == 1, said
    assert f"Error: {url}: {message}" in said
    assert "Traceback" not in said
    assert received(state) == []


@pytest.mark.parametrize("url", ["s3://Bad_Bucket!/a.csv", "s3://Bad_Bucket!/*.csv"])
def test_an_invalid_bucket_name_is_one_clear_error(s3: Any, tmp_path: Path, url: str) -> None:
    code, said = run(tmp_path / "state", url)
    assert code == 1, said
    assert f"Error: {url}: 'Bad_Bucket!' is not a valid S3 bucket name\n" in said
    assert "regex" not in said
    assert received(tmp_path / "state") == []


def test_a_damaged_object_is_named_by_its_url(s3: Any, tmp_path: Path) -> None:
    s3.create_bucket(Bucket="damaged")
    s3.put_object(Bucket="damaged", Key="cut.parquet", Body=parquet_bytes(1, 3)[:-20])
    code, said = run(tmp_path / "state", "s3://damaged/cut.parquet")
    assert code == 1, said
    assert "Error: s3://damaged/cut.parquet: " in said
    assert str(tmp_path / "tmp") not in said


def test_without_boto3_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` raises ImportError
    code, said = run(tmp_path / "state", "s3://bucket/exports/*.csv")
    assert code == 1, said
    assert "Error: s3://bucket/exports/*.csv: s3:// inputs need boto3" in said
    assert "pip install '.[cloud]'" in said


def test_without_google_cloud_storage_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud", None)  # its import raises ImportError
    code, said = run(tmp_path / "state", "gs://bucket/exports/*.csv")
    assert code == 1, said
    assert "Error: gs://bucket/exports/*.csv: gs:// inputs need google-cloud-storage" in said
    assert "pip install '.[cloud]'" in said


def test_no_credentials_is_one_clear_error(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no lookup off this machine
    code, said = run(tmp_path / "state", "s3://bucket/a.csv")
    assert code == 1, said
    assert "Error: s3://bucket/a.csv: no credentials for the store" in said
    assert "AWS_ACCESS_KEY_ID" in said


def test_no_gs_credentials_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("google.cloud.storage", reason="in the test extras")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    # A key file that is not there fails before any lookup off this machine.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none.json"))
    code, said = run(tmp_path / "state", "gs://bucket/a.csv")
    assert code == 1, said
    assert "Error: gs://bucket/a.csv: no credentials for the store" in said
    assert "GOOGLE_APPLICATION_CREDENTIALS" in said


SHEET_MAPPING = """destination = "vero"
action = "track"
[fields]
"identity.id" = "user_id"
"identity.email" = "email"
event_name = "event"
"extras.created_at" = "occurred_at"
data = "*"
[repairs]
separator = ";"
encoding = "cp1252"
"""


def test_an_object_in_a_declared_encoding_is_read_in_it(bucket: Bucket, tmp_path: Path) -> None:
    scheme, put = bucket("sheets")
    sheet = HEADER.replace(",", ";").replace("\n", ";name\n") + "".join(
        f"{i};u{i};u{i}@example.com;Viewed;2024-01-01T00:00:0{i}Z;{name}\n"
        for i, name in ((1, "Müller"), (2, "“5 €”"))
    )
    put("sheet.csv.gz", gzip.compress(sheet.encode("cp1252")))
    mapping = tmp_path / "sheet.toml"
    mapping.write_text(SHEET_MAPPING, encoding="utf-8")
    state = tmp_path / "state"
    for _ in range(2):  # the rerun knows the object by its own bytes: nothing is sent again
        args = ["run", f"{scheme}://sheets/sheet.csv.gz", "--mapping", str(mapping),
                "--endpoint", "embedded", "--state", str(state)]  # fmt: skip
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.stdout + result.stderr
        sent = [json.loads(line)["data"] for line in (state / RECORD).read_text().splitlines()]
        assert sorted((body["row_id"], body["name"]) for body in sent) == [
            (1, "Müller"),
            (2, "“5 €”"),
        ]
