"""Userpilot end to end: every preset and sample through the real command line into the mock,
both regions, a refused key, a job already running (409), 429 without Retry-After, a failed job
replayed, a lost upload answer. Each test counts what the mock recorded, not what the importer
says it sent."""

from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pipeline_helpers import ROOT, mock_server_process

from importer.api.settings import delivery_options
from importer.cli import progress as cli_progress
from importer.cli.app import main
from importer.destinations.userpilot import api as userpilot
from importer.destinations.userpilot.api import USERPILOT
from importer.mapping.file import load_mapping

TOKEN = "up-e2e-key-7c41d9a2"
OTHER_TOKEN = "up-e2e-wrong-3b8e20f5"
SCHEMAS = ROOT / "schemas"
SAMPLES = ROOT / "samples"
DEADLINE_S = 30.0
USERS, EVENTS, COMPANIES = "userpilot-users.csv", "userpilot-events.csv", "userpilot-companies.csv"
# Preset (schemas/userpilot-<name>.toml) -> its sample, its bad rows (line: rule), rows sent.
PRESETS: dict[str, tuple[str, dict[int, str], int]] = {
    "track": (EVENTS, {7: "required", 10: "timestamp"}, 12),
    "identify": (USERS, {7: "nested", 9: "required"}, 10),
    "company": (COMPANIES, {6: "required"}, 7),
    "import-track": (EVENTS, {7: "required", 10: "timestamp"}, 12),
    "import-identify": (USERS, {7: "nested", 9: "required"}, 10),
    "import-company": (COMPANIES, {6: "required"}, 7),
    "bulk-identify": (USERS, {7: "nested", 9: "required"}, 10),
    "bulk-company": (COMPANIES, {6: "required"}, 7),
}
# What the mock adds to each body it records.
MOCK_KEYS = ("_path", "_job", "_duplicate")
FAST = ("--poll-interval", "0.1", "--rate", "1000")


def preset(name: str) -> Path:
    return SCHEMAS / f"userpilot-{name}.toml"


def sample(name: str) -> Path:
    return SAMPLES / PRESETS[name][0]


def invoke(*args: str | Path, token: str | None = TOKEN) -> Result:
    """The command line in this process, with the key in USERPILOT_API_KEY (None: unset)."""
    env = {USERPILOT.token_env: token}
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def canonical(body: object) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def landed(records: list[dict[str, Any]]) -> Counter[str]:
    """The recorded bodies without what the mock added, counted."""
    return Counter(canonical({k: v for k, v in r.items() if k not in MOCK_KEYS}) for r in records)


def dry_run_bodies(
    tmp_path: Path, name: str, *, mapping: Path | None = None, source: Path | None = None
) -> Counter[str]:
    """The bodies `run --dry-run --out` builds for the preset's sample (or `source`), counted."""
    out = tmp_path / f"dry-{name}.jsonl"
    source = source or sample(name)
    mapping = mapping or preset(name)
    done = invoke("run", source, "--mapping", mapping, "--dry-run", "--out", out)
    assert done.exit_code in (0, 3), done.stderr
    bodies = Counter(canonical(line["body"]) for line in read_jsonl(out))
    assert bodies
    assert max(bodies.values()) == 1
    return bodies


@dataclass
class Mock:
    url: str
    record: Path

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_mock/stats", timeout=DEADLINE_S) as answer:
            return json.loads(answer.read())

    def received(self) -> list[dict[str, Any]]:
        return read_jsonl(self.record)


@contextmanager
def mock_server(tmp_path: Path, *options: str, token: str = TOKEN) -> Iterator[Mock]:
    """`importer mock-server --destination userpilot` in its own process on a free port,
    accepting `token` (given through its environment variable); ended when the test ends."""
    record = tmp_path / "received.jsonl"
    options = ("--destination", "userpilot", "--record", str(record), *options)
    with mock_server_process(*options, env={USERPILOT.token_env: token}) as url:
        yield Mock(url=url, record=record)


def run_args(name: str, state: Path, *extra: str | Path) -> list[str | Path]:
    return ["run", sample(name), "--mapping", preset(name), "--state", state, *FAST, *extra]


def report_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", PRESETS)
def test_every_action_delivers_each_valid_sample_row_exactly_once(
    name: str, tmp_path: Path
) -> None:
    expected = dry_run_bodies(tmp_path, name)
    _, bad_rows, sent = PRESETS[name]
    assert sum(expected.values()) == sent
    action = load_mapping(preset(name)).action
    state, rejects, report = tmp_path / "state", tmp_path / "rejects.jsonl", tmp_path / "r.json"
    done = invoke(
        *run_args(name, state, "--endpoint", "embedded"),
        "--rejects",
        rejects,
        "--report",
        report,
    )
    assert done.exit_code == 3, done.stderr
    assert {row["_line"]: row["_rule"] for row in read_jsonl(rejects)} == bad_rows
    records = read_jsonl(state / "embedded-received.jsonl")
    assert {r["_path"] for r in records} == {action.path}
    assert landed(records) == expected
    summary = report_of(report)
    assert summary["rows_sent"] == sent
    assert summary["rows_failed"] == 0
    stats = summary["embedded_server"]
    if action.bulk is None:
        assert stats["accepted"] == sent
        assert stats["duplicates"] == 0
    else:
        assert stats["jobs_created"] == stats["jobs_completed"] == 1
        assert stats["rows_landed"] == sent
        assert list(stats["uploads_by_filename"].values()) == [1]
        assert {r["_job"] for r in records} == {summary["jobs"][0]["job"]}


def test_the_region_picks_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USERPILOT.token_env, TOKEN)
    hosts = {"us": "https://analytex.userpilot.io", "eu": "https://analytex-eu.userpilot.io"}
    for region, host in hosts.items():
        mapping = region_mapping(tmp_path, "import-track", region)
        options = delivery_options(
            endpoint=None,
            destination=mapping.destination,
            token_file=None,
            state_dir=tmp_path / "state",
            fresh=False,
            dead_letter=None,
            concurrency=1,
            rate=None,
            max_retries=0,
            timeout=1.0,
            options=mapping.options,
        )
        assert options.endpoint == host


def region_mapping(tmp_path: Path, name: str, region: str) -> Any:
    """The preset with `region` instead of us, loaded (its file is beside it, `.path`)."""
    path = tmp_path / f"{name}-{region}.toml"
    path.write_text(preset(name).read_text().replace('region = "us"', f'region = "{region}"'))
    mapping = load_mapping(path)
    assert mapping.options["region"] == region
    return mapping


def test_both_regions_deliver_to_the_endpoint_given_and_a_state_keeps_its_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mock_server(tmp_path, "--job-seconds", "0.2") as mock:
        # Nothing listens on port 9 (discard): a run that went to the region's host would fail.
        for region in ("eu", "us"):
            monkeypatch.setitem(userpilot.HOSTS, region, "http://127.0.0.1:9")
        for region, name in (("eu", "import-track"), ("us", "track")):
            mapping = region_mapping(tmp_path, name, region).path
            state = tmp_path / f"state-{region}"
            done = invoke(
                "run", sample(name), "--mapping", mapping, "--state", state, *FAST,
                "--endpoint", mock.url,
            )  # fmt: skip
            assert done.exit_code == 3, done.stderr
        stats = mock.stats()
        assert stats["rows_landed"] == 12
        assert stats["accepted"] == 24
        # Without --endpoint: the region's host (us is the mock now), and a state directory
        # begun there refuses a run bound for eu's.
        monkeypatch.setitem(userpilot.HOSTS, "us", mock.url)
        us = region_mapping(tmp_path, "track", "us").path
        eu = region_mapping(tmp_path, "track", "eu").path
        state = tmp_path / "state-resolved"
        done = invoke("run", sample("track"), "--mapping", us, "--state", state, *FAST)
        assert done.exit_code == 3, done.stderr
        assert mock.stats()["accepted"] == 36
        refused = invoke("run", sample("track"), "--mapping", eu, "--state", state, *FAST)
        assert refused.exit_code == 1
        assert "belongs to another job" in refused.stderr
        assert f"endpoint differs (state: '{mock.url}', now: 'http://127.0.0.1:9')" in (
            refused.stderr
        )
        assert mock.stats()["accepted"] == 36


@pytest.mark.parametrize("name", ["track", "import-track"])
def test_a_refused_key_stops_the_run_and_is_never_shown(name: str, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    with mock_server(tmp_path, token=TOKEN) as mock:
        done = invoke(
            *run_args(name, tmp_path / "state", "--endpoint", mock.url, "--report", report),
            token=OTHER_TOKEN,
        )
        stats = mock.stats()
    assert done.exit_code == 1, done.stderr
    assert "Userpilot refused the API key (HTTP 401)" in done.stderr
    shown = done.stdout + done.stderr + report.read_text()
    assert OTHER_TOKEN not in shown
    assert TOKEN not in shown
    assert report_of(report)["rows_sent"] == 0
    assert stats["by_status"].get("401", 0) >= 1
    assert stats["accepted"] == stats["jobs_created"] == 0
    assert mock.received() == []


def multipart(filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, and its Content-Type."""
    boundary = "e2e-boundary-4b1f"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/x-ndjson\r\n\r\n"
    ).encode()
    body += content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def start_import(mock: Mock, filename: str) -> dict[str, Any]:
    """Create an import job of one row on the mock, as another client of the same key would."""
    row = {
        "event_type": "track",
        "source": "backend-http-import",
        "user_id": "someone-else",
        "event_name": "other_import",
        "inserted_at": "2024-01-01T00:00:00.000Z",
    }
    body, content_type = multipart(filename, json.dumps(row).encode() + b"\n")
    request = urllib.request.Request(
        mock.url + "/v1/imports",
        data=body,
        method="POST",
        headers={"Authorization": f"Token {TOKEN}", "Content-Type": content_type},
    )
    with urllib.request.urlopen(request, timeout=DEADLINE_S) as answer:
        assert answer.status == 200
        return json.loads(answer.read())


@pytest.mark.long(seconds=8)
def test_a_job_already_running_is_waited_for_then_everything_goes(tmp_path: Path) -> None:
    expected = dry_run_bodies(tmp_path, "import-track")
    report = tmp_path / "r.json"
    # 3 s: this process reaches its first upload well within it (a CSV of 14 rows).
    with mock_server(tmp_path, "--job-seconds", "3") as mock:
        theirs = start_import(mock, "theirs.ndjson")
        done = invoke(
            *run_args("import-track", tmp_path / "state", "--endpoint", mock.url),
            "--report",
            report,
        )
        stats = mock.stats()
    assert done.exit_code == 3, done.stderr
    assert re.search(r"retrying importer-[\w-]+\.ndjson: HTTP 409: .*; waiting", done.stderr)
    assert stats["conflicts"] >= 1
    assert stats["jobs_created"] == stats["jobs_completed"] == 2
    assert list(stats["uploads_by_filename"].values()) == [1, 1]
    ours = [r for r in mock.received() if r["_job"] != theirs["job_id"]]
    assert landed(ours) == expected
    assert report_of(report)["retries"] >= 1


def test_429_without_retry_after_waits_one_then_two_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_progress, "RETRY_NOTICE_S", 0.0)  # every retry notice shown
    events = tmp_path / "events.csv"
    # Two rows: after two 429s the pace starts at its floor (1/s), so more would take seconds.
    events.write_text(
        "user_id,event,occurred_at,amount\n"
        + "".join(f"u{i},logged_in,2024-01-0{i}T00:00:00Z,{i}.5\n" for i in range(1, 3))
    )
    expected = dry_run_bodies(tmp_path, "track", source=events)
    report = tmp_path / "r.json"
    with mock_server(tmp_path, "--status-script", "429,429", "--retry-after", "none") as mock:
        done = invoke(
            "run", events, "--mapping", preset("track"), "--state", tmp_path / "state", *FAST,
            "--endpoint", mock.url, "--report", report, "--concurrency", "1",
        )  # fmt: skip
        stats = mock.stats()
    assert done.exit_code == 0, done.stderr
    waits = [float(s) for s in re.findall(r"HTTP 429: .* in (\d+(?:\.\d+)?) s", done.stderr)]
    assert len(waits) == 2, done.stderr
    assert waits[0] >= 1.0
    assert waits[1] >= 2.0
    assert report_of(report)["retries"] == 2
    assert stats["by_status"]["429"] == 2
    assert landed(mock.received()) == expected


def test_a_failed_job_dead_letters_its_chunk_and_replay_sends_it_as_a_new_job(
    tmp_path: Path,
) -> None:
    expected = dry_run_bodies(tmp_path, "import-track")
    state, dead, report = tmp_path / "state", tmp_path / "dead.jsonl", tmp_path / "r.json"
    with mock_server(tmp_path, "--job-fail", "1", "--job-seconds", "0.2") as mock:
        done = invoke(
            *run_args("import-track", state, "--endpoint", mock.url),
            "--dead-letter",
            dead,
            "--report",
            report,
        )
        assert done.exit_code == 3, done.stderr
        summary = report_of(report)
        [job] = summary["jobs"]
        assert job["state"] == "failed"
        letters = read_jsonl(dead)
        assert Counter(canonical(letter["body"]) for letter in letters) == expected
        for letter in letters:
            assert f"job {job['job']} ended failed" in letter["error"]
        assert summary["rows_failed"] == 12
        [(reason, count)] = summary["dead_letters_by_reason"].items()
        assert job["job"] in reason
        assert count == 12
        [kept] = (state / "jobs").glob("*.status.json")
        assert json.loads(kept.read_text())["status"] == "failed"
        assert mock.received() == []

        replayed = invoke(
            "replay", dead, "--destination", "userpilot", "--endpoint", mock.url,
            "--state", tmp_path / "replay-state",
        )  # fmt: skip
        assert replayed.exit_code == 0, replayed.stderr
        stats = mock.stats()
    assert stats["jobs_created"] == 2
    assert stats["jobs_failed"] == stats["jobs_completed"] == 1
    assert list(stats["uploads_by_filename"].values()) == [1, 1]
    records = mock.received()
    assert landed(records) == expected
    assert job["job"] not in {r["_job"] for r in records}


def test_a_lost_upload_answer_is_found_in_the_job_list_and_followed(tmp_path: Path) -> None:
    expected = dry_run_bodies(tmp_path, "import-track")
    report = tmp_path / "r.json"
    with mock_server(tmp_path, "--job-drop-answer", "1", "--job-seconds", "0.2") as mock:
        done = invoke(
            *run_args("import-track", tmp_path / "state", "--endpoint", mock.url),
            "--report",
            report,
        )
        stats = mock.stats()
    assert done.exit_code == 3, done.stderr
    assert stats["dropped"] == 1
    assert stats["jobs_created"] == stats["jobs_completed"] == 1
    assert list(stats["uploads_by_filename"].values()) == [1]
    assert stats["rows_landed"] == 12
    assert landed(mock.received()) == expected
    summary = report_of(report)
    assert summary["rows_sent"] == 12
    assert [job["state"] for job in summary["jobs"]] == ["completed"]


def test_a_loopback_endpoint_is_polled_at_the_interval_asked_for(tmp_path: Path) -> None:
    """Under a second is for loopback only; a job of 1 s is then seen running at least twice
    (polls at 0.1, 0.25, 0.475, 0.81 s), where a 1 s floor would see it once, ended."""
    report = tmp_path / "r.json"
    with mock_server(tmp_path, "--job-seconds", "1") as mock:
        done = invoke(
            *run_args("import-track", tmp_path / "state", "--endpoint", mock.url),
            "--report",
            report,
        )
        stats = mock.stats()
    assert done.exit_code == 3, done.stderr
    assert stats["jobs_created"] == stats["jobs_completed"] == 1
    polls = stats["requests"] - stats["jobs_created"]
    assert polls >= 3
    assert report_of(report)["requests"] == stats["requests"]
