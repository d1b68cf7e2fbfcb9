"""Every file name of a state directory, in one place, and the checks that a directory can be one.

A state directory (`--state DIR`, default `.importer/`; `.importer/shard-K-of-N` for a shard)
holds:

    checkpoint.log           the append-only log of what the API acknowledged (state/records.py)
    checkpoint.prev.log      the log that `--fresh` set aside
    checkpoint.corrupt.log   a copy of a log found corrupt in the middle, taken before rewriting it
    lock                     flock-ed while a run uses the directory
    dead-letters.jsonl       the default dead-letter file
    embedded-received.jsonl  what the embedded mock received (`--endpoint embedded`)
    order-spill/             with --order time: the rows to send, between ranking and sending
    chunks/                  bulk uploads: each chunk's rows until its upload's job ends
    jobs/                    bulk uploads: the final status of each failed job
    job.json                 a job file's run: each step's outcome
    steps/NAME/              a job file's run: each step's own state directory
    rate-window.log          the recent request starts of each rate family (state/rate_log.py)
    replay/                  the replay command a run prints: its own state directory

Nothing else may name these: the output guard (pipeline/outputs.py) refuses every one of them.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from pathlib import Path

from importer.errors import CheckpointError

DEFAULT_STATE = Path(".importer")

LOG_NAME = "checkpoint.log"
PREV_NAME = "checkpoint.prev.log"
CORRUPT_NAME = "checkpoint.corrupt.log"
LOCK_NAME = "lock"
DEAD_LETTER_NAME = "dead-letters.jsonl"
EMBEDDED_RECORD_NAME = "embedded-received.jsonl"
ORDER_SPILL_NAME = "order-spill"
CHUNKS_DIR = "chunks"
JOBS_DIR = "jobs"
JOB_RECORD = "job.json"
STEPS_DIR = "steps"
RATE_WINDOW_NAME = "rate-window.log"
# Where the replay command a run prints keeps its own checkpoint: the run's log belongs to the
# run's mapping, and a replay is a job of its own.
REPLAY_DIR = "replay"

# What each file is, for the message that refuses an output onto it.
STATE_FILES = {
    LOG_NAME: "the checkpoint log",
    LOG_NAME + ".tmp": "the checkpoint log being written",
    PREV_NAME: "the checkpoint that --fresh set aside",
    CORRUPT_NAME: "the copy of a damaged checkpoint",
    LOCK_NAME: "the lock of a running job",
    EMBEDDED_RECORD_NAME: "the embedded server's record",
    DEAD_LETTER_NAME: "the default dead-letter file",
    JOB_RECORD: "the job file's record of its steps",
    RATE_WINDOW_NAME: "the recent request starts kept for the API's rate window",
}
# Folders the importer fills: nothing a user names may be written inside them.
STATE_FOLDERS = {
    ORDER_SPILL_NAME: "the rows kept for --order time",
    CHUNKS_DIR: "the chunks of bulk uploads",
    JOBS_DIR: "the status of bulk upload jobs",
    STEPS_DIR: "the job file's step states",
    REPLAY_DIR: "the state of replaying the dead letters",
}


def check_paths(state_dir: Path, names: Iterable[str]) -> None:
    """Refuse a --state that is not a directory, or a directory where one of our files goes.

    Caught before anything moves: `--fresh` would otherwise rename a directory into place.
    """
    if state_dir.exists() and not state_dir.is_dir():
        raise CheckpointError(
            f"--state {state_dir} is not a directory",
            hint="pass a directory for --state (it is created when missing)",
        )
    for name in names:
        path = state_dir / name
        if path.exists() and not path.is_file():
            what = "a directory" if path.is_dir() else "not a regular file"
            raise CheckpointError(
                f"{path} is {what}, where the importer keeps a file",
                hint="move it out of the way, or pass another --state directory",
            )


_HINTS = {
    errno.EACCES: "give this user read and write access to it, or pass another --state directory",
    errno.EPERM: "give this user read and write access to it, or pass another --state directory",
    errno.EROFS: "the disk is read-only: pass a --state directory on a writable one",
    errno.ENOSPC: "free some disk space, then run the same command again",
    errno.EDQUOT: "free some disk space, then run the same command again",
    errno.EISDIR: "move that directory out of the way, or pass another --state directory",
    errno.ENOTDIR: "a file stands where a directory belongs: pass another --state directory",
    errno.EEXIST: "a file stands where a directory belongs: pass another --state directory",
}


def unusable_state(state_dir: Path, exc: OSError) -> CheckpointError:
    """Say which path of the state directory the OS refused, and why, without a traceback."""
    named = exc.filename is not None and str(exc.filename) != str(state_dir)
    where = f"{exc.filename}: " if named else ""
    if exc.filename2:
        where = f"{exc.filename} -> {exc.filename2}: "
    reason = (exc.strerror or str(exc)).lower()
    return CheckpointError(
        f"cannot use the state directory {state_dir}: {where}{reason}",
        hint=_HINTS.get(exc.errno or 0, "pass another --state directory"),
    )
