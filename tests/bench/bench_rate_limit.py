"""Benchmark: send N generated events to the mock under a rate limit; print rows/s and the ratio.

    python tests/bench/bench_rate_limit.py [--rows 20000] [--limit-rps 200] [--concurrency 32]
    python tests/bench/bench_rate_limit.py --faults [--rows 2000] [--rate-429 0.15] [--rate-5xx 0.1]

The mock (`importer mock-server`) runs in its own process on 127.0.0.1 with `--limit-rps`: a
token bucket that answers 429 with a Retry-After once the token has used its share. `importer
run` sends the rows through the whole pipeline; the mock's counters then prove that every row
was accepted exactly once (its duplicate window is on, and every generated row is distinct).
`--faults` turns the limit off and injects random 429s and 5xx instead, which do not depend on
the load, to see how throughput holds up under them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_dry_run import generate_in_child, send_command

TOKEN = "bench-token"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=None, help="default 20,000; 2,000 --faults")
    parser.add_argument("--limit-rps", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--faults", action="store_true", help="random faults instead of a limit")
    parser.add_argument("--rate-429", type=float, default=0.15)
    parser.add_argument("--rate-5xx", type=float, default=0.10)
    args = parser.parse_args()
    rows = args.rows or (2_000 if args.faults else 20_000)
    env = {**os.environ, "VERO_AUTH_TOKEN": TOKEN}
    mock = [sys.executable, "-m", "importer", "mock-server", "--port", "0"]
    if args.faults:
        mock += ["--rate-429", str(args.rate_429), "--rate-5xx", str(args.rate_5xx)]
    else:
        mock += ["--limit-rps", str(args.limit_rps)]
    with tempfile.TemporaryDirectory() as temp:
        source = Path(temp) / "events.csv"
        generate_in_child(source, rows, "csv")
        sink = subprocess.Popen(mock, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert sink.stderr is not None
            url = sink.stderr.readline().split("--endpoint ")[1].strip()
            report = Path(temp) / "report.json"
            command = send_command(source, url, Path(temp), args.concurrency)
            started = time.perf_counter()
            returncode = subprocess.run(command, env=env, stderr=subprocess.DEVNULL).returncode
            elapsed = time.perf_counter() - started
            stats_url = url.removesuffix("/api/v2") + "/_mock/stats"
            with urllib.request.urlopen(stats_url, timeout=10) as answer:
                stats = json.loads(answer.read())
        finally:
            sink.terminate()
            sink.wait(timeout=10)
            if sink.stderr is not None:
                sink.stderr.close()
        summary = json.loads(report.read_text()) if report.exists() else {}
    sent = summary.get("rows_sent", 0)
    print(f"rows              {rows:,} ({sent:,} sent, {summary.get('rows_failed', 0):,} failed)")
    if args.faults:
        print(f"faults            {args.rate_429:.0%} 429, {args.rate_5xx:.0%} 5xx, Retry-After 1")
    else:
        print(f"limit             {args.limit_rps:,.0f} requests/s per token")
    print(f"concurrency       {args.concurrency}")
    print(f"requests          {stats['requests']:,} answered {stats['by_status']}")
    print(f"elapsed           {elapsed:,.2f} s (process start to exit)")
    print(f"rows/s            {sent / elapsed:,.1f}")
    if not args.faults:
        print(f"ratio to limit    {sent / elapsed / args.limit_rps:.3f}")
    exact = returncode == 0 and sent == rows and stats["accepted"] == rows
    if not exact or stats["duplicates"]:
        sys.exit(
            f"not every row delivered exactly once: exit code {returncode}, {sent:,} sent, "
            f"{stats['accepted']:,} accepted, {stats['duplicates']:,} duplicates"
        )
    print("every row         delivered exactly once")


if __name__ == "__main__":
    main()
