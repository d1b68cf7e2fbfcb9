"""send_across_workers: N sender processes against the real mock server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pickle
from collections import Counter

import pytest
from click.testing import CliRunner

from importer.cli import AUTO_WORKERS_CAP, auto_workers, main
from importer.destinations import get_destination
from importer.mock_server import MockConfig, embedded_mock
from importer.model import Request, Result
from importer.send import SendOptions, SendStats, send_all
from importer.workers import _Pool, _Sender, send_across_workers, share

TOKEN = "workers-test-token"
VERO = get_destination("vero")


def _requests(count: int, *, users: int = 7) -> list[Request]:
    return [
        Request(
            method="POST",
            path="events/track",
            body=json.dumps(
                {
                    "identity": {"id": f"u{i % users}"},
                    "event_name": "Viewed",
                    "data": {"n": i},
                }
            ).encode(),
            input_id="fp",
            source_file="events.csv",
            line=i + 2,
            route=i % users,
        )
        for i in range(count)
    ]


def _send(
    requests: list[Request],
    config: MockConfig,
    *,
    workers: int,
    stop_after: int | None = None,
    concurrency: int = 8,
) -> tuple[SendStats, list[Result], dict[str, object], list[dict[str, object]]]:
    results: list[Result] = []

    async def main() -> tuple[SendStats, dict[str, object], list[dict[str, object]]]:
        stop = asyncio.Event()

        def on_result(result: Result) -> None:
            results.append(result)
            if stop_after is not None and len(results) >= stop_after:
                stop.set()

        async with embedded_mock(config) as mock:
            options = SendOptions(concurrency=concurrency, max_retries=3, backoff_base_s=0.0)
            if workers == 1:
                stats = await send_all(
                    requests,
                    endpoint=mock.url,
                    token=config.token,
                    destination=VERO,
                    options=options,
                    on_result=on_result,
                    stop=stop,
                )
            else:
                stats = await send_across_workers(
                    requests,
                    workers=workers,
                    endpoint=mock.url,
                    token=config.token,
                    destination=VERO,
                    options=options,
                    on_result=on_result,
                    stop=stop,
                )
            return stats, mock.state.stats(), list(mock.state.bodies)

    stats, seen, bodies = asyncio.run(main())
    return stats, results, seen, bodies


def test_every_request_is_delivered_once_across_two_senders() -> None:
    requests = _requests(600)
    config = MockConfig(token=TOKEN, keep_bodies=True, dedup_window_s=0)
    stats, results, seen, bodies = _send(requests, config, workers=2)
    assert stats.delivered == 600
    assert stats.dead == 0
    assert stats.unfinished == 0
    assert sorted(result.request.line for result in results) == [r.line for r in requests]
    assert all(result.delivered for result in results)
    assert seen["accepted"] == 600
    assert Counter(body["data"]["n"] for body in bodies) == Counter(range(600))


def test_results_carry_the_parents_request() -> None:
    requests = _requests(50)
    config = MockConfig(token=TOKEN, dedup_window_s=0)
    _, results, _, _ = _send(requests, config, workers=2)
    assert {result.request for result in results} == set(requests)


def test_retries_and_dead_letters_come_back_to_the_parent() -> None:
    requests = _requests(40)
    # The first 40 answers are 503 (each body retried), then 400 for the rest: all dead.
    config = MockConfig(token=TOKEN, dedup_window_s=0, fail_first=1)
    stats, _, seen, _ = _send(requests, config, workers=2)
    assert stats.delivered == 40
    assert stats.retries == 40
    assert seen["requests"] == 80


def test_a_refused_token_stops_every_sender() -> None:
    requests = _requests(400)
    config = MockConfig(token="the-right-one", dedup_window_s=0)

    async def main() -> SendStats:
        async with embedded_mock(config) as mock:
            return await send_across_workers(
                requests,
                workers=2,
                endpoint=mock.url,
                token="a-wrong-token",
                destination=VERO,
                options=SendOptions(concurrency=4),
                on_result=lambda result: None,
            )

    stats = asyncio.run(main())
    assert stats.stopped_reason is not None
    assert stats.stopped_status == 401
    assert "a-wrong-token" not in stats.stopped_reason
    assert stats.delivered == 0
    assert stats.unfinished == 400


def test_a_stop_in_one_sender_stops_the_others() -> None:
    requests = _requests(400)
    # Only the first answer is 401: the sender that got it stops, and the parent stops the rest,
    # which would otherwise send their ~200 rows (at 10 ms each, for seconds).
    config = MockConfig(
        token=TOKEN, dedup_window_s=0, status_script=(401,), rate_slow=1, slow_s=0.01
    )
    stats, _, _, _ = _send(requests, config, workers=2, concurrency=2)
    assert stats.stopped_reason is not None
    assert stats.delivered < 100


def test_a_stop_ends_the_run_with_the_rest_unfinished() -> None:
    requests = _requests(3000)
    config = MockConfig(token=TOKEN, dedup_window_s=0)
    stats, results, seen, _ = _send(requests, config, workers=2, stop_after=100)
    assert stats.interrupted
    assert 100 <= stats.delivered < 3000
    # Only what the senders were handed counts as unfinished; the rest was never taken.
    assert stats.unfinished > 0
    assert stats.delivered + stats.unfinished < 3000
    assert len(results) == stats.delivered
    # Nothing reached the API that was not reported, except what was in flight when cut off.
    assert seen["accepted"] - stats.delivered <= stats.abandoned


class _Pipe:
    """The stdin of a sender that is not there: keeps the frames written to it."""

    def __init__(self) -> None:
        self.frames: list[object] = []

    def write(self, data: bytes) -> None:
        self.frames.append(pickle.loads(data[4:]))

    def is_closing(self) -> bool:
        return False


class _Process:
    def __init__(self) -> None:
        self.stdin = _Pipe()
        self.stdout = object()


def test_one_users_rows_go_to_one_sender() -> None:
    requests = _requests(300, users=5)
    senders = [_Sender(_Process(), window=1000) for _ in range(3)]  # type: ignore[arg-type]

    async def main() -> None:
        pool = _Pool(senders, on_result=lambda result: None, on_retry=None)
        await pool.produce(requests)

    asyncio.run(main())
    users_of: list[set[str]] = []
    handed = 0
    for sender in senders:
        pipe = sender.process.stdin
        assert pipe.frames[-1] == ("end",)
        bodies = [body for kind, *rest in pipe.frames if kind == "batch" for *_, body in rest[0]]
        handed += len(bodies)
        users_of.append({json.loads(body)["identity"]["id"] for body in bodies})
    assert handed == 300
    assert all(users_of)  # 5 users over 3 senders: each gets some
    for one, other in itertools.combinations(users_of, 2):
        assert not one & other


@pytest.mark.parametrize(("total", "workers", "each"), [(32, 2, 16), (33, 2, 17), (1, 4, 1)])
def test_concurrency_and_rate_are_totals(total: int, workers: int, each: int) -> None:
    part = share(SendOptions(concurrency=total, rate=100.0), workers)
    assert part.concurrency == each
    assert part.rate == pytest.approx(100.0 / workers)


@pytest.mark.parametrize(
    ("endpoint", "rate", "expected"),
    [
        ("embedded", None, 1),
        ("http://127.0.0.1:8080/api", None, 1),
        ("http://[::1]:8080/api", None, 1),
        ("https://api.example.com/v2", 500.0, 1),
        ("https://api.example.com/v2", None, 6),
        ("https://api.example.com/v2", 5000.0, 6),
    ],
)
def test_workers_default_to_the_cores_only_where_they_help(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, rate: float | None, expected: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert auto_workers(endpoint, rate) == expected


def test_many_cores_are_capped() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "cpu_count", lambda: 96)
        assert auto_workers("https://api.example.com/v2", None) == AUTO_WORKERS_CAP


def test_the_benchmark_switch_is_not_in_the_help() -> None:
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    assert "--workers" in result.output
    assert "benchmark" not in result.output
