"""A destination defined in the tests runs the whole pipeline against its own mock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from made_up_api import PINGER, PingerMock

from importer.api.settings import delivery_options
from importer.cli.app import main
from importer.destinations import DESTINATIONS
from importer.mock.registry import MOCKS

MAPPING = """
destination = "pinger"
action = "ping"
[fields]
"who.key" = "user"
what = "event"
"when" = "at"
props = "*"
"""


@pytest.fixture
def pinger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DESTINATIONS, PINGER.name, PINGER)
    monkeypatch.setitem(MOCKS, PINGER.name, PingerMock)


def test_a_made_up_api_runs_end_to_end_on_its_own_mock(pinger: None, tmp_path: Path) -> None:
    data = tmp_path / "pings.csv"
    data.write_text(
        "user,event,at,colour\n"
        "k1,Opened,2023-05-30T10:00:00+02:00,red\n"
        f"{'k' * 25},Opened,2023-05-30,blue\n"
        "k3,,2023-05-30,green\n"
        "k4,Closed,1685440800,\n"
    )
    mapping = tmp_path / "pinger.toml"
    mapping.write_text(MAPPING)
    state, rejects = tmp_path / "state", tmp_path / "rejects.jsonl"
    result = CliRunner().invoke(
        main,
        [
            "run", str(data), "--mapping", str(mapping), "--endpoint", "embedded",
            "--state", str(state), "--rejects", str(rejects),
        ],
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    received = [
        json.loads(line) for line in (state / "embedded-received.jsonl").read_text().splitlines()
    ]
    for body in received:
        del body["_path"], body["_duplicate"]
    assert received == [
        {
            "who": {"key": "k1"},
            "what": "Opened",
            "when": "2023-05-30T08:00:00Z",
            "props": {"colour": "red"},
        },
        {"who": {"key": "k4"}, "what": "Closed", "when": "2023-05-30T10:00:00Z"},
    ]
    rules = [json.loads(line)["_rule"] for line in rejects.read_text().splitlines()]
    assert rules == ["length", "required"]
    assert "Pinger needs fewer than 20" in result.output


def test_the_destinations_default_rate_applies_unless_rate_is_given(
    pinger: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    monkeypatch.setitem(DESTINATIONS, PINGER.name, replace(PINGER, default_rate=10.0))
    options = {
        "endpoint": "embedded",
        "token_file": None,
        "state_dir": Path("state"),
        "fresh": False,
        "dead_letter": None,
        "concurrency": 4,
        "max_retries": 1,
        "timeout": 5.0,
    }
    limited = DESTINATIONS[PINGER.name]
    assert delivery_options(destination=limited, rate=None, **options).send.rate == 10.0
    assert delivery_options(destination=limited, rate=3.0, **options).send.rate == 3.0
    assert delivery_options(destination=PINGER, rate=None, **options).send.rate is None
