"""Inputs that hold the same rows are sent once (issue 23, point 1), and a file of which
nothing was sent is new content, not a changed one (point 3): for Vero's live track, Userpilot's
live track and its import_track jobs, against the mock server in its own process, counting what
the mock received."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from pipeline_helpers import ROOT, mock_server_process

from importer.cli.app import main

HEADER = "row_id,user_id,email,event,amount,occurred_at\n"
# mapping, the mock's options, the token's variable
DESTINATIONS = {
    "vero-track": ("vero-track.toml", ("--dedup-window", "0"), "VERO_AUTH_TOKEN"),
    "userpilot-track": (
        "userpilot-track.toml",
        ("--destination", "userpilot"),
        "USERPILOT_API_KEY",
    ),
    "userpilot-import-track": (
        "userpilot-import-track.toml",
        ("--destination", "userpilot", "--job-seconds", "0.05"),
        "USERPILOT_API_KEY",
    ),
}
TOKEN = "overlap-test-token-5d1e"


def rows(first: int, last: int, *, user: bool = True) -> str:
    """CSV rows first..last, each its own row id, user and second: no two alike; without a
    user (every row rejected) unless `user`."""
    return "".join(
        (f"{i},u{i},u{i}@example.com" if user else f"{i},,")
        + f",Viewed,{i},2024-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z\n"
        for i in range(first, last + 1)
    )


@dataclass
class Mock:
    url: str
    record: Path
    mapping: str
    token_env: str
    seen: int = 0

    def new_ids(self) -> Counter[int]:
        """Row ids of the bodies received since the last call, with how often each came."""
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        fresh, self.seen = lines[self.seen :], len(lines)
        ids: Counter[int] = Counter()
        for line in fresh:
            body = json.loads(line)
            data = body.get("data") or body.get("metadata") or {}
            ids[int(data["row_id"])] += 1
        return ids

    def night(self, state: Path, *inputs: Path | str, code: int = 0) -> str:
        """`importer run INPUTS` against the mock; the exit `code` is asserted."""
        args = ["run", *map(str, inputs), "--mapping", self.mapping, "--endpoint", self.url]
        args += ["--state", str(state), "--poll-interval", "0.05"]
        result = CliRunner(env={self.token_env: TOKEN}).invoke(main, args, catch_exceptions=False)
        said = result.stdout + result.stderr
        assert result.exit_code == code, said
        return said


@contextmanager
def mock_server(tmp_path: Path, destination: str) -> Iterator[Mock]:
    mapping, options, token_env = DESTINATIONS[destination]
    record = tmp_path / "received.jsonl"
    with mock_server_process("--record", str(record), *options, env={token_env: TOKEN}) as url:
        yield Mock(url, record, str(ROOT / "schemas" / mapping), token_env)


def once(first: int, last: int) -> Counter[int]:
    return Counter(range(first, last + 1))


@pytest.fixture(params=sorted(DESTINATIONS))
def mock(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mock]:
    with mock_server(tmp_path, request.param) as server:
        yield server


def test_two_copies_under_two_names_are_sent_once(tmp_path: Path, mock: Mock) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "a.csv").write_text(HEADER + rows(1, 30))
    (folder / "copy-of-a.csv").write_text(HEADER + rows(1, 30))
    # compressed, the same content is the same input
    (folder / "z.csv.gz").write_bytes(gzip.compress((HEADER + rows(1, 30)).encode()))
    said = mock.night(tmp_path / "state", folder)
    assert mock.new_ids() == once(1, 30)
    assert f"{folder / 'copy-of-a.csv'} holds the same rows as the start of" in said
    mock.night(tmp_path / "state", folder)
    assert mock.new_ids() == Counter()


def test_a_file_and_a_grown_copy_in_one_run(tmp_path: Path, mock: Mock) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "b.csv").write_text(HEADER + rows(1, 30))
    (folder / "a.csv").write_text(HEADER + rows(1, 45))  # b grown, named first
    mock.night(tmp_path / "state", folder)
    assert mock.new_ids() == once(1, 45)


def test_cumulative_snapshots_after_a_missed_night(tmp_path: Path, mock: Mock) -> None:
    folder, state = tmp_path / "exports", tmp_path / "state"
    folder.mkdir()
    (folder / "day1.csv").write_text(HEADER + rows(1, 20))
    mock.night(state, folder)
    assert mock.new_ids() == once(1, 20)
    # night 2 missed; night 3 finds day2 = day1 + 5 and day3 = day2 + 5
    (folder / "day2.csv").write_text(HEADER + rows(1, 25))
    (folder / "day3.csv").write_text(HEADER + rows(1, 30))
    mock.night(state, folder)
    assert mock.new_ids() == once(21, 30)
    (folder / "day4.csv").write_text(HEADER + rows(1, 35))
    mock.night(state, folder)
    assert mock.new_ids() == once(31, 35)
    # the snapshots that held day2's rows are gone: day2 is known as the start of them
    for name in ("day3.csv", "day4.csv"):
        (folder / name).unlink()
    mock.night(state, folder)
    assert mock.new_ids() == Counter()


def test_unrelated_files_with_the_same_rows_are_both_sent(tmp_path: Path, mock: Mock) -> None:
    """Rows are never matched one by one: the same rows in another order are another file."""
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "a.csv").write_text(HEADER + rows(1, 10))
    reordered = rows(1, 10).splitlines(keepends=True)[::-1]
    (folder / "b.csv").write_text(HEADER + "".join(reordered))
    # Vero's track warns that it would drop the second of each (exit 3): it is sent anyway
    mock.night(tmp_path / "state", folder, code=3 if "vero" in mock.mapping else 0)
    assert mock.new_ids() == Counter({i: 2 for i in range(1, 11)})


def test_a_fixed_file_of_which_nothing_was_sent_is_new(tmp_path: Path, mock: Mock) -> None:
    """Every row rejected (no user), the file fixed in place: its rows are sent, exit 0."""
    folder, state = tmp_path / "exports", tmp_path / "state"
    folder.mkdir()
    (folder / "a.csv").write_text(HEADER + rows(1, 5, user=False))
    mock.night(state, folder, code=3)
    assert mock.new_ids() == Counter()
    (folder / "a.csv").write_text(HEADER + rows(1, 5))
    mock.night(state, folder)
    assert mock.new_ids() == once(1, 5)


def test_a_prefix_is_found_past_the_first_block_and_of_a_file_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of 64 bytes: a prefix of several blocks is found by the block hashes, also when
    the longer file was not read again (only its first block's hash is known); a file of the
    same size that starts otherwise is not read again to learn that it is unrelated."""
    from dataclasses import replace

    from importer.inputs import common
    from importer.inputs.reader import open_input
    from importer.pipeline.overlaps import containers

    monkeypatch.setattr(common, "CHUNK_BYTES", 64)
    (tmp_path / "a.csv").write_text(HEADER + rows(1, 5))
    (tmp_path / "b.csv").write_text(HEADER + rows(1, 9))
    (tmp_path / "c.csv").write_text(HEADER + rows(101, 105))
    a, b, c = (open_input(tmp_path / name) for name in ("a.csv", "b.csv", "c.csv"))
    assert a.size > 3 * 64
    assert len(b.blocks) > len(a.blocks)
    assert containers([a, b, c]) == {0: [1], 1: [], 2: []}
    unread = replace(b, blocks=b.blocks[:1], whole_before=True, prefixes=None)
    assert containers([a, unread, c]) == {0: [1], 1: [], 2: []}

    def no_reading(*args: object) -> None:
        raise AssertionError("read again")

    monkeypatch.setattr("importer.pipeline.overlaps.read_prefixes", no_reading)
    assert containers([c, b]) == {0: [], 1: []}
