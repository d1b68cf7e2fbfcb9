"""The nightly line of issue 22: a night over a folder of 10 files delivered before, unchanged,
and 1 new one, against a run of the new file alone; and a night with nothing new over the 11.
Whole processes, the embedded endpoint, best of three each; ratios only. Run:

    .venv/bin/python tests/bench/bench_nightly.py [ROWS_PER_FILE]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAPPING = str(ROOT / "schemas" / "vero-track.toml")
HEADER = "row_id,user_id,email,event,amount,occurred_at\n"


def write(path: Path, first: int, rows: int) -> None:
    lines = (
        f"{i},u{i % 5000},u{i % 5000}@example.com,Viewed,{i % 977},"
        f"2024-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{i // 60 % 60:02d}Z\n"
        for i in range(first, first + rows)
    )
    path.write_text(HEADER + "".join(lines))


def run(state: Path, *inputs: Path) -> float:
    command = [sys.executable, "-m", "importer", "run", *map(str, inputs), "--mapping", MAPPING]
    command += ["--endpoint", "embedded", "--state", str(state), "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    return elapsed


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        folder = base / "exports"
        folder.mkdir()
        for day in range(10):
            write(folder / f"day{day:02d}.csv", day * rows, rows)
        seeded = base / "seeded"
        run(seeded, folder)  # the nights before: every old file delivered
        run(seeded, folder)  # and once more, as a night with nothing new
        new = base / "new.csv"
        write(new, 10 * rows, rows)
        alone, night, empty = [], [], []
        for _ in range(3):
            state = base / "state-night"
            shutil.rmtree(state, ignore_errors=True)
            shutil.copytree(seeded, state)
            shutil.copy(new, folder / "day10.csv")
            night.append(run(state, folder))
            empty.append(run(state, folder))
            (folder / "day10.csv").unlink()
            shutil.rmtree(base / "state-alone", ignore_errors=True)
            alone.append(run(base / "state-alone", new))
        print(f"rows per file {rows:,}")
        print(f"10 known + 1 new / the new file alone: {min(night) / min(alone):.2f}")
        print(f"nothing new over 11 files / the new file alone: {min(empty) / min(alone):.2f}")


if __name__ == "__main__":
    main()
