"""Every Vero action on the mock, over real loopback sockets, and the JSON Schemas of their bodies."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from importer.destinations.mocking import MockConfig
from importer.mock.server import RunningMock, start_mock_server

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token"
SUCCESS = {"status": 200, "message": "Success."}
LONG = "x" * 255

# action -> (method, path under /api/v2)
ROUTES = {
    "identify": ("POST", "users/track"),
    "track": ("POST", "events/track"),
    "alias": ("PUT", "users/reidentify"),
    "unsubscribe": ("POST", "users/unsubscribe"),
    "resubscribe": ("POST", "users/resubscribe"),
    "delete": ("POST", "users/delete"),
    "tags": ("PUT", "users/tags/edit"),
}

Answer = tuple[int, dict[str, Any]]


async def call(
    session: aiohttp.ClientSession,
    mock: RunningMock,
    action: str,
    body: object,
    *,
    token: str | None = TOKEN,
    where: str = "body",
    method: str | None = None,
) -> Answer:
    """Send `body` to `action`'s route as Vero's clients do: JSON, the token in body or query."""
    verb, path = ROUTES[action]
    params = {"auth_token": token} if token is not None and where == "query" else {}
    if isinstance(body, dict) and token is not None and where == "body":
        body = {"auth_token": token, **body}
    async with session.request(
        method or verb,
        f"{mock.url}/{path}",
        data=json.dumps(body).encode(),
        params=params,
        headers={"Content-Type": "application/json"},
    ) as resp:
        return resp.status, await resp.json(content_type=None)


def play(calls: list[tuple[str, object]], **options: Any) -> tuple[list[Answer], RunningMock]:
    """Start a mock on 127.0.0.1 that keeps bodies, make `calls` in order, stop it."""

    async def main() -> tuple[list[Answer], RunningMock]:
        mock = await start_mock_server(MockConfig(keep_bodies=True))
        try:
            async with aiohttp.ClientSession() as session:
                answers = [await call(session, mock, a, body, **options) for a, body in calls]
        finally:
            await mock.close()
        return answers, mock

    return asyncio.run(main())


GOOD = [
    pytest.param("identify", {"id": "42", "email": "ada@example.com", "channels": [{"type": "push", "address": "T0K", "platform": "android"}], "data": {"timezone": -5, "birthday": "1990-05-17T00:00:00+0000"}}, id="identify-reserved"),
    pytest.param("identify", {"id": "42", "data": {"timezone": -12, "birthday": 643939200}}, id="identify-tz-min-unix-birthday"),
    pytest.param("identify", {"id": "42", "data": {"timezone": 14, "birthday": "1990-05-17"}}, id="identify-tz-max-date-birthday"),
    pytest.param("identify", {"id": "42", "data": {"timezone": 2.0, "birthday": "643939200"}}, id="identify-integral-float-tz"),
    pytest.param("identify", {"id": "42", "data": {"timezone": None, "birthday": None}}, id="identify-null-reserved"),
    pytest.param("identify", {"id": "42", "channels": []}, id="identify-no-channels"),
    pytest.param("track", {"identity": {"id": "42"}, "event_name": "Viewed product", "extras": {"created_at": "2023-01-01T00:00:00+0000", "source": "import", "check_id": "7"}}, id="track"),
    pytest.param("alias", {"id": "42", "new_id": "crm-42"}, id="alias"),
    pytest.param("alias", {"id": 42, "new_id": 43}, id="alias-numbers"),
    pytest.param("unsubscribe", {"id": "42"}, id="unsubscribe"),
    pytest.param("unsubscribe", {"id": 42}, id="unsubscribe-number"),
    pytest.param("resubscribe", {"id": "42"}, id="resubscribe"),
    pytest.param("delete", {"id": "x" * 254}, id="delete-254-chars"),
    pytest.param("tags", {"id": "42", "add": ["vip"], "remove": []}, id="tags-add"),
    pytest.param("tags", {"id": "42", "add": [], "remove": ["vip", "beta"]}, id="tags-remove"),
    pytest.param("tags", {"id": "42", "add": ["vip"]}, id="tags-add-only"),
]  # fmt: skip


@pytest.mark.parametrize(("action", "body"), GOOD)
@pytest.mark.parametrize("where", ["body", "query"])
def test_good_body_is_accepted_and_recorded(action: str, body: dict[str, Any], where: str) -> None:
    answers, mock = play([(action, body)], where=where)
    assert answers == [(200, SUCCESS)]
    assert mock.state.bodies == [{**body, "_path": ROUTES[action][1], "_duplicate": False}]
    assert mock.state.by_status == {200: 1}


REFUSED = [
    pytest.param("identify", {"id": "1", "data": {"timezone": "+2"}}, "data.timezone must be an integer GMT offset from -12 to 14", id="identify-tz-string"),
    pytest.param("identify", {"id": "1", "data": {"timezone": 2.5}}, "data.timezone must be an integer", id="identify-tz-fraction"),
    pytest.param("identify", {"id": "1", "data": {"timezone": 15}}, "data.timezone must be an integer", id="identify-tz-15"),
    pytest.param("identify", {"id": "1", "data": {"timezone": -13}}, "data.timezone must be an integer", id="identify-tz-minus-13"),
    pytest.param("identify", {"id": "1", "data": {"timezone": True}}, "data.timezone must be an integer", id="identify-tz-bool"),
    pytest.param("identify", {"id": "1", "data": {"birthday": "yesterday"}}, "data.birthday must be an ISO 8601 date or a UNIX timestamp", id="identify-birthday-word"),
    pytest.param("identify", {"id": "1", "data": {"birthday": "1990-02-30"}}, "data.birthday must be", id="identify-birthday-no-such-day"),
    pytest.param("identify", {"id": "1", "data": {"birthday": False}}, "data.birthday must be", id="identify-birthday-bool"),
    pytest.param("identify", {"id": "1", "channels": {}}, "channels must be a JSON array of objects", id="identify-channels-object"),
    pytest.param("identify", {"id": "1", "channels": ["T0K"]}, "channels must be a JSON array of objects", id="identify-channels-of-strings"),
    pytest.param("identify", {"email": "nope"}, "email must be a valid email address", id="identify-bad-email"),
    pytest.param("track", {"identity": {"id": "1"}}, "event_name must be a non-empty string", id="track-no-event-name"),
    pytest.param("alias", {"id": "42"}, "new_id is required", id="alias-no-new-id"),
    pytest.param("alias", {"id": "42", "new_id": ""}, "new_id is required", id="alias-empty-new-id"),
    pytest.param("alias", {"new_id": "43"}, "id is required", id="alias-no-id"),
    pytest.param("alias", {"id": "42", "new_id": "42"}, "new_id must differ from id", id="alias-same-id"),
    pytest.param("alias", {"id": 42, "new_id": "42"}, "new_id must differ from id", id="alias-same-id-number-and-string"),
    pytest.param("alias", {"id": "42", "new_id": LONG}, "new_id must be less than 255 characters", id="alias-new-id-255-chars"),
    pytest.param("alias", {"id": "42", "new_id": True}, "new_id must be a string or a number", id="alias-new-id-bool"),
    pytest.param("unsubscribe", {}, "id is required", id="unsubscribe-no-id"),
    pytest.param("unsubscribe", {"email": "ada@example.com"}, "id is required", id="unsubscribe-email-only"),
    pytest.param("unsubscribe", {"id": LONG}, "id must be less than 255 characters", id="unsubscribe-id-255-chars"),
    pytest.param("resubscribe", {"id": ""}, "id is required", id="resubscribe-empty-id"),
    pytest.param("resubscribe", {"id": ["42"]}, "id must be a string or a number", id="resubscribe-id-list"),
    pytest.param("delete", {"id": None}, "id is required", id="delete-null-id"),
    pytest.param("delete", {"id": {"a": 1}}, "id must be a string or a number", id="delete-id-object"),
    pytest.param("tags", {"add": ["vip"]}, "id is required", id="tags-no-id"),
    pytest.param("tags", {"id": "42", "add": "vip"}, "add must be a JSON array of strings", id="tags-add-string"),
    pytest.param("tags", {"id": "42", "add": ["vip"], "remove": [1]}, "remove must be a JSON array of strings", id="tags-remove-number"),
    pytest.param("tags", {"id": "42", "add": [], "remove": []}, "add or remove must hold at least one tag", id="tags-both-empty"),
    pytest.param("tags", {"id": "42"}, "add is required", id="tags-neither"),
    pytest.param("tags", {"id": "42", "remove": ["vip"]}, "add is required", id="tags-remove-without-add"),
    pytest.param("tags", {"id": "42", "add": None, "remove": ["vip"]}, "add is required", id="tags-null-add"),
    pytest.param("track", {"identity": {"email": "ada@example.com"}, "event_name": "x"}, "identity must contain an id", id="track-email-only"),
    pytest.param("tags", ["42"], "the request body must be a JSON object", id="tags-body-list"),
]  # fmt: skip


@pytest.mark.parametrize(("action", "body", "message"), REFUSED)
def test_rule_break_is_400_with_vero_shape(action: str, body: object, message: str) -> None:
    answers, mock = play([(action, body)], where="query")
    [(status, answer)] = answers
    assert (status, answer["status"]) == (400, 400)
    assert message in answer["message"]
    assert (mock.state.accepted, mock.state.bodies, mock.state.by_status) == (0, [], {400: 1})


@pytest.mark.parametrize("action", ["alias", "unsubscribe", "resubscribe", "delete", "tags"])
def test_user_actions_check_the_token_and_keep_it_out_of_the_record(action: str) -> None:
    body = {"id": "42", "new_id": "43", "add": ["vip"]}
    answers, mock = play([(action, body)], token="wrong-token")
    assert answers[0][0] == 401
    assert answers[0][1]["status"] == 401
    answers, mock = play([(action, body)])
    assert answers == [(200, SUCCESS)]
    assert "auth_token" not in mock.state.bodies[0]


@pytest.mark.parametrize(
    ("action", "method"),
    [
        pytest.param("alias", "POST", id="alias-by-post"),
        pytest.param("tags", "POST", id="tags-by-post"),
        pytest.param("unsubscribe", "PUT", id="unsubscribe-by-put"),
        pytest.param("delete", "DELETE", id="delete-by-delete"),
    ],
)
def test_wrong_method_is_vero_404(action: str, method: str) -> None:
    answers, mock = play([(action, {"id": "42", "new_id": "43", "add": ["vip"]})], method=method)
    assert answers == [(404, {"status": 404, "message": "The resource doesn't exist"})]
    assert mock.state.accepted == 0


def test_only_track_has_a_duplicate_window() -> None:
    event = {"identity": {"id": "42"}, "event_name": "Viewed product"}
    calls: list[tuple[str, object]] = [
        ("alias", {"id": "42", "new_id": "43"}),
        ("alias", {"id": "42", "new_id": "43"}),
        ("tags", {"id": "42", "add": ["vip"]}),
        ("tags", {"id": "42", "add": ["vip"]}),
        ("track", event),
        ("track", event),
    ]
    answers, mock = play(calls)
    assert [status for status, _ in answers] == [200] * 6
    assert [body["_duplicate"] for body in mock.state.bodies] == [False] * 5 + [True]
    assert (mock.state.accepted, mock.state.duplicates) == (6, 1)


def validator(action: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / "schemas" / f"vero-{action}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


SCHEMA_CASES = [
    pytest.param("identify", {"id": "42", "data": {"timezone": -12, "birthday": "1990-05-17T00:00:00+0000", "plan": "pro"}}, {"id": "42", "data": {"timezone": 15}}, id="identify-timezone"),
    pytest.param("identify", {"id": "42", "data": {"timezone": 14}}, {"id": "42", "data": {"timezone": "+2"}}, id="identify-timezone-string"),
    pytest.param("identify", {"id": "42", "data": {"birthday": "1990-05-17T00:00:00+0000"}}, {"id": "42", "data": {"birthday": "yesterday"}}, id="identify-birthday"),
    pytest.param("alias", {"id": "42", "new_id": "43"}, {"id": "42"}, id="alias-no-new-id"),
    pytest.param("alias", {"id": "42", "new_id": "43"}, {"id": "42", "new_id": "43", "email": "a@b.io"}, id="alias-extra-member"),
    pytest.param("unsubscribe", {"id": "42"}, {"id": LONG}, id="unsubscribe-id-255-chars"),
    pytest.param("resubscribe", {"id": "42"}, {}, id="resubscribe-no-id"),
    pytest.param("delete", {"id": "42"}, {"id": ""}, id="delete-empty-id"),
    pytest.param("tags", {"id": "42", "add": ["vip"], "remove": []}, {"id": "42", "add": [], "remove": []}, id="tags-both-empty"),
    pytest.param("tags", {"id": "42", "add": [], "remove": ["vip"]}, {"id": "42", "remove": ["vip"]}, id="tags-remove-without-add"),
    pytest.param("tags", {"id": "42", "add": ["vip", "beta"]}, {"id": "42", "add": "vip"}, id="tags-add-string"),
    pytest.param("tags", {"id": "42", "add": ["vip"]}, {"id": "42", "add": ["vip", 7]}, id="tags-add-number"),
]  # fmt: skip


@pytest.mark.parametrize(("action", "good", "bad"), SCHEMA_CASES)
def test_schema_takes_the_good_body_and_refuses_the_bad(
    action: str, good: dict[str, Any], bad: dict[str, Any]
) -> None:
    check = validator(action)
    assert list(check.iter_errors(good)) == []
    assert list(check.iter_errors(bad)) != []
