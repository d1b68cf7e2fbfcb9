"""End to end: real importer processes against the real mock server on 127.0.0.1.

Faults on, Ctrl-C and kill -9 in the middle of a run, a torn checkpoint, a refused token: every
test counts what the server received (its --record file), not what the importer says it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

import polars as pl
import pytest
from pipeline_helpers import ROOT

from importer.delivery import record
from importer.delivery.deliver import DeliveryControl, body_frame, deliver
from importer.delivery.feed import RequestFeed
from importer.delivery.options import DeliveryOptions, Feed, SendOptions
from importer.delivery.record import DeadLetters, Recorder
from importer.destinations.mocking import MockConfig
from importer.destinations.vero.api import VERO
from importer.errors import CredentialError, ImporterError, TokenRefusedError
from importer.mock.server import start_mock_server
from importer.model import Request, Result
from importer.outcome import Summary
from importer.progress import DeliveryProgress
from importer.state.checkpoint import CheckpointLog
from importer.state.facts import RunIdentity

TOKEN = "tok-e2e-5f3a9c1d7b"
TRACK = str(ROOT / "schemas" / "vero-track.toml")
DEADLINE_S = 60.0


@dataclass
class Mock:
    url: str
    record: Path
    process: subprocess.Popen[str]

    @property
    def stats_url(self) -> str:
        return self.url.removesuffix("/api/v2") + "/_mock/stats"

    def received(self) -> list[dict[str, object]]:
        if not self.record.exists():
            return []
        lines = self.record.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def check_ids(self) -> Counter[str]:
        return Counter(str(body["extras"]["check_id"]) for body in self.received())  # type: ignore[index]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VERO_AUTH_TOKEN"}
    env.update(extra)
    return env


@contextmanager
def mock_server(tmp_path: Path, *options: str) -> Iterator[Mock]:
    """`importer mock-server` in its own process on a free port; ended when the test ends."""
    record = tmp_path / "received.jsonl"
    command = [
        sys.executable,
        "-m",
        "importer",
        "mock-server",
        "--port",
        "0",
        "--record",
        str(record),
    ]
    process = subprocess.Popen(
        [*command, "--dedup-window", "0", *options],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(VERO_AUTH_TOKEN=TOKEN),
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "listening: --endpoint " in line, line
        yield Mock(url=line.split("--endpoint ")[1].strip(), record=record, process=process)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def write_events(path: Path, rows: int) -> Path:
    lines = ["user_id,email,event,occurred_at,item"]
    lines += [
        f"u{i % 97},user{i % 97}@example.com,Viewed product,2024-01-01T00:{i % 60:02d}:00Z,sku-{i}"
        for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def importer(*args: str, token: str | None = TOKEN) -> list[str]:
    return [sys.executable, "-m", "importer", *args]


def run(args: list[str], *, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = _env(VERO_AUTH_TOKEN=token) if token else _env()
    return subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=DEADLINE_S, check=False
    )


def start(args: list[str], *, own_group: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(VERO_AUTH_TOKEN=TOKEN),
        start_new_session=own_group,
    )


def wait_for_received(mock: Mock, count: int, process: subprocess.Popen[str]) -> None:
    """Block until the server has recorded `count` requests (the event), or fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while len(mock.received()) < count:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "the server never received enough requests"
        time.sleep(0.02)


def wait_for_in_flight(mock: Mock, count: int, process: subprocess.Popen[str]) -> None:
    """Block until the server has taken `count` requests it has not answered yet."""
    deadline = time.monotonic() + DEADLINE_S
    while json.loads(urlopen(mock.stats_url, timeout=DEADLINE_S).read())["requests"] < count:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "the server never received enough requests"
        time.sleep(0.02)


def run_args(events: Path, mock: Mock, state: Path, *extra: str) -> list[str]:
    return importer(
        "run", str(events), "--schema", TRACK, "--endpoint", mock.url, "--state", str(state), *extra
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_every_valid_row_arrives_through_faults(tmp_path: Path, workers: str) -> None:
    events = write_events(tmp_path / "events.csv", 1500)
    report = tmp_path / "report.json"
    faults = (
        "--rate-429",
        "0.03",
        "--retry-after",
        "0",
        "--rate-5xx",
        "0.05",
        "--rate-drop",
        "0.03",
    )
    with mock_server(tmp_path, *faults, "--seed", "7") as mock:
        done = run(
            run_args(
                events, mock, tmp_path / "state", "--workers", workers, "--report", str(report)
            )
        )
        assert done.returncode == 0, done.stderr
        ids = mock.check_ids()
    assert len(ids) == 1500
    assert max(ids.values()) == 1
    summary = json.loads(report.read_text())
    assert summary["rows_sent"] == 1500
    assert summary["retries"] > 0
    assert summary["requests"] == 1500 + summary["retries"]


@pytest.mark.long(seconds=10)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_drains_in_flight_and_resume_sends_no_duplicate(
    tmp_path: Path, workers: str
) -> None:
    events = write_events(tmp_path / "events.csv", 2000)
    state = tmp_path / "state"
    with mock_server(tmp_path, "--rate-slow", "1", "--slow", "0.02") as mock:
        process = start(run_args(events, mock, state, "--workers", workers, "--concurrency", "4"))
        wait_for_received(mock, 200, process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 130, err
        assert "interrupted: run the same command again" in out
        first = sum(mock.check_ids().values())
        assert first < 2000
        again = run(run_args(events, mock, state, "--workers", workers, "--concurrency", "32"))
        assert again.returncode == 0, again.stderr
        ids = mock.check_ids()
    assert len(ids) == 2000
    assert sum(ids.values()) == 2000  # not one row sent twice


@pytest.mark.long(seconds=10)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_process_group_drains_every_sender(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # A terminal's Ctrl-C, or a scheduler stopping the job, signals every process of the group:
    # the senders must leave the drain to the main process, not die with their requests.
    events = write_events(tmp_path / "events.csv", 2000)
    state = tmp_path / "state"
    with mock_server(tmp_path, "--rate-slow", "1", "--slow", "0.02") as mock:
        args = run_args(events, mock, state, "--workers", "2", "--concurrency", "4")
        process = start(args, own_group=True)
        wait_for_received(mock, 200, process)
        os.killpg(process.pid, signum)
        out, err = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 130, err
        assert "interrupted: run the same command again" in out
        again = run(run_args(events, mock, state, "--concurrency", "32"))
        assert again.returncode == 0, again.stderr
        ids = mock.check_ids()
    assert len(ids) == 2000
    assert sum(ids.values()) == 2000  # not one row sent twice


@pytest.mark.long(seconds=10)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_drains_like_ctrl_c(tmp_path: Path, workers: str) -> None:
    events = write_events(tmp_path / "events.csv", 2000)
    state = tmp_path / "state"
    with mock_server(tmp_path, "--rate-slow", "1", "--slow", "0.02") as mock:
        process = start(run_args(events, mock, state, "--workers", workers, "--concurrency", "4"))
        wait_for_received(mock, 100, process)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 130, err
        assert "SIGTERM: finishing the requests in flight" in err
        again = run(run_args(events, mock, state, "--workers", workers, "--concurrency", "32"))
        assert again.returncode == 0, again.stderr
        ids = mock.check_ids()
    assert len(ids) == 2000
    assert sum(ids.values()) == 2000


@pytest.mark.long(seconds=4)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_ctrl_c_quits_at_once_and_the_log_reads_back(tmp_path: Path, workers: str) -> None:
    events = write_events(tmp_path / "events.csv", 200)
    state = tmp_path / "state"
    # Every answer takes longer than the test may: a drain could never end by itself.
    with mock_server(tmp_path, "--rate-slow", "1", "--slow", "600") as mock:
        process = start(run_args(events, mock, state, "--workers", workers, "--concurrency", "4"))
        wait_for_in_flight(mock, 4, process)
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        assert "finishing the requests in flight" in process.stderr.readline()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 130, err
        assert "quit at once" in err
    status = run(importer("status", "--state", str(state)))
    assert status.returncode == 0, status.stderr
    assert "0 delivered, 0 failed" in status.stdout


@pytest.mark.long(seconds=12)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_kill_9_resume_resends_at_most_the_requests_in_flight(tmp_path: Path, workers: str) -> None:
    events = write_events(tmp_path / "events.csv", 2000)
    state = tmp_path / "state"
    with mock_server(tmp_path, "--rate-slow", "1", "--slow", "0.02") as mock:
        process = start(run_args(events, mock, state, "--workers", workers, "--concurrency", "4"))
        wait_for_received(mock, 300, process)
        senders = _children(process.pid)
        assert len(senders) == (int(workers) if workers != "1" else 0)
        process.kill()
        process.communicate(timeout=DEADLINE_S)
        # Senders that lost their parent stop at once: none goes on sending unrecorded rows.
        for pid in senders:
            _wait_gone(pid)
        again = run(run_args(events, mock, state, "--workers", workers, "--concurrency", "32"))
        assert again.returncode == 0, again.stderr
        ids = mock.check_ids()
    assert len(ids) == 2000
    # In flight (4), plus, across processes, the answers on their way from a sender to the
    # main process when it died: a sender starts a request only while fewer than twice its
    # share of --concurrency are unacknowledged, so never more than twice --concurrency.
    assert sum(ids.values()) - 2000 <= (4 if workers == "1" else 8)


def _children(pid: int) -> list[int]:
    """The processes `pid` started (Linux: /proc/PID/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _wait_gone(pid: int) -> None:
    """Block until process `pid` has exited (or is a zombie nobody reaped), or fail."""
    deadline = time.monotonic() + DEADLINE_S
    status = Path(f"/proc/{pid}/status")
    while status.exists() and "State:\tZ" not in status.read_text():
        assert time.monotonic() < deadline, f"sender {pid} outlived its parent"
        time.sleep(0.02)


@pytest.mark.long(seconds=4)
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_torn_or_corrupt_checkpoint_tail_is_survived(tmp_path: Path, damage: str) -> None:
    events = write_events(tmp_path / "events.csv", 600)
    state = tmp_path / "state"
    with mock_server(tmp_path) as mock:
        first = run(run_args(events, mock, state))
        assert first.returncode == 0, first.stderr
        [log] = [p for p in state.iterdir() if p.suffix == ".log"]
        data = log.read_bytes()
        log.write_bytes(data[:-7] if damage == "truncated" else data + b"\x00garbage\xff\x13")
        again = run(run_args(events, mock, state))
        assert again.returncode == 0, again.stderr
        assert "warning:" in again.stdout
        ids = mock.check_ids()
    assert len(ids) == 600


def test_a_refused_token_stops_the_run_at_once_without_printing_it(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", 500)
    wrong = "wrong-token-0d9e8f"
    with mock_server(tmp_path) as mock:
        done = run(run_args(events, mock, tmp_path / "state", "--concurrency", "4"), token=wrong)
        stats = mock.received()
    assert done.returncode == 1
    assert "Error: the API refused the token (HTTP 401)" in done.stderr
    assert wrong not in done.stdout + done.stderr
    assert stats == []


def test_a_400_becomes_a_dead_letter_and_the_run_goes_on(tmp_path: Path) -> None:
    payloads = tmp_path / "payloads.jsonl"
    good = {"identity": {"id": "u1"}, "event_name": "Login", "extras": {"check_id": "a"}}
    bad = {"identity": {"id": "u1"}, "event_name": "", "extras": {"check_id": "b"}}
    lines = [
        {
            "method": "POST",
            "path": "events/track",
            "body": body,
            "source": {"file": "x.csv", "line": n},
        }
        for n, body in enumerate([good, bad, {**good, "extras": {"check_id": "c"}}], start=2)
    ]
    payloads.write_text("".join(json.dumps(line) + "\n" for line in lines))
    dead = tmp_path / "dead.jsonl"
    with mock_server(tmp_path) as mock:
        done = run(
            importer(
                "replay",
                str(payloads),
                "--endpoint",
                mock.url,
                "--state",
                str(tmp_path / "s"),
                "--dead-letter",
                str(dead),
                "--report",
                str(tmp_path / "report.json"),
            )
        )
        ids = mock.check_ids()
    assert done.returncode == 3, done.stderr
    assert set(ids) == {"a", "c"}
    [letter] = [json.loads(line) for line in dead.read_text().splitlines()]
    assert letter["status"] == 400
    assert letter["body"] == bad
    assert letter["source"] == {"file": str(payloads), "line": 2}
    assert "event_name" in letter["error"]
    # The summary and the report say why, with a row to look at.
    report = json.loads((tmp_path / "report.json").read_text())
    [(reason, count)] = report["dead_letters_by_reason"].items()
    assert count == 1
    assert reason.startswith("HTTP 400: ")
    assert "event_name" in reason
    assert report["dead_letter_examples"][reason] == f"{payloads}, line 2"
    assert reason in done.stdout


def test_a_reviewed_dry_run_replays_as_it_is(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", 40)
    payloads = tmp_path / "payloads.jsonl"
    dry = run(importer("run", str(events), "--schema", TRACK, "--dry-run", "--out", str(payloads)))
    assert dry.returncode == 0, dry.stderr
    state = tmp_path / "state"
    with mock_server(tmp_path) as mock:
        sent = run(importer("replay", str(payloads), "--endpoint", mock.url, "--state", str(state)))
        again = run(
            importer("replay", str(payloads), "--endpoint", mock.url, "--state", str(state))
        )
        received = mock.received()
    assert sent.returncode == 0, sent.stderr
    assert again.returncode == 0, again.stderr
    assert re.search(r"skipped \(done before\) +40\n", again.stdout)
    expected = [json.loads(line)["body"] for line in payloads.read_text().splitlines()]
    arrived = [{k: v for k, v in body.items() if not k.startswith("_")} for body in received]
    assert sorted(map(json.dumps, arrived)) == sorted(map(json.dumps, expected))


def test_retry_after_is_honoured_and_counted(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", 20)
    report = tmp_path / "report.json"
    with mock_server(tmp_path, "--status-script", "429,429,503", "--retry-after", "0") as mock:
        done = run(run_args(events, mock, tmp_path / "state", "--report", str(report)))
        ids = mock.check_ids()
    assert done.returncode == 0, done.stderr
    assert len(ids) == 20
    assert json.loads(report.read_text())["retries"] == 3
    notices = [line for line in done.stderr.splitlines() if line.startswith("retrying ")]
    assert 1 <= len(notices) <= 3, done.stderr  # how many depends on the clock: see test_cli
    assert re.fullmatch(
        rf"retrying {re.escape(str(events))}, line \d+: HTTP 429: Too many requests; "
        r"retry 1 of 8 in 0\.0 s",
        notices[0],
    )


def test_quiet_shows_no_retries(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", 5)
    with mock_server(tmp_path, "--status-script", "503") as mock:
        done = run(run_args(events, mock, tmp_path / "state", "--quiet"))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_token_is_never_written_anywhere(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", 50)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    with mock_server(tmp_path, "--status-script", "500,400") as mock:
        done = run(
            run_args(
                events,
                mock,
                outputs / "state",
                "--report",
                str(outputs / "report.json"),
                "--dead-letter",
                str(outputs / "dead.jsonl"),
                "--rejects",
                str(outputs / "rejects.csv"),
                "--max-retries",
                "1",
            )
        )
    assert done.returncode == 3, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    written = [p for p in outputs.rglob("*") if p.is_file()]
    assert len(written) >= 3
    for path in written:
        assert TOKEN.encode() not in path.read_bytes(), path


def test_a_different_mapping_does_not_resume_without_fresh(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", 10)
    other = tmp_path / "other.toml"
    other.write_text(
        Path(TRACK).read_text().replace('timezone = "UTC"', 'timezone = "Europe/Paris"')
    )
    state = tmp_path / "state"
    with mock_server(tmp_path) as mock:
        assert run(run_args(events, mock, state)).returncode == 0
        refused = run(
            importer(
                "run",
                str(events),
                "--schema",
                str(other),
                "--endpoint",
                mock.url,
                "--state",
                str(state),
            )
        )
        assert refused.returncode == 1
        assert "--fresh" in refused.stderr
        fresh = run(
            importer(
                "run",
                str(events),
                "--schema",
                str(other),
                "--endpoint",
                mock.url,
                "--state",
                str(state),
                "--fresh",
            )
        )
        assert fresh.returncode == 0, fresh.stderr
        assert sum(mock.check_ids().values()) == 20


def test_status_says_how_far_the_job_got(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", 30)
    state = tmp_path / "state"
    with mock_server(tmp_path, "--status-script", "200,400") as mock:
        run(run_args(events, mock, state))
    status = run(importer("status", "--state", str(state)))
    assert status.returncode == 0
    assert f"{events}: 29 delivered, 1 failed" in status.stdout
    assert "1 failed: HTTP 400: Error (first: line 3)" in status.stdout  # a line per reason


def test_a_stop_waits_for_the_batch_being_read_before_returning(tmp_path: Path) -> None:
    """A 401 while the next batch is still being built: deliver() returns only after that
    thread is done, so closing the input afterwards is safe and nothing touches the summary."""
    from importer.delivery.deliver import body_frame, deliver
    from importer.delivery.options import DeliveryOptions, Feed
    from importer.destinations.mocking import MockConfig
    from importer.destinations.vero.api import VERO
    from importer.mock.server import start_mock_server
    from importer.outcome import Summary
    from importer.state.facts import RunIdentity

    order: list[str] = []
    frame = pl.DataFrame({"__line": [2], "__body": ['{"identity":{"id":"u"},"event_name":"e"}']})

    def feeds() -> Iterator[Feed]:
        yield Feed("fp", "in.csv", body_frame(frame, method="POST", path="events/track"))
        time.sleep(0.3)  # reading and validating the next batch takes a while
        order.append("batch 2 built")
        yield Feed("fp", "in.csv", body_frame(frame, method="POST", path="events/track"))

    async def main() -> Summary:
        mock = await start_mock_server(MockConfig(token=TOKEN, status_script=(401,)))
        try:
            return await deliver(
                batches,
                identity=RunIdentity("m", "vero", mock.url),
                destination=VERO,
                options=DeliveryOptions(endpoint=mock.url, token=TOKEN, state_dir=tmp_path),
                summary=Summary(),
            )
        finally:
            await mock.close()

    batches = feeds()
    summary = asyncio.run(main())
    order.append("deliver returned")
    batches.close()  # raised "generator already executing" while the thread was still inside
    assert summary.stopped is not None
    assert order == ["batch 2 built", "deliver returned"]


def test_an_endpoint_that_never_answers_stops_the_run_and_the_next_run_sends_all(
    tmp_path: Path,
) -> None:
    events = write_events(tmp_path / "events.csv", 300)
    with socket.socket() as probe:  # a free port with nobody listening, kept for the second run
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/v2"
    state = tmp_path / "state"
    args = importer("run", str(events), "--schema", TRACK, "--endpoint", url, "--state", str(state))
    down = run([*args, "--max-retries", "1", "--concurrency", "4"])
    assert down.returncode == 1, down.stderr
    assert "Error: no answer from the endpoint after 2 attempts" in down.stderr
    assert not (state / "dead-letters.jsonl").exists()  # nothing filed away as undeliverable
    with mock_server(tmp_path, "--port", str(port)) as mock:
        up = run(args)
        ids = mock.check_ids()
    assert up.returncode == 0, up.stderr
    assert len(ids) == 300


def test_the_bar_ends_at_its_total_with_rejects_and_rows_done_before(tmp_path: Path) -> None:
    from importer.delivery.options import DeliveryOptions
    from importer.mapping.file import load_mapping
    from importer.pipeline.endpoint import EMBEDDED
    from importer.pipeline.run import RunOptions, open_inputs, send_inputs
    from importer.progress import DeliveryProgress

    class Counting(DeliveryProgress):
        def __init__(self) -> None:
            self.total: int | None = None
            self.moved = 0

        def begin(self, total: int | None) -> None:
            self.total = total

        def result(self, *, delivered: bool, retries: int) -> None:
            self.moved += 1

        def skip(self, rows: int, *, rejected: int = 0, blank: int = 0, failed: int = 0) -> None:
            self.moved += rows + rejected + blank + failed

    events = write_events(tmp_path / "events.csv", 50)
    with events.open("a") as handle:
        handle.write("u1,not-an-email,Viewed product,2024-01-01T00:00:00Z,sku\n\n")
    options = RunOptions(inputs=(events,), mapping=load_mapping(Path(TRACK)), batch_rows=16)
    delivery = DeliveryOptions(endpoint=EMBEDDED, token=None, state_dir=tmp_path / "state")
    for attempt in ("first", "resumed"):
        progress = Counting()
        summary = asyncio.run(
            send_inputs(options, open_inputs(options), delivery, progress=progress)
        )
        assert summary.rows_rejected == 1
        assert progress.total == progress.moved, attempt
    assert (summary.rows_sent, summary.rows_skipped) == (0, 50)


def _deliver_lines(
    state: Path,
    lines: int,
    *,
    status_script: tuple[int, ...] = (),
    progress: DeliveryProgress | None = None,
    control: DeliveryControl | None = None,
    checkpoint: bool = True,
) -> Summary:
    """deliver() `lines` track bodies of one input to an in-process mock, one at a time."""
    frame = pl.DataFrame(
        {
            "__line": list(range(1, lines + 1)),
            "__body": [f'{{"identity":{{"id":"u{n}"}},"event_name":"e"}}' for n in range(lines)],
        }
    )
    feed = Feed("fp", "in.csv", body_frame(frame, method="POST", path="events/track"))

    async def main() -> Summary:
        mock = await start_mock_server(MockConfig(token=TOKEN, status_script=status_script))
        try:
            return await deliver(
                iter([feed]),
                identity=RunIdentity("m", "vero", "the-mock"),  # its port differs per run
                destination=VERO,
                options=DeliveryOptions(
                    endpoint=mock.url,
                    token=TOKEN,
                    state_dir=state,
                    send=SendOptions(concurrency=1),
                    checkpoint=checkpoint,
                ),
                summary=Summary(),
                progress=progress,
                control=control,
            )
        finally:
            await mock.close()

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("status", "refused", "text"),
    [
        pytest.param(401, True, "the API refused the token (HTTP 401): ", id="401-refused-token"),
        pytest.param(302, False, "the endpoint answered with a redirect (HTTP 302)", id="redirect"),
    ],
)
def test_the_stop_of_a_run_is_the_error_it_is(
    tmp_path: Path, status: int, refused: bool, text: str
) -> None:
    summary = _deliver_lines(tmp_path, 3, status_script=(status,))
    assert isinstance(summary.stop, ImporterError)
    assert isinstance(summary.stop, TokenRefusedError) is refused
    assert isinstance(summary.stop, CredentialError) is refused
    assert str(summary.stop).startswith(text)
    # The summary and the report say it as before: the error's text.
    assert summary.stopped == str(summary.stop)
    assert summary.as_report()["stopped"] == str(summary.stop)
    assert summary.rows_sent == 0


def test_the_caller_stops_a_delivery_and_syncs_it_through_its_control(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_sync = Recorder.sync

    def counted_sync(self: Recorder) -> None:
        synced.append("sync")
        real_sync(self)

    monkeypatch.setattr(Recorder, "sync", counted_sync)
    control = DeliveryControl()

    class StopAfterFirst(DeliveryProgress):
        def result(self, *, delivered: bool, retries: int) -> None:
            if not control.stop.is_set():
                before = len(synced)
                control.sync()  # what the CLI does on a second signal, before it quits
                assert len(synced) == before + 1
                control.stop.set()

    summary = _deliver_lines(tmp_path, 200, progress=StopAfterFirst(), control=control)
    assert summary.interrupted
    assert 1 <= summary.rows_sent < 200
    control.sync()  # after the delivery closed its files: nothing left to sync, no error
    again = _deliver_lines(tmp_path, 200)
    assert not again.interrupted
    assert (again.rows_skipped, again.rows_sent) == (summary.rows_sent, 200 - summary.rows_sent)


def test_a_second_signal_syncs_the_checkpoint_before_it_quits() -> None:
    from importer.api.runner import on_signal
    from importer.cli.progress import BarDelivery

    events: list[str] = []

    class Control(DeliveryControl):
        def sync(self) -> None:
            events.append("sync")

    class Bar(BarDelivery):
        def notice(self, message: str) -> None:
            events.append(message.partition(":")[0])

        def abandon(self) -> None:
            events.append("quit")  # the real one ends the process

    control, bar = Control(), Bar(enabled=False)
    on_signal(signal.SIGTERM, control, bar.notice, bar.abandon)
    assert control.stop.is_set()
    assert events == ["SIGTERM"]
    on_signal(signal.SIGINT, control, bar.notice, bar.abandon)
    assert events == ["SIGTERM", "sync", "quit"]


def _acknowledged(line: int) -> Result:
    return Result(Request("POST", "events/track", b"{}", "fp", "in.csv", line), True, 200, None, 1)


def _records_after(path: Path, offset: int) -> list[dict[str, object]]:
    return [json.loads(raw[9:]) for raw in path.read_bytes()[offset:].splitlines()]


def _recorder(log: CheckpointLog, tmp_path: Path) -> Recorder:
    dead = DeadLetters(tmp_path / "dead.jsonl")
    return Recorder(log, dead, summary=Summary(), progress=DeliveryProgress())


def test_the_marks_of_one_loop_turn_reach_the_log_in_one_write_at_the_next(
    tmp_path: Path,
) -> None:
    """A write per acknowledgement cost more than the rest of recording it; a kill -9 still
    loses no acknowledgement once the loop has turned."""

    async def main() -> None:
        log = CheckpointLog.open(tmp_path, job=RunIdentity("m", "vero", "x"))
        log.register_input("in.csv", "fp")
        log.flush()
        recorder = _recorder(log, tmp_path)
        size = log.path.stat().st_size
        for line in (3, 1, 2):  # acknowledged together, in any order
            recorder.record(_acknowledged(line))
        assert log.path.stat().st_size == size  # nothing written per acknowledgement
        await asyncio.sleep(0)  # the loop turns once
        [record] = _records_after(log.path, size)
        assert (record["t"], record["ranges"]) == ("done", [[1, 3]])
        recorder.record(_acknowledged(4))
        recorder.close()  # what is left is written on close
        assert [r["ranges"] for r in _records_after(log.path, size)] == [[[1, 3]], [[4, 4]]]

    asyncio.run(main())


def test_syncs_run_in_a_thread_and_come_every_sync_every_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync waits for the disk: on the event loop it held up every socket meanwhile."""
    threads: list[int] = []
    synced = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        threads.append(threading.get_ident())
        synced.set()
        real_fsync(fd)

    monkeypatch.setattr(record, "SYNC_EVERY", 3)
    monkeypatch.setattr(os, "fsync", fsync)

    async def main() -> None:
        log = CheckpointLog.open(tmp_path, job=RunIdentity("m", "vero", "x"))
        log.register_input("in.csv", "fp")
        recorder = _recorder(log, tmp_path)
        threads.clear()  # opening the log synced it
        synced.clear()
        tick = asyncio.create_task(recorder.sync_every(3600))  # only SYNC_EVERY can wake it
        for line in (1, 2, 3):
            recorder.record(_acknowledged(line))
        assert await asyncio.to_thread(synced.wait, DEADLINE_S)
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
        assert threads
        assert threading.get_ident() not in threads
        recorder.close()

    asyncio.run(main())
    with CheckpointLog.open(tmp_path, job=RunIdentity("m", "vero", "x")) as log:
        assert log.delivered_count("fp") == 3


def test_without_the_checkpoint_nothing_is_kept_but_dead_letters(tmp_path: Path) -> None:
    """The benchmark-only switch: what a run costs without the log, nothing resumable."""
    state = tmp_path / "state"
    first = _deliver_lines(state, 5, status_script=(400,), checkpoint=False)
    assert (first.rows_sent, first.rows_failed) == (4, 1)
    assert not (state / "checkpoint.log").exists()
    assert len((state / "dead-letters.jsonl").read_text().splitlines()) == 1
    again = _deliver_lines(state, 5, checkpoint=False)
    assert (again.rows_skipped, again.rows_sent) == (0, 5)


def test_the_next_batch_is_read_while_this_one_is_sent(tmp_path: Path) -> None:
    """Reading a batch only once the last one was sent left the sockets idle meanwhile."""
    asked = threading.Event()

    def feeds() -> Iterator[Feed]:
        for batch in range(2):
            if batch:
                asked.set()
            frame = pl.DataFrame({"__line": [1 + batch], "__body": ['{"identity":{"id":"u"}}']})
            yield Feed("fp", "in.csv", body_frame(frame, method="POST", path="events/track"))

    async def main() -> bool:
        with CheckpointLog.open(tmp_path, job=RunIdentity("m", "vero", "x")) as log:
            summary, progress = Summary(), DeliveryProgress()
            feed = RequestFeed(feeds(), checkpoint=log, summary=summary, progress=progress)
            requests = feed.requests()
            first = await anext(requests)
            assert first.line == 1
            # Nothing more is taken from the first batch: the second is being read regardless.
            read_ahead = await asyncio.to_thread(asked.wait, DEADLINE_S)
            await requests.aclose()
            await feed.settle()
            return read_ahead

    assert asyncio.run(main())


def test_delivery_imports_no_web_server() -> None:
    """aiohttp's server (the mock's) took a quarter of a dry run's start-up."""
    code = "import sys, importer.delivery.deliver; print('aiohttp.web' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_validate_loads_no_http_client(tmp_path: Path) -> None:
    """A command that sends nothing starts without aiohttp (an eighth of its start-up)."""
    events = write_events(tmp_path / "events.csv", 10)
    command = [sys.executable, "-X", "importtime", "-m", "importer", "validate", str(events)]
    done = subprocess.run(
        [*command, "--mapping", TRACK], capture_output=True, text=True, env=_env(), check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "importer.checks.validate" in loaded
    assert not {name for name in loaded if name.split(".")[0] == "aiohttp"}


def test_progress_hears_done_before_and_rejected_apart(tmp_path: Path) -> None:
    """Issue 19: the core tells the progress which rows were done before and which rejected."""
    from importer.delivery.options import DeliveryOptions
    from importer.mapping.file import load_mapping
    from importer.pipeline.endpoint import EMBEDDED
    from importer.pipeline.run import RunOptions, open_inputs, send_inputs

    class Kinds(DeliveryProgress):
        def __init__(self) -> None:
            self.done = self.rejected = 0

        def skip(self, rows: int, *, rejected: int = 0, blank: int = 0, failed: int = 0) -> None:
            self.done += rows
            self.rejected += rejected

    events = write_events(tmp_path / "events.csv", 20)
    with events.open("a") as handle:
        handle.write("u1,not-an-email,Viewed product,2024-01-01T00:00:00Z,sku\n")
    options = RunOptions(inputs=(events,), mapping=load_mapping(Path(TRACK)), batch_rows=8)
    delivery = DeliveryOptions(endpoint=EMBEDDED, token=None, state_dir=tmp_path / "state")
    seen = []
    for _ in ("first", "resumed"):
        progress = Kinds()
        asyncio.run(send_inputs(options, open_inputs(options), delivery, progress=progress))
        seen.append((progress.done, progress.rejected))
    assert seen == [(0, 1), (20, 1)]
