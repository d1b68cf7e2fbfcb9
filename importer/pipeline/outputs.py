"""Guard the files a job reads and keeps from the files it writes.

Every output a user names (`--rejects`, `--report`, `--out`, `--dead-letter`) is opened for
writing, which truncates it. Pointed at an input, the mapping, a file of the state directory or
another output, it would destroy what the job needs, so such a job is refused before anything
is read or written.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from importer.errors import OutputError
from importer.state.layout import DEAD_LETTER_NAME, STATE_FILES, STATE_FOLDERS

DEAD_LETTER_OPTION = "--dead-letter"


def check_outputs(
    outputs: dict[str, Path | None],
    *,
    inputs: Iterable[Path] = (),
    mapping: Path | None = None,
    state_dir: Path | None = None,
) -> None:
    """Refuse outputs (by option name) that would overwrite an input, the mapping, a file of the
    state directory or each other, or that cannot be a file at all (a symlink loop).

    `--dead-letter` may be the state directory's own dead-letter file: that is its default.
    Every problem is reported at once.
    """
    named = {option: path for option, path in outputs.items() if path is not None}
    kept = [(path, "an input of this job") for path in inputs]
    if mapping is not None:
        kept.append((mapping, "the mapping file of this job"))
    problems = [_loop(option, path) for option, path in named.items()]
    for option, path in named.items():
        for other, what in kept:
            if _same_file(path, other):
                problems.append(f"{option} {path} is also {what}: writing it would destroy it")
        if state_dir is not None:
            problems.append(_state_file(option, path, state_dir))
    options = list(named)
    for i, option in enumerate(options):
        for other in options[i + 1 :]:
            if _same_file(named[option], named[other]):
                problems.append(
                    f"{option} and {other} are the same file ({named[option]}): one would "
                    "overwrite the other"
                )
    found = [problem for problem in problems if problem]
    if found:
        hint = "write it somewhere else"
        if any(problem.startswith(DEAD_LETTER_OPTION) for problem in found):
            hint += "; to replay dead letters, move the file out of --state first"
        raise OutputError("; ".join(found), hint=hint)


def _loop(option: str, path: Path) -> str:
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{option} {path} cannot be written: it is a loop of symbolic links"
    return ""


def _state_file(option: str, path: Path, state_dir: Path) -> str:
    what = STATE_FILES.get(path.name)
    if what is not None and _same_file(path.parent, state_dir):
        if option == DEAD_LETTER_OPTION and path.name == DEAD_LETTER_NAME:
            return ""
        return f"{option} {path} is {what} in the state directory {state_dir}"
    for folder, what in STATE_FOLDERS.items():
        kept = state_dir / folder
        if _same_file(path, kept) or _inside(path, kept):
            return f"{option} {path} is in {what} ({kept}) in the state directory {state_dir}"
    return ""


def _inside(path: Path, folder: Path) -> bool:
    return any(_same_file(parent, folder) for parent in path.parents)


def _same_file(one: Path, other: Path) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:  # one of them does not exist yet, or cannot be reached
        return os.path.realpath(one) == os.path.realpath(other)
