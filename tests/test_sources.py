"""Inputs where they live: gzip and zstd text read as streams, Parquet with its own types, and
directories and globs as inputs; a damaged file is one error with nothing sent."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import zstandard
from click.testing import CliRunner
from pipeline_helpers import ROOT

from importer.cli.app import main
from importer.errors import InputError
from importer.inputs.locate import expand_inputs
from importer.inputs.reader import iter_batches, open_input

TRACK = str(ROOT / "schemas" / "vero-track.toml")
EVENTS_CSV = ROOT / "samples" / "events.csv"
EVENTS_JSONL = ROOT / "samples" / "events.jsonl"
RECORD = "embedded-received.jsonl"  # what the embedded server received, in the state directory


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def dry_run(tmp_path: Path, *inputs: Path | str, name: str = "out.jsonl") -> list[dict[str, Any]]:
    """The payload lines a dry run of `inputs` writes (exit 0, or 3 for the samples' rejects)."""
    out = tmp_path / name
    code, _, err = invoke(
        "run", *map(str, inputs), "--schema", TRACK, "--dry-run", "--out", str(out)
    )
    assert code in (0, 3), err
    return [json.loads(line) for line in out.read_text().splitlines()]


def bodies(lines: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """Each payload's line and body: what is sent, without the file's name."""
    return [(line["source"]["line"], line["body"]) for line in lines]


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


# ------------------------------------------------------------------------------- compressed


@pytest.mark.parametrize("sample", [EVENTS_CSV, EVENTS_JSONL], ids=["csv", "jsonl"])
@pytest.mark.parametrize(
    ("ending", "compress"), [(".gz", gzip.compress), (".zst", zstd)], ids=["gzip", "zstd"]
)
def test_a_compressed_sample_sends_the_bodies_of_the_plain_one(
    tmp_path: Path, sample: Path, ending: str, compress: Any
) -> None:
    packed = tmp_path / f"{sample.name}{ending}"
    packed.write_bytes(compress(sample.read_bytes()))
    plain = bodies(dry_run(tmp_path, sample, name="plain.jsonl"))
    assert len(plain) > 300
    assert bodies(dry_run(tmp_path, packed)) == plain
    # Known by content: the same rows compressed are the same input.
    assert open_input(packed).fingerprint == open_input(sample).fingerprint


def test_a_quoted_compressed_csv_in_small_batches_reads_every_record(tmp_path: Path) -> None:
    """Quotes send a CSV through the csv-module passes, which seek: here they read on instead."""
    rows = "".join(f'u{i},"a, {i}",{i}\n' for i in range(25_000))
    text = f"user_id,note,n\n{rows}".encode()
    (tmp_path / "plain.csv").write_bytes(text)
    (tmp_path / "packed.csv.zst").write_bytes(zstd(text))
    plain = open_input(tmp_path / "plain.csv")
    packed = open_input(tmp_path / "packed.csv.zst")
    assert not packed.plain
    assert (packed.records, packed.compression) == (25_000, "zstd")
    frames = [batch.frame for batch in iter_batches(packed, batch_rows=5_000)]
    assert [frame.height for frame in frames] == [5_000] * 5
    assert pl.concat(frames).equals(pl.concat(b.frame for b in iter_batches(plain)))


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1 :]


def _late_damage_events(text_format: str) -> bytes:
    """Valid event rows, enough for many batches and blocks before the damage."""
    rows = [
        (f"u{i}", f"u{i}@example.com", "Login", f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z")
        for i in range(60_000)
    ]
    if text_format == "jsonl":
        names = ("user_id", "email", "event", "occurred_at")
        return "".join(
            json.dumps(dict(zip(names, row, strict=True))) + "\n" for row in rows
        ).encode()
    return (
        "user_id,email,event,occurred_at\n" + "".join(",".join(r) + "\n" for r in rows)
    ).encode()


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        pytest.param("in.csv.gz", lambda d: gzip.compress(d)[: len(gzip.compress(d)) * 9 // 10], id="gzip-truncated"),
        pytest.param("in.csv.gz", lambda d: _flip(gzip.compress(d), len(gzip.compress(d)) * 9 // 10), id="gzip-flipped"),
        pytest.param("in.csv.gz", lambda d: _flip(gzip.compress(d), len(gzip.compress(d)) - 6), id="gzip-crc"),
        pytest.param("in.csv.zst", lambda d: zstd(d)[: len(zstd(d)) * 9 // 10], id="zstd-truncated"),
        pytest.param("in.csv.zst", lambda d: _flip(zstd(d), len(zstd(d)) - 2), id="zstd-checksum"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("text_format", ["csv", "jsonl"])
def test_a_damaged_compressed_file_late_in_it_exits_1_and_sends_nothing(
    tmp_path: Path, name: str, damage: Any, text_format: str
) -> None:
    """The byte pass decompresses the whole file before any row is read: JSONL's profile
    reads only its first lines, so without it the damage would be found after rows were sent."""
    path = tmp_path / name.replace("csv", text_format)
    path.write_bytes(damage(_late_damage_events(text_format)))
    state = tmp_path / "state"
    code, out, err = invoke(
        "run", str(path), "--schema", TRACK, "--endpoint", "embedded", "--state", str(state),
        "--batch-rows", "1000", "-q",
    )  # fmt: skip
    assert code == 1, out + err
    record = state / RECORD
    assert not record.exists() or record.read_text() == ""
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    kind = "gzip" if name.endswith(".gz") else "zstd"
    assert errors[0].startswith(f"Error: {path}: the {kind} data is damaged after line ")
    assert errors[0].endswith("nothing from it was sent")


# ---------------------------------------------------------------------------------- Parquet


def test_a_parquet_file_sends_the_bodies_of_the_jsonl_of_its_rows(tmp_path: Path) -> None:
    """Parquet rows are numbered from 1, as JSONL lines are, so the bodies are the same."""
    events = ["Logged in", "Viewed product", "Purchased Item"]
    rows = [
        {
            "user_id": f"u{i:05d}",
            "email": None if i % 4 == 0 else f"user{i}@example.com",
            "event": events[i % 3],
            "occurred_at": f"2024-01-{1 + i % 28:02d}T10:{i % 60:02d}:00Z",
            "product": None if i % 3 == 0 else f"sku-{i}",
            "price": None if i % 5 == 0 else i / 4,
            "quantity": i % 7,
        }
        for i in range(300)
    ]
    jsonl = tmp_path / "rows.jsonl"
    # A JSON null is sent as null; a Parquet null, like an empty CSV cell, is no value.
    present = [{key: value for key, value in row.items() if value is not None} for row in rows]
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in present))
    parquet = tmp_path / "rows.parquet"
    pl.DataFrame(rows).write_parquet(parquet, row_group_size=37)
    expected = bodies(dry_run(tmp_path, jsonl, name="jsonl.jsonl"))
    assert len(expected) == 300
    # check_id names the input by its fingerprint, which is of the file's bytes.
    for _, body in [*expected, *(got := bodies(dry_run(tmp_path, parquet)))]:
        body["extras"].pop("check_id")
    assert got == expected


def test_parquet_keeps_its_types_in_the_bodies(tmp_path: Path) -> None:
    paris = pl.Series(
        [dt.datetime(2024, 1, 2, 3, 4, 5, 123456), dt.datetime(2024, 7, 2, 3, 4, 5)]
    ).dt.replace_time_zone("Europe/Paris")
    pl.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "email": ["a@example.com", None],
            "event": ["Login", "Buy"],
            "occurred_at": paris,
            "naive": [dt.datetime(2024, 1, 2, 3, 4, 5, 250000), None],
            "price": pl.Series(
                [decimal.Decimal("12.30"), decimal.Decimal("-0.05")], dtype=pl.Decimal(10, 2)
            ),
            "big": [2**53 + 1, -(2**63)],
            "tags": [["a", "b"], []],
            "meta": [{"k": 1, "s": "x"}, None],
            "nothing": pl.Series([None, None], dtype=pl.String),
        }
    ).write_parquet(tmp_path / "typed.parquet")
    out = tmp_path / "out.jsonl"
    code, _, err = invoke(
        "run", str(tmp_path / "typed.parquet"), "--schema", TRACK, "--dry-run", "--out", str(out)
    )
    assert code == 0, err
    text = out.read_text()
    first, second = (json.loads(line) for line in text.splitlines())
    # The zone is kept: 03:04 in Paris is 02:04 (winter) and 01:04 (summer) in UTC.
    assert first["body"]["extras"]["created_at"] == "2024-01-02T02:04:05+0000"
    assert second["body"]["extras"]["created_at"] == "2024-07-02T01:04:05+0000"
    assert first["source"]["line"] == 1
    assert second["source"]["line"] == 2
    assert first["body"]["data"] == {
        "naive": "2024-01-02T03:04:05.250",
        "price": 12.3,
        "big": 2**53 + 1,
        "tags": ["a", "b"],
        "meta": {"k": 1, "s": "x"},
        "occurred_at": "2024-01-02T02:04:05+0000",
    }
    assert second["body"]["data"]["big"] == -(2**63)
    assert "nothing" not in second["body"]["data"]
    assert "email" not in second["body"]["identity"]
    # A decimal keeps its digits in the JSON text, where json.loads would make 12.3 of it.
    assert '"price":12.30,' in text
    assert '"price":-0.05,' in text


def test_a_naive_parquet_timestamp_is_naive(tmp_path: Path) -> None:
    pl.DataFrame(
        {
            "user_id": ["u1"],
            "email": ["a@example.com"],
            "event": ["Login"],
            "occurred_at": [dt.datetime(2024, 1, 2, 3, 4, 5)],
        }
    ).write_parquet(tmp_path / "naive.parquet")
    code, out, err = invoke("validate", str(tmp_path / "naive.parquet"), "--schema", TRACK)
    assert code == 0, err
    assert "1 time(s) had no offset and were read in the mapping's timezone" in out


def test_a_nan_in_a_parquet_float_is_a_reject(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    pl.DataFrame({"a": [1.5, float("nan"), float("-inf")], "b": ["x", "y", "z"]}).write_parquet(
        path
    )
    batches = list(iter_batches(open_input(path)))
    assert [row for b in batches for row in b.frame.rows()] == [(1, "1.5", '"x"')]
    rejects = pl.concat([b.rejects for b in batches]).rows(named=True)
    assert [(r["__line"], r["__rule"], r["__column"], r["a"]) for r in rejects] == [
        (2, "json", "a", '"NaN"'),
        (3, "json", "a", '"-inf"'),
    ]


def test_parquet_is_read_in_bounded_batches(tmp_path: Path) -> None:
    path = tmp_path / "many.parquet"
    pl.DataFrame({"n": range(25)}).write_parquet(path, row_group_size=4)
    frames = [b.frame for b in iter_batches(open_input(path), batch_rows=10)]
    assert [f.height for f in frames] == [10, 10, 5]
    assert pl.concat(frames)["__line"].to_list() == list(range(1, 26))


@pytest.mark.parametrize("keep", [0.5, 0.99], ids=["half", "footer-cut"])
def test_a_truncated_parquet_file_exits_1_and_sends_nothing(tmp_path: Path, keep: float) -> None:
    whole = tmp_path / "whole.parquet"
    pl.read_csv(EVENTS_CSV, infer_schema=False).write_parquet(whole)
    data = whole.read_bytes()
    path = tmp_path / "cut.parquet"
    path.write_bytes(data[: int(len(data) * keep)])
    state = tmp_path / "state"
    code, out, err = invoke(
        "run", str(path), "--schema", TRACK, "--endpoint", "embedded", "--state", str(state), "-q"
    )
    assert code == 1, out + err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: {path}: is not a whole Parquet file (it does not start and end with PAR1; a "
        "truncated file ends early); nothing from it was sent"
    ]
    record = state / RECORD
    assert not record.exists() or record.read_text() == ""


def test_a_parquet_file_named_csv_says_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    pl.DataFrame({"a": [1]}).write_parquet(path)
    with pytest.raises(InputError, match="the file is Parquet, not text") as caught:
        open_input(path)
    assert caught.value.hint == "name it with the ending .parquet, which is read as Parquet"


# --------------------------------------------------------------------- directories and globs


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    (folder / "sub").mkdir(parents=True)
    for name in (
        "b.csv",
        "a.jsonl.gz",
        "c.parquet",
        "d.TSV",
        "e.ndjson.zst",
        "notes.txt",
        ".hidden.csv",
        "sub/x.csv",
    ):
        (folder / name).write_text("x\n")
    (folder / "f.csv").mkdir()  # a directory with a known ending is not a file
    return folder


def test_a_directory_is_its_input_files_sorted_by_name_not_recursive(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    assert [p.name for p in expand_inputs([folder])] == [
        "a.jsonl.gz",
        "b.csv",
        "c.parquet",
        "d.TSV",
        "e.ndjson.zst",
    ]


def test_a_directory_leaves_json_files_but_a_glob_names_them(tmp_path: Path) -> None:
    # .json files beside the data are manifests and reports; named by a glob they are inputs.
    folder = tmp_path / "exports"
    folder.mkdir()
    for name in ("manifest.json", "part-1.json.gz", "part-2.jsonl"):
        (folder / name).write_text("{}\n")
    assert [p.name for p in expand_inputs([folder])] == ["part-2.jsonl"]
    assert [p.name for p in expand_inputs([folder / "*.json.gz"])] == ["part-1.json.gz"]


def test_a_glob_is_its_matches_sorted_and_a_file_is_itself(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    named = folder / "notes.txt"
    assert expand_inputs([Path(f"{folder}/*.csv"), named, Path(f"{folder}/[ac].*")]) == [
        folder / "b.csv",
        named,
        folder / "a.jsonl.gz",
        folder / "c.parquet",
    ]


def test_an_empty_directory_or_glob_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InputError, match=f"^{empty}: the directory holds no input file"):
        expand_inputs([empty])
    pattern = tmp_path / "exports" / "*.csv.gz"
    with pytest.raises(InputError, match=r"the pattern matches no file$") as caught:
        expand_inputs([pattern])
    assert str(caught.value) == f"{pattern}: the pattern matches no file"


def test_a_glob_on_the_command_line_reads_its_files_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "nightly"
    folder.mkdir()
    lines = EVENTS_CSV.read_bytes().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    (folder / "2024-01-02.csv.gz").write_bytes(gzip.compress(header + b"".join(rows[400:])))
    (folder / "2024-01-01.csv.gz").write_bytes(gzip.compress(header + b"".join(rows[:400])))
    (folder / "ignored.csv").write_bytes(header)
    sent = dry_run(tmp_path, f"{folder}/*.csv.gz")
    files = [line["source"]["file"] for line in sent]
    assert files == sorted(files)
    assert set(files) == {str(folder / "2024-01-01.csv.gz"), str(folder / "2024-01-02.csv.gz")}
    whole = dry_run(tmp_path, EVENTS_CSV, name="whole.jsonl")
    assert [line["body"]["identity"] for line in sent] == [
        line["body"]["identity"] for line in whole
    ]


# ------------------------------------------------------------------------------- at the mock


def _received(state: Path) -> list[dict[str, Any]]:
    """What the embedded server accepted, as it parsed it, without its own bookkeeping and the
    row id (made of the input's content and line, which differ between forms)."""
    records = [json.loads(line) for line in (state / RECORD).read_text().splitlines()]
    for record in records:
        record["extras"].pop("check_id")
    # Requests go concurrently, so they arrive in any order: compare them by user.
    records.sort(key=lambda record: record["identity"]["id"])
    return [{k: v for k, v in record.items() if not k.startswith("_")} for record in records]


@pytest.mark.parametrize("form", ["csv.gz", "csv.zst", "parquet"])
def test_compressed_and_parquet_rows_arrive_at_the_mock_with_their_types(
    tmp_path: Path, form: str
) -> None:
    """The same rows as plain CSV, as the API receives them: ids as text, times in UTC, a
    decimal and a 64-bit integer as numbers, a list and an object as JSON."""
    plain = tmp_path / "plain.csv"
    plain.write_text(
        "user_id,email,event,occurred_at,price,big,zip\n"
        "007,a@example.com,Login,2024-01-02T03:04:05+01:00,12.5,9007199254740993,01234\n"
        "u2,,Buy,2024-07-02T03:04:05+00:00,-0.25,-9223372036854775808,99999\n"
    )
    frame = pl.read_csv(plain, infer_schema=False).with_columns(
        pl.col("occurred_at").str.to_datetime("%Y-%m-%dT%H:%M:%S%z").dt.convert_time_zone("UTC"),
        pl.col("price").cast(pl.Decimal(10, 2)),
        pl.col("big").cast(pl.Int64),
    )
    source = tmp_path / f"events.{form}"
    if form == "parquet":
        frame.write_parquet(source)
    else:
        packed = gzip.compress if form == "csv.gz" else zstd
        source.write_bytes(packed(plain.read_bytes()))
    runs = {}
    for name, path in (("plain", plain), ("other", source)):
        state = tmp_path / f"state-{name}"
        code, _, err = invoke(
            "run", str(path), "--schema", TRACK, "--endpoint", "embedded", "--state", str(state)
        )
        assert code == 0, err
        runs[name] = _received(state)
    assert runs["other"] == runs["plain"]
    first, second = runs["other"]
    assert first["identity"]["id"] == "007"
    assert first["extras"]["created_at"] == "2024-01-02T02:04:05+0000"
    assert first["data"]["price"] == 12.5
    assert first["data"]["big"] == 9007199254740993
    assert first["data"]["zip"] == "01234"
    assert second["data"]["big"] == -(2**63)
