"""The command line: exit codes of the contract, exact messages, and files it writes."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pipeline_helpers import ROOT

from importer.cli import progress
from importer.cli.app import main
from importer.cli.progress import BarDelivery

TRACK = str(ROOT / "schemas" / "vero-track.toml")
IDENTIFY = str(ROOT / "schemas" / "vero-identify.toml")
EVENTS_CSV = str(ROOT / "samples" / "events.csv")
EVENTS_JSONL = str(ROOT / "samples" / "events.jsonl")
USERS_CSV = str(ROOT / "samples" / "users.csv")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_validate_samples_reports_rejects_and_exits_3(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code, out, err = invoke(
        "validate", EVENTS_CSV, EVENTS_JSONL, "--schema", TRACK, "--report", str(report)
    )
    assert code == 3, err
    assert "rejected by rule:" in out
    assert "samples/events.csv, line 6: 2023-02-30T10:00:00Z is not a calendar date" in out
    data = json.loads(report.read_text())
    for key in (
        "rows_read",
        "rows_valid",
        "rows_rejected",
        "rows_sent",
        "rows_skipped",
        "rows_failed",
        "requests",
        "retries",
        "elapsed_s",
    ):
        assert key in data
    assert data["rows_read"] == data["rows_valid"] + data["rows_rejected"] == 802


def test_validate_a_clean_file_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_text(
        "user_id,email,event,occurred_at\nu1,a@example.com,Login,2023-05-30T10:00:00Z\n"
    )
    code, out, _ = invoke("validate", str(path), "--schema", TRACK)
    assert code == 0
    assert re.search(r"rejected +0\n", out)


def test_rejects_csv_can_be_fixed_and_imported_again(tmp_path: Path) -> None:
    rejects = tmp_path / "rejects.csv"
    code, _, _ = invoke("validate", USERS_CSV, "--schema", IDENTIFY, "--rejects", str(rejects))
    assert code == 3
    with rejects.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["_line"] for row in rows] == ["11", "21", "31", "51"]
    assert list(rows[0])[:4] == ["_file", "_line", "_rule", "_error"]
    assert rows[0]["zip"].isdigit()
    assert len(rows[0]["zip"]) == 5
    for row in rows:
        row["user_id"] = row["user_id"][:20] or "fixed"
        row["email"] = "fixed@example.com"
    fixed = tmp_path / "fixed.csv"
    with fixed.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(row for row in rows if row["_rule"] != "csv_fields")
    out_path = tmp_path / "payloads.jsonl"
    code, _, err = invoke(
        "run", str(fixed), "--schema", IDENTIFY, "--dry-run", "--out", str(out_path)
    )
    assert code == 0, err
    bodies = [json.loads(line)["body"] for line in out_path.read_text().splitlines()]
    assert len(bodies) == 3
    assert not any(key.startswith("_") for body in bodies for key in body["data"])


@pytest.mark.parametrize("ending", [".csv", ".jsonl"])
def test_rejects_keep_every_column_even_where_every_cell_is_empty(
    tmp_path: Path, ending: str
) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,email,event,occurred_at,plan\nu1,,Buy,2999-01-01T00:00:00Z,\n")
    rejects = tmp_path / f"rejects{ending}"
    code, _, _ = invoke("validate", str(path), "--schema", TRACK, "--rejects", str(rejects))
    assert code == 3
    meta = ["_file", "_line", "_rule", "_error"]
    if ending == ".csv":
        text = rejects.read_text()
        assert text.splitlines()[0] == ",".join(
            [*meta, "user_id", "email", "event", "occurred_at", "plan"]
        )
        fixed = tmp_path / "fixed.csv"
        fixed.write_text(text.replace("2999", "2023"))
    else:
        [row] = [json.loads(line) for line in rejects.read_text().splitlines()]
        assert list(row) == [*meta, "user_id", "email", "event", "occurred_at", "plan"]
        assert row["email"] is None
        fixed = tmp_path / "fixed.jsonl"
        fixed.write_text(json.dumps({**row, "occurred_at": "2023-01-01T00:00:00Z"}) + "\n")
    code, _, err = invoke("validate", str(fixed), "--schema", TRACK)
    assert (code, err) == (0, "")


def test_dry_run_writes_payloads_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERO_AUTH_TOKEN", "s3cret-token-value")
    out_path = tmp_path / "payloads.jsonl"
    code, _out, _ = invoke(
        "run", EVENTS_CSV, "--schema", TRACK, "--dry-run", "--out", str(out_path)
    )
    assert code == 3
    lines = out_path.read_text().splitlines()
    assert len(lines) == 395
    assert "s3cret" not in out_path.read_text()
    assert "auth_token" not in out_path.read_text()
    first = json.loads(lines[0])
    assert set(first) == {"method", "path", "body", "source"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"\xff\xfeu\x00", "the file is UTF-16, not UTF-8", id="utf16"),
        pytest.param(b"user_id,event\ru1,x\r", "lines end with CR only", id="cr-only"),
        pytest.param(
            b"user_id,email,event,occurred_at\nu1,caf\xe9,x,y\n",
            "line 2, column 7: bytes e9 are not UTF-8",
            id="latin1",
        ),
        pytest.param(
            b'user_id,email,event,occurred_at\nu1,"a,x,y\n',
            "line 2: the CSV quoting is broken",
            id="open-quote",
        ),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    code, out, err = invoke("validate", str(path), "--schema", TRACK)
    assert code == 1
    assert err.startswith(f"Error: {path}")
    assert message in err
    assert "Traceback" not in err + out


def test_a_missing_file_and_a_missing_column(tmp_path: Path) -> None:
    code, _, err = invoke("validate", str(tmp_path / "nope.csv"), "--schema", TRACK)
    assert (code, err) == (1, f"Error: {tmp_path / 'nope.csv'}: no such file\n")
    path = tmp_path / "cols.csv"
    path.write_text("user_id,email,event\nu1,a@example.com,x\n")
    code, _, err = invoke("validate", str(path), "--schema", TRACK)
    assert code == 1
    assert "column(s) 'occurred_at' named in mapping" in err
    assert "Hint: the file has: email, event, user_id" in err


@pytest.mark.parametrize("option", ["--rejects", "--report", "--out"])
def test_an_output_that_is_an_input_is_refused_before_it_is_touched(
    tmp_path: Path, option: str
) -> None:
    path = tmp_path / "events.jsonl"
    original = (ROOT / "samples" / "events.jsonl").read_bytes()
    path.write_bytes(original)
    code, _, err = invoke("run", str(path), "--schema", TRACK, "--dry-run", option, str(path))
    assert code == 1
    assert f"Error: {option} {path} is also an input of this job" in err
    assert "Hint: write it somewhere else\n" in err
    assert path.read_bytes() == original


def test_replaying_dead_letters_into_the_same_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    letters = state / "dead-letters.jsonl"
    letters.write_text('{"method":"POST","path":"events/track","body":{}}\n')
    code, _, err = invoke("replay", str(letters), "--endpoint", "embedded", "--state", str(state))
    assert code == 1
    assert f"--dead-letter {letters} is also an input of this job" in err
    assert "move the file out of --state first" in err


@pytest.mark.parametrize("batch_rows", ["1", "100000"])
def test_a_jsonl_key_absent_from_some_lines_is_no_error_whatever_the_batch(
    tmp_path: Path, batch_rows: str
) -> None:
    path = tmp_path / "events.jsonl"
    lines = [
        {"user_id": "u1", "event": "Logged in", "occurred_at": "2023-05-30T10:00:00Z"},
        {"user_id": "u2", "email": "b@example.com", "event": "x", "occurred_at": "2023-05-30"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, _, err = invoke("validate", str(path), "--schema", TRACK, "--batch-rows", batch_rows)
    assert (code, err) == (0, "")


def test_a_mapped_key_no_jsonl_line_has_stops_every_input_before_a_row_is_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    line = {"userId": "u1", "email": "a@example.com", "event": "x", "occurred_at": "2023-05-30"}
    path.write_text(json.dumps(line) + "\n")
    out_file = tmp_path / "payloads.jsonl"
    code, _, err = invoke(
        "run", EVENTS_CSV, str(path), "--schema", TRACK, "--dry-run", "--out", str(out_file)
    )
    assert code == 1
    assert f"Error: {path}: column(s) 'user_id' named in mapping" in err
    assert "are not in the file" in err
    assert "Hint: the file has: email, event, occurred_at, userId" in err
    assert not out_file.exists()


@pytest.mark.parametrize("blank", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_a_blank_line_before_the_header_is_an_error_not_an_empty_night(
    tmp_path: Path, blank: bytes
) -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(blank + (ROOT / "samples" / "events.csv").read_bytes())
    code, out, err = invoke("validate", str(path), "--schema", TRACK)
    assert (code, out) == (1, "")
    assert err.startswith(f"Error: {path}, line 1: the first line is blank, but the header")


@pytest.mark.parametrize(
    "content", [b"", b"user_id,email,event,occurred_at\n"], ids=["empty", "header-only"]
)
def test_an_empty_night_is_a_warning_and_exit_0(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "tonight.csv"
    path.write_bytes(content)
    code, out, _ = invoke("run", str(path), "--schema", TRACK, "--dry-run")
    assert code == 0
    assert "warning: " in out
    assert "nothing to send" in out


def test_usage_errors_exit_2() -> None:
    code, _, err = invoke("validate", EVENTS_CSV)
    assert code == 2
    assert "Missing option '--mapping' / '--schema'" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"", "is empty", id="empty"),
        pytest.param(b"\xff\xfe\x00t", "is not UTF-8 text", id="not-utf8"),
        pytest.param(
            b"t0ken\nVERO_AUTH_TOKEN=t0ken\n",
            "holds more than one word or line: it should hold the token alone",
            id="two-lines",
        ),
    ],
)
def test_a_bad_token_file_is_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    token = tmp_path / "token"
    token.write_bytes(content)
    code, out, err = invoke(
        "run", EVENTS_CSV, "--schema", TRACK, "--token-file", str(token), "--state", str(tmp_path)
    )
    assert (code, out, err) == (1, "", f"Error: the --token-file {message}\n")


SECRET = "sk_live_0123456789abcdef"


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["run", EVENTS_CSV, "--schema", TRACK], id="run"),
        pytest.param(["replay", EVENTS_JSONL], id="replay"),
        pytest.param(["mock-server", "--port", "0"], id="mock-server"),
    ],
)
@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_token_given_as_the_token_file_path_is_never_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], kind: str
) -> None:
    monkeypatch.chdir(tmp_path)
    if kind == "directory":
        (tmp_path / SECRET).mkdir()
    code, out, err = invoke(*command, "--token-file", SECRET)
    assert code == 1
    assert SECRET not in out + err
    assert err.startswith("Error: the --token-file ")
    assert "Hint: the path is not shown, in case it is the token itself" in err or (
        "not a regular file" in err
    )


def test_a_token_file_over_4_kib_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"x" * (5 * 1024 * 1024))
    code, out, err = invoke(
        "run", EVENTS_CSV, "--schema", TRACK, "--token-file", str(token), "--state", str(tmp_path)
    )
    assert (code, out) == (1, "")
    assert err == "Error: the --token-file is larger than 4 KiB: it should hold the token alone\n"


def test_a_token_over_4_kib_in_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERO_AUTH_TOKEN", "x" * 5000)
    code, out, err = invoke("run", EVENTS_CSV, "--schema", TRACK, "--state", str(tmp_path))
    assert (code, out) == (1, "")
    assert err.startswith("Error: VERO_AUTH_TOKEN is longer than 4 KiB")


@pytest.mark.parametrize("option", ["--out", "--rejects", "--report"])
def test_an_output_that_cannot_be_written_is_one_clear_error(tmp_path: Path, option: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "out.jsonl"  # a folder inside a file cannot exist
    code, _, err = invoke(
        "run", EVENTS_CSV, "--schema", TRACK, "--dry-run", "--quiet", option, str(target)
    )
    assert code == 1
    assert err.startswith(f"Error: cannot write {target}: ")
    assert err.count("\n") == 1


def test_outputs_in_folders_that_do_not_exist_yet_are_created(tmp_path: Path) -> None:
    out = tmp_path / "new" / "folder" / "payloads.jsonl"
    code, _, err = invoke("run", EVENTS_CSV, "--schema", TRACK, "--dry-run", "--out", str(out))
    assert code == 3, err
    assert len(out.read_text().splitlines()) == 395


def test_a_jsonl_key_first_seen_after_the_sampled_lines_is_no_error(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    line = {"user_id": "u1", "event": "Logged in", "occurred_at": "2023-05-30T10:00:00Z"}
    late = {**line, "email": "a@example.com"}
    path.write_text((json.dumps(line) + "\n") * 10_001 + json.dumps(late) + "\n")
    code, _, err = invoke("validate", str(path), "--schema", TRACK, "--quiet")
    assert (code, err) == (0, "")


def test_a_data_key_that_is_a_column_is_refused(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        (ROOT / "schemas" / "vero-track.toml")
        .read_text()
        .replace('\n# data_key = "import_row"\n', '\ndata_key = "product"\n')
    )
    code, _, err = invoke("validate", EVENTS_CSV, "--schema", str(mapping))
    assert code == 1
    assert f"Error: mapping {mapping}: dedup.data_key 'product' is also a key of data" in err


@pytest.mark.parametrize(
    ("command", "step", "word"),
    [
        pytest.param(["validate"], "iter_batches", "nothing was sent", id="validate"),
        pytest.param(["run", "--dry-run"], "iter_batches", "nothing was sent", id="dry-run"),
        pytest.param(
            ["run", "--endpoint", "embedded", "--quiet"],
            "open_input",
            "holds every row the API acknowledged",
            id="run-before-sending",
        ),
    ],
)
def test_ctrl_c_while_reading_exits_130_with_a_word(
    tmp_path: Path, command: list[str], step: str, word: str
) -> None:
    # The process interrupts itself right after a step of reading: a real SIGINT at a known
    # moment, with no race against the clock.
    code = f"""
import os, signal, sys
import importer.inputs.reader as read
from importer.cli import entry

def interrupted(*args, **kwargs):
    result = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGINT)
    return result

real = read.{step}
read.{step} = interrupted
sys.argv = ["importer", {command[0]!r}, {EVENTS_CSV!r}, "--schema", {TRACK!r}, *{command[1:]!r}]
entry.main()
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 130, done.stderr
    assert "interrupted: " in done.stderr
    assert word in done.stderr
    assert "Traceback" not in done.stderr


def test_an_empty_endpoint_is_an_error_not_production(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    code, out, err = invoke(
        "run",
        EVENTS_CSV,
        "--schema",
        TRACK,
        "--endpoint",
        "",
        "--token-file",
        str(token),
        "--state",
        str(tmp_path / "state"),
    )
    assert (code, out) == (1, "")
    assert err.startswith("Error: --endpoint is empty\n")
    assert not (tmp_path / "state").exists()


def test_retries_are_shown_at_most_once_per_interval(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    bar = BarDelivery(enabled=False)
    for step in (0.0, 1.0, 2.0, progress.RETRY_NOTICE_S, 0.5):
        now[0] += step
        bar.retry(f"e.csv, line {int(now[0])}: HTTP 503")
    assert capsys.readouterr().err.splitlines() == [
        "retrying e.csv, line 100: HTTP 503",
        "retrying e.csv, line 113: HTTP 503 (and 2 more retries since the last notice)",
    ]


def _star_and_key_mapping(tmp_path: Path, key: str, column: str) -> Path:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        'destination = "vero"\naction = "track"\n[fields]\n"identity.id" = "user_id"\n'
        'event_name = "event"\n"extras.created_at" = "occurred_at"\ndata = "*"\n'
        f'"data.{key}" = "{column}"\n'
    )
    return mapping


def test_a_data_key_that_star_also_fills_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,event,occurred_at,plan,other\nu1,Buy,2023-05-30,pro,team\n")
    mapping = _star_and_key_mapping(tmp_path, "plan", "other")
    code, out, err = invoke("validate", str(path), "--schema", str(mapping))
    assert code == 1
    assert out == ""
    assert (
        f"Error: mapping {mapping}: fields.'data.plan' = 'other' and data = \"*\" both fill "
        f"data.plan: {path} has a column 'plan', which \"*\" puts in data too"
    ) in err


def test_a_data_key_that_star_fills_from_a_late_jsonl_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    line = {"user_id": "u1", "event": "Buy", "occurred_at": "2023-05-30", "other": "team"}
    path.write_text((json.dumps(line) + "\n") * 10_001 + json.dumps({**line, "plan": "pro"}) + "\n")
    mapping = _star_and_key_mapping(tmp_path, "plan", "other")
    code, _, err = invoke("validate", str(path), "--schema", str(mapping), "--quiet")
    assert code == 1
    assert "both fill data.plan" in err


def test_a_data_key_from_a_column_mapped_elsewhere_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,event,occurred_at,plan\nu1,Buy,2023-05-30,pro\n")
    mapping = _star_and_key_mapping(tmp_path, "tier", "plan")
    code, _, err = invoke("validate", str(path), "--schema", str(mapping), "--quiet")
    assert (code, err) == (0, "")


def test_a_report_onto_the_mapping_is_refused_and_the_mapping_kept(tmp_path: Path) -> None:
    mapping = tmp_path / "track.toml"
    mapping.write_text(Path(TRACK).read_text())
    before = mapping.read_bytes()
    code, out, err = invoke(
        "validate", EVENTS_CSV, "--schema", str(mapping), "--report", str(mapping)
    )
    assert (code, out) == (1, "")
    assert f"Error: --report {mapping} is also the mapping file of this job" in err
    assert mapping.read_bytes() == before


@pytest.mark.parametrize(
    ("option", "name", "what"),
    [
        pytest.param("--out", "checkpoint.log", "the checkpoint log", id="out-onto-log"),
        pytest.param("--rejects", "lock", "the lock of a running job", id="rejects-onto-lock"),
        pytest.param(
            "--report", "dead-letters.jsonl", "the default dead-letter file", id="report-onto-dl"
        ),
        pytest.param(
            "--dead-letter", "checkpoint.log", "the checkpoint log", id="dead-letter-onto-log"
        ),
    ],
)
def test_an_output_onto_a_file_of_the_state_directory_is_refused(
    tmp_path: Path, option: str, name: str, what: str
) -> None:
    state = tmp_path / "state"
    code, _, _ = invoke(
        "run", EVENTS_CSV, "--schema", TRACK, "--endpoint", "embedded", "--state", str(state), "-q"
    )
    assert code == 3
    target = state / name
    target.touch()
    before = target.read_bytes()
    args = ["--dry-run"] if option == "--out" else ["--endpoint", "embedded"]
    code, out, err = invoke(
        "run", EVENTS_CSV, "--schema", TRACK, "--state", str(state), *args, option, str(target)
    )
    assert (code, out) == (1, "")
    assert f"Error: {option} {target} is {what} in the state directory {state}" in err
    assert target.read_bytes() == before


@pytest.mark.parametrize(
    ("option", "name", "what"),
    [
        pytest.param(
            "--report", "job.json", "the job file's record of its steps", id="report-onto-job"
        ),
        pytest.param("--out", "chunks", "in the chunks of bulk uploads", id="out-onto-chunks"),
        pytest.param(
            "--rejects", "jobs/x.csv", "in the status of bulk upload jobs", id="rejects-into-jobs"
        ),
        pytest.param(
            "--report", "steps/users/r.json", "in the job file's step states", id="report-in-steps"
        ),
        pytest.param(
            "--dead-letter",
            "order-spill/d.jsonl",
            "in the rows kept for --order time",
            id="dead-letter-in-spill",
        ),
    ],
)
def test_an_output_onto_any_file_or_folder_the_state_directory_keeps_is_refused(
    tmp_path: Path, option: str, name: str, what: str
) -> None:
    state = tmp_path / "state"
    target = state / name
    target.parent.mkdir(parents=True)
    args = ["--dry-run"] if option == "--out" else ["--endpoint", "embedded"]
    code, out, err = invoke(
        "run", EVENTS_CSV, "--schema", TRACK, "--state", str(state), *args, option, str(target)
    )
    assert (code, out) == (1, "")
    assert f"Error: {option} {target} is {what}" in err
    assert f"in the state directory {state}" in err
    assert not target.is_file()


def test_the_dead_letter_file_may_be_the_state_directorys_own(tmp_path: Path) -> None:
    state = tmp_path / "state"
    letters = state / "dead-letters.jsonl"
    code, _, err = invoke(
        "run", EVENTS_CSV, "--schema", TRACK, "--endpoint", "embedded", "--state", str(state),
        "--dead-letter", str(letters), "-q",
    )  # fmt: skip
    assert code == 3, err


def test_two_outputs_on_one_path_are_refused(tmp_path: Path) -> None:
    both = tmp_path / "out.json"
    code, _, err = invoke(
        "validate", EVENTS_CSV, "--schema", TRACK, "--rejects", str(both), "--report", str(both)
    )
    assert code == 1
    assert f"Error: --rejects and --report are the same file ({both}): one would overwrite" in err
    assert not both.exists()


@pytest.mark.parametrize("option", ["--rejects", "--report"])
def test_an_output_that_is_a_symlink_loop_is_one_clear_error(tmp_path: Path, option: str) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "other")
    (tmp_path / "other").symlink_to(loop)
    code, _, err = invoke("validate", EVENTS_CSV, "--schema", TRACK, option, str(loop))
    assert code == 1
    assert err.startswith(f"Error: {option} {loop} cannot be written: it is a loop of symbolic")
    assert "Traceback" not in err


def test_ctrl_c_while_the_command_line_starts_exits_130_without_a_traceback() -> None:
    # Deterministic stand-in for Ctrl-C in the first second: the process interrupts itself
    # while it imports the command line (Polars and aiohttp), before any command runs.
    code = f"""
import os, signal, sys
from importer.cli import entry

class InterruptOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == "importer.cli.app":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptOnImport())
sys.argv = ["importer", "validate", {EVENTS_CSV!r}, "--schema", {TRACK!r}]
entry.main()
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout) == (130, "")
    assert done.stderr == "\ninterrupted before anything was read or sent\n"


@pytest.mark.parametrize(
    ("args", "environ"),
    [
        pytest.param(["--log-format", "json"], {}, id="option"),
        pytest.param(["--log-format=json"], {}, id="option-equals"),
        pytest.param([], {"IMPORTER_LOG_FORMAT": "json"}, id="environment"),
    ],
)
def test_ctrl_c_while_the_command_line_starts_is_an_error_event_when_json_is_asked(
    args: list[str], environ: dict[str, str]
) -> None:
    code = f"""
import os, signal, sys
from importer.cli import entry

class InterruptOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == "importer.cli.app":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptOnImport())
sys.argv = ["importer", "validate", {EVENTS_CSV!r}, "--schema", {TRACK!r}, *{args!r}]
entry.main()
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **environ},
    )
    assert (done.returncode, done.stdout) == (130, "")
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    event = json.loads(lines[0])
    assert (event["event"], event["exit_code"]) == ("error", 130)
    assert event["message"] == "interrupted before anything was read or sent"


def test_mapping_is_the_options_name_and_schema_its_old_alias(tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_text(
        "user_id,email,event,occurred_at\nu1,a@example.com,Login,2023-05-30T10:00:00Z\n"
    )
    for option in ("--mapping", "--schema"):
        code, _, err = invoke("validate", str(path), option, TRACK, "--quiet")
        assert (code, err) == (0, ""), option


def test_events_the_api_would_drop_end_the_run_with_3_unless_accepted(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    row = "u1,a@example.com,Buy,2023-05-30T10:00:00Z,pro\n"
    path.write_text("user_id,email,event,occurred_at,plan\n" + row * 3)
    mapping = tmp_path / "track.toml"
    preset = Path(TRACK).read_text()
    mapping.write_text(preset)
    code, out, _ = invoke("validate", str(path), "--mapping", str(mapping))
    assert code == 3
    assert "dedup: Vero would drop 2 event(s) as duplicates" in out
    assert "same data and the same occurred_at to the second" in out
    mapping.write_text(preset.replace("\n# accept_drops = true\n", "\naccept_drops = true\n"))
    code, out, _ = invoke("validate", str(path), "--mapping", str(mapping))
    assert code == 0
    assert "the mapping accepts these drops" in out


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["run", EVENTS_CSV, "--mapping", TRACK, "--endpoint", "embedded"], id="run"),
        pytest.param(["run", str(ROOT / "samples" / "migration.toml")], id="job-file"),
        pytest.param(["status"], id="status"),
    ],
)
def test_a_file_given_as_state_is_a_fatal_error_not_a_usage_error(
    tmp_path: Path, command: list[str]
) -> None:
    state = tmp_path / "afile"
    state.write_text("not a folder\n")
    extra = ["--endpoint", "embedded"] if command[-1].endswith(".toml") else []
    code, _, err = invoke(*command, *extra, "--state", str(state))
    assert code == 1, err
    assert f"Error: --state {state} is not a directory\n" in err
    assert state.read_text() == "not a folder\n"
