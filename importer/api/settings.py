"""A run's delivery settings from what a caller asked for: the endpoint and token, the destination's
defaults (rate, throttle floor, rate window), how many sender processes, how often to poll the API's
jobs, and which orders an action can keep. The CLI and the Python API both build their options here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from importer.api.credentials import resolve_token
from importer.delivery.feed import order_time_path
from importer.delivery.options import DeliveryOptions, SendOptions, check_endpoint, is_loopback
from importer.delivery.proxy import proxy_for
from importer.destinations import Action, Destination
from importer.destinations.base import endpoint_of, rate_window_of, throttle_floor_of
from importer.errors import OptionError
from importer.pipeline.endpoint import EMBEDDED

MAX_WORKERS = 64


# --workers by default: one process keeps up with this many requests a second; above it, the
# cores help, up to a cap past which the API rather than this machine is the limit.
ONE_PROCESS_RATE = 1000.0


AUTO_WORKERS_CAP = 8


def auto_workers(endpoint: str, rate: float | None) -> int:
    """The sender processes --workers defaults to for this endpoint and total rate."""
    host = urlsplit(endpoint).hostname or ""
    if endpoint == EMBEDDED or is_loopback(host):
        return 1
    if rate is not None and rate <= ONE_PROCESS_RATE:
        return 1
    return max(1, min(os.cpu_count() or 1, AUTO_WORKERS_CAP))


def delivery_options(
    *,
    endpoint: str | None,
    destination: Destination,
    token_file: Path | None,
    state_dir: Path,
    token: str | None = None,
    fresh: bool,
    dead_letter: Path | None,
    concurrency: int,
    rate: float | None,
    max_retries: int,
    timeout: float,
    workers: int | None = 1,
    checkpoint: bool = True,
    options: Mapping[str, object] | None = None,
) -> DeliveryOptions:
    if endpoint is None:
        endpoint = endpoint_of(destination, options or {})
    if endpoint != EMBEDDED:
        endpoint = check_endpoint(endpoint)
        proxy_for(endpoint)  # a proxy it cannot use is an error now, not in a sender process
    rate = rate if rate is not None else destination.default_rate
    return DeliveryOptions(
        endpoint=endpoint,
        token=resolve_token(destination, token_file, endpoint, token=token),
        state_dir=state_dir,
        fresh=fresh,
        dead_letter=dead_letter,
        send=SendOptions(
            concurrency=concurrency,
            rate=rate,
            max_retries=max_retries,
            timeout_s=timeout,
            throttle_floor_s=throttle_floor_of(destination),
            rate_window=rate_window_of(destination),
        ),
        # Concurrency is a total: more senders than requests in flight would raise it.
        workers=min(workers or auto_workers(endpoint, rate), concurrency),
        checkpoint=checkpoint,
    )


def default_poll_s(endpoint: str | None) -> float:
    """The first wait before looking at a job: short where the API is this machine (a mock)."""
    if endpoint == EMBEDDED:
        return 0.1
    host = urlsplit(endpoint).hostname if endpoint else None
    return 0.1 if host is not None and is_loopback(host) else 1.0


def ordered(
    delivery: DeliveryOptions, action: Action, *, per_user_order: bool, order: str
) -> DeliveryOptions:
    """A job step's share of --per-user-order and --order time: the order is kept in every step
    that sends a request per row of a user, and by time where its action has a time (a tags
    step keeps its file order)."""
    if order == "time" and not per_user_order:
        raise OptionError("--order time goes with --per-user-order")
    if not per_user_order or action.bulk is not None or not action.identity:
        return delivery
    return dataclasses.replace(
        delivery,
        order_time=order_time_path(action) if order == "time" else None,
        send=dataclasses.replace(delivery.send, per_user_order=True),
    )


def order_time_for(action: Action, *, per_user_order: bool, order: str) -> str | None:
    """The body path --order time sorts each user's rows by (None: input order); a usage
    error for an order the action cannot keep."""
    if order == "time" and not per_user_order:
        raise OptionError("--order time goes with --per-user-order")
    if not per_user_order:
        return None
    if action.bulk is not None:
        raise OptionError(
            f"--per-user-order: action {action.name!r} goes as bulk jobs, not a request per row"
        )
    if not action.identity:
        raise OptionError(
            f"--per-user-order: action {action.name!r} names no user to keep the order of"
        )
    if order == "file":
        return None
    path = order_time_path(action)
    if path is None:
        raise OptionError(
            f"--order time: action {action.name!r} has no time field to order by; "
            "use --order file (the input's order)"
        )
    return path
