"""The sending stage: retry policy, stop and drain, limits and endpoint checks, without a network.

aioresponses stands in for the API; a fake clock stands in for waiting, so no test really sleeps
and no test depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import polars as pl
import pytest
from aioresponses import CallbackResult, aioresponses
from yarl import URL

from importer.columns import BODY as BODY_COLUMN
from importer.columns import LINE
from importer.delivery import scrub, send, throttle
from importer.delivery.deliver import body_frame, deliver
from importer.delivery.options import (
    DRAIN_MARGIN_S,
    DeliveryOptions,
    Feed,
    SendOptions,
    check_endpoint,
    is_loopback,
)
from importer.delivery.scrub import make_scrubber
from importer.delivery.send import SendStats, send_all
from importer.delivery.throttle import AdaptiveLimit, AdaptiveRate, backoff_delay, parse_retry_after
from importer.destinations.mocking import MockConfig
from importer.destinations.vero.api import VERO
from importer.errors import CheckpointError, InputError, MappingError
from importer.mock.server import start_mock_server
from importer.model import Request, Result
from importer.outcome import Summary
from importer.state.facts import RunIdentity

TOKEN = "tok-S3CRET-value"
ENDPOINT = "https://api.example.test/api/v2"
TRACK = f"{ENDPOINT}/events/track"
IDENTIFY = f"{ENDPOINT}/users/track"
BODY = b'{"identity":{"id":"u1"},"event_name":"login","extras":{"check_id":"c1"}}'
OK = b'{"status":200,"message":"Success."}'


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 does not pass the `stream_writer` aiohttp 3.14 requires.

    Known upstream: pnuckowski/aioresponses#289 (fix proposed in #288). Drop this shim, and
    `MockAPI`, once a release passes it.
    """

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class MockAPI(aioresponses):
    """aioresponses whose canned answers are built with the shim above."""

    def add(self, url: Any, method: str = "GET", *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _Response)
        super().add(url, method, *args, **kwargs)


def answer(status: int) -> CallbackResult:
    return CallbackResult(status=status, body=OK, response_class=_Response)


class FakeTime:
    """A clock that only moves when someone sleeps, and remembers every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(send, "_now", fake.clock)
    monkeypatch.setattr(send, "_sleep", fake.sleep)
    return fake


def make_requests(n: int, path: str = "events/track") -> list[Request]:
    return [Request("POST", path, BODY, "input-1", "events.csv", line) for line in range(2, n + 2)]


class Run:
    """One call of send_all with everything it reported."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.retries: list[str] = []
        self.stats: SendStats | None = None

    async def send(
        self,
        requests: Iterable[Request] | AsyncIterator[Request],
        *,
        stop: asyncio.Event | None = None,
        **options: Any,
    ) -> SendStats:
        options.setdefault("concurrency", 1)
        self.stats = await send_all(
            requests,
            endpoint=ENDPOINT,
            token=TOKEN,
            destination=VERO,
            options=SendOptions(**options),
            on_result=self.results.append,
            on_retry=lambda request, message: self.retries.append(message),
            stop=stop,
        )
        return self.stats


def run_send(requests: Iterable[Request], **options: Any) -> Run:
    run = Run()
    asyncio.run(run.send(requests, **options))
    return run


def sent_to(m: MockAPI, url: str) -> list[Any]:
    return m.requests.get(("POST", URL(url)), [])


def test_200_is_delivered_and_body_sent_as_built(fake_time: FakeTime) -> None:
    with MockAPI() as m:
        m.post(TRACK, status=200, body=OK)
        run = run_send(make_requests(1))
    (result,) = run.results
    assert (result.delivered, result.status, result.error, result.attempts) == (True, 200, None, 1)
    (call,) = sent_to(m, TRACK)
    assert call.kwargs["data"] == b'{"auth_token":"' + TOKEN.encode() + b'",' + BODY[1:]
    assert call.kwargs["allow_redirects"] is False
    assert run.stats is not None
    stats = run.stats
    assert (stats.requests, stats.retries, stats.delivered, stats.dead) == (1, 0, 1, 0)
    assert (stats.stopped_reason, stats.interrupted, stats.unfinished) == (None, False, 0)
    assert fake_time.sleeps == []


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param("7", 7.0, id="seconds"),
        pytest.param("100000", 300.0, id="capped-at-300s"),
    ],
)
def test_429_waits_for_retry_after_then_delivers(
    fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch, retry_after: str, expected: float
) -> None:
    throttled: list[tuple[int, float | None]] = []
    original = AdaptiveLimit.on_throttled

    def spy(self: AdaptiveLimit, epoch: int, retry_after: float | None) -> None:
        throttled.append((epoch, retry_after))
        original(self, epoch, retry_after)

    monkeypatch.setattr(AdaptiveLimit, "on_throttled", spy)
    with MockAPI() as m:
        m.post(TRACK, status=429, headers={"Retry-After": retry_after}, body=b"slow down")
        m.post(TRACK, status=200, body=OK)
        run = run_send(make_requests(1))
    (result,) = run.results
    assert (result.delivered, result.attempts) == (True, 2)
    assert fake_time.sleeps == [expected]
    assert throttled == [(0, expected)]  # the shared limiter slows everyone down too
    assert run.retries == [f"HTTP 429: slow down; retry 1 of 8 in {expected:.1f} s"]
    assert run.stats is not None
    assert (run.stats.requests, run.stats.retries) == (2, 1)


def test_unreadable_retry_after_falls_back_to_backoff(fake_time: FakeTime) -> None:
    with MockAPI() as m:
        m.post(TRACK, status=503, headers={"Retry-After": "whenever"})
        m.post(TRACK, status=200, body=OK)
        run = run_send(make_requests(1), backoff_base_s=0.5)
    assert run.results[0].delivered
    (delay,) = fake_time.sleeps
    assert 0.0 <= delay <= 0.5


def test_503_beyond_max_retries_is_a_dead_letter(fake_time: FakeTime) -> None:
    with MockAPI() as m:
        m.post(TRACK, status=503, body=b'{"message":"Service Unavailable"}', repeat=True)
        run = run_send(make_requests(1), max_retries=3, backoff_base_s=1.0, backoff_cap_s=3.0)
    (result,) = run.results
    assert not result.delivered
    assert result.status == 503
    assert result.attempts == 4
    assert result.error == "gave up after 4 attempts: HTTP 503: Service Unavailable"
    assert len(sent_to(m, TRACK)) == 4
    assert run.stats is not None
    assert (run.stats.requests, run.stats.retries, run.stats.dead) == (4, 3, 1)
    # Full jitter: each wait is somewhere in [0, min(cap, base * 2**n)].
    assert len(fake_time.sleeps) == 3
    for n, delay in enumerate(fake_time.sleeps):
        assert 0.0 <= delay <= min(3.0, 1.0 * 2**n)


def test_400_is_a_dead_letter_with_the_server_message_and_others_continue(
    fake_time: FakeTime,
) -> None:
    with MockAPI() as m:
        m.post(IDENTIFY, status=400, body=b'{"message":"Email is not valid"}')
        m.post(TRACK, status=200, body=OK, repeat=True)
        requests = make_requests(2) + make_requests(1, path="users/track") + make_requests(2)
        run = run_send(requests, concurrency=2)
    dead = [r for r in run.results if not r.delivered]
    assert [(r.status, r.error, r.attempts) for r in dead] == [(400, "Email is not valid", 1)]
    assert sum(r.delivered for r in run.results) == 4
    assert fake_time.sleeps == []


def test_401_stops_the_run_without_leaking_the_token(fake_time: FakeTime) -> None:
    with MockAPI() as m:
        m.post(TRACK, status=401, body=f'{{"message":"unknown token {TOKEN}"}}', repeat=True)
        run = run_send(make_requests(50))
    assert run.stats is not None
    reason = run.stats.stopped_reason
    assert reason is not None
    assert "refused the token" in reason
    assert TOKEN not in reason
    assert "unknown token ***" in reason
    assert len(sent_to(m, TRACK)) == 1
    assert run.results == []  # the refused request and the rest stay unacknowledged for a resume
    assert run.stats.unfinished > 0
    assert run.stats.stopped_status == 401  # what tells a refused token from other stops


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param({"exception": aiohttp.ClientConnectionError("reset")}, id="connection"),
        pytest.param({"exception": aiohttp.ServerDisconnectedError()}, id="disconnected"),
        pytest.param({"exception": aiohttp.ClientPayloadError("truncated")}, id="payload"),
        pytest.param({"timeout": True}, id="timeout"),
    ],
)
def test_network_failure_is_retried_then_delivered(
    fake_time: FakeTime, failure: dict[str, Any]
) -> None:
    with MockAPI() as m:
        m.post(TRACK, **failure)
        m.post(TRACK, status=200, body=OK)
        run = run_send(make_requests(1))
    (result,) = run.results
    assert (result.delivered, result.attempts) == (True, 2)
    assert len(run.retries) == 1
    assert len(fake_time.sleeps) == 1


def test_no_answer_beyond_max_retries_stops_the_run_and_marks_nothing(
    fake_time: FakeTime,
) -> None:
    with MockAPI() as m:
        m.post(TRACK, timeout=True, repeat=True)
        run = run_send(make_requests(20), max_retries=2, timeout_s=5, concurrency=2)
    assert run.results == []  # no dead letters: the next run sends every row again
    assert run.stats is not None
    assert run.stats.stopped_reason == (
        "no answer from the endpoint after 3 attempts (no answer within 5 s); "
        "the rows not acknowledged will be sent by the next run"
    )
    assert run.stats.requests <= 6  # the two in flight, three tries each; no more rows started
    assert run.stats.stopped_status is None  # no answer stopped it


def test_redirect_stops_and_is_not_followed(fake_time: FakeTime) -> None:
    elsewhere = "https://elsewhere.test/api/v2/events/track"
    with MockAPI() as m:
        m.post(TRACK, status=302, headers={"Location": elsewhere}, repeat=True)
        m.post(elsewhere, status=200, repeat=True)
        m.get(elsewhere, status=200, repeat=True)
        run = run_send(make_requests(3))
    assert run.stats is not None
    assert run.stats.stopped_reason is not None
    assert "redirect (HTTP 302)" in run.stats.stopped_reason
    assert run.stats.stopped_status == 302
    assert [key for key in m.requests if key[1].host == "elsewhere.test"] == []
    assert run.results == []


@pytest.mark.parametrize(
    ("status", "max_retries"),
    [pytest.param(400, 8, id="dead-letter"), pytest.param(503, 1, id="gave-up")],
)
def test_token_echoed_by_the_server_never_reaches_a_message(
    fake_time: FakeTime, status: int, max_retries: int
) -> None:
    echo = json.dumps({"message": f"bad request from {TOKEN} ({json.dumps(TOKEN)})"})
    with MockAPI() as m:
        m.post(TRACK, status=status, body=echo, repeat=True)
        run = run_send(make_requests(1), max_retries=max_retries)
    (result,) = run.results
    assert result.error is not None
    assert TOKEN not in result.error
    assert "***" in result.error
    assert all(TOKEN not in message for message in run.retries)


def test_long_error_body_is_scrubbed_before_it_is_cut(fake_time: FakeTime) -> None:
    # The token straddles the 200th character: cutting first would leave most of it visible.
    text = "x" * (200 - 20) + f' auth_token":"{TOKEN}" ' + "y" * 100_000
    with MockAPI() as m:
        m.post(TRACK, status=400, body=text.encode(), content_type="text/html")
        run = run_send(make_requests(1))
    (result,) = run.results
    assert result.error is not None
    assert TOKEN[:4] not in result.error
    assert 'auth_token":"***' in result.error
    assert len(result.error) < scrub.MESSAGE_CHARS + 50
    assert result.error.endswith("more characters)")


def test_token_cut_by_the_read_limit_is_hidden(fake_time: FakeTime) -> None:
    text = "z" * (send.ANSWER_BYTES - 9) + TOKEN
    with MockAPI() as m:
        m.post(TRACK, status=400, body=text.encode())
        run = run_send(make_requests(1))
    (result,) = run.results
    assert result.error is not None
    assert TOKEN[:9] not in result.error


@pytest.mark.parametrize(
    "text",
    [
        f'{{"auth_token":"{TOKEN[:-1]}',  # echoed, then cut short by the server
        f"auth_token={TOKEN[3:]}&x=1",  # re-encoded: not any form of the whole token
        f'\\"auth_token\\": \\"{TOKEN.upper()}\\"',
    ],
)
def test_value_after_an_auth_token_name_is_hidden(text: str) -> None:
    scrubbed = make_scrubber(TOKEN, fields=VERO.credential_fields)(text)
    assert "S3CRET" not in scrubbed.upper()
    assert "***" in scrubbed


def test_200_without_veros_answer_stops_and_marks_nothing(fake_time: FakeTime) -> None:
    with MockAPI() as m:
        m.post(TRACK, status=200, body=b"<html>Welcome to nginx!</html>", repeat=True)
        run = run_send(make_requests(5))
    assert run.results == []
    assert run.stats is not None
    assert run.stats.stopped_reason is not None
    assert "not with Vero's JSON answer" in run.stats.stopped_reason
    assert run.stats.delivered == 0


def test_200_whose_body_reports_an_error_is_a_dead_letter(fake_time: FakeTime) -> None:
    with MockAPI() as m:
        m.post(TRACK, status=200, body=b'{"status":400,"message":"Event name is missing"}')
        run = run_send(make_requests(1))
    (result,) = run.results
    assert (result.delivered, result.status, result.error) == (
        False,
        200,
        "Event name is missing",
    )


def test_scrubber_covers_escaped_and_quoted_forms() -> None:
    scrub = make_scrubber('a"b/c d')
    text = 'raw a"b/c d, json a\\"b/c d, url a%22b%2Fc%20d'
    assert scrub(text) == "raw ***, json ***, url ***"
    assert make_scrubber("")("nothing to hide") == "nothing to hide"


def test_scrubber_hides_a_megabyte_token_and_its_starts() -> None:
    # Trying every start length was quadratic: 11 s per text here, minutes for a 5 MB token.
    token = "".join(chr(97 + i * 7 % 26) for i in range(1_000_000))
    scrub = make_scrubber(token)
    assert scrub("bad token " + token[:700_000]) == "bad token ***"
    assert scrub("x" * 1000 + token + "y") == "x" * 1000 + "***y"
    assert scrub("bad token " + token[:3]) == "bad token " + token[:3]  # too short to tell
    # Every character is a candidate start: the worst case for a naive search.
    assert make_scrubber("a" * 1_000_000 + "b")("a" * 60_000) == "***"


def test_stop_event_drains_in_flight_and_sends_nothing_new(fake_time: FakeTime) -> None:
    async def scenario() -> tuple[Run, int]:
        stop, release = asyncio.Event(), asyncio.Event()
        calls = 0

        async def respond(url: URL, **kwargs: Any) -> CallbackResult:
            nonlocal calls
            calls += 1
            if calls == 3:  # all three workers are now waiting on an answer
                stop.set()
                release.set()
            await release.wait()
            return answer(200)

        run = Run()
        with MockAPI() as m:
            m.post(TRACK, callback=respond, repeat=True)
            await run.send(make_requests(100), stop=stop, concurrency=3)
        return run, calls

    run, calls = asyncio.run(scenario())
    assert calls == 3
    assert [r.delivered for r in run.results] == [True, True, True]
    assert run.stats is not None
    assert run.stats.interrupted
    assert run.stats.stopped_reason is None
    assert run.stats.requests == 3
    assert run.stats.unfinished > 0


def test_stop_during_backoff_ends_without_a_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> Run:
        stop = asyncio.Event()

        async def sleep_until_cancelled(delay: float) -> None:
            stop.set()
            await asyncio.Event().wait()

        monkeypatch.setattr(send, "_sleep", sleep_until_cancelled)
        run = Run()
        with MockAPI() as m:
            m.post(TRACK, status=503, repeat=True)
            await run.send(make_requests(5), stop=stop)
        return run

    run = asyncio.run(scenario())
    assert run.results == []
    assert run.stats is not None
    assert (run.stats.dead, run.stats.requests, run.stats.interrupted) == (0, 1, True)


def test_drain_timeout_abandons_requests_still_in_flight(fake_time: FakeTime) -> None:
    async def scenario() -> Run:
        stop = asyncio.Event()

        async def hang(url: URL, **kwargs: Any) -> CallbackResult:
            stop.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        run = Run()
        with MockAPI() as m:
            m.post(TRACK, callback=hang, repeat=True)
            await run.send(make_requests(10), stop=stop, concurrency=2, drain_timeout_s=0)
        return run

    run = asyncio.run(scenario())
    assert run.results == []
    assert run.stats is not None
    assert run.stats.interrupted
    assert run.stats.unfinished > 0
    assert run.stats.abandoned == 1  # cancelled while waiting on its answer


def test_stop_set_before_the_start_sends_nothing(fake_time: FakeTime) -> None:
    async def scenario() -> Run:
        stop = asyncio.Event()
        stop.set()
        run = Run()
        with MockAPI():
            await run.send(make_requests(3), stop=stop)
        return run

    run = asyncio.run(scenario())
    assert run.results == []
    assert run.stats is not None
    assert (run.stats.requests, run.stats.interrupted) == (0, True)


def test_async_input_is_pulled_lazily_and_closed_on_stop(fake_time: FakeTime) -> None:
    pulled = 0
    closed = False

    async def requests() -> AsyncIterator[Request]:
        nonlocal pulled, closed
        try:
            for request in make_requests(10_000):
                pulled += 1
                yield request
        finally:
            closed = True

    async def scenario() -> Run:
        run = Run()
        await run.send(requests(), concurrency=4)
        assert closed  # by send_all itself, not later by the event loop's shutdown
        return run

    with MockAPI() as m:
        m.post(TRACK, status=401, repeat=True)
        run = asyncio.run(scenario())
    assert run.stats is not None
    assert run.stats.stopped_reason is not None
    # At most: one per worker, a full queue (2 x concurrency), and one waiting to go in.
    assert pulled <= 4 + 8 + 1


def test_an_input_error_is_raised_after_the_drain(fake_time: FakeTime) -> None:
    def requests() -> Iterator[Request]:
        yield from make_requests(2)
        raise InputError("file events.csv, line 4: unreadable")

    with MockAPI() as m:
        m.post(TRACK, status=200, body=OK, repeat=True)
        run = Run()
        with pytest.raises(InputError, match="line 4"):
            asyncio.run(run.send(requests()))
    assert all(r.delivered for r in run.results)


def test_a_failing_callback_stops_the_run_and_is_raised(fake_time: FakeTime) -> None:
    def on_result(result: Result) -> None:
        raise CheckpointError("disk full")

    async def scenario() -> None:
        await send_all(
            make_requests(20),
            endpoint=ENDPOINT,
            token=TOKEN,
            destination=VERO,
            options=SendOptions(concurrency=2),
            on_result=on_result,
        )

    with MockAPI() as m:
        m.post(TRACK, status=200, body=OK, repeat=True)
        with pytest.raises(CheckpointError, match="disk full"):
            asyncio.run(scenario())
    assert len(sent_to(m, TRACK)) <= 2


def test_rate_paces_request_starts(fake_time: FakeTime) -> None:
    with MockAPI() as m:
        m.post(TRACK, status=200, body=OK, repeat=True)
        run = run_send(make_requests(5), rate=50.0)
    assert len(run.results) == 5
    assert fake_time.sleeps == pytest.approx([0.02] * 4)


@pytest.mark.parametrize(
    ("endpoint", "normalised"),
    [
        pytest.param(
            "https://api.getvero.com/api/v2/", "https://api.getvero.com/api/v2", id="https"
        ),
        pytest.param(
            " HTTPS://API.GetVero.com/api/v2", "https://api.getvero.com/api/v2", id="case-space"
        ),
        pytest.param("http://127.0.0.1:8080/api/v2", "http://127.0.0.1:8080/api/v2", id="loopback"),
        pytest.param("http://127.9.8.7", "http://127.9.8.7", id="loopback-range"),
        pytest.param("http://[::1]:9000/v2/", "http://[::1]:9000/v2", id="loopback-v6"),
        pytest.param("http://LocalHost:8080", "http://localhost:8080", id="localhost"),
    ],
)
def test_check_endpoint_accepts(endpoint: str, normalised: str) -> None:
    assert check_endpoint(endpoint) == normalised


@pytest.mark.parametrize(
    ("endpoint", "complaint"),
    [
        pytest.param("http://api.getvero.com/api/v2", "plain http", id="http-remote"),
        pytest.param("http://10.0.0.1/api", "plain http", id="http-private-ip"),
        pytest.param("http://localhost.evil.test/", "plain http", id="http-localhost-lookalike"),
        pytest.param("http://[::2]/", "plain http", id="http-v6-not-loopback"),
        pytest.param("ftp://api.getvero.com/", "scheme", id="ftp"),
        pytest.param("api.getvero.com/api/v2", "scheme", id="no-scheme"),
        pytest.param("https:///api/v2", "no host", id="no-host"),
        pytest.param("https://api.getvero.com:http/", "port", id="bad-port"),
        pytest.param("https://api.getvero.com/v2?x=1", "query", id="query"),
        pytest.param("https://me:hunter2@api.getvero.com/", "credentials", id="userinfo"),
        pytest.param("ftp://api.getvero.com/?key=hunter2", "scheme", id="query-not-echoed"),
        pytest.param("", "empty", id="empty"),
        pytest.param("  ", "empty", id="blank"),
        pytest.param("http://[::1:1/", "not a URL", id="unclosed-ipv6"),
        pytest.param("https://api.getvero .com/", "white space", id="space-in-host"),
    ],
)
def test_check_endpoint_refuses(endpoint: str, complaint: str) -> None:
    with pytest.raises(MappingError, match=complaint) as caught:
        check_endpoint(endpoint)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("127.0.0.1", True, id="v4"),
        pytest.param("127.255.0.9", True, id="v4-range"),
        pytest.param("::1", True, id="v6"),
        pytest.param("[::1]", True, id="v6-brackets"),
        pytest.param("LOCALHOST", True, id="name"),
        pytest.param("0.0.0.0", False, id="any"),
        pytest.param("192.168.1.2", False, id="lan"),
        pytest.param("localhost.example.com", False, id="lookalike"),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_send_all_refuses_a_plain_http_endpoint_before_sending() -> None:
    async def scenario() -> None:
        await send_all(
            make_requests(1),
            endpoint="http://api.getvero.com/api/v2",
            token=TOKEN,
            destination=VERO,
            options=SendOptions(),
            on_result=lambda result: None,
        )

    with MockAPI() as m, pytest.raises(MappingError, match="plain http"):
        asyncio.run(scenario())
    assert m.requests == {}


def test_limit_halves_once_per_epoch_down_to_one() -> None:
    limit = AdaptiveLimit(32)
    epoch = limit.try_acquire()
    limit.release()
    limit.on_throttled(epoch, None)
    assert limit.limit == 16
    limit.on_throttled(epoch, None)  # a 429 from the same overloaded moment: no second cut
    assert limit.limit == 16
    for _ in range(10):
        epoch = limit.try_acquire()
        limit.release()
        limit.on_throttled(epoch, None)
    assert limit.limit == 1


def test_limit_recovers_by_one_per_run_of_successes() -> None:
    limit = AdaptiveLimit(4)
    limit.on_throttled(limit.try_acquire(), None)
    assert limit.limit == 2
    limit.on_success()
    assert limit.limit == 2
    limit.on_success()
    assert limit.limit == 3
    for _ in range(3):
        limit.on_success()
    assert limit.limit == 4
    for _ in range(20):
        limit.on_success()
    assert limit.limit == 4


def test_limit_makes_extra_workers_wait_for_a_slot() -> None:
    async def scenario() -> list[str]:
        limit = AdaptiveLimit(2)
        limit.on_throttled(limit.try_acquire(), None)  # cap 1, one slot taken
        events: list[str] = []

        async def worker(name: str) -> None:
            await limit.acquire()
            events.append(name)

        waiting = asyncio.create_task(worker("second"))
        await asyncio.sleep(0)
        events.append("first done")
        limit.release()
        await waiting
        return events

    assert asyncio.run(scenario()) == ["first done", "second"]


def test_limit_pauses_everyone_until_retry_after() -> None:
    async def scenario(fake: FakeTime) -> AdaptiveLimit:
        limit = AdaptiveLimit(8, clock=fake.clock, sleep=fake.sleep)
        epoch = limit.try_acquire()
        limit.release()
        limit.on_throttled(epoch, 12.0)
        limit.on_throttled(epoch, 12.0)
        assert limit.try_acquire() == -1
        await limit.acquire()
        return limit

    fake = FakeTime()
    limit = asyncio.run(scenario(fake))
    assert fake.sleeps == [12.0]
    assert (limit.limit, limit.in_flight, limit.paused_until) == (4, 1, 0.0)


def test_a_trickle_of_429s_cuts_the_limit_but_pauses_no_one() -> None:
    fake = FakeTime()
    limit = AdaptiveLimit(8, clock=fake.clock)
    for _ in range(10):
        for _ in range(20):
            limit.on_success()
        limit.on_throttled(limit.try_acquire(), 1.0)
        limit.release()
    assert limit.paused_until == 0.0
    assert limit.limit < 8


def test_most_answers_429_pause_everyone_for_retry_after() -> None:
    fake = FakeTime()
    limit = AdaptiveLimit(8, clock=fake.clock)
    for _ in range(5):
        limit.on_success()
    first, second = limit.try_acquire(), limit.try_acquire()
    limit.on_throttled(first, 3.0)
    assert limit.paused_until == 0.0  # one 429 in six answers
    for _ in range(4):
        limit.on_throttled(second, 3.0)
    assert limit.paused_until == fake.now + 3.0  # five in ten
    assert limit.limit == 4  # both requests were sent before the one cut


def test_pacer_spaces_starts_and_grants_no_burst_after_idling() -> None:
    async def scenario(fake: FakeTime) -> None:
        pacer = AdaptiveRate(100.0, clock=fake.clock, sleep=fake.sleep)
        for _ in range(3):
            await pacer.wait()
        fake.now += 60.0
        await pacer.wait()
        await pacer.wait()

    fake = FakeTime()
    asyncio.run(scenario(fake))
    assert fake.sleeps == pytest.approx([0.01, 0.01, 0.01])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 0 ", 0.0, id="zero"),
        pytest.param("Wed, 21 Oct 2015 07:30:00 GMT", 90.0, id="http-date"),
        pytest.param("Wed, 21 Oct 2015 07:27:00 GMT", 0.0, id="date-in-the-past"),
        pytest.param("soon", None, id="unreadable"),
        pytest.param("-5", None, id="negative"),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 30, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == expected


def test_backoff_is_full_jitter_under_the_cap() -> None:
    random.seed(7)
    for attempt in range(12):
        ceiling = min(30.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, base=0.5, cap=30.0) for _ in range(50)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the range, not pinned to its floor
    assert backoff_delay(10_000, base=0.5, cap=30.0) <= 30.0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        pytest.param({"concurrency": 0}, "concurrency", id="concurrency-zero"),
        pytest.param({"concurrency": True}, "concurrency", id="concurrency-bool"),
        pytest.param({"rate": 0}, "rate", id="rate-zero"),
        pytest.param({"rate": float("inf")}, "rate", id="rate-infinite"),
        pytest.param({"max_retries": -1}, "max_retries", id="retries-negative"),
        pytest.param({"timeout_s": 0}, "timeout_s", id="timeout-zero"),
        pytest.param({"backoff_cap_s": float("nan")}, "backoff_cap_s", id="cap-nan"),
        pytest.param({"drain_timeout_s": -1}, "drain_timeout_s", id="drain-negative"),
    ],
)
def test_send_options_refuse_bad_values(options: dict[str, Any], field: str) -> None:
    with pytest.raises(MappingError, match=field):
        SendOptions(**options)


def test_send_options_report_every_problem_at_once() -> None:
    with pytest.raises(MappingError) as caught:
        SendOptions(concurrency=0, max_retries=-1)
    assert "concurrency" in str(caught.value)
    assert "max_retries" in str(caught.value)


def test_pace_starts_at_the_first_429_from_what_the_api_let_through() -> None:
    async def scenario(fake: FakeTime) -> None:
        pace = AdaptiveRate(clock=fake.clock, sleep=fake.sleep)
        epoch = await pace.wait()
        assert pace.rate() is None  # nothing paced before the API says too many
        for _ in range(50):
            fake.now += 0.01
            pace.on_answer()
        pace.on_throttled(epoch)
        assert pace.rate() == pytest.approx(100.0)  # 50 answers in the half second so far
        fake.now += 2.0
        pace.on_throttled(epoch)  # sent before the cut: the cut already answered it
        assert pace.rate() == pytest.approx(100.0 * 1.2**2)  # grown 20% a second since

    fake = FakeTime()
    asyncio.run(scenario(fake))
    assert fake.sleeps == []


def test_pace_is_cut_by_the_share_of_429s_at_most_once_a_second() -> None:
    async def scenario(fake: FakeTime) -> AdaptiveRate:
        pace = AdaptiveRate(500.0, clock=fake.clock, sleep=fake.sleep)
        assert pace.rate() == 500.0  # the user's --rate paces from the start
        fake.now += 5.0
        for _ in range(3):
            pace.on_answer()
        pace.on_throttled(await pace.wait())
        assert pace.rate() == pytest.approx(375.0)  # one 429 in four answers
        fake.now += 0.5
        pace.on_throttled(await pace.wait())  # a new epoch, but within the cool-down
        assert pace.rate() == pytest.approx(375.0 * 1.2**0.5)
        fake.now += 10.0
        assert pace.rate() == 500.0  # grown back, never above --rate
        fake.now += 1.0  # the window now holds one 429 and nothing else
        pace.on_throttled(await pace.wait())
        return pace

    pace = asyncio.run(scenario(FakeTime()))
    assert pace.rate() == AdaptiveRate.FLOOR


def test_without_answers_the_first_429_leaves_the_run_unpaced() -> None:
    async def scenario(fake: FakeTime) -> AdaptiveRate:
        pace = AdaptiveRate(clock=fake.clock, sleep=fake.sleep)
        pace.on_throttled(await pace.wait())
        return pace

    assert asyncio.run(scenario(FakeTime())).rate() is None


def test_429s_while_others_get_through_spend_no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """One row is refused five times while the others are accepted; max_retries is 1."""
    fake = FakeTime()
    monkeypatch.setattr(send, "_now", fake.clock)
    throttled_body = b'"event_name":"busy"'

    async def scenario() -> list[Result]:
        results: list[Result] = []
        accepted = asyncio.Event()
        refusals = 0

        def on_result(result: Result) -> None:
            results.append(result)
            accepted.set()

        async def sleep(delay: float) -> None:
            fake.now += delay
            if delay == 7.0:  # the refused row's Retry-After: wait until another got through
                accepted.clear()
                await accepted.wait()
            await asyncio.sleep(0)

        async def respond(url: URL, **kwargs: Any) -> CallbackResult:
            nonlocal refusals
            if throttled_body in kwargs["data"] and refusals < 5:
                refusals += 1
                return CallbackResult(
                    status=429, headers={"Retry-After": "7"}, body=b"busy", response_class=_Response
                )
            return answer(200)

        monkeypatch.setattr(send, "_sleep", sleep)
        busy = Request("POST", "events/track", BODY.replace(b'"login"', b'"busy"'), "i", "f", 1)
        with MockAPI() as m:
            m.post(TRACK, callback=respond, repeat=True)
            await send_all(
                [busy, *make_requests(20)],
                endpoint=ENDPOINT,
                token=TOKEN,
                destination=VERO,
                options=SendOptions(concurrency=2, max_retries=1),
                on_result=on_result,
            )
        return results

    results = asyncio.run(scenario())
    assert all(r.delivered for r in results)
    assert len(results) == 21
    (busy,) = [r for r in results if r.request.line == 1]
    assert busy.attempts == 6


def test_nothing_but_429s_stops_the_run_after_max_retries(fake_time: FakeTime) -> None:
    with MockAPI() as m:
        m.post(TRACK, status=429, headers={"Retry-After": "1"}, body=b"quota", repeat=True)
        run = run_send(make_requests(5), max_retries=2)
    assert run.results == []  # no dead letters: the next run sends every row again
    assert run.stats is not None
    assert run.stats.stopped_reason == (
        "only 429 answers from the endpoint after 3 attempts (HTTP 429: quota); "
        "the rows not acknowledged will be sent by the next run"
    )
    assert run.stats.requests == 3
    assert run.stats.stopped_status == 429


def test_a_throttled_run_against_the_mock_delivers_every_row_once(fake_time: FakeTime) -> None:
    rows = 60

    async def scenario() -> tuple[SendStats, dict[str, Any]]:
        config = MockConfig(token=TOKEN, limit_rps=10)
        mock = await start_mock_server(config, clock=fake_time.clock)
        try:
            requests = [
                Request("POST", "events/track", BODY.replace(b'"u1"', b'"u%d"' % i), "i", "f", i)
                for i in range(rows)
            ]
            stats = await send_all(
                requests,
                endpoint=mock.url,
                token=TOKEN,
                destination=VERO,
                options=SendOptions(concurrency=8, max_retries=1),
                on_result=lambda result: None,
            )
        finally:
            await mock.close()
        return stats, mock.state.stats()

    stats, counters = asyncio.run(scenario())
    assert (stats.delivered, stats.dead, stats.stopped_reason) == (rows, 0, None)
    assert (counters["accepted"], counters["duplicates"]) == (rows, 0)
    assert counters["by_status"]["429"] > 0  # the limit was reached, and waited out


def test_drain_lasts_as_long_as_a_request_may_take() -> None:
    assert SendOptions(timeout_s=60).drain_s == 60 + DRAIN_MARGIN_S
    assert SendOptions(timeout_s=60, drain_timeout_s=2).drain_s == 2


def test_requests_cut_off_unanswered_are_counted_as_abandoned(fake_time: FakeTime) -> None:
    async def scenario() -> Run:
        stop = asyncio.Event()

        async def time_out(url: URL, **kwargs: Any) -> CallbackResult:
            stop.set()  # Ctrl-C while the request is out; then it times out in the drain
            raise TimeoutError

        run = Run()
        with MockAPI() as m:
            m.post(TRACK, callback=time_out, repeat=True)
            await run.send(make_requests(10), stop=stop, concurrency=2)
        return run

    run = asyncio.run(scenario())
    assert run.results == []
    assert run.stats is not None
    assert (run.stats.interrupted, run.stats.abandoned) == (True, 1)


def test_the_summary_warns_of_rows_that_may_arrive_twice(tmp_path: Path) -> None:
    async def scenario() -> Summary:
        mock = await start_mock_server(MockConfig(token=TOKEN, rate_drop=1.0))
        frame = pl.DataFrame({LINE: [2, 3], BODY_COLUMN: [BODY.decode()] * 2}).pipe(
            body_frame, method="POST", path="events/track"
        )
        try:
            return await deliver(
                iter([Feed("fingerprint", "events.csv", frame)]),
                identity=RunIdentity("mapping", "vero", mock.url),
                destination=VERO,
                options=DeliveryOptions(
                    endpoint=mock.url,
                    token=TOKEN,
                    state_dir=tmp_path,
                    send=SendOptions(concurrency=1, max_retries=0),
                ),
                summary=Summary(),
            )
        finally:
            await mock.close()

    summary = asyncio.run(scenario())
    assert summary.stopped is not None
    assert summary.stopped.startswith("no answer from the endpoint after 1 attempts")
    assert summary.warnings == [
        "1 rows were sent but got no answer before the run stopped; the next run sends them "
        "again, so the API may receive them twice"
    ]


def test_the_usual_acknowledgement_is_judged_once(fake_time: FakeTime) -> None:
    """Parsing the same short 200 answer for every row cost a twentieth of the send."""
    judged: list[tuple[int, bytes]] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(VERO, name)

        def classify(self, status: int, body: bytes) -> tuple[Any, str]:
            judged.append((status, body))
            return VERO.classify(status, body)

    results: list[Result] = []
    with MockAPI() as m:
        m.post(TRACK, status=200, body=OK, repeat=True)
        stats = asyncio.run(
            send_all(
                make_requests(5),
                endpoint=ENDPOINT,
                token=TOKEN,
                destination=Counting(),  # type: ignore[arg-type]
                options=SendOptions(concurrency=1),
                on_result=results.append,
            )
        )
    assert (stats.delivered, len(results)) == (5, 5)
    assert judged == [(200, OK)]


@pytest.mark.parametrize(
    ("jitter", "floor", "expected"),
    [
        pytest.param("low", 1.0, [1.0, 2.0], id="floor-low"),
        pytest.param("high", 1.0, [1.25, 2.5], id="floor-high"),
        pytest.param("low", 0.0, [0.0, 0.0], id="no-floor-may-retry-at-once"),
        pytest.param("high", 0.0, [0.5, 1.0], id="no-floor-full-jitter"),
    ],
)
def test_429_without_retry_after_doubles_from_the_floor(
    fake_time: FakeTime,
    monkeypatch: pytest.MonkeyPatch,
    jitter: str,
    floor: float,
    expected: list[float],
) -> None:
    """With a floor: 1 s then 2 s, each at most a quarter longer; without one (floor 0) the
    usual full jitter from 0, which may retry at once."""
    monkeypatch.setattr(
        throttle.random, "uniform", lambda low, high: low if jitter == "low" else high
    )
    with MockAPI() as m:
        m.post(TRACK, status=429, body=b"slow down")
        m.post(TRACK, status=429, body=b"slow down")
        m.post(TRACK, status=200, body=OK)
        run = run_send(make_requests(1), throttle_floor_s=floor, backoff_base_s=0.5)
    (result,) = run.results
    assert (result.delivered, result.attempts) == (True, 3)
    assert fake_time.sleeps == pytest.approx(expected)


def test_floor_backoff_waits_at_random_between_its_base_and_a_quarter_more(
    fake_time: FakeTime,
) -> None:
    random.seed(11)
    with MockAPI() as m:
        for _ in range(3):
            m.post(TRACK, status=429, body=b"slow down")
        m.post(TRACK, status=200, body=OK)
        run = run_send(make_requests(1), throttle_floor_s=1.0)
    assert run.results[0].delivered
    assert len(fake_time.sleeps) == 3
    for delay, base in zip(fake_time.sleeps, [1.0, 2.0, 4.0], strict=True):
        assert base <= delay <= 1.25 * base


def test_floor_backoff_grows_to_the_cap_and_never_under_the_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(throttle.random, "uniform", lambda low, high: low)
    delays = [throttle.floor_backoff(k, floor=1.0, cap=30.0) for k in range(1, 8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert throttle.floor_backoff(10_000, floor=1.0, cap=30.0) == 30.0
    assert throttle.floor_backoff(3, floor=5.0, cap=2.0) == 5.0  # a cap under the floor


@pytest.mark.parametrize(
    ("retry_after", "floor", "expected"),
    [
        pytest.param("0", 1.0, 1.0, id="shorter-than-the-floor"),
        pytest.param("7", 1.0, 7.0, id="longer-than-the-floor"),
        pytest.param("0", 0.0, 0.0, id="no-floor"),
    ],
)
def test_429_retry_after_is_kept_but_never_under_the_floor(
    fake_time: FakeTime, retry_after: str, floor: float, expected: float
) -> None:
    with MockAPI() as m:
        m.post(TRACK, status=429, headers={"Retry-After": retry_after}, body=b"slow down")
        m.post(TRACK, status=200, body=OK)
        run = run_send(make_requests(1), throttle_floor_s=floor)
    assert run.results[0].delivered
    assert fake_time.sleeps == [expected]


def test_a_floor_leaves_other_retries_to_the_usual_backoff(fake_time: FakeTime) -> None:
    with MockAPI() as m:
        m.post(TRACK, status=503)
        m.post(TRACK, status=200, body=OK)
        run = run_send(make_requests(1), throttle_floor_s=1.0, backoff_base_s=0.5)
    assert run.results[0].delivered
    (delay,) = fake_time.sleeps
    assert 0.0 <= delay <= 0.5


def test_a_full_queue_is_refilled_at_half_rather_than_per_request() -> None:
    """Waking the producer for every request a worker took cost a task switch per request."""
    pulls = 0

    def requests() -> Iterator[Request]:
        nonlocal pulls
        line = 2
        while True:
            pulls += 1
            yield Request("POST", "events/track", BODY, "input-1", "events.csv", line)
            line += 1

    async def main() -> None:
        sender = send._Sender(
            base=f"{ENDPOINT}/",
            token=TOKEN,
            destination=VERO,
            options=SendOptions(concurrency=2),  # a queue of 4, refilled at 2
            session=None,  # type: ignore[arg-type]  # nothing is sent here
            on_result=lambda result: None,
            on_retry=None,
        )
        producer = asyncio.create_task(sender._produce(requests()))

        async def turns() -> None:
            for _ in range(5):
                await asyncio.sleep(0)

        await turns()
        assert sender.queue.full()
        full = pulls
        sender.queue.get_nowait()
        sender._took()
        await turns()
        assert pulls == full  # one taken: not refilled yet
        sender.queue.get_nowait()
        sender._took()
        await turns()
        assert sender.queue.full()
        assert pulls == full + 2  # down to half: refilled in one go
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer

    asyncio.run(main())
