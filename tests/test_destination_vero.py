"""Vero's answers, judged by the destination: only its documented success counts as delivered."""

from __future__ import annotations

import pytest

from importer.destinations.vero.api import VERO
from importer.model import Verdict


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(200, b'{"status":200,"message":"Success."}', id="documented"),
        pytest.param(200, b'{"status": 200}', id="status-alone"),
        pytest.param(202, b'{"status":202,"message":"Accepted"}', id="accepted"),
    ],
)
def test_veros_success_answer_is_delivered(status: int, body: bytes) -> None:
    assert VERO.classify(status, body) == (Verdict.DELIVERED, "delivered")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b'{"error": "no such route"}', id="other-api-error"),
        pytest.param(b'{"status": "error"}', id="status-text"),
        pytest.param(b'{"status": "200"}', id="status-as-string"),
        pytest.param(b'{"status": true}', id="status-boolean"),
        pytest.param(b'{"status": 200.5}', id="status-float"),
        pytest.param(b"[]", id="array"),
        pytest.param(b"", id="empty-body"),
        pytest.param(b"<html>Welcome to nginx!</html>", id="html"),
    ],
)
def test_a_2xx_without_veros_answer_stops_the_run(body: bytes) -> None:
    verdict, message = VERO.classify(200, body)
    assert verdict is Verdict.STOP
    assert "not with Vero's JSON answer" in message
    assert "base URL" in message


def test_the_stop_message_shows_what_answered_instead() -> None:
    _, message = VERO.classify(200, b'{"error":  "no such route"}')
    assert '{"error": "no such route"}' in message
    _, message = VERO.classify(200, b"x" * 1000)
    assert len(message) < 400


def test_a_2xx_whose_body_reports_an_error_status_is_a_dead_letter() -> None:
    body = b'{"status":400,"message":"Event name is missing"}'
    assert VERO.classify(200, body) == (Verdict.DEAD, "Event name is missing")
