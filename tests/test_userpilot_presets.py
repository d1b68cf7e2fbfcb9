"""Userpilot's presets against its samples: each loads, validates and dry-runs as its comments
say, rejects the samples' bad rows under the expected rule, and builds bodies its JSON Schema
accepts; and the schemas refuse bodies that break Userpilot's documented rules."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from pipeline_helpers import ROOT, check_body, schema_of

from importer.cli.app import main
from importer.destinations.userpilot.api import IMPORT_SOURCE, USERPILOT
from importer.mapping.file import load_mapping

SCHEMAS = ROOT / "schemas"
SAMPLES = ROOT / "samples"
USERS, EVENTS, COMPANIES = "userpilot-users.csv", "userpilot-events.csv", "userpilot-companies.csv"
# The samples' bad rows (line: rule), as samples/generate.py places them.
USER_REJECTS = {7: "nested", 9: "required"}
EVENT_REJECTS = {7: "required", 10: "timestamp"}
COMPANY_REJECTS = {6: "required"}
# Preset (schemas/userpilot-<name>.toml) -> its sample, the bad rows, and the rows sent.
PRESETS: dict[str, tuple[str, dict[int, str], int]] = {
    "track": (EVENTS, EVENT_REJECTS, 12),
    "identify": (USERS, USER_REJECTS, 10),
    "company": (COMPANIES, COMPANY_REJECTS, 7),
    "import-track": (EVENTS, EVENT_REJECTS, 12),
    "import-identify": (USERS, USER_REJECTS, 10),
    "import-company": (COMPANIES, COMPANY_REJECTS, 7),
    "bulk-identify": (USERS, USER_REJECTS, 10),
    "bulk-company": (COMPANIES, COMPANY_REJECTS, 7),
}
# Presets whose samples and checks are their own: tests/test_userpilot_deletes.py.
OTHER_PRESETS = {"import-page-view", "delete-users", "delete-companies"}
IMPORT_EVENT_TYPES = {
    "import-track": "track",
    "import-identify": "identify_user",
    "import-company": "identify_company",
}
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def preset(name: str) -> Path:
    return SCHEMAS / f"userpilot-{name}.toml"


def load_validator(name: str) -> jsonschema.Draft202012Validator:
    """The validator pipeline_helpers loaded for schemas/userpilot-<name>.schema.json."""
    return schema_of(load_mapping(preset(name)))


def dry_run(tmp_path: Path, mapping: Path, sample: Path) -> tuple[int, str, list[dict[str, Any]]]:
    """`importer run --dry-run --out`: the exit code, stdout and the payload lines written."""
    out = tmp_path / "payloads.jsonl"
    code, stdout, err = invoke(
        "run", str(sample), "--mapping", str(mapping), "--dry-run", "--out", str(out)
    )
    assert code in (0, 3), err
    return code, stdout, [json.loads(line) for line in out.read_text().splitlines()]


def test_every_action_has_a_preset_and_a_schema() -> None:
    names = {action.replace("_", "-") for action in USERPILOT.actions}
    assert names == set(PRESETS) | OTHER_PRESETS
    assert {p.name for p in SCHEMAS.glob("userpilot-*.toml")} == {
        f"userpilot-{name}.toml" for name in names
    }
    assert {p.name for p in SCHEMAS.glob("userpilot-*.schema.json")} == {
        f"userpilot-{name}.schema.json" for name in names
    }


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_with_its_action_and_region(name: str) -> None:
    mapping = load_mapping(preset(name))
    assert mapping.destination.name == "userpilot"
    assert mapping.action.name == name.replace("-", "_")
    assert mapping.options["region"] == "us"
    jsonschema.Draft202012Validator.check_schema(schema_of(mapping).schema)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_options_commented_out_load_when_uncommented(name: str, tmp_path: Path) -> None:
    """The options a preset offers in comments (eu, nested, chunk_mb) work as written."""
    text = preset(name).read_text()
    text = text.replace('region = "us"', 'region = "eu"')
    text = re.sub(r"^# (nested|chunk_mb) = ", r"\1 = ", text, flags=re.MULTILINE)
    path = tmp_path / preset(name).name
    path.write_text(text)
    mapping = load_mapping(path)
    assert mapping.options["region"] == "eu"
    assert mapping.options["nested"] == "json"
    if mapping.action.bulk is not None:
        assert mapping.options["chunk_mb"] == 50
        assert "\nchunk_mb = 50" in text


@pytest.mark.parametrize("name", PRESETS)
def test_validate_rejects_the_samples_bad_rows(name: str, tmp_path: Path) -> None:
    sample, expected, _ = PRESETS[name]
    rejects = tmp_path / "rejects.jsonl"
    code, _, err = invoke(
        "validate", str(SAMPLES / sample), "--mapping", str(preset(name)), "--rejects", str(rejects)
    )
    assert code == 3, err
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert {row["_line"]: row["_rule"] for row in rows} == expected
    if "nested" in expected.values():
        [nested] = [row for row in rows if row["_rule"] == "nested"]
        assert "settings" in nested["_error"]
        assert 'nested = "json"' in nested["_error"]


@pytest.mark.parametrize("name", PRESETS)
def test_dry_run_bodies_pass_the_schema(name: str, tmp_path: Path) -> None:
    sample, expected, sent = PRESETS[name]
    mapping = load_mapping(preset(name))
    code, _, payloads = dry_run(tmp_path, preset(name), SAMPLES / sample)
    assert code == 3
    assert len(payloads) == sent
    assert not {p["source"]["line"] for p in payloads} & set(expected)
    for payload in payloads:
        assert payload["path"] == mapping.action.path
        check_body(mapping, payload["body"])
    bodies = [p["body"] for p in payloads]
    batch = mapping.action.bulk
    if batch is not None and batch.kind == "list":
        # All rows in one request, as the importer wraps a chunk.
        schema_of(mapping).validate({batch.list_key: bodies})
    id_key = "company_id" if "company" in name else "user_id"
    ids = [body[id_key] for body in bodies]
    assert all(isinstance(i, str) for i in ids)
    if id_key == "user_id":
        assert ids[:1] == ["007"]


@pytest.mark.parametrize("name", ["import-track", "import-identify", "import-company"])
def test_import_rows_carry_the_constants_and_a_utc_time(name: str, tmp_path: Path) -> None:
    sample, _, _ = PRESETS[name]
    _, _, payloads = dry_run(tmp_path, preset(name), SAMPLES / sample)
    for body in (p["body"] for p in payloads):
        assert body["event_type"] == IMPORT_EVENT_TYPES[name]
        assert body["source"] == IMPORT_SOURCE
        assert ISO_Z.match(body["inserted_at"]), body


@pytest.mark.parametrize(
    ("name", "header", "row"),
    [
        ("import-track", "user_id,event,occurred_at", "007,logged_in,2023-03-14T09:30:00Z"),
        ("import-identify", "user_id,company_id,signed_up_at", "007,,2023-03-14T09:30:00Z"),
        ("import-company", "company_id,created_at", "c-001,2023-03-14T09:30:00Z"),
    ],
)
def test_import_row_without_properties_gets_empty_metadata(
    name: str, header: str, row: str, tmp_path: Path
) -> None:
    """The import docs require metadata on identify rows; the importer always writes it."""
    mapping = load_mapping(preset(name))
    path = tmp_path / "bare.csv"
    path.write_text(f"{header}\n{row}\n")
    # Only the columns the preset names: its metadata.<key> copies of the time are removed.
    text = re.sub(r'^"metadata\.\w+" = .*$', "", preset(name).read_text(), flags=re.MULTILINE)
    text = re.sub(r"\[types\].*", "", text, flags=re.DOTALL)
    bare = tmp_path / "bare.toml"
    bare.write_text(text)
    code, _, [payload] = dry_run(tmp_path, bare, path)
    assert code == 0
    assert payload["body"]["metadata"] == {}
    check_body(mapping, payload["body"])


def test_track_says_the_time_travels_in_metadata(tmp_path: Path) -> None:
    code, out, _ = invoke("validate", str(SAMPLES / EVENTS), "--mapping", str(preset("track")))
    assert code == 3
    assert '"occurred_at"' in out
    assert "import_track" in out
    _, _, payloads = dry_run(tmp_path, preset("track"), SAMPLES / EVENTS)
    times = [p["body"]["metadata"]["occurred_at"] for p in payloads]
    assert all(ISO_Z.match(t) for t in times)
    assert times[2] == "2023-03-15T07:02:44.000Z"  # +01:00 in the sample


@pytest.mark.parametrize("name", ["identify", "bulk-identify"])
def test_booleans_travel_as_booleans_and_nested_json_sends_json_text(
    name: str, tmp_path: Path
) -> None:
    _, _, payloads = dry_run(tmp_path, preset(name), SAMPLES / USERS)
    assert payloads[0]["body"]["metadata"]["beta"] is True
    text = preset(name).read_text().replace('# nested = "json"', 'nested = "json"')
    as_json = tmp_path / "nested.toml"
    as_json.write_text(text)
    _, _, payloads = dry_run(tmp_path, as_json, SAMPLES / USERS)
    [settings] = [p["body"]["metadata"]["settings"] for p in payloads if p["source"]["line"] == 7]
    assert json.loads(settings) == {"theme": "dark", "beta_features": ["sso", "audit-log"]}
    for payload in payloads:
        check_body(load_mapping(as_json), payload["body"])


# A body each schema accepts, and changes to it that break one of Userpilot's rules.
GOOD: dict[str, dict[str, Any]] = {
    "track": {"user_id": "007", "event_name": "logged_in", "metadata": {"plan": "pro", "n": 2}},
    "identify": {
        "user_id": "007",
        "metadata": {"plan": "pro"},
        "company": {"company_id": "c-1", "name": "Acme"},
    },
    "company": {"company_id": "c-1", "metadata": {"employees": 12}},
    "import-track": {
        "event_type": "track",
        "source": IMPORT_SOURCE,
        "user_id": "007",
        "event_name": "logged_in",
        "inserted_at": "2023-03-14T09:30:00.000Z",
        "metadata": {},
    },
    "import-identify": {
        "event_type": "identify_user",
        "source": IMPORT_SOURCE,
        "user_id": "007",
        "company_id": "c-1",
        "inserted_at": "2023-03-14T09:30:00.000Z",
        "metadata": {},
    },
    "import-company": {
        "event_type": "identify_company",
        "source": IMPORT_SOURCE,
        "company_id": "c-1",
        "inserted_at": "2023-03-14T09:30:00.000Z",
        "metadata": {"plan": "pro"},
    },
    "bulk-identify": {"users": [{"user_id": "007", "company_id": "c-1", "metadata": {}}]},
    "bulk-company": {"companies": [{"company_id": "c-1", "metadata": {"plan": "pro"}}]},
}
ID_OF = {name: "company_id" if "company" in name else "user_id" for name in GOOD}


def _row(body: dict[str, Any]) -> dict[str, Any]:
    """The object that holds the ids: the body, or a bulk body's only row."""
    lists = [value for value in body.values() if isinstance(value, list)]
    return lists[0][0] if lists else body


BREAKS: list[tuple[str, str, Any]] = [
    ("numeric id", "id", 7),
    ("empty id", "id", ""),
    ("nested metadata", "metadata", {"settings": {"theme": "dark"}}),
    ("array in metadata", "metadata", {"tags": ["a", "b"]}),
    ("null in metadata", "metadata", {"plan": None}),
    ("undocumented key", "extra", "x"),
]
IMPORT_BREAKS: list[tuple[str, str, Any]] = [
    ("time without zone", "inserted_at", "2024-07-28 08:55:35.874555"),
    ("time with offset", "inserted_at", "2024-07-28T08:55:35+02:00"),
    ("another source", "source", "backend-http"),
    ("another event type", "event_type", "page_view"),
]


@pytest.mark.parametrize("name", GOOD)
def test_schema_accepts_the_good_body(name: str) -> None:
    load_validator(name).validate(GOOD[name])


@pytest.mark.parametrize(
    ("name", "change", "key", "value"),
    [
        pytest.param(name, change, key, value, id=f"{name}-{change}")
        for name in GOOD
        for change, key, value in BREAKS + (IMPORT_BREAKS if name.startswith("import") else [])
    ],
)
def test_schema_refuses_a_broken_body(name: str, change: str, key: str, value: Any) -> None:
    body = copy.deepcopy(GOOD[name])
    _row(body)[ID_OF[name] if key == "id" else key] = value
    with pytest.raises(jsonschema.ValidationError):
        load_validator(name).validate(body)


@pytest.mark.parametrize(
    ("name", "remove"),
    [
        ("track", "event_name"),
        ("identify", "user_id"),
        ("company", "company_id"),
        ("import-track", "inserted_at"),
        ("import-track", "source"),
        ("import-identify", "metadata"),
        ("import-identify", "event_type"),
        ("import-company", "metadata"),
        ("bulk-identify", "user_id"),
        ("bulk-company", "company_id"),
    ],
)
def test_schema_refuses_a_body_without_a_required_key(name: str, remove: str) -> None:
    body = copy.deepcopy(GOOD[name])
    del _row(body)[remove]
    with pytest.raises(jsonschema.ValidationError):
        load_validator(name).validate(body)


def test_identify_schema_refuses_a_company_without_its_id() -> None:
    body = copy.deepcopy(GOOD["identify"])
    del body["company"]["company_id"]
    with pytest.raises(jsonschema.ValidationError, match="company_id"):
        load_validator("identify").validate(body)


@pytest.mark.parametrize(
    ("name", "key"), [("bulk-identify", "users"), ("bulk-company", "companies")]
)
def test_bulk_schema_caps_a_request_at_10000_rows(name: str, key: str) -> None:
    row = GOOD[name][key][0]
    load_validator(name).validate({key: [row] * 10_000})
    with pytest.raises(jsonschema.ValidationError, match="too long"):
        load_validator(name).validate({key: [row] * 10_001})
