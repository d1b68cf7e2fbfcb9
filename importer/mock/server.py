"""A stand-in for an API (Vero's Track API v2 by default), with its rules and injectable faults.

Tests run it in-process; users run it for dry rehearsals (`importer mock-server`, or
`--endpoint embedded`). What is generic lives here: faults, the rate limits, the token check, the
duplicate window, counters and the record of accepted bodies (never with the token). What an API
says and refuses comes from a `MockAPI`, such as importer.destinations.vero.mock; an API with
background jobs (importer.destinations.userpilot.mock) uses the optional hooks listed there.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import math
import random
import signal
import time
from collections import Counter, deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from aiohttp import web

from importer.destinations.mocking import DROP, Judgement, MockAPI, MockCall, MockConfig
from importer.errors import MappingError
from importer.mock.registry import mock_for

PRUNE_AT = 100_000  # dedup keys held before expired ones are swept
BUCKETS_AT = 10_000  # rate-limit buckets held before the full ones are swept
# aiohttp refuses bodies over 1 MiB by default; an upload of a 50 MB chunk must get through
MAX_BODY_BYTES = 64 * 2**20


@dataclass(slots=True)
class MockState:
    """What the server has seen; `accepted` counts every body kept: each 200 or other success,
    duplicates included, and each row a background job landed.

    `bodies` holds accepted bodies as recorded (no credential; `_path`, `_duplicate` added)
    when the config's `keep_bodies` is on. `window_peak` is the most requests that arrived for
    one token and rate bucket in any `limit_window` span, refused ones included: a client that
    keeps to the limit never lifts it above n.
    """

    requests: int = 0
    accepted: int = 0
    duplicates: int = 0
    dropped: int = 0
    window_peak: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    api_stats: Callable[[], Mapping[str, Any]] | None = None  # the API's own counters, if any

    def stats(self) -> dict[str, Any]:
        """The counters as JSON-ready values (what `GET /_mock/stats` answers)."""
        stats = {
            "requests": self.requests,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "dropped": self.dropped,
            "window_peak": self.window_peak,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
        }
        if self.api_stats is not None:
            stats.update(self.api_stats())
        return stats


STATE = web.AppKey("mock_state", MockState)


def _response(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json")


def _decode_json(content_type: str, raw: bytes) -> object:
    """The default body decoding: JSON whatever the Content-Type says; None when it is not."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


def mock_config(api: MockAPI, **given: Any) -> MockConfig:
    """A MockConfig with the API's `config_defaults` (e.g. its documented rate limit) under the
    fields `given`, so the embedded mock and `importer mock-server` behave like the API."""
    defaults = getattr(api, "config_defaults", None)
    fields = dict(defaults()) if defaults is not None else {}
    fields.update(given)
    return MockConfig(**fields)


class _MockServer:
    """The request handlers and the per-server memory behind them (rng, dedup, fault counts)."""

    def __init__(
        self, config: MockConfig, state: MockState, clock: Callable[[], float], api: MockAPI
    ) -> None:
        self.config = config
        self.api = api
        self.state = state
        self.clock = clock
        self.token = config.token.encode()
        self.rng = random.Random(config.seed)
        self.random_faults = config.rate_429 + config.rate_5xx + config.rate_drop > 0
        self.statuses_5xx: Iterator[int] = itertools.cycle((500, 502, 503))
        self.failures: dict[int, int] = {}
        self.first_seen: dict[int, float] = {}
        self.prune_at = PRUNE_AT
        self.buckets: dict[object, tuple[float, float]] = {}  # token -> (room, when)
        self.buckets_at = BUCKETS_AT
        self.windows: dict[tuple[object, str], deque[float]] = {}  # (token, bucket) -> arrivals
        self.windows_at = BUCKETS_AT
        self.record: BinaryIO | None = None
        self.calls = 0
        self.decode: Callable[[str, bytes], object] = getattr(api, "decode", _decode_json)
        self.judge_call: Callable[[MockCall], Judgement] | None = getattr(api, "judge_call", None)
        self.rate_bucket: Callable[[str, str], str | None] = getattr(
            api, "rate_bucket", lambda method, path: ""
        )
        self.landed: Callable[[], list[dict[str, Any]]] | None = getattr(api, "advance", None)
        attach = getattr(api, "attach", None)
        if attach is not None:
            attach(config, clock)
        state.api_stats = getattr(api, "stats", None)

    async def open_record(self, app: web.Application) -> AsyncIterator[None]:
        """Hold one append handle for the server's life: no open() per request."""
        if self.config.record is None:
            yield
            return
        try:
            record = self.config.record.open("ab")
        except OSError as exc:
            msg = f"mock server: cannot open the record file {self.config.record}: {exc.strerror}"
            raise MappingError(msg) from exc
        with record:
            self.record = record
            yield
            self.record = None

    def pick_fault(self, raw: bytes) -> int | None:
        """The status to inject for this request (0: drop it), or None to answer for real."""
        config, n = self.config, self.calls
        self.calls += 1
        if n < len(config.status_script):
            scripted = config.status_script[n]
            return None if scripted == 200 else scripted
        if config.fail_first:
            # hash() keeps 200k bodies' worth of keys small; a collision would be one missed 503
            key = hash(raw)
            failed = self.failures.get(key, 0)
            if failed < config.fail_first:
                self.failures[key] = failed + 1
                return 503
        if self.random_faults:
            draw = self.rng.random()
            if draw < config.rate_429:
                return 429
            draw -= config.rate_429
            if draw < config.rate_5xx:
                return next(self.statuses_5xx)
            if draw - config.rate_5xx < config.rate_drop:
                return DROP
        return None

    def arrive(self, token: object, method: str, path: str) -> bool:
        """Count this request in its `limit_window` span; whether it goes beyond the limit.

        The span is (now - w, now]: a request w seconds old has left it.
        """
        window = self.config.limit_window
        if window is None:
            return False
        bucket = self.rate_bucket(method, path)
        if bucket is None:
            return False
        limit, seconds = window
        now = self.clock()
        arrivals = self.windows.setdefault((token, bucket), deque())
        while arrivals and arrivals[0] <= now - seconds:
            arrivals.popleft()
        arrivals.append(now)
        self.state.window_peak = max(self.state.window_peak, len(arrivals))
        if len(self.windows) > self.windows_at:
            # spans with no arrival left are the same as none: random tokens cost no memory
            self.windows = {k: a for k, a in self.windows.items() if a[-1] > now - seconds}
            self.windows_at = max(BUCKETS_AT, 2 * len(self.windows))
        return len(arrivals) > limit

    def keep(self, records: Iterable[dict[str, Any]]) -> None:
        """Count and record accepted bodies: one write and flush for the lot."""
        records = list(records)
        if not records:
            return
        self.state.accepted += len(records)
        if self.config.keep_bodies:
            self.state.bodies.extend(records)
        if self.record is not None:
            lines = [json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records]
            self.record.write(b"".join(lines))
            self.record.flush()

    def advance(self) -> None:
        """Let the API move its background jobs on, and keep what they landed."""
        if self.landed is not None:
            self.keep(self.landed())

    def is_duplicate(self, dedup_key: Hashable) -> bool:
        """Whether the API would drop this request; the window runs from the first sighting."""
        if not self.config.dedup_window_s:
            return False
        key, now = hash(dedup_key), self.clock()
        first = self.first_seen.get(key)
        if first is not None and now - first < self.config.dedup_window_s:
            return True
        self.first_seen[key] = now
        if len(self.first_seen) > self.prune_at:
            # forget keys past their window, so a long rehearsal's memory stays flat
            window = self.config.dedup_window_s
            self.first_seen = {k: t for k, t in self.first_seen.items() if now - t < window}
            self.prune_at = max(PRUNE_AT, 2 * len(self.first_seen))
        return False

    def throttle(self, token: object) -> int | None:
        """Seconds until `token`'s bucket has room again (at least 1), or None: take a request.

        The bucket holds `limit_rps` requests (at least one) and refills at `limit_rps` a second.
        """
        rate, now = self.config.limit_rps, self.clock()
        depth = max(1.0, rate)
        room, when = self.buckets.get(token, (depth, now))
        room = min(depth, room + (now - when) * rate)
        if room >= 1.0:
            self.buckets[token] = (room - 1.0, now)
            if len(self.buckets) > self.buckets_at:
                # a full bucket is the same as none: forget those, so random tokens cost no memory
                self.buckets = {
                    k: (r, t) for k, (r, t) in self.buckets.items() if r + (now - t) * rate < depth
                }
                self.buckets_at = max(BUCKETS_AT, 2 * len(self.buckets))
            return None
        self.buckets[token] = (room, now)
        return max(1, math.ceil((1.0 - room) / rate))

    async def handle(self, request: web.Request, method: str, path: str) -> web.StreamResponse:
        """One API call: faults, rate limits, auth, the API's rules, dedup, record."""
        state, config = self.state, self.config
        state.requests += 1
        raw = await request.read()
        self.advance()
        content_type = request.headers.get("Content-Type", "")
        body = self.decode(content_type, raw)
        token = self.api.credential(request, body)
        # counted before faults: the peak is about what the client sent, whatever it was told
        beyond_window = self.arrive(token if isinstance(token, str) else None, method, path)
        fault = self.pick_fault(raw)
        if config.rate_slow and self.rng.random() < config.rate_slow:
            await asyncio.sleep(config.slow_s)
        if fault is not None:
            return self.inject(request, fault)
        if beyond_window:
            return self.inject(request, 429)
        if config.limit_rps:
            wait = self.throttle(token if isinstance(token, str) else None)
            if wait is not None:
                self.state.by_status[429] += 1
                response = _response(429, self.api.answer(429))
                response.headers["Retry-After"] = str(wait)
                return response
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode("utf-8", "surrogatepass"), self.token
        ):
            state.by_status[401] += 1
            return _response(401, self.api.answer(401))
        if self.judge_call is None:
            judged = self.api.judge(method, path, body)
        else:
            call = MockCall(
                method=method,
                path=path,
                params=dict(request.match_info),
                headers=request.headers,
                query=request.query,
                content_type=content_type,
                raw=raw,
                body=body,
            )
            judged = self.judge_call(call)
        if judged.status == DROP:
            return self.inject(request, DROP)
        state.by_status[judged.status] += 1
        record = judged.record
        if record is None:
            return _response(judged.status, judged.answer)
        duplicate = judged.dedup_key is not None and self.is_duplicate(judged.dedup_key)
        state.duplicates += duplicate
        record["_path"], record["_duplicate"] = path, duplicate
        self.keep([record])
        return _response(judged.status, judged.answer)

    def inject(self, request: web.Request, status: int) -> web.StreamResponse:
        """Answer with an injected failure, or close the connection without a word."""
        if status == DROP:
            self.state.dropped += 1
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never reaches the client: the socket is gone
        self.state.by_status[status] += 1
        response = _response(status, self.api.answer(status))
        if status == 429 and self.config.retry_after is not None:
            response.headers["Retry-After"] = self.config.retry_after
        return response

    def route(
        self, method: str, path: str
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The aiohttp handler of one of the API's routes."""

        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, method, path)

        return handler

    async def stats(self, request: web.Request) -> web.StreamResponse:
        self.advance()  # a job that ended since the last request shows as ended
        return web.json_response(self.state.stats())

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        self.state.by_status[404] += 1
        return _response(404, self.api.answer(404))


def create_app(
    config: MockConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    api: MockAPI | None = None,
) -> web.Application:
    """The mock of `api` (default: Vero) as an aiohttp app; `app[STATE]` is its MockState;
    `clock` drives the dedup window, the rate limits and the API's jobs."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    api = api or mock_for()
    mock = _MockServer(config, MockState(), clock, api)
    app[STATE] = mock.state
    app.cleanup_ctx.append(mock.open_record)
    for method, path in sorted(api.routes):
        app.router.add_route(method, f"{api.base_path}/{path}", mock.route(method, path))
    app.router.add_get("/_mock/stats", mock.stats)
    app.router.add_route("*", "/{tail:.*}", mock.not_found)
    return app


@dataclass(slots=True)
class RunningMock:
    """A started mock: `url` is the base URL to send to (ends in its API's base path)."""

    url: str
    state: MockState
    runner: web.AppRunner

    @property
    def stats_url(self) -> str:
        """Where `GET` answers the counters as JSON, for a test in another process."""
        origin = "/".join(self.url.split("/", 3)[:3])
        return origin + "/_mock/stats"

    async def close(self) -> None:
        """Stop listening, let in-flight requests finish briefly, close the record."""
        await self.runner.cleanup()


async def start_mock_server(
    config: MockConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Callable[[], float] = time.monotonic,
    api: MockAPI | None = None,
) -> RunningMock:
    """Listen on host:port (0: a free port) inside the running event loop; `api` as in
    create_app."""
    api = api or mock_for()
    app = create_app(config, clock=clock, api=api)
    # no access log: it would print query strings, and a token may travel in one
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise MappingError(f"mock server: cannot listen on {host}:{port}: {exc.strerror}") from exc
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return RunningMock(f"http://{shown}:{bound_port}{api.base_path}", app[STATE], runner)


@asynccontextmanager
async def embedded_mock(
    config: MockConfig | None = None, *, api: MockAPI | None = None
) -> AsyncIterator[RunningMock]:
    """A mock on a free loopback port for the length of a `with` block (`--endpoint embedded`)."""
    mock = await start_mock_server(config or MockConfig(), api=api)
    try:
        yield mock
    finally:
        await mock.close()


def serve(
    config: MockConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None] | None = None,
    api: MockAPI | None = None,
) -> None:
    """Run the mock of `api` (default: Vero) until SIGINT or SIGTERM; `on_ready` gets the base
    URL once it listens."""
    asyncio.run(_serve(config, host, port, on_ready, api))


async def _serve(
    config: MockConfig,
    host: str,
    port: int,
    on_ready: Callable[[str], None] | None,
    api: MockAPI | None,
) -> None:
    mock = await start_mock_server(config, host, port, api=api)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    with suppress(NotImplementedError):  # Windows: Ctrl-C arrives as KeyboardInterrupt instead
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready(mock.url)
        await stop.wait()
    finally:
        for sig in signals:
            with suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
        await mock.close()
