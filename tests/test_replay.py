"""Reading a payload file back: good lines become bodies as they were, bad ones are rejects."""

from __future__ import annotations

import json
from pathlib import Path

from importer.columns import BODY, LINE
from importer.destinations.vero.api import VERO
from importer.outcome import Summary
from importer.pipeline.replay import iter_payload_feeds

GOOD = {
    "method": "POST",
    "path": "events/track",
    "body": {"identity": {"id": "u1"}, "event_name": "Logged in", "data": {"n": 9007199254740993}},
    "source": {"file": "events.csv", "line": 2},
}


def test_payload_lines_that_are_not_strict_json_are_rejected(tmp_path: Path) -> None:
    lines = [
        json.dumps(GOOD),
        json.dumps(GOOD).replace("9007199254740993", "NaN"),
        json.dumps(GOOD).replace("9007199254740993", "1e400"),
        json.dumps(GOOD).replace("9007199254740993", '"\\ud800"'),
        '{"method":"POST","path":"events/track","body":[]}',
    ]
    path = tmp_path / "payloads.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = Summary()
    feeds = list(iter_payload_feeds(path, destination=VERO, summary=summary))
    [feed] = feeds
    assert feed.frame[LINE].to_list() == [1]
    assert json.loads(feed.frame[BODY][0]) == GOOD["body"]
    assert '"n":9007199254740993' in feed.frame[BODY][0]
    assert summary.rows_rejected == 4
    assert summary.rejects_by_rule == {"payload": 4}
