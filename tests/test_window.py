"""--since / --until: only the rows whose mapped time falls in [since, until) are checked and
sent; the others are counted, neither sent nor rejected."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from pipeline_helpers import NOW, ROOT, TRACK

from importer.checks.validate import FileState, Window, validate_frame
from importer.cli.app import main
from importer.columns import LINE, RULE
from importer.errors import MappingError
from importer.inputs.reader import iter_batches, open_input
from importer.mapping.file import load_mapping, parse_mapping
from importer.pipeline.run import RunOptions
from importer.state.layout import EMBEDDED_RECORD_NAME

SCHEMAS = ROOT / "schemas"
MAY_1 = datetime(2024, 5, 1, tzinfo=UTC)
MAY_2 = datetime(2024, 5, 2, tzinfo=UTC)
ROWS = (
    "user_id,email,event,occurred_at\n"
    "u1,a@example.com,Login,2024-04-30T23:59:59Z\n"  # 2: before
    "u2,a@example.com,Login,2024-05-01T00:00:00Z\n"  # 3: the first instant: kept
    "u3,a@example.com,Login,2024-05-01T12:00:00+02:00\n"  # 4: kept
    "u4,a@example.com,Login,2024-05-01T23:59:59.999Z\n"  # 5: the last instant: kept
    "u5,a@example.com,Login,2024-05-02T00:00:00Z\n"  # 6: until is not in: out
    "u6,not-an-email,Login,2024-04-01T00:00:00Z\n"  # 7: bad, but outside: only counted
    "u7,not-an-email,Login,2024-05-01T08:00:00Z\n"  # 8: bad, inside: rejected
    "u8,a@example.com,Login,yesterday\n"  # 9: no time to judge by: rejected
    "u9,a@example.com,Login,1714564800\n"  # 10: epoch 2024-05-01T12:00Z: kept
)


def _check(tmp_path: Path, mapping_text: dict[str, object], rows: str, window: Window | None):
    path = tmp_path / "in.csv"
    path.write_text(rows)
    mapping = parse_mapping(mapping_text, path=tmp_path / "m.toml")
    [batch] = iter_batches(open_input(path))
    return validate_frame(batch.frame, mapping, state=FileState(), now=NOW, window=window)


def test_rows_outside_the_window_are_neither_valid_nor_rejected(tmp_path: Path) -> None:
    checked = _check(tmp_path, TRACK, ROWS, Window(since=MAY_1, until=MAY_2))
    assert checked.valid[LINE].to_list() == [3, 4, 5, 10]
    assert dict(checked.rejects.select(LINE, RULE).iter_rows()) == {8: "email", 9: "timestamp"}
    assert checked.outside == 3


def test_a_row_the_mappings_filter_leaves_out_is_filtered_not_outside(tmp_path: Path) -> None:
    # Both the filter and the window leave out the rows of u1 (line 2) and u6 (line 7).
    filtered = {**TRACK, "where": "user_id NOT IN ('u1', 'u6', 'u8')"}
    checked = _check(tmp_path, filtered, ROWS, Window(since=MAY_1, until=MAY_2))
    assert checked.valid[LINE].to_list() == [3, 4, 5, 10]
    assert dict(checked.rejects.select(LINE, RULE).iter_rows()) == {8: "email"}
    assert (checked.filtered, checked.outside) == (3, 1)


def test_each_end_may_be_open(tmp_path: Path) -> None:
    since = _check(tmp_path, TRACK, ROWS, Window(since=MAY_1))
    assert since.valid[LINE].to_list() == [3, 4, 5, 6, 10]
    until = _check(tmp_path, TRACK, ROWS, Window(until=MAY_1))
    assert until.valid[LINE].to_list() == [2]
    assert dict(until.rejects.select(LINE, RULE).iter_rows()) == {7: "email", 9: "timestamp"}


def test_the_window_is_compared_in_utc_whatever_its_offset(tmp_path: Path) -> None:
    plus_two = timezone(timedelta(hours=2))
    window = Window(since=datetime(2024, 5, 1, 2, tzinfo=plus_two), until=MAY_2)
    assert _check(tmp_path, TRACK, ROWS, window).valid[LINE].to_list() == [3, 4, 5, 10]


def test_a_naive_time_is_read_in_the_mappings_timezone_before_the_window(tmp_path: Path) -> None:
    rows = "user_id,event,occurred_at\nu1,Login,2024-05-01 01:00:00\n"
    berlin = {**TRACK, "timezone": "Europe/Berlin"}  # 01:00 in Berlin is 23:00Z the day before
    assert _check(tmp_path, berlin, rows, Window(since=MAY_1)).outside == 1
    assert _check(tmp_path, TRACK, rows, Window(since=MAY_1)).outside == 0


def test_milliseconds_count_at_the_edge(tmp_path: Path) -> None:
    """Userpilot's import sends times to the millisecond: the window sees them."""
    mapping = load_mapping(SCHEMAS / "userpilot-import-track.toml")
    rows = (
        "user_id,event,occurred_at\n"
        "u1,Login,2024-05-01T23:59:59.999Z\n"
        "u2,Login,2024-05-02T00:00:00.000Z\n"
    )
    path = tmp_path / "in.csv"
    path.write_text(rows)
    [batch] = iter_batches(open_input(path))
    checked = validate_frame(
        batch.frame, mapping, state=FileState(), now=NOW, window=Window(until=MAY_2)
    )
    assert (checked.valid[LINE].to_list(), checked.outside) == ([2], 1)


def test_an_action_without_a_time_uses_its_first_timestamp_column(tmp_path: Path) -> None:
    """Userpilot's track takes no time; its preset types occurred_at as a timestamp."""
    mapping = load_mapping(SCHEMAS / "userpilot-track.toml")
    path = tmp_path / "in.csv"
    path.write_text(
        "user_id,event,occurred_at\nu1,Login,2024-04-30T10:00:00Z\nu2,Login,2024-05-01T10:00:00Z\n"
    )
    [batch] = iter_batches(open_input(path))
    checked = validate_frame(
        batch.frame, mapping, state=FileState(), now=NOW, window=Window(since=MAY_1)
    )
    assert (checked.valid[LINE].to_list(), checked.outside) == ([3], 1)


def test_a_mapping_without_a_time_is_refused(tmp_path: Path) -> None:
    mapping = load_mapping(SCHEMAS / "vero-tags.toml")
    with pytest.raises(MappingError, match=r"action 'tags' of mapping .* has no time field"):
        RunOptions(inputs=(), mapping=mapping, window=Window(since=MAY_1))


def test_a_window_checks_its_ends() -> None:
    with pytest.raises(ValueError, match="before"):
        Window(since=MAY_2, until=MAY_1)
    with pytest.raises(ValueError, match="aware"):
        Window(since=datetime(2024, 5, 1))


# ------------------------------------------------------------------------------ command line


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_a_run_sends_only_the_window_and_reports_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(ROWS)
    report, state = tmp_path / "report.json", tmp_path / "state"
    code, out, err = invoke(
        "run", str(path), "--mapping", str(SCHEMAS / "vero-track.toml"), "--endpoint", "embedded",
        "--state", str(state), "--report", str(report), "--since", "2024-05-01",
        "--until", "2024-05-02T00:00:00Z",
    )  # fmt: skip
    assert code == 3, err  # lines 8 and 9 are rejected
    received = [
        json.loads(line) for line in (state / EMBEDDED_RECORD_NAME).read_text().splitlines()
    ]
    sent = sorted(body["identity"]["id"] for body in received)
    assert sent == ["u2", "u3", "u4", "u9"]
    data = json.loads(report.read_text())
    assert (data["rows_read"], data["rows_valid"], data["rows_rejected"]) == (9, 4, 2)
    assert (data["rows_outside_window"], data["rows_sent"]) == (3, 4)
    assert re.search(r"outside --since/--until +3\n", out)


def test_validate_counts_the_rows_outside(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(ROWS)
    report = tmp_path / "report.json"
    code, _, _ = invoke(
        "validate", str(path), "--mapping", str(SCHEMAS / "vero-track.toml"),
        "--report", str(report), "--until", "2024-05-01",
    )  # fmt: skip
    assert code == 3
    assert json.loads(report.read_text())["rows_outside_window"] == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--since", "May 1st"], "'May 1st' is not an ISO 8601 date or time", id="bad"),
        pytest.param(
            ["--since", "2024-05-02", "--until", "2024-05-01"],
            "--since 2024-05-02T00:00:00+00:00 is not before --until 2024-05-01T00:00:00+00:00",
            id="reversed",
        ),
        pytest.param(
            ["--since", "2024-05-01", "--mapping", str(SCHEMAS / "vero-tags.toml")],
            "action 'tags' of mapping",
            id="no-time",
        ),
    ],
)
def test_a_window_that_cannot_work_is_a_usage_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(ROWS)
    if "--mapping" not in args:
        args = [*args, "--mapping", str(SCHEMAS / "vero-track.toml")]
    for command in ("validate", "run"):
        code, _, err = invoke(command, str(path), *args)
        assert code == 2, err
        assert message in " ".join(err.split())


def test_a_job_file_refuses_a_window_for_a_step_without_time(tmp_path: Path) -> None:
    code, _, err = invoke(
        "validate", str(ROOT / "samples" / "migration.toml"), "--since", "2024-05-01"
    )
    assert code == 2
    assert "step tags: --since/--until: action 'tags'" in " ".join(err.split())


def test_the_window_is_a_vectorised_filter() -> None:
    """Window.excludes is one expression: null times stay in (their own rule rejects them)."""
    times = pl.Series([datetime(2024, 4, 30), datetime(2024, 5, 1), None])
    window = Window(since=MAY_1, until=MAY_2)
    excluded = pl.select(window.excludes(pl.lit(times))).to_series().to_list()
    assert excluded == [True, False, None]
