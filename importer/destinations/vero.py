"""Vero Track API v2 (seeds 000-003): identify (`users/track`) and track (`events/track`)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from importer.destinations.base import Action
from importer.model import Verdict

IDENTIFY = Action(
    name="identify",
    method="POST",
    path="users/track",
    fields=frozenset({"id", "email", "channels"}),
    object_fields=frozenset({"data"}),
)
TRACK = Action(
    name="track",
    method="POST",
    path="events/track",
    fields=frozenset(
        {
            "identity.id",
            "identity.email",
            "event_name",
            "extras.created_at",
            "extras.source",
            "extras.check_id",
        }
    ),
    object_fields=frozenset({"data"}),
    time_fields=frozenset({"extras.created_at"}),
)

PRODUCTION = "https://api.getvero.com/api/v2"

# One dict for every request: aiohttp only reads it, and a copy per request is waste.
JSON_HEADERS = {"Content-Type": "application/json"}

# Vero answers these when the fault is passing (rate limit, overload); everything else is final.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Vero:
    """Vero's rules for where the token goes and what its answers mean."""

    name: str = "vero"
    default_endpoint: str = PRODUCTION
    token_env: str = "VERO_AUTH_TOKEN"
    actions: Mapping[str, Action] = field(
        default_factory=lambda: {IDENTIFY.name: IDENTIFY, TRACK.name: TRACK}
    )

    def authorize(self, body: bytes, token: str) -> tuple[bytes, dict[str, str]]:
        """Splice `auth_token` into the JSON body, so the token never sits in a URL or a log line.

        The body stays the bytes the payload stage built; only the token's member is prepended.
        """
        member = _token_member(token)
        rest = body[1:].lstrip()
        glue = b"" if rest.startswith(b"}") else b","
        return b"{" + member + glue + rest, JSON_HEADERS

    def classify(self, status: int, body: bytes) -> tuple[Verdict, str]:
        """Map an HTTP answer onto delivered, retry, dead letter or stop, with Vero's message.

        `message` is the server's text in full: the caller scrubs the token out, then cuts it.
        """
        if 200 <= status < 300:
            return _judge_success(status, body)
        message = _message(body) or f"HTTP {status}"
        if status == 401:
            return Verdict.STOP, f"the API refused the token (HTTP 401): {message}"
        if 300 <= status < 400:
            return Verdict.STOP, (
                f"the endpoint answered with a redirect (HTTP {status}); redirects are not "
                "followed, because a POST would be re-sent elsewhere or turned into a GET: "
                "use the final URL as --endpoint"
            )
        if status in RETRYABLE_STATUSES:
            return Verdict.RETRY, message
        return Verdict.DEAD, message


def _judge_success(status: int, body: bytes) -> tuple[Verdict, str]:
    """A 2xx counts only with Vero's documented answer: a JSON object whose `status` is a 2xx
    integer (`{"status": 200, "message": "Success."}`).

    A proxy, a captive portal or a web server at the wrong path also answers 200, with HTML or
    with JSON of its own (`{}`, `{"error": "no such route"}`): counting that as delivered would
    mark rows done that Vero never saw, and a rerun would not send them.
    """
    answer = _json_object(body)
    claimed = None if answer is None else answer.get("status")
    if not isinstance(claimed, int) or isinstance(claimed, bool):
        shown = "not JSON" if answer is None else "JSON without Vero's integer status"
        return Verdict.STOP, (
            f"the endpoint answered HTTP {status} but not with Vero's JSON answer ({shown}: "
            f"{_excerpt(body)}), so no row can be counted as delivered: is --endpoint the "
            f"API's base URL (such as {PRODUCTION})?"
        )
    if not 200 <= claimed < 300:
        return Verdict.DEAD, _message(body) or f"HTTP {status} with status {claimed}"
    return Verdict.DELIVERED, "delivered"


def _excerpt(body: bytes) -> str:
    """The start of an unexpected answer, enough to recognise what answered instead of Vero."""
    text = " ".join(body.decode("utf-8", "replace").split())
    return repr(text[:80] + ("…" if len(text) > 80 else "")) if text else "an empty body"


@functools.lru_cache(maxsize=4)
def _token_member(token: str) -> bytes:
    """The body member that carries the token, encoded once per token rather than per request."""
    return b'"auth_token":' + json.dumps(token).encode()


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _message(body: bytes) -> str:
    """Vero's `message` field when the body is its JSON error shape, else the body's text."""
    answer = _json_object(body)
    if answer is not None and isinstance(answer.get("message"), str):
        return str(answer["message"])
    return body.decode("utf-8", "replace").strip()


VERO = Vero()
