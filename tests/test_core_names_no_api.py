"""The core names no API: what differs between APIs lives in importer/destinations/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pipeline_helpers import ROOT

from importer.destinations import DESTINATIONS

PACKAGE = ROOT / "importer"
# The command line, the destinations and the mock server may name APIs; everything else,
# subfolders included, is the core.
NOT_CORE = {"cli", "destinations", "mock"}
CORE = sorted(
    path
    for path in PACKAGE.rglob("*.py")
    if path.relative_to(PACKAGE).parts[0] not in NOT_CORE and path.name != "__main__.py"
)


def _api_words() -> set[str]:
    words: set[str] = set()
    for destination in DESTINATIONS.values():
        words |= {destination.name, destination.title, destination.token_env}
        words |= set(destination.credential_fields)
    return words


def _distinctive_paths() -> set[str]:
    """Payload paths that could only be an API's: dotted or with an underscore (`event_name`).
    Plain words such as `id` or `data` are also the core's own keys (a checkpoint record's id)."""
    return {
        path
        for destination in DESTINATIONS.values()
        for action in destination.actions.values()
        for path in action.fields
        if "." in path or "_" in path
    }


def test_the_core_modules_are_found() -> None:
    names = {path.relative_to(PACKAGE).as_posix() for path in CORE}
    assert {"inputs/reader.py", "checks/validate.py", "payloads/build.py"} <= names
    assert {"delivery/deliver.py", "delivery/send.py", "delivery/bulk.py"} <= names
    assert {"state/checkpoint.py", "outcome.py", "pipeline/run.py", "mapping/file.py"} <= names
    assert {"checks/dedup.py", "jobfile/steps.py", "inputs/cloud.py"} <= names


@pytest.mark.parametrize("path", CORE, ids=lambda path: path.relative_to(PACKAGE).as_posix())
def test_a_core_module_names_no_api(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    pattern = re.compile("|".join(re.escape(word) for word in sorted(_api_words())), re.I)
    found = sorted({match.group(0) for match in pattern.finditer(text)})
    assert found == [], f"{path} names {found}"


# The shapes of the exports `init` recognises name their own columns (Amplitude's `user_id`),
# which may be spelled like an API's payload path; they are input keys, not payload paths.
EXPORT_SHAPES = PACKAGE / "pipeline" / "exports.py"


@pytest.mark.parametrize(
    "path",
    [path for path in CORE if path != EXPORT_SHAPES],
    ids=lambda path: path.relative_to(PACKAGE).as_posix(),
)
def test_a_core_module_holds_no_payload_path(path: Path) -> None:
    paths = _distinctive_paths()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = sorted(
        {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in paths
        }
    )
    assert found == [], f"{path} holds the payload paths {found}"
