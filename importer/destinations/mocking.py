"""The contract between the mock server and a destination's mock: the interface a mock implements
(MockAPI), the call it is shown (MockCall), the answer it gives (Judgement) and the server's
configuration it may set defaults for (MockConfig).

It lives with the destinations so that each API's mock (destinations/<api>/mock.py) imports its
API's constants and this contract, never the server; the server (importer/mock/) finds a
destination's mock through its own registry. No production module imports a mock.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from importer.errors import MappingError

if TYPE_CHECKING:
    from aiohttp import web  # the mock server's request type; only the server imports aiohttp.web

DROP = 0  # a `status_script` entry that closes the connection instead of answering


@dataclass(frozen=True, slots=True)
class MockConfig:
    """How the mock behaves; every fault is off by default, so it answers like a healthy API.

    Rates are shares of requests in [0, 1]; `rate_429 + rate_5xx + rate_drop` may not exceed 1.
    `status_script` answers the first requests with these statuses in order (200: handle the
    request for real, 0: drop the connection); then `fail_first` answers the first N requests
    of each distinct body with 503; then the seeded random faults apply. `limit_rps` (0: off)
    is a real rate limit, a token bucket per auth token carried, about a second's worth deep:
    beyond it the answer is 429 with a Retry-After of the whole seconds until room comes back.
    `limit_window` (n, w) is the other kind: at most n requests per token and rate bucket (the
    API's `rate_bucket`) in any w seconds, refused ones counted; beyond, 429 with `retry_after`
    (None: no Retry-After header, as a 429 or an injected one then carries none).
    `job_seconds`, `job_fail` and `job_drop_answer` are for an API with background jobs: how
    long a job runs, which jobs (1-based, in order of creation) fail, and which creations are
    carried out but answered by closing the connection.
    """

    token: str = "test-token"
    record: Path | None = None
    keep_bodies: bool = False  # hold accepted bodies in MockState.bodies; off keeps memory flat
    dedup_window_s: float = 300.0
    seed: int = 0
    rate_429: float = 0.0
    retry_after: str | None = "1"
    rate_5xx: float = 0.0
    rate_drop: float = 0.0
    rate_slow: float = 0.0
    slow_s: float = 0.0
    fail_first: int = 0
    status_script: tuple[int, ...] = ()
    limit_rps: float = 0.0
    limit_window: tuple[int, float] | None = None
    job_seconds: float = 0.5
    job_fail: tuple[int, ...] = ()
    job_drop_answer: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.record is not None and not isinstance(self.record, Path):
            object.__setattr__(self, "record", Path(self.record))
        for name in ("status_script", "job_fail", "job_drop_answer"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.limit_window is not None:
            object.__setattr__(self, "limit_window", tuple(self.limit_window))
        rates = ("rate_429", "rate_5xx", "rate_drop", "rate_slow")
        problems = [
            f"{name} must be between 0 and 1, not {getattr(self, name)}"
            for name in rates
            if not 0.0 <= getattr(self, name) <= 1.0
        ]
        if self.rate_429 + self.rate_5xx + self.rate_drop > 1.0:
            problems.append("rate_429 + rate_5xx + rate_drop must not exceed 1")
        if not self.token:
            problems.append("token must not be empty")
        for name in ("dedup_window_s", "slow_s", "fail_first"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative, not {getattr(self, name)}")
        if not (0 <= self.limit_rps < math.inf):
            problems.append(
                f"limit_rps must be a finite number of at least 0, not {self.limit_rps}"
            )
        if self.retry_after is not None and not valid_retry_after(self.retry_after):
            problems.append(
                f"retry_after must be seconds or an HTTP date, not {self.retry_after!r}"
            )
        bad = [s for s in self.status_script if s != DROP and not 100 <= s <= 599]
        if bad:
            problems.append(f"status_script holds statuses that are not HTTP statuses: {bad}")
        problems += _window_problems(self.limit_window)
        if not (0 <= self.job_seconds < math.inf):
            problems.append(
                f"job_seconds must be a finite number of at least 0, not {self.job_seconds}"
            )
        for name in ("job_fail", "job_drop_answer"):
            if any(not isinstance(n, int) or n < 1 for n in getattr(self, name)):
                problems.append(f"{name} must hold job numbers from 1, not {getattr(self, name)}")
        if problems:
            raise MappingError("mock server: " + "; ".join(problems))


def _window_problems(window: tuple[int, float] | None) -> list[str]:
    """Why `limit_window` is unusable: it takes a whole count of at least 1 and finite seconds."""
    if window is None:
        return []
    if len(window) == 2:
        count, seconds = window
        if isinstance(count, int) and count >= 1 and 0 < seconds < math.inf:
            return []
    return [f"limit_window must be (requests of at least 1, seconds above 0), not {window}"]


@dataclass(frozen=True, slots=True)
class Judgement:
    """An API's answer to an authorised request: the status and JSON bytes to send back.

    `record` is the body to keep (without the credential) when the API accepts it, None when it
    refuses: only accepted requests are counted, deduplicated and recorded. `dedup_key` is what
    the API compares to drop a repeat (None: it never drops this one). A `status` of DROP closes
    the connection unanswered, after the API has done what the request asked.
    """

    status: int
    answer: bytes
    record: dict[str, Any] | None = None
    dedup_key: Hashable | None = None


@dataclass(frozen=True, slots=True)
class MockCall:
    """One authorised request as an API's `judge_call` sees it.

    `path` is the route as the API listed it (e.g. "v1/jobs/{job_id}"); `params` holds the
    route's parameters, percent-decoded; `body` is what `decode` made of `raw`.
    """

    method: str
    path: str
    params: Mapping[str, str]
    headers: Mapping[str, str]
    query: Mapping[str, str]
    content_type: str
    raw: bytes
    body: object


class MockAPI(Protocol):
    """What differs between the APIs the server can stand in for; the server does the rest.

    The server owns faults, the rate limits, the token comparison, the duplicate window, the
    counters and the record; the API says which calls exist, where the credential travels, which
    bodies it takes and how its answers look.

    Optional hooks, looked up by name, so an API without them needs nothing:
    - `decode(content_type, raw) -> object`: the body (default: JSON, None when it is not);
    - `judge_call(call: MockCall) -> Judgement`: used instead of `judge` when the API needs the
      headers, route parameters or raw body;
    - `rate_bucket(method, path) -> str | None`: which `limit_window` count a route draws on
      (None: not limited; without the hook every route shares one);
    - `attach(config, clock)`: called once with the server's config and clock;
    - `advance() -> list[dict]`: called before every request is handled and before stats are
      read; the bodies that landed since (background jobs that ended), recorded as accepted;
    - `stats() -> Mapping[str, object]`: counters added to `MockState.stats()`;
    - `config_defaults() -> Mapping[str, object]`: MockConfig fields the API's mock wants unless
      told otherwise (see `mock_config`).
    """

    @property
    def base_path(self) -> str:
        """The path every route hangs under, e.g. "/api/v2"."""
        ...

    @property
    def routes(self) -> Collection[tuple[str, str]]:
        """The (method, path under base_path) pairs served; the rest answer 404."""
        ...

    def credential(self, request: web.Request, body: object) -> object:
        """The credential the request carries (None: none), taken out of `body` if it was there."""
        ...

    def judge(self, method: str, path: str, body: object) -> Judgement:
        """The answer to an authorised request; `body` is the parsed JSON (None: not JSON)."""
        ...

    def answer(self, status: int) -> bytes:
        """The API's answer body for a status the server decides: 401, 404, 429, 5xx."""
        ...


def valid_retry_after(value: str) -> bool:
    """Whether `value` is a Retry-After a client must understand: delta-seconds or an HTTP date."""
    if value.isdigit():
        return True
    try:
        return parsedate_to_datetime(value) is not None
    except (TypeError, ValueError):
        return False
