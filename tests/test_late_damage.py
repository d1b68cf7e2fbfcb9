"""Damage that shows only when its batch is read (a Parquet data page, its header and footer
intact) stops a run after rows of other inputs were sent: the run still writes its summary
and --report, counting what went, and exits 1 with the error."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from pipeline_helpers import ROOT, mock_server_process

from importer.cli.app import main

GROUP_ROWS = 1_000
GOOD_ROWS = 500
TOKEN = "tok-late-damage"


def _frame(rows: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [f"p{i}" for i in range(rows)],
            "email": [f"p{i}@example.com" for i in range(rows)],
            "event": ["Viewed"] * rows,
            "occurred_at": [f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z" for i in range(rows)],
        }
    )


def _parquet(rows: int) -> bytes:
    out = io.BytesIO()
    _frame(rows).write_parquet(out, row_group_size=GROUP_ROWS, compression="zstd")
    return out.getvalue()


def damaged_parquet(path: Path) -> None:
    """Three row groups; the third's column chunks overwritten, the header and footer whole.

    Without pyarrow to read the footer's offsets: the same rows written as two groups share the
    file's bytes up to the third group, and the footer's length is in the last 8 bytes."""
    whole, two_groups = _parquet(3 * GROUP_ROWS), _parquet(2 * GROUP_ROWS)
    third = next(i for i, (a, b) in enumerate(zip(whole, two_groups, strict=False)) if a != b)
    footer = len(whole) - 8 - struct.unpack("<I", whole[-8:-4])[0]
    assert third < footer
    data = bytearray(whole)
    for i in range(third + 40, footer - 40):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    assert pl.scan_parquet(path).select(pl.len()).collect().item() == 3 * GROUP_ROWS  # footer
    with pytest.raises(pl.exceptions.ComputeError):
        pl.read_parquet(path)


def good_csv(path: Path) -> None:
    lines = ["user_id,email,event,occurred_at"]
    lines += [
        f"c{i},c{i}@example.com,Viewed,2024-01-01T01:00:{i % 60:02d}Z" for i in range(GOOD_ROWS)
    ]
    path.write_text("\n".join(lines) + "\n")


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_a_damaged_data_page_after_rows_were_sent_ends_with_the_summary_and_report(
    tmp_path: Path,
) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "late.parquet"
    good_csv(good)
    damaged_parquet(bad)
    record, report, state = tmp_path / "received.jsonl", tmp_path / "report.json", tmp_path / "st"
    options = ("--record", str(record), "--dedup-window", "0")
    with mock_server_process(*options, env={"VERO_AUTH_TOKEN": TOKEN}) as url:
        code, out, err = run(
            "run", str(good), str(bad), "--mapping", str(ROOT / "schemas" / "vero-track.toml"),
            "--endpoint", url, "--state", str(state), "--report", str(report),
            "--batch-rows", str(GROUP_ROWS),
            env={"VERO_AUTH_TOKEN": TOKEN},
        )  # fmt: skip
    received = record.read_text().splitlines()
    sent = GOOD_ROWS + 2 * GROUP_ROWS  # the CSV, then the two whole row groups
    assert code == 1, err
    assert len(received) == sent
    assert "delivered                   2,500" in out
    assert f"Error: {bad}, row 2,001 on: cannot be read as Parquet" in err
    written = json.loads(report.read_text())
    assert (written["rows_sent"], written["requests"]) == (sent, sent)
    assert f"{bad}, row 2,001 on" in written["stopped"]


def test_a_damaged_data_page_in_a_bulk_import_ends_with_the_summary_and_report(
    tmp_path: Path,
) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "late.parquet"
    good_csv(good)
    damaged_parquet(bad)
    report, state = tmp_path / "report.json", tmp_path / "st"
    mapping = tmp_path / "import.toml"
    mapping.write_text(
        'destination = "userpilot"\naction = "import_track"\n[fields]\nuser_id = "user_id"\n'
        'event_name = "event"\ninserted_at = "occurred_at"\nmetadata = "*"\n'
    )
    code, _, err = run(
        "run", str(good), str(bad), "--mapping", str(mapping),
        "--endpoint", "embedded", "--state", str(state), "--report", str(report),
        "--batch-rows", str(GROUP_ROWS),
    )  # fmt: skip
    assert code == 1, err
    assert f"Error: {bad}, row 2,001 on: cannot be read as Parquet" in err
    written = json.loads(report.read_text())
    sent = GOOD_ROWS + 2 * GROUP_ROWS
    assert written["rows_sent"] == sent
    assert written["embedded_server"]["rows_landed"] == sent
