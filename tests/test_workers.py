"""send_across_workers: N sender processes against the real mock server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import pickle
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from importer.api.settings import AUTO_WORKERS_CAP, auto_workers, delivery_options
from importer.cli.app import main
from importer.delivery.options import SendOptions
from importer.delivery.send import SendStats, send_all
from importer.delivery.sender_process import frame, read_frame
from importer.delivery.workers import _Pool, _Sender, send_across_workers, share
from importer.destinations import get_destination
from importer.destinations.mocking import MockConfig
from importer.errors import ImporterError
from importer.mock.server import embedded_mock
from importer.model import Request, Result

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


def test_an_error_in_on_retry_still_lets_the_senders_drain() -> None:
    # The first answer is 503, every answer is slow: a failing on_retry ends the run, and the
    # requests already out are still reported, as send_all would.
    requests = _requests(40)
    config = MockConfig(
        token=TOKEN, dedup_window_s=0, status_script=(503,), rate_slow=1, slow_s=0.3
    )
    results: list[Result] = []

    def on_retry(request: Request, message: str) -> None:
        raise OSError("the terminal went away")

    async def main() -> tuple[SendStats | None, BaseException | None, int]:
        async with embedded_mock(config) as mock:
            try:
                stats = await send_across_workers(
                    requests,
                    workers=2,
                    endpoint=mock.url,
                    token=TOKEN,
                    destination=VERO,
                    options=SendOptions(concurrency=4, backoff_base_s=0.0),
                    on_result=results.append,
                    on_retry=on_retry,
                )
            except OSError as exc:
                return None, exc, mock.state.accepted
            return stats, None, mock.state.accepted

    _, error, accepted = asyncio.run(main())
    assert isinstance(error, OSError)
    # The requests in flight when it failed were let finish and reported (none was cut off).
    assert results
    assert len(results) == accepted


def test_a_destination_the_senders_cannot_load_is_refused() -> None:
    impostor = dataclasses.replace(VERO, title="not the registered one")

    async def main() -> None:
        await send_across_workers(
            _requests(3),
            workers=2,
            endpoint="http://127.0.0.1:9/api",
            token=TOKEN,
            destination=impostor,
            options=SendOptions(),
            on_result=lambda result: None,
        )

    with pytest.raises(ImporterError, match="--workers needs a registered destination"):
        asyncio.run(main())


def test_a_stop_set_before_the_start_starts_no_sender() -> None:
    async def main() -> SendStats:
        stop = asyncio.Event()
        stop.set()
        return await send_across_workers(
            _requests(500),
            workers=2,
            endpoint="http://127.0.0.1:9/api",
            token=TOKEN,
            destination=VERO,
            options=SendOptions(),
            on_result=lambda result: None,
            stop=stop,
        )

    stats = asyncio.run(main())
    assert stats.interrupted
    assert stats.unfinished == 0


def test_senders_do_not_inherit_the_token_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VERO.token_env, TOKEN)
    environments: list[bytes] = []

    def on_result(result: Result) -> None:
        if not environments:
            for task in Path("/proc/self/task").iterdir():
                for child in (task / "children").read_text().split():
                    environments.append(Path(f"/proc/{child}/environ").read_bytes())

    config = MockConfig(token=TOKEN, dedup_window_s=0)

    async def main() -> None:
        async with embedded_mock(config) as mock:
            await send_across_workers(
                _requests(50),
                workers=2,
                endpoint=mock.url,
                token=TOKEN,
                destination=VERO,
                options=SendOptions(concurrency=2),
                on_result=on_result,
            )

    asyncio.run(main())
    assert len(environments) == 2
    assert all(TOKEN.encode() not in environment for environment in environments)


def test_there_are_never_more_senders_than_requests_in_flight() -> None:
    options = delivery_options(
        endpoint="embedded",
        destination=VERO,
        token_file=None,
        state_dir=Path("state"),
        fresh=False,
        dead_letter=None,
        concurrency=2,
        rate=None,
        max_retries=1,
        timeout=1.0,
        workers=8,
    )
    assert options.workers == 2


class _ClosedGate:
    """A start gate with room for `size` starts that never gets an acknowledgement; the first
    request that has to wait stops the run."""

    def __init__(self, size: int, stop: asyncio.Event) -> None:
        self.size = size
        self.stop = stop
        self.started = 0

    def take(self) -> bool:
        if self.started < self.size:
            self.started += 1
            return True
        return False

    async def wait_take(self) -> None:
        self.stop.set()
        await asyncio.Event().wait()


def test_send_all_starts_no_request_the_gate_holds_back() -> None:
    config = MockConfig(token=TOKEN, dedup_window_s=0)

    async def main() -> tuple[SendStats, dict[str, object]]:
        stop = asyncio.Event()
        async with embedded_mock(config) as mock:
            stats = await send_all(
                _requests(20),
                endpoint=mock.url,
                token=TOKEN,
                destination=VERO,
                options=SendOptions(concurrency=2),
                on_result=lambda result: None,
                stop=stop,
                gate=_ClosedGate(3, stop),
            )
            return stats, mock.state.stats()

    stats, seen = asyncio.run(main())
    assert stats.requests == 3
    assert seen["accepted"] == 3


def test_a_sender_starts_at_most_twice_its_concurrency_ahead_of_its_parents_acks() -> None:
    """What a kill -9 of the parent can lose (and a resumed run send again) is bounded by the
    acknowledgements, however slow the parent is to read the answers."""
    config = MockConfig(token=TOKEN, dedup_window_s=0)
    batch = [(r.line, r.method, r.path, r.route, r.body) for r in _requests(40)]

    async def results_until(reader: asyncio.StreamReader, count: int, seen: list[int]) -> None:
        while len(seen) < count:
            message = await read_frame(reader)
            assert message is not None
            if message[0] == "results":
                seen.extend(seq for seq, *_ in message[1])

    async def main() -> tuple[list[int], dict[str, object], dict[str, object]]:
        async with embedded_mock(config) as mock:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "importer.delivery.sender_process",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert process.stdin is not None
            assert process.stdout is not None
            start = {
                "endpoint": mock.url,
                "token": TOKEN,
                "destination": "vero",
                "options": SendOptions(concurrency=2),
            }
            process.stdin.write(frame(("start", start)) + frame(("batch", batch)))
            seen: list[int] = []
            await results_until(process.stdout, 4, seen)
            process.stdin.write(frame(("ack", 2)))
            await results_until(process.stdout, 6, seen)
            process.stdin.write(frame(("stop",)))
            while (message := await read_frame(process.stdout)) is not None:
                if message[0] == "results":
                    seen.extend(seq for seq, *_ in message[1])
                elif message[0] == "done":
                    stats = message[1]
            process.stdin.close()
            await process.wait()
            return seen, stats, mock.state.stats()

    seen, stats, received = asyncio.run(main())
    # Concurrency 2: four starts before any acknowledgement, two more for the two acknowledged.
    assert stats["requests"] == 6
    assert len(seen) == 6
    assert received["accepted"] == 6
