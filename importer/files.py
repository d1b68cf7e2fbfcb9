"""Writing the files a job keeps: outputs the user names, and whole files replaced atomically.

`write_atomic` is the one way a whole file is replaced (the JSON report, the checkpoint log's
first record and its repair): a temporary file beside it is written and fsynced, renamed over
it, and the folder fsynced, so a crash at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

from importer.errors import OutputError


def open_output(path: Path, mode: str, *, shown: Path | None = None) -> IO[Any]:
    """Open a file the user asked for (`shown`, when `path` is a temporary one beside it),
    creating its folder; one that cannot be written is an OutputError, not a traceback."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if "b" in mode:
            return path.open(mode)
        return path.open(mode, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {shown or path}: {exc.strerror or exc}") from None


def write_atomic(path: Path, data: bytes | Iterable[bytes], *, temp: Path | None = None) -> None:
    """Replace `path` with `data` (bytes, or pieces written in turn) so that a crash leaves either
    the old file or the new one, never a part of it.

    `temp` is the temporary file beside `path` (default: a new, uniquely named one); it is
    removed when writing fails. OSError passes through: the caller knows what the file is to
    the user (an output, a checkpoint) and says so in its own ImporterError.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if temp is None:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        temp = Path(name)
        handle = os.fdopen(fd, "wb")
    else:
        handle = temp.open("wb")
    try:
        with handle:
            for piece in [data] if isinstance(data, bytes) else data:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            temp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable: the new name lives in the folder's own blocks."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
