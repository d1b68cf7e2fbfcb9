"""The payload-file line: what a dry run and the dead letters write is what replay reads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import polars as pl
import pytest
from pipeline_helpers import NOW, make_mapping, write_jsonl

from importer.columns import BODY, LINE
from importer.delivery.record import DeadLetters
from importer.destinations.vero.api import VERO
from importer.model import Request, Result
from importer.outcome import Summary
from importer.payloads.payload_file import dead_letter_line, parse_line, payload_lines
from importer.pipeline.replay import iter_payload_feeds
from importer.pipeline.run import RunOptions, dry_run

BODY_TEXT = '{"identity":{"id":"ü1"},"event_name":"Login","data":{"n":9007199254740993}}'
CALLS = {("POST", "events/track")}


def _replayed(path: Path) -> tuple[pl.DataFrame, Summary]:
    summary = Summary()
    [feed] = iter_payload_feeds(path, destination=VERO, summary=summary)
    return feed.frame, summary


def test_a_dry_run_out_file_replays_byte_for_byte(tmp_path: Path) -> None:
    events = write_jsonl(
        tmp_path,
        {"user_id": "u1", "event": "Login", "occurred_at": "2023-05-30", "n": 9007199254740993},
        {"user_id": "u2", "event": "Logout", "occurred_at": "2023-05-31"},
    )
    out = tmp_path / "payloads.jsonl"
    fields = {
        "identity.id": "user_id",
        "event_name": "event",
        "extras.created_at": "occurred_at",
        "data": "*",
    }
    mapping = make_mapping(fields=fields)
    dry_run(RunOptions(inputs=(events,), mapping=mapping, now=NOW), out=out)
    written = out.read_text(encoding="utf-8").splitlines()
    first = json.loads(written[0])
    assert list(first) == ["method", "path", "body", "source"]
    assert first["source"] == {"file": str(events), "line": 1}
    frame, summary = _replayed(out)
    assert summary.rows_rejected == 0
    assert frame[LINE].to_list() == [1, 2]
    # The body replay sends is the text the dry run wrote, not a re-encoding of it.
    assert [json.loads(line)["body"] for line in written] == [
        json.loads(body) for body in frame[BODY]
    ]
    assert '"n":9007199254740993' in frame[BODY][0]


def test_payload_lines_are_one_column_expression() -> None:
    bodies = pl.DataFrame({LINE: [7], BODY: [BODY_TEXT]})
    [line] = (
        bodies.select(
            payload_lines(
                pl.col(BODY), pl.col(LINE), method="POST", path="events/track", source="ä.csv"
            )
        )
        .to_series()
        .to_list()
    )
    assert line == (
        '{"method":"POST","path":"events/track","body":' + BODY_TEXT + ',"source":'
        '{"file":"ä.csv","line":7}}'
    )


def test_a_dead_letter_keeps_status_and_error_and_replays(tmp_path: Path) -> None:
    request = Request("POST", "events/track", BODY_TEXT.encode(), "fp", 'in "1".csv', 14)
    path = tmp_path / "dead.jsonl"
    letters = DeadLetters(path)
    letters.write(Result(request, False, 400, "identity.id: can't be blank — «ü»", 1))
    letters.write(Result(request, False, None, "gave up after 9 attempts: timeout", 9))
    letters.close()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {
        "method": "POST",
        "path": "events/track",
        "body": json.loads(BODY_TEXT),
        "source": {"file": 'in "1".csv', "line": 14},
        "status": 400,
        "error": "identity.id: can't be blank — «ü»",
    }
    assert (lines[1]["status"], lines[1]["error"]) == (None, "gave up after 9 attempts: timeout")
    frame, summary = _replayed(path)
    assert summary.rows_rejected == 0
    assert frame[LINE].to_list() == [1, 2]
    assert frame[BODY].to_list() == [BODY_TEXT, BODY_TEXT]


def test_a_dead_letter_line_is_one_line_of_bytes() -> None:
    request = Request("POST", "events/track", BODY_TEXT.encode(), "fp", "a.csv", 3)
    line = dead_letter_line(Result(request, False, 422, "bad\nvalue", 1))
    assert line.endswith(b"}\n")
    assert line.count(b"\n") == 1
    assert json.loads(line)["error"] == "bad\nvalue"


@pytest.mark.parametrize(
    ("fields", "body", "problem"),
    [
        pytest.param(
            frozenset({"auth_token"}),
            {"auth_token": "x"},
            "body carries an auth_token; remove it (the token comes from the environment)",
            id="vero-token",
        ),
        pytest.param(
            frozenset({"api_key"}),
            {"api_key": "x"},
            "body carries an api_key; remove it (the token comes from the environment)",
            id="another-destination's-credential",
        ),
        pytest.param(frozenset({"api_key"}), {"auth_token": "x"}, None, id="not-its-credential"),
    ],
)
def test_the_credential_a_body_may_not_carry_is_the_destinations(
    fields: frozenset[str], body: dict[str, str], problem: str | None
) -> None:
    text = json.dumps({"method": "POST", "path": "events/track", "body": body}).encode()
    parsed = parse_line(text, calls=CALLS, credential_fields=fields)
    if problem is None:
        assert not isinstance(parsed, str)
    else:
        assert parsed == problem


def test_replay_asks_the_destination_for_its_credential_fields(tmp_path: Path) -> None:
    other = dataclasses.replace(VERO, credential_fields=frozenset({"api_key"}))
    path = tmp_path / "payloads.jsonl"
    lines = [{"method": "POST", "path": "events/track", "body": {"api_key": "k"}}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    summary = Summary()
    assert list(iter_payload_feeds(path, destination=other, summary=summary)) == []
    assert summary.rejects_by_rule == {"payload": 1}
    assert summary.reject_examples["payload"] == [
        f"{path}, line 1: body carries an api_key; remove it (the token comes from the environment)"
    ]
