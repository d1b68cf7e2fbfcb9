"""Benchmark: what --per-user-order costs against unordered sending, on the same sink.

    python tests/bench/bench_order.py [--rows 100000] [--users 10000] [--delay-ms 5]
                                      [--concurrency 32] [--cases many,heavy]

Sends in-memory Vero track requests with send_all (the sending stage alone: no reading, no
checkpoint) to `raw_sink.py --delay-ms N` in its own process, which answers each request N ms
after it arrived, as a distant API would, so that requests in flight matter. Two inputs: `many`
spreads the rows over --users users at random; `heavy` gives 90% of them to one user and the
rest to --users others. Each is sent unordered, then ordered; the table gives rows/s of both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from importer.delivery.options import SendOptions
from importer.delivery.send import send_all
from importer.destinations import get_destination
from importer.model import Request, Result

TOKEN = "bench-token"


def make_requests(rows: int, users: int, *, heavy: bool) -> list[Request]:
    """`rows` track requests over `users` users (with `heavy`, 90% of them to one more user)."""
    dice = random.Random(0)
    requests = []
    for i in range(rows):
        user = users if heavy and dice.random() < 0.9 else dice.randrange(users)
        body = {
            "identity": {"id": f"u{user}"},
            "event_name": "Viewed",
            "extras": {"created_at": "2024-01-01T00:00:00+0000"},
            "data": {"n": i},
        }
        requests.append(
            Request("POST", "events/track", json.dumps(body).encode(), "fp", "bench", i, user)
        )
    return requests


async def send(url: str, requests: list[Request], *, concurrency: int, ordered: bool) -> float:
    """Rows per second of one run."""
    delivered = 0

    def on_result(result: Result) -> None:
        nonlocal delivered
        delivered += result.delivered

    options = SendOptions(concurrency=concurrency, per_user_order=ordered)
    started = time.perf_counter()
    await send_all(
        requests,
        endpoint=url,
        token=TOKEN,
        destination=get_destination("vero"),
        options=options,
        on_result=on_result,
    )
    elapsed = time.perf_counter() - started
    if delivered != len(requests):
        raise SystemExit(f"only {delivered} of {len(requests)} delivered")
    return len(requests) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cases", default="many,heavy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        port_file = Path(temp) / "port"
        sink = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).parent / "raw_sink.py"),
                str(port_file),
                "--delay-ms",
                str(args.delay_ms),
            ]
        )
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline:
                    raise SystemExit("the sink did not start")
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port_file.read_text()}/api/v2"
            print(
                f"{args.rows:,} rows, --concurrency {args.concurrency}, "
                f"sink answers after {args.delay_ms:g} ms"
            )
            # Warm up (connections, the sink's first answers) so that neither run pays for it.
            warm = make_requests(2_000, args.users, heavy=False)
            asyncio.run(send(url, warm, concurrency=args.concurrency, ordered=False))
            print(f"{'input':<34} {'unordered':>12} {'ordered':>12} {'ratio':>7}")
            for case in args.cases.split(","):
                heavy = case == "heavy"
                requests = make_requests(args.rows, args.users, heavy=heavy)
                what = (
                    f"90% one user, 10% over {args.users:,}"
                    if heavy
                    else f"over {args.users:,} users"
                )
                free = asyncio.run(send(url, requests, concurrency=args.concurrency, ordered=False))
                kept = asyncio.run(send(url, requests, concurrency=args.concurrency, ordered=True))
                print(
                    f"{what:<34} {free:>8,.0f} r/s {kept:>8,.0f} r/s {kept / free:>7.2f}",
                    flush=True,
                )
        finally:
            sink.terminate()
            sink.wait(timeout=10)


if __name__ == "__main__":
    main()
