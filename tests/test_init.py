"""`importer init`: a mapping guessed from a file loads as written and imports the file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pipeline_helpers import ROOT, write_csv

from importer.cli.app import main
from importer.mapping.file import load_mapping

SAMPLES = ROOT / "samples"


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


@pytest.mark.parametrize(
    ("sample", "destination", "action", "delivered"),
    [
        pytest.param("events.csv", "vero", "track", 395, id="vero-events-csv"),
        pytest.param("events.jsonl", "vero", "track", 395, id="vero-events-jsonl"),
        pytest.param("users.csv", "vero", "identify", 297, id="vero-users"),
        pytest.param("userpilot-events.csv", "userpilot", "track", 12, id="up-events"),
        # one more than the preset: only the preset types `settings` as JSON, which nests it
        pytest.param("userpilot-users.csv", "userpilot", "identify", 11, id="up-users"),
        pytest.param("userpilot-companies.csv", "userpilot", "company", 7, id="up-companies"),
    ],
)
def test_a_guessed_mapping_imports_its_sample_as_written(
    tmp_path: Path, sample: str, destination: str, action: str, delivered: int
) -> None:
    mapping = tmp_path / "guessed.toml"
    made = invoke("init", SAMPLES / sample, "--destination", destination, "--out", mapping)
    assert made.exit_code == 0, made.output
    assert load_mapping(mapping).action.name == action
    report = tmp_path / "report.json"
    state = tmp_path / "state"
    run = invoke(
        "run", SAMPLES / sample, "--mapping", mapping, "--endpoint", "embedded",
        "--state", state, "--report", report, "--quiet",
    )  # fmt: skip
    assert run.exit_code in (0, 3), run.output  # the samples hold bad rows on purpose
    # as many rows as the hand-written preset delivers from the same sample
    assert json.loads(report.read_text())["rows_sent"] == delivered


def test_columns_are_recognised_by_their_values_too(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "contact,action,when,amount",
        "ann@example.com,Signed Up,2024-01-02T03:04:05Z,3",
        "bob@example.com,Logged In,2024-01-03T03:04:05Z,4",
    )
    made = invoke("init", path, "--action", "track")
    assert made.exit_code == 0, made.output
    mapping = tomllib.loads(made.output)
    # no id column: the email identifies the user; the ISO column is the event's time
    assert mapping["fields"]["identity.email"] == "contact"
    assert mapping["fields"]["extras.created_at"] == "when"
    assert mapping["fields"]["data"] == "*"


def test_an_event_column_chooses_the_event_action(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "user_id,event_name,ts", "u1,Viewed,1700000000")
    mapping = tomllib.loads(invoke("init", path).output)
    assert mapping["action"] == "track"
    assert mapping["fields"]["extras.created_at"] == "ts"
    assert mapping["dedup"]["time_key"] == "ts"


def test_a_file_without_what_an_action_needs_is_one_clear_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "name,plan", "Ann,pro")
    made = invoke("init", path, "--action", "track")
    assert made.exit_code == 1
    assert "no column looks like" in made.output
    assert "write the mapping by hand" in made.output
    assert "importer init --preset NAME" in made.output  # presets travel with the package


def test_init_never_writes_over_a_file(tmp_path: Path) -> None:
    out = tmp_path / "mine.toml"
    out.write_text("# my own mapping\n")
    made = invoke("init", SAMPLES / "users.csv", "--out", out)
    assert made.exit_code == 1
    assert out.read_text() == "# my own mapping\n"


def test_an_unknown_action_is_a_usage_error() -> None:
    made = invoke("init", SAMPLES / "users.csv", "--action", "teleport")
    assert made.exit_code == 2
    assert "'teleport' is not an action of vero" in made.output
