"""Mapping files: the presets load, and every mistake is reported with the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import ROOT, TRACK, make_mapping

from importer.errors import MappingError
from importer.mapping.file import load_mapping


@pytest.mark.parametrize("preset", sorted((ROOT / "schemas").glob("*.toml")), ids=lambda p: p.name)
def test_presets_load(preset: Path) -> None:
    mapping = load_mapping(preset)
    # a preset is named after what it is for: <destination>-<action>.toml
    assert preset.stem == f"{mapping.destination.name}-{mapping.action.name.replace('_', '-')}"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        pytest.param(
            {"destination": "hubspot"},
            "unknown destination 'hubspot' (known: userpilot, vero)",
            id="destination",
        ),
        pytest.param(
            {"action": "teleport"},
            "unknown action 'teleport' for destination 'vero' (supported: alias, delete, identify, resubscribe, tags, track, unsubscribe)",
            id="action",
        ),
        pytest.param(
            {"fields": {**TRACK["fields"], "identity.phone": "phone"}},
            "fields.'identity.phone': the track payload has no such path",
            id="payload-path",
        ),
        pytest.param(
            {"fields": {**TRACK["fields"], "event_name": "*"}},
            "fields.'event_name' = \"*\" is only allowed for an object such as data",
            id="star-on-scalar",
        ),
        pytest.param(
            {"fields": {"event_name": "event"}},
            "map at least one of identity.id or identity.email to identify the user",
            id="no-identity",
        ),
        pytest.param(
            {"fields": {"identity.id": "user_id"}},
            "fields.'event_name' is required for track",
            id="no-event-name",
        ),
        pytest.param(
            {"fields": {k: v for k, v in TRACK["fields"].items() if k != "extras.created_at"}},
            "fields.'extras.created_at' is required for track",
            id="no-event-time",
        ),
        pytest.param(
            {"action": "identify", "fields": {"id": "user_id"}, "dedup": {"data_key": "row"}},
            "[dedup] only applies to calls the API drops as duplicates; identify calls are never",
            id="data-key-on-identify",
        ),
        pytest.param(
            {"types": {"zip": "zipcode"}}, "types.zip = 'zipcode' is not a type", id="type"
        ),
        pytest.param(
            {"timezone": "Mars/Olympus"},
            "timezone = 'Mars/Olympus' is not an IANA time zone",
            id="timezone",
        ),
        pytest.param({"colour": "blue"}, "unknown key 'colour'", id="unknown-key"),
        pytest.param(
            {"dedup": {"data_key": ""}}, "dedup.data_key must be a non-empty string", id="dedup-key"
        ),
    ],
)
def test_mapping_problems_name_the_key(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(MappingError) as caught:
        make_mapping(**changes)
    assert "mapping file test-mapping.toml has" in str(caught.value)
    assert problem in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(MappingError) as caught:
        make_mapping(action="teleport", types={"a": "b"}, timezone="Nowhere")
    assert "has 3 problem(s)" in str(caught.value)


def test_a_missing_or_broken_mapping_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"mapping file .*nope.toml does not exist"):
        load_mapping(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text('destination = "vero"\naction = ', encoding="utf-8")
    with pytest.raises(MappingError, match=r"broken.toml is not valid TOML"):
        load_mapping(broken)


def test_a_mapped_column_missing_from_the_file_names_mapping_and_key() -> None:
    mapping = make_mapping()
    with pytest.raises(MappingError) as caught:
        mapping.check_columns(["user_id", "email", "event"], source="events.csv")
    message = str(caught.value)
    assert message == (
        "events.csv: column(s) 'occurred_at' named in mapping test-mapping.toml "
        "(fields.'extras.created_at' = 'occurred_at') are not in the file"
    )
    assert caught.value.hint == "the file has: email, event, user_id"


def test_the_fingerprint_follows_meaning_not_formatting() -> None:
    assert make_mapping().fingerprint == make_mapping(timezone="UTC").fingerprint
    assert make_mapping().fingerprint != make_mapping(timezone="Europe/Berlin").fingerprint


def test_unquoted_dotted_keys_mean_the_same_paths(tmp_path: Path) -> None:
    path = tmp_path / "mapping.toml"
    path.write_text(
        'destination = "vero"\naction = "track"\n[fields]\nidentity.id = "user_id"\n'
        'event_name = "event"\nextras.created_at = "occurred_at"\ndata.plan = "plan"\n'
    )
    assert load_mapping(path).fields == {
        "identity.id": "user_id",
        "event_name": "event",
        "extras.created_at": "occurred_at",
        "data.plan": "plan",
    }


def test_a_mapping_saved_with_a_utf8_bom_loads(tmp_path: Path) -> None:
    preset = ROOT / "schemas" / "vero-track.toml"
    with_bom = tmp_path / "track.toml"
    with_bom.write_bytes(b"\xef\xbb\xbf" + preset.read_bytes())
    assert load_mapping(with_bom).fingerprint == load_mapping(preset).fingerprint
