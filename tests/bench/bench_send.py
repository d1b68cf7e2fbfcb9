"""Benchmark: send N generated events to a local sink and print rows/s.

    python tests/bench/bench_send.py [--rows 200000] [--concurrency 32]

The sink runs in its own process on 127.0.0.1: by default `raw_sink.py`, a minimal HTTP/1.1
responder that costs little CPU, so the figure is the importer's own; with `--sink mock`, the
project's `importer mock-server` (which checks every payload, and shares the two cores).
`--rate-429 0.01` makes the mock answer that share of requests 429 with `Retry-After: 1`, to
see how throughput holds up under throttling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_dry_run import generate_in_child, run_measured, send_command

TOKEN = "bench-token"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sink", choices=["raw", "mock"], default="raw")
    parser.add_argument("--rate-429", type=float, default=0.0, help="implies --sink mock")
    args = parser.parse_args()
    if args.rate_429:
        args.sink = "mock"
    env = {**os.environ, "VERO_AUTH_TOKEN": TOKEN}
    with tempfile.TemporaryDirectory() as temp:
        source = Path(temp) / "events.csv"
        generate_in_child(source, args.rows, "csv")
        port_file = Path(temp) / "port"
        if args.sink == "raw":
            sink = subprocess.Popen(
                [sys.executable, str(Path(__file__).parent / "raw_sink.py"), str(port_file)]
            )
        else:
            mock = [
                sys.executable,
                "-m",
                "importer",
                "mock-server",
                "--port",
                "0",
                "--dedup-window",
                "0",
                "--rate-429",
                str(args.rate_429),
                "--retry-after",
                "1",
            ]
            sink = subprocess.Popen(mock, stderr=subprocess.PIPE, text=True, env=env)
        try:
            if args.sink == "raw":
                while not port_file.exists() or not port_file.read_text():
                    time.sleep(0.05)
                url = f"http://127.0.0.1:{port_file.read_text()}/api/v2"
            else:
                assert sink.stderr is not None
                url = sink.stderr.readline().split("--endpoint ")[1].strip()
            report = Path(temp) / "report.json"
            command = send_command(source, url, Path(temp), args.concurrency)
            started = time.perf_counter()
            os.environ["VERO_AUTH_TOKEN"] = TOKEN
            returncode, peak_mb = run_measured(command)
            elapsed = time.perf_counter() - started
        finally:
            sink.terminate()
            sink.wait(timeout=10)
            if sink.stderr is not None:
                sink.stderr.close()
        if returncode != 0:
            sys.exit(f"run failed with exit code {returncode}")
        summary = json.loads(report.read_text())
        print(f"rows sent         {summary['rows_sent']:,}")
        print(f"sink              {args.sink}")
        print(f"concurrency       {args.concurrency}")
        if args.rate_429:
            print(f"429 share         {args.rate_429:.1%} (Retry-After: 1)")
        print(f"requests          {summary['requests']:,} ({summary['retries']:,} retries)")
        print(f"elapsed           {elapsed:,.2f} s (process start to exit)")
        print(f"rows/s            {summary['rows_sent'] / elapsed:,.0f}")
        print(f"peak RSS          {peak_mb:,.0f} MB (the importer)")


if __name__ == "__main__":
    main()
