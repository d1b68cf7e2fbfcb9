"""What a state directory says without opening it for a run: its status, and the sizes of the inputs
it knows."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from importer.errors import CheckpointError
from importer.state.facts import (
    InputStatus,
    StateStatus,
)
from importer.state.layout import LOG_NAME, REPLAY_DIR, check_paths, unusable_state
from importer.state.records import FORMAT_VERSION, describe_damage, load_log
from importer.state.rows import InputRows


def read_status(state_dir: Path) -> StateStatus:
    """Summarise a state directory without changing it (safe while a run is appending)."""
    path = state_dir / LOG_NAME
    try:
        check_paths(state_dir, (LOG_NAME,))
        if not path.is_file():
            raise CheckpointError(
                f"no checkpoint log in {state_dir}: nothing has run with this --state"
            )
        state, damage = load_log(path)
    except OSError as exc:
        raise unusable_state(state_dir, exc) from exc
    warnings = [] if damage is None else [describe_damage(path, damage)]
    if state.job is None:
        warnings.append(f"{path} has no readable job header")
    elif state.version != FORMAT_VERSION:
        warnings.append(
            f"{path} has checkpoint format {state.version!r}, expected {FORMAT_VERSION}"
        )
    inputs = tuple(
        InputStatus(
            name=inp.name,
            fingerprint=inp.fingerprint,
            delivered=inp.lines.count - inp.inherited - inp.failed,
            failed=inp.failed,
            failures=tuple(inp.failures),
            updated_at=_time(inp.updated),
            first_at=_time(inp.first),
            names=tuple(inp.names),
            grew_from=None if inp.grew_from is None else state.by_id[inp.grew_from].fingerprint,
            inherited=inp.inherited,
            size=inp.size,
            reasons=tuple(
                sorted(
                    (
                        (status, error, rows, line)
                        for (status, error), (rows, line) in inp.reasons.items()
                    ),
                    key=lambda reason: (-reason[2], reason[3]),
                )
            ),
            other_failed=inp.other_failed,
        )
        for inp in state.by_id.values()
    )
    open_jobs = tuple(chunk for chunk in state.chunks.values() if chunk.stage != "ended")
    replayed = _replayed(state_dir, {inp.name: inp for inp in state.by_id.values()})
    if replayed:
        inputs = tuple(
            replace(
                item,
                delivered=item.delivered + replayed.get(item.fingerprint, 0),
                failed=item.failed - replayed.get(item.fingerprint, 0),
                replayed=replayed.get(item.fingerprint, 0),
            )
            for item in inputs
        )
    return StateStatus(state.job, state.created, inputs, tuple(warnings), open_jobs)


def _replayed(state_dir: Path, by_name: dict[str, InputRows]) -> dict[str, int]:
    """Per input fingerprint, the rows that failed here and that the replay a run's summary
    prints (its state in STATE/replay) has since delivered: the replay's log holds the lines of
    its payload file it delivered, and each of those lines names its source file and line."""
    path = state_dir / REPLAY_DIR / LOG_NAME
    try:
        if not path.is_file():
            return {}
        replay, _ = load_log(path)
    except OSError:
        return {}
    found: dict[str, set[int]] = {}
    for payloads in replay.by_id.values():
        try:
            with open(payloads.name, "rb") as handle:  # the payload file, by the name it was read
                for number, text in enumerate(handle, start=1):
                    if number not in payloads.lines or number in payloads.failed_lines:
                        continue
                    source = _source_of(text)
                    if source is None:
                        continue
                    inp = by_name.get(source[0])
                    if inp is not None and source[1] in inp.failed_lines:
                        found.setdefault(inp.fingerprint, set()).add(source[1])
        except OSError:
            continue  # moved or removed: nothing to learn from it
    return {fingerprint: len(lines) for fingerprint, lines in found.items()}


def _source_of(text: bytes) -> tuple[str, int] | None:
    """The (file, line) a payload line came from, or None."""
    try:
        source = json.loads(text).get("source")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    if not isinstance(source, dict):
        return None
    file, line = source.get("file"), source.get("line")
    if isinstance(file, str) and isinstance(line, int) and not isinstance(line, bool):
        return file, line
    return None


def _time(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)


def known_sizes(state_dir: Path) -> set[int]:
    """The content sizes of the inputs a state directory knows, for the byte pass to probe (see
    read.open_input); empty when there is no usable log (opening it later says why)."""
    path = state_dir / LOG_NAME
    try:
        if not path.is_file():
            return set()
        state, _ = load_log(path)
    except OSError:
        return set()
    return {inp.size for inp in state.by_id.values() if inp.size}


def known_whole(state_dir: Path) -> dict[tuple[int, str], tuple[str, int, bytes]]:
    """The inputs a state directory knows every row of as handled, by their size on disk and
    quick fingerprint, with their fingerprints, sizes and first blocks' hashes (see
    mark_whole): a file found again by these is not
    read (see reader.open_input); empty when there is no usable log."""
    path = state_dir / LOG_NAME
    try:
        if not path.is_file():
            return {}
        state, _ = load_log(path)
    except OSError:
        return {}
    return {
        (inp.disk_size, inp.quick): (inp.fingerprint, inp.size, inp.head)
        for inp in state.by_id.values()
        if inp.is_whole and inp.size is not None and inp.disk_size is not None and inp.quick
    }
