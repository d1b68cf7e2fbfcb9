"""Benchmark: every line of the performance table (issues 10 and 22), measured in one run,
printed as ratios.

    python tests/bench/bench_table.py [--rows 200000] [--dry-rows 1000000] [--skip-big]
        [--big-rows 20000000] [--latency-seconds 20] [--memory-rows 1000000]
        [--night-rows 20000] [--only 1 5 ...] [--before REF]

Each line compares the importer with a reference measured here, on the same machine, file and
sink, so only the ratio counts (the machine is small and noisy). Every side runs as its own
process and is timed from spawn to exit, start-up and reading included; where a side reports
its own inner time, that rate is printed too. The sinks listen on 127.0.0.1 only: raw_sink.py
(answers at once, or after --delay-ms) and, where installed, nginx; every one is stopped in a
finally block. Lines: 1 send CPU-bound (asyncio both, and uvloop both), 2 send all cores
(wrk), 3 send latency-bound, 4 against requests loops, 5 dry run vs bare Polars, 6 dry run vs
csv+json loop, 7 memory of the dry run, 8 checkpoint cost, 9 start-up, 10 a night over
delivered files plus one new, 11 memory of the send and of --order time.
With --before REF, the dry-run lines (5, 6, 7) also time the importer of git commit REF
(extracted with `git archive`) on the same file, in the same run, so a change is measured
before and after side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from baselines import TOKEN, event_loop_name
from bench_dry_run import generate_in_child, run_usage, send_command

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MAPPING = ROOT / "schemas" / "vero-track.toml"
WRK = "/usr/bin/wrk"
# The checkpoint line alternates this many runs with and without the log.
CHECKPOINT_PAIRS = 3
NGINX = "/usr/sbin/nginx"
NGINX_CONF = """\
worker_processes auto;
daemon off;
pid {temp}/nginx.pid;
error_log {temp}/error.log;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{{"status":200,"message":"Success."}}';
        }}
    }}
}}
"""
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
"""
# Flat: the 20M-row peak within a quarter of the 1M-row one (the allocator and Polars' pools
# wobble by that much at equal work).
FLAT = 1.25
# The memory ceiling of issue 22, for the dry run and the send alike.
CEILING_MB = 400
# The nightly line: files already delivered, then the new one.
NIGHT_FILES = 10


@dataclass
class Run:
    """One process, timed from spawn to exit."""

    returncode: int
    seconds: float
    peak_mb: float
    rows: int
    inner: dict[str, object] = field(default_factory=dict)
    cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        """Rows per second of the whole process."""
        return self.rows / self.seconds

    def inner_rate(self, key: str) -> float | None:
        """Rows per second over the time the process reported for itself under `key`."""
        seconds = self.inner.get(key)
        return self.rows / seconds if isinstance(seconds, float) and seconds > 0 else None


@dataclass
class Result:
    """One line of the table, with the figures its ratio comes from."""

    what: str
    against: str
    target: str
    ratio: float | None
    met: bool | None
    raw: list[str]
    note: str = ""


@dataclass
class Bench:
    """What the lines share: options, the temp folder, generated files and cached runs."""

    args: argparse.Namespace
    temp: Path
    importer_loop: str
    client_loop: str
    files: dict[tuple[str, int], Path] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)
    counter: int = 0

    def scratch(self, name: str) -> Path:
        """A fresh path in the temp folder, so runs never share state or outputs."""
        self.counter += 1
        return self.temp / f"{self.counter:03d}-{name}"

    def events(self, rows: int, kind: str = "events") -> Path:
        """The generated events file of `rows` rows (generated once, not timed)."""
        key = (kind, rows)
        if key not in self.files:
            path = self.temp / f"{kind}-{rows}.csv"
            if kind == "big":
                subprocess.run(
                    [sys.executable, str(HERE / "baselines.py"), "big-file", str(path), str(rows)],
                    check=True,
                )
            else:
                generate_in_child(path, rows, "csv")
            self.files[key] = path
        return self.files[key]

    def bodies(self) -> Path:
        """The importer's own bodies for the send file, token spliced in as the importer does:
        what the bare client posts (built here, outside every timed region)."""
        key = ("bodies", self.args.rows)
        if key not in self.files:
            payloads = self.scratch("payloads.jsonl")
            run = dry_run(self, self.events(self.args.rows), self.args.rows, payloads)
            check(run, "dry run for the bare client's bodies")
            lines = []
            with payloads.open("rb") as handle:
                for line in handle:
                    body = line[line.index(b'"body":') + 7 : line.rindex(b',"source":')]
                    lines.append(b'{"auth_token":' + json.dumps(TOKEN).encode() + b"," + body[1:])
            path = self.temp / "bodies.jsonl"
            path.write_bytes(b"\n".join(lines) + b"\n")
            payloads.unlink()
            self.files[key] = path
        return self.files[key]


@contextlib.contextmanager
def event_loop(name: str) -> Iterator[None]:
    """Every importer process started meanwhile runs on `name` (IMPORTER_EVENT_LOOP)."""
    before = os.environ.get("IMPORTER_EVENT_LOOP")
    os.environ["IMPORTER_EVENT_LOOP"] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ["IMPORTER_EVENT_LOOP"]
        else:
            os.environ["IMPORTER_EVENT_LOOP"] = before


def measure(command: list[str], rows: int, result: Path | None = None, *, root: Path = ROOT) -> Run:
    """Run `command` to its end: wall clock from spawn to exit, its own peak RSS, and the JSON
    figures it wrote to `result` if any. `root` is the checkout whose importer it runs."""
    env = {**os.environ, "PYTHONPATH": str(root)} if root != ROOT else None
    started = time.perf_counter()
    returncode, peak_mb, cpu_s = run_usage(command, env=env, cwd=root if root != ROOT else None)
    seconds = time.perf_counter() - started
    inner = json.loads(result.read_text()) if result is not None and result.exists() else {}
    return Run(returncode, seconds, peak_mb, rows, inner, cpu_s)


def check(run: Run, what: str, codes: tuple[int, ...] = (0,)) -> None:
    """Stop the benchmark when a side failed: a ratio over a failed run would mean nothing."""
    if run.returncode not in codes:
        raise SystemExit(f"{what} failed with exit code {run.returncode}")
    if run.inner.get("failed"):
        raise SystemExit(f"{what}: {run.inner['failed']} requests were not answered 200")


def importer_send(
    bench: Bench, url: str, rows: int, concurrency: int, *extra: str, source: Path | None = None
) -> Run:
    """`importer run` of the generated file (or `source`) to `url`, fresh state; its report's
    elapsed_s (read, validate, build, send; start-up excluded) is the inner time."""
    temp = bench.scratch("send")
    temp.mkdir()
    command = send_command(source or bench.events(rows), url, temp, concurrency) + list(extra)
    run = measure(command, rows)
    check(run, f"importer run {' '.join(extra)}".strip())
    report = json.loads((temp / "report.json").read_text())
    if report["rows_sent"] != rows:
        raise SystemExit(f"importer sent {report['rows_sent']:,} of {rows:,} rows")
    run.inner = {"elapsed_s": float(report["elapsed_s"])}
    return run


def importer_at_raw_sink(bench: Bench, url: str) -> Run:
    """The plain send (rows, concurrency, raw sink, the importer's own loop) that lines 1, 4
    and 8 compare with: once per event loop."""
    key = f"send-{os.environ.get('IMPORTER_EVENT_LOOP', bench.importer_loop)}"
    if key not in bench.runs:
        bench.runs[key] = importer_send(bench, url, bench.args.rows, bench.args.concurrency)
    return bench.runs[key]


def dry_run(bench: Bench, source: Path, rows: int, out: Path, *, root: Path = ROOT) -> Run:
    """`importer run --dry-run --out`, the dry run every dry-run line times (of the importer
    in `root`: this checkout, or the --before one)."""
    command = [sys.executable, "-m", "importer", "run", str(source), "--mapping", str(MAPPING)]
    command += ["--dry-run", "--quiet", "--out", str(out)]
    command += ["--report", str(bench.scratch("report.json"))]
    run = measure(command, rows, root=root)
    check(run, "importer dry run")
    return run


def bare_client(
    bench: Bench, url: str, rows: int, concurrency: int, loop: str | None = None
) -> Run:
    """The bare aiohttp client posting `rows` pre-built bodies to `url`."""
    result = bench.scratch("client.json")
    command = [sys.executable, str(HERE / "baselines.py"), "bare-client", str(bench.bodies())]
    command += [url, str(result), "--concurrency", str(concurrency), "--rows", str(rows)]
    command += ["--loop", loop or bench.client_loop]
    run = measure(command, rows, result)
    check(run, "bare client")
    return run


@contextlib.contextmanager
def raw_sink(bench: Bench, delay_ms: int = 0) -> Iterator[str]:
    """raw_sink.py on a free loopback port; the base URL to send to."""
    port_file = bench.scratch("port")
    command = [sys.executable, str(HERE / "raw_sink.py"), str(port_file)]
    sink = subprocess.Popen([*command, "--delay-ms", str(delay_ms)])
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if sink.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("raw_sink.py did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port_file.read_text()}/api/v2"
    finally:
        sink.terminate()
        sink.wait(timeout=10)


@contextlib.contextmanager
def nginx_sink(bench: Bench) -> Iterator[str]:
    """nginx answering Vero's 200 to every request on a free loopback port, as this user."""
    temp = bench.scratch("nginx")
    temp.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # As root, nginx would hand its workers to `nobody`, who cannot enter this folder.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    conf = temp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(temp=temp, port=port, user=user))
    command = [NGINX, "-p", str(temp), "-c", str(conf), "-e", str(temp / "error.log")]
    server = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"nginx did not start: {(temp / 'error.log').read_text()}")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}/api/v2"
    finally:
        server.terminate()
        server.wait(timeout=10)


def wrk(bench: Bench, url: str) -> float:
    """Requests/s of wrk posting one representative body at the line's concurrency."""
    body = next(line for line in bench.bodies().read_text().splitlines() if '"data"' in line)
    script = bench.scratch("post.lua")
    script.write_text(WRK_SCRIPT.format(body=body))
    threads = min(os.cpu_count() or 1, bench.args.concurrency)
    command = [WRK, f"-t{threads}", f"-c{bench.args.concurrency}"]
    command += [f"-d{bench.args.wrk_seconds}s", "-s", str(script), f"{url}/events/track"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise SystemExit(f"wrk saw errors:\n{output}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise SystemExit(f"no Requests/sec in wrk's output:\n{output}")
    return float(match.group(1))


def importer_accepts(flag: str) -> bool:
    """Whether `importer run` accepts `flag`, shown in its help or hidden (others are adding
    options while this is written)."""
    command = [sys.executable, "-m", "importer", "run", flag, "--help"]
    return subprocess.run(command, capture_output=True).returncode == 0


def importer_documents(option: str) -> bool:
    """Whether `importer run --help` lists `option` (one that takes a value)."""
    command = [sys.executable, "-m", "importer", "run", "--help"]
    return option in subprocess.run(command, capture_output=True, text=True).stdout


def rates(name: str, run: Run, inner_key: str | None = None, inner_label: str = "") -> str:
    """One raw-figure line: rows, seconds and rows/s of the whole process (and inner rate)."""
    text = f"{name}: {run.rows:,} rows in {run.seconds:,.2f} s = {run.rate:,.0f} rows/s (process)"
    inner = run.inner_rate(inner_key) if inner_key else None
    if inner is not None:
        text += f"; {inner:,.0f} rows/s {inner_label}"
    return text


IMPORTER_INNER = "in-process (report elapsed_s: read, build, send; start-up excluded)"


def line_send_cpu(bench: Bench) -> list[Result]:
    """1: the importer vs a bare aiohttp client, same loop, sink, rows and concurrency: both on
    asyncio, then both on uvloop (the `fast` extra) where it is installed."""
    loops = ["asyncio"] + (["uvloop"] if has_uvloop() else [])
    results = []
    for loop in loops:
        with raw_sink(bench) as url, event_loop(loop):
            importer = importer_at_raw_sink(bench, url)
            client = bare_client(bench, url, bench.args.rows, bench.args.concurrency, loop)
        ratio = importer.rate / client.rate
        raw = [
            rates("importer run", importer, "elapsed_s", IMPORTER_INNER),
            rates("bare client", client, "send_s", "inside its send loop"),
            f"event loop: importer {loop}, bare client {client.inner['loop']}",
            f"ratio = importer process rows/s ÷ bare client process rows/s = {ratio:.2f}",
        ]
        against = (
            f"bare aiohttp queue-of-workers client posting pre-built bodies, {loop} both, "
            f"raw sink, c={bench.args.concurrency}"
        )
        what = "send, CPU-bound" if loop == "asyncio" else "send, CPU-bound, `fast` extra"
        results.append(Result(what, against, "≥ 0.9", ratio, ratio >= 0.9, raw))
    if "uvloop" not in loops:
        message = "uvloop is not installed (pip install -e '.[fast]'): line skipped"
        results.append(Result("send, `fast` extra", "uvloop", "≥ 0.9", None, None, [message]))
    return results


def has_uvloop() -> bool:
    """Whether the `fast` extra is installed here."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def line_all_cores(bench: Bench) -> list[Result]:
    """2: wrk vs `importer run --workers N`, on the raw sink and on nginx where installed."""
    workers = os.cpu_count() or 1
    has_workers = importer_documents("--workers")
    sinks: list[tuple[str, Callable[[Bench], contextlib.AbstractContextManager[str]]]] = [
        ("the raw sink", raw_sink)
    ]
    results = []
    if not os.path.exists(WRK):
        message = f"{WRK} is not installed (apt-get install wrk): line skipped"
        return [Result("send, all cores", "wrk", "≥ 0.15", None, None, [message])]
    if os.path.exists(NGINX):
        sinks.append(("nginx", nginx_sink))
    else:
        print(f"{NGINX} is not installed: the nginx sink is skipped", file=sys.stderr)
    for sink, start in sinks:
        with start(bench) as url:
            requests_s = wrk(bench, url)
            raw = [f"wrk: {requests_s:,.0f} requests/s over {bench.args.wrk_seconds} s"]
            ratio = None
            if has_workers:
                run = importer_send(
                    bench, url, bench.args.rows, bench.args.concurrency, "--workers", str(workers)
                )
                ratio = run.rate / requests_s
                label = f"importer run --workers {workers}"
                raw.append(rates(label, run, "elapsed_s", "in-process"))
            else:
                raw.append("importer: n/a (no --workers yet)")
        against = f"wrk on {sink}, c={bench.args.concurrency}, {workers} threads"
        met = None if ratio is None else ratio >= 0.15
        what = f"send, all cores (--workers {workers})"
        results.append(Result(what, against, "≥ 0.15", ratio, met, raw))
    return results


def line_latency(bench: Bench) -> list[Result]:
    """3: a sink answering after 50 ms at c=64 and 100 ms at c=256, vs the ideal rate."""
    results = []
    for delay_ms, concurrency in ((50, 64), (100, 256)):
        ideal = concurrency * 1000 / delay_ms
        rows = int(ideal * bench.args.latency_seconds)
        with raw_sink(bench, delay_ms) as url:
            run = importer_send(bench, url, rows, concurrency)
            client = bare_client(bench, url, rows, concurrency) if bench.args.reference else None
        inner = run.inner_rate("elapsed_s")
        raw = [
            rates("importer run", run, "elapsed_s", IMPORTER_INNER),
            f"ideal: {concurrency} in flight ÷ {delay_ms} ms = {ideal:,.0f} rows/s",
            f"ratio (process) {run.rate / ideal:.2f}"
            + (f"; ratio (in-process) {inner / ideal:.2f}" if inner else ""),
        ]
        if client is not None:
            raw.append(rates("bare client (reference)", client, "send_s", "inside its send loop"))
            raw.append(f"bare client ÷ ideal (process) {client.rate / ideal:.2f}")
        # The run's own elapsed time, start-up excluded: start-up is a fixed cost the ideal
        # does not have, and this line is about keeping every slot busy.
        ratio = (inner or run.rate) / ideal
        what = f"send, latency-bound ({delay_ms} ms, c={concurrency})"
        against = f"ideal {ideal:,.0f} rows/s (the run's elapsed_s, start-up excluded)"
        results.append(Result(what, against, "≥ 0.95", ratio, ratio >= 0.95, raw))
    return results


def line_users(bench: Bench) -> list[Result]:
    """4: the importer vs a sequential requests loop and a 32-thread requests pool."""
    try:
        import requests  # noqa: F401
    except ImportError:
        message = "requests is not installed (pip install -e '.[bench]'): line skipped"
        what = "against what users write"
        return [Result(what, "requests", "≥ 8x / ≥ 3x", None, None, [message])]
    results = []
    source = bench.events(bench.args.rows)
    with raw_sink(bench) as url:
        importer = importer_at_raw_sink(bench, url)
        for threads, target in ((1, 8.0), (32, 3.0)):
            result = bench.scratch("requests.json")
            command = [sys.executable, str(HERE / "baselines.py"), "requests-loop", str(source)]
            command += [f"{url}/events/track", str(result), "--threads", str(threads)]
            run = measure(command, bench.args.rows, result)
            check(run, "requests loop")
            ratio = importer.rate / run.rate
            name = "sequential requests loop" if threads == 1 else f"{threads}-thread requests pool"
            raw = [
                rates("importer run", importer, "elapsed_s", IMPORTER_INNER),
                rates(name + " (csv.DictReader + json.dumps timed)", run),
            ]
            met = ratio >= target
            results.append(
                Result("against what users write", name, f"≥ {target:g}x", ratio, met, raw)
            )
    return results


def importer_dry(bench: Bench, *, before: bool = False) -> Run:
    """The dry run with --out of the dry-run file, shared by lines 5, 6 and 7: once (and once
    with the --before importer)."""
    key = "dry-before" if before else "dry"
    if key not in bench.runs:
        out = bench.scratch("payloads.jsonl")
        rows = bench.args.dry_rows
        root = before_root(bench) if before else ROOT
        bench.runs[key] = dry_run(bench, bench.events(rows), rows, out, root=root)
        out.unlink()
    return bench.runs[key]


def before_root(bench: Bench) -> Path:
    """The --before commit's importer (its package and schemas), extracted once."""
    root = bench.temp / "before"
    if not root.exists():
        root.mkdir()
        archive = subprocess.run(
            ["git", "archive", bench.args.before, "importer", "schemas"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root


def dry_results(
    bench: Bench, baseline: Run, name: str, against: str, target: float, unit: str
) -> list[Result]:
    """A dry-run line against `baseline`: this importer's ratio, and the --before one's."""
    results = []
    for before in (False, True) if bench.args.before else (False,):
        importer = importer_dry(bench, before=before)
        ratio = importer.rate / baseline.rate
        what = f"dry run, before ({bench.args.before})" if before else "dry run"
        raw = [rates(f"{what} --out", importer), rates(name, baseline)]
        cpu = baseline.cpu_s / importer.cpu_s
        raw.append(
            f"CPU seconds (user + system): {importer.cpu_s:.2f} vs {baseline.cpu_s:.2f}, "
            f"ratio {cpu:.2f} (the same work's cost, whatever else ran on the machine)"
        )
        shown = f"≥ {target:g}{unit}"
        results.append(Result(what, against, shown, ratio, ratio >= target, raw))
    return results


def baseline_dry(bench: Bench, name: str) -> Run:
    """`baselines.py NAME` over the dry-run file, writing its lines to a file."""
    out = bench.scratch("baseline.jsonl")
    source = bench.events(bench.args.dry_rows)
    command = [sys.executable, str(HERE / "baselines.py"), name, str(source), str(out)]
    run = measure(command, bench.args.dry_rows)
    check(run, name)
    out.unlink()
    return run


def line_dry_polars(bench: Bench) -> list[Result]:
    """5: the dry run vs a bare Polars pipeline over the same file."""
    importer_dry(bench)
    bare = baseline_dry(bench, "bare-polars")
    against = "bare Polars: collect_batches + struct.json_encode + write (process)"
    return dry_results(bench, bare, "bare Polars", against, 0.5, "")


def line_dry_csv(bench: Bench) -> list[Result]:
    """6: the dry run vs a csv.DictReader + json.dumps loop."""
    importer_dry(bench)
    naive = baseline_dry(bench, "csv-loop")
    against = "csv.DictReader + json.dumps loop writing lines (process)"
    return dry_results(bench, naive, "csv + json.dumps loop", against, 4, "x")


def line_memory(bench: Bench) -> list[Result]:
    """7: peak RSS of the dry run with --out, small file vs big file."""
    small = importer_dry(bench)
    raw = [f"{small.rows:,} rows: peak RSS {small.peak_mb:,.0f} MB ({small.seconds:,.1f} s)"]
    if bench.args.before:
        before = importer_dry(bench, before=True)
        raw.append(
            f"before ({bench.args.before}), {before.rows:,} rows: peak RSS {before.peak_mb:,.0f} MB"
        )
    if bench.args.skip_big:
        raw.append(f"{bench.args.big_rows:,} rows: skipped (--skip-big)")
        met = small.peak_mb <= CEILING_MB
        what = f"memory ({small.rows:,} rows only)"
        against = "peak RSS of the dry run with --out"
        return [Result(what, against, f"≤ {CEILING_MB} MB, flat", None, met, raw)]
    source = bench.events(bench.args.big_rows, "big")
    out = bench.scratch("payloads.jsonl")
    big = dry_run(bench, source, bench.args.big_rows, out)
    out.unlink()
    source.unlink()
    ratio = big.peak_mb / small.peak_mb
    raw.append(f"{big.rows:,} rows: peak RSS {big.peak_mb:,.0f} MB ({big.seconds:,.1f} s)")
    raw.append(f"big ÷ small = {ratio:.2f} (flat: ≤ {FLAT})")
    met = max(big.peak_mb, small.peak_mb) <= CEILING_MB and ratio <= FLAT
    against = f"peak RSS at {small.rows:,} rows (ratio = big ÷ small)"
    target = f"≤ {CEILING_MB} MB, flat"
    return [Result(f"memory, dry run ({big.rows:,} rows)", against, target, ratio, met, raw)]


def line_checkpoint(bench: Bench) -> list[Result]:
    """8: send throughput with the checkpoint vs with the benchmark-only switch off."""
    switch = "--benchmark-no-checkpoint"
    if not importer_accepts(switch):
        raw = [f"n/a: importer run has no {switch} yet"]
        return [Result("checkpoint", "send without checkpoint", "≥ 0.95", None, None, raw)]
    with_runs: list[Run] = []
    without_runs: list[Run] = []
    with raw_sink(bench) as url:
        # Alternated, back to back, so a noisy moment costs both sides alike; medians compared.
        for _ in range(CHECKPOINT_PAIRS):
            rows, concurrency = bench.args.rows, bench.args.concurrency
            with_runs.append(importer_send(bench, url, rows, concurrency))
            without_runs.append(importer_send(bench, url, rows, concurrency, switch))
    with_log = min(with_runs, key=lambda run: abs(run.seconds - median_seconds(with_runs)))
    without = min(without_runs, key=lambda run: abs(run.seconds - median_seconds(without_runs)))
    ratio = with_log.rate / without.rate
    raw = [
        f"{CHECKPOINT_PAIRS} alternated pairs; the median run of each side:",
        rates("with checkpoint", with_log, "elapsed_s", "in-process"),
        rates(f"with {switch}", without, "elapsed_s", "in-process"),
    ]
    inner_with, inner_without = with_log.inner_rate("elapsed_s"), without.inner_rate("elapsed_s")
    if inner_with and inner_without:
        raw.append(f"ratio in-process {inner_with / inner_without:.2f}")
    against = f"the same send with {switch} (process)"
    return [Result("checkpoint", against, "≥ 0.95", ratio, ratio >= 0.95, raw)]


def night_run(bench: Bench, url: str, source: Path, state: Path, rows: int) -> Run:
    """`importer run` of `source` (a file or a folder) keeping its checkpoint in `state`."""
    command = send_command(source, url, state, bench.args.concurrency)
    run = measure(command, rows)
    check(run, f"importer run of {source.name}")
    report = json.loads((state / "report.json").read_text())
    if report["rows_sent"] != rows:
        raise SystemExit(f"{source.name}: sent {report['rows_sent']:,} rows, not {rows:,}")
    run.inner = {"elapsed_s": float(report["elapsed_s"])}
    return run


def line_night(bench: Bench) -> list[Result]:
    """10: a night over a folder of NIGHT_FILES delivered, unchanged files plus one new, vs a
    run of the new file alone (fresh state); and a night with nothing new over all of them."""
    rows = bench.args.night_rows
    folder, new = bench.scratch("night"), bench.scratch("new")
    folder.mkdir()
    new.mkdir()
    for day in range(NIGHT_FILES + 1):
        where = folder if day < NIGHT_FILES else new
        generate_slice(where / f"day-{day:02d}.csv", day * rows, (day + 1) * rows)
    [new_file] = new.iterdir()
    state, alone_state = bench.scratch("night-state"), bench.scratch("alone-state")
    state.mkdir()
    alone_state.mkdir()
    with raw_sink(bench) as url:
        night_run(bench, url, folder, state, NIGHT_FILES * rows)  # the nights before: untimed
        alone = night_run(bench, url, new_file, alone_state, rows)
        (folder / new_file.name).write_bytes(new_file.read_bytes())
        night = night_run(bench, url, folder, state, rows)
        idle = night_run(bench, url, folder, state, 0)
    ratio = night.seconds / alone.seconds
    raw = [
        f"{NIGHT_FILES} files of {rows:,} rows delivered before; the new one {rows:,} rows",
        f"the night: {night.seconds:,.2f} s (process); the new file alone: {alone.seconds:,.2f} s",
        f"a night with nothing new over {NIGHT_FILES + 1} files: {idle.seconds:,.2f} s "
        f"= {idle.seconds / alone.seconds:.2f} of the new file's whole run",
    ]
    against = f"a run of the new file alone ({NIGHT_FILES} delivered, unchanged files + 1 new)"
    return [Result("a night", against, "≤ 1.1", ratio, ratio <= 1.1, raw)]


def generate_slice(path: Path, first: int, last: int) -> None:
    """Rows first..last-1 of the generated events, as CSV, written by a child process."""
    code = "from bench_dry_run import events_frame; from pathlib import Path; "
    code += f"events_frame({first}, {last}).write_csv(Path({str(path)!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=HERE)


def line_send_memory(bench: Bench) -> list[Result]:
    """11: peak RSS of the send at --memory-rows and 4x as many rows, raw sink; then the same
    with --per-user-order --order time (its ranking pass)."""
    small_rows = bench.args.memory_rows
    results = []
    order = ("--per-user-order", "--order", "time")
    for what, extra in (("memory, send", ()), ("memory, send --order time", order)):
        runs = []
        with raw_sink(bench) as url:
            for rows, kind in ((small_rows, "events"), (4 * small_rows, "big")):
                source = bench.events(rows, kind)
                concurrency = bench.args.concurrency
                runs.append(importer_send(bench, url, rows, concurrency, *extra, source=source))
        small, big = runs
        ratio = big.peak_mb / small.peak_mb
        per_row = (big.peak_mb - small.peak_mb) * 1e6 / (big.rows - small.rows)
        raw = [
            f"{run.rows:,} rows: peak RSS {run.peak_mb:,.0f} MB ({run.seconds:,.1f} s)"
            for run in runs
        ]
        raw.append(f"big ÷ small = {ratio:.2f} (flat: ≤ {FLAT}); {per_row:,.0f} bytes a row more")
        met = max(big.peak_mb, small.peak_mb) <= CEILING_MB and ratio <= FLAT
        against = f"peak RSS at {small.rows:,} rows (ratio = {big.rows:,} ÷ {small.rows:,})"
        results.append(Result(what, against, f"≤ {CEILING_MB} MB, flat", ratio, met, raw))
    return results


def median_seconds(runs: list[Run]) -> float:
    """The median wall time of `runs`."""
    return statistics.median(run.seconds for run in runs)


def line_startup(bench: Bench) -> list[Result]:
    """9: `importer validate` of a 10-row file vs importing polars and aiohttp, medians."""
    source = bench.events(10, "tiny")
    validate = [sys.executable, "-m", "importer", "validate", str(source)]
    validate += ["--mapping", str(MAPPING), "--quiet"]
    imports = [sys.executable, "-c", "import polars, aiohttp"]
    # Installed packages come byte-compiled (pip compiles them), polars and aiohttp included;
    # an editable checkout under PYTHONDONTWRITEBYTECODE never is: compile it as pip would.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "importer")], check=True)
    times: dict[str, list[float]] = {"validate": [], "imports": []}
    for _ in range(bench.args.startup_runs):
        # Alternated, so a noisy moment costs both sides alike.
        for name, command in (("validate", validate), ("imports", imports)):
            run = measure(command, 10)
            check(run, name)
            times[name].append(run.seconds)
    validate_s, imports_s = (statistics.median(times[name]) for name in ("validate", "imports"))
    ratio = validate_s / imports_s
    raw = [
        f"importer validate (10 rows): median {validate_s:.3f} s of {len(times['validate'])}",
        f"python -c 'import polars, aiohttp': median {imports_s:.3f} s",
    ]
    against = "python -c 'import polars, aiohttp' (medians)"
    return [Result("start-up", against, "≤ 1.3x", ratio, ratio <= 1.3, raw)]


LINES: dict[int, Callable[[Bench], list[Result]]] = {
    1: line_send_cpu,
    2: line_all_cores,
    3: line_latency,
    4: line_users,
    5: line_dry_polars,
    6: line_dry_csv,
    7: line_memory,
    8: line_checkpoint,
    9: line_startup,
    10: line_night,
    11: line_send_memory,
}


def importer_loop() -> str:
    """The loop the importer will run on: its documented rule, if its code implements it yet."""
    implemented = any(
        "IMPORTER_EVENT_LOOP" in path.read_text() for path in (ROOT / "importer").rglob("*.py")
    )
    return event_loop_name() if implemented else "asyncio"


def table(results: list[Result]) -> str:
    """The markdown table the README shows."""
    lines = [
        "| what | measured against | target | measured | met |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        measured = "n/a" if result.ratio is None else f"{result.ratio:.2f}"
        met = "n/a" if result.met is None else ("yes" if result.met else "no")
        lines.append(f"| {result.what} | {result.against} | {result.target} | {measured} | {met} |")
    return "\n".join(lines)


def main() -> None:
    """Parse the options, run the chosen lines, print the table and the raw figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the send lines")
    parser.add_argument("--dry-rows", type=int, default=1_000_000, help="rows of the dry runs")
    parser.add_argument("--big-rows", type=int, default=20_000_000, help="the memory line's big")
    parser.add_argument("--skip-big", action="store_true", help="skip the big memory run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--night-rows", type=int, default=20_000, help="rows of each nightly file")
    parser.add_argument(
        "--memory-rows", type=int, default=1_000_000, help="the send memory line's small (x4: big)"
    )
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="ideal send time")
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--startup-runs", type=int, default=7)
    parser.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip the bare client's reference figure on the latency-bound lines",
    )
    parser.add_argument("--only", type=int, nargs="+", choices=sorted(LINES), metavar="LINE")
    parser.add_argument(
        "--before", metavar="REF", help="also time the dry-run lines with git REF's importer"
    )
    args = parser.parse_args()
    os.environ["VERO_AUTH_TOKEN"] = TOKEN
    # `python -m importer` then runs this checkout's importer, whatever the caller's folder.
    os.chdir(ROOT)
    loop = importer_loop()
    with tempfile.TemporaryDirectory(prefix="bench-table-") as temp:
        bench = Bench(args, Path(temp), importer_loop=loop, client_loop=loop)
        results: list[Result] = []
        for number in args.only or sorted(LINES):
            print(f"line {LINES[number].__doc__}", file=sys.stderr, flush=True)
            results += LINES[number](bench)
    cpus = os.cpu_count()
    print(f"## importer performance ({cpus} cores, Python {sys.version.split()[0]}, {loop})\n")
    print(f"Send rows {args.rows:,}, dry-run rows {args.dry_rows:,}, c={args.concurrency}.")
    print("Every figure is of a whole process, start-up included, unless it says otherwise.")
    print(f"Command: python tests/bench/bench_table.py {' '.join(sys.argv[1:])}\n")
    print(table(results))
    print("\n### raw figures\n")
    for result in results:
        print(f"- {result.what} vs {result.against}:")
        for line in result.raw:
            print(f"  - {line}")


if __name__ == "__main__":
    main()
