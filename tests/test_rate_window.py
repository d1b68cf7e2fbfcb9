"""An API's quota per window (Userpilot: 600 requests a minute): the WindowGuard, its share
among sender processes, and a whole run over real sockets in virtual time, so a run of minutes
takes a second or two and no test depends on timing.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import json
from collections.abc import Callable
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from aiohttp import web

from importer.delivery import send, throttle
from importer.delivery.options import SendOptions
from importer.delivery.send import send_all
from importer.delivery.throttle import WindowGuard, remember_starts
from importer.delivery.workers import share
from importer.destinations.base import rate_window_of, throttle_floor_of
from importer.destinations.userpilot.api import USERPILOT
from importer.mock.registry import mock_for
from importer.mock.server import STATE, create_app, mock_config
from importer.model import Request, Result

TOKEN = "window-test-token"


class VirtualClock:
    """Virtual time that moves only when nothing else can: no request in flight and no woken
    sleeper still to run; then straight to the earliest wake-up, so a sleeper never wakes early
    and the clock never passes a wake-up still pending. A request thus arrives at the virtual
    time it started."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.in_flight = 0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0
        self._waking = 0  # sleepers woken that have not run yet
        self._scheduled = False

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(delay, 0.0), self._count, future))
        self._count += 1
        self.advance_soon()
        try:
            await future
        finally:
            if future.done() and not future.cancelled():
                self._waking -= 1
                self.advance_soon()

    def advance_soon(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._advance)

    def _advance(self) -> None:
        self._scheduled = False
        if self.in_flight or self._waking:
            return
        sleepers = self._sleepers
        while sleepers and sleepers[0][2].done():  # cancelled while asleep
            heapq.heappop(sleepers)
        if not sleepers:
            return
        self.now = max(self.now, sleepers[0][0])
        while sleepers and sleepers[0][0] <= self.now:
            future = heapq.heappop(sleepers)[2]
            if not future.done():
                future.set_result(None)
                self._waking += 1

    def trace(self) -> aiohttp.TraceConfig:
        """Counts the requests in flight: from the start of a request to its answer's headers."""
        config = aiohttp.TraceConfig()

        async def started(*_: object) -> None:
            self.in_flight += 1

        async def ended(*_: object) -> None:
            self.in_flight -= 1
            self.advance_soon()

        config.on_request_start.append(started)
        config.on_request_end.append(ended)
        config.on_request_exception.append(ended)
        return config


def most_in_any_window(times: list[float], window_s: float) -> int:
    """The most of `times` that fall in one closed window of `window_s` seconds."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_right(ordered, t + window_s) - i for i, t in enumerate(ordered)), default=0
    )


def test_most_in_any_window_counts_a_closed_window() -> None:
    assert most_in_any_window([0.0, 30.0, 60.0, 60.5, 121.0], 60.0) == 3
    assert most_in_any_window([], 60.0) == 0


def _requests(count: int) -> list[Request]:
    return [
        Request(
            method="POST",
            path="v1/track",
            body=json.dumps({"user_id": f"u{i % 50}", "event_name": "Viewed"}).encode(),
            input_id="i",
            source_file="events.csv",
            line=i,
        )
        for i in range(count)
    ]


async def _run_against_server(
    clock: VirtualClock, options: SendOptions, count: int
) -> tuple[list[float], int]:
    """send_all over real sockets to a server on 127.0.0.1 that notes each arrival's virtual
    time; the arrivals and the requests delivered."""
    arrivals: list[float] = []

    async def handle(request: web.Request) -> web.Response:
        arrivals.append(clock.now)
        await request.read()
        return web.json_response({}, status=202)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    delivered = 0

    def on_result(result: object) -> None:
        nonlocal delivered
        delivered += 1

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=options.concurrency),
        trace_configs=[clock.trace()],
    )
    try:
        stats = await send_all(
            _requests(count),
            endpoint=f"http://{host}:{port}",
            token=TOKEN,
            destination=USERPILOT,
            options=options,
            on_result=on_result,
            session=session,
        )
    finally:
        await session.close()
        await runner.cleanup()
    assert stats.stopped_reason is None
    return arrivals, delivered


async def _run_against_the_mock(
    clock: VirtualClock, options: SendOptions, count: int
) -> tuple[dict[str, object], int]:
    """send_all over real sockets to the Userpilot mock, which enforces 600 requests in any 60 s
    per key on the same virtual clock; its stats and the requests delivered."""
    api = mock_for("userpilot")
    app = create_app(mock_config(api, token=TOKEN), clock=clock.clock, api=api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    delivered = 0

    def on_result(result: Result) -> None:
        nonlocal delivered
        delivered += result.delivered

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=options.concurrency), trace_configs=[clock.trace()]
    )
    try:
        await send_all(
            _requests(count),
            endpoint=f"http://{host}:{port}",
            token=TOKEN,
            destination=USERPILOT,
            options=options,
            on_result=on_result,
            session=session,
        )
    finally:
        await session.close()
        await runner.cleanup()
    return app[STATE].stats(), delivered


@pytest.mark.parametrize("guarded", [True, False])
def test_a_run_at_the_default_rate_stays_within_the_mocks_window(
    monkeypatch: pytest.MonkeyPatch, guarded: bool
) -> None:
    """The same done-when, counted by the Userpilot mock itself: the busiest 60 s of arrivals
    holds at most 600, so it never answers 429. Without the guard it counts more, and refuses."""
    clock = VirtualClock()
    monkeypatch.setattr(send, "_now", clock.clock)
    monkeypatch.setattr(send, "_sleep", clock.sleep)
    options = SendOptions(
        concurrency=32,
        rate=USERPILOT.default_rate,
        rate_window=rate_window_of(USERPILOT) if guarded else None,
        throttle_floor_s=throttle_floor_of(USERPILOT),
    )
    stats, delivered = asyncio.run(_run_against_the_mock(clock, options, 1300))
    assert delivered == 1300
    by_status = cast(dict[str, int], stats["by_status"])
    if guarded:
        assert stats["window_peak"] == 600
        assert "429" not in by_status
    else:
        assert cast(int, stats["window_peak"]) > 600
        assert by_status["429"] > 0


@pytest.mark.parametrize(
    ("rate", "guarded", "within"),
    [
        pytest.param(None, True, True, id="default-rate"),
        pytest.param(11.0, True, True, id="burstier-guarded"),
        pytest.param(11.0, False, False, id="burstier-unguarded-exceeds"),
        pytest.param(None, False, False, id="default-rate-unguarded-exceeds"),
    ],
)
def test_a_run_never_exceeds_the_quota_in_any_window_at_the_server(
    monkeypatch: pytest.MonkeyPatch, rate: float | None, guarded: bool, within: bool
) -> None:
    """The done-when of the issue: at the default rate no 60 s window at the server holds more
    than 600 requests. Pacing alone does not hold it: the unguarded runs show the test can fail."""
    assert (USERPILOT.default_rate, rate_window_of(USERPILOT)) == (10.0, (600, 60.0))
    clock = VirtualClock()
    monkeypatch.setattr(send, "_now", clock.clock)
    monkeypatch.setattr(send, "_sleep", clock.sleep)
    options = SendOptions(
        concurrency=32,
        rate=rate or USERPILOT.default_rate,
        rate_window=rate_window_of(USERPILOT) if guarded else None,
        throttle_floor_s=throttle_floor_of(USERPILOT),
    )
    count = 1500 if within else 700
    arrivals, delivered = asyncio.run(_run_against_server(clock, options, count))
    assert delivered == len(arrivals) == count
    most = most_in_any_window(arrivals, 60.0)
    if within:
        assert most == 600  # the quota is used, and never passed
        assert max(arrivals) - min(arrivals) < count / 10.0 * 1.1  # and the pace kept
    else:
        assert most > 600


def test_the_guard_lets_the_limit_through_at_once_then_waits_for_the_first_to_leave() -> None:
    clock = VirtualClock()
    starts: list[float] = []

    async def scenario() -> None:
        guard = WindowGuard(3, 60.0, clock=clock.clock, sleep=clock.sleep)
        for gap in (0.0, 10.0, 10.0, 0.0, 0.0):
            clock.now += gap
            await guard.wait()
            guard.started()
            starts.append(clock.now)

    asyncio.run(scenario())
    # Each waits until the start three before it leaves the window and its margin of 1 s.
    assert starts == [1000.0, 1010.0, 1020.0, 1061.0, 1071.0]


def test_the_guard_counts_a_start_the_pace_put_later() -> None:
    clock = VirtualClock()

    async def scenario() -> float:
        guard = WindowGuard(1, 10.0, clock=clock.clock, sleep=clock.sleep)
        await guard.wait()
        guard.started(5.0)  # the pace reserved this start 5 s from now
        await guard.wait()
        return clock.now

    assert asyncio.run(scenario()) == 1000.0 + 5.0 + 11.0


def test_the_guard_holds_among_concurrent_callers() -> None:
    clock = VirtualClock()
    starts: list[float] = []

    async def caller(guard: WindowGuard) -> None:
        for _ in range(4):
            await guard.wait()
            guard.started()
            starts.append(clock.now)
            await clock.sleep(0.5)

    async def scenario() -> None:
        guard = WindowGuard(5, 10.0, clock=clock.clock, sleep=clock.sleep)
        await asyncio.gather(*(caller(guard) for _ in range(8)))

    asyncio.run(scenario())
    assert len(starts) == 32
    assert most_in_any_window(starts, 10.0 + WindowGuard.MARGIN_S - 1e-9) == 5


def test_retries_count_against_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """One start a 10 s window: the retry of the first row, 1 s after its 429, waits until the
    first try leaves the window (11 s after it), and the second row until the retry has left."""
    clock = VirtualClock()
    monkeypatch.setattr(send, "_now", clock.clock)
    monkeypatch.setattr(send, "_sleep", clock.sleep)
    monkeypatch.setattr(throttle.random, "uniform", lambda low, high: low)
    answers = iter([429, 202, 202])

    async def scenario() -> list[float]:
        arrivals: list[float] = []

        async def handle(request: web.Request) -> web.Response:
            arrivals.append(clock.now)
            await request.read()
            return web.json_response({}, status=next(answers))

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        session = aiohttp.ClientSession(trace_configs=[clock.trace()])
        try:
            stats = await send_all(
                _requests(2),
                endpoint=f"http://{host}:{port}",
                token=TOKEN,
                destination=USERPILOT,
                options=SendOptions(concurrency=1, rate_window=(1, 10.0), throttle_floor_s=1.0),
                on_result=lambda result: None,
                session=session,
            )
        finally:
            await session.close()
            await runner.cleanup()
        assert (stats.delivered, stats.retries) == (2, 1)
        return arrivals

    assert asyncio.run(scenario()) == [1000.0, 1011.0, 1022.0]


@pytest.mark.parametrize(
    ("window", "workers", "each"),
    [
        pytest.param((600, 60.0), 1, (600, 60.0), id="one"),
        pytest.param((600, 60.0), 4, (150, 60.0), id="even"),
        pytest.param((600, 60.0), 7, (85, 60.0), id="rounded-down"),
        pytest.param((2, 60.0), 4, (1, 60.0), id="at-least-one"),
        pytest.param(None, 4, None, id="none"),
    ],
)
def test_each_sender_gets_its_share_of_the_window(
    window: tuple[int, float] | None, workers: int, each: tuple[int, float] | None
) -> None:
    part = share(SendOptions(concurrency=32, rate=10.0, rate_window=window), workers)
    assert part.rate_window == each
    assert part.rate == pytest.approx(10.0 / workers)


# ------------------------------------------------------- windows per family, across restarts


_BODIES = {
    "v1/track": lambda i: {"user_id": f"u{i % 50}", "event_name": "Viewed"},
    "v1/identify": lambda i: {"user_id": f"u{i % 50}"},
    "v1/companies/identify": lambda i: {"company_id": f"c{i % 50}"},
}


def _mixed(count: int, paths: tuple[str, ...]) -> list[Request]:
    return [
        Request(
            method="POST",
            path=paths[i % len(paths)],
            body=json.dumps(_BODIES[paths[i % len(paths)]](i)).encode(),
            input_id="i",
            source_file="events.csv",
            line=i,
        )
        for i in range(count)
    ]


async def _runs_against_the_mock(
    clock: VirtualClock, runs: list[tuple[Callable[[], SendOptions], list[Request]]]
) -> tuple[dict[str, object], list[tuple[float, float]], int]:
    """Runs one after another against one Userpilot mock on the virtual clock, as a process
    and the one started right after it would: the mock's stats, each run's (first, last)
    arrival and the requests delivered."""
    api = mock_for("userpilot")
    app = create_app(mock_config(api, token=TOKEN), clock=clock.clock, api=api)
    arrivals: list[float] = []

    @web.middleware
    async def note(request: web.Request, handler: object) -> web.StreamResponse:
        arrivals.append(clock.now)
        return await handler(request)  # type: ignore[operator, no-any-return]

    app.middlewares.append(note)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    delivered = 0
    spans: list[tuple[float, float]] = []

    def on_result(result: Result) -> None:
        nonlocal delivered
        delivered += result.delivered

    try:
        for make_options, requests in runs:
            options = make_options()
            arrivals.clear()
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=options.concurrency),
                trace_configs=[clock.trace()],
            )
            try:
                await send_all(
                    requests,
                    endpoint=f"http://{host}:{port}",
                    token=TOKEN,
                    destination=USERPILOT,
                    options=options,
                    on_result=on_result,
                    session=session,
                )
            finally:
                await session.close()
            spans.append((min(arrivals), max(arrivals)))
    finally:
        await runner.cleanup()
    return app[STATE].stats(), spans, delivered


def _virtual(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    clock = VirtualClock()
    monkeypatch.setattr(send, "_now", clock.clock)
    monkeypatch.setattr(send, "_sleep", clock.sleep)
    monkeypatch.setattr(throttle, "_wall", clock.clock)  # the state's rate log keeps to it
    return clock


def test_each_endpoint_family_has_a_window_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """600 track and 600 identify requests (company identify among them) go in the same
    minute: each family has Userpilot's 600 of its own; one window for both took two."""
    clock = _virtual(monkeypatch)
    options = SendOptions(concurrency=32, rate_window=rate_window_of(USERPILOT))
    requests = _mixed(1200, ("v1/track", "v1/identify", "v1/track", "v1/companies/identify"))
    runs = [(lambda: options, requests)]
    stats, spans, delivered = asyncio.run(_runs_against_the_mock(clock, runs))
    assert delivered == 1200
    assert "429" not in cast(dict[str, int], stats["by_status"])
    assert stats["window_peak"] == 600
    first, last = spans[0]
    assert last - first < 60.0


def test_the_families_are_declared_by_the_destination() -> None:
    from importer.destinations.base import rate_family_of

    families = {
        path: rate_family_of(USERPILOT, path)
        for path in (
            "v1/track",
            "v1/identify",
            "v1/companies/identify",
            "v1/users/bulk_identify",
            "v1/companies/bulk_identify",
            "v1/imports",
            "v1/background_jobs",
            "v1/background_jobs/job-1",
        )
    }
    assert families == {
        "v1/track": "track",
        "v1/identify": "identify",
        "v1/companies/identify": "identify",
        "v1/users/bulk_identify": "identify",
        "v1/companies/bulk_identify": "identify",
        "v1/imports": "imports",
        "v1/background_jobs": "imports",
        "v1/background_jobs/job-1": "imports",
    }


@pytest.mark.parametrize("remembered", [True, False])
def test_a_restart_honours_the_starts_of_the_run_before_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, remembered: bool
) -> None:
    """A run fills the window, and the next starts at once (a kill -9 and a rerun): with the
    starts kept in the state directory it waits for the window, and the mock sees no more than
    600 in any minute; forgetting them (as before) brings 429s."""
    clock = _virtual(monkeypatch)
    state = tmp_path / "state"
    state.mkdir()
    base = SendOptions(concurrency=32, rate=100.0, rate_window=rate_window_of(USERPILOT))

    def options() -> SendOptions:  # each run reads the state directory when it starts
        return remember_starts(base, state) if remembered else base

    runs = [(options, _mixed(600, ("v1/track",))), (options, _mixed(100, ("v1/track",)))]
    stats, spans, delivered = asyncio.run(_runs_against_the_mock(clock, runs))
    assert delivered == 700
    by_status = cast(dict[str, int], stats["by_status"])
    if remembered:
        assert "429" not in by_status
        assert stats["window_peak"] == 600
        assert spans[1][0] >= spans[0][0] + 60.0  # the first start left the window first
        assert "token" not in (state / "rate-window.log").read_text()
    else:
        assert by_status["429"] > 0
        assert cast(int, stats["window_peak"]) > 600


def test_the_senders_share_the_earlier_starts_once_each() -> None:
    earlier = {"track": [1.0, 2.0, 3.0, 4.0, 5.0], "identify": [7.0]}
    options = SendOptions(rate_window=(600, 60.0), rate_starts=earlier)
    parts = [share(options, 2, index).rate_starts for index in range(2)]
    assert parts == [
        {"track": [1.0, 3.0, 5.0], "identify": [7.0]},
        {"track": [2.0, 4.0], "identify": []},
    ]


def test_earlier_starts_leave_the_window_in_their_time_and_a_future_one_counts_as_now() -> None:
    clock = VirtualClock()

    async def scenario() -> list[float]:
        # 30 s ago, 10 s ago, and 500 s ahead (a wall clock set back since): the window is full.
        earlier = [clock.now - 30.0, clock.now - 10.0, clock.now + 500.0]
        guard = WindowGuard(
            3, 60.0, clock=clock.clock, sleep=clock.sleep, earlier=earlier, wall=clock.clock
        )
        starts = []
        for _ in range(3):
            await guard.wait()
            guard.started()
            starts.append(clock.now)
        return starts

    # Each goes when an earlier start leaves (margin of 1 s included): the one 30 s ago, the
    # one 10 s ago, then the one "ahead", counted as now, not 500 s on.
    assert asyncio.run(scenario()) == [1031.0, 1051.0, 1061.0]
