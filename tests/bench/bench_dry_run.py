"""Benchmark: a dry run over N generated event rows; prints rows/s and the peak RSS.

    python tests/bench/bench_dry_run.py [--rows 1000000] [--format csv|jsonl] [--batch-rows N]

The dry run runs as its own process (the installed `importer` command), so the peak RSS is
that process's alone, as `/usr/bin/time -v` would report it. Generation is not timed.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]


def generate(path: Path, rows: int, file_format: str) -> None:
    """Realistic events: 50k users, a handful of event names, ISO times, some empty data cells."""
    index = pl.int_range(0, rows, eager=True)
    events = ["Logged in", "Viewed product", "Purchased Item", "Added to cart", "Signed up"]
    frame = pl.DataFrame({"i": index}).select(
        (pl.lit("u") + (pl.col("i") * 7919 % 50_000).cast(pl.String).str.zfill(6)).alias("user_id"),
        (
            pl.lit("user") + (pl.col("i") * 7919 % 50_000).cast(pl.String) + pl.lit("@example.com")
        ).alias("email"),
        pl.col("i")
        .mod(len(events))
        .replace_strict(list(range(len(events))), events)
        .alias("event"),
        (pl.datetime(2022, 1, 1) + pl.duration(seconds=pl.col("i") * 31))
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        .alias("occurred_at"),
        pl.when(pl.col("i") % 3 == 0)
        .then(None)
        .otherwise(pl.lit("sku-") + (pl.col("i") % 997).cast(pl.String))
        .alias("product"),
        pl.when(pl.col("i") % 3 == 0)
        .then(None)
        .otherwise((pl.col("i") % 10_000) / 100)
        .alias("price"),
    )
    if file_format == "csv":
        frame.write_csv(path)
    else:
        frame.write_ndjson(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--out", action="store_true", help="also write the payload file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        source = Path(temp) / f"events.{args.format}"
        generate(source, args.rows, args.format)
        size_mb = source.stat().st_size / 1e6
        command = [
            sys.executable,
            "-m",
            "importer",
            "run",
            str(source),
            "--schema",
            str(ROOT / "schemas" / "vero-track.toml"),
            "--dry-run",
            "--quiet",
            "--batch-rows",
            str(args.batch_rows),
            "--report",
            str(Path(temp) / "report.json"),
        ]
        if args.out:
            command += ["--out", str(Path(temp) / "payloads.jsonl")]
        started = time.perf_counter()
        finished = subprocess.run(command, check=False)
        elapsed = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if finished.returncode not in (0, 3):
            sys.exit(f"dry run failed with exit code {finished.returncode}")
        print(f"format            {args.format} ({size_mb:,.0f} MB, {args.rows:,} rows)")
        print(f"batch rows        {args.batch_rows:,}")
        print(f"elapsed           {elapsed:,.2f} s")
        print(f"rows/s            {args.rows / elapsed:,.0f}")
        print(f"peak RSS          {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
