"""--report-html and the report's timeline: one self-contained page, drawn from the same report
as --report, with the sending over time recorded through the progress callbacks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from pipeline_helpers import ROOT, mock_server_process

from importer.cli.app import main
from importer.outcome import TIMELINE_POINTS, Summary, Timeline
from importer.progress import DeliveryProgress, TimelineProgress, record_timeline

EVENTS = str(ROOT / "samples" / "events.csv")
SCHEMA = jsonschema.Draft202012Validator(
    json.loads((ROOT / "schemas" / "report.schema.json").read_text())
)
TOKEN = "tok-report-page"


class _Counting(DeliveryProgress):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def result(self, *, delivered: bool, retries: int) -> None:
        self.calls.append(f"result {delivered}")

    def retry(self, message: str) -> None:
        self.calls.append("retry")

    def abandon(self) -> None:
        self.calls.append("abandon")


def test_the_timeline_counts_each_callback_in_its_interval_and_passes_it_on() -> None:
    now = [100.0]
    inner = _Counting()
    timeline = Timeline()
    progress = TimelineProgress(inner, timeline, clock=lambda: now[0])
    progress.begin(10)
    progress.result(delivered=True, retries=0)
    now[0] = 101.5
    progress.result(delivered=True, retries=0)
    progress.result(delivered=False, retries=2)
    progress.retry("a.csv, line 3: HTTP 429: Too Many Requests; retry 1 of 8 in 1.0 s")
    now[0] = 103.2
    progress.retry("a.csv, line 4: HTTP 503: unavailable; retry 1 of 8 in 0.5 s")
    progress.abandon()  # what the front end offers beyond the interface still reaches it
    assert timeline.points == [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 1, 0]]
    assert inner.calls == [
        "result True",
        "result True",
        "result False",
        "retry",
        "retry",
        "abandon",
    ]


def test_a_long_sending_keeps_few_intervals_and_every_count() -> None:
    timeline = Timeline()
    for second in range(1000):
        timeline.add(second + 0.5, 0)
    assert len(timeline.points) <= TIMELINE_POINTS
    assert timeline.interval_s == 8.0
    assert sum(point[0] for point in timeline.points) == 1000


def test_a_summary_without_sending_has_no_timeline_and_one_with_has_it() -> None:
    assert Summary().as_report()["timeline"] is None
    summary = Summary()
    record_timeline(None, summary).result(delivered=True, retries=0)
    assert summary.as_report()["timeline"]["points"][0]["sent"] == 1


@pytest.mark.long(seconds=12)
def test_the_page_and_the_report_tell_the_same_story(tmp_path: Path) -> None:
    # the first requests: one refused for good (a dead letter), two 429s and a 503 (retries)
    script = "400,429,429,503"
    env = {"VERO_AUTH_TOKEN": TOKEN}
    with mock_server_process("--status-script", script, env=env) as endpoint:
        report, page = tmp_path / "report.json", tmp_path / "report.html"
        ran = CliRunner(env=env).invoke(
            main,
            [
                "run",
                EVENTS,
                "--mapping",
                "vero-track",
                "--endpoint",
                endpoint,
                "--state",
                str(tmp_path / "state"),
                "--report",
                str(report),
                "--report-html",
                str(page),
                "--quiet",
            ],
            catch_exceptions=False,
        )
    assert ran.exit_code == 3, ran.output
    summary = json.loads(report.read_text())
    SCHEMA.validate(summary)
    points = summary["timeline"]["points"]
    assert sum(p["sent"] for p in points) == summary["rows_sent"] == 394
    assert sum(p["failed"] for p in points) == summary["rows_failed"] == 1
    assert sum(p["retries"] for p in points) == summary["retries"] == 3
    assert sum(p["throttled"] for p in points) == 2
    html = page.read_text()
    assert "Exit code 3" in html
    assert "<svg" in html
    assert "among them the 429s (too many requests: 2)" in html
    for rule in summary["rejects_by_rule"]:
        assert rule in html
    [reason] = summary["dead_letters_by_reason"]
    assert reason.split(":")[0] in html  # HTTP 400
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r"<script|<link|<img|<iframe|src=|href=|url\(|@import", html)
    assert "http://" not in html
    assert "https://" not in html


def test_report_html_is_refused_where_it_would_overwrite_an_input(tmp_path: Path) -> None:
    rows = tmp_path / "events.csv"
    rows.write_bytes(Path(EVENTS).read_bytes())
    refused = CliRunner().invoke(
        main, ["validate", str(rows), "--mapping", "vero-track", "--report-html", str(rows)]
    )
    assert refused.exit_code != 0
    assert "--report-html" in refused.output
    assert rows.read_bytes() == Path(EVENTS).read_bytes()


def test_report_html_from_its_variable_for_validate(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    checked = CliRunner(env={"IMPORTER_REPORT_HTML": str(page)}).invoke(
        main, ["validate", EVENTS, "--mapping", "vero-track", "--quiet"]
    )
    assert checked.exit_code == 3, checked.output
    assert "Nothing was sent, so there is no timeline." in page.read_text()
