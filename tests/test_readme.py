"""The README's promises: its commands run as written, and every command is documented."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from pipeline_helpers import ROOT, doc_text

from importer.cli.app import main

README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_command(marker: str) -> list[str]:
    """The shell command in the README that contains `marker`, split into its `&&` parts."""
    [line] = [line for line in README.splitlines() if marker in line and "&&" in line]
    return [part.strip() for part in line.split("&&")]


@pytest.mark.parametrize("command", main.list_commands(click.Context(main)))
def test_every_command_is_in_the_readme(command: str) -> None:
    assert re.search(rf"^importer {command}\b", README, re.MULTILINE), command


def test_the_tests_command_is_the_one_ci_runs() -> None:
    parts = readme_command(".[test]")
    ci = (ROOT / ".ci" / "run").read_text()
    assert parts[-1] == ".venv/bin/python -m pytest"
    assert ".venv/bin/python -m pytest" in ci
    assert '-e ".[test]"' in ci


@pytest.mark.long(seconds=4)
def test_the_main_job_command_works_as_written(tmp_path: Path) -> None:
    *install, job = readme_command("--endpoint embedded")
    assert install == ["python3 -m venv .venv", ".venv/bin/pip install -e ."]
    args = shlex.split(job)
    assert args[0] == ".venv/bin/importer"
    for folder in ("samples", "schemas"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    command = [sys.executable, "-m", "importer", *args[1:]]
    first = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert first.returncode == 3, first.stderr
    assert re.search(r"delivered +395\n", first.stdout)
    assert "embedded server received 395 accepted request(s)" in first.stdout
    assert (tmp_path / "rejects.csv").read_text().count("samples/events.csv") == 6
    again = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert re.search(r"delivered +0\n", again.stdout)
    assert re.search(r"skipped \(done before\) +395\n", again.stdout)


USERPILOT_DELIVERED = {
    "userpilot-track.toml": 12,
    "userpilot-identify.toml": 10,
    "userpilot-company.toml": 7,
    "userpilot-import-track.toml": 12,
    "userpilot-import-identify.toml": 10,
    "userpilot-import-company.toml": 7,
    "userpilot-bulk-identify.toml": 10,
    "userpilot-bulk-company.toml": 7,
    "userpilot-import-page-view.toml": 4,
    "userpilot-delete-users.toml": 11,
    "userpilot-delete-companies.toml": 7,
}


USERPILOT_COMMANDS = [
    line
    for line in doc_text("userpilot.md").splitlines()
    if line.startswith(".venv/bin/importer run samples/userpilot-")
]


def _preset(line: str) -> str:
    args = shlex.split(line)
    return Path(args[args.index("--mapping") + 1]).name


def test_every_userpilot_preset_has_its_sample_command() -> None:
    assert sorted(_preset(line) for line in USERPILOT_COMMANDS) == sorted(USERPILOT_DELIVERED)


# One test per command, so that the test workers share them.
@pytest.mark.parametrize("line", USERPILOT_COMMANDS, ids=_preset)
def test_every_userpilot_sample_command_works_as_written(tmp_path: Path, line: str) -> None:
    for folder in ("samples", "schemas"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    args = shlex.split(line)
    assert args[0] == ".venv/bin/importer"
    done = subprocess.run(
        [sys.executable, "-m", "importer", *args[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, (line, done.stdout, done.stderr)
    preset = _preset(line)
    delivered = USERPILOT_DELIVERED[preset]
    assert re.search(rf"delivered +{delivered}\n", done.stdout), (line, done.stdout)
    if "import" in preset or "bulk" in preset:
        assert "jobs: 1 (1 completed)" in done.stdout, done.stdout
    if "delete" in preset:
        assert "jobs: 1 (1 accepted)" in done.stdout, done.stdout


def quick_start(destination: str) -> list[list[str]]:
    """The commands of the README's quick start for `destination`, in order."""
    start = README.index(f"## Quick start: {destination}")
    section = README[start : README.index("\n## ", start + 1)]
    return [shlex.split(line) for line in section.splitlines() if line.startswith(".venv/bin/")]


@pytest.mark.long(seconds=4)
@pytest.mark.parametrize("destination", ["Vero", "Userpilot"])
def test_the_quick_start_works_as_written(tmp_path: Path, destination: str) -> None:
    *local, send = quick_start(destination)
    assert all(args[1] in ("init", "validate") or "--dry-run" in args for args in local), local
    assert send[1] == "run"
    assert "--dry-run" not in send
    assert "--endpoint" not in send
    for folder in ("samples", "schemas"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    # The last command sends to the API; here it goes to the embedded mock instead.
    for args in [*local, [*send, "--endpoint", "embedded"]]:
        assert args[0] == ".venv/bin/importer"
        done = subprocess.run(
            [sys.executable, "-m", "importer", *args[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        # `init` writes a mapping; the rest exit 3, as the samples have bad rows on purpose.
        assert done.returncode == (0 if args[1] == "init" else 3), (args, done.stderr)
    [dry_run] = [args for args in local if "--dry-run" in args]
    payloads = (tmp_path / dry_run[dry_run.index("--out") + 1]).read_text().splitlines()
    assert re.search(rf"delivered +{len(payloads)}\n", done.stdout), done.stdout
