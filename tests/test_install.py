"""INSTALL TEST: the wheel, installed (not editable) into a fresh virtual environment, works from
an empty folder: presets by name, the embedded mock, `importer presets`.

To stay within the suite's time it builds the wheel once per session without build isolation
(setuptools comes from the test extra) and installs it with --no-deps into a venv that borrows
this environment's site-packages through a .pth line: the project's dependencies are not
downloaded again, but nothing of the checkout is importable there (a .pth named by a .pth is
not read, so the editable install's hook stays behind), which the test checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from pipeline_helpers import ROOT


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A clean copy of what a source distribution holds: setuptools builds in the source tree,
    # and a stale build/ there would hide a file the package data no longer names.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "importer", source / "importer", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(source)],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    [built] = out.glob("engage_importer-*.whl")
    return built


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(home)], check=True)
    python = home / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    return home


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "IMPORTER_"))}


def test_the_wheel_carries_the_presets_their_schemas_and_the_report_schema(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for schema in (ROOT / "schemas").iterdir():
        assert f"importer/presets/{schema.name}" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Name: engage-importer" in text
    assert "License-Expression: MIT" in text


def test_run_with_a_preset_from_an_empty_folder(venv: Path, tmp_path: Path) -> None:
    shutil.copy(ROOT / "samples" / "events.csv", tmp_path / "events.csv")
    env = _clean_env()
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import importer; print(importer.__file__)"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout
    ran = subprocess.run(
        [venv / "bin" / "importer", "run", "events.csv", "--mapping", "vero-track",
         "--endpoint", "embedded", "--report", "report.json", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 3, ran.stderr  # the sample's bad rows, on purpose
    assert json.loads((tmp_path / "report.json").read_text())["rows_sent"] == 395
    listed = subprocess.run(
        [venv / "bin" / "importer", "presets"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert "vero-track " in listed
