"""Load a job file (TOML): the steps of a migration, each an input set with its mapping, and the
order they run in.

    [job]
    order = "auto"               # auto: by each action's stage; "file": as listed
    [[step]]
    name = "users"
    inputs = ["users.csv"]       # paths or globs, relative to the job file's folder
    mapping = "../schemas/identify.toml"
    after = ["other-step"]       # optional: steps that must finish first

In auto order a step waits for every step of a lower stage (the destination declares each
action's stage: users before their tags, events after users, deletions last) and for its
`after`; steps of one stage keep the file's order. In file order the steps run as listed and
wait only for their `after`. Every problem in the file is collected and reported together,
each naming the job file, the step and the key, as mapping files are.
"""

from __future__ import annotations

import glob
import heapq
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from importer.destinations import Destination
from importer.errors import ImporterError, MappingError
from importer.inputs.locate import expand_inputs
from importer.mapping.file import Mapping, load_mapping

ORDERS = ("auto", "file")
TOP_LEVEL_KEYS = frozenset({"job", "step"})
JOB_KEYS = frozenset({"order"})
STEP_KEYS = frozenset({"name", "inputs", "mapping", "after"})
# A step's name is the name of its folder in the state directory.
STEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Step:
    """One input set and its mapping; `after` names every step that must finish first (its own
    and, in auto order, those of lower stages), in running order."""

    name: str
    inputs: tuple[Path, ...]
    mapping: Mapping
    after: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobFile:
    """A checked job file: its steps in the order they run."""

    path: Path
    order: str
    steps: tuple[Step, ...]

    @property
    def destination(self) -> Destination:
        """The one destination every step sends to."""
        return self.steps[0].mapping.destination

    def dependents(self, name: str) -> list[str]:
        """The steps that wait for `name`, directly or through another step, in running order."""
        waiting = {name}
        for step in self.steps:
            if waiting.intersection(step.after):
                waiting.add(step.name)
        return [step.name for step in self.steps if step.name in waiting - {name}]


def is_job_file(path: Path) -> bool:
    """Whether a command-line argument names a job file rather than an input (no input format
    is TOML)."""
    return path.suffix.lower() == ".toml"


def load_job(path: Path) -> JobFile:
    """Read and check the job file at `path` and every mapping it names; raise MappingError
    listing every problem found."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise MappingError(f"job file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"job file {path} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"job file {path} is not valid TOML: {exc}") from exc
    return parse_job(raw, path=path)


def parse_job(raw: dict[str, object], *, path: Path) -> JobFile:
    """Check an already parsed job file; paths in it are relative to `path`'s folder."""
    problems: list[str] = []
    for key in sorted(set(raw) - TOP_LEVEL_KEYS):
        problems.append(f"unknown key {key!r} (known: [job], [[step]])")
    order = _order(raw.get("job", {}), problems)
    entries = raw.get("step", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.append("'step' must be an array of tables: [[step]]")
        entries = []
    elif not entries:
        problems.append("no [[step]]: a job file lists at least one step")
    steps: list[Step] = []
    afters: dict[str, list[str]] = {}
    for index, entry in enumerate(entries, start=1):
        step = _step(entry, index, path.parent, problems, afters)
        if step is None:
            continue
        if any(other.name == step.name for other in steps):
            problems.append(f"step {step.name!r}: the name is used by an earlier step too")
            continue
        steps.append(step)
    names = set(afters)
    for name, after in afters.items():
        for other in after:
            if other == name:
                problems.append(f"step {name!r}: after names the step itself")
            elif other not in names:
                problems.append(
                    f"step {name!r}: after names {other!r}, which is not a step of this job "
                    f"(steps: {', '.join(sorted(names)) or '(none)'})"
                )
    destinations = {}
    for step in steps:
        destinations.setdefault(step.mapping.destination.name, []).append(step.name)
    if len(destinations) > 1:
        shown = "; ".join(f"{d}: {', '.join(n)}" for d, n in sorted(destinations.items()))
        problems.append(
            f"the steps send to more than one destination ({shown}): a job sends to one, with "
            "one token; write a job file per destination"
        )
    ordered = _ordered(steps, afters, order, problems) if not problems else []
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise MappingError(f"job file {path} has {len(problems)} problem(s):\n{listing}")
    return JobFile(path=path, order=order, steps=tuple(ordered))


def _order(table: object, problems: list[str]) -> str:
    """[job]: order, "auto" when left out."""
    if not isinstance(table, dict):
        problems.append("[job] must be a table")
        return "auto"
    for key in sorted(set(table) - JOB_KEYS):
        problems.append(f"unknown key job.{key} (known: {', '.join(sorted(JOB_KEYS))})")
    order = table.get("order", "auto")
    if order not in ORDERS:
        problems.append(f"job.order = {order!r} is not one of: {', '.join(map(repr, ORDERS))}")
        return "auto"
    return str(order)


def _step(
    entry: dict[str, object],
    index: int,
    folder: Path,
    problems: list[str],
    afters: dict[str, list[str]],
) -> Step | None:
    """One [[step]], or None when it has a problem (added to `problems`)."""
    name = entry.get("name")
    where = f"step {name!r}" if isinstance(name, str) else f"step {index}"
    found = len(problems)
    for key in sorted(set(entry) - STEP_KEYS):
        problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(STEP_KEYS))})")
    if not isinstance(name, str) or not STEP_NAME.match(name):
        problems.append(
            f"{where}: 'name' is required: letters, digits, '-', '_' or '.', at most 64 "
            "(it names the step's folder in the state directory)"
        )
    inputs = _inputs(entry.get("inputs"), folder, where, problems)
    mapping: Mapping | None = None
    mapping_path = entry.get("mapping")
    if not isinstance(mapping_path, str) or not mapping_path:
        problems.append(f"{where}: 'mapping' is required: the path of the step's mapping file")
    else:
        try:
            mapping = load_mapping(_joined(folder, mapping_path))
        except MappingError as exc:
            problems.append(f"{where}: {str(exc).replace(chr(10), chr(10) + '  ')}")
    after = entry.get("after", [])
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        problems.append(f"{where}: 'after' must be a list of step names")
        after = []
    if isinstance(name, str):
        afters[name] = list(dict.fromkeys(after))
    if len(problems) > found or mapping is None or not isinstance(name, str):
        return None
    return Step(name=name, inputs=inputs, mapping=mapping)


def _inputs(value: object, folder: Path, where: str, problems: list[str]) -> tuple[Path, ...]:
    """A step's inputs: each path, or each glob's matches in sorted order, once."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        problems.append(f"{where}: 'inputs' is required: a list of paths or globs")
        return ()
    paths: dict[Path, None] = {}
    for position, pattern in enumerate(value):
        path = _joined(folder, pattern)
        if GLOB_CHARS.intersection(pattern):
            # Sorted: the order rows are sent in must not depend on the file system's.
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            files = [match for match in matches if match.is_file()]
            if not files:
                problems.append(f"{where}: inputs[{position}] = {pattern!r} matches no file")
            paths.update(dict.fromkeys(files))
        elif path.is_dir():
            # A folder is its files with a known ending, sorted, as on the command line.
            try:
                paths.update(dict.fromkeys(expand_inputs((path,))))
            except ImporterError as exc:
                problems.append(f"{where}: inputs[{position}] = {pattern!r}: {exc}")
        elif not path.is_file():
            problems.append(f"{where}: inputs[{position}] = {pattern!r}: {path} is not a file")
        else:
            paths[path] = None
    return tuple(paths)


def _joined(folder: Path, relative: str) -> Path:
    """A path of the job file, relative to its folder, without `..` steps in messages."""
    return Path(os.path.normpath(folder / relative))


def _ordered(
    steps: list[Step], afters: dict[str, list[str]], order: str, problems: list[str]
) -> list[Step]:
    """The steps in running order, each with every step it waits for."""
    position = {step.name: index for index, step in enumerate(steps)}
    waits: dict[str, set[str]] = {}
    for step in steps:
        waits[step.name] = set(afters[step.name])
        if order == "auto":
            stage = step.mapping.action.stage
            waits[step.name] |= {o.name for o in steps if o.mapping.action.stage < stage}
        else:
            for other in afters[step.name]:
                if position[other] > position[step.name]:
                    problems.append(
                        f"step {step.name!r}: after names {other!r}, which is listed later; "
                        'with order = "file" the steps run as listed'
                    )
    if problems:
        return []
    by_name = {step.name: step for step in steps}
    key = {
        step.name: (step.mapping.action.stage if order == "auto" else 0, position[step.name])
        for step in steps
    }
    # Kahn's algorithm, taking the lowest (stage, position) among the steps free to run.
    left = {name: set(wait) for name, wait in waits.items()}
    ready = [key[name] + (name,) for name, wait in left.items() if not wait]
    heapq.heapify(ready)
    names: list[str] = []
    while ready:
        *_, name = heapq.heappop(ready)
        names.append(name)
        for other, wait in left.items():
            if name in wait:
                wait.discard(name)
                if not wait:
                    heapq.heappush(ready, key[other] + (other,))
    if len(names) < len(steps):
        problems.append(f"after makes a cycle: {_cycle(left, names)}")
        return []
    ran = {name: index for index, name in enumerate(names)}
    return [
        Step(
            name=name,
            inputs=by_name[name].inputs,
            mapping=by_name[name].mapping,
            after=tuple(sorted(_closure(name, waits), key=ran.__getitem__)),
        )
        for name in names
    ]


def _closure(name: str, waits: dict[str, set[str]]) -> set[str]:
    """Every step `name` waits for, directly or through another."""
    seen: set[str] = set()
    todo = list(waits[name])
    while todo:
        other = todo.pop()
        if other not in seen:
            seen.add(other)
            todo.extend(waits[other])
    return seen


def _cycle(left: dict[str, set[str]], done: list[str]) -> str:
    """One cycle among the steps that could not be ordered, as `a -> b -> a` (a waits for b),
    with the reason for a wait that comes from stages."""
    stuck = {name: wait for name, wait in left.items() if name not in done}
    path = [min(stuck)]
    while path[-1] not in path[:-1]:
        path.append(min(stuck[path[-1]]))
    start = path.index(path[-1])
    return " -> ".join(repr(n) for n in path[start:]) + (
        " (a step waits for every step of a lower stage, and for those its after names)"
    )
