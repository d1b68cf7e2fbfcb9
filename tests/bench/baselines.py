"""What the importer is measured against in `bench_table.py`: each runs as its own process.

    python tests/bench/baselines.py bare-client BODIES URL RESULT [--concurrency 32]
        [--rows N] [--loop auto|asyncio|uvloop]
    python tests/bench/baselines.py requests-loop CSV URL RESULT [--threads 32]
    python tests/bench/baselines.py bare-polars CSV OUT
    python tests/bench/baselines.py csv-loop CSV OUT
    python tests/bench/baselines.py big-file CSV ROWS

Heavy imports happen inside each command, so a process pays only for what it uses, as a
script written for that one job would. The senders write their own figures (rows, requests,
seconds inside the timed region, event loop) to RESULT as JSON; the caller times the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

TOKEN = "bench-token"
HEADERS = {"Content-Type": "application/json"}
SLICE_ROWS = 1_000_000


def event_loop_name() -> str:
    """The importer's rule (importer/loops.py): uvloop when importable, unless
    IMPORTER_EVENT_LOOP=asyncio."""
    if os.environ.get("IMPORTER_EVENT_LOOP", "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_loop(main: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
    """Run `main` on the event loop called `name` (asyncio or uvloop)."""
    if name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())


def bare_client(
    bodies_path: Path, url: str, result: Path, *, concurrency: int, rows: int, loop: str
) -> None:
    """A queue of `rows` pre-built bodies (read from a file, one per line, token already in,
    repeated when the file is shorter) drained by `concurrency` worker tasks over one session:
    the least an aiohttp sender must do."""
    import aiohttp

    bodies = bodies_path.read_bytes().splitlines()
    if rows:
        bodies = (bodies * -(-rows // len(bodies)))[:rows]
    figures: dict[str, object] = {}

    async def main() -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        failed = 0

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal failed
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(url, data=body, headers=HEADERS) as response:
                    await response.read()
                    failed += response.status != 200

        connector = aiohttp.TCPConnector(limit=concurrency)
        started = time.perf_counter()
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        figures.update(send_s=time.perf_counter() - started, failed=failed)

    figures["loop"] = event_loop_name() if loop == "auto" else loop
    run_loop(main, str(figures["loop"]))
    figures["rows"] = len(bodies)
    result.write_text(json.dumps(figures))


def user_body(row: dict[str, str]) -> str:
    """The Vero track body a hand-written script builds from one CSV row."""
    data = {"product": row["product"], "price": row["price"], "occurred_at": row["occurred_at"]}
    return json.dumps(
        {
            "auth_token": TOKEN,
            "identity": {"id": row["user_id"], "email": row["email"]},
            "event_name": row["event"],
            "extras": {"created_at": row["occurred_at"]},
            "data": data,
        }
    )


def requests_loop(source: Path, url: str, result: Path, threads: int) -> None:
    """What users write: csv.DictReader, json.dumps, requests; one session, or with `threads`
    > 1 a thread pool with a session per thread."""
    import csv
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    started = time.perf_counter()
    failed = 0
    with source.open(newline="") as handle:
        rows = csv.DictReader(handle)
        if threads <= 1:
            session = requests.Session()
            for row in rows:
                failed += session.post(url, data=user_body(row), headers=HEADERS).status_code != 200
        else:
            local = threading.local()

            def send(row: dict[str, str]) -> bool:
                if not hasattr(local, "session"):
                    local.session = requests.Session()
                return local.session.post(url, data=user_body(row), headers=HEADERS).ok

            with ThreadPoolExecutor(threads) as pool:
                failed = sum(not ok for ok in pool.map(send, rows))
    figures = {"send_s": time.perf_counter() - started, "failed": failed}
    result.write_text(json.dumps(figures))


def bare_polars(source: Path, out: Path) -> None:
    """Polars' own floor for a dry run: batches, one JSON object per row, written."""
    import polars as pl

    with out.open("w") as handle:
        for batch in pl.scan_csv(source).collect_batches(chunk_size=100_000):
            lines = batch.select(pl.struct(pl.all()).struct.json_encode()).to_series()
            handle.write(lines.str.join("\n").item() + "\n")


def csv_loop(source: Path, out: Path) -> None:
    """The naive dry run: csv.DictReader and json.dumps per row, checking nothing."""
    import csv

    with source.open(newline="") as handle, out.open("w") as output:
        for row in csv.DictReader(handle):
            output.write(json.dumps(row) + "\n")


def big_file(path: Path, rows: int) -> None:
    """Events shaped like bench_dry_run's, written a slice at a time so this process stays
    bounded. Times are 3 s apart (not 31) so 20M rows stay in the past: each row stays valid
    and unique, as in a real history."""
    from bench_dry_run import events_frame

    with path.open("wb") as handle:
        for start in range(0, rows, SLICE_ROWS):
            frame = events_frame(start, min(rows, start + SLICE_ROWS), seconds_apart=3)
            frame.write_csv(handle, include_header=start == 0)


def main() -> None:
    """Dispatch one baseline by name."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    client = commands.add_parser("bare-client")
    client.add_argument("--concurrency", type=int, default=32)
    client.add_argument("--rows", type=int, default=0, help="0: every body once")
    client.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    loop = commands.add_parser("requests-loop")
    loop.add_argument("--threads", type=int, default=1)
    for command in (client, loop):
        command.add_argument("source", type=Path)
        command.add_argument("url")
        command.add_argument("result", type=Path)
    for name in ("bare-polars", "csv-loop"):
        command = commands.add_parser(name)
        command.add_argument("source", type=Path)
        command.add_argument("out", type=Path)
    big = commands.add_parser("big-file")
    big.add_argument("path", type=Path)
    big.add_argument("rows", type=int)
    args = parser.parse_args()
    if args.command == "bare-client":
        bare_client(
            args.source,
            args.url,
            args.result,
            concurrency=args.concurrency,
            rows=args.rows,
            loop=args.loop,
        )
    elif args.command == "requests-loop":
        requests_loop(args.source, args.url, args.result, args.threads)
    elif args.command == "bare-polars":
        bare_polars(args.source, args.out)
    elif args.command == "csv-loop":
        csv_loop(args.source, args.out)
    else:
        big_file(args.path, args.rows)


if __name__ == "__main__":
    sys.exit(main())
