"""Runs cut Polars' work into morsels of 10,000 rows (pipeline/morsels.py), which lets both
cores work on a batch: the setting holds for a run and is put back, a caller's own is kept, and
the payloads and rejects are the same, in the same order, as in morsels of a whole batch."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from pipeline_helpers import ROOT

import importer
import importer.api.engine as engine
from importer.pipeline.morsels import MORSEL_ROWS, MORSEL_VARIABLE, polars_morsels

TRACK = ROOT / "schemas" / "vero-track.toml"


@pytest.fixture(autouse=True)
def _no_morsel_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MORSEL_VARIABLE, raising=False)


def test_a_run_works_in_small_morsels_and_puts_the_setting_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str | None] = []
    real = engine.dry_run_inputs

    def watched(*args: object, **kwargs: object) -> object:
        seen.append(os.environ.get(MORSEL_VARIABLE))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "dry_run_inputs", watched)
    events = tmp_path / "events.csv"
    events.write_text("user_id,email,event,occurred_at\nu1,a@b.co,Signed up,2024-01-01T00:00:00Z\n")
    report = importer.dry_run([events], mapping=TRACK)
    assert report.rows_valid == 1
    assert seen == [str(MORSEL_ROWS)]
    assert MORSEL_VARIABLE not in os.environ


def test_a_callers_own_morsel_size_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MORSEL_VARIABLE, "50000")
    with polars_morsels():
        assert os.environ[MORSEL_VARIABLE] == "50000"
    assert os.environ[MORSEL_VARIABLE] == "50000"


def test_runs_at_once_keep_the_setting_until_the_last_ends() -> None:
    with polars_morsels():
        with polars_morsels():
            assert os.environ[MORSEL_VARIABLE] == str(MORSEL_ROWS)
        assert os.environ[MORSEL_VARIABLE] == str(MORSEL_ROWS)
    assert MORSEL_VARIABLE not in os.environ


def _mixed_events(path: Path, rows: int) -> Path:
    """Rows whose times take both of validation's ways (the common ISO form and the general
    one, joined back by line), with bad rows spread through every morsel."""
    index = pl.int_range(0, rows, eager=True)
    times = [
        "2024-03-01T10:00:00Z",
        "2024-03-01 10:00:00",
        "1709287200",
        "03/01/2024 10:00",  # unreadable: a reject
        "2024-03-01T10:00:00.250+02:00",
    ]
    pl.DataFrame({"i": index}).select(
        pl.when(pl.col("i") % 97 == 0)
        .then(pl.lit(""))
        .otherwise(pl.lit("u") + pl.col("i").cast(pl.String))
        .alias("user_id"),
        pl.when(pl.col("i") % 89 == 0)
        .then(pl.lit("not an address"))
        .otherwise(pl.lit("a") + pl.col("i").cast(pl.String) + pl.lit("@example.com"))
        .alias("email"),
        pl.lit("Viewed").alias("event"),
        pl.col("i").mod(len(times)).replace_strict(list(range(len(times))), times).alias("at"),
        (pl.col("i") * 3).cast(pl.String).alias("plan"),
    ).write_csv(path)
    return path


def test_payloads_and_rejects_are_those_of_whole_batch_morsels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mapping = tmp_path / "track.toml"
    mapping.write_text(TRACK.read_text().replace('"occurred_at"', '"at"'))
    events = _mixed_events(tmp_path / "events.csv", 35_000)
    outputs = {}
    for morsel in ("small", "whole"):
        if morsel == "whole":
            monkeypatch.setenv(MORSEL_VARIABLE, "100000")  # more than a batch
        out, rejects = tmp_path / f"{morsel}.jsonl", tmp_path / f"{morsel}-rejects.csv"
        report = importer.dry_run([events], mapping=mapping, out=out, rejects=rejects)
        assert report.rows_rejected > 0
        assert report.rows_valid > 25_000
        outputs[morsel] = (out.read_bytes(), rejects.read_bytes())
    assert outputs["small"] == outputs["whole"]
