"""The Python API (`importer.run`, `dry_run`, `validate`, `replay`): the same engine as the
commands, returning a Report, raising ImporterError subclasses, never SystemExit; called plainly,
from inside a running event loop (a notebook), from a worker thread (an Airflow task), and
interrupted by a real SIGINT in a real process."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from pipeline_helpers import ROOT
from test_delivery import DEADLINE_S, TOKEN, mock_server, wait_for_received, write_events

import importer
from importer.api.runner import Abandoned

SAMPLES = ROOT / "samples"
TRACK = ROOT / "schemas" / "vero-track.toml"


@pytest.fixture(autouse=True)
def _no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token from the environment unless a test gives one."""
    monkeypatch.delenv("VERO_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("USERPILOT_API_KEY", raising=False)


def _events(tmp_path: Path, rows: int = 20) -> Path:
    return write_events(tmp_path / "events.csv", rows)


def test_run_returns_a_frozen_report_with_the_json_reports_fields(tmp_path: Path) -> None:
    events = _events(tmp_path)
    report_path = tmp_path / "report.json"
    report = importer.run(
        events, mapping=TRACK, endpoint="embedded", state=tmp_path / "state", report=report_path
    )
    assert isinstance(report, importer.Report)
    assert (report.rows_read, report.rows_valid, report.rows_sent, report.rows_rejected) == (
        20,
        20,
        20,
        0,
    )
    assert report.exit_code == 0
    assert report.ok
    assert report.embedded_server is not None
    assert report.embedded_server["accepted"] == 20
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.rows_sent = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        report.rejects_by_rule["x"] = 1  # type: ignore[index]
    written = json.loads(report_path.read_text())
    assert report.as_dict() == {**written, "exit_code": 0}
    again = importer.run(events, mapping=TRACK, endpoint="embedded", state=tmp_path / "state")
    assert (again.rows_sent, again.rows_skipped) == (0, 20)


def test_validate_counts_rejects_by_rule_and_exits_3(tmp_path: Path) -> None:
    rows = tmp_path / "bad.csv"
    rows.write_text(
        "user_id,email,event,occurred_at,item\n"
        "u1,u1@example.com,Viewed,2024-01-01T00:00:00Z,a\n"
        "u2,not-an-email,Viewed,2024-01-01T00:00:00Z,b\n",
        encoding="utf-8",
    )
    rejects = tmp_path / "rejects.csv"
    report = importer.validate(rows, mapping=TRACK, rejects=rejects)
    assert (report.rows_valid, report.rows_rejected, report.exit_code) == (1, 1, 3)
    assert sum(report.rejects_by_rule.values()) == 1
    assert "line 3" in next(iter(report.reject_examples.values()))[0]
    assert rejects.read_text().count("\n") == 2  # header and the one reject


def test_dry_run_writes_payloads_that_replay_sends(tmp_path: Path) -> None:
    events = _events(tmp_path, 12)
    out = tmp_path / "payloads.jsonl"
    built = importer.dry_run([events], mapping=str(TRACK), out=out)
    assert (built.dry_run, built.rows_valid, built.rows_sent, built.exit_code) == (True, 12, 0, 0)
    assert len(out.read_text().splitlines()) == 12
    sent = importer.replay(out, destination="vero", endpoint="embedded", state=tmp_path / "replay")
    assert (sent.rows_sent, sent.exit_code) == (12, 0)


def test_a_job_file_reports_its_steps(tmp_path: Path) -> None:
    report = importer.run(SAMPLES / "migration.toml", endpoint="embedded", state=tmp_path / "state")
    assert report.job_file == str(SAMPLES / "migration.toml")
    names = {step.name for step in report.steps}
    assert names == {"events", "users", "tags", "unsubscribes"}
    assert sum(s.report.rows_sent for s in report.steps if s.report) == report.rows_sent > 0
    checked = importer.validate(SAMPLES / "migration.toml")
    assert len(checked.steps) == 4
    assert checked.rows_sent == 0


def test_progress_events_reach_the_callback(tmp_path: Path) -> None:
    seen: list[importer.ProgressEvent] = []
    report = importer.run(
        _events(tmp_path, 30),
        mapping=TRACK,
        endpoint="embedded",
        state=tmp_path / "state",
        progress=seen.append,
    )
    results = [event for event in seen if event.kind == "result"]
    assert len(results) == report.rows_sent == 30
    assert all(event.delivered for event in results)
    assert (seen[0].stage, seen[0].kind, seen[-1].kind) == ("send", "begin", "end")
    read: list[importer.ProgressEvent] = []
    importer.validate(_events(tmp_path, 30), mapping=TRACK, progress=read.append)
    assert read[-1].rows_done == 30
    assert {e.stage for e in read} == {"read"}


def test_run_inside_a_running_event_loop(tmp_path: Path) -> None:
    """A notebook cell runs inside the kernel's loop: the run gets a loop of its own."""
    events = _events(tmp_path)

    async def cell() -> importer.Report:
        asyncio.get_running_loop()  # there is one
        return importer.run(events, mapping=TRACK, endpoint="embedded", state=tmp_path / "s")

    report = asyncio.run(cell())
    assert report.rows_sent == 20


def test_run_from_a_worker_thread(tmp_path: Path) -> None:
    """An Airflow task calls from a thread that is not the main one: no signal handlers."""
    events = _events(tmp_path)
    results: list[object] = []

    def task() -> None:
        try:
            results.append(
                importer.run(events, mapping=TRACK, endpoint="embedded", state=tmp_path / "s")
            )
        except BaseException as exc:  # the test reports it below
            results.append(exc)

    worker = threading.Thread(target=task)
    worker.start()
    worker.join(timeout=DEADLINE_S)
    [result] = results
    assert isinstance(result, importer.Report), result
    assert result.rows_sent == 20


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(
            lambda tmp: importer.run(tmp / "missing.csv", mapping=TRACK, endpoint="embedded"),
            importer.InputError,
            id="missing-input",
        ),
        pytest.param(
            lambda tmp: importer.validate(tmp / "events.csv", mapping=tmp / "nope.toml"),
            importer.MappingError,
            id="missing-mapping",
        ),
        pytest.param(
            lambda tmp: importer.run(SAMPLES / "migration.toml", mapping=TRACK),
            importer.OptionError,
            id="job-file-with-mapping",
        ),
        pytest.param(
            lambda tmp: importer.run(tmp / "events.csv", mapping=TRACK, order="time"),
            importer.OptionError,
            id="order-time-alone",
        ),
        pytest.param(
            lambda tmp: importer.run(
                tmp / "events.csv", mapping=TRACK, endpoint="embedded", concurrency=0
            ),
            importer.MappingError,
            id="concurrency-0",
        ),
        pytest.param(
            lambda tmp: importer.run(
                tmp / "events.csv", mapping=TRACK, endpoint="https://api.example.com/api/v2"
            ),
            importer.CredentialError,
            id="no-token",
        ),
        pytest.param(
            lambda tmp: importer.validate(tmp / "events.csv", mapping=TRACK, since="yesterday"),
            importer.OptionError,
            id="bad-since",
        ),
    ],
)
def test_errors_raise_their_subclass_never_system_exit(
    tmp_path: Path, call: object, error: type[importer.ImporterError]
) -> None:
    _events(tmp_path)
    with pytest.raises(error) as raised:
        call(tmp_path)  # type: ignore[operator]
    assert isinstance(raised.value, importer.ImporterError)


def test_a_refused_token_raises_with_the_report(tmp_path: Path) -> None:
    events = _events(tmp_path)
    with mock_server(tmp_path) as mock, pytest.raises(importer.TokenRefusedError) as raised:
        importer.run(events, mapping=TRACK, endpoint=mock.url, token="wrong", state=tmp_path / "s")
    report = raised.value.report
    assert isinstance(report, importer.Report)
    assert (report.exit_code, report.rows_sent) == (1, 0)
    assert "wrong" not in str(raised.value)


def test_the_token_argument_is_used_and_never_shown(tmp_path: Path) -> None:
    events = _events(tmp_path, 5)
    with mock_server(tmp_path) as mock:
        report = importer.run(
            events, mapping=TRACK, endpoint=mock.url, token=TOKEN, state=tmp_path / "s"
        )
        assert report.rows_sent == 5
        assert len(mock.received()) == 5
    assert TOKEN not in json.dumps(report.as_dict())
    assert TOKEN not in repr(report)


CTRL_C_SCRIPT = """
import sys
import importer
try:
    importer.run(sys.argv[1], mapping=sys.argv[2], endpoint=sys.argv[3], state=sys.argv[4],
                 concurrency=4, workers=1)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(42)
print("finished", flush=True)
"""


@pytest.mark.long(seconds=16)
def test_ctrl_c_drains_raises_keyboard_interrupt_and_a_rerun_sends_the_rest(
    tmp_path: Path,
) -> None:
    events = write_events(tmp_path / "events.csv", 2000)
    state = tmp_path / "state"
    script = tmp_path / "call.py"
    script.write_text(textwrap.dedent(CTRL_C_SCRIPT), encoding="utf-8")
    env = {**os.environ, "VERO_AUTH_TOKEN": TOKEN}
    with mock_server(tmp_path, "--rate-slow", "1", "--slow", "0.02") as mock:
        args = [sys.executable, str(script), str(events), str(TRACK), mock.url, str(state)]
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        wait_for_received(mock, 200, process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 42, err
        assert out.strip() == "KeyboardInterrupt"
        first = sum(mock.check_ids().values())
        assert first < 2000
        done = subprocess.run(
            args, capture_output=True, text=True, env=env, timeout=DEADLINE_S, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "finished"
        ids = mock.check_ids()
    assert len(ids) == 2000
    assert sum(ids.values()) == 2000  # the rerun sent only the rest


def test_an_interrupt_reaching_a_caller_in_a_running_loop_drains(tmp_path: Path) -> None:
    """In a notebook the interrupt reaches the waiting caller, not the run's own thread: the
    run drains and saves, then the caller gets KeyboardInterrupt; the rerun sends the rest."""
    events = write_events(tmp_path / "events.csv", 2000)
    state = tmp_path / "state"
    env_token = {"VERO_AUTH_TOKEN": TOKEN}
    with mock_server(tmp_path, "--rate-slow", "1", "--slow", "0.02") as mock:
        interrupted: list[BaseException] = []

        def on_progress(event: importer.ProgressEvent) -> None:
            # The first acknowledged row: the waiting caller is interrupted, as a kernel does.
            if event.kind == "result" and event.rows_done == 50 and not interrupted:
                interrupted.append(KeyboardInterrupt())
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        async def cell() -> None:
            importer.run(
                events,
                mapping=TRACK,
                endpoint=mock.url,
                state=state,
                concurrency=4,
                progress=on_progress,
            )

        os.environ.update(env_token)
        try:
            # A kernel's loop, not asyncio.run's: that one would turn the interrupt into a
            # cancellation of the cell, where a kernel raises KeyboardInterrupt in it.
            loop = asyncio.new_event_loop()
            try:
                with pytest.raises(KeyboardInterrupt) as raised:
                    loop.run_until_complete(cell())
            finally:
                loop.close()
            assert not isinstance(raised.value, Abandoned)
            first = sum(mock.check_ids().values())
            assert 50 <= first < 2000
            again = importer.run(events, mapping=TRACK, endpoint=mock.url, state=state)
            assert again.rows_sent == 2000 - first
        finally:
            del os.environ["VERO_AUTH_TOKEN"]
        ids = mock.check_ids()
    assert sum(ids.values()) == len(ids) == 2000


def _doc_examples() -> list[str]:
    """The Python blocks of the README and docs/python-api.md that run here: those against the
    embedded mock."""
    blocks = []
    for page in (ROOT / "README.md", ROOT / "docs" / "python-api.md"):
        text = page.read_text(encoding="utf-8")
        blocks += re.findall(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    return [block for block in blocks if 'endpoint="embedded"' in block]


def test_the_docs_show_runnable_examples() -> None:
    assert len(_doc_examples()) >= 3  # the README's, the page's first and the notebook cell


@pytest.mark.parametrize("example", _doc_examples(), ids=lambda text: text.splitlines()[-1][:40])
def test_every_example_against_the_mock_runs_as_written(
    tmp_path: Path, example: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder in ("samples", "schemas"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(example, "docs/python-api.md", "exec"), scope)
    report = scope["report"]
    assert isinstance(report, importer.Report)
    # The samples have bad rows on purpose: some are rejected, every valid one is delivered.
    assert report.rows_sent == report.rows_valid > 0
    assert report.exit_code == 3


def test_a_damaged_job_record_reaches_the_callback_as_a_notice(tmp_path: Path) -> None:
    state = tmp_path / "state"
    job = SAMPLES / "migration.toml"
    importer.run(job, endpoint="embedded", state=state)
    (state / "job.json").write_text("{not json", encoding="utf-8")
    seen: list[importer.ProgressEvent] = []
    again = importer.run(job, endpoint="embedded", state=state, progress=seen.append)
    notices = [e.message for e in seen if e.kind == "notice"]
    assert any(m is not None and "job.json cannot be read" in m for m in notices), notices
    assert again.rows_sent == 0  # each step's checkpoint still knows its rows


def test_a_run_puts_back_the_signal_handlers_it_found(tmp_path: Path) -> None:
    """A scheduler's task runner keeps its own SIGTERM handler across a run in its main thread."""

    def host_handler(signum: int, frame: object) -> None:
        raise AssertionError("not called")

    before = signal.signal(signal.SIGTERM, host_handler)
    try:
        importer.run(_events(tmp_path), mapping=TRACK, endpoint="embedded", state=tmp_path / "s")
        assert signal.getsignal(signal.SIGTERM) is host_handler
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, before)
