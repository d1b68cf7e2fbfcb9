"""The sending stage: one aiohttp session, a fixed pool of workers, retries, limits and a drain.

    requests ──producer──▶ bounded queue ──▶ `concurrency` workers ──▶ on_result(Result)

Every answer is judged by the destination's `classify()`: delivered and dead letters are
reported, retries back off with full jitter (honouring `Retry-After`, or doubling from a floor
when the API sets one), request starts keep to the API's quota per window if it has one, and a
STOP verdict or the caller's `stop` event ends the run after the requests in flight finish. Requests that were never
answered are never reported, so a resumed run sends them again.

With `per_user_order` a request whose user (its `route`) has an earlier one unfinished (in
flight, waiting for a retry, or parked) is parked in that user's lane instead of being queued;
the worker that ends the earlier one (delivered or dead) sends the next of the lane itself. So
one user's requests go one at a time, in the order they came, and users still go in parallel.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from yarl import URL

from importer.delivery.answers import ANSWER_BYTES, describe_answer, read_capped
from importer.delivery.options import (
    SendOptions,
    check_endpoint,
)
from importer.delivery.proxy import client_session
from importer.delivery.refusals import RefusalGuard
from importer.delivery.scrub import clip, make_scrubber
from importer.delivery.throttle import (
    AdaptiveLimit,
    AdaptiveRate,
    RateWindows,
    StartGate,
    backoff_delay,
    floor_backoff,
    parse_retry_after,
)
from importer.destinations.base import Destination, foreign_refusal
from importer.model import Request, Result, Verdict

# Looked up at call time, so tests can swap in a fake clock instead of really waiting.
_now: Callable[[], float] = time.monotonic
_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

_RETRY_AFTER_STATUSES = frozenset({429, 503})

# An acknowledgement up to this long is judged once, and up to this many different ones are kept.
_REMEMBERED_BYTES = 1024
_REMEMBERED_ANSWERS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class SendStats:
    """What a run did: HTTP attempts, retries among them, outcomes, and why it stopped early.

    `unfinished` counts requests taken from the input but neither delivered nor dead-lettered
    (stopped, drained away, or cut off in a backoff): a resumed run sends them again.
    `abandoned` counts those among them that were sent and never answered (cut off in flight,
    or timed out or disconnected on their last try): the API may have them already, so the
    resumed run may deliver them twice.
    `stopped_status` is the HTTP status of the answer that stopped the run (a STOP verdict's,
    or the last of only 429s); None when no answer did (none came, or nothing stopped it).
    """

    requests: int
    retries: int
    delivered: int
    dead: int
    stopped_reason: str | None
    elapsed_s: float
    interrupted: bool = False
    unfinished: int = 0
    abandoned: int = 0
    stopped_status: int | None = None


async def send_all(
    requests: AsyncIterable[Request] | Iterable[Request],
    *,
    endpoint: str,
    token: str,
    destination: Destination,
    options: SendOptions,
    on_result: Callable[[Result], None],
    on_retry: Callable[[Request, str], None] | None = None,
    stop: asyncio.Event | None = None,
    session: aiohttp.ClientSession | None = None,
    gate: StartGate | None = None,
) -> SendStats:
    """Send every request and report each delivered or dead one through `on_result`.

    The input is pulled lazily into a queue of 2 x concurrency, so memory stays bounded. When the
    API says STOP (401, a redirect) or `stop` is set, no new request starts, those in flight get
    `options.drain_s` to finish, and the rest are dropped unreported (counted in `abandoned`). A generator given as
    `requests` is closed when the run ends before it is exhausted. An exception from the input
    or a callback ends the run the same way and is raised after the drain. `gate`, when given,
    is passed by every request before its first try (a sender process's bound on answers its
    parent has not recorded yet).
    """
    base = check_endpoint(endpoint) + "/"
    started = time.monotonic()
    own_session = session is None
    if session is None:
        session = client_session(
            base,
            connector=aiohttp.TCPConnector(limit=options.concurrency),
            cookie_jar=aiohttp.DummyCookieJar(),  # an API client has no use for cookies
        )
    guard = RefusalGuard(
        on_result,
        lambda reason, status: sender._stop(reason, status),
        endpoint=endpoint,
        example_endpoint=destination.default_endpoint,
    )
    sender = _Sender(
        base=base,
        token=token,
        destination=destination,
        options=options,
        session=session,
        on_result=guard.record,
        on_retry=on_retry,
        gate=gate,
    )
    try:
        await sender.run(requests, stop)
        guard.release()  # fewer refusals than it takes to judge the endpoint: dead letters
    finally:
        sender.windows.close()
        if own_session:
            await session.close()
    if sender.error is not None:
        raise sender.error
    return SendStats(
        requests=sender.requests,
        retries=sender.retries,
        delivered=sender.delivered,
        dead=sender.dead,
        stopped_reason=sender.stopped_reason,
        elapsed_s=time.monotonic() - started,
        interrupted=sender.interrupted,
        unfinished=sender.pulled - sender.delivered - sender.dead,
        abandoned=sender.abandoned,
        stopped_status=sender.stopped_status,
    )


class _Sender:
    """The state of one run, shared by the producer and the workers; single-threaded by asyncio."""

    def __init__(
        self,
        *,
        base: str,
        token: str,
        destination: Destination,
        options: SendOptions,
        session: aiohttp.ClientSession,
        on_result: Callable[[Result], None],
        on_retry: Callable[[Request, str], None] | None,
        gate: StartGate | None = None,
    ) -> None:
        self.base = base
        self.gate = gate
        self.token = token
        self.destination = destination
        self.options = options
        self.session = session
        self.on_result = on_result
        self.on_retry = on_retry
        self.scrub = make_scrubber(token, fields=destination.credential_fields)
        self.timeout = aiohttp.ClientTimeout(total=options.timeout_s)
        self.limit = AdaptiveLimit(options.concurrency, clock=_now, sleep=_sleep)
        self.pace = AdaptiveRate(options.rate, clock=_now, sleep=_sleep)
        # One window per endpoint family of the API, from the starts of earlier runs.
        self.windows = RateWindows(destination, options, clock=_now, sleep=_sleep)
        self.sleep = _sleep
        self.queue: asyncio.Queue[Request | None] = asyncio.Queue(maxsize=2 * options.concurrency)
        self.halt = asyncio.Event()
        # Checked before each send as well as watched: a stop set mid-step must not let one more out.
        self.stop_is_set: Callable[[], bool] = _never
        self.busy: set[asyncio.Task[None] | None] = set()
        self.requests = self.retries = self.delivered = self.dead = self.pulled = 0
        self.abandoned = 0
        self.stopped_reason: str | None = None
        self.stopped_status: int | None = None
        self.urls: dict[str, URL] = {}
        self.delivered_answers: dict[tuple[int, bytes], tuple[Verdict, str]] = {}
        self.interrupted = False
        self.error: BaseException | None = None
        self.ordered = options.per_user_order
        # route -> its parked requests; a route is a key while one of its requests is unfinished.
        self.lanes: dict[int, deque[Request]] = {}
        self.parked = 0
        # Past this many parked requests (twice the queue's bound) no more input is pulled, so
        # a heavy user cannot fill memory: its rows then go one at a time, the price of order.
        self.park_bound = 2 * self.queue.maxsize
        self.room = asyncio.Event()
        # A full queue is refilled once it is down to half: waking the producer for every
        # request taken cost a task switch per request, more than the queue itself.
        self.low_water = self.queue.maxsize // 2
        self.drained = asyncio.Event()

    async def run(
        self, requests: AsyncIterable[Request] | Iterable[Request], stop: asyncio.Event | None
    ) -> None:
        """Start producer and workers, wait for the end or a halt, then drain."""
        if stop is not None:
            if stop.is_set():
                self.interrupted = True
                return
            self.stop_is_set = stop.is_set
        producer = asyncio.create_task(self._produce(requests))
        workers = [asyncio.create_task(self._work()) for _ in range(self.options.concurrency)]
        halted = asyncio.create_task(self.halt.wait())
        helpers: list[asyncio.Task[Any]] = [halted]
        if stop is not None:
            helpers.append(asyncio.create_task(self._watch(stop)))
        finished = asyncio.gather(*workers, return_exceptions=True)
        ends: list[asyncio.Future[Any]] = [finished, halted]
        try:
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            if self.halt.is_set():
                await self._drain(producer, workers)
            await finished
        finally:
            # Also reached when the caller cancels us: leave no task behind.
            for task in (producer, *workers, *helpers):
                task.cancel()
            await asyncio.gather(producer, *workers, *helpers, return_exceptions=True)

    async def _drain(self, producer: asyncio.Task[None], workers: list[asyncio.Task[None]]) -> None:
        """Cancel everything that is not waiting on an answer; give the rest options.drain_s."""
        producer.cancel()
        in_flight = [w for w in workers if w in self.busy]
        for worker in workers:
            if worker not in self.busy:
                worker.cancel()
        if in_flight:
            _, late = await asyncio.wait(in_flight, timeout=self.options.drain_s)
            for worker in late:
                worker.cancel()

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._interrupt()

    def _interrupt(self) -> None:
        # Only a stop that cuts the run short counts: after a STOP verdict it changes nothing.
        if not self.halt.is_set():
            self.interrupted = True
            self.halt.set()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.halt.set()

    async def _produce(self, requests: AsyncIterable[Request] | Iterable[Request]) -> None:
        """Feed the queue from the input, pulling only as fast as the workers take.

        A plain iterable is iterated on the event loop, so each item must be cheap to produce
        (prepared bodies); slow sources should be async iterables.
        """
        queue = self.queue
        exhausted = False
        try:
            # put_nowait where there is room: awaiting put() costs a coroutine per request.
            if self.ordered:
                if isinstance(requests, AsyncIterable):
                    async for request in requests:
                        self.pulled += 1
                        await self._admit(request)
                else:
                    for request in requests:
                        self.pulled += 1
                        await self._admit(request)
            elif isinstance(requests, AsyncIterable):
                async for request in requests:
                    self.pulled += 1
                    if queue.full():
                        await self._refill_due()
                    queue.put_nowait(request)
            else:
                for request in requests:
                    self.pulled += 1
                    if queue.full():
                        await self._refill_due()
                    queue.put_nowait(request)
            exhausted = True
            await queue.put(None)
        except Exception as exc:
            self._fail(exc)
        finally:
            if not exhausted:
                await close_source(requests)

    async def _refill_due(self) -> None:
        """Wait until the workers took the queue down to its low-water mark."""
        while self.queue.qsize() > self.low_water:
            self.drained.clear()
            await self.drained.wait()

    def _took(self) -> None:
        """A worker took a request: at the low-water mark the producer refills the queue."""
        if self.queue.qsize() <= self.low_water:
            self.drained.set()

    async def _admit(self, request: Request) -> None:
        """Queue the first unfinished request of its user; park the others in the user's lane,
        and wait while too many are parked."""
        lane = self.lanes.get(request.route)
        if lane is None:
            self.lanes[request.route] = deque()
            if self.queue.full():
                await self.queue.put(request)
            else:
                self.queue.put_nowait(request)
            return
        lane.append(request)
        self.parked += 1
        while self.parked > self.park_bound:
            self.room.clear()
            await self.room.wait()

    def _next_in_lane(self, ended: Request) -> Request | None:
        """The parked request of `ended`'s user that goes next, now that `ended` ended; None
        (and the lane closed) when there is none."""
        lane = self.lanes[ended.route]
        if not lane:
            del self.lanes[ended.route]
            return None
        self.parked -= 1
        if self.parked <= self.park_bound:
            self.room.set()
        return lane.popleft()

    async def _work(self) -> None:
        """Take requests until the input ends or the run halts; never raises."""
        queue, halt, stop_is_set = self.queue, self.halt, self.stop_is_set
        me = asyncio.current_task()
        try:
            while not halt.is_set():
                if stop_is_set():
                    self._interrupt()
                    return
                request = await queue.get() if queue.empty() else queue.get_nowait()
                self._took()
                if request is None:
                    queue.put_nowait(None)  # the end marker goes back for the next worker
                    return
                await self._send(request, me)
                # Only an ended request lets its user's next go: one cut off by a halt keeps
                # the rest of its lane unsent (and unmarked, for the next run to send in order).
                while self.ordered and not halt.is_set():
                    following = self._next_in_lane(request)
                    if following is None:
                        break
                    request = following
                    await self._send(request, me)
        except Exception as exc:
            self._fail(exc)

    async def _send(self, request: Request, me: asyncio.Task[None] | None) -> None:
        """Send one request until it is delivered, dead, or the run halts.

        One that ends unreported after a try that went out and got no answer is counted in
        `abandoned`: the API may hold it already. A 429 spends the retry budget only while
        nothing else is accepted: a throttled request tries again as long as others get
        through, and after max_retries + 1 429s in a row with nothing accepted anywhere in
        between the run stops, as when the API does not answer.
        """
        waiting = unanswered = reported = False  # a try is out now; one got no answer
        gate = self.gate
        if gate is not None and not gate.take():
            await gate.wait_take()
        try:
            body, headers = self.destination.authorize(request.body, self.token)
            url = self.urls.get(request.path) or self._url(request.path)
            limit, pace, window, halt, busy, stop_is_set = (
                self.limit,
                self.pace,
                self.windows.of(request.path),
                self.halt,
                self.busy,
                self.stop_is_set,
            )
            max_retries = self.options.max_retries
            attempt = failed = throttled = refusals = 0  # refusals: this request's 429s
            accepted_then = -1  # requests accepted anywhere when this one last got a 429
            while True:
                epoch = limit.try_acquire()
                if epoch < 0:
                    epoch = await limit.acquire()
                status: int | None = None
                retry_after: float | None = None
                try:
                    if window is not None:
                        await window.wait()
                    pace_epoch = pace.epoch
                    delay = pace.reserve()
                    if window is not None:
                        window.started(delay)
                    if delay > 0:
                        await self.sleep(delay)
                    if halt.is_set():
                        return
                    if stop_is_set():
                        self._interrupt()
                        return
                    attempt += 1
                    self.requests += 1
                    if attempt > 1:
                        self.retries += 1
                    busy.add(me)
                    waiting = True
                    response = await self.session.request(
                        request.method,
                        url,
                        data=body,
                        headers=headers,
                        allow_redirects=False,
                        timeout=self.timeout,
                    )
                    try:
                        payload = await read_capped(response, ANSWER_BYTES)
                    finally:
                        response.release()
                    status = response.status
                    waiting = False
                    verdict, message = self._classify(status, payload)
                    if status in _RETRY_AFTER_STATUSES and verdict is Verdict.RETRY:
                        retry_after = self._retry_after(response.headers.get("Retry-After"))
                except TimeoutError:
                    verdict = Verdict.RETRY
                    message = f"no answer within {self.options.timeout_s:g} s"
                except (
                    aiohttp.ClientSSLError,
                    aiohttp.ServerFingerprintMismatch,
                    aiohttp.InvalidURL,
                ) as exc:
                    # Every later request would fail the same way: stop rather than retry them all.
                    verdict, message = Verdict.STOP, f"cannot reach the endpoint: {exc}"
                    waiting = False  # refused before the request went out
                except aiohttp.ClientConnectorError as exc:
                    verdict, message = Verdict.RETRY, f"{type(exc).__name__}: {exc}"
                    waiting = False  # no connection, so nothing went out
                except (aiohttp.ClientError, OSError) as exc:
                    verdict, message = Verdict.RETRY, f"{type(exc).__name__}: {exc}"
                finally:
                    busy.discard(me)
                    limit.release()
                if waiting:  # sent, and the answer never came
                    waiting, unanswered = False, True

                if verdict is Verdict.DELIVERED:
                    self.delivered += 1
                    limit.on_success()
                    pace.on_answer()
                    self.on_result(Result(request, True, status, None, attempt))
                    reported = True
                    return
                message = clip(self.scrub(message))
                if verdict is Verdict.DEAD:
                    self.dead += 1
                    limit.on_success()
                    pace.on_answer()
                    foreign = foreign_refusal(self.destination, status, payload)
                    self.on_result(Result(request, False, status, message, attempt, foreign))
                    reported = True
                    return
                if verdict is Verdict.STOP:
                    self._stop(message, status)
                    return
                if status == 429:
                    limit.on_throttled(epoch, retry_after)
                    pace.on_throttled(pace_epoch)
                    accepted = self.delivered + self.dead
                    if accepted != accepted_then:
                        throttled = 0  # others got through meanwhile: the API is busy, not refusing
                    accepted_then = accepted
                    throttled += 1
                else:
                    if status is not None:
                        pace.on_answer()
                    failed += 1
                if halt.is_set():
                    return
                if stop_is_set():
                    self._interrupt()
                    return
                reason = describe_answer(status, message)
                if (status is None and failed > max_retries) or throttled > max_retries:
                    # Never answered, or only ever refused: the endpoint is down or out of quota,
                    # not this row wrong. Stopping leaves the row unmarked, so the next run sends
                    # it, where a dead letter would have filed the whole night away for a replay.
                    what = "no answer from" if status is None else "only 429 answers from"
                    self._stop(
                        f"{what} the endpoint after {attempt} attempts ({reason}); "
                        "the rows not acknowledged will be sent by the next run",
                        status,
                    )
                    return
                if failed + throttled > max_retries:
                    self.dead += 1
                    error = f"gave up after {attempt} attempts: {reason}"
                    self.on_result(Result(request, False, status, error, attempt))
                    reported = True
                    return
                floor = self.options.throttle_floor_s
                if status == 429 and floor > 0:
                    refusals += 1
                    if retry_after is not None:
                        delay = max(retry_after, floor)
                    else:
                        delay = floor_backoff(refusals, floor=floor, cap=self.options.backoff_cap_s)
                elif retry_after is not None:
                    delay = retry_after
                else:
                    delay = backoff_delay(
                        failed + throttled - 1,
                        base=self.options.backoff_base_s,
                        cap=self.options.backoff_cap_s,
                    )
                if self.on_retry is not None:
                    self.on_retry(
                        request,
                        f"{reason}; retry {failed + throttled} of {max_retries} in {delay:.1f} s",
                    )
                await self.sleep(delay)
        finally:
            if not reported and (waiting or unanswered):
                self.abandoned += 1

    def _stop(self, reason: str, status: int | None) -> None:
        """Halt the run; the first reason given, and the status that came with it, are kept."""
        if self.stopped_reason is None:
            self.stopped_reason, self.stopped_status = reason, status
        self.halt.set()

    def _url(self, path: str) -> URL:
        """The URL of `path`, parsed once: aiohttp would parse the same text for every request."""
        url = self.urls[path] = URL(self.base + path)
        return url

    def _classify(self, status: int, payload: bytes) -> tuple[Verdict, str]:
        """The destination's verdict; the usual acknowledgement is judged once and remembered.

        A verdict is a function of the status and the body (Destination.classify): the same
        short DELIVERED answer, which nearly every request gets, need not be parsed again.
        """
        key = (status, payload)
        known = self.delivered_answers.get(key)
        if known is not None:
            return known
        verdict = self.destination.classify(status, payload)
        if verdict[0] is Verdict.DELIVERED and len(payload) <= _REMEMBERED_BYTES:
            if len(self.delivered_answers) >= _REMEMBERED_ANSWERS:
                self.delivered_answers.clear()  # answers that vary (an id in each): stop growing
            self.delivered_answers[key] = verdict
        return verdict

    def _retry_after(self, value: str | None) -> float | None:
        if value is None:
            return None
        seconds = parse_retry_after(value, now=datetime.now(UTC))
        return None if seconds is None else min(seconds, self.options.retry_after_cap_s)


def _never() -> bool:
    return False


async def close_source(iterable: object) -> None:
    """Close a generator we stopped reading early, so its files and cursors are released."""
    aclose = getattr(iterable, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    close = getattr(iterable, "close", None)
    if close is not None:
        close()
