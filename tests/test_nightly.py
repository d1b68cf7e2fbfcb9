"""Nightly loads send only what is new: a renamed file is not new, a grown file sends its new
rows only, a changed file is reported and skipped (or sent again with --resend-changed); checked
at one mock server over three nights."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from pipeline_helpers import ROOT, mock_server_process

from importer.cli.app import main
from importer.inputs.reader import open_input
from importer.state.facts import InputFacts, RunIdentity
from importer.state.status import read_status

TRACK = str(ROOT / "schemas" / "vero-track.toml")
TOKEN = "nightly-test-token"
HEADER = "row_id,user_id,email,event,occurred_at\n"


def rows(first: int, last: int) -> str:
    """CSV rows first..last: each its own row id, user and second, so none is a duplicate."""
    return "".join(
        f"{i},u{i},u{i}@example.com,Viewed,2024-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:"
        f"{i % 60:02d}Z\n"
        for i in range(first, last + 1)
    )


@dataclass
class Mock:
    url: str
    record: Path
    seen: int = 0

    def new_ids(self) -> list[int]:
        """Row ids of the bodies received since the last call."""
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        fresh, self.seen = lines[self.seen :], len(lines)
        return sorted(int(json.loads(line)["data"]["row_id"]) for line in fresh)


@contextmanager
def mock_server(tmp_path: Path) -> Iterator[Mock]:
    """One `importer mock-server` for every night, in its own process; ended with the test."""
    record = tmp_path / "received.jsonl"
    options = ("--record", str(record), "--dedup-window", "0")
    with mock_server_process(*options, env={"VERO_AUTH_TOKEN": TOKEN}) as url:
        yield Mock(url=url, record=record)


def night(mock: Mock, folder: Path, state: Path, *extra: str) -> tuple[int, str]:
    """`importer run FOLDER` against the mock: the exit code and everything it said."""
    args = ["run", str(folder), "--mapping", TRACK, "--endpoint", mock.url, "--state", str(state)]
    result = CliRunner(env={"VERO_AUTH_TOKEN": TOKEN}).invoke(
        main, [*args, *extra], catch_exceptions=False
    )
    return result.exit_code, result.stdout + result.stderr


def test_three_nights_send_exactly_the_new_rows(tmp_path: Path) -> None:
    folder, state = tmp_path / "exports", tmp_path / "state"
    folder.mkdir()
    with mock_server(tmp_path) as mock:
        # Night 1: two new files.
        (folder / "a.csv").write_text(HEADER + rows(1, 5))
        (folder / "b.csv").write_text(HEADER + rows(101, 104))
        code, said = night(mock, folder, state)
        assert code == 0, said
        assert mock.new_ids() == [*range(1, 6), *range(101, 105)]

        # Night 2: a.csv renamed (not new), b.csv grown (its new rows only), c.csv new.
        (folder / "a.csv").rename(folder / "a2.csv")
        with (folder / "b.csv").open("a") as f:
            f.write(rows(105, 107))
        (folder / "c.csv").write_text(HEADER + rows(201, 206))
        code, said = night(mock, folder, state)
        assert code == 0, said
        assert mock.new_ids() == [*range(105, 108), *range(201, 207)]

        # Night 3: c.csv changed in its middle (not a growth): reported, nothing of it sent.
        changed = HEADER + rows(201, 203) + rows(301, 301) + rows(205, 206)
        (folder / "c.csv").write_text(changed)
        (folder / "d.csv").write_text(HEADER + rows(401, 402))
        code, said = night(mock, folder, state)
        assert code == 3, said
        assert mock.new_ids() == [401, 402]
        assert f"{folder / 'c.csv'} changed since it was sent (6 rows of it were sent" in said
        assert "run again with --resend-changed" in said

        # The same night again: still reported, still nothing sent.
        code, said = night(mock, folder, state)
        assert (code, mock.new_ids()) == (3, [])

        # --resend-changed sends it, all of it, as a new input; then it is known.
        code, said = night(mock, folder, state, "--resend-changed")
        assert code == 0, said
        assert mock.new_ids() == [201, 202, 203, 205, 206, 301]
        code, said = night(mock, folder, state)
        assert (code, mock.new_ids()) == (0, []), said

    status = CliRunner().invoke(main, ["status", "--state", str(state), "--json"])
    assert status.exit_code == 0, status.output
    inputs = {item["name"]: item for item in json.loads(status.output)["inputs"]}
    a2, b = inputs[str(folder / "a2.csv")], inputs[str(folder / "b.csv")]
    assert a2["names"] == [str(folder / "a.csv"), str(folder / "a2.csv")]
    assert (a2["delivered"], a2["first_at"] is not None) == (5, True)
    grown = [item for item in inputs.values() if item["grew_from"] is not None]
    assert [(g["name"], g["delivered"], g["inherited"]) for g in grown] == [(b["name"], 3, 4)]
    text = CliRunner().invoke(main, ["status", "--state", str(state)]).output
    assert f"{folder / 'b.csv'}: 3 delivered, 0 failed" in text
    assert f"grew from content {b['grew_from'][:12]}: 4 rows taken over" in text
    assert f"seen as {folder / 'a.csv'}, {folder / 'a2.csv'}" in text


def test_a_gzip_file_that_grew_sends_its_new_rows_only(tmp_path: Path) -> None:
    folder, state = tmp_path / "exports", tmp_path / "state"
    folder.mkdir()
    with mock_server(tmp_path) as mock:
        (folder / "events.csv.gz").write_bytes(gzip.compress((HEADER + rows(1, 4)).encode()))
        assert night(mock, folder, state)[0] == 0
        assert mock.new_ids() == [1, 2, 3, 4]
        # Compressed again whole, as an export job does: the compressed bytes all differ.
        (folder / "events.csv.gz").write_bytes(gzip.compress((HEADER + rows(1, 7)).encode()))
        code, said = night(mock, folder, state)
        assert code == 0, said
        assert mock.new_ids() == [5, 6, 7]


@pytest.mark.parametrize(
    ("cut", "sent", "said"),
    [
        # The last line was complete but for its newline: the same row, not sent again.
        pytest.param(0, [4], "", id="newline-came-later"),
        # The last line was cut short and goes on: that row is sent again, complete.
        pytest.param(2, [3, 4], "line 4 had no newline when it was sent", id="line-went-on"),
    ],
)
def test_a_last_line_without_its_newline(
    tmp_path: Path, cut: int, sent: list[int], said: str
) -> None:
    folder, state = tmp_path / "exports", tmp_path / "state"
    folder.mkdir()
    # A last column any text fills: row 3 cut short in it is still a valid row.
    full = "".join(f"{line},note{i}\n" for i, line in enumerate(rows(1, 4).splitlines(), 1))
    text = HEADER.replace("\n", ",note\n") + full
    first = text[: text.index("note3") + 5 - cut]
    with mock_server(tmp_path) as mock:
        (folder / "log.csv").write_text(first)
        assert night(mock, folder, state)[0] == 0
        assert mock.new_ids() == [1, 2, 3]
        (folder / "log.csv").write_text(text)
        code, output = night(mock, folder, state)
        assert (code, mock.new_ids()) == (0, sent), output
        assert said in output


def test_the_byte_pass_hashes_the_first_bytes_at_known_sizes(tmp_path: Path) -> None:
    old = (HEADER + rows(1, 3)).encode()
    (tmp_path / "old.csv").write_bytes(old)
    (tmp_path / "new.csv").write_bytes(old + rows(4, 4).encode())
    known = open_input(tmp_path / "old.csv")
    grown = open_input(tmp_path / "new.csv", probes=[known.size, 5, 10**9])
    assert grown.prefixes is not None
    assert grown.prefixes[known.size].fingerprint == known.fingerprint
    assert set(grown.prefixes) == {known.size, 5}  # not past the end
    assert open_input(tmp_path / "new.csv").prefixes is None


def test_an_old_log_without_sizes_still_reads(tmp_path: Path) -> None:
    """Input records from before nightly loads have no size or path: read as before."""
    from importer.state.checkpoint import CheckpointLog

    job = RunIdentity("m", "vero", "embedded")
    with CheckpointLog.open(tmp_path, job=job) as log:
        log.register_input("a.csv", "fp-a")
        log.mark_done("fp-a", 2)
    with CheckpointLog.open(tmp_path, job=job) as log:
        admission = log.admit("a.csv", "fp-b", InputFacts(10, "/x/a.csv"), {})
        assert admission.kind == "new"
    assert [item.delivered for item in read_status(tmp_path).inputs] == [1, 0]


def test_status_lists_each_file_with_what_was_sent(tmp_path: Path) -> None:
    """`importer status` text: names, counts, first and last time."""
    job = RunIdentity("m", "vero", "embedded")
    from importer.state.checkpoint import CheckpointLog

    with CheckpointLog.open(tmp_path, job=job) as log:
        log.register_input("a.csv", "fp-a", facts=InputFacts(10, "/x/a.csv"))
        log.mark_done("fp-a", 2)
    text = CliRunner().invoke(main, ["status", "--state", str(tmp_path)]).output
    assert "a.csv: 1 delivered, 0 failed, first " in text


def test_a_rotated_log_is_not_a_change(tmp_path: Path) -> None:
    """app.csv renamed to app.old.csv (after it in order) and a new app.csv started: the new
    one is new, not a change of the old one (files whose content is known are judged first)."""
    folder, state = tmp_path / "exports", tmp_path / "state"
    folder.mkdir()
    with mock_server(tmp_path) as mock:
        (folder / "app.csv").write_text(HEADER + rows(1, 3))
        assert night(mock, folder, state)[0] == 0
        assert mock.new_ids() == [1, 2, 3]
        (folder / "app.csv").rename(folder / "app.old.csv")
        (folder / "app.csv").write_text(HEADER + rows(11, 12))
        code, said = night(mock, folder, state)
        assert (code, mock.new_ids()) == (0, [11, 12]), said


def test_prefixes_read_again_for_an_input_opened_without_probes(tmp_path: Path) -> None:
    """A job file's steps open their inputs without the checkpoint's sizes: the prefixes at the
    sizes of the path's past contents are read again, to the same result."""
    from importer.inputs.bytescan import read_prefixes

    old = (HEADER + rows(1, 3)).encode()
    (tmp_path / "new.csv.gz").write_bytes(gzip.compress(old + rows(4, 4).encode()))
    probed = open_input(tmp_path / "new.csv.gz", probes=[len(old), 7])
    again = read_prefixes(open_input(tmp_path / "new.csv.gz"), [len(old), 7])
    assert again == probed.prefixes
    assert len(again) == 2


def rows_read(said: str) -> int:
    [line] = [line for line in said.splitlines() if line.strip().startswith("rows read")]
    return int(line.split()[-1])


def test_a_file_sent_whole_is_not_read_again(tmp_path: Path) -> None:
    """Issue 22: a night costs its new data. A file every row of which was handled, unchanged
    (size and fingerprint), is skipped without reading its rows; one with a rejected row is
    read again; one changed at the same size is never taken for the unchanged one."""
    folder, state = tmp_path / "exports", tmp_path / "state"
    folder.mkdir()
    with mock_server(tmp_path) as mock:
        (folder / "a.csv").write_text(HEADER + rows(1, 5))
        (folder / "b.csv").write_text(HEADER + rows(11, 12) + "13,,,Viewed,\n")  # 1 rejected
        code, said = night(mock, folder, state)
        assert code == 3, said
        assert (rows_read(said), mock.new_ids()) == (8, [1, 2, 3, 4, 5, 11, 12])

        (folder / "c.csv").write_text(HEADER + rows(21, 22))
        code, said = night(mock, folder, state)
        assert code == 3, said
        assert rows_read(said) == 3 + 2  # b (its reject again) and c: not a
        assert "1 input(s) known as sent whole before, unchanged" in said
        assert mock.new_ids() == [21, 22]

        # the same size, other content: a change, found by its fingerprint
        (folder / "a.csv").write_text(HEADER + rows(1, 4) + rows(9, 9))
        code, said = night(mock, folder, state)
        assert code == 3, said
        assert f"{folder / 'a.csv'} changed since it was sent" in said
        assert mock.new_ids() == []
