"""Userpilot as data the core reads: headers, answers, regions, rate and options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_helpers import make_mapping

from importer.api.settings import delivery_options
from importer.destinations.base import endpoint_of, rate_window_of, throttle_floor_of
from importer.destinations.userpilot.api import USERPILOT, error_summary
from importer.errors import MappingError
from importer.model import Verdict

ERROR_BODY = json.dumps(
    {
        "errors": [
            {
                "error": "invalid_request",
                "error_code": "VALIDATION_ERROR",
                "message": "metadata.plan must be a primitive",
                "details": {"field": "metadata.plan"},
            }
        ]
    }
).encode()


def test_the_key_and_version_travel_in_headers_and_the_body_is_untouched() -> None:
    body = b'{"user_id":"007","event_name":"Signed Up"}'
    sent, headers = USERPILOT.authorize(body, "k-123")
    assert sent == body
    assert headers["Authorization"] == "Token k-123"
    assert headers["X-API-Version"] == "2020-09-22"
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("status", "body", "verdict", "message"),
    [
        pytest.param(202, b'{"status":"accepted"}', Verdict.DELIVERED, "delivered", id="202"),
        pytest.param(200, b"", Verdict.DELIVERED, "delivered", id="200-empty"),
        pytest.param(200, b"<html>proxy</html>", Verdict.STOP, "HTML page", id="200-html"),
        pytest.param(
            400,
            ERROR_BODY,
            Verdict.DEAD,
            'VALIDATION_ERROR: metadata.plan must be a primitive ({"field": "metadata.plan"})',
            id="400-error-body",
        ),
        pytest.param(401, ERROR_BODY, Verdict.STOP, "refused the API key (HTTP 401)", id="401"),
        pytest.param(403, b"", Verdict.STOP, "refused the API key (HTTP 403)", id="403"),
        pytest.param(307, b"", Verdict.STOP, "redirects are not followed", id="307"),
        pytest.param(409, ERROR_BODY, Verdict.RETRY, "VALIDATION_ERROR", id="409"),
        pytest.param(429, b"", Verdict.RETRY, "HTTP 429", id="429"),
        pytest.param(503, b"busy", Verdict.RETRY, "busy", id="503"),
        pytest.param(404, b"", Verdict.DEAD, "HTTP 404", id="404"),
    ],
)
def test_answers_are_classified_with_userpilots_message(
    status: int, body: bytes, verdict: Verdict, message: str
) -> None:
    got, text = USERPILOT.classify(status, body)
    assert got is verdict
    assert message in text


def test_several_errors_are_joined_and_other_bodies_kept_as_text() -> None:
    two = {"errors": [{"error_code": "A", "message": "one"}, {"error": "b", "message": "two"}]}
    assert error_summary(json.dumps(two).encode()) == "A: one; b: two"
    assert error_summary(b'{"message": "slow down"}') == "slow down"
    assert error_summary(b"  plain text  ") == "plain text"


@pytest.mark.parametrize(
    ("region", "host"),
    [("us", "https://analytex.userpilot.io"), ("eu", "https://analytex-eu.userpilot.io")],
)
def test_the_region_picks_the_host_and_endpoint_still_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, region: str, host: str
) -> None:
    mapping = make_mapping(
        {
            "destination": "userpilot",
            "action": "track",
            "region": region,
            "fields": {"user_id": "id", "event_name": "event"},
        }
    )
    assert mapping.options["region"] == region
    assert endpoint_of(USERPILOT, mapping.options) == host
    monkeypatch.setenv("USERPILOT_API_KEY", "k")
    common = {
        "destination": USERPILOT,
        "token_file": None,
        "state_dir": tmp_path,
        "fresh": False,
        "dead_letter": None,
        "concurrency": 4,
        "rate": None,
        "max_retries": 2,
        "timeout": 5.0,
        "options": mapping.options,
    }
    resolved = delivery_options(endpoint=None, **common)
    assert resolved.endpoint == host
    assert resolved.send.rate == 10.0
    assert resolved.send.rate_window == (600, 60.0)
    assert resolved.send.throttle_floor_s == 1.0
    overridden = delivery_options(endpoint="http://127.0.0.1:9", **common)
    assert overridden.endpoint == "http://127.0.0.1:9"


def test_a_region_changes_the_mapping_fingerprint_but_vero_mappings_keep_theirs() -> None:
    fields = {"user_id": "id", "event_name": "event"}
    us = make_mapping({"destination": "userpilot", "action": "track", "fields": fields})
    eu = make_mapping(
        {"destination": "userpilot", "action": "track", "fields": fields, "region": "eu"}
    )
    assert us.options == {"region": "us", "nested": "reject", "chunk_mb": 50}
    assert us.fingerprint != eu.fingerprint
    assert make_mapping().options == {}


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("region", "ap", "region = 'ap' is not one of 'us', 'eu'"),
        ("nested", True, "nested = True must be a string"),
        ("chunk_mb", 51, "chunk_mb = 51 is above 50"),
        ("chunk_mb", 0, "chunk_mb = 0 is below 1"),
        ("chunk_mb", 2.5, "chunk_mb = 2.5 must be a whole number"),
    ],
)
def test_options_are_checked_with_the_mapping(key: str, value: object, problem: str) -> None:
    raw = {"destination": "userpilot", "action": "track", "fields": {"user_id": "id"}, key: value}
    with pytest.raises(MappingError) as caught:
        make_mapping(raw)
    assert problem in str(caught.value)


def test_a_vero_mapping_refuses_userpilots_options() -> None:
    with pytest.raises(MappingError, match="unknown key 'region'"):
        make_mapping(region="eu")


def test_rate_rules_are_declared() -> None:
    assert USERPILOT.default_rate == 10.0
    assert rate_window_of(USERPILOT) == (600, 60.0)
    assert throttle_floor_of(USERPILOT) == 1.0
