"""Every Vero action from files: the presets, each action's own rules, and bodies that fit the
JSON Schemas written from the seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from pipeline_helpers import ROOT, run_file, write_csv, write_jsonl

from importer.cli.app import main
from importer.destinations.vero.api import VERO
from importer.mapping.file import load_mapping

SCHEMAS = ROOT / "schemas"


def preset(action: str) -> Any:
    return load_mapping(SCHEMAS / f"vero-{action}.toml")


def rejects_of(outcome: Any) -> list[tuple[int, str, str]]:
    return list(
        zip(
            outcome.rejects["__line"].to_list(),
            outcome.rejects["__rule"].to_list(),
            outcome.rejects["__error"].to_list(),
            strict=True,
        )
    )


def test_alias_needs_two_different_ids(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "user_id,new_id", "u1,u2", "u3,u3", "u4,", ",u5", "7,8")
    outcome = run_file(path, preset("alias"))
    assert outcome.bodies == [{"id": "u1", "new_id": "u2"}, {"id": "7", "new_id": "8"}]
    assert rejects_of(outcome) == [
        (3, "distinct", "new_id is the same as id (u3)"),
        (4, "required", "new_id is empty"),
        (5, "required", "id is empty"),
    ]


def test_track_with_only_an_email_sends_the_email_as_the_id(tmp_path: Path) -> None:
    """Seed 003: the identity "must contain an id"; identify already uses the email as the id."""
    path = write_csv(
        tmp_path,
        "user_id,email,event,occurred_at",
        ",ada@example.com,Signed up,2024-01-01T00:00:00Z",
        "u2,bob@example.com,Signed up,2024-01-01T00:00:00Z",
    )
    outcome = run_file(path, preset("track"))
    identities = [body["identity"] for body in outcome.bodies]
    assert identities == [
        {"id": "ada@example.com", "email": "ada@example.com"},
        {"id": "u2", "email": "bob@example.com"},
    ]
    schema = jsonschema.Draft202012Validator(
        json.loads((SCHEMAS / "vero-track.schema.json").read_text())
    )
    for body in outcome.bodies:
        schema.validate(body)


@pytest.mark.parametrize("action", ["unsubscribe", "resubscribe", "delete"])
def test_the_id_actions_send_the_id_alone(tmp_path: Path, action: str) -> None:
    path = write_csv(
        tmp_path, "user_id,email", "u1,a@example.com", ",b@example.com", f"{'x' * 300},"
    )
    outcome = run_file(path, preset(action))
    assert outcome.bodies == [{"id": "u1"}]
    assert [(line, rule) for line, rule, _ in rejects_of(outcome)] == [
        (3, "required"),
        (4, "length"),
    ]


def test_tags_from_delimited_text_and_json_arrays(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "user_id,tags_add,tags_remove",
        "u1,vip; beta,",
        'u2,"[""a"", ""b""]",old',
        "u3,,",
        "u4,;;,",
        "u5,,gone",
    )
    outcome = run_file(path, preset("tags"))
    assert outcome.bodies == [
        {"id": "u1", "add": ["vip", "beta"]},
        {"id": "u2", "add": ["a", "b"], "remove": ["old"]},
        {"id": "u5", "add": [], "remove": ["gone"]},
    ]
    assert [(line, rule) for line, rule, _ in rejects_of(outcome)] == [(4, "empty"), (5, "empty")]
    assert (
        rejects_of(outcome)[0][2] == "nothing to do: add (tags_add), remove (tags_remove) all empty"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            {"x": 1}, 'add must be a JSON array of strings such as ["vip", "beta"]', id="object"
        ),
        pytest.param([1, 2], "add must be a JSON array of strings", id="numbers"),
        pytest.param(["a", ""], "add must be a JSON array of strings", id="empty-tag"),
        pytest.param("vip;beta", "add must be a JSON array of strings", id="text-without-split"),
    ],
)
def test_a_tag_list_that_is_not_a_list_of_strings_is_rejected(
    tmp_path: Path, value: object, message: str
) -> None:
    path = write_jsonl(tmp_path, {"user_id": "u1", "tags_add": value})
    mapping = load_mapping(SCHEMAS / "vero-tags.toml")
    fields = {"id": "user_id", "add": "tags_add"}
    outcome = run_file(path, type(mapping)(**{**_as_dict(mapping), "fields": fields, "split": {}}))
    assert outcome.bodies == []
    ((_, rule, error),) = rejects_of(outcome)
    assert rule == "list"
    assert error.startswith(message)


def _as_dict(mapping: Any) -> dict[str, Any]:
    return {name: getattr(mapping, name) for name in mapping.__dataclass_fields__}


def test_identify_checks_timezone_and_birthday(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "user_id,email,timezone,birthday",
        "u1,a@example.com,-7,1990-04-01",
        "u2,,+2,",
        "u3,,15,",
        "u4,,,yesterday",
        "u5,,10,638928000",
    )
    outcome = run_file(path, preset("identify"))
    assert outcome.bodies == [
        {
            "id": "u1",
            "email": "a@example.com",
            "data": {"timezone": -7, "birthday": "1990-04-01T00:00:00+0000"},
        },
        {"id": "u5", "data": {"timezone": 10, "birthday": "1990-04-01T00:00:00+0000"}},
    ]
    assert rejects_of(outcome) == [
        (3, "integer", "data.timezone must be a whole number from -12 to 14, not +2"),
        (4, "integer", "data.timezone must be a whole number from -12 to 14, not 15"),
        (
            5,
            "timestamp",
            "yesterday is not a time (ISO 8601, epoch seconds or milliseconds)",
        ),
    ]


SUBSCRIPTIONS = ROOT / "samples" / "subscriptions.csv"


@pytest.mark.parametrize(
    ("action", "delivered", "bad_lines"),
    [
        pytest.param("tags", 98, [11, 51], id="tags"),
        pytest.param("alias", 98, [21, 51], id="alias"),
        pytest.param("unsubscribe", 99, [51], id="unsubscribe"),
        pytest.param("resubscribe", 99, [51], id="resubscribe"),
        pytest.param("delete", 99, [51], id="delete"),
    ],
)
def test_each_preset_from_file_to_what_the_mock_recorded(
    tmp_path: Path, action: str, delivered: int, bad_lines: list[int]
) -> None:
    state, rejects = tmp_path / "state", tmp_path / "rejects.jsonl"
    result = CliRunner().invoke(
        main,
        [
            "run", str(SUBSCRIPTIONS), "--mapping", str(SCHEMAS / f"vero-{action}.toml"),
            "--endpoint", "embedded", "--state", str(state), "--rejects", str(rejects), "-q",
            "--yes",  # delete cannot be undone: it asks, or needs --yes
        ],
    )  # fmt: skip
    assert result.exit_code == 3, result.stderr
    received = (state / "embedded-received.jsonl").read_text().splitlines()
    recorded = [json.loads(line) for line in received]
    assert len(recorded) == delivered
    method, path = {
        "tags": ("PUT", "users/tags/edit"),
        "alias": ("PUT", "users/reidentify"),
    }.get(action, ("POST", f"users/{action}"))
    schema = jsonschema.Draft202012Validator(
        json.loads((SCHEMAS / f"vero-{action}.schema.json").read_text())
    )
    for body in recorded:
        assert body.pop("_path") == path
        body.pop("_duplicate")
        schema.validate(body)
    assert VERO.actions[action].method == method
    assert [json.loads(line)["_line"] for line in rejects.read_text().splitlines()] == bad_lines
