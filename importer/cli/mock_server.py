"""`importer mock-server`: a stand-in for an API on this machine, with its rules and injectable
faults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from importer.api.credentials import read_token_file
from importer.cli.options import (
    destination_option,
)
from importer.cli.shell import (
    fail,
)
from importer.delivery.options import is_loopback
from importer.destinations import get_destination
from importer.errors import ImporterError

if TYPE_CHECKING:
    pass


@click.command("mock-server")
@destination_option("The API to stand in for: its routes, credential, rules and answers.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8787,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append every accepted request body (without the token) to this JSONL file.",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    help="File holding the token to accept (default: the destination's environment variable, "
    "such as $VERO_AUTH_TOKEN, else 'test-token').",
)
@click.option(
    "--dedup-window",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds in which Vero drops a repeated event; 0 turns the emulation off.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault dice.")
@click.option("--rate-429", type=click.FloatRange(0, 1), default=0.0, help="Share answered 429.")
@click.option(
    "--retry-after",
    help="Retry-After of a 429: seconds, an HTTP date, or 'none' to send no header (default: "
    "the API's: 1 for Vero, none for Userpilot).",
)
@click.option(
    "--rate-5xx", type=click.FloatRange(0, 1), default=0.0, help="Share answered 500/502/503."
)
@click.option(
    "--rate-drop", type=click.FloatRange(0, 1), default=0.0, help="Share dropped unanswered."
)
@click.option("--rate-slow", type=click.FloatRange(0, 1), default=0.0, help="Share answered late.")
@click.option(
    "--slow", type=click.FloatRange(min=0), default=0.0, help="Seconds a slow answer waits."
)
@click.option(
    "--fail-first",
    type=click.IntRange(min=0),
    default=0,
    help="Answer the first N requests of each distinct body with 503.",
)
@click.option(
    "--status-script",
    default="",
    help="Comma-separated statuses for the first requests (200: real answer, 0: drop).",
)
@click.option(
    "--limit-rps",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Requests per second each token may make, a second's worth in a burst; beyond, 429 "
    "with the seconds to wait in Retry-After (default 0: no limit).",
)
@click.option(
    "--limit-window",
    metavar="N/SECONDS",
    help="At most N requests per token and rate bucket in any SECONDS; beyond, 429. 'off' for "
    "none (default: the API's documented limit: Userpilot 600/60 for each of track and "
    "identify, Vero none).",
)
@click.option(
    "--job-seconds",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="How long a background job (Userpilot's imports and bulk identify) takes.",
)
@click.option(
    "--job-fail",
    type=click.IntRange(min=1),
    multiple=True,
    metavar="N",
    help="Fail the Nth background job created (repeatable).",
)
@click.option(
    "--job-drop-answer",
    type=click.IntRange(min=1),
    multiple=True,
    metavar="N",
    help="Create the Nth background job but close the connection instead of answering "
    "(repeatable).",
)
def mock_server(
    destination: str,
    host: str,
    port: int,
    record: Path | None,
    token_file: Path | None,
    dedup_window: float,
    seed: int,
    rate_429: float,
    retry_after: str | None,
    rate_5xx: float,
    rate_drop: float,
    rate_slow: float,
    slow: float,
    fail_first: int,
    status_script: str,
    limit_rps: float,
    limit_window: str | None,
    job_seconds: float,
    job_fail: tuple[int, ...],
    job_drop_answer: tuple[int, ...],
) -> None:
    """Run a mock of the destination's API for rehearsals and tests; Ctrl-C stops it.

    It checks the token where the API expects it (Vero: auth_token in the body or query;
    Userpilot: the Authorization header) and the API's documented rules and rate limit, flags
    calls the API would drop as duplicates, runs background jobs on a timer, and injects faults
    or a rate limit on request.
    """
    target = get_destination(destination)
    try:
        if token_file is not None:
            token = read_token_file(token_file)
        else:
            token = os.environ.get(target.token_env) or "test-token"
    except ImporterError as exc:
        fail(exc)
    try:
        script = tuple(int(s) for s in status_script.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(
            "a comma-separated list of HTTP statuses", param_hint="--status-script"
        ) from None
    given: dict[str, object] = {}  # left out: the API's own default applies
    if retry_after is not None:
        given["retry_after"] = None if retry_after.lower() == "none" else retry_after
    if limit_window is not None:
        given["limit_window"] = _limit_window(limit_window)
    if not is_loopback(host):
        click.echo(
            f"Warning: {host} is not loopback: the mock speaks plain HTTP to the network.",
            err=True,
        )
    try:
        from importer.mock.registry import mock_for
        from importer.mock.server import mock_config, serve  # aiohttp.web only for this command

        api = mock_for(target.name)
        config = mock_config(
            api,
            token=token,
            record=record,
            dedup_window_s=dedup_window,
            seed=seed,
            rate_429=rate_429,
            rate_5xx=rate_5xx,
            rate_drop=rate_drop,
            rate_slow=rate_slow,
            slow_s=slow,
            fail_first=fail_first,
            status_script=script,
            limit_rps=limit_rps,
            job_seconds=job_seconds,
            job_fail=job_fail,
            job_drop_answer=job_drop_answer,
            **given,
        )

        def on_ready(url: str) -> None:
            click.echo(f"Mock {target.title} API listening: --endpoint {url}", err=True)
            click.echo("Press Ctrl-C to stop.", err=True)

        serve(config, host, port, on_ready=on_ready, api=api)
    except ImporterError as exc:
        fail(exc)


def _limit_window(text: str) -> tuple[int, float] | None:
    """--limit-window's N/SECONDS as (N, SECONDS); 'off' as None."""
    if text.lower() == "off":
        return None
    count, _, seconds = text.partition("/")
    try:
        return int(count), float(seconds)
    except ValueError:
        raise click.BadParameter(
            "N/SECONDS, such as 600/60, or off", param_hint="--limit-window"
        ) from None
