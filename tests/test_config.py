"""Options from IMPORTER_<OPTION> variables: one name per option whichever command uses it,
shown in --help, a flag wins, and what discards or re-sends state stays a flag."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from pipeline_helpers import ROOT

from importer.cli.app import main
from importer.cli.replay import replay
from importer.cli.run import run
from importer.cli.validate import validate

EVENTS = str(ROOT / "samples" / "events.csv")
# Flags that set the checkpoint aside or send again: a variable left in a cron environment must
# never do that. --shard had its variable before.
# --yes confirms deletions: a stray IMPORTER_YES in a cron environment must not delete users.
FLAGS_ONLY = {"fresh", "resend_changed", "past_failed", "yes"}


def invoke(*args: object, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def _options(command: click.Command) -> list[click.Option]:
    return [param for param in command.params if isinstance(param, click.Option)]


@pytest.mark.parametrize("command", [run, validate, replay], ids=lambda c: c.name)
def test_every_option_has_its_variable_but_those_that_discard_or_resend(
    command: click.Command,
) -> None:
    for option in _options(command):
        if option.name in ("help",):
            continue
        if option.hidden or option.name in FLAGS_ONLY:
            assert option.envvar is None, option.name
            continue
        long_name = next(name for name in option.opts if name.startswith("--"))
        expected = "IMPORTER_" + long_name.removeprefix("--").replace("-", "_").upper()
        assert option.envvar == expected, long_name
        assert option.show_envvar, long_name


def test_help_shows_the_variables() -> None:
    shown = " ".join(invoke("run", "--help").output.split())  # unwrapped
    assert "env var: IMPORTER_ENDPOINT" in shown
    assert "env var: IMPORTER_LOG_FORMAT" in shown
    assert "IMPORTER_FRESH" not in shown


def test_importer_endpoint_embedded_runs_against_the_embedded_mock(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    ran = invoke(
        "run", EVENTS, "--mapping", "vero-track", "--quiet",
        env={
            "IMPORTER_ENDPOINT": "embedded",
            "IMPORTER_STATE": str(tmp_path / "state"),
            "IMPORTER_REPORT": str(report),
            "IMPORTER_CONCURRENCY": "4",
        },
    )  # fmt: skip
    assert ran.exit_code == 3, ran.output  # the sample's bad rows, on purpose
    assert json.loads(report.read_text())["rows_sent"] == 395
    assert (tmp_path / "state").is_dir()


def test_a_flag_wins_over_its_variable(tmp_path: Path) -> None:
    from_env, from_flag = tmp_path / "env.json", tmp_path / "flag.json"
    checked = invoke(
        "validate", EVENTS, "--mapping", "vero-track", "--report", from_flag, "--quiet",
        env={"IMPORTER_REPORT": str(from_env)},
    )  # fmt: skip
    assert checked.exit_code == 3, checked.output
    assert from_flag.is_file()
    assert not from_env.exists()


def test_importer_fresh_does_not_set_the_checkpoint_aside(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = invoke(
        "run", EVENTS, "--mapping", "vero-track", "--endpoint", "embedded", "--state", state,
        "--quiet",
    )  # fmt: skip
    assert first.exit_code == 3, first.output
    report = tmp_path / "again.json"
    again = invoke(
        "run", EVENTS, "--mapping", "vero-track", "--endpoint", "embedded", "--state", state,
        "--report", report, "--quiet",
        env={"IMPORTER_FRESH": "1", "IMPORTER_RESEND_CHANGED": "1", "IMPORTER_PAST_FAILED": "1"},
    )  # fmt: skip
    assert again.exit_code == 3, again.output
    summary = json.loads(report.read_text())
    assert summary["rows_sent"] == 0
    assert summary["rows_skipped"] == 395  # all in the checkpoint: nothing sent twice


def test_importer_log_format_json_makes_a_usage_error_an_event() -> None:
    failed = invoke(
        "run", EVENTS, "--mapping", "vero-track", "--concurrency", "0",
        env={"IMPORTER_LOG_FORMAT": "json"},
    )  # fmt: skip
    assert failed.exit_code == 2
    [event] = [json.loads(line) for line in failed.stderr.splitlines()]
    assert event["event"] == "error"
    assert "--concurrency" in event["message"]
    # the flag wins: text asked for on the command line is text
    text = invoke(
        "run", EVENTS, "--mapping", "vero-track", "--concurrency", "0", "--log-format", "text",
        env={"IMPORTER_LOG_FORMAT": "json"},
    )  # fmt: skip
    assert text.exit_code == 2
    assert text.stderr.startswith("Usage:")


def test_importer_log_format_json_makes_an_unknown_option_an_event() -> None:
    failed = invoke("validate", EVENTS, "--no-such-option", env={"IMPORTER_LOG_FORMAT": "json"})
    assert failed.exit_code == 2
    [event] = [json.loads(line) for line in failed.stderr.splitlines()]
    assert "--no-such-option" in event["message"]
