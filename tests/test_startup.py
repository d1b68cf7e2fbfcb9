"""The commands that read no rows start without Polars and the core that reads them.

The suite starts `importer mock-server` some eighty times, and a user runs `importer status` to
look at a job: each would spend most of a second importing Polars it never uses if the command
group imported every command (cli/app.py), or if a module they share (cli/shell.py,
cli/options.py, destinations/) imported the readers at its top.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "old-state"

# What a command that reads no rows must not import: Polars, and the stages that read, check,
# build and run rows. Of the Python API's modules, the CLI shares two on purpose: the token
# file's rules (api/credentials.py, the one place that reads credentials) and the exit codes
# (api/report.py).
HEAVY = (
    "polars",
    "importer.inputs",
    "importer.checks",
    "importer.payloads",
    "importer.pipeline.run",
    "importer.jobfile.steps",
    "importer.api",
)
SHARED_API = {"importer.api", "importer.api.credentials", "importer.api.report"}

IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", re.MULTILINE)


def command(*args: str) -> list[str]:
    """`importer ARGS`, reporting each module as it is imported (python -X importtime)."""
    return [sys.executable, "-X", "importtime", "-m", "importer", *args]


def too_heavy(stderr: str) -> list[str]:
    """The modules in an importtime report that a command reading no rows should not load."""
    imported = IMPORT_LINE.findall(stderr)
    assert "importer.cli.entry" in imported, stderr[-2000:]
    return [
        name
        for name in imported
        if name not in SHARED_API
        and any(name == heavy or name.startswith(f"{heavy}.") for heavy in HEAVY)
    ]


@pytest.mark.parametrize("destination", ["vero", "userpilot"])
def test_the_mock_server_serves_without_polars(destination: str) -> None:
    process = subprocess.Popen(
        command("mock-server", "--port", "0", "--destination", destination),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        report = []
        for line in process.stderr:  # every import is reported before the server listens
            report.append(line)
            if "listening: --endpoint http://127.0.0.1:" in line:
                break
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert "listening" in report[-1], "".join(report)[-2000:]
    assert too_heavy("".join(report)) == []


@pytest.mark.parametrize("case", ["vero-track", "job-file"])
def test_status_reads_a_state_without_polars(tmp_path: Path, case: str) -> None:
    state = shutil.copytree(FIXTURES / case / "state", tmp_path / "state")
    done = subprocess.run(
        command("status", "--state", str(state)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "delivered" in done.stdout
    assert too_heavy(done.stderr) == []


def test_the_version_is_said_without_polars() -> None:
    done = subprocess.run(
        command("--version"), capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout) == (0, "importer, version 0.1.0\n")
    assert too_heavy(done.stderr) == []
