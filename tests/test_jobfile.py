"""Job files: a whole migration in one command (issue 12, item 1). Parsing and order are checked
in process; running, resuming after kill -9 and stopping dependents run against a real mock."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pipeline_helpers import ROOT, doc_text, mock_server_process

from importer.cli.app import main
from importer.destinations.vero.api import VERO
from importer.errors import MappingError
from importer.jobfile.parse import JobFile, load_job
from importer.jobfile.steps import per_step

SCHEMAS = ROOT / "schemas"
TOKEN = "job-test-token"
DEADLINE_S = 60.0
README = doc_text("job-files.md")


def write_job(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> Path:
    """A job file in `tmp_path` (`{schemas}` is the presets' folder) with its input files."""
    for name, content in (files or {"users.csv": "user_id\nu1\n"}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content, encoding="utf-8")
    path = tmp_path / "job.toml"
    path.write_text(text.replace("{schemas}", str(SCHEMAS)), encoding="utf-8")
    return path


def step(name: str, mapping: str, inputs: str = '["users.csv"]', extra: str = "") -> str:
    """A [[step]]; `mapping` is a preset's name, or a file beside the job ending in .toml."""
    path = mapping if mapping.endswith(".toml") else f"{{schemas}}/{mapping}.toml"
    return f'[[step]]\nname = "{name}"\ninputs = {inputs}\nmapping = "{path}"\n{extra}\n'


# The identify preset also types columns the test files leave out.
IDENTIFY = 'destination = "vero"\naction = "identify"\n[fields]\nid = "user_id"\nemail = "email"\n'


def problems_of(path: Path) -> str:
    with pytest.raises(MappingError) as caught:
        load_job(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "colour = 1\n" + step("a", "vero-identify"), "unknown key 'colour'", id="top-key"
        ),
        pytest.param(
            "[job]\nspeed = 2\n" + step("a", "vero-identify"), "unknown key job.speed", id="job-key"
        ),
        pytest.param(
            '[job]\norder = "fast"\n' + step("a", "vero-identify"),
            "job.order = 'fast' is not one of: 'auto', 'file'",
            id="order",
        ),
        pytest.param(
            step("a", "vero-identify", extra="colour = 1"),
            "step 'a': unknown key 'colour'",
            id="step-key",
        ),
        pytest.param(step("a b", "vero-identify"), "step 'a b': 'name' is required", id="bad-name"),
        pytest.param(
            step("a", "vero-identify") + step("a", "vero-tags"),
            "step 'a': the name is used by an earlier step too",
            id="duplicate-name",
        ),
        pytest.param(
            step("a", "vero-identify", '["gone.csv"]'),
            "step 'a': inputs[0] = 'gone.csv':",
            id="missing-input",
        ),
        pytest.param(
            step("a", "vero-identify", '["nights/*.csv"]'),
            "step 'a': inputs[0] = 'nights/*.csv' matches no file",
            id="empty-glob",
        ),
        pytest.param(step("a", "vero-nothing"), "step 'a': mapping file ", id="missing-mapping"),
        pytest.param(
            step("a", "vero-identify", extra='after = ["b"]'),
            "step 'a': after names 'b', which is not a step of this job",
            id="unknown-after",
        ),
        pytest.param(
            step("a", "vero-identify", extra='after = ["a"]'),
            "step 'a': after names the step itself",
            id="after-itself",
        ),
        pytest.param(
            step("users", "vero-identify", extra='after = ["events"]')
            + step("events", "vero-track"),
            "after makes a cycle: 'events' -> 'users' -> 'events'",
            id="cycle-through-stages",
        ),
        pytest.param(
            '[job]\norder = "file"\n'
            + step("a", "vero-identify", extra='after = ["b"]')
            + step("b", "vero-tags"),
            "step 'a': after names 'b', which is listed later",
            id="file-order-after-later",
        ),
        pytest.param(
            step("a", "vero-identify") + step("b", "userpilot-identify"),
            "more than one destination (userpilot: b; vero: a)",
            id="mixed-destinations",
        ),
        pytest.param("[job]\n", "no [[step]]", id="no-steps"),
    ],
)
def test_each_problem_names_the_job_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write_job(tmp_path, text)
    found = problems_of(path)
    assert found.startswith(f"job file {path} has "), found
    assert message in found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write_job(
        tmp_path,
        "colour = 1\n"
        + step("a", "vero-identify", '["gone.csv"]')
        + step("b", "vero-nothing", extra='after = ["c"]'),
    )
    found = problems_of(path)
    assert "has 4 problem(s)" in found, found
    for part in ("unknown key 'colour'", "inputs[0] = 'gone.csv'", "step 'b': mapping file"):
        assert part in found


def names(job: JobFile) -> list[str]:
    return [s.name for s in job.steps]


def test_auto_order_goes_by_stage_and_keeps_the_file_order_within_one(tmp_path: Path) -> None:
    text = "".join(
        step(name, mapping)
        for name, mapping in [
            ("delete", "vero-delete"),
            ("events", "vero-track"),
            ("alias", "vero-alias"),
            ("unsub", "vero-unsubscribe"),
            ("users", "vero-identify"),
            ("tags", "vero-tags"),
        ]
    )
    job = load_job(write_job(tmp_path, text))
    assert names(job) == ["users", "unsub", "tags", "events", "alias", "delete"]
    by_name = {s.name: s for s in job.steps}
    assert by_name["events"].after == ("users", "unsub", "tags")
    assert by_name["tags"].after == ("users",)
    assert job.dependents("users") == ["unsub", "tags", "events", "alias", "delete"]
    assert job.dependents("tags") == ["events", "alias", "delete"]


def test_after_moves_a_step_behind_another_of_its_stage(tmp_path: Path) -> None:
    text = step("tags", "vero-tags", extra='after = ["unsub"]') + step("unsub", "vero-unsubscribe")
    job = load_job(write_job(tmp_path, text))
    assert names(job) == ["unsub", "tags"]
    assert job.dependents("unsub") == ["tags"]


def test_file_order_runs_as_listed_and_waits_only_for_after(tmp_path: Path) -> None:
    text = (
        '[job]\norder = "file"\n'
        + step("events", "vero-track")
        + step("users", "vero-identify")
        + step("tags", "vero-tags", extra='after = ["events"]')
    )
    job = load_job(write_job(tmp_path, text))
    assert names(job) == ["events", "users", "tags"]
    assert job.dependents("events") == ["tags"]
    assert job.dependents("users") == []


def test_globs_are_sorted_and_relative_to_the_job_file(tmp_path: Path) -> None:
    files = {f"nights/{name}": "user_id\nu1\n" for name in ("b.csv", "a.csv", "c.jsonl", "10.csv")}
    job = load_job(write_job(tmp_path, step("a", "vero-identify", '["nights/*.csv"]'), files))
    assert [p.name for p in job.steps[0].inputs] == ["10.csv", "a.csv", "b.csv"]
    assert all(p.parent == tmp_path / "nights" for p in job.steps[0].inputs)


def test_an_output_named_once_gets_one_file_per_step() -> None:
    assert per_step(Path("out/dead.jsonl"), "users") == Path("out/dead.users.jsonl")
    assert per_step(Path("rejects.csv"), "events") == Path("rejects.events.csv")
    assert per_step(None, "events") is None


def invoke(*args: str | Path) -> Result:
    env = {VERO.token_env: TOKEN}
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("--mapping", SCHEMAS / "vero-track.toml"), "leave out --mapping", id="mapping"
        ),
        pytest.param((ROOT / "samples" / "events.csv",), "give it alone", id="with-inputs"),
    ],
)
def test_a_job_file_with_a_mapping_or_inputs_is_a_usage_error(
    args: tuple[str | Path, ...], message: str
) -> None:
    for command in ("run", "validate"):
        done = invoke(command, ROOT / "samples" / "migration.toml", *args)
        assert done.exit_code == 2, done.output
        assert message in done.stderr


def readme_job_command() -> list[str]:
    [line] = [line for line in README.splitlines() if "samples/migration.toml --endpoint" in line]
    assert "&&" not in line
    return shlex.split(line)


def copy_samples(tmp_path: Path) -> None:
    for folder in ("samples", "schemas"):
        shutil.copytree(ROOT / folder, tmp_path / folder)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


SAMPLE_STEPS = {"users": 297, "tags": 98, "unsubscribes": 43, "events": 395}


def test_the_readme_job_runs_every_step_in_order_and_resumes_by_skipping(tmp_path: Path) -> None:
    args = readme_job_command()
    assert args[0] == ".venv/bin/importer"
    copy_samples(tmp_path)
    command = [sys.executable, "-m", "importer", *args[1:], "--report", "report.json"]
    first = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert first.returncode == 3, first.stderr  # the samples hold rejected rows
    report = json.loads((tmp_path / "report.json").read_text())
    assert [(s["name"], s["status"]) for s in report["steps"]] == [
        (name, "done") for name in SAMPLE_STEPS
    ]
    assert report["rows_sent"] == sum(SAMPLE_STEPS.values())
    state = tmp_path / args[args.index("--state") + 1]
    for name, rows in SAMPLE_STEPS.items():
        received = read_jsonl(state / "steps" / name / "embedded-received.jsonl")
        assert len(received) == rows, name
        assert {r["_path"] for r in received} == {
            {"users": "users/track", "tags": "users/tags/edit"}.get(
                name, {"unsubscribes": "users/unsubscribe", "events": "events/track"}.get(name)
            )
        }
    # The steps finished in stage order: each was noted done before the next one began.
    record = json.loads((state / "job.json").read_text())
    assert [s["name"] for s in record["steps"]] == list(SAMPLE_STEPS)
    finished = [s["updated_at"] for s in record["steps"]]
    assert finished == sorted(finished)

    again = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 3, again.stderr  # the rejects of the first run still count
    report = json.loads((tmp_path / "report.json").read_text())
    assert {s["status"] for s in report["steps"]} == {"skipped (done before)"}
    assert report["rows_read"] == 0
    for name, rows in SAMPLE_STEPS.items():
        assert len(read_jsonl(state / "steps" / name / "embedded-received.jsonl")) == rows

    shown = invoke("status", "--state", state)
    assert shown.exit_code == 0, shown.output
    assert "job file: samples/migration.toml" in shown.stdout
    assert "step events (schemas/vero-track.toml): done" in shown.stdout
    assert "samples/events.csv: 395 delivered, 0 failed" in shown.stdout
    status = json.loads(invoke("status", "--state", state, "--json").stdout)
    assert [(s["name"], s["status"]) for s in status["steps"]] == [
        (name, "done") for name in SAMPLE_STEPS
    ]
    [events] = status["steps"][-1]["checkpoint"]["inputs"]
    assert events["delivered"] == 395


def test_validate_and_dry_run_check_every_step(tmp_path: Path) -> None:
    job = ROOT / "samples" / "migration.toml"
    checked = invoke("validate", job, "--report", tmp_path / "r.json")
    assert checked.exit_code == 3, checked.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert [s["rows_valid"] for s in report["steps"]] == list(SAMPLE_STEPS.values())
    dry = invoke("run", job, "--dry-run", "--out", tmp_path / "out.jsonl")
    assert dry.exit_code == 3, dry.output
    for name, rows in SAMPLE_STEPS.items():
        assert len(read_jsonl(tmp_path / f"out.{name}.jsonl")) == rows


@dataclass
class Mock:
    url: str
    record: Path

    def stats(self) -> dict[str, Any]:
        parts = urllib.parse.urlsplit(self.url)  # the url ends in the API's base path
        stats = f"{parts.scheme}://{parts.netloc}/_mock/stats"
        with urllib.request.urlopen(stats, timeout=DEADLINE_S) as answer:
            return json.loads(answer.read())


@contextmanager
def vero_mock(tmp_path: Path, *options: str) -> Iterator[Mock]:
    """`importer mock-server` (Vero) in its own process, ended when the test ends."""
    record = tmp_path / "received.jsonl"
    with mock_server_process("--record", str(record), *options, env={VERO.token_env: TOKEN}) as url:
        yield Mock(url=url, record=record)


USERS, EVENTS = 30, 120


def two_step_job(tmp_path: Path) -> Path:
    """users (identify) then events (track), every row with its own id."""
    users = "user_id,email\n" + "".join(f"u{i},u{i}@example.com\n" for i in range(USERS))
    events = "user_id,email,event,occurred_at,row\n" + "".join(
        f"u{i % USERS},,viewed,2024-01-01T00:00:{i % 60:02d}Z,r{i}\n" for i in range(EVENTS)
    )
    text = step("users", "identify.toml") + step("events", "vero-track", '["events.csv"]')
    files = {"users.csv": users, "events.csv": events, "identify.toml": IDENTIFY}
    return write_job(tmp_path, text, files)


@pytest.mark.long(seconds=7)
def test_a_job_killed_in_its_second_step_does_not_send_the_first_again(tmp_path: Path) -> None:
    job = two_step_job(tmp_path)
    state = tmp_path / "state"
    # Every answer waits 50 ms and two go at once: the events step takes about 3 s, far longer
    # than a kill takes to land.
    with vero_mock(tmp_path, "--rate-slow", "1", "--slow", "0.05") as mock:
        command = [
            sys.executable, "-m", "importer", "run", str(job), "--endpoint", mock.url,
            "--state", str(state), "--concurrency", "2",
        ]  # fmt: skip
        env = {**os.environ, VERO.token_env: TOKEN}
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        try:
            deadline = time.monotonic() + DEADLINE_S
            while mock.stats()["accepted"] < USERS + 5:  # the events step has begun
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the events step never began"
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=DEADLINE_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == -signal.SIGKILL
        record = json.loads((state / "job.json").read_text())
        assert [(s["name"], s["status"]) for s in record["steps"]] == [
            ("users", "done"),
            ("events", "not finished"),
        ]
        rerun = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=DEADLINE_S, check=False
        )
        assert rerun.returncode == 0, rerun.stderr
        assert "step 1/2 users: skipped (done before)" in rerun.stdout
        received = read_jsonl(mock.record)
    users = Counter(r["id"] for r in received if r["_path"] == "users/track")
    events = Counter(r["data"]["row"] for r in received if r["_path"] == "events/track")
    assert len(users) == USERS
    assert max(users.values()) == 1
    assert len(events) == EVENTS


def test_a_step_whose_every_row_fails_stops_the_steps_that_wait_for_it(tmp_path: Path) -> None:
    users = "user_id,email\n" + "".join(f"u{i},u{i}@example.com\n" for i in range(3))
    text = (
        '[job]\norder = "file"\n'
        + step("users", "identify.toml")
        + step("events", "vero-track", '["events.csv"]', 'after = ["users"]')
        + step("unsub", "vero-unsubscribe")
    )
    events = "user_id,email,event,occurred_at\nu1,,viewed,2024-01-01T00:00:00Z\n"
    files = {"users.csv": users, "events.csv": events, "identify.toml": IDENTIFY}
    job = write_job(tmp_path, text, files)
    state, report = tmp_path / "state", tmp_path / "report.json"
    with vero_mock(tmp_path, "--status-script", "400,400,400") as mock:
        args = ("run", job, "--endpoint", mock.url, "--state", state, "--concurrency", "1")
        done = invoke(*args, "--report", report)
        received = read_jsonl(mock.record)
        # A rerun (a scheduler's retry) sends nothing of the failed step: it stays failed, and
        # what waits for it still does not run.
        again = invoke(*args, "--report", tmp_path / "again.json")
        assert again.exit_code == 3, again.output
        steps_again = json.loads((tmp_path / "again.json").read_text())["steps"]
        assert [s["status"] for s in steps_again][:2] == ["failed", "not run"]
        assert read_jsonl(mock.record) == received
        status_before = invoke("status", "--state", state).stdout
        # Once its dead letters were dealt with, --past-failed lets the waiting steps go.
        past = invoke(*args, "--past-failed")
        assert "users/track" not in [r["_path"] for r in read_jsonl(mock.record)]
        assert "events/track" in [r["_path"] for r in read_jsonl(mock.record)], past.output
    assert done.exit_code == 3, done.output
    assert (
        "stopped early: step users: every row failed to deliver, so step(s) events that depend "
        "on it were not run" in done.stdout
    )
    result = json.loads(report.read_text())
    assert [(s["name"], s["status"]) for s in result["steps"]] == [
        ("users", "failed"),
        ("events", "not run"),
        ("unsub", "done"),
    ]
    assert result["rows_failed"] == 3
    assert [r["_path"] for r in received] == ["users/unsubscribe"] * 3
    assert re.search(r"step events \(.*\): not run: it waits for 'users'", status_before)
    assert re.search(r"users.csv: 0 delivered, 3 failed", status_before)


def test_order_options_reach_each_step_as_far_as_its_action_allows(tmp_path: Path) -> None:
    """--per-user-order keeps every per-row step in order; --order time sorts the events step
    by its time and leaves the tags step, which has none, in file order."""
    from importer.api.settings import ordered
    from importer.delivery.options import DeliveryOptions
    from importer.destinations.userpilot.api import USERPILOT

    plain = DeliveryOptions(endpoint="embedded", token=None, state_dir=tmp_path)
    track = ordered(plain, VERO.actions["track"], per_user_order=True, order="time")
    assert track.send.per_user_order
    assert track.order_time == "extras.created_at"
    tags = ordered(plain, VERO.actions["tags"], per_user_order=True, order="time")
    assert tags.send.per_user_order
    assert tags.order_time is None
    bulk = ordered(plain, USERPILOT.actions["bulk_identify"], per_user_order=True, order="time")
    assert bulk == plain, "jobs keep no per-user order"
    assert ordered(plain, VERO.actions["track"], per_user_order=False, order="file") == plain


def test_the_sample_job_runs_in_order_per_user(tmp_path: Path) -> None:
    state = tmp_path / "state"
    report = tmp_path / "report.json"
    done = CliRunner().invoke(
        main,
        [
            "run", str(ROOT / "samples" / "migration.toml"), "--endpoint", "embedded",
            "--state", str(state), "--per-user-order", "--order", "time",
            "--report", str(report), "--quiet",
        ],
        catch_exceptions=False,
    )  # fmt: skip
    assert done.exit_code == 3, done.output  # the samples' bad rows
    steps = json.loads(report.read_text())["steps"]
    assert [step["status"] for step in steps] == ["done"] * 4


def test_each_shard_runs_the_sample_job_and_never_takes_another_shards_steps(
    tmp_path: Path,
) -> None:
    """Every step of the sample job (unsubscribes included) has a user to shard by; a step one
    shard finished is not 'done' for another shard in the same state directory."""
    job = ROOT / "samples" / "migration.toml"
    state = tmp_path / "state"
    report = tmp_path / "r.json"
    first = invoke("run", job, "--endpoint", "embedded", "--state", state, "--shard", "0/3",
                   "--report", report, "--quiet")  # fmt: skip
    assert first.exit_code == 3, first.output  # the samples' bad rows
    result = json.loads(report.read_text())
    assert [s["status"] for s in result["steps"]] == ["done"] * 4
    assert result["shard"] == "0/3"
    assert 0 < result["rows_sent"] < result["rows_other_shards"]
    other = invoke("run", job, "--endpoint", "embedded", "--state", state, "--shard", "1/3",
                   "--quiet")  # fmt: skip
    assert other.exit_code == 1
    assert (
        "belongs to another shard: it holds shard-0-of-3, this run is shard-1-of-3" in other.output
    )


def test_a_folder_as_a_steps_input_is_its_files_sorted(tmp_path: Path) -> None:
    users = "user_id,email\nu1,u1@example.com\n"
    files = {"nights/b.csv": users, "nights/a.csv": users, "nights/notes.txt": "x"}
    job = write_job(tmp_path, step("users", "vero-identify", '["nights"]'), files)
    [only] = load_job(job).steps
    assert [path.name for path in only.inputs] == ["a.csv", "b.csv"]


def test_a_renamed_step_sends_nothing_again_and_a_changed_mapping_names_its_step(
    tmp_path: Path,
) -> None:
    """Issue 23, point 2: what a step delivered is known by content and mapping, not by the
    step's name; when a finished step's mapping changes, the hint names that step, not --fresh."""
    job = two_step_job(tmp_path)
    state = tmp_path / "state"
    with vero_mock(tmp_path) as mock:
        args = ("run", job, "--endpoint", mock.url, "--state", state)
        assert invoke(*args).exit_code == 0
        assert len(read_jsonl(mock.record)) == USERS + EVENTS
        # renamed, and its input touched so that the job record alone cannot skip it
        job.write_text(job.read_text().replace('name = "events"', 'name = "all-events"'))
        (tmp_path / "events.csv").touch()
        (tmp_path / "users.csv").write_text(
            (tmp_path / "users.csv").read_text() + "u99,u99@example.com\n"
        )
        again = invoke(*args)
        assert again.exit_code == 0, again.output
        assert "was called 'events' when its rows were sent" in again.output
        received = read_jsonl(mock.record)
        assert len(received) == USERS + EVENTS + 1, "a renamed step sent its rows again"
        assert received[-1]["id"] == "u99"

        (tmp_path / "identify.toml").write_text(IDENTIFY + '"data.name" = "email"\n')
        changed = invoke(*args)
        assert changed.exit_code == 1, changed.output
        assert "belongs to another job: its mapping changed since" in changed.stderr
        assert f"mv {state / 'steps' / 'users'} " in changed.stderr
        assert len(read_jsonl(mock.record)) == USERS + EVENTS + 1


def test_a_damaged_job_record_is_a_warning_and_every_step_runs_again(tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        step("users", "identify.toml"),
        {"identify.toml": IDENTIFY, "users.csv": "user_id,email\nu1,a@example.com\n"},
    )
    state = tmp_path / "state"
    first = invoke("run", job, "--endpoint", "embedded", "--state", state)
    assert first.exit_code == 0, first.output
    (state / "job.json").write_text("{not json", encoding="utf-8")
    again = invoke("run", job, "--endpoint", "embedded", "--state", state)
    assert again.exit_code == 0, again.output
    assert (
        f"warning: {state / 'job.json'} cannot be read (JSONDecodeError): every step runs "
        "again, each sending only what its checkpoint has not" in again.stderr
    )
    assert "skipped (done before)" in again.output  # the step's checkpoint: 1 row done before


def test_a_changed_input_of_a_step_is_left_out_unless_resend_changed(tmp_path: Path) -> None:
    """A step admits its inputs as `importer run` does: a file at a known path whose sent rows
    were edited is left out (exit 3), and --resend-changed sends it whole, in a job file too."""
    job = two_step_job(tmp_path)
    state = tmp_path / "state"
    with vero_mock(tmp_path) as mock:
        args = ("run", job, "--endpoint", mock.url, "--state", state)
        assert invoke(*args).exit_code == 0
        users = tmp_path / "users.csv"
        users.write_text(users.read_text().replace("u0@example.com", "u0@example.org"))
        left_out = invoke(*args)
        assert left_out.exit_code == 3, left_out.output
        assert f"{users} changed since" in left_out.stderr + left_out.output
        assert len(read_jsonl(mock.record)) == USERS + EVENTS
        # not taken for done: the next run reads it again and says so again
        again = invoke(*args)
        assert again.exit_code == 3, again.output
        assert f"{users} changed since" in again.stderr + again.output
        resent = invoke(*args, "--resend-changed")
        assert resent.exit_code == 0, resent.output
        received = read_jsonl(mock.record)
        assert len(received) == 2 * USERS + EVENTS
        assert {"id": "u0", "email": "u0@example.org"}.items() <= received[-USERS].items()


def test_a_job_with_a_delete_step_needs_yes_before_any_step_sends(tmp_path: Path) -> None:
    """Asked once, up front: without --yes not even the steps before the deletion run."""
    text = step("users", "identify.toml") + step("delete", "vero-delete", '["gone.csv"]')
    files = {
        "users.csv": "user_id,email\nu1,u1@example.com\nu2,u2@example.com\n",
        "gone.csv": "user_id\nu2\n",
        "identify.toml": IDENTIFY,
    }
    job = write_job(tmp_path, text, files)
    state = tmp_path / "state"
    with vero_mock(tmp_path) as mock:
        args = ("run", job, "--endpoint", mock.url, "--state", state)
        refused = invoke(*args)
        assert refused.exit_code == 2, refused.output
        assert "cannot be undone: add --yes" in refused.stderr
        assert not mock.record.exists() or read_jsonl(mock.record) == []
        done = invoke(*args, "--yes")
        assert done.exit_code == 0, done.output
        received = read_jsonl(mock.record)
    assert [body.get("id") for body in received] == ["u1", "u2", "u2"]
    assert received[-1]["_path"].endswith("delete")
