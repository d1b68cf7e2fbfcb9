"""The recent request starts of each rate family, kept in the state directory so that a run
started right after another (a kill -9 and a rerun) honours the API's window the first one
began to fill.

    STATE/rate-window.log    one line per request start: `<family> <wall-clock seconds>`

An API may count its quota per key and endpoint family in any window of its own clock (say
600 requests a minute each for two families); a new process knows nothing of the starts of the
last one without this file. It holds no token and nothing derived from one: a state
directory is taken to be used with one key, and when it is not, the file only makes a run wait
more than it needs to.

Lines are appended as requests start (one short write each, with O_APPEND, so sender
processes can share the file); when a run starts the file is read and rewritten atomically
with only the starts still inside the window. A torn or unreadable line is skipped: the worst
it costs is one start forgotten.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from importer.files import write_atomic
from importer.state.layout import RATE_WINDOW_NAME


def read_starts(state_dir: Path, *, since: float) -> dict[str, list[float]]:
    """The starts after `since` (wall-clock seconds) of each family, in time order; the file is
    rewritten to hold only those. A missing or unreadable file holds none."""
    path = state_dir / RATE_WINDOW_NAME
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError:  # missing, or unreadable: nothing to honour
        return {}
    starts: dict[str, list[float]] = {}
    for line in text.splitlines():
        family, _, when = line.rpartition(" ")
        try:
            at = float(when)
        except ValueError:
            continue
        if at > since and at == at:  # NaN compares unequal to itself
            starts.setdefault(family, []).append(at)
    for times in starts.values():
        times.sort()
    lines = [f"{family} {at:.3f}\n" for family, times in starts.items() for at in times]
    # When the disk refuses, the old file stays: read again next time, its extra starts are old.
    with contextlib.suppress(OSError):
        write_atomic(path, "".join(lines).encode())
    return starts


class StartLog:
    """Appends each start of a family to the state directory's rate log; opened lazily, so a
    run that sends nothing writes nothing. A write the disk refuses is dropped: the window in
    memory still holds this run to the quota."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / RATE_WINDOW_NAME
        self._fd: int | None = None

    def append(self, family: str, at: float) -> None:
        """Note a start at `at` (wall-clock seconds) of `family`."""
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._fd, f"{family} {at:.3f}\n".encode())
        except OSError:
            pass

    def close(self) -> None:
        """Close the file, if it was opened."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def partition(starts: Mapping[str, list[float]], index: int, count: int) -> dict[str, list[float]]:
    """Sender `index` of `count`'s part of the earlier starts: every count-th of each family.

    Each sender keeps its share (limit // count) of the window; together the parts are every
    earlier start once, so the senders' starts and the earlier ones stay within the limit.
    """
    return {family: times[index::count] for family, times in starts.items()}
