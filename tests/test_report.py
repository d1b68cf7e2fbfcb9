"""Summary.add_dead: dead letters counted by reason, bounded however many rows fail."""

from __future__ import annotations

from importer.cli.report import format_summary
from importer.outcome import DEAD_REASONS, OTHER_REASONS, REASON_CHARS, Summary


def test_dead_letters_are_counted_by_reason_with_the_first_row_as_example() -> None:
    summary = Summary(rows_failed=3, dead_letter_file="dead.jsonl")
    summary.add_dead(400, "event_name is empty", where="a.csv, line 2")
    summary.add_dead(400, "event_name is empty", where="a.csv, line 9")
    summary.add_dead(None, None, where="a.csv, line 4")
    assert summary.dead_by_reason == {"HTTP 400: event_name is empty": 2, "no answer": 1}
    assert summary.dead_examples["HTTP 400: event_name is empty"] == "a.csv, line 2"
    text = format_summary(summary)
    assert "2  HTTP 400: event_name is empty" in text
    assert "e.g. a.csv, line 2" in text


def test_a_reason_already_naming_its_status_is_not_prefixed_twice() -> None:
    summary = Summary()
    summary.add_dead(503, "HTTP 503: unavailable", where="x")
    assert list(summary.dead_by_reason) == ["HTTP 503: unavailable"]


def test_reasons_stay_few_and_short_when_every_row_fails_its_own_way() -> None:
    summary = Summary()
    for n in range(1000):
        summary.add_dead(400, f"value {n} is not allowed " + "x" * 500, where=f"line {n}")
    assert len(summary.dead_by_reason) == DEAD_REASONS + 1
    assert summary.dead_by_reason[OTHER_REASONS] == 1000 - DEAD_REASONS
    assert all(len(reason) <= REASON_CHARS for reason in summary.dead_by_reason)
    assert sum(summary.dead_by_reason.values()) == 1000


def test_jobs_are_counted_by_their_final_state() -> None:
    summary = Summary(rows_sent=3, requests=4)
    summary.jobs = [
        {"file": "a", "job": "j1", "rows": 2, "state": "completed"},
        {"file": "b", "job": "j2", "rows": 1, "state": "failed"},
        {"file": "c", "job": "j3", "rows": 1, "state": "completed"},
    ]
    assert "jobs: 3 (2 completed, 1 failed)" in format_summary(summary)
    assert summary.as_report()["jobs"][1]["job"] == "j2"
