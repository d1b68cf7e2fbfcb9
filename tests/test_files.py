"""Whole files are replaced atomically; an output that cannot be written is an OutputError."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from importer.errors import OutputError
from importer.files import open_output, write_atomic
from importer.outcome import Summary, write_report
from importer.pipeline.outputs import check_outputs


def _pieces_then_failure() -> Iterator[bytes]:
    yield b"new, first half"
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("temp", [None, "kept.json.tmp"], ids=["unique-temp", "fixed-temp"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(
    tmp_path: Path, temp: str | None
) -> None:
    path = tmp_path / "kept.json"
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, _pieces_then_failure(), temp=tmp_path / temp if temp else None)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.json"]


@pytest.mark.parametrize("temp", [None, "kept.json.tmp"], ids=["unique-temp", "fixed-temp"])
def test_a_whole_write_replaces_the_file_with_every_piece(tmp_path: Path, temp: str | None) -> None:
    path = tmp_path / "kept.json"
    path.write_bytes(b"old")
    write_atomic(path, iter([b"new, ", b"whole"]), temp=tmp_path / temp if temp else None)
    write_atomic(tmp_path / "sub" / "one.bin", b"bytes")
    assert path.read_bytes() == b"new, whole"
    assert (tmp_path / "sub" / "one.bin").read_bytes() == b"bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.json", "sub"]


def test_a_report_that_cannot_be_written_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    report = tmp_path / "a-file" / "report.json"
    with pytest.raises(OutputError, match=re.escape(f"cannot write {report}: ")):
        write_report(report, Summary())
    target = tmp_path / "report.json"
    write_report(target, Summary(rows_read=3))
    assert json.loads(target.read_text())["rows_read"] == 3


def test_an_output_that_cannot_be_opened_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutputError, match=r"cannot write .*rejects\.csv: "):
        open_output(tmp_path / "a-file" / "rejects.csv", "w")


def test_an_output_onto_an_input_is_an_output_error(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("id\n1\n")
    with pytest.raises(OutputError, match=r"--report .* is also an input of this job"):
        check_outputs({"--report": events}, inputs=[events])
