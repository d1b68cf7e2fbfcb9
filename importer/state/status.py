"""What a state directory says without opening it for a run: its status, and the sizes of the inputs it knows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from importer.errors import CheckpointError
from importer.state.checkpoint import check_paths, unusable_state
from importer.state.facts import (
    InputStatus,
    StateStatus,
)
from importer.state.layout import LOG_NAME
from importer.state.records import FORMAT_VERSION, describe_damage, load_log


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
    return StateStatus(state.job, state.created, inputs, tuple(warnings), open_jobs)


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
