"""The mock Vero, driven over real loopback sockets by a real aiohttp client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from importer.cli.app import main
from importer.destinations.mocking import Judgement, MockConfig
from importer.errors import MappingError
from importer.mock.server import RunningMock, embedded_mock, mock_config, serve, start_mock_server

TOKEN = "test-token"
UNAUTHORIZED = {
    "status": 401,
    "message": "Invalid authentication: You must provide a valid auth_token to access this resource.",
}
SUCCESS = {"status": 200, "message": "Success."}
EVENT: dict[str, Any] = {"identity": {"id": "42"}, "event_name": "Viewed product"}
USER: dict[str, Any] = {"id": "42", "email": "ada@example.com", "data": {"plan": "pro"}}

Scenario = Callable[[RunningMock, aiohttp.ClientSession], Awaitable[None]]
Answer = tuple[int, dict[str, Any], Mapping[str, str]]


class FakeClock:
    """A monotonic clock the test moves by hand, so the dedup window needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(
    scenario: Scenario, config: MockConfig | None = None, clock: FakeClock | None = None
) -> RunningMock:
    """Start a mock on a free loopback port, play `scenario` against it, stop it."""

    async def main() -> RunningMock:
        mock = await start_mock_server(config or MockConfig(), clock=clock or time.monotonic)
        try:
            async with aiohttp.ClientSession() as session:
                await scenario(mock, session)
        finally:
            await mock.close()
        return mock

    return asyncio.run(main())


async def send(
    session: aiohttp.ClientSession,
    url: str,
    body: object,
    *,
    token: str | None = TOKEN,
    where: str = "body",
    path: str = "events/track",
) -> Answer:
    """POST `body` as JSON with the token in the body or the query string."""
    params = {}
    if isinstance(body, dict) and token is not None and where == "body":
        body = {"auth_token": token, **body}
    elif token is not None and where == "query":
        params = {"auth_token": token}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    async with session.post(f"{url}/{path}", data=data, params=params, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


def statuses_of(config: MockConfig, bodies: list[dict[str, Any]]) -> list[int | str]:
    """The status each body gets in turn ("drop" when the connection is closed on it)."""
    seen: list[int | str] = []

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        for body in bodies:
            try:
                seen.append((await send(session, mock.url, body))[0])
            except aiohttp.ServerDisconnectedError:
                seen.append("drop")

    run(scenario, config)
    return seen


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("users/track", USER, id="identify"),
        pytest.param("events/track", EVENT, id="track"),
    ],
)
@pytest.mark.parametrize("where", ["body", "query"])
def test_valid_call_succeeds(path: str, body: dict[str, Any], where: str) -> None:
    answers: list[Answer] = []

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        answers.append(await send(session, mock.url, body, path=path, where=where))

    mock = run(scenario)
    assert answers[0][:2] == (200, SUCCESS)
    assert mock.state.accepted == 1
    assert mock.url.startswith("http://127.0.0.1:")
    assert not mock.url.startswith("http://127.0.0.1:0/")
    assert mock.url.endswith("/api/v2")


@pytest.mark.parametrize(
    ("token", "where"),
    [
        pytest.param("wrong-token", "body", id="wrong-in-body"),
        pytest.param("wrong-token", "query", id="wrong-in-query"),
        pytest.param(None, "body", id="missing"),
        pytest.param("", "body", id="empty"),
        pytest.param("\ud800", "body", id="lone-surrogate"),
    ],
)
def test_bad_token_is_401(token: str | None, where: str) -> None:
    answers: list[Answer] = []

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        answers.append(await send(session, mock.url, EVENT, token=token, where=where))

    mock = run(scenario)
    assert answers[0][:2] == (401, UNAUTHORIZED)
    assert mock.state.accepted == 0
    assert mock.state.by_status == {401: 1}


LONG = "x" * 255
BAD_BODIES = [
    pytest.param("events/track", b"{not json", "JSON object", id="not-json"),
    pytest.param("events/track", [EVENT], "JSON object", id="body-is-a-list"),
    pytest.param("users/track", {"data": {}}, "id or an email", id="identify-without-id-or-email"),
    pytest.param("users/track", {"id": True}, "id or an email", id="identify-bool-id"),
    pytest.param("users/track", {"id": ""}, "id or an email", id="identify-empty-id"),
    pytest.param("users/track", {"id": {"a": 1}, "email": "a@b.io"}, "id must be a string or a number", id="id-object"),
    pytest.param("users/track", {"id": LONG}, "id must be less than 255", id="id-255-chars"),
    pytest.param("users/track", {"email": f"{LONG}@x.io"}, "email must be less than 255", id="email-too-long"),
    pytest.param("users/track", {"id": "1", "email": "ada.example.com"}, "valid email", id="email-no-at"),
    pytest.param("users/track", {"id": "1", "email": "a@b@c.io"}, "valid email", id="email-two-at"),
    pytest.param("users/track", {"id": "1", "email": "@example.com"}, "valid email", id="email-empty-local"),
    pytest.param("users/track", {"id": "1", "email": "ada@localhost"}, "valid email", id="email-no-dot"),
    pytest.param("users/track", {"id": "1", "email": "ada @example.com"}, "valid email", id="email-space"),
    pytest.param("users/track", {"id": "1", "data": "pro"}, "data must be a JSON object", id="identify-data-string"),
    pytest.param("users/track", {"id": "1", "channels": {}}, "channels must be", id="channels-not-array"),
    pytest.param("events/track", {"event_name": "x"}, "identity must be a JSON object", id="no-identity"),
    pytest.param("events/track", {"identity": "42", "event_name": "x"}, "identity must be", id="identity-string"),
    pytest.param("events/track", {"identity": {}, "event_name": "x"}, "identity must contain an id", id="identity-empty"),
    # Seed 003: the identity "must contain an id" (the importer sends an email alone as the id).
    pytest.param("events/track", {"identity": {"email": "a@b.io"}, "event_name": "x"}, "identity must contain an id", id="identity-email-only"),
    pytest.param("events/track", {"identity": {"id": LONG}, "event_name": "x"}, "identity.id must", id="identity-id-too-long"),
    pytest.param("events/track", {"identity": {"id": 1, "email": "nope"}, "event_name": "x"}, "identity.email must be a valid", id="identity-bad-email"),
    pytest.param("events/track", {"identity": {"id": 1}}, "event_name", id="event-name-missing"),
    pytest.param("events/track", {"identity": {"id": 1}, "event_name": ""}, "event_name", id="event-name-empty"),
    pytest.param("events/track", {"identity": {"id": 1}, "event_name": 7}, "event_name", id="event-name-number"),
    pytest.param("events/track", {"identity": {"id": 1}, "event_name": LONG}, "less than 255", id="event-name-255-chars"),
    pytest.param("events/track", {**EVENT, "data": [1]}, "data must be a JSON object", id="data-list"),
    pytest.param("events/track", {**EVENT, "data": None}, "data must be a JSON object", id="data-null"),
    pytest.param("events/track", {**EVENT, "extras": "x"}, "extras must be a JSON object", id="extras-string"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "message"), BAD_BODIES)
def test_rule_breaks_are_400(path: str, body: object, message: str) -> None:
    answers: list[Answer] = []

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        answers.append(await send(session, mock.url, body, path=path, where="query"))

    mock = run(scenario)
    status, payload, _ = answers[0]
    assert (status, payload["status"]) == (400, 400)
    assert message in payload["message"]
    assert mock.state.accepted == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("users/track", {"id": 1000}, id="numeric-id"),
        pytest.param("users/track", {"email": "ada@example.co.uk"}, id="email-only"),
        pytest.param("users/track", {"id": "x" * 254}, id="id-254-chars"),
        pytest.param("users/track", {"id": "1", "email": ""}, id="blank-email-with-id"),
        pytest.param(
            "events/track",
            {"identity": {"id": "a@b.io", "email": "a@b.io"}, "event_name": "x"},
            id="identity-email-as-id",
        ),
        pytest.param("events/track", {**EVENT, "data": {}, "extras": {}}, id="empty-objects"),
    ],
)
def test_edges_of_the_rules_are_accepted(path: str, body: dict[str, Any]) -> None:
    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        assert (await send(session, mock.url, body, path=path))[0] == 200

    run(scenario)


def event(name: str = "Viewed product", user: object = "42", **rest: Any) -> dict[str, Any]:
    return {"identity": {"id": user}, "event_name": name, **rest}


DEDUP_PAIRS = [
    pytest.param(event(), event(), True, id="same-user-same-name-no-data"),
    pytest.param(event("Purchased Item"), event("purchased_item"), True, id="case-space-underscore-fold"),
    pytest.param(event("Purchased Item"), event("PURCHASED ITEM"), True, id="case-fold"),
    pytest.param(event("Purchased Item"), event("PurchasedItem"), False, id="letters-differ"),
    pytest.param(event(user="42"), event(user=42), True, id="numeric-id-same-as-string"),
    pytest.param(event(user="42"), event(user="43"), False, id="other-user"),
    pytest.param({"identity": {"id": "a@b.io", "email": "a@b.io"}, "event_name": "x"}, {"identity": {"id": "a@b.io"}, "event_name": "x"}, True, id="email-as-identifier"),
    pytest.param(event(data={"a": 1, "b": 2}), event(data={"b": 2, "a": 1}), True, id="same-data-other-key-order"),
    pytest.param(event(data={"a": 1}), event(data={"a": 2}), False, id="other-data"),
    pytest.param(event(data={"a": 1}), event(), False, id="data-then-none"),
    pytest.param(event(data={"a": 1}, extras={"check_id": 1}), event(data={"a": 1}, extras={"check_id": 2}), True, id="data-wins-over-check-id"),
    pytest.param(event(extras={"check_id": 1}), event(extras={"check_id": 1}), True, id="same-check-id"),
    pytest.param(event(extras={"check_id": 1}), event(extras={"check_id": 2}), False, id="other-check-id"),
    pytest.param(event(extras={"check_id": 1}), event(), False, id="check-id-then-none"),
    pytest.param(event(extras={"created_at": "2020-01-01T00:00:00+0000"}), event(extras={"created_at": "2021-01-01T00:00:00+0000"}), True, id="created-at-not-in-key"),
]  # fmt: skip


@pytest.mark.parametrize(("first", "second", "duplicate"), DEDUP_PAIRS)
def test_dedup_key_rules(first: dict[str, Any], second: dict[str, Any], duplicate: bool) -> None:
    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        for body in (first, second):
            assert (await send(session, mock.url, body))[:2] == (200, SUCCESS)

    mock = run(scenario, MockConfig(keep_bodies=True))
    assert [body["_duplicate"] for body in mock.state.bodies] == [False, duplicate]
    assert (mock.state.accepted, mock.state.duplicates) == (2, int(duplicate))


def test_dedup_window_runs_from_first_sighting_on_the_given_clock() -> None:
    clock = FakeClock()

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        for offset in (0.0, 299.9, 300.0, 400.0, 600.1):
            clock.now = 1000.0 + offset
            await send(session, mock.url, EVENT)
        await send(session, mock.url, USER, path="users/track")
        await send(session, mock.url, USER, path="users/track")

    mock = run(scenario, MockConfig(dedup_window_s=300, keep_bodies=True), clock)
    assert [body["_duplicate"] for body in mock.state.bodies] == [
        False,  # t=0 opens the window
        True,  # t=299.9 inside it
        False,  # t=300 outside: opens a new one
        True,  # t=400 inside the new one
        False,  # t=600.1 past it
        False,  # identify is never a duplicate
        False,
    ]


def test_dedup_window_zero_disables() -> None:
    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        for _ in range(3):
            await send(session, mock.url, EVENT)

    mock = run(scenario, MockConfig(dedup_window_s=0))
    assert (mock.state.accepted, mock.state.duplicates) == (3, 0)


def test_record_holds_accepted_bodies_only_without_token(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    lines_while_running: list[int] = []

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        await send(session, mock.url, USER, path="users/track")
        await send(session, mock.url, EVENT, where="query")
        await send(session, mock.url, EVENT, where="query")
        await send(session, mock.url, EVENT, token="wrong-token")
        await send(session, mock.url, {"identity": {}}, path="events/track")
        lines_while_running.append(len(record.read_text().splitlines()))

    run(scenario, MockConfig(record=record, status_script=(200, 200, 200, 200, 200, 503)))
    text = record.read_text()
    assert TOKEN not in text
    assert "wrong-token" not in text
    assert lines_while_running == [3]  # flushed per write, readable by another process
    assert [json.loads(line) for line in text.splitlines()] == [
        {**USER, "_path": "users/track", "_duplicate": False},
        {**EVENT, "_path": "events/track", "_duplicate": False},
        {**EVENT, "_path": "events/track", "_duplicate": True},
    ]


@pytest.mark.parametrize("retry_after", ["7", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_429_carries_retry_after(retry_after: str) -> None:
    answers: list[Answer] = []

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        answers.append(await send(session, mock.url, EVENT))

    mock = run(scenario, MockConfig(rate_429=1.0, retry_after=retry_after))
    status, payload, headers = answers[0]
    assert (status, payload["status"], headers["Retry-After"]) == (429, 429, retry_after)
    assert mock.state.accepted == 0


def test_5xx_faults_take_turns() -> None:
    assert statuses_of(MockConfig(rate_5xx=1.0), [EVENT] * 4) == [500, 502, 503, 500]


def test_drop_closes_the_connection_without_an_answer() -> None:
    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await send(session, mock.url, EVENT)
        assert (await send(session, mock.url, EVENT))[:2] == (200, SUCCESS)

    mock = run(scenario, MockConfig(status_script=(0,)))
    assert (mock.state.dropped, mock.state.accepted) == (1, 1)
    assert statuses_of(MockConfig(rate_drop=1.0), [EVENT] * 2) == ["drop", "drop"]


def test_random_faults_repeat_with_the_seed() -> None:
    config = MockConfig(seed=7, rate_429=0.3, rate_5xx=0.3, dedup_window_s=0)
    first = statuses_of(config, [EVENT] * 40)
    assert first == statuses_of(config, [EVENT] * 40)
    assert {200, 429} <= set(first)
    assert set(first) <= {200, 429, 500, 502, 503}


def test_fail_first_fails_each_distinct_body_n_times() -> None:
    other = event(user="43")
    statuses = statuses_of(MockConfig(fail_first=2), [EVENT, EVENT, other, EVENT, other, other])
    assert statuses == [503, 503, 503, 200, 503, 200]


def test_status_script_answers_the_first_requests_in_order() -> None:
    config = MockConfig(status_script=(429, 0, 502, 200, 400))
    assert statuses_of(config, [EVENT] * 6) == [429, "drop", 502, 200, 400, 200]


def test_slow_requests_are_delayed_then_answered() -> None:
    waited: list[float] = []

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        assert (await send(session, mock.url, EVENT))[0] == 200
        waited.append(time.monotonic() - started)

    run(scenario, MockConfig(rate_slow=1.0, slow_s=0.05))
    assert waited[0] >= 0.05


def test_stats_endpoint_and_unknown_routes() -> None:
    stats: list[dict[str, Any]] = []

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        await send(session, mock.url, EVENT)  # scripted 503
        await send(session, mock.url, EVENT)
        await send(session, mock.url, EVENT)
        await send(session, mock.url, EVENT, token=None)
        await send(session, mock.url, {"id": 1}, path="users/teleport")
        async with session.get(mock.stats_url) as resp:
            stats.append(await resp.json())

    run(scenario, MockConfig(status_script=(503,)))
    assert stats == [
        {
            "requests": 4,
            "accepted": 2,
            "duplicates": 1,
            "dropped": 0,
            "window_peak": 0,
            "by_status": {"200": 2, "401": 1, "404": 1, "503": 1},
        }
    ]


def test_unknown_route_answers_vero_404() -> None:
    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        answer = await send(session, mock.url, {"id": "1"}, path="users/reidentify")
        assert answer[:2] == (404, {"status": 404, "message": "The resource doesn't exist"})
        async with session.get(f"{mock.url}/events/track") as resp:
            assert resp.status == 404

    run(scenario)


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(MappingError) as caught:
        MockConfig(rate_429=1.5, slow_s=-1, retry_after="soon", status_script=(42,), token="")
    message = str(caught.value)
    for part in ("rate_429", "slow_s", "retry_after", "status_script", "token"):
        assert part in message
    with pytest.raises(MappingError, match="must not exceed 1"):
        MockConfig(rate_429=0.5, rate_5xx=0.3, rate_drop=0.3)


def test_unusable_port_or_record_is_a_user_error(tmp_path: Path) -> None:
    async def main() -> None:
        async with embedded_mock() as mock:
            port = int(mock.url.rsplit(":", 1)[1].split("/")[0])
            with pytest.raises(MappingError, match=f"cannot listen on 127.0.0.1:{port}"):
                await start_mock_server(MockConfig(), port=port)
        with pytest.raises(MappingError, match="cannot open the record file"):
            await start_mock_server(MockConfig(record=tmp_path / "missing" / "r.jsonl"))

    asyncio.run(main())


def test_embedded_mock_listens_only_inside_the_block() -> None:
    async def main() -> None:
        async with embedded_mock(MockConfig()) as mock, aiohttp.ClientSession() as session:
            assert (await send(session, mock.url, EVENT))[0] == 200
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await send(session, mock.url, EVENT)

    asyncio.run(main())


def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    answers: list[int] = []

    def poke(url: str) -> None:
        request = urllib.request.Request(
            f"{url}/users/track?auth_token={TOKEN}",
            data=json.dumps(USER).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                answers.append(resp.status)
        finally:  # stop serve() even when the call failed, so a bug cannot hang the suite
            os.kill(os.getpid(), signal.SIGTERM)

    def on_ready(url: str) -> None:
        threading.Thread(target=poke, args=(url,), daemon=True).start()

    serve(MockConfig(record=tmp_path / "r.jsonl"), "127.0.0.1", 0, on_ready=on_ready)
    assert answers == [200]
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1


def test_rate_limit_is_a_token_bucket_per_token() -> None:
    clock = FakeClock()
    seen: list[tuple[int, str | None]] = []

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        async def call(token: str = TOKEN) -> None:
            status, _, headers = await send(session, mock.url, EVENT, token=token)
            seen.append((status, headers.get("Retry-After")))

        for _ in range(3):
            await call()  # a bucket of two: the third finds it empty
        await call("other-token")  # its own bucket: let through, then refused by the auth
        clock.now += 0.25  # half a request's worth of room: not yet
        await call()
        clock.now += 0.25
        await call()

    mock = run(scenario, MockConfig(limit_rps=2, dedup_window_s=0), clock)
    assert seen == [(200, None), (200, None), (429, "1"), (401, None), (429, "1"), (200, None)]
    assert mock.state.by_status[429] == 2


def test_retry_after_of_the_rate_limit_rounds_up_to_whole_seconds() -> None:
    seen: list[str | None] = []

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        for _ in range(2):
            seen.append((await send(session, mock.url, EVENT))[2].get("Retry-After"))

    run(scenario, MockConfig(limit_rps=0.4, dedup_window_s=0), FakeClock())
    assert seen == [None, "3"]  # a bucket of one; the next room comes in 2.5 s


class HeaderAPI:
    """Another API's shape: token in a header, 202 on success, its own error JSON."""

    base_path = "/v9"
    routes = frozenset({("POST", "ping")})

    def credential(self, request: web.Request, body: object) -> object:
        return request.headers.get("Authorization", "").removeprefix("Token ") or None

    def judge(self, method: str, path: str, body: object) -> Judgement:
        if not isinstance(body, dict) or "n" not in body:
            return Judgement(422, self.answer(422))
        return Judgement(202, b'{"ok": true}', record=body, dedup_key=("n", body["n"]))

    def answer(self, status: int) -> bytes:
        return json.dumps({"errors": [{"error_code": status}]}).encode()


def test_another_api_plugs_in_through_the_interface() -> None:
    seen: list[tuple[int, Any]] = []
    stats: list[dict[str, Any]] = []

    async def main() -> RunningMock:
        mock = await start_mock_server(MockConfig(keep_bodies=True), api=HeaderAPI())
        try:
            async with aiohttp.ClientSession() as session:
                for token, path, body in [
                    (TOKEN, "ping", {"n": 1}),
                    (TOKEN, "ping", {"n": 1}),
                    (TOKEN, "ping", {"m": 1}),
                    ("wrong-token", "ping", {"n": 2}),
                    (TOKEN, "users/track", {"n": 3}),
                ]:
                    headers = {"Authorization": f"Token {token}"}
                    url = f"{mock.url}/{path}"
                    async with session.post(url, json=body, headers=headers) as resp:
                        seen.append((resp.status, await resp.json(content_type=None)))
                async with session.get(mock.stats_url) as resp:
                    stats.append(await resp.json())
        finally:
            await mock.close()
        return mock

    mock = asyncio.run(main())
    assert mock.url.endswith("/v9")
    assert seen == [
        (202, {"ok": True}),
        (202, {"ok": True}),
        (422, {"errors": [{"error_code": 422}]}),
        (401, {"errors": [{"error_code": 401}]}),
        (404, {"errors": [{"error_code": 404}]}),
    ]
    assert mock.state.bodies == [
        {"n": 1, "_path": "ping", "_duplicate": False},
        {"n": 1, "_path": "ping", "_duplicate": True},
    ]
    assert stats[0]["by_status"] == {"202": 2, "401": 1, "404": 1, "422": 1}


def test_a_429_without_retry_after_when_it_is_none() -> None:
    answers: list[Answer] = []

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        answers.append(await send(session, mock.url, EVENT))

    run(scenario, MockConfig(rate_429=1.0, retry_after=None))
    status, payload, headers = answers[0]
    assert (status, payload["status"], headers.get("Retry-After")) == (429, 429, None)


def test_the_window_counts_every_arrival_across_routes_without_a_bucket_hook() -> None:
    clock = FakeClock()
    seen: list[tuple[int, str | None]] = []

    async def scenario(mock: RunningMock, session: aiohttp.ClientSession) -> None:
        async def call(path: str, body: dict[str, Any], token: str = TOKEN) -> None:
            status, _, headers = await send(session, mock.url, body, path=path, token=token)
            seen.append((status, headers.get("Retry-After")))

        await call("events/track", EVENT)
        await call("users/track", USER)
        await call("events/track", EVENT)
        await call("events/track", EVENT, "other-token")  # its own span: on to the 401
        clock.now += 10.0  # the first two leave the span; the refused third stays
        await call("events/track", EVENT)

    config = MockConfig(limit_window=(2, 10.0), retry_after="4", dedup_window_s=0)
    mock = run(scenario, config, clock)
    assert seen == [(200, None), (200, None), (429, "4"), (401, None), (200, None)]
    assert (mock.state.window_peak, mock.state.stats()["window_peak"]) == (3, 3)


def test_new_config_fields_are_checked() -> None:
    with pytest.raises(MappingError) as caught:
        MockConfig(limit_window=(0, 60.0), job_seconds=-1, job_fail=(0,), job_drop_answer=(-2,))
    message = str(caught.value)
    for part in ("limit_window", "job_seconds", "job_fail", "job_drop_answer"):
        assert part in message
    with pytest.raises(MappingError, match="limit_window"):
        MockConfig(limit_window=(5, 0.0))
    assert MockConfig(limit_window=[5, 1.5]).limit_window == (5, 1.5)  # type: ignore[arg-type]


def test_mock_config_without_api_defaults_is_the_plain_config() -> None:
    assert mock_config(HeaderAPI(), token="t") == MockConfig(token="t")


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        pytest.param(["--limit-window", "600"], "--limit-window", id="window-without-seconds"),
        pytest.param(["--job-fail", "0"], "--job-fail", id="job-zero"),
    ],
)
def test_mock_server_refuses_bad_job_and_window_options(option: list[str], hint: str) -> None:
    result = CliRunner().invoke(main, ["mock-server", "--port", "0", *option])
    assert result.exit_code == 2
    assert "Invalid value for" in result.stderr
    assert hint in result.stderr
