"""--per-user-order: one user's rows one at a time, in input (or time) order, users in parallel.

A small aiohttp app on 127.0.0.1 stands in for the API: it records every attempt per user in
arrival order, counts each user's requests in flight, and answers some first attempts with
503 or 429 and some rows with a final 400, so that retries and dead letters happen in a lane.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from aiohttp import web
from click.testing import CliRunner

from importer.cli.app import main
from importer.columns import ROUTE
from importer.delivery import feed
from importer.delivery.deliver import DeliveryControl
from importer.delivery.feed import release_order
from importer.delivery.options import DeliveryOptions, SendOptions
from importer.delivery.send import send_all
from importer.delivery.workers import send_across_workers
from importer.destinations import get_destination
from importer.model import Request, Result
from importer.outcome import Summary
from importer.pipeline.run import RunOptions, open_inputs, send_inputs
from importer.progress import DeliveryProgress
from importer.state.layout import ORDER_SPILL_NAME
from tests.pipeline_helpers import NOW, ROOT, make_mapping, write_csv

TOKEN = "order-test-token"
VERO = get_destination("vero")
OK = json.dumps({"status": 200, "message": "Success."})
# The longest a request is held: until a second of its user came (two at once, seen for sure)
# or every user had one in flight (users in parallel); either ends every hold for good.
HOLD_S = 5.0


@dataclass
class Api:
    """What the stand-in saw, per user: every attempt's row, the rows delivered, in order."""

    hold_s: float = HOLD_S
    faults: bool = True
    attempts: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    delivered: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    in_flight: Counter[str] = field(default_factory=Counter)
    most_per_user: int = 0
    most_at_once: int = 0
    tries: Counter[int] = field(default_factory=Counter)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def _seen_enough(self) -> bool:
        return self.most_per_user > 1 or self.most_at_once >= len(USERS)

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        user, row = body["identity"]["id"], int(body["data"]["n"])
        self.attempts[user].append(row)
        self.tries[row] += 1
        async with self.changed:
            self.in_flight[user] += 1
            self.most_per_user = max(self.most_per_user, self.in_flight[user])
            self.most_at_once = max(self.most_at_once, sum(self.in_flight.values()))
            self.changed.notify_all()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(self._seen_enough), self.hold_s)
            self.in_flight[user] -= 1
        first = self.tries[row] == 1
        if self.faults and row % 7 == 5:
            return web.Response(status=400, text='{"message": "bad row"}')
        if self.faults and first and row % 3 == 1:
            return web.Response(status=503, text='{"message": "busy"}')
        if self.faults and first and row % 4 == 2:
            return web.Response(
                status=429, text='{"message": "slow"}', headers={"Retry-After": "0"}
            )
        self.delivered[user].append(row)
        return web.Response(text=OK, content_type="application/json")


@asynccontextmanager
async def serving(api: Api) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/events/track", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


USERS = ("ann", "bob", "cy", "dee")


def _requests(per_user: int = 6) -> list[Request]:
    """Each user's rows side by side in the input, so that unordered sending overlaps them."""
    requests = []
    for i in range(per_user * len(USERS)):
        user = USERS[i // per_user]
        body = {"identity": {"id": user}, "event_name": "Viewed", "data": {"n": i}}
        route = USERS.index(user)  # over two sender processes: two users each
        requests.append(
            Request("POST", "events/track", json.dumps(body).encode(), "fp", "in.csv", i, route)
        )
    return requests


def _rows_of(requests: list[Request]) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = defaultdict(list)
    for request in requests:
        body = json.loads(request.body)
        rows[body["identity"]["id"]].append(body["data"]["n"])
    return rows


def _send(api: Api, *, ordered: bool, workers: int = 1) -> list[Result]:
    requests = _requests()
    results: list[Result] = []
    options = SendOptions(concurrency=8, max_retries=3, backoff_base_s=0.0, per_user_order=ordered)

    async def run() -> None:
        async with serving(api) as url:
            common = {
                "endpoint": url,
                "token": TOKEN,
                "destination": VERO,
                "options": options,
                "on_result": results.append,
            }
            if workers == 1:
                await send_all(requests, **common)  # type: ignore[arg-type]
            else:
                await send_across_workers(requests, workers=workers, **common)  # type: ignore[arg-type]

    asyncio.run(run())
    return results


def _assert_in_order(api: Api, rows: dict[str, list[int]]) -> None:
    assert api.most_per_user == 1
    for user, expected in rows.items():
        # Every attempt of a row, retries included, comes after the earlier rows ended.
        assert api.attempts[user] == sorted(api.attempts[user]), user
        assert api.delivered[user] == [n for n in expected if n % 7 != 5], user


@pytest.mark.parametrize("workers", [pytest.param(1, id="one-process"), pytest.param(2, id="two")])
def test_each_users_rows_go_one_at_a_time_in_order_through_retries(workers: int) -> None:
    api = Api()
    results = _send(api, ordered=True, workers=workers)
    _assert_in_order(api, _rows_of(_requests()))
    assert sum(not r.delivered for r in results) == sum(n % 7 == 5 for n in range(24))
    # 503s and 429s were answered, and the dead rows did not hold their users' later rows back.
    assert any(n % 3 == 1 and api.tries[n] > 1 for n in range(24))
    assert any(n % 4 == 2 and api.tries[n] > 1 for n in range(24))
    assert len(results) == 24
    assert api.most_at_once == len(USERS)  # users still go in parallel, in each sender too


def test_without_the_option_one_users_rows_overlap() -> None:
    api = Api(faults=False)
    _send(api, ordered=False)
    assert api.most_per_user > 1


# --- through the pipeline: time order, resume ------------------------------------------------

HEADER = "user_id,email,event,occurred_at,n"
START = datetime(2024, 1, 1, tzinfo=UTC)


def _shuffled_file(tmp_path: Path, *, per_user: int = 8) -> tuple[Path, dict[str, list[int]]]:
    """Rows of four users in random order; n is each row's rank in its user's time order."""
    rows = [
        (user, k, START + timedelta(hours=k * 7 + u))
        for u, user in enumerate(USERS)
        for k in range(per_user)
    ]
    random.Random(7).shuffle(rows)
    lines = [
        f"{user},{user}@example.com,Viewed,{when.isoformat()},{USERS.index(user) * 100 + k}"
        for user, k, when in rows
    ]
    expected = {u: [USERS.index(u) * 100 + k for k in range(per_user)] for u in USERS}
    return write_csv(tmp_path, HEADER, *lines), expected


def _file_in_order(tmp_path: Path, *, per_user: int = 6) -> tuple[Path, dict[str, list[int]]]:
    lines, expected = [], defaultdict(list)
    for i in range(per_user * len(USERS)):
        user = USERS[i % len(USERS)]
        when = START + timedelta(days=-i)  # later lines earlier in time: file order is not time
        lines.append(f"{user},{user}@example.com,Viewed,{when.isoformat()},{i}")
        expected[user].append(i)
    return write_csv(tmp_path, HEADER, *lines), expected


class StopAfter(DeliveryProgress):
    """Sets the stop after `count` results, as a Ctrl-C would."""

    def __init__(self, control: DeliveryControl, count: int) -> None:
        self.control, self.count = control, count

    def result(self, *, delivered: bool, retries: int) -> None:
        self.count -= 1
        if self.count <= 0:
            self.control.stop.set()


async def _deliver(
    path: Path,
    url: str,
    state: Path,
    *,
    order_time: str | None,
    batch_rows: int = 1000,
    stop_after: int | None = None,
) -> Summary:
    options = RunOptions(inputs=(path,), mapping=make_mapping(), batch_rows=batch_rows, now=NOW)
    delivery = DeliveryOptions(
        endpoint=url,
        token=TOKEN,
        state_dir=state,
        send=SendOptions(concurrency=8, max_retries=3, backoff_base_s=0.0, per_user_order=True),
        order_time=order_time,
    )
    control = DeliveryControl()
    progress = StopAfter(control, stop_after) if stop_after else None
    return await send_inputs(
        options, open_inputs(options), delivery, progress=progress, control=control
    )


@pytest.mark.parametrize(
    "batch_rows", [pytest.param(1000, id="one-batch"), pytest.param(5, id="batches-of-5")]
)
def test_order_time_sends_each_users_rows_by_time_on_a_shuffled_file(
    tmp_path: Path, batch_rows: int
) -> None:
    path, expected = _shuffled_file(tmp_path)
    api = Api(faults=False)

    async def run() -> Summary:
        async with serving(api) as url:
            return await _deliver(
                path, url, tmp_path / "state", order_time="extras.created_at", batch_rows=batch_rows
            )

    summary = asyncio.run(run())
    assert summary.rows_sent == 32
    assert api.most_per_user == 1
    assert dict(api.delivered) == expected
    assert not (tmp_path / "state" / ORDER_SPILL_NAME).exists()
    if batch_rows == 5:  # rows held across batches are counted and said
        assert any("--order time held up to" in note for note in summary.notes)


def test_order_time_ranks_a_big_input_in_buckets_of_users_and_keeps_the_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ranking pass held about 60 bytes a row in memory: past RANK_ROWS it ranks one
    bucket of users at a time, from keys spilled to disk, and each user's order stays."""
    ranked: list[int] = []
    real_rank = feed._rank

    def rank(keys: pl.DataFrame) -> pl.DataFrame:
        ranked.append(keys.height)
        return real_rank(keys)

    monkeypatch.setattr(feed, "RANK_ROWS", 8)
    monkeypatch.setattr(feed, "_rank", rank)
    path, expected = _shuffled_file(tmp_path)
    api = Api(faults=False)

    async def run() -> Summary:
        async with serving(api) as url:
            return await _deliver(
                path, url, tmp_path / "state", order_time="extras.created_at", batch_rows=5
            )

    summary = asyncio.run(run())
    assert summary.rows_sent == 32
    assert dict(api.delivered) == expected
    assert len(ranked) == 4  # 32 rows, 8 at a time: four buckets
    assert sum(ranked) == 32
    assert max(ranked) < 32
    assert not (tmp_path / "state" / ORDER_SPILL_NAME).exists()


@pytest.mark.parametrize(
    "order_time",
    [pytest.param(None, id="file-order"), pytest.param("extras.created_at", id="time")],
)
def test_a_resumed_run_keeps_each_users_order(tmp_path: Path, order_time: str | None) -> None:
    path, in_file = _file_in_order(tmp_path)
    # In time order each user's rows go last line first: the file lists them latest first.
    expected = in_file if order_time is None else {u: rows[::-1] for u, rows in in_file.items()}
    api = Api(faults=False)
    state = tmp_path / "state"

    async def run() -> tuple[Summary, Summary]:
        async with serving(api) as url:
            first = await _deliver(path, url, state, order_time=order_time, stop_after=5)
            second = await _deliver(path, url, state, order_time=order_time)
            return first, second

    first, second = asyncio.run(run())
    assert first.interrupted
    assert 5 <= first.rows_sent < 24
    assert second.rows_skipped == first.rows_sent
    # Each user's rows arrived once each, in order, across the two runs.
    assert dict(api.delivered) == expected


@pytest.mark.parametrize(
    ("mapping", "args", "message"),
    [
        pytest.param(
            "vero-track.toml",
            ["--order", "time"],
            "Error: --order time goes with --per-user-order",
            id="time-without-order",
        ),
        pytest.param(
            "vero-identify.toml",
            ["--per-user-order", "--order", "time"],
            "Error: --order time: action 'identify' has no time field to order by; use --order "
            "file (the input's order)",
            id="action-without-time",
        ),
    ],
)
def test_order_options_refused_with_a_usage_error(
    tmp_path: Path, mapping: str, args: list[str], message: str
) -> None:
    path, _ = _file_in_order(tmp_path)
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(path),
            "--mapping",
            str(ROOT / "schemas" / mapping),
            "--endpoint",
            "embedded",
            "--state",
            str(tmp_path / "state"),
            *args,
        ],
    )
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_release_order_lets_a_row_go_once_its_users_earlier_rows_came() -> None:
    keys = pl.DataFrame(
        {ROUTE: [1, 2, 1, 1, 2], "__time": [5, 1, 3, 4, 0]}, schema_overrides={ROUTE: pl.UInt64}
    )
    order = release_order(keys)
    # Row 0 (user 1, latest) waits for row 3; rows 2, 3 for themselves; user 2 for row 4.
    assert order["__release"].to_list() == [3, 4, 2, 3, 4]
    sent = keys.with_row_index("pos").hstack(order).sort("__release", "__seq")["pos"].to_list()
    assert sent == [2, 3, 0, 4, 1]


def test_one_heavy_user_parks_a_bounded_number_of_rows() -> None:
    api = Api(hold_s=0.0, faults=False)
    results: list[Result] = []
    ahead = 0  # the most rows taken from the input and not yet ended

    def one_user() -> Iterator[Request]:
        nonlocal ahead
        for i in range(300):
            ahead = max(ahead, i - len(results))
            body = {"identity": {"id": "ann"}, "event_name": "Viewed", "data": {"n": i}}
            yield Request("POST", "events/track", json.dumps(body).encode(), "fp", "in.csv", i, 0)

    async def run() -> None:
        async with serving(api) as url:
            await send_all(
                one_user(),
                endpoint=url,
                token=TOKEN,
                destination=VERO,
                options=SendOptions(concurrency=2, per_user_order=True),
                on_result=results.append,
            )

    asyncio.run(run())
    assert api.delivered["ann"] == list(range(300))
    # The queue (2 x concurrency), the parked rows (twice that), the one in flight.
    assert ahead <= 4 + 8 + 1


def test_the_docs_name_as_refusing_per_user_order_exactly_the_actions_that_refuse_it() -> None:
    import re

    from importer.api.settings import order_time_for
    from importer.destinations import DESTINATIONS
    from importer.errors import OptionError

    def refuses(action_name: str) -> bool:
        for name in DESTINATIONS:
            action = get_destination(name).actions.get(action_name)
            if action is not None:
                try:
                    order_time_for(action, per_user_order=True, order="file")
                except OptionError:
                    return True
        return False

    text = (ROOT / "docs" / "delivery.md").read_text(encoding="utf-8")
    bullet = text[text.index("- The user is the row's first identity value") :]
    bullet = bullet[: bullet.index("\n- ")]
    refused = bullet[bullet.index("and takes the option") :]
    accepted = bullet[: bullet.index("and takes the option")]
    assert [a for a in re.findall(r"`(\w+)`", refused) if not refuses(a)] == []
    named = [a for a in re.findall(r"`(\w+)`", accepted) if a not in ("id", "email")]
    assert named
    assert [a for a in named if refuses(a)] == []
