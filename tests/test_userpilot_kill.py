"""kill -9 and Ctrl-C while an import job runs: the rerun follows the job the API already has
instead of uploading its chunk again, and every row lands exactly once (issue 11's done-when).
The runs are real processes against `importer mock-server --destination userpilot`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_userpilot_e2e import TOKEN, Mock, invoke, mock_server

from importer.destinations.userpilot.api import USERPILOT

DEADLINE_S = 60.0
# About 170 bytes a row: 1.7 MB of NDJSON, two chunks of at most 1 MB.
ROWS = 10_000
MAPPING = """\
destination = "userpilot"
action = "import_track"
chunk_mb = 1

[fields]
user_id = "user_id"
event_name = "event"
inserted_at = "occurred_at"
"metadata.row" = "row"
"""


def write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A CSV of ROWS events, each with its own row id, and the import_track mapping for it."""
    events, mapping = tmp_path / "events.csv", tmp_path / "mapping.toml"
    lines = ["user_id,event,occurred_at,row"]
    lines += [
        f"u{i % 500},viewed_page,2024-01-01T00:{i % 60:02d}:{i % 60:02d}Z,r{i:06d}"
        for i in range(ROWS)
    ]
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mapping.write_text(MAPPING, encoding="utf-8")
    return events, mapping


def run_command(events: Path, mapping: Path, state: Path, endpoint: str) -> list[str]:
    return [
        sys.executable, "-m", "importer", "run", str(events), "--mapping", str(mapping),
        "--endpoint", endpoint, "--state", str(state), "--poll-interval", "0.1",
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, USERPILOT.token_env: TOKEN}


def wait_for(
    mock: Mock, ready: Callable[[dict[str, Any]], bool], process: subprocess.Popen[str]
) -> None:
    """Block until the mock's stats satisfy `ready`, or fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while not ready(mock.stats()):
        assert process.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline, "the mock never got there"
        time.sleep(0.02)


# Batches of 1,000 rows: the second chunk (about 5,900 rows) is read and cut from later
# batches while the first job runs, then held unrecorded until its upload.
AHEAD = ("--batch-rows", "1000")


@pytest.mark.long(seconds=12)
@pytest.mark.parametrize(
    ("sig", "jobs_before", "code", "extra"),
    [
        pytest.param(signal.SIGKILL, 1, -signal.SIGKILL, (), id="kill-9-during-job-1"),
        pytest.param(signal.SIGKILL, 2, -signal.SIGKILL, (), id="kill-9-during-job-2"),
        pytest.param(signal.SIGINT, 1, 130, (), id="ctrl-c-during-job-1"),
        pytest.param(signal.SIGKILL, 1, -signal.SIGKILL, AHEAD, id="kill-9-chunk-2-built-ahead"),
        pytest.param(signal.SIGINT, 1, 130, AHEAD, id="ctrl-c-chunk-2-built-ahead"),
    ],
)
def test_a_run_stopped_during_a_job_resumes_without_uploading_a_chunk_twice(
    tmp_path: Path, sig: signal.Signals, jobs_before: int, code: int, extra: tuple[str, ...]
) -> None:
    events, mapping = write_inputs(tmp_path)
    state = tmp_path / "state"
    # A job takes 4 s: far longer than a signal takes to land on a loaded machine.
    with mock_server(tmp_path, "--job-seconds", "4") as mock:
        command = run_command(events, mapping, state, mock.url) + list(extra)
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env()
        )
        try:
            # The job is created before its answer leaves: the run may or may not have recorded
            # its id; either way the rerun must not upload the chunk again. The run cannot see
            # the job end for 4 s, so the signal lands while the job is open.
            wait_for(mock, lambda stats: stats["jobs_created"] == jobs_before, process)
            process.send_signal(sig)
            _, err = process.communicate(timeout=DEADLINE_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == code, err
        stopped = mock.stats()
        running = list(stopped["uploads_by_filename"])[-1]  # in the order they came

        shown = invoke("status", "--state", state, "--json")
        assert shown.exit_code == 0, shown.stderr
        status = json.loads(shown.stdout)
        [open_job] = status["open_jobs"]
        assert open_job["file"] == running
        [progress] = status["inputs"]
        assert progress["failed"] == 0
        if jobs_before == 2:  # job 1 ended and its rows were marked before job 2 began
            assert progress["delivered"] == ROWS - open_job["rows"]
        else:
            assert progress["delivered"] == 0
        text = invoke("status", "--state", state).stdout
        assert f"chunk {running} ({open_job['rows']:,} rows): " in text

        rerun = subprocess.run(
            command, capture_output=True, text=True, env=env(), timeout=DEADLINE_S, check=False
        )
        assert rerun.returncode == 0, rerun.stderr
        stats = mock.stats()
        rows = Counter(record["metadata"]["row"] for record in mock.received())
    assert stats["jobs_created"] == stats["jobs_completed"] == 2
    assert list(stats["uploads_by_filename"].values()) == [1, 1]
    assert stats["rows_landed"] == ROWS
    assert len(rows) == ROWS
    assert max(rows.values()) == 1
