"""The dead-letter loop as a new user meets it (issue 19): the summary names the whole replay
command, a replay of a Userpilot file needs no Vero token, and the run's own state learns what
the replay delivered."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pipeline_helpers import ROOT, mock_server_process, write_csv

from importer.destinations.vero.api import VERO
from importer.pipeline.next_step import public_endpoint

TOKEN = "loop-token"
TRACK = ROOT / "schemas" / "vero-track.toml"


def importer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.endswith(("_AUTH_TOKEN", "_API_KEY"))}
    return subprocess.run(
        [sys.executable, "-m", "importer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**base, **(env or {})},
    )


def events(tmp_path: Path, rows: int = 5) -> Path:
    lines = [f"u{i},u{i}@example.com,Login,2024-01-0{i + 1}T00:00:00Z" for i in range(rows)]
    return write_csv(tmp_path, "user_id,email,event,occurred_at", *lines)


@contextmanager
def refusing_first(count: int) -> Iterator[str]:
    """A Vero mock that answers the first `count` requests 400, then as Vero would."""
    script = ",".join(["400"] * count)
    with mock_server_process("--status-script", script, env={VERO.token_env: TOKEN}) as url:
        yield url


def last_replay_command(stdout: str) -> list[str]:
    line = [x for x in stdout.splitlines() if "send them again with: " in x][-1]
    return shlex.split(line.split("send them again with: ", 1)[1])


def test_the_summary_names_the_whole_replay_command(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with refusing_first(2) as url:
        done = importer(
            "run", str(events(tmp_path)), "--mapping", str(TRACK), "--endpoint", url,
            "--state", str(state), "--concurrency", "1",
            env={VERO.token_env: TOKEN},
        )  # fmt: skip
        assert done.returncode == 3, done.stderr
        command = last_replay_command(done.stdout)
        assert command == [
            "importer", "replay", str(state / "dead-letters.jsonl"),
            "--endpoint", url, "--destination", "vero", "--state", str(state / "replay"),
        ]  # fmt: skip
        assert TOKEN not in done.stdout
        # As printed, it works: the two rows go where the run sent the others.
        again = importer(*command[1:], env={VERO.token_env: TOKEN})
    assert again.returncode == 0, again.stderr
    assert re.search(r"delivered +2\n", again.stdout), again.stdout
    # The run's own state learns what the replay delivered.
    shown = importer("status", "--state", str(state)).stdout
    assert ": 5 delivered, 0 failed" in shown, shown
    assert "2 of the rows that failed were delivered since by the replay" in shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:secret@api.example.com/api/v2", "https://api.example.com/api/v2"),
        ("https://api.example.com/v2?auth_token=secret", "https://api.example.com/v2"),
        ("http://127.0.0.1:8787", "http://127.0.0.1:8787"),
        ("embedded", "embedded"),
    ],
)
def test_a_shown_endpoint_carries_no_credential(url: str, shown: str) -> None:
    assert public_endpoint(url) == shown


def test_replay_of_a_userpilot_file_needs_no_vero_token(tmp_path: Path) -> None:
    """The destination comes from the calls the file names; an explicit --destination wins."""
    payloads = tmp_path / "payloads.jsonl"
    line = {
        "method": "POST",
        "path": "v1/track",
        "body": {"user_id": "007", "event_name": "logged_in", "metadata": {}},
        "source": {"file": "in.csv", "line": 2},
    }
    payloads.write_text(json.dumps(line) + "\n")
    env = {"USERPILOT_API_KEY": TOKEN}
    record = tmp_path / "received.jsonl"
    with mock_server_process("--destination", "userpilot", "--record", str(record), env=env) as url:
        done = importer(
            "replay", str(payloads), "--endpoint", url, "--state", str(tmp_path / "s"), "-q",
            env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        (body,) = [json.loads(x) for x in record.read_text().splitlines()]
        assert body["user_id"] == "007"
        done = importer(
            "replay", str(payloads), "--endpoint", url, "--state", str(tmp_path / "other"),
            "--destination", "vero", env=env,
        )  # fmt: skip
    assert done.returncode == 1
    assert "VERO_AUTH_TOKEN" in done.stderr


def test_replay_of_deletions_needs_yes(tmp_path: Path) -> None:
    payloads = tmp_path / "payloads.jsonl"
    line = {"method": "POST", "path": "users/delete", "body": {"id": "u1"}}
    payloads.write_text(json.dumps({**line, "source": {"file": "in.csv", "line": 2}}) + "\n")
    (tmp_path / "s").mkdir()
    args = ["replay", str(payloads), "--endpoint", "embedded", "--state", str(tmp_path / "s")]
    done = importer(*args, env={VERO.token_env: TOKEN})
    assert done.returncode == 2
    assert "add --yes" in done.stderr
    assert importer(*args, "--yes", env={VERO.token_env: TOKEN}).returncode == 0


def test_status_prints_one_line_per_failure_reason_with_a_count(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with refusing_first(3) as url:
        done = importer(
            "run", str(events(tmp_path)), "--mapping", str(TRACK), "--endpoint", url,
            "--state", str(state), "--concurrency", "1", env={VERO.token_env: TOKEN},
        )  # fmt: skip
    assert done.returncode == 3, done.stderr
    shown = importer("status", "--state", str(state)).stdout
    assert "    3 failed: HTTP 400: Error (first: line 2)" in shown.splitlines()
    assert "no answer" not in shown
    assert "line 3" not in shown


def test_an_endpoint_that_refuses_everything_stops_the_run_and_leaves_the_rows(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    path = events(tmp_path, rows=9)
    args = ["run", str(path), "--mapping", str(TRACK), "--state", str(state), "-q"]
    script = ",".join(["404"] * 30)
    with mock_server_process("--status-script", script, env={VERO.token_env: TOKEN}) as url:
        # Nine rows answer 404; 20 are needed to judge: they stay dead letters.
        done = importer(*args, "--endpoint", url, "--concurrency", "1", env={VERO.token_env: TOKEN})
        assert done.returncode == 3, done.stderr
        more = write_csv(
            tmp_path,
            "user_id,email,event,occurred_at",
            *[f"v{i},v{i}@example.com,Login,2024-02-01T00:00:{i:02}Z" for i in range(30)],
            name="more.csv",
        )
        other = tmp_path / "other"
        stopped = importer(
            "run", str(more), "--mapping", str(TRACK), "--state", str(other),
            "--endpoint", url, "--concurrency", "1", env={VERO.token_env: TOKEN},
        )  # fmt: skip
    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    assert "the endpoint looks wrong" in stopped.stderr
    assert not (other / "dead-letters.jsonl").exists()
    shown = importer("status", "--state", str(other)).stdout
    assert "failed" not in shown.replace("0 failed", "")


def test_a_400_in_the_apis_own_words_stays_a_rows_problem(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with refusing_first(25) as url:
        lines = [f"v{i},v{i}@example.com,Login,2024-02-01T00:00:{i:02}Z" for i in range(30)]
        path = write_csv(tmp_path, "user_id,email,event,occurred_at", *lines)
        done = importer(
            "run", str(path), "--mapping", str(TRACK), "--state", str(state),
            "--endpoint", url, "--concurrency", "1", env={VERO.token_env: TOKEN},
        )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert re.search(r"failed \(dead letters\) +25\n", done.stdout), done.stdout


def test_a_rerun_counts_failed_rows_apart_from_rows_done_before(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with refusing_first(2) as url:
        args = [
            "run", str(events(tmp_path)), "--mapping", str(TRACK), "--endpoint", url,
            "--state", str(state), "--concurrency", "1",
        ]  # fmt: skip
        assert importer(*args, env={VERO.token_env: TOKEN}).returncode == 3
        rerun = importer(*args, env={VERO.token_env: TOKEN})
    assert re.search(r"skipped \(done before\) +3\n", rerun.stdout), rerun.stdout
    assert re.search(r"skipped \(failed before\) +2\n", rerun.stdout), rerun.stdout
