"""Presets travel inside the package: found by name by --mapping, listed by `importer presets`,
copied by `importer init --preset`, and kept identical to the repository's schemas/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pipeline_helpers import ROOT

from importer.cli.app import main
from importer.errors import MappingError
from importer.mapping.file import load_mapping
from importer.mapping.presets import PRESETS_DIR, preset_names, report_schema, resolve_mapping

SCHEMAS = ROOT / "schemas"
SAMPLES = ROOT / "samples"


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def test_the_package_copy_is_the_repository_schemas_byte_for_byte() -> None:
    """The wheel carries importer/presets/; schemas/ is what people read. A copy rather than a
    build step, so that editable installs, wheels and sdists find them the same way."""
    shipped = {path.name: path.read_bytes() for path in PRESETS_DIR.iterdir()}
    canonical = {path.name: path.read_bytes() for path in SCHEMAS.iterdir()}
    assert shipped == canonical, (
        "importer/presets/ differs from schemas/: "
        "rm importer/presets/* && cp schemas/* importer/presets/"
    )


def test_every_preset_has_its_payload_schema_and_the_report_schema_ships() -> None:
    names = preset_names()
    assert "vero-track" in names
    assert "userpilot-identify" in names
    assert all((PRESETS_DIR / f"{name}.schema.json").is_file() for name in names)
    assert json.loads(report_schema().read_text())["type"] == "object"


def test_a_bare_name_is_a_preset_and_an_existing_path_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_mapping("vero-track") == PRESETS_DIR / "vero-track.toml"
    assert load_mapping("vero-track").action.name == "track"
    # a file of that name in the working folder is what the user meant
    Path("vero-track").write_text((SCHEMAS / "vero-identify.toml").read_text(), encoding="utf-8")
    assert resolve_mapping("vero-track") == Path("vero-track")
    assert load_mapping("vero-track").action.name == "identify"
    # a path (a folder, or .toml) is never replaced by a preset
    assert resolve_mapping("vero-identify.toml") == Path("vero-identify.toml")
    assert resolve_mapping("maps/vero-identify") == Path("maps/vero-identify")


def test_an_unknown_name_lists_the_presets() -> None:
    with pytest.raises(MappingError) as raised:
        load_mapping("vero-trak")
    assert "neither a file nor a preset" in str(raised.value)
    assert raised.value.hint is not None
    assert "vero-track" in raised.value.hint


def test_run_takes_a_preset_by_name(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    ran = invoke(
        "run", SAMPLES / "events.csv", "--mapping", "vero-track", "--endpoint", "embedded",
        "--state", tmp_path / "state", "--report", report, "--quiet",
    )  # fmt: skip
    assert ran.exit_code == 3, ran.output  # the sample's bad rows, on purpose
    assert json.loads(report.read_text())["rows_sent"] == 395


def test_validate_with_an_unknown_preset_is_one_clear_error() -> None:
    checked = invoke("validate", SAMPLES / "events.csv", "--mapping", "vero-trak")
    assert checked.exit_code == 1
    assert "'vero-trak' is neither a file nor a preset" in checked.output
    assert "vero-track" in checked.output


def test_presets_lists_each_preset_on_one_line() -> None:
    listed = invoke("presets")
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert [line.split()[0] for line in lines] == preset_names()
    track = next(line for line in lines if line.startswith("vero-track "))
    assert "Vero track (POST events/track): one event per row" in track


def test_init_starts_a_mapping_from_a_preset(tmp_path: Path) -> None:
    out = tmp_path / "mine.toml"
    made = invoke("init", "--preset", "userpilot-identify", "--out", out)
    assert made.exit_code == 0, made.output
    assert out.read_text() == (SCHEMAS / "userpilot-identify.toml").read_text()
    again = invoke("init", "--preset", "userpilot-identify", "--out", out)
    assert again.exit_code == 1
    assert "exists" in again.output
    printed = invoke("init", "--preset", "vero-track")
    assert printed.output == (SCHEMAS / "vero-track.toml").read_text()


def test_init_wants_an_input_or_a_preset_not_both(tmp_path: Path) -> None:
    assert invoke("init").exit_code == 2
    both = invoke("init", SAMPLES / "events.csv", "--preset", "vero-track")
    assert both.exit_code == 2
    unknown = invoke("init", "--preset", "nope")
    assert unknown.exit_code == 1
    assert "no preset named 'nope'" in unknown.output
    assert not os.listdir(tmp_path)
