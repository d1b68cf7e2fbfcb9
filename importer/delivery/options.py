"""How hard to push an API and where: the send options and the endpoint rules.

Apart from delivery/send.py, so that commands that send nothing (validate, a dry run) check them without
loading the HTTP client.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from importer.errors import MappingError
from importer.state.layout import DEAD_LETTER_NAME

if TYPE_CHECKING:
    import polars as pl

# Past timeout_s every request in flight has ended by itself; this covers the scheduling slack.
DRAIN_MARGIN_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SendOptions:
    """How hard to push the API and how long to keep trying; checked when built.

    `drain_timeout_s` (None: timeout_s + DRAIN_MARGIN_S) is how long requests in flight may
    still finish after a stop; by default as long as one may take, so none is cut off.
    """

    concurrency: int = 32
    rate: float | None = None
    max_retries: int = 8
    timeout_s: float = 30.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    drain_timeout_s: float | None = None
    retry_after_cap_s: float = 300.0
    # A 429 without Retry-After waits at least this long, doubling per 429 (0: the usual
    # jittered backoff); from the destination.
    throttle_floor_s: float = 0.0
    # At most this many requests start in any window of this many seconds (600 in
    # 60 s), retries included; None: no window. Shared out among sender processes.
    rate_window: tuple[int, float] | None = None
    # The window's earlier starts (wall-clock seconds, by rate family: an earlier run's, from
    # the state directory), and the state directory whose rate log notes this run's starts.
    rate_starts: Mapping[str, list[float]] = field(default_factory=dict)
    rate_log: Path | None = None
    # One user's requests (those of one Request.route) one at a time, in the order they come.
    per_user_order: bool = False

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not _is_int(self.concurrency) or self.concurrency < 1:
            problems.append(
                f"concurrency must be a whole number of at least 1, not {self.concurrency!r}"
            )
        if self.rate is not None and not (_is_number(self.rate) and self.rate > 0):
            problems.append(
                f"rate must be a number of requests per second above 0, not {self.rate!r}"
            )
        if not _is_int(self.max_retries) or self.max_retries < 0:
            problems.append(
                f"max_retries must be a whole number of at least 0, not {self.max_retries!r}"
            )
        if not (_is_number(self.timeout_s) and self.timeout_s > 0):
            problems.append(
                f"timeout_s must be a number of seconds above 0, not {self.timeout_s!r}"
            )
        for name in ("backoff_base_s", "backoff_cap_s", "drain_timeout_s", "retry_after_cap_s"):
            value = getattr(self, name)
            if name == "drain_timeout_s" and value is None:
                continue
            if not (_is_number(value) and value >= 0):
                problems.append(f"{name} must be a number of seconds of at least 0, not {value!r}")
        if not isinstance(self.per_user_order, bool):
            problems.append(f"per_user_order must be True or False, not {self.per_user_order!r}")
        if problems:
            raise MappingError("invalid send options: " + "; ".join(problems))

    @property
    def drain_s(self) -> float:
        """How long requests in flight may finish after a stop."""
        if self.drain_timeout_s is not None:
            return self.drain_timeout_s
        return self.timeout_s + DRAIN_MARGIN_S


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_endpoint(endpoint: str) -> str:
    """The endpoint normalised (lower-case scheme and host, no trailing slash), or a MappingError.

    Only loopback may be plain http: anywhere else the token would cross the network in clear.
    Messages show the URL without user info, query or fragment, where secrets tend to hide.
    """
    text = endpoint.strip()
    if not text:
        raise MappingError(
            "--endpoint is empty",
            hint="give the API's base URL, or leave the option out to send to production",
        )
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unclosed IPv6 bracket, say
        raise MappingError(f"--endpoint is not a URL: {exc}") from None
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()
    scheme = parts.scheme.lower()
    if parts.username is not None or parts.password is not None:
        raise MappingError(
            f"endpoint {shown}: credentials in the URL are not allowed",
            hint="pass the token through the environment or --token-file",
        )
    if scheme not in ("http", "https"):
        raise MappingError(f"endpoint {shown}: the scheme must be https (or http on loopback)")
    host = (parts.hostname or "").lower()
    try:
        _ = parts.port  # the property raises on a port that is not a number
    except ValueError:
        raise MappingError(f"endpoint {shown}: the port is not valid") from None
    if not host:
        raise MappingError(f"endpoint {shown}: no host name")
    if any(char.isspace() for char in text):
        raise MappingError(f"endpoint {shown!r}: a URL holds no white space")
    if parts.query or parts.fragment:
        raise MappingError(f"endpoint {shown}: a base URL takes no query or fragment")
    if scheme == "http" and not is_loopback(host):
        raise MappingError(
            f"endpoint {shown}: plain http is only allowed to loopback (127.0.0.1, ::1, "
            "localhost); anywhere else the token would travel unencrypted",
            hint="use https://",
        )
    return f"{scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an IP address, IPv6 with or without brackets) is this machine."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Feed:
    """Bodies of one input, ready to send: LINE, BODY, METHOD and PATH columns."""

    fingerprint: str
    name: str
    frame: pl.DataFrame


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryOptions:
    """Where to send and where to keep state; `token` is None only until the embedded mock starts.

    `workers` is how many processes send (1: this one; more: importer.delivery.workers, each user's rows
    through one of them by the ROUTE column). `checkpoint=False` is for benchmarks only: the
    checkpoint log is neither read nor written (every row is sent, nothing is resumable), so a
    run shows what the log costs.
    """

    endpoint: str
    token: str | None
    state_dir: Path
    fresh: bool = False
    dead_letter: Path | None = None
    send: SendOptions = field(default_factory=SendOptions)
    workers: int = 1
    checkpoint: bool = True
    # For actions delivered as jobs: the first wait before asking how a job is doing (then
    # 1.5 times longer each time), and how long to wait while another job holds the key.
    poll_s: float = 1.0
    busy_wait_s: float = 3600.0
    # With send.per_user_order: the body path of the time each user's rows are sent by
    # (--order time, from order_time_path); None: in the order of the input.
    order_time: str | None = None
    # Where the recent request starts of the API's rate window are kept (None: state_dir); a
    # job file's steps share the job's, as they share the API's window.
    rate_dir: Path | None = None

    @property
    def real_token(self) -> str:
        """The token to send: a run reaches delivery with one (the embedded mock's included)."""
        if self.token is None:
            # An internal invariant, not a user's mistake: a missing token is refused first.
            raise AssertionError(
                "delivery needs a token; the embedded mock's is set when it starts"
            )
        return self.token

    @property
    def dead_letter_path(self) -> Path:
        """The dead-letter file: the one asked for, else one in the state directory."""
        return self.dead_letter or self.state_dir / DEAD_LETTER_NAME
