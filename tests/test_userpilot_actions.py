"""Every Userpilot action from files: ids always text, metadata of primitives only (nested values
rejected or sent as JSON text), company properties that need a company_id, the import rows'
constants and defaults, and the note about times the live track endpoint does not keep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import polars as pl
import pytest
from click.testing import CliRunner
from pipeline_helpers import NOW, ROOT, write_csv, write_jsonl

from importer.checks.validate import FileState, validate_frame
from importer.cli.app import main
from importer.columns import BODY, ERROR, RULE
from importer.inputs.reader import iter_batches, open_input
from importer.mapping.file import Mapping, parse_mapping
from importer.payloads.build import build_bodies

SCHEMAS = ROOT / "schemas"
TIME = "2024-05-01T10:00:00+02:00"
TIME_Z = "2024-05-01T08:00:00.000Z"
IMPORT = {"source": "backend-http-import"}

# Per action: its fields, the id path that must stay text, and what the import rows add.
ACTIONS: dict[str, tuple[dict[str, str], str, dict[str, str]]] = {
    "track": ({"user_id": "id", "event_name": "event", "metadata": "*"}, "user_id", {}),
    "identify": ({"user_id": "id", "metadata": "*"}, "user_id", {}),
    "company": ({"company_id": "id", "metadata": "*"}, "company_id", {}),
    "import_track": (
        {"user_id": "id", "event_name": "event", "inserted_at": "at", "metadata": "*"},
        "user_id",
        {"event_type": "track", **IMPORT},
    ),
    "import_identify": (
        {"user_id": "id", "inserted_at": "at", "metadata": "*"},
        "user_id",
        {"event_type": "identify_user", **IMPORT},
    ),
    "import_company": (
        {"company_id": "id", "inserted_at": "at", "metadata": "*"},
        "company_id",
        {"event_type": "identify_company", **IMPORT},
    ),
    "bulk_identify": ({"user_id": "id", "metadata": "*"}, "user_id", {}),
    "bulk_company": ({"company_id": "id", "metadata": "*"}, "company_id", {}),
}


def userpilot(action: str, fields: dict[str, str], **changes: Any) -> Mapping:
    raw = {"destination": "userpilot", "action": action, "fields": fields, **changes}
    return parse_mapping(raw, path=Path("test-mapping.toml"))


def run(path: Path, mapping: Mapping) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The bodies (checked against the action's JSON Schema where there is one) and the
    rejects (rule, message) of a file."""
    source = open_input(path)
    state = FileState()
    bodies: list[dict[str, Any]] = []
    rejects: list[tuple[str, str]] = []
    for batch in iter_batches(source, batch_rows=1000):
        checked = validate_frame(batch.frame, mapping, state=state, now=NOW)
        bad = pl.concat([batch.rejects, checked.rejects], how="diagonal_relaxed")
        rejects.extend(zip(bad[RULE].to_list(), bad[ERROR].to_list(), strict=True))
        built = build_bodies(checked.valid, mapping, source=source)
        bodies.extend(json.loads(text) for text in built[BODY].to_list())
    schema = SCHEMAS / f"userpilot-{mapping.action.name.replace('_', '-')}.schema.json"
    if schema.exists():
        validator = jsonschema.Draft202012Validator(json.loads(schema.read_text()))
        batch = mapping.action.bulk
        # A bulk request's body is a list of rows under one key.
        checked = [{batch.list_key: bodies}] if batch and batch.kind == "list" else bodies
        for body in checked if bodies else []:
            validator.validate(body)
    return bodies, rejects


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_action_sends_ids_as_text_from_csv_and_jsonl(tmp_path: Path, action: str) -> None:
    fields, id_path, constants = ACTIONS[action]
    mapping = userpilot(action, fields, types={"at": "timestamp"})
    csv_path = write_csv(tmp_path, "id,event,at,plan,seats", f"007,Signed Up,{TIME},pro,3")
    jsonl_path = write_jsonl(
        tmp_path, {"id": 7, "event": "Signed Up", "at": TIME, "plan": "pro", "seats": 3}
    )
    for path, sent_id in ((csv_path, "007"), (jsonl_path, "7")):
        bodies, rejects = run(path, mapping)
        assert rejects == []
        expected: dict[str, Any] = {**constants, id_path: sent_id}
        metadata: dict[str, Any] = {}
        if "event_name" in fields:
            expected["event_name"] = "Signed Up"
        else:
            metadata["event"] = "Signed Up"
        if "inserted_at" in fields:
            expected["inserted_at"] = TIME_Z
        else:
            # A live or bulk action has no time field: the time is one more property.
            metadata["at"] = TIME_Z
        expected["metadata"] = {**metadata, "plan": "pro", "seats": 3}
        assert bodies == [expected]


@pytest.mark.parametrize("action", ["import_track", "import_identify", "import_company"])
def test_an_import_row_without_properties_has_its_constants_and_empty_metadata(
    tmp_path: Path, action: str
) -> None:
    fields, id_path, constants = ACTIONS[action]
    mapping = userpilot(action, fields, types={"at": "timestamp"})
    columns = [column for column in fields.values() if column != "*"]
    values = {"id": "u1", "event": "Signed Up", "at": TIME}
    path = write_csv(
        tmp_path, ",".join([*columns, "plan"]), ",".join([values[c] for c in columns]) + ","
    )
    bodies, rejects = run(path, mapping)
    assert rejects == []
    (body,) = bodies
    assert {key: body[key] for key in constants} == constants
    assert body[id_path] == "u1"
    assert body["inserted_at"] == TIME_Z
    assert body["metadata"] == {}


def test_metadata_booleans_travel_as_booleans_and_nulls_are_left_out(tmp_path: Path) -> None:
    fields, _, _ = ACTIONS["identify"]
    path = write_jsonl(
        tmp_path, {"id": "u1", "trial": True, "paid": False, "plan": None, "seats": 2.5}
    )
    bodies, _ = run(path, userpilot("identify", fields))
    assert bodies == [{"user_id": "u1", "metadata": {"trial": True, "paid": False, "seats": 2.5}}]


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_typed_booleans_and_numbers_travel_typed_and_text_stays_text(
    tmp_path: Path, action: str
) -> None:
    """Issue 19: booleans and numbers from [types] go as JSON booleans and numbers in live, bulk
    and import rows; untyped text keeps its zeros, and [types] string keeps text as text."""
    fields, _, _ = ACTIONS[action]
    path = write_csv(
        tmp_path, "id,event,at,trial,seats,zip,word", f"u1,Login,{TIME},yes,3,007,true"
    )
    types = {"at": "timestamp", "trial": "boolean", "seats": "number", "word": "string"}
    bodies, rejects = run(path, userpilot(action, fields, types=types))
    assert rejects == []
    (body,) = bodies
    metadata = body["metadata"]
    assert metadata["trial"] is True
    assert metadata["seats"] == 3
    assert not isinstance(metadata["seats"], str)
    assert metadata["zip"] == "007"
    assert metadata["word"] == "true"


NESTED_ROWS = (
    {"id": "u1", "address": {"city": "Oslo", "zip": 150}, "plan": "pro"},
    {"id": "u2", "tags": ["a", "b"], "plan": "pro"},
    {"id": "u3", "plan": "free"},
)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"user_id": "id", "metadata": "*"}, id="star"),
        pytest.param(
            {
                "user_id": "id",
                "metadata.address": "address",
                "metadata.tags": "tags",
                "metadata.plan": "plan",
            },
            id="sub-keys",
        ),
    ],
)
def test_a_nested_metadata_value_is_rejected_naming_its_column(
    tmp_path: Path, fields: dict[str, str]
) -> None:
    path = write_jsonl(tmp_path, *NESTED_ROWS)
    bodies, rejects = run(path, userpilot("identify", fields))
    assert bodies == [{"user_id": "u3", "metadata": {"plan": "free"}}]
    takes = (
        'Userpilot takes only text, numbers and dates in metadata: set nested = "json" in the '
        "mapping to send it as JSON text"
    )
    assert rejects == [
        ("nested", f'column "address" (metadata.address) holds a JSON object; {takes}'),
        ("nested", f'column "tags" (metadata.tags) holds a JSON array; {takes}'),
    ]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"user_id": "id", "metadata": "*"}, id="star"),
        pytest.param(
            {"user_id": "id", "metadata.address": "address", "metadata.tags": "tags"},
            id="sub-keys",
        ),
    ],
)
def test_nested_json_sends_a_nested_value_as_its_json_text(
    tmp_path: Path, fields: dict[str, str]
) -> None:
    path = write_jsonl(tmp_path, *NESTED_ROWS[:2])
    bodies, rejects = run(path, userpilot("identify", fields, nested="json"))
    assert rejects == []
    assert [body["metadata"] for body in bodies] == [
        {
            "address": '{"city":"Oslo","zip":150}',
            **({"plan": "pro"} if "metadata" in fields else {}),
        },
        {"tags": '["a","b"]', **({"plan": "pro"} if "metadata" in fields else {})},
    ]


def test_a_csv_column_of_json_text_typed_json_is_nested_too(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "id,settings", 'u1,"{""theme"": ""dark""}"', 'u2,"[1, 2]"')
    fields = {"user_id": "id", "metadata": "*"}
    _, rejects = run(path, userpilot("identify", fields, types={"settings": "json"}))
    assert [rule for rule, _ in rejects] == ["nested", "nested"]
    bodies, _ = run(path, userpilot("identify", fields, types={"settings": "json"}, nested="json"))
    assert [body["metadata"] for body in bodies] == [
        {"settings": '{"theme":"dark"}'},
        {"settings": "[1,2]"},
    ]


def test_a_whole_metadata_object_is_held_to_primitives(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        {"id": "u1", "props": {"plan": "pro", "trial": True, "note": 'a {nested} "true"'}},
        {"id": "u2", "props": {"plan": "pro", "address": {"city": "Oslo"}, "vip": False}},
    )
    fields = {"user_id": "id", "metadata": "props"}
    bodies, rejects = run(path, userpilot("identify", fields))
    first = {"plan": "pro", "trial": True, "note": 'a {nested} "true"'}
    assert [body["metadata"] for body in bodies] == [first]
    assert [rule for rule, _ in rejects] == ["nested"]
    assert rejects[0][1].startswith('column "props" (metadata) holds a nested JSON object or array')
    bodies, rejects = run(path, userpilot("identify", fields, nested="json"))
    assert rejects == []
    second = {"plan": "pro", "address": '{"city":"Oslo"}', "vip": False}
    assert [body["metadata"] for body in bodies] == [first, second]


def test_a_timestamp_in_metadata_is_sent_as_iso_utc(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "id,event,at", "u1,Login,2024-05-01 10:00:00", "u2,Login,1714550400")
    fields = {"user_id": "id", "event_name": "event", "metadata.occurred_at": "at"}
    mapping = userpilot("track", fields, types={"at": "timestamp"}, timezone="Europe/Oslo")
    bodies, _ = run(path, mapping)
    assert [body["metadata"] for body in bodies] == [
        {"occurred_at": TIME_Z},
        {"occurred_at": "2024-05-01T08:00:00.000Z"},
    ]


@pytest.mark.parametrize(
    ("fields", "rows"),
    [
        pytest.param(
            {"user_id": "id", "company.company_id": "company_id", "company.company": "company"},
            [
                {"id": "u1", "company_id": "c1", "company": "Acme"},
                {"id": "u2", "company": "Acme"},
                {"id": "u3"},
            ],
            id="sub-keys",
        ),
        pytest.param(
            {"user_id": "id", "company": "*"},
            [
                {"id": "u1", "company_id": "c1", "company": "Acme"},
                {"id": "u2", "company": "Acme"},
                {"id": "u3"},
            ],
            id="star",
        ),
        pytest.param(
            {"user_id": "id", "company": "org"},
            [
                {"id": "u1", "org": {"company_id": "c1", "company": "Acme"}},
                {"id": "u2", "org": {"company": "Acme", "company_id": ""}},
                {"id": "u3"},
            ],
            id="whole-object",
        ),
    ],
)
def test_company_properties_need_a_company_id(
    tmp_path: Path, fields: dict[str, str], rows: list[dict[str, Any]]
) -> None:
    bodies, rejects = run(write_jsonl(tmp_path, *rows), userpilot("identify", fields))
    assert bodies == [
        {"user_id": "u1", "company": {"company_id": "c1", "company": "Acme"}},
        {"user_id": "u3"},
    ]
    assert rejects == [("required", "company has properties but no company.company_id")]


# ------------------------------------------------------------------------------ the note

TRACK_FIELDS = {"user_id": "id", "event_name": "event", "metadata.occurred_at": "at"}
NOTE = (
    "note: 2 track events: Userpilot stamps each with the moment it receives it; their original "
    'times travel only as the metadata property "occurred_at" (ISO 8601 UTC). To keep the '
    'dates, use action = "import_track".'
)


def write_mapping(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mapping.toml"
    path.write_text(text)
    return str(path)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout


TRACK_TOML = """destination = "userpilot"
action = "track"
[fields]
user_id = "id"
event_name = "event"
{time}
[types]
at = "timestamp"
"""


def test_validate_and_dry_run_note_that_track_drops_the_time(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path, "id,event,at", f"u1,Login,{TIME}", f"u2,Login,{TIME}", "u3,Login,not a time"
    )
    schema = write_mapping(tmp_path, TRACK_TOML.format(time='"metadata.occurred_at" = "at"'))
    report = tmp_path / "report.json"
    code, out = invoke("validate", str(path), "--schema", schema, "--report", str(report))
    assert code == 3
    assert out.count("note: ") == 1
    assert NOTE in out.splitlines()
    assert json.loads(report.read_text())["notes"] == [NOTE.removeprefix("note: ")]
    out_path = tmp_path / "payloads.jsonl"
    code, out = invoke("run", str(path), "--schema", schema, "--dry-run", "--out", str(out_path))
    assert code == 3
    assert out.count("note: ") == 1
    assert NOTE in out.splitlines()


def test_a_time_that_star_puts_in_metadata_is_named_in_the_note(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "id,event,at", f"u1,Login,{TIME}")
    schema = write_mapping(tmp_path, TRACK_TOML.format(time='metadata = "*"'))
    code, out = invoke("validate", str(path), "--schema", schema)
    assert code == 0
    assert "note: 1 track event: Userpilot stamps" in out
    assert 'only as the metadata property "at" (ISO 8601 UTC)' in out


@pytest.mark.parametrize(
    "mapping",
    [
        pytest.param(TRACK_TOML.format(time="").replace('at = "timestamp"', ""), id="no-time"),
        pytest.param(
            TRACK_TOML.format(time="")
            .replace('action = "track"', 'action = "import_track"')
            .replace('event_name = "event"', 'event_name = "event"\ninserted_at = "at"'),
            id="import-keeps-dates",
        ),
        pytest.param(
            'destination = "vero"\naction = "track"\n[fields]\n"identity.id" = "id"\n'
            'event_name = "event"\n"extras.created_at" = "at"\n[types]\nat = "timestamp"\n',
            id="vero",
        ),
    ],
)
def test_no_note_where_the_time_is_kept_or_there_is_none(tmp_path: Path, mapping: str) -> None:
    path = write_csv(tmp_path, "id,event,at", f"u1,Login,{TIME}")
    code, out = invoke("validate", str(path), "--schema", write_mapping(tmp_path, mapping))
    assert code == 0, out
    assert "note:" not in out


@pytest.mark.parametrize(
    ("when", "sent"),
    [
        pytest.param("2023-03-14T09:31:12.5+01:00", "2023-03-14T08:31:12.500Z", id="offset"),
        pytest.param("2023-03-14 09:31:12.123456", "2023-03-14T09:31:12.123Z", id="micro-naive"),
        pytest.param('"2023-03-14T09:31:12,07Z"', "2023-03-14T09:31:12.070Z", id="comma"),
        pytest.param("1678786272.25", "2023-03-14T09:31:12.250Z", id="epoch"),
    ],
)
def test_an_import_row_keeps_the_milliseconds_of_its_time(
    tmp_path: Path, when: str, sent: str
) -> None:
    # Two events of one user in the same second keep their order only by their fraction.
    fields, _, _ = ACTIONS["import_track"]
    mapping = userpilot("import_track", fields, types={"at": "timestamp"})
    columns = [column for column in fields.values() if column != "*"]
    values = {"id": "u1", "event": "Signed Up", "at": when}
    path = write_csv(tmp_path, ",".join(columns), ",".join(values[c] for c in columns))
    bodies, rejects = run(path, mapping)
    assert rejects == []
    assert bodies[0]["inserted_at"] == sent
