"""Userpilot's page views (Bulk Import `page_view` rows) and deletions (`DELETE /v1/users`,
`/v1/companies`): presets, schemas, the mock, and the confirmation that deleting needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from pipeline_helpers import ROOT, write_csv
from test_userpilot_actions import run

import importer.delivery.bulk as bulk_module
from importer.cli.app import main
from importer.delivery.bulk import upload_body
from importer.destinations.userpilot.api import DELETE_INTERVAL_S, MAX_DELETE_IDS, USERPILOT
from importer.mapping.file import load_mapping

SCHEMAS, SAMPLES = ROOT / "schemas", ROOT / "samples"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def received(state: Path) -> list[dict[str, Any]]:
    path = state / "embedded-received.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_page_view_rows_carry_hostname_pathname_and_user_agent(tmp_path: Path) -> None:
    mapping = load_mapping(SCHEMAS / "userpilot-import-page-view.toml")
    bodies, rejects = run(SAMPLES / "userpilot-page-views.csv", mapping)
    assert bodies[0] == {
        "event_type": "page_view",
        "source": "backend-http-import",
        "user_id": "007",
        "hostname": "app.example.com",
        "pathname": "/login",
        "inserted_at": "2023-03-14T09:29:58.000Z",
        "user_agent": "Mozilla/5.0 (Macintosh)",
    }
    assert "user_agent" not in bodies[2]  # empty: left out
    assert rejects == [("required", "hostname is empty")]


def test_page_views_land_through_an_import_job(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, _, err = invoke(
        "run", str(SAMPLES / "userpilot-page-views.csv"),
        "--mapping", str(SCHEMAS / "userpilot-import-page-view.toml"),
        "--endpoint", "embedded", "--state", str(state), "--poll-interval", "0.05", "-q",
    )  # fmt: skip
    assert code == 3, err
    rows = received(state)
    assert [row["pathname"] for row in rows] == [
        "/login",
        "/reports/q1",
        "/billing",
        "/projects/new",
    ]
    assert {row["event_type"] for row in rows} == {"page_view"}


@pytest.mark.parametrize(
    ("preset", "sample", "key", "count"),
    [
        ("delete-users", "userpilot-users.csv", "users", 11),
        ("delete-companies", "userpilot-companies.csv", "companies", 7),
    ],
)
def test_a_deletion_needs_yes_and_then_sends_a_list_of_ids(
    tmp_path: Path, preset: str, sample: str, key: str, count: int
) -> None:
    state = tmp_path / "state"
    args = [
        "run", str(SAMPLES / sample), "--mapping", str(SCHEMAS / f"userpilot-{preset}.toml"),
        "--endpoint", "embedded", "--state", str(state), "-q",
    ]  # fmt: skip
    code, _, err = invoke(*args)
    assert code == 2
    assert "cannot be undone: add --yes" in err
    assert received(state) == []
    code, out, _ = invoke(*args[:-1], "--dry-run")
    assert f"this would delete {count:,} {key}" in out
    assert received(state) == []
    code, _, err = invoke(*args, "--yes")
    assert code == 3, err  # each sample has one row without an id
    (body,) = received(state)
    assert body.pop("_path") == f"v1/{key}"
    body.pop("_duplicate")
    assert len(body[key]) == count
    schema = json.loads((SCHEMAS / f"userpilot-{preset}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(body)


def test_a_deletion_asks_on_a_terminal_and_no_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importer.cli.run as run_command

    asked: list[str] = []
    # As on a terminal (CliRunner's stdin is not one), answering no.
    monkeypatch.setattr(run_command, "confirmation", lambda: lambda q: asked.append(q) or False)
    state = tmp_path / "state"
    path = write_csv(tmp_path, "user_id", "u1")
    code, _, err = invoke(
        "run", str(path), "--mapping", str(SCHEMAS / "userpilot-delete-users.toml"),
        "--endpoint", "embedded", "--state", str(state), "-q",
    )  # fmt: skip
    assert code == 2
    assert "not confirmed" in err
    assert len(asked) == 1
    assert "cannot be undone" in asked[0]
    assert received(state) == []


def test_a_deletion_body_is_a_list_of_ids() -> None:
    batch = USERPILOT.actions["delete_users"].bulk
    assert batch is not None
    assert batch.method == "DELETE"
    assert batch.min_interval_s >= 2.0  # "1 request every 2 seconds"
    content = b'{"user_id":"007"}\n{"user_id":"u 2"}\n'
    assert json.loads(upload_body(batch, content)) == {"users": ["007", "u 2"]}


def test_vero_delete_needs_yes_too(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "user_id", "u1")
    state = tmp_path / "state"
    args = [
        "run", str(path), "--mapping", str(SCHEMAS / "vero-delete.toml"),
        "--endpoint", "embedded", "--state", str(state), "-q",
    ]  # fmt: skip
    code, _, err = invoke(*args)
    assert code == 2
    assert "delete deletes users in Vero" in err
    assert invoke(*args, "--yes")[0] == 0
    assert [body["id"] for body in received(state)] == ["u1"]


def test_deletion_requests_go_two_seconds_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "1 request every 2 seconds" (docs.userpilot.com/api-references/delete/overview): the
    second chunk of ids waits for the rest of the two seconds (the wait is recorded here,
    not slept)."""
    waits: list[float] = []

    async def recorded(self: object, seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(bulk_module._UploadClient, "wait", recorded)
    ids = [f"u{i}" for i in range(MAX_DELETE_IDS + 500)]
    path = write_csv(tmp_path, "user_id", *ids)
    state = tmp_path / "state"
    code, _, err = invoke(
        "run", str(path), "--mapping", str(SCHEMAS / "userpilot-delete-users.toml"),
        "--endpoint", "embedded", "--state", str(state), "-q", "--yes",
    )  # fmt: skip
    assert code == 0, err
    assert [len(body["users"]) for body in received(state)] == [MAX_DELETE_IDS, 500]
    assert waits[0] == 0.0
    assert 1.0 < max(waits) <= DELETE_INTERVAL_S
