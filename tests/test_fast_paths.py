"""The short ways the dry run takes on common input, each checked against the general way.

A CSV without quotes or lone CRs is profiled by Polars string expressions instead of Python's
csv module; a time in the UTC `...Z` form skips the ISO regex; CSV batches are read one ahead in
a thread and a dry run's lines written in another. Each must give exactly what the general way
gives, and must actually be taken.
"""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pipeline_helpers import ROOT

from importer.checks import times
from importer.inputs import bytescan, common, delimited
from importer.inputs import reader as read
from importer.jsontext import json_as_text, json_kind, json_object
from importer.mapping.file import load_mapping
from importer.pipeline import run as job

PROFILE_FIELDS = (
    "header",
    "columns",
    "records",
    "bad_records",
    "blank_records",
    "chunk_offsets",
    "column_kinds",
)
CELLS = ["", "1", "-2", "007", "1.5", "1e5", "true", "x", " ", "a b", "9223372036854775808", "é"]


def random_plain_csv(rng: random.Random, separator: str) -> str:
    """Quote-free text with ragged, blank and whitespace records, CRLF or LF, maybe a BOM."""
    width = rng.randint(1, 4)
    lines = [separator.join(f"c{index}" for index in range(width))]
    for _ in range(rng.randint(0, 40)):
        roll = rng.random()
        if roll < 0.1:
            lines.append("")
        else:
            count = width if roll < 0.8 else rng.randint(1, width + 2)
            lines.append(separator.join(rng.choice(CELLS) for _ in range(count)))
    end = rng.choice(["\n", "\r\n"])
    text = end.join(lines) + rng.choice(["", end, end + end])
    return ("\ufeff" if rng.random() < 0.2 else "") + text


def test_a_plain_csv_is_profiled_as_pythons_csv_module_profiles_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny slices and pieces, so that offsets and piece edges fall everywhere.
    monkeypatch.setattr(common, "CHUNK_RECORDS", 3)
    monkeypatch.setattr(delimited, "PLAIN_PIECE_BYTES", 40)
    record_pass = delimited._check_records
    passes: list[Path] = []

    def counting(path: Path, separator: str, encoding: str = "") -> Any:
        passes.append(path)
        return record_pass(path, separator, encoding)

    monkeypatch.setattr(delimited, "_check_records", counting)
    rng = random.Random(20261201)
    for case in range(40):
        separator = rng.choice([",", "\t"])
        path = tmp_path / f"case{case}.{'csv' if separator == ',' else 'tsv'}"
        text = random_plain_csv(rng, separator)
        path.write_bytes(text.encode())
        passes.clear()
        fast = read.open_input(path)
        assert fast.plain, text
        # A blank first line is the only plain text left to the record pass (for its message).
        assert passes == ([path] if text.lstrip("\ufeff").startswith(("\n", "\r")) else [])
        general = delimited.profile_csv(replace(fast, plain=False))
        assert {name: getattr(fast, name) for name in PROFILE_FIELDS} == {
            name: getattr(general, name) for name in PROFILE_FIELDS
        }, text
        batches = list(read.iter_batches(fast, batch_rows=2))
        again = list(read.iter_batches(general, batch_rows=2))
        assert [(b.frame.to_dicts(), b.rejects.to_dicts(), b.blank_lines) for b in batches] == [
            (b.frame.to_dicts(), b.rejects.to_dicts(), b.blank_lines) for b in again
        ], text


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        pytest.param("a,b\n1,2\n", True, id="lf"),
        pytest.param("a,b\r\n1,2\r\n", True, id="crlf"),
        pytest.param('a,b\n"1",2\n', False, id="quote"),
        pytest.param("a,b\n1\r2,3\n", False, id="lone-cr"),
        pytest.param("a,b\n1,2\r", False, id="cr-at-the-end"),
    ],
)
def test_only_text_without_quotes_or_lone_crs_is_plain(
    tmp_path: Path, text: str, plain: bool
) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(text.encode())
    found = bytescan.scan_bytes(path).plain
    assert found is plain


def time_frame(texts: list[str | None]) -> pl.DataFrame:
    """A frame as validation hands it to parse_times: JSON text, plain text and kind."""
    frame = pl.DataFrame(
        {"__line": range(len(texts)), "t": texts}, schema_overrides={"t": pl.String}
    )
    return frame.with_columns(
        json_as_text(pl.col("t")).alias(times.text_of("t")),
        json_kind(pl.col("t")).alias(times.kind_of("t")),
    )


TIMES = [
    '"2022-01-01T00:00:00Z"',
    '"2022-02-30T00:00:00Z"',  # not a date: the general way words it
    '"2022-01-01T00:00:60Z"',  # strptime would take it as the next minute
    '"2022-1-1T00:00:00Z"',  # strptime would take unpadded fields
    '"2030-06-01T12:00:00Z"',  # in the future
    '" 2022-01-01T00:00:00Z"',
    '"2022-01-01 10:00:00"',
    '"2022-03-27T02:30:00"',  # a daylight-saving gap in Berlin
    "1700000000",
    "true",
    None,
    '""',
]


# Vero's and Userpilot's formats, cut from the text on the short way; the last, strftime's.
@pytest.mark.parametrize(
    "time_format", ["%Y-%m-%dT%H:%M:%S+0000", "%Y-%m-%dT%H:%M:%S%.3fZ", "%d/%m/%Y %H:%M"]
)
@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin"])
def test_times_in_the_utc_z_form_take_the_short_way_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch, timezone: str, time_format: str
) -> None:
    rng = random.Random(5)
    general = times._parse_any
    seen: list[pl.LazyFrame] = []

    def spy(work: pl.LazyFrame, column: str, **options: Any) -> pl.LazyFrame:
        seen.append(work)
        return general(work, column, **options)

    monkeypatch.setattr(times, "_parse_any", spy)
    options: dict[str, Any] = {
        "timezone": timezone,
        "unit_ms": pl.lit(False),
        "now": datetime(2025, 1, 1, tzinfo=UTC),
        "required": True,
        "time_format": time_format,
    }
    for _ in range(40):
        texts = [rng.choice(TIMES) for _ in range(rng.randint(1, 12))]
        frame = time_frame(texts).lazy()
        slow = times.parse_times(frame, "t", quick=False, **options).collect()
        seen.clear()
        got = times.parse_times(frame, "t", **options).collect()
        # The epoch unit is the general way's alone: the short way's rows never read it.
        epoch = times.epoch_of("t")
        assert got.drop(epoch).equals(slow.drop(epoch)), texts
        quick = [t for t in texts if t in (TIMES[0], TIMES[4])]
        # Only what is not in the UTC Z form (or not a real time) goes the general way.
        assert sum(part.collect().height for part in seen) == len(texts) - len(quick), texts


def test_a_nested_object_evaluates_its_members_once() -> None:
    inner = json_object([("id", pl.col("x"))])
    outer = json_object([("identity", inner), ("event", pl.col("y"))])
    # pl.when(inner != "").then(...) named each member twice, and twice again per level.
    assert str(outer).count('col("x")') == 1
    frame = pl.DataFrame({"x": ['"a"', None], "y": [None, None]})
    assert frame.select(outer).to_series().to_list() == ['{"identity":{"id":"a"}}', None]


def test_csv_batches_are_read_ahead_in_a_thread_that_ends_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n" + "".join(f"{i},x\n" for i in range(30)))
    source = read.open_input(path)
    made_in: list[str] = []
    original = read.iter_csv

    def tracing(*args: Any) -> Any:
        for batch in original(*args):
            made_in.append(threading.current_thread().name)
            yield batch

    monkeypatch.setattr(read, "iter_csv", tracing)
    batches = read.iter_batches(source, batch_rows=4)
    first = next(batches)
    assert first.frame["a"].to_list() == ["0", "1", "2", "3"]
    batches.close()  # type: ignore[attr-defined]
    assert made_in
    assert all(name.startswith("importer-read") for name in made_in)
    assert not [t for t in threading.enumerate() if t.name.startswith("importer-read")]


def test_a_dry_run_writes_its_lines_in_a_thread_and_raises_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "user_id,email,event,occurred_at\n"
        + "".join(f"u{i},u{i}@example.com,Bought,2023-05-30T10:00:{i:02d}Z\n" for i in range(5))
    )
    options = job.RunOptions(
        inputs=(path,), mapping=load_mapping(ROOT / "schemas" / "vero-track.toml"), batch_rows=2
    )
    out = tmp_path / "out.jsonl"
    written_by: list[str] = []
    original = job._write_lines

    def tracing(*args: Any) -> None:
        written_by.append(threading.current_thread().name)
        original(*args)

    monkeypatch.setattr(job, "_write_lines", tracing)
    job.dry_run(options, out=out)
    lines = out.read_text().splitlines()
    assert [line.count('"line":') for line in lines] == [1] * 5
    assert lines[0].startswith('{"method":"POST","path":"events/track","body":{')
    assert len(written_by) == 3
    assert all(name.startswith("importer-out") for name in written_by)

    def failing(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(job, "_write_lines", failing)
    with pytest.raises(OSError, match="No space left"):
        job.dry_run(options, out=out)
