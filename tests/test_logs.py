"""For schedulers and log collectors: --log-format json events, the exit codes they carry, the
report's JSON Schema, and the README's cron and Airflow recipes."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import re
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from pipeline_helpers import ROOT, doc_text

from importer.api import engine, runner
from importer.cli import progress as progress_view
from importer.cli import shell
from importer.cli.app import main
from importer.cli.events import DeliveryEvents, EventLog, ReadEvents, shown_endpoint
from importer.delivery.deliver import DeliveryControl
from importer.errors import TokenRefusedError
from importer.outcome import Summary

SAMPLES = ROOT / "samples"
SCHEMAS = ROOT / "schemas"
TRACK = str(SCHEMAS / "vero-track.toml")
EVENTS_CSV = str(SAMPLES / "events.csv")
REPORT_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((SCHEMAS / "report.schema.json").read_text())
)
README = doc_text("shards-and-schedulers.md")
CONTRACT = (
    "rows_read",
    "rows_valid",
    "rows_rejected",
    "rows_sent",
    "rows_skipped",
    "rows_failed",
    "requests",
    "retries",
    "elapsed_s",
)
TOKEN = "tok-4f9c1e7a-never-shown"


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def events_of(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line as a JSON object: a line that is not one fails the test."""
    return [json.loads(line) for line in stderr.splitlines()]


def _clean_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ok.csv"
    path.write_text(
        "user_id,email,event,occurred_at\n"
        "u1,a@example.com,Login,2023-05-30T10:00:00Z\n"
        "u2,b@example.com,Login,2023-05-30T11:00:00Z\n"
    )
    return path


# ------------------------------------------------------------------------------ the writer


def test_an_event_is_one_json_line_with_ts_and_event() -> None:
    stream = io.StringIO()
    log = EventLog(stream)
    log.emit("note", message="two\nlines", path=Path("a b.csv"))
    [line] = stream.getvalue().splitlines()
    event = json.loads(line)
    assert list(event)[:2] == ["ts", "event"]
    assert event["event"] == "note"
    assert event["message"] == "two\nlines"
    assert event["path"] == "a b.csv"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["ts"])
    assert datetime.fromisoformat(event["ts"]).utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_the_summary_writes_warnings_and_notes_first() -> None:
    stream = io.StringIO()
    summary = Summary(rows_read=2, warnings=["w1"], notes=["n1"])
    EventLog(stream).summary(summary.as_report(), exit_code=0)
    events = events_of(stream.getvalue())
    assert [(e["event"], e.get("message")) for e in events] == [
        ("warning", "w1"),
        ("note", "n1"),
        ("summary", None),
    ]
    assert events[-1]["rows_read"] == 2
    assert events[-1]["exit_code"] == 0


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        pytest.param(
            "https://u:secret@api.example.com/v2?auth_token=x#f",
            "https://api.example.com/v2",
            id="secrets",
        ),
        pytest.param("embedded", "embedded", id="embedded"),
        pytest.param(None, None, id="none"),
    ],
)
def test_the_endpoint_is_shown_without_what_may_hide_a_secret(
    endpoint: str | None, shown: str | None
) -> None:
    assert shown_endpoint(endpoint) == shown


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_delivery_progress_is_written_when_due_and_counts_rows() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = DeliveryEvents(EventLog(stream), every=10.0, retry_every=10.0, clock=clock)
    progress.begin(5)
    progress.result(delivered=True, retries=2)
    progress.skip(1)
    clock.now += 4.0
    progress.result(delivered=False, retries=0)
    progress.tick()
    assert stream.getvalue() == ""  # not due yet
    clock.now += 6.0
    progress.tick()  # due with no new row: a stalled run still reports
    [event] = events_of(stream.getvalue())
    assert event["event"] == "progress"
    assert {k: event[k] for k in ("rows_done", "rows_sent", "rows_failed", "rows_skipped")} == {
        "rows_done": 2,
        "rows_sent": 1,
        "rows_failed": 1,
        "rows_skipped": 1,
    }
    assert (event["total"], event["retries"], event["rows_per_s"]) == (5, 2, 0.2)


def test_retries_are_written_at_most_once_per_interval_with_the_rest_counted() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = DeliveryEvents(EventLog(stream), every=10.0, retry_every=10.0, clock=clock)
    for step in (0.0, 1.0, 2.0, 10.0, 0.5):
        clock.now += step
        progress.retry(f"e.csv, line {int(clock.now)}: HTTP 503")
    assert [
        (e["event"], e["message"], e["more_since_last"]) for e in events_of(stream.getvalue())
    ] == [
        ("retry", "e.csv, line 100: HTTP 503", 0),
        ("retry", "e.csv, line 113: HTTP 503", 2),
    ]


def test_read_progress_is_written_when_due() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = ReadEvents(EventLog(stream), every=5.0, clock=clock)
    progress.begin("a.csv", 300)
    progress.advance(100)
    clock.now += 5.0
    progress.advance(100)
    [event] = events_of(stream.getvalue())
    assert (event["stage"], event["file"], event["rows_done"], event["file_total"]) == (
        "read",
        "a.csv",
        200,
        300,
    )


def test_the_delivery_loop_ticks_progress_while_no_row_ends() -> None:
    """A delivery that waits (a slow API, a background job) still writes progress on time."""
    stream = io.StringIO()
    progress = progress_view.EventDelivery(EventLog(stream), every=0.01, retry_every=10.0)

    async def waiting(control: DeliveryControl) -> Summary:
        deadline = asyncio.get_running_loop().time() + 10.0
        while '"progress"' not in stream.getvalue():
            assert asyncio.get_running_loop().time() < deadline, "no progress event"
            await asyncio.sleep(0.005)
        return Summary()

    shell.deliver_with_signals(waiting, progress)
    assert events_of(stream.getvalue())[0]["event"] == "progress"


# ------------------------------------------------------------------------------ commands


def test_a_run_writes_start_progress_and_summary_and_never_the_token(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code, out, err = invoke(
        "run", EVENTS_CSV, "--mapping", TRACK, "--endpoint", "embedded",
        "--state", str(tmp_path / "state"), "--report", str(report),
        "--log-format", "json", "--progress-every", "0",
        env={"VERO_AUTH_TOKEN": TOKEN},
    )  # fmt: skip
    assert code == 3
    assert TOKEN not in err + out + report.read_text()
    assert "rows read" in out  # stdout keeps the human summary
    events = events_of(err)
    start, summary = events[0], events[-1]
    assert start["event"] == "start"
    assert {k: start[k] for k in ("command", "inputs", "mapping", "destination", "endpoint")} == {
        "command": "run",
        "inputs": [EVENTS_CSV],
        "mapping": TRACK,
        "destination": "vero",
        "endpoint": "embedded",
    }
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["rows_sent"] == 395
    assert summary["event"] == "summary"
    assert summary["exit_code"] == 3
    written = json.loads(report.read_text())
    assert {k: v for k, v in summary.items() if k not in ("ts", "event", "exit_code")} == {
        **written,
        "elapsed_s": summary["elapsed_s"],
    }


def test_quiet_leaves_stdout_empty_and_the_events_on_stderr(tmp_path: Path) -> None:
    code, out, err = invoke(
        "validate", str(_clean_csv(tmp_path)), "--mapping", TRACK, "--log-format", "json", "-q"
    )
    assert (code, out) == (0, "")
    assert [e["event"] for e in events_of(err)] == ["start", "summary"]


def test_a_job_file_writes_each_steps_start_and_end(tmp_path: Path) -> None:
    code, _, err = invoke(
        "run", str(SAMPLES / "migration.toml"), "--endpoint", "embedded",
        "--state", str(tmp_path / "state"), "--log-format", "json", "-q",
    )  # fmt: skip
    assert code == 3
    events = events_of(err)
    steps = [(e["step"], e["status"]) for e in events if e["event"] == "step"]
    assert steps == [
        ("users", "started"),
        ("users", "done"),
        ("tags", "started"),
        ("tags", "done"),
        ("unsubscribes", "started"),
        ("unsubscribes", "done"),
        ("events", "started"),
        ("events", "done"),
    ]
    assert [s["name"] for s in events[0]["steps"]] == [name for name, _ in steps[::2]]
    code, _, err = invoke(
        "run", str(SAMPLES / "migration.toml"), "--endpoint", "embedded",
        "--state", str(tmp_path / "state"), "--log-format", "json", "-q",
    )  # fmt: skip
    skipped = [(e["step"], e["status"]) for e in events_of(err) if e["event"] == "step"]
    assert skipped == [(name, "skipped (done before)") for name, _ in steps[::2]]


def test_validating_a_job_file_writes_step_events(tmp_path: Path) -> None:
    _, _, err = invoke("validate", str(SAMPLES / "migration.toml"), "--log-format", "json")
    steps = [(e["step"], e["status"]) for e in events_of(err) if e["event"] == "step"]
    assert steps[:2] == [("users", "started"), ("users", "done")]
    assert len(steps) == 8


# ------------------------------------------------------------------------------ exit codes


class _Stopped(DeliveryControl):
    """A control whose stop was asked for at once: the run drains and says interrupted."""

    def __init__(self) -> None:
        super().__init__()
        self.stop.set()


def _interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "DeliveryControl", _Stopped)


def _raise_interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("command", "setup", "code", "event"),
    [
        pytest.param(["run", "{clean}", "--endpoint", "embedded"], None, 0, "summary", id="run-0"),
        pytest.param(["run", "{missing}", "--endpoint", "embedded"], None, 1, "error", id="run-1"),
        pytest.param(["run", "{clean}", "--out", "x.jsonl"], None, 2, "error", id="run-2-body"),
        pytest.param(["run", "{clean}", "--since", "May"], None, 2, "error", id="run-2-parse"),
        pytest.param(["run", "{clean}", "--nope"], None, 2, "error", id="run-2-unknown"),
        pytest.param(["run", EVENTS_CSV, "--endpoint", "embedded"], None, 3, "summary", id="run-3"),
        pytest.param(
            ["run", "{clean}", "--endpoint", "embedded"], _interrupt, 130, "summary", id="run-130"
        ),
        pytest.param(["validate", "{clean}"], None, 0, "summary", id="validate-0"),
        pytest.param(["validate", "{missing}"], None, 1, "error", id="validate-1"),
        pytest.param(
            ["validate", "{clean}", "--since", "2024-02-01", "--until", "2024-01-01"],
            None,
            2,
            "error",
            id="validate-2",
        ),
        pytest.param(["validate", EVENTS_CSV], None, 3, "summary", id="validate-3"),
        pytest.param(
            ["validate", "{clean}"],
            lambda mp: mp.setattr(engine, "validate_inputs", _raise_interrupt),
            130,
            "error",
            id="validate-130",
        ),
    ],
)
def test_the_last_event_carries_the_exit_code(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    setup: Any,
    code: int,
    event: str,
) -> None:
    if setup is not None:
        setup(monkeypatch)
    monkeypatch.chdir(tmp_path)
    names = {"{clean}": str(_clean_csv(tmp_path)), "{missing}": str(tmp_path / "missing.csv")}
    args = [names.get(arg, arg) for arg in command]
    args += ["--mapping", TRACK, "--log-format", "json"]
    if args[0] == "run":
        args += ["--state", str(tmp_path / "state")]
    got, _, err = invoke(*args)
    assert got == code, err
    events = events_of(err)
    assert events[-1]["event"] == event
    assert events[-1]["exit_code"] == code
    if event == "error":
        assert events[-1]["message"]


def test_a_stopped_run_writes_the_summary_then_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run the API stops (a refused token): the summary and the error both say exit 1."""

    async def refused(*args: object, **kwargs: object) -> Summary:
        return Summary(rows_read=2, stop=TokenRefusedError("HTTP 401: the token was refused"))

    monkeypatch.setattr(engine, "send_inputs", refused)
    code, _, err = invoke(
        "run", str(_clean_csv(tmp_path)), "--mapping", TRACK, "--endpoint", "embedded",
        "--state", str(tmp_path / "state"), "--log-format", "json",
    )  # fmt: skip
    assert code == 1
    events = events_of(err)
    assert [e["event"] for e in events[-2:]] == ["summary", "error"]
    assert events[-2]["exit_code"] == events[-1]["exit_code"] == 1
    assert events[-2]["stopped"] == events[-1]["message"] == "HTTP 401: the token was refused"


# ------------------------------------------------------------------------------ report schema


def _report(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    report = tmp_path / "report.json"
    code, _, err = invoke(*args, "--report", str(report), env=env)
    assert code in (0, 3, 130), err
    return json.loads(report.read_text())


def test_the_report_schema_is_a_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(REPORT_SCHEMA.schema)
    assert set(CONTRACT) <= set(REPORT_SCHEMA.schema["required"])


@pytest.mark.parametrize(
    "case",
    ["dry-run", "validate", "vero-run", "userpilot-import", "job-file", "shard", "interrupted"],
)
def test_every_kind_of_report_fits_the_schema(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = ["--state", str(tmp_path / "state")]
    embedded = ["--endpoint", "embedded", *state]
    if case == "dry-run":
        report = _report(tmp_path, "run", EVENTS_CSV, "--mapping", TRACK, "--dry-run")
    elif case == "validate":
        report = _report(tmp_path, "validate", EVENTS_CSV, "--mapping", TRACK)
    elif case == "vero-run":
        report = _report(tmp_path, "run", EVENTS_CSV, "--mapping", TRACK, *embedded)
        assert report["embedded_server"]["accepted"] == 395
    elif case == "userpilot-import":
        mapping = str(SCHEMAS / "userpilot-import-track.toml")
        events = str(SAMPLES / "userpilot-events.csv")
        report = _report(tmp_path, "run", events, "--mapping", mapping, *embedded,
                         "--poll-interval", "0.05")  # fmt: skip
        assert report["jobs"]
    elif case == "job-file":
        report = _report(tmp_path, "run", str(SAMPLES / "migration.toml"), *embedded)
        assert len(report["steps"]) == 4
    elif case == "shard":
        report = _report(tmp_path, "run", EVENTS_CSV, "--mapping", TRACK, "--shard", "1/3",
                         *embedded)  # fmt: skip
        assert report["shard"] == "1/3"
    else:
        _interrupt(monkeypatch)
        report = _report(tmp_path, "run", EVENTS_CSV, "--mapping", TRACK, *embedded)
        assert report["interrupted"] is True
    errors = [f"{list(e.path)}: {e.message}" for e in REPORT_SCHEMA.iter_errors(report)]
    assert errors == []


def test_the_schema_catches_a_contract_field_gone_or_mistyped() -> None:
    report = Summary().as_report()
    assert REPORT_SCHEMA.is_valid(report)
    for key in CONTRACT:
        assert not REPORT_SCHEMA.is_valid({k: v for k, v in report.items() if k != key}), key
        assert not REPORT_SCHEMA.is_valid({**report, key: "1"}), key


def test_every_report_field_is_described_in_the_schema(tmp_path: Path) -> None:
    """A field added to the report is added to the schema, where it is documented as stable."""
    described = set(REPORT_SCHEMA.schema["properties"])
    report = _report(tmp_path, "run", str(SAMPLES / "migration.toml"), "--dry-run")
    assert set(report) <= described, set(report) - described
    for step in report["steps"]:
        assert set(step) <= described | {"name", "mapping", "status", "reason"}


# ------------------------------------------------------------------------------ the recipes


def _options(args: list[str]) -> set[str]:
    return {arg.partition("=")[0] for arg in args if arg.startswith("--")}


def _run_help_options() -> set[str]:
    code, out, _ = invoke("run", "--help")
    assert code == 0
    return set(re.findall(r"(--[a-z][a-z-]+)", out))


def _importer_args(words: list[str]) -> list[str]:
    """The words of the `importer run` call among a shell command's words, to its end."""
    start = next(
        i
        for i, word in enumerate(words[:-1])
        if word.endswith("importer") and words[i + 1] == "run"
    )
    end = next(
        (i for i, word in enumerate(words[start:], start) if word in (";", "&&", "||", "|")),
        len(words),
    )
    return [w for w in words[start + 2 : end] if not re.match(r"^\d*>", w)]


def test_the_crontab_line_uses_flock_json_logs_and_checks_the_exit_code() -> None:
    [line] = [
        line
        for line in README.splitlines()
        if re.match(r"^[\d*]+ [\d*]+ .*importer run", line) and "--log-format" in line
    ]
    schedule, command = line.split(maxsplit=5)[:5], line.split(maxsplit=5)[5]
    assert len(schedule) == 5
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    assert "flock" in words
    args = _importer_args(words)
    options = _options(args)
    assert {"--log-format", "--report", "--state", "--mapping"} <= options
    assert args[args.index("--log-format") + 1] == "json"
    assert options <= _run_help_options(), options - _run_help_options()
    assert "$?" in command or "||" in words  # the exit code is looked at


def test_the_airflow_task_runs_importer_with_json_logs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
    [block] = [block for block in blocks if "--log-format" in block]
    tree = ast.parse(block)
    [call] = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "BashOperator"
    ]
    keywords = {k.arg: k.value for k in call.keywords}
    command = ast.literal_eval(keywords["bash_command"])
    args = _importer_args(shlex.split(command))
    options = _options(args)
    assert {"--log-format", "--report", "--state"} <= options
    assert args[args.index("--log-format") + 1] == "json"
    assert options <= _run_help_options(), options - _run_help_options()


def test_validate_writes_read_progress(tmp_path: Path) -> None:
    _, _, err = invoke(
        "validate", EVENTS_CSV, "--mapping", TRACK, "--log-format", "json", "--progress-every", "0"
    )
    progress = [e for e in events_of(err) if e["event"] == "progress"]
    assert progress[-1]["stage"] == "read"
    assert progress[-1]["rows_done"] == 401


def test_the_environment_can_ask_for_json_events() -> None:
    code, _, err = invoke(
        "validate", EVENTS_CSV, "--mapping", TRACK, "--quiet", env={"IMPORTER_LOG_FORMAT": "json"}
    )
    assert code == 3  # the sample holds bad rows on purpose
    assert events_of(err)[0]["event"] == "start"


def test_the_start_event_names_a_cloud_input_by_its_whole_url() -> None:
    pytest.importorskip("boto3", reason="boto3 is in the test extras")
    # No store answers on this port: the run ends in an error after the start event.
    aws = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_PROFILE": "",
    }
    code, _, err = invoke(
        "validate", "s3://bucket/exports/a.csv", "--mapping", TRACK, "--log-format", "json",
        env=aws,
    )  # fmt: skip
    assert code == 1
    start, error = events_of(err)
    assert start["inputs"] == ["s3://bucket/exports/a.csv"]
    assert error["message"].startswith("s3://bucket/exports/a.csv: ")


def test_progress_tells_done_before_from_rejected() -> None:
    """Issue 19: `rows_skipped` means done before everywhere; rejected rows have their own
    field in the progress event."""
    stream, clock = io.StringIO(), Clock()
    progress = DeliveryEvents(EventLog(stream), every=10.0, retry_every=10.0, clock=clock)
    progress.begin(10)
    progress.skip(2, rejected=3, blank=1)
    clock.now += 11.0
    progress.tick()
    [event] = events_of(stream.getvalue())
    assert (event["rows_skipped"], event["rows_rejected"]) == (2, 3)


def test_the_bar_counts_what_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    bar = progress_view.BarDelivery(enabled=True)
    bar.begin(10)
    for _ in range(6):
        bar.result(delivered=True, retries=0)
    bar.skip(1, rejected=3)
    drawn = bar._bar
    assert drawn is not None
    assert (drawn.n, drawn.total) == (6, 6)
    bar.end()
