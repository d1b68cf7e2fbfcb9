"""How hard to push: the backoff after a failure, Retry-After, and the limits that adapt to the
API's answers (concurrency, rate, and a window of at most N request starts in W seconds), and
the gate a sender process holds its starts to (delivery/sender_process.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

from importer.delivery.options import SendOptions
from importer.destinations.base import Destination, rate_family_of
from importer.state.rate_log import StartLog, read_starts

# The wall clock, which the API's window and the state's rate log keep to; looked up at call
# time, so a test in virtual time can put its clock here.
_wall: Callable[[], float] = time.time


class StartGate(Protocol):
    """What a request waits for before its first try, beyond the concurrency limit."""

    def take(self) -> bool:
        """Let one request start now, if there is room; False if it must wait."""
        ...

    async def wait_take(self) -> None:
        """Wait until there is room, then let one request start."""
        ...


def parse_retry_after(value: str, *, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta seconds or an HTTP date), None if unreadable."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Full-jitter exponential backoff before retry number `attempt` (0 for the first retry)."""
    return random.uniform(0.0, min(cap, base * 2.0 ** min(attempt, 64)))


def floor_backoff(throttles: int, *, floor: float, cap: float) -> float:
    """The wait after a request's `throttles`-th 429 when the API names no wait: floor, twice
    that, four times... up to `cap`, never under `floor`, plus up to a quarter of jitter.

    Full jitter could retry at once, which an API that counts every request against its limit
    answers with another 429.
    """
    base = max(floor, min(cap, floor * 2.0 ** min(throttles - 1, 64)))
    return base * random.uniform(1.0, 1.25)


class AdaptiveLimit:
    """An AIMD cap on requests in flight, shared by all workers, that backs off on 429.

    A 429 halves the cap (down to 1); each run of `limit` successes in a row raises it by one,
    up to `maximum`. A 429 to a request sent before the latest cut does not cut again, so a
    burst of 429s from one overloaded moment halves once rather than collapsing the cap to 1.

    The throttled request waits its own Retry-After. Everyone waits it only when the API is
    refusing most requests (at least half of the last RECENT answers): pausing all on every
    429 turned a steady 1% of them into a 60-fold slowdown, while the cap alone adapts.
    """

    RECENT = 32

    def __init__(
        self,
        maximum: int,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.maximum = maximum
        self.limit = maximum
        self.in_flight = 0
        self.paused_until = 0.0
        self._epoch = 0
        self._successes = 0
        self._recent: deque[bool] = deque(maxlen=self.RECENT)  # True: answered 429
        self._recent_throttled = 0
        self._clock = clock or time.monotonic
        self._sleep = sleep or asyncio.sleep
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> int:
        """Take a slot without waiting: the epoch to hand back on a 429, or -1 to call acquire()."""
        if self.in_flight < self.limit and not self._waiters and not self.paused_until:
            self.in_flight += 1
            return self._epoch
        return -1

    async def acquire(self) -> int:
        """Wait for a pause to end and a slot to free up; return the epoch as try_acquire does."""
        woken = False
        while True:
            if self.paused_until:
                delay = self.paused_until - self._clock()
                if delay > 0:
                    await self._sleep(delay)
                    continue
                self.paused_until = 0.0
            # Newcomers queue behind waiters; a woken waiter has already waited its turn.
            if self.in_flight < self.limit and (woken or not self._waiters):
                self.in_flight += 1
                return self._epoch
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._waiters.remove(waiter)
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # pass on the wake this cancelled waiter will not use
                raise
            self._waiters.remove(waiter)
            woken = True

    def release(self) -> None:
        """Give a slot back and wake the longest waiter if the cap allows it to go."""
        self.in_flight -= 1
        self._wake()

    def on_success(self) -> None:
        """Count an answered request; a full run of them raises the cap by one."""
        self._remember(throttled=False)
        self._successes += 1
        if self._successes >= self.limit and self.limit < self.maximum:
            self._successes = 0
            self.limit += 1
            self._wake()

    def on_throttled(self, epoch: int, retry_after: float | None) -> None:
        """React to a 429: halve the cap once per epoch; pause everyone if most answers are 429."""
        self._remember(throttled=True)
        self._successes = 0
        if epoch == self._epoch:
            self._epoch += 1
            self.limit = max(1, self.limit // 2)
        mostly_throttled = 2 * self._recent_throttled >= len(self._recent)
        if retry_after and self._recent_throttled >= 2 and mostly_throttled:
            self.paused_until = max(self.paused_until, self._clock() + retry_after)

    def _remember(self, *, throttled: bool) -> None:
        if len(self._recent) == self.RECENT:
            self._recent_throttled -= self._recent[0]
        self._recent.append(throttled)
        self._recent_throttled += throttled

    def _wake(self) -> None:
        # Wake one waiter per free slot; each re-checks the cap itself, so an extra wake is harmless.
        free = self.limit - self.in_flight
        for waiter in self._waiters:
            if free <= 0:
                break
            if not waiter.done():
                waiter.set_result(None)
                free -= 1


class AdaptiveRate:
    """Spaces request starts to a pace learnt from the API's 429s, never above `ceiling`.

    Nothing is paced (but to `ceiling`, the user's --rate) until the first 429. The first 429 of
    an epoch (to a request started after the latest cut), at most one every COOL_S, cuts the
    pace: to the rate of answers other than 429 over the last WINDOW_S when unpaced, else by
    the share of 429s among them. The pace then grows by GROWTH a second. A cap on requests in
    flight cannot do this: on a fast link one request at a time is already thousands a second.
    Measured (tests/bench/bench_rate_limit.py): 0.99 of a token-bucket limit, and random 429s,
    which no pace avoids, cost no throughput: a slower growth or no cool-down let them ratchet
    the pace down to a third.
    """

    WINDOW_S = 1.0
    GROWTH = 0.2
    COOL_S = 1.0
    FLOOR = 1.0  # requests per second: the slowest pace a cut sets

    def __init__(
        self,
        ceiling: float | None = None,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.ceiling = ceiling
        self._base = ceiling  # the pace at the latest cut; None: unpaced
        self._cut_at = 0.0
        self._next = 0.0
        self._epoch = 0
        self._started: float | None = None
        self._answers: deque[float] = deque()  # when the recent answers other than 429 came
        self._throttles: deque[float] = deque()  # when the recent 429s came
        self._clock = clock or time.monotonic
        self._sleep = sleep or asyncio.sleep

    def rate(self) -> float | None:
        """The pace now, in request starts per second; None while unpaced."""
        if self._base is None or self._base == self.ceiling:
            return self._base
        grown = self._base * (1.0 + self.GROWTH) ** (self._clock() - self._cut_at)
        return grown if self.ceiling is None else min(grown, self.ceiling)

    @property
    def epoch(self) -> int:
        """The epoch a request starting now hands back on a 429."""
        return self._epoch

    def reserve(self) -> float:
        """Reserve this caller's start time: the seconds to wait for it (0.0: go now).

        Start times are reserved 1/rate apart, so nobody polls, and an idle spell earns no burst.
        """
        if self._started is None:
            self._started = self._clock()
        if self._base is None:
            return 0.0  # unpaced: the common case, without reading the clock
        now = self._clock()
        rate = self.rate()
        if rate is None:
            return 0.0
        start = self._next if self._next > now else now
        self._next = start + 1.0 / rate
        return start - now

    async def wait(self) -> int:
        """Return at this caller's reserved start time, with the epoch to hand back on a 429."""
        epoch = self._epoch
        delay = self.reserve()
        if delay > 0:
            await self._sleep(delay)
        return epoch

    def on_answer(self) -> None:
        """Count an answer other than 429: a request the API let through."""
        now = self._clock()
        self._answers.append(now)
        _forget(self._answers, now - self.WINDOW_S)

    def on_throttled(self, epoch: int) -> None:
        """A 429: the first of an epoch, at most one a COOL_S, cuts the pace by the share of
        429s among the answers of the last WINDOW_S (unpaced: to the rate of the others).

        Cutting by the share, not to the rate let through, keeps a pace that is not what holds
        the run back from ratcheting down to whatever the run happens to reach.
        """
        now = self._clock()
        self._throttles.append(now)
        since = now - self.WINDOW_S
        _forget(self._throttles, since)
        _forget(self._answers, since)
        if epoch != self._epoch or (self._base is not None and now - self._cut_at < self.COOL_S):
            return
        self._epoch += 1
        current = self.rate()
        if current is not None:
            let_through = len(self._answers) / (len(self._answers) + len(self._throttles))
            pace = current * let_through
        else:
            span = min(self.WINDOW_S, now - (self._started if self._started is not None else now))
            if not self._answers or span <= 0:
                return  # nothing to go by yet: the throttled request waits its Retry-After
            pace = len(self._answers) / span
        self._base = max(self.FLOOR, pace)
        self._cut_at = now


class WindowGuard:
    """At most `limit` request starts in any `window_s` seconds: an API's hard quota per window.

    A pace alone does not guarantee it (10 a second puts 601 starts in a closed 60 s window),
    and retries count too. Starts are kept MARGIN_S longer than the window, so that latency
    differences between our start and the server's arrival cannot fit one more into its window.
    Call wait() before reserving the start, then started() with the pace's delay at once.
    """

    MARGIN_S = 1.0
    _TICK_S = 1e-3  # the shortest wait: a rounding remainder must not spin on a fake clock

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        earlier: Iterable[float] = (),
        note: Callable[[float], None] | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.limit = limit
        self.span = window_s + self.MARGIN_S
        self._leaves: deque[float] = deque()  # when each recent start leaves the window, in order
        self._clock = clock or time.monotonic
        self._sleep = sleep or asyncio.sleep
        # `earlier`: starts of before this process (wall-clock seconds), which still count;
        # `note` is told each start's wall-clock time, to keep them for the next process.
        self._wall = wall or _wall
        self._note = note
        now, wall_now = self._clock(), self._wall()
        for at in sorted(earlier):
            # A start after now (the wall clock was set back) counts as now, never longer.
            leaves = now + min(at - wall_now, 0.0) + self.span
            if leaves > now:
                self._leaves.append(leaves)

    async def wait(self) -> None:
        """Return once one more start fits: fewer than `limit` starts are still in the window."""
        leaves = self._leaves
        while True:
            now = self._clock()
            while leaves and leaves[0] <= now:
                leaves.popleft()
            if len(leaves) < self.limit:
                return
            await self._sleep(max(leaves[0] - now, self._TICK_S))

    def started(self, delay: float = 0.0) -> None:
        """Count a start `delay` seconds from now (the pace's reservation); call right after
        wait(), with no await between, so that no other start slips in.

        Reservations come in time order, so the starts stay in order too.
        """
        self._leaves.append(self._clock() + delay + self.span)
        if self._note is not None:
            self._note(self._wall() + delay)


class RateWindows:
    """The API's windows of a run: one WindowGuard per rate family its destination declares
    (rate_family_of), each starting from the family's earlier starts (options.rate_starts)
    and noting its own in the state directory's rate log (options.rate_log)."""

    def __init__(
        self,
        destination: Destination,
        options: SendOptions,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._destination = destination
        self._options = options
        self._clock = clock
        self._sleep = sleep
        self._log = None if options.rate_log is None else StartLog(options.rate_log)
        self._by_path: dict[str, WindowGuard | None] = {}
        self._by_family: dict[str, WindowGuard] = {}

    def of(self, path: str) -> WindowGuard | None:
        """The window a request to `path` counts against (None: the API has none)."""
        try:
            return self._by_path[path]
        except KeyError:
            pass
        window = self._options.rate_window
        guard = None
        if window is not None:
            family = rate_family_of(self._destination, path)
            guard = self._by_family.get(family)
            if guard is None:
                log = self._log
                note = None if log is None else functools.partial(log.append, family)
                guard = self._by_family[family] = WindowGuard(
                    *window,
                    clock=self._clock,
                    sleep=self._sleep,
                    earlier=self._options.rate_starts.get(family, ()),
                    note=note,
                )
        self._by_path[path] = guard
        return guard

    def close(self) -> None:
        """Close the rate log, if a start was noted."""
        if self._log is not None:
            self._log.close()


def remember_starts(send: SendOptions, state_dir: Path | None) -> SendOptions:
    """`send` with the earlier starts of the API's windows kept in `state_dir` (rewritten to
    hold only those still in a window), and the same directory to note this run's in; as it
    is when the API has no window or nothing is kept (`state_dir` None)."""
    if send.rate_window is None or state_dir is None:
        return send
    since = _wall() - send.rate_window[1] - WindowGuard.MARGIN_S
    starts = read_starts(state_dir, since=since)
    return dataclasses.replace(send, rate_starts=starts, rate_log=state_dir)


def _forget(times: deque[float], since: float) -> None:
    """Drop the times before `since` from the left of a deque kept in time order."""
    while times and times[0] < since:
        times.popleft()
