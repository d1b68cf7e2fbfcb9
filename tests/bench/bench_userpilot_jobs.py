"""Benchmark: Userpilot's job delivery on the embedded mock (issue 11 item 5); prints rows/s.

    python tests/bench/bench_userpilot_jobs.py [--rows 1000000] [--live-rows 1000]
        [--poll-interval 0.05] [--skip-live]

Each side runs as its own process, timed from spawn to exit: bulk identify and Bulk Import of
events over --rows generated rows, each beside its dry run (reading, checking and building, no
delivery) and bare Polars writing the same CSV as NDJSON (the floor of building the chunks, so
the ratio means something on a machine whose speed varies); then live identify over --live-rows
(held to 600 requests a minute, so 1,000 rows take 100 s and already show the ceiling). The
embedded mock runs in the importer's process and event loop: it parses, checks and records every
row there, and runs each job for MockConfig.job_seconds (0.5 s), one at a time. The real API
documents 1,200 rows a minute for bulk users (1,800 for companies): printed as hours next to the
mock's figure. Generation is not timed; nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench_dry_run import run_measured

if TYPE_CHECKING:
    import polars as pl

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# The embedded mock's job length: MockConfig.job_seconds, which `--endpoint embedded` keeps.
JOB_SECONDS = 0.5
# Documented processing rates of the real API (research §5), rows a minute, one job at a time.
REAL_USERS_PER_MIN = 1_200
REAL_COMPANIES_PER_MIN = 1_800
# Live identify and track: 600 requests a minute per token, one row a request.
REAL_LIVE_PER_MIN = 600
# importer/jobs.py's UploadPolling.poll_cap_s: the longest wait between two polls.
POLL_CAP_S = 30.0
BULK, IMPORT, LIVE = "userpilot-bulk-identify", "userpilot-import-track", "userpilot-identify"


def users_frame(rows: int) -> pl.DataFrame:
    """`rows` users with the columns of samples/userpilot-users.csv: ids that keep their
    leading zeros, 50 users a company, ISO sign-up times, an empty settings column (the preset
    types it as JSON, so it must exist)."""
    import polars as pl  # only in the generating child, so the measuring parent stays small

    number = pl.col("i").cast(pl.String)
    plans = ["free", "pro", "enterprise"]
    return pl.DataFrame({"i": pl.int_range(0, rows, eager=True)}).select(
        (pl.lit("u") + number.str.zfill(7)).alias("user_id"),
        (pl.lit("user") + number + pl.lit("@example.com")).alias("email"),
        (pl.lit("User ") + number).alias("name"),
        pl.col("i").mod(len(plans)).replace_strict(list(range(len(plans))), plans).alias("plan"),
        (pl.datetime(2020, 1, 1) + pl.duration(seconds=pl.col("i") * 61))
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        .alias("signed_up_at"),
        (pl.lit("c-") + (pl.col("i") // 50).cast(pl.String).str.zfill(5)).alias("company_id"),
        (pl.col("i") % 2 == 0).alias("beta"),
        pl.lit(None, pl.String).alias("settings"),
    )


def events_frame(rows: int) -> pl.DataFrame:
    """`rows` events with the columns of samples/userpilot-events.csv: 50k users, a few event
    names and pages, ISO times 31 s apart, an amount on every third row."""
    import polars as pl

    user = (pl.col("i") * 7919 % 50_000).cast(pl.String).str.zfill(7)
    events = ["logged_in", "viewed_report", "exported_csv", "invited_user", "upgraded"]
    pages = ["/login", "/reports", "/reports/q1", "/settings", "/billing"]
    plans = ["free", "pro", "enterprise"]
    return pl.DataFrame({"i": pl.int_range(0, rows, eager=True)}).select(
        (pl.lit("u") + user).alias("user_id"),
        pl.col("i")
        .mod(len(events))
        .replace_strict(list(range(len(events))), events)
        .alias("event"),
        (pl.datetime(2022, 1, 1) + pl.duration(seconds=pl.col("i") * 31))
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        .alias("occurred_at"),
        pl.col("i").mod(len(pages)).replace_strict(list(range(len(pages))), pages).alias("page"),
        pl.col("i").mod(len(plans)).replace_strict(list(range(len(plans))), plans).alias("plan"),
        pl.when(pl.col("i") % 3 == 0).then((pl.col("i") % 10_000) / 100).alias("amount"),
    )


def generate(path: Path, kind: str, rows: int) -> None:
    """Write `rows` users or events as CSV."""
    frame = users_frame(rows) if kind == "users" else events_frame(rows)
    frame.write_csv(path)


def generate_in_child(path: Path, kind: str, rows: int) -> None:
    """Run `generate` in a child process, so this process never holds the frame."""
    code = "from bench_userpilot_jobs import generate; from pathlib import Path; "
    code += f"generate(Path({str(path)!r}), {kind!r}, {rows})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=HERE)


@dataclass
class Run:
    """One process, timed from spawn to exit, with its --report when it wrote one."""

    name: str
    rows: int
    seconds: float
    peak_mb: float
    report: dict[str, object] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Rows per second of the whole process."""
        return self.rows / self.seconds

    @property
    def jobs(self) -> int:
        """Jobs the mock created (0 for live calls)."""
        server = self.report.get("embedded_server")
        return int(server.get("jobs_created", 0)) if isinstance(server, dict) else 0

    @property
    def conflicts(self) -> int:
        """409s the mock answered: a create while the previous job still ran."""
        server = self.report.get("embedded_server")
        return int(server.get("conflicts", 0)) if isinstance(server, dict) else 0


def importer_run(
    source: Path, mapping: str, temp: Path, rows: int, poll: float, *, dry: bool = False
) -> Run:
    """`importer run SOURCE --mapping schemas/MAPPING --endpoint embedded` with fresh state
    (with `dry`, `--dry-run` instead: reading, checking and building every payload, the part of
    a send that is not delivery); stops the benchmark unless every row was delivered or built."""
    label = f"{mapping}{' --dry-run' if dry else ''}"
    stem = f"{mapping}{'-dry' if dry else ''}"
    report = temp / f"report-{stem}.json"
    command = [
        sys.executable,
        "-m",
        "importer",
        "run",
        str(source),
        "--mapping",
        str(ROOT / "schemas" / f"{mapping}.toml"),
        "--quiet",
        "--report",
        str(report),
    ]
    if dry:
        command.append("--dry-run")
    else:
        command += ["--endpoint", "embedded", "--poll-interval", str(poll)]
        command += ["--state", str(temp / f"state-{stem}")]
    print(f"running {label} over {rows:,} rows", file=sys.stderr, flush=True)
    started = time.perf_counter()
    returncode, peak_mb = run_measured(command)
    seconds = time.perf_counter() - started
    if returncode != 0:
        sys.exit(f"{label}: importer run failed with exit code {returncode}")
    summary = json.loads(report.read_text())
    done = summary["rows_valid"] if dry else summary["rows_sent"]
    if done != rows:
        sys.exit(f"{label}: {done:,} of {rows:,} rows {'built' if dry else 'delivered'}")
    return Run(label, rows, seconds, peak_mb, summary)


def bare_polars(source: Path, temp: Path, rows: int) -> Run:
    """baselines.py bare-polars: read the CSV in 100k-row batches, write each row as a JSON
    object, nothing checked or mapped."""
    out = temp / f"{source.stem}-bare.ndjson"
    command = [sys.executable, str(HERE / "baselines.py"), "bare-polars", str(source), str(out)]
    started = time.perf_counter()
    returncode, peak_mb = run_measured(command)
    seconds = time.perf_counter() - started
    if returncode != 0:
        sys.exit(f"bare polars failed with exit code {returncode}")
    out.unlink()
    return Run(f"bare Polars ({source.stem})", rows, seconds, peak_mb)


def hours(rows: int, per_minute: int) -> str:
    """How long `rows` take at `per_minute`, as hours."""
    return f"{rows / per_minute / 60:,.1f} h"


def load() -> str:
    """The load averages, as `uptime` shows them: the machine is shared."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} cores)"


def row(run: Run, floor: Run | None, note: str) -> str:
    """One line of the markdown table."""
    jobs = str(run.jobs) if run.jobs else "-"
    requests = int(run.report.get("requests", 0)) if run.report else 0
    retries = int(run.report.get("retries", 0)) if run.report else 0
    against = f"{run.rate / floor.rate:.2f}" if floor is not None else "-"
    sent = run.report and not run.report.get("dry_run")
    shown = f"{requests:,} ({retries:,} retries)" if sent else "-"
    return (
        f"| {run.name} | {run.rows:,} | {run.seconds:,.1f} | {run.rate:,.0f} | {jobs} | {shown} "
        f"| {against} | {note} |"
    )


def seen_ended(job_s: float, poll_s: float, cap_s: float = POLL_CAP_S) -> tuple[float, int]:
    """When the importer's polls (poll_s, then 1.5 times longer each time, up to cap_s) first
    find a job of job_s ended, counted from its creation, and how many polls that takes."""
    waited, interval, polls = 0.0, poll_s, 0
    while waited < job_s:
        waited, polls = waited + interval, polls + 1
        interval = min(cap_s, interval * 1.5)
    return waited, polls


def raw(run: Run, poll_s: float) -> list[str]:
    """The figures a table line comes from."""
    lines = [f"{run.name}: {run.seconds:.2f} s spawn to exit, peak RSS {run.peak_mb:,.0f} MB"]
    if run.report:
        inner = float(run.report["elapsed_s"])  # type: ignore[arg-type]
        lines.append(f"  report elapsed_s {inner:.2f} ({run.rows / inner:,.0f} rows/s inside)")
        if run.jobs:
            seen, polls = seen_ended(JOB_SECONDS, poll_s)
            waited = run.jobs * seen
            lines.append(
                f"  {run.jobs} job(s) of {JOB_SECONDS} s, one at a time; polls first see one "
                f"ended {seen:.2f} s after its creation ({polls} polls), so {waited:.1f} s of "
                f"waiting; the other {inner - waited:.1f} s: reading, building, uploading, and "
                f"the embedded mock parsing, checking and recording each row in the same "
                f"process; 409 conflicts {run.conflicts}"
            )
        server = run.report.get("embedded_server")
        if isinstance(server, dict):
            lines.append(f"  mock answers by status {server.get('by_status')}")
    return lines


def main() -> None:
    """Generate, run the importer and the baselines, print the table and the raw figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="users and events")
    parser.add_argument("--live-rows", type=int, default=1_000, help="users sent live")
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--skip-live", action="store_true", help="skip live identify")
    args = parser.parse_args()
    # `python -m importer` then runs this checkout's importer, whatever the caller's folder.
    os.chdir(ROOT)
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="bench-userpilot-") as name:
        temp = Path(name)
        users, events = temp / "users.csv", temp / "events.csv"
        generate_in_child(users, "users", args.rows)
        generate_in_child(events, "events", args.rows)
        users_mb, events_mb = users.stat().st_size / 1e6, events.stat().st_size / 1e6
        poll = args.poll_interval
        floor_users = bare_polars(users, temp, args.rows)
        dry_users = importer_run(users, BULK, temp, args.rows, poll, dry=True)
        bulk = importer_run(users, BULK, temp, args.rows, poll)
        floor_events = bare_polars(events, temp, args.rows)
        dry_events = importer_run(events, IMPORT, temp, args.rows, poll, dry=True)
        imported = importer_run(events, IMPORT, temp, args.rows, poll)
        live = None
        if not args.skip_live:
            few = temp / "users-live.csv"
            generate_in_child(few, "users", args.live_rows)
            live = importer_run(few, LIVE, temp, args.live_rows, poll)
    load_after = load()
    runs = [floor_users, dry_users, bulk, floor_events, dry_events, imported, live]
    mock_cap = bulk.rows / (bulk.jobs * JOB_SECONDS) if bulk.jobs else 0.0
    polled_cap = bulk.rows / (bulk.jobs * seen_ended(JOB_SECONDS, poll)[0]) if bulk.jobs else 0.0
    bulk_note = f"10,000 users a job; jobs cap it at {mock_cap:,.0f}/s, {polled_cap:,.0f} polled"
    print(f"## Userpilot job delivery on the embedded mock ({os.cpu_count()} cores, ", end="")
    print(f"Python {sys.version.split()[0]})\n")
    print(f"Command: python tests/bench/bench_userpilot_jobs.py {' '.join(sys.argv[1:])}")
    print(f"Load average before {load_before}, after {load_after}.")
    print(
        f"Mock job time {JOB_SECONDS} s a job, one at a time; --poll-interval {poll}. Every "
        "time is of a whole process, start-up included; the last column is rows/s as a share "
        "of bare Polars' on the same file.\n"
    )
    print("| run | rows | s | rows/s | jobs | requests | vs bare Polars | note |")
    print("|---|---|---|---|---|---|---|---|")
    print(row(floor_users, None, f"users CSV ({users_mb:,.0f} MB) to NDJSON"))
    print(row(dry_users, floor_users, "read, check, build each user; nothing sent"))
    print(row(bulk, floor_users, bulk_note))
    print(row(floor_events, None, f"events CSV ({events_mb:,.0f} MB) to NDJSON"))
    print(row(dry_events, floor_events, "read, check, build each event; nothing sent"))
    print(row(imported, floor_events, "NDJSON files of up to 50 MB, one job each"))
    if live is not None:
        print(row(live, None, f"live, {REAL_LIVE_PER_MIN}/min limit held by the mock too"))
    print(f"\n### what the real API's documented rates mean for {args.rows:,} rows\n")
    print(
        f"- bulk identify users, {REAL_USERS_PER_MIN:,} rows/min: "
        f"{hours(args.rows, REAL_USERS_PER_MIN)} "
        f"({REAL_USERS_PER_MIN / 60:.0f} rows/s; the mock did {bulk.rate:,.0f} rows/s)"
    )
    print(
        f"- bulk identify companies, {REAL_COMPANIES_PER_MIN:,} rows/min: "
        f"{hours(args.rows, REAL_COMPANIES_PER_MIN)} ({REAL_COMPANIES_PER_MIN / 60:.0f} rows/s)"
    )
    print(
        f"- live identify or track, {REAL_LIVE_PER_MIN} requests/min: "
        f"{hours(args.rows, REAL_LIVE_PER_MIN)} ({REAL_LIVE_PER_MIN / 60:.0f} rows/s)"
    )
    print("- Bulk Import: no processing rate documented")
    print("\n### raw figures\n")
    for run in runs:
        if run is not None:
            for line in raw(run, poll):
                print(f"- {line}" if not line.startswith("  ") else f"  - {line.strip()}")


if __name__ == "__main__":
    main()
