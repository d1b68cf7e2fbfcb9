"""The package's shape: folders stand in the pipeline's order and each imports only those before it.

Read from the code's own imports (those inside functions and under TYPE_CHECKING included), so a
new module that reaches up a floor, or two that import each other, fail here before review.
docs/architecture.md draws the same order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pipeline_helpers import ROOT

PACKAGE = ROOT / "importer"
# The order of the folders, lowest first; the modules at the package root are below them all.
ORDER = (
    "",
    "destinations",
    "mapping",
    "state",
    "inputs",
    "checks",
    "payloads",
    "delivery",
    "mock",
    "pipeline",
    "jobfile",
    "api",
    "cli",
)
# The console script's face and the package's face may import anything of the package.
FACES = {"__main__.py", "__init__.py"}
MAX_LINES = 800
MAX_OVER_600 = 2
MAX_ROOT_MODULES = 12


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """The package's modules that `name` imports, wherever in the file the import stands."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                )
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target != "importer":
                found.add(target)
    return found


EDGES = {name: _imports(name, path) for name, path in MODULES.items()}


def _folder(name: str) -> str:
    parts = name.split(".")
    is_root_module = len(parts) == 2 and MODULES[name].name != "__init__.py"
    return "" if is_root_module or name == "importer" else parts[1]


def test_every_folder_has_its_place_in_the_order() -> None:
    folders = {_folder(name) for name in MODULES}
    assert folders <= set(ORDER), folders - set(ORDER)


@pytest.mark.parametrize("name", sorted(EDGES), ids=str)
def test_a_module_imports_only_its_own_folder_and_those_before_it(name: str) -> None:
    if MODULES[name].name in FACES and _folder(name) in ("", "importer"):
        return
    rank = ORDER.index(_folder(name))
    above = sorted(target for target in EDGES[name] if ORDER.index(_folder(target)) > rank)
    assert above == [], f"{name} ({_folder(name) or 'root'}) imports from above it: {above}"


def test_no_two_modules_import_each_other_through_any_path() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in EDGES[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            loop = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                loop.append(member)
                if member == node:
                    break
            if len(loop) > 1:
                loops.append(sorted(loop))

    for node in EDGES:
        if node not in index:
            visit(node)
    assert loops == []


def test_no_destination_imports_a_mock() -> None:
    """A destination's mock imports its API; only the mock server's registry imports a mock."""
    mocks = {
        name
        for name in MODULES
        if name.startswith("importer.destinations.") and name.endswith(".mock")
    }
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in EDGES.items()
        for target in targets & mocks
        if _folder(name) != "mock"
    )
    assert mocks
    assert offenders == []


def test_modules_stay_small_and_the_root_stays_short() -> None:
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
    assert len([n for n in sizes.values() if n > 600]) <= MAX_OVER_600
    root = [path for path in PACKAGE.glob("*.py") if path.name != "__init__.py"]
    assert len(root) <= MAX_ROOT_MODULES, sorted(path.name for path in root)


def _column_names() -> set[str]:
    tree = ast.parse((PACKAGE / "columns.py").read_text(encoding="utf-8"))
    return {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id.isupper()
    }


def test_column_names_come_from_columns_only() -> None:
    names = _column_names()
    assert {"LINE", "BODY", "ROUTE"} <= names
    borrowed = sorted(
        f"{path.relative_to(ROOT)}: {alias.name} from {node.module}"
        for path in [*MODULES.values(), *sorted((ROOT / "tests").rglob("*.py"))]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("importer.")
        and node.module != "importer.columns"
        for alias in node.names
        if alias.name in names
    )
    assert borrowed == []


# The state directory's own file names: distinctive enough that no other string holds them.
STATE_NAMES = (
    "checkpoint.log",
    "checkpoint.prev.log",
    "checkpoint.corrupt.log",
    "dead-letters.jsonl",
    "embedded-received.jsonl",
    "order-spill",
    "job.json",
)


def test_only_the_state_layout_names_the_state_directorys_files() -> None:
    owner = PACKAGE / "state" / "layout.py"
    named = sorted(
        f"{path.relative_to(ROOT)}: {node.value}"
        for path in MODULES.values()
        if path != owner
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in STATE_NAMES
    )
    assert named == []
    text = owner.read_text(encoding="utf-8")
    assert all(f'"{name}"' in text for name in STATE_NAMES)
