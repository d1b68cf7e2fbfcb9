"""docs/production.md's commands run as written, against the embedded mock."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline_helpers import ROOT, doc_text

PAGE = doc_text("production.md")


def _block_after(heading: str) -> str:
    section = PAGE[PAGE.index(heading) :]
    found = re.search(r"^```sh\n(.*?)^```", section, re.S | re.M)
    assert found is not None, heading
    return found.group(1)


def test_the_environment_example_runs_as_written(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "samples", tmp_path / "samples")
    script = _block_after("## Options from the environment")
    assert "--endpoint" not in script  # the variables do it all
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # this `importer`
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr  # `importer status`, the last line
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rows_sent"] == 395
    assert (tmp_path / ".importer" / "prod").is_dir()
    events = [json.loads(line) for line in (tmp_path / "importer.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "summary"
    assert events[-1]["exit_code"] == 3  # the sample's bad rows, on purpose
    assert "395" in done.stdout  # status of the same state, from IMPORTER_STATE


def test_no_line_installs_the_unrelated_importer_package() -> None:
    """`importer` on the package index is another project: the docs and messages install the
    checkout (or engage-importer, once published)."""
    other = re.compile(r"pip install +(-\S+ +)*['\"]?importer\b")
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")]
    files += (ROOT / "importer").rglob("*.py")
    found = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in files
        for line in path.read_text(encoding="utf-8").splitlines()
        if other.search(line)
    ]
    assert found == []
