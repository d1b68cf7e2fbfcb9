"""The checkpoint log: round trips, resuming, crashes at any byte, corruption, job binding, lock."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from importer.errors import CheckpointError, MappingError
from importer.inputs.reader import open_input
from importer.state import records
from importer.state.checkpoint import CheckpointLog
from importer.state.facts import RunIdentity
from importer.state.layout import CORRUPT_NAME, LOCK_NAME, LOG_NAME, PREV_NAME
from importer.state.status import read_status

JOB = RunIdentity(mapping_fingerprint="m1", destination="vero", endpoint="embedded")
FP = "f" * 32


def done_lines(log: CheckpointLog, upto: int, fingerprint: str = FP) -> set[int]:
    """Every line in 0..upto the log says is done, read through the vectorised query."""
    lines = pl.Series("line", range(upto + 1))
    return set(lines.filter(log.done_mask(fingerprint, lines)).to_list())


def write_log(state: Path, batches: list[list[int]]) -> None:
    """A log with one `done` record per batch."""
    with CheckpointLog.open(state, job=JOB) as log:
        log.register_input("events.csv", FP)
        for batch in batches:
            for line in batch:
                log.mark_done(FP, line)
            log.sync()


def test_round_trip(tmp_path: Path) -> None:
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("events.csv", FP)
        for line in (2, 3, 4, 7):
            log.mark_done(FP, line)
        log.mark_failed(FP, 5, 400, "bad email")
        assert log.is_done(FP, 3)  # visible before sync: it was acknowledged
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        assert log.warnings == []
        assert done_lines(log, 10) == {2, 3, 4, 5, 7}
        assert (log.delivered_count(FP), log.failed_count(FP)) == (4, 1)
        assert not log.is_done(FP, 6)
        assert not log.is_done("other", 2)
        assert log.done_mask("other", pl.Series([1, 2])).to_list() == [False, False]


def test_out_of_order_lines_with_gaps(tmp_path: Path) -> None:
    rng = random.Random(7)
    expected = set(rng.sample(range(1, 5000), 3000))
    order = list(expected)
    rng.shuffle(order)
    write_log(tmp_path, [order[i : i + 250] for i in range(0, len(order), 250)])
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        assert done_lines(log, 5100) == expected
        assert log.delivered_count(FP) == len(expected)
        assert all(log.is_done(FP, x) == (x in expected) for x in range(5100))


def test_done_mask_keeps_name_and_treats_null_as_not_done(tmp_path: Path) -> None:
    write_log(tmp_path, [[3, 4]])
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        mask = log.done_mask(FP, pl.Series("_line", [4, None, 3, 9], dtype=pl.Int32))
    assert mask.name == "_line"
    assert mask.to_list() == [True, False, True, False]


def test_marking_a_line_twice_counts_once(tmp_path: Path) -> None:
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("events.csv", FP)
        log.mark_done(FP, 3)
        log.mark_done(FP, 3)
        log.sync()
        log.mark_done(FP, 3)
        log.mark_failed(FP, 3, 500, "late failure of a delivered row")
    assert read_status(tmp_path).inputs[0].delivered == 1
    assert read_status(tmp_path).inputs[0].failed == 0


def test_resume_sends_each_row_exactly_once(tmp_path: Path) -> None:
    """Fail at row N with acks finishing out of order, resume, and count deliveries per row."""
    rows = [line for line in range(2, 400) if line % 13]  # gaps: blank lines, rejects
    sent: list[int] = []

    def run(fail_after: int | None) -> None:
        with CheckpointLog.open(tmp_path, job=JOB) as log:
            log.register_input("events.csv", FP)
            todo = pl.Series("line", rows)
            todo = todo.filter(~log.done_mask(FP, todo)).to_list()
            for start in range(0, len(todo), 8):
                window = todo[start : start + 8][::-1]  # acks arrive out of order
                for line in window:
                    if fail_after is not None and len(sent) == fail_after:
                        raise KeyboardInterrupt
                    sent.append(line)
                    log.mark_done(FP, line)
                if start % 40 == 0:
                    log.sync()

    with pytest.raises(KeyboardInterrupt):
        run(fail_after=123)
    run(fail_after=None)
    assert sorted(sent) == rows


def test_torn_tail_at_every_cut_point(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_log(source, [[2, 3, 4], [5, 6, 8], [9, 10, 20]])
    data = (source / LOG_NAME).read_bytes()
    last = data.rindex(b"\n", 0, len(data) - 1) + 1  # the last record starts here
    for cut in range(last, len(data)):
        state = tmp_path / f"cut{cut}"
        state.mkdir()
        (state / LOG_NAME).write_bytes(data[:cut])
        with CheckpointLog.open(state, job=JOB) as log:
            assert len(log.warnings) == (0 if cut == last else 1), cut
            assert done_lines(log, 30) == {2, 3, 4, 5, 6, 8}, cut
            log.mark_done(FP, 11)
        with CheckpointLog.open(state, job=JOB) as log:
            assert log.warnings == [], cut
            assert done_lines(log, 30) == {2, 3, 4, 5, 6, 8, 11}, cut
        assert not (state / CORRUPT_NAME).exists()


BATCHES = [list(range(10 * i + 2, 10 * i + 7)) for i in range(30)]  # 5 rows each, then a gap


def record_starts(data: bytes) -> list[int]:
    """Where each record of a log starts."""
    return [0] + [i + 1 for i, byte in enumerate(data[:-1]) if byte == ord("\n")]


def flip(path: Path, offset: int) -> bytes:
    """Flip one bit of a file at `offset`, and return what the file now holds."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize(
    ("where", "counted"),
    [
        pytest.param("time", "about 5 (counted from unverified content)", id="time"),
        pytest.param("crc", "about 5 (counted from unverified content)", id="crc"),
        pytest.param("brace", "how many is unknown", id="unreadable-json"),
        pytest.param("newline", "about 5 (counted from unverified content)", id="newline"),
    ],
)
def test_a_flipped_byte_in_the_middle_resends_only_that_record(
    tmp_path: Path, where: str, counted: str
) -> None:
    write_log(tmp_path, BATCHES)
    path = tmp_path / LOG_NAME
    data = path.read_bytes()
    start = record_starts(data)[2 + 12]  # after the job and input records: batch 12's `done`
    # A digit of the time stays a digit, the opening brace turns into 'z', and the newline
    # into a vertical tab that joins the next record to this one.
    offset = {
        "time": data.index(b'"at":', start) + 6,
        "crc": start + 3,
        "brace": start + 9,
        "newline": data.index(b"\n", start),
    }[where]
    data = flip(path, offset)
    expected = {line for batch in BATCHES for line in batch} - set(BATCHES[12])

    status = read_status(tmp_path)
    assert status.inputs[0].delivered == len(expected)
    [warning] = status.warnings
    assert "is corrupt: skipped 1 damaged record, kept 31 good records" in warning
    assert counted in warning
    assert path.read_bytes() == data  # status is read-only

    with CheckpointLog.open(tmp_path, job=JOB) as log:
        [warning] = log.warnings
        assert "skipped 1 damaged record, kept 31 good records" in warning
        assert counted in warning
        assert f"a copy of the damaged log is in {tmp_path / CORRUPT_NAME}" in warning
        assert done_lines(log, 400) == expected
        log.mark_done(FP, 400)
    assert (tmp_path / CORRUPT_NAME).read_bytes() == data
    assert read_status(tmp_path).warnings == ()  # rewritten: the warning is not repeated
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        assert log.warnings == []
        assert done_lines(log, 400) == expected | {400}


def test_a_log_read_again_unchanged_is_not_decoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_log(tmp_path, BATCHES)
    path = tmp_path / LOG_NAME
    decoded: list[bytes] = []
    real = records._decode
    monkeypatch.setattr(records, "_decode", lambda raw: decoded.append(raw) or real(raw))
    first, _ = records.load_log(path)
    assert len(decoded) == len(record_starts(path.read_bytes()))
    decoded.clear()
    second, damage = records.load_log(path)
    assert (decoded, damage) == ([], None)
    assert second is not first
    assert second.by_fp[FP].lines.count == first.by_fp[FP].lines.count == 150
    second.by_fp.clear()  # the caller owns its copy: the next reader is not affected
    assert records.load_log(path)[0].by_fp[FP].lines.count == 150


def test_a_log_changed_in_place_is_read_anew(tmp_path: Path) -> None:
    """A damaged byte rewritten within the same size (and, as fast as this, the same mtime) is
    seen: the log is known by its content, not its size and time."""
    write_log(tmp_path, BATCHES)
    path = tmp_path / LOG_NAME
    assert records.load_log(path)[1] is None
    flip(path, record_starts(path.read_bytes())[2 + 12] + 9)
    state, damage = records.load_log(path)
    assert damage is not None
    assert damage.in_middle
    assert state.by_fp[FP].lines.count == 145
    with CheckpointLog.open(tmp_path, job=JOB) as log:  # appends after the rewrite are seen
        log.mark_done(FP, 400)
    assert records.load_log(path)[0].by_fp[FP].lines.count == 146


def test_a_damaged_input_record_resends_that_inputs_rows(tmp_path: Path) -> None:
    other = "u" * 32
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("events.csv", FP)
        log.register_input("users.csv", other)
        for batch in BATCHES[:10]:
            for line in batch:
                log.mark_done(FP, line)
                log.mark_done(other, line)
            log.sync()
        log.mark_failed(FP, 500, 400, "bad email")
    path = tmp_path / LOG_NAME
    data = path.read_bytes()
    flip(path, data.index(FP.encode()))  # the fingerprint still reads as JSON, but not as FP

    status = read_status(tmp_path)
    assert [i.name for i in status.inputs] == ["users.csv"]
    [warning] = status.warnings
    assert "skipped 1 damaged record and 11 records that depended on it" in warning
    assert "about 51 (counted from unverified content)" in warning
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        assert log.warnings[0].startswith(f"{warning}; a copy of the damaged log is in")
        assert done_lines(log, 600) == set()
        assert done_lines(log, 400, other) == {line for b in BATCHES[:10] for line in b}
        log.register_input("events.csv", FP)
        log.mark_done(FP, 2)
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        assert log.warnings == []
        assert done_lines(log, 600) == {2}
        assert log.delivered_count(other) == 50


def test_middle_damage_and_a_torn_tail_are_dropped_together(tmp_path: Path) -> None:
    write_log(tmp_path, BATCHES[:5])
    path = tmp_path / LOG_NAME
    data = path.read_bytes()
    flip(path, record_starts(data)[3] + 9)
    path.write_bytes(path.read_bytes() + data[record_starts(data)[4] :][:20])
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        [warning] = log.warnings
        assert "skipped 2 damaged records, kept 6 good records" in warning
        assert "how many is unknown" in warning
        assert done_lines(log, 100) == {line for b in BATCHES[:5] for line in b} - set(BATCHES[1])
    assert path.read_bytes() == b"".join(
        line + b"\n" for i, line in enumerate(data.split(b"\n")[:-1]) if i != 3
    )


def test_a_good_record_that_does_not_apply_leaves_no_trace(tmp_path: Path) -> None:
    write_log(tmp_path, BATCHES[:3])
    path = tmp_path / LOG_NAME
    data = path.read_bytes()
    payload = b'{"t":"done","id":1,"at":"soon","ranges":[[100,105]]}'
    odd = b"%08x %s\n" % (zlib.crc32(payload), payload)  # its CRC holds, its time does not parse
    cut = record_starts(data)[3]
    path.write_bytes(data[:cut] + odd + data[cut:])
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        [warning] = log.warnings
        assert "skipped 1 damaged record, kept 5 good records" in warning
        assert "about 6 (counted from unverified content)" in warning
        assert done_lines(log, 200) == {line for b in BATCHES[:3] for line in b}
    assert path.read_bytes() == data


def test_a_damaged_job_record_is_refused_and_left_alone(tmp_path: Path) -> None:
    write_log(tmp_path, BATCHES[:3])
    path = tmp_path / LOG_NAME
    data = flip(path, path.read_bytes().index(b'"mapping"') + 3)
    assert read_status(tmp_path).warnings == (f"{path} has no readable job header",)
    with pytest.raises(CheckpointError, match="--fresh"):
        CheckpointLog.open(tmp_path, job=JOB)
    assert path.read_bytes() == data
    assert not (tmp_path / CORRUPT_NAME).exists()


def test_unreadable_header_is_refused(tmp_path: Path) -> None:
    (tmp_path / LOG_NAME).write_bytes(b"this is not a checkpoint log\n")
    with pytest.raises(CheckpointError, match="--fresh"):
        CheckpointLog.open(tmp_path, job=JOB)
    with CheckpointLog.open(tmp_path, job=JOB, fresh=True) as log:
        assert log.warnings == []


@pytest.mark.parametrize(
    ("other", "what"),
    [
        pytest.param(RunIdentity("m2", "vero", "embedded"), "mapping fingerprint", id="mapping"),
        pytest.param(RunIdentity("m1", "userpilot", "embedded"), "destination", id="destination"),
        pytest.param(RunIdentity("m1", "vero", "https://api.example"), "endpoint", id="endpoint"),
    ],
)
def test_other_job_is_refused(tmp_path: Path, other: RunIdentity, what: str) -> None:
    write_log(tmp_path, [[2]])
    with pytest.raises(CheckpointError, match="--fresh") as info:
        CheckpointLog.open(tmp_path, job=other)
    assert f"{what} differs" in str(info.value)
    with CheckpointLog.open(tmp_path, job=JOB) as log:  # the refusal left the state alone
        assert log.is_done(FP, 2)


def test_fresh_starts_over_and_sets_the_old_log_aside(tmp_path: Path) -> None:
    write_log(tmp_path, [[2, 3]])
    old = (tmp_path / LOG_NAME).read_bytes()
    other = RunIdentity("m2", "vero", "embedded")
    with CheckpointLog.open(tmp_path, job=other, fresh=True) as log:
        assert not log.is_done(FP, 2)
        assert log.delivered_count(FP) == 0
    assert (tmp_path / PREV_NAME).read_bytes() == old
    assert read_status(tmp_path).job == other


def test_renamed_input_keeps_its_progress(tmp_path: Path) -> None:
    write_log(tmp_path, [[2, 3]])
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("renamed.csv", FP)
        assert log.is_done(FP, 3)
    assert [i.name for i in read_status(tmp_path).inputs] == ["renamed.csv"]


def test_an_inputs_fingerprint_follows_content_not_name(tmp_path: Path) -> None:
    first = tmp_path / "a.csv"
    first.write_bytes(b"id\n" + b"x\n" * (3 << 20) + b"tail\n")  # several read chunks
    fingerprint = open_input(first).fingerprint
    renamed = first.rename(tmp_path / "b.csv")
    assert open_input(renamed).fingerprint == fingerprint
    renamed.write_bytes(b"id\n" + b"x\n" * (3 << 20) + b"tall\n")
    assert open_input(renamed).fingerprint != fingerprint


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for a directory), bar the lock file."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in root.rglob("*")
        if not (p.name == LOCK_NAME and p.is_file())
    }


def state_is_a_file(root: Path) -> Path:
    (root / "state").write_text("notes\n")
    return root / "state"


def state_is_under_a_file(root: Path) -> Path:
    return state_is_a_file(root) / "sub"


def a_directory_at(
    name: str, *, log: bool = False, damaged: bool = False
) -> Callable[[Path], Path]:
    """Set up a state directory with a directory where the file `name` belongs."""

    def setup(root: Path) -> Path:
        state = root / "state"
        if log:
            write_log(state, BATCHES[:3])
        if damaged:
            flip(state / LOG_NAME, record_starts((state / LOG_NAME).read_bytes())[3] + 9)
        (state / name).mkdir(parents=True)
        (state / name / "keep.txt").write_text("mine\n")
        return state

    return setup


@pytest.mark.parametrize(
    ("setup", "fresh", "message"),
    [
        pytest.param(state_is_a_file, False, "--state {state} is not a directory", id="state-file"),
        pytest.param(
            state_is_under_a_file,
            False,
            "cannot use the state directory {state}: not a directory",
            id="state-under-file",
        ),
        pytest.param(
            a_directory_at(LOG_NAME), False, "{state}/checkpoint.log is a directory", id="log-dir"
        ),
        pytest.param(
            a_directory_at(LOG_NAME),
            True,
            "{state}/checkpoint.log is a directory",
            id="log-dir-fresh",
        ),
        pytest.param(
            a_directory_at(LOCK_NAME), False, "{state}/lock is a directory", id="lock-dir"
        ),
        pytest.param(
            a_directory_at(PREV_NAME, log=True),
            True,
            "{state}/checkpoint.prev.log is a directory",
            id="prev-dir",
        ),
        pytest.param(
            a_directory_at(CORRUPT_NAME, log=True, damaged=True),
            False,
            "{state}/checkpoint.corrupt.log is a directory",
            id="corrupt-copy-dir",
        ),
        pytest.param(
            a_directory_at(LOG_NAME + ".tmp"),
            False,
            "cannot use the state directory {state}: {state}/checkpoint.log.tmp: is a directory",
            id="new-log-tmp-dir",
        ),
        pytest.param(
            a_directory_at(CORRUPT_NAME + ".tmp", log=True, damaged=True),
            False,
            "cannot use the state directory {state}: {state}/checkpoint.corrupt.log.tmp: is a dir",
            id="corrupt-copy-tmp-dir",
        ),
    ],
)
def test_an_unusable_state_directory_is_one_clear_error(
    tmp_path: Path, setup: Callable[[Path], Path], fresh: bool, message: str
) -> None:
    state = setup(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError) as info:
        CheckpointLog.open(state, job=JOB, fresh=fresh)
    assert str(info.value).startswith(message.format(state=state))
    assert info.value.hint
    assert snapshot(tmp_path) == before  # nothing lost, nothing moved


@pytest.mark.parametrize(
    ("name", "code", "reason"),
    [
        pytest.param(LOCK_NAME, errno.EROFS, "read-only file system", id="read-only"),
        pytest.param(LOG_NAME, errno.EACCES, "permission denied", id="permission-denied"),
    ],
)
def test_a_state_directory_the_os_refuses_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, code: int, reason: str
) -> None:
    """Root ignores permission bits, so the refusal is staged at the system call."""
    write_log(tmp_path, BATCHES[:3])
    before = snapshot(tmp_path)
    real_open = os.open

    def refuse(path: str | Path, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path) == tmp_path / name and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(CheckpointError) as info:
        CheckpointLog.open(tmp_path, job=JOB)
    monkeypatch.undo()
    path = tmp_path / name
    assert str(info.value) == f"cannot use the state directory {tmp_path}: {path}: {reason}"
    assert "--state" in str(info.value.hint)
    assert snapshot(tmp_path) == before
    CheckpointLog.open(tmp_path, job=JOB).close()  # the failed open released the lock


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param(state_is_a_file, "--state {state} is not a directory", id="state-file"),
        pytest.param(
            a_directory_at(LOG_NAME), "{state}/checkpoint.log is a directory", id="log-dir"
        ),
    ],
)
def test_status_of_an_unusable_state_directory_is_one_clear_error(
    tmp_path: Path, setup: Callable[[Path], Path], message: str
) -> None:
    state = setup(tmp_path)
    with pytest.raises(CheckpointError) as info:
        read_status(state)
    assert str(info.value).startswith(message.format(state=state))


def test_lock_refuses_a_second_run(tmp_path: Path) -> None:
    first = CheckpointLog.open(tmp_path, job=JOB)
    with pytest.raises(CheckpointError, match=f"another importer run is using {tmp_path}$"):
        CheckpointLog.open(tmp_path, job=JOB)
    first.close()
    CheckpointLog.open(tmp_path, job=JOB).close()  # released on close


def test_unregistered_input_and_credentials_in_endpoint_are_rejected(tmp_path: Path) -> None:
    with (
        CheckpointLog.open(tmp_path, job=JOB) as log,
        pytest.raises(ValueError, match="registered"),
    ):
        log.mark_done(FP, 2)
    with pytest.raises(MappingError, match="credentials"):
        RunIdentity("m1", "vero", "https://user:secret@api.example")


def test_read_status(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint log"):
        read_status(tmp_path)
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        log.register_input("users.csv", "u" * 32)
        log.register_input("events.csv", FP)
        for line in range(2, 12):
            log.mark_done(FP, line)
        for line in range(12, 20):
            log.mark_failed(FP, line, 400, f"bad row {line}")
        log.mark_failed(FP, 20, None, "connection reset\nafter 5 attempts")
    status = read_status(tmp_path)
    assert status.job == JOB
    assert status.created_at is not None
    assert status.warnings == ()
    users, events = status.inputs
    assert (users.name, users.delivered, users.failed, users.updated_at) == (
        "users.csv",
        0,
        0,
        None,
    )
    assert (events.name, events.fingerprint, events.delivered, events.failed) == (
        "events.csv",
        FP,
        10,
        9,
    )
    assert events.updated_at is not None
    assert 0 < len(events.failures) < 9
    assert (events.failures[0].line, events.failures[0].status) == (12, 400)
    assert events.failures[0].error == "bad row 12"


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from importer.state.checkpoint import CheckpointLog, RunIdentity

    job = RunIdentity("m1", "vero", "embedded")
    log = CheckpointLog.open(Path(sys.argv[1]), job=job)
    log.register_input("events.csv", sys.argv[2])
    count = 0
    for start in range(0, 10_000_000, 300):
        # gappy, out of order within each group, as concurrent acks are
        for line in reversed(range(start, start + 300, 3)):
            log.mark_done(sys.argv[2], line)
        log.sync()
        count += 100
        print(count, flush=True)
    """
)


def test_survives_sigkill_at_any_moment(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-c", CHILD, str(tmp_path), FP]
    with subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True) as child:
        assert child.stdout is not None
        synced = 0
        for reported in child.stdout:
            synced = int(reported)
            if synced >= 3000:
                break
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert synced >= 3000
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        count = log.delivered_count(FP)
        # Every reported row is done, and what is done is exactly a prefix of whole syncs.
        assert count >= synced
        assert count % 100 == 0
        assert done_lines(log, count * 3 + 600) == set(range(0, count * 3, 3))
        log.mark_done(FP, 1)
    with CheckpointLog.open(tmp_path, job=JOB) as log:
        assert log.warnings == []
        assert log.delivered_count(FP) == count + 1
