"""Vero Track API v2 (seeds 000-003): users (identify, alias, unsubscribe, resubscribe, delete,
tags) and events (track), as data the core reads, with Vero's answers and its mock."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from importer.destinations.base import (
    Action,
    AnyPresent,
    Distinct,
    Duplicates,
    ExprRule,
    Field,
    redirect_refusal,
)
from importer.model import Verdict

if TYPE_CHECKING:
    import polars as pl

# Vero: id, email and event_name must each be *less than* 255 characters.
MAX_CHARS = 255
# WHATWG's e-mail grammar, with a dot required in the domain as Vero wants a deliverable address.
EMAIL_RE = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S+0000"

USER_ID = Field(kind="text", max_chars=MAX_CHARS)
EMAIL = Field(
    kind="text",
    max_chars=MAX_CHARS,
    pattern=EMAIL_RE,
    pattern_rule="email",
    pattern_message="is not a valid email address",
    pattern_reasons=(
        (r"^\s|\s$", 'surrounding spaces (repairs.normalise <column> = ["trim"] removes them)'),
        (r"^[^@]*$", "no @"),
        (r"@.*@", "more than one @"),
        (r"^@", "nothing before the @"),
        (r"^[^@]*[^\x00-\x7F][^@]*@", "non-ASCII local part"),
        (r"@.*[^\x00-\x7F]", "non-ASCII domain (write it as punycode, xn--...)"),
        (r"\s", "a space inside"),
        (r"@[^.]*$", "no dot in the domain"),
    ),
)
DATA = Field(kind="object")


def _channels_message(value: pl.Expr) -> pl.Expr:
    """Vero's channels: an array of device objects ({"type", "address", "platform"})."""
    # Here, not at the top: a rule runs when rows are checked, and Polars is loaded by then;
    # what reads only the declaration (the mock server, `importer status`) never loads it.
    import polars as pl

    objects = value.str.contains(r"^\[\s*(?:\]|\{)")
    return pl.when(value.is_not_null() & (value != "null") & ~objects).then(
        pl.format(
            "channels must be a JSON array of objects such as "
            '[{{"type": "push", "address": "...", "platform": "ios"}}], not {} (a text column '
            'holding JSON needs [types] <column> = "json")',
            value,
        )
    )


def fold_event_name(name: pl.Expr) -> pl.Expr:
    """Vero's notion of one event name: `Purchased Item` = `purchased item` = `purchased_item`."""
    return name.str.to_lowercase().str.replace_all("_", " ", literal=True)


IDENTIFY = Action(
    name="identify",
    method="POST",
    path="users/track",
    fields={
        "id": USER_ID,
        "email": EMAIL,
        "channels": Field(kind="json"),
        "data": DATA,
        # Reserved attributes the seed gives a type: a GMT offset and a date.
        "data.timezone": Field(kind="integer", minimum=-12, maximum=14),
        "data.birthday": Field(kind="time"),
    },
    identity=("id", "email"),
    # Vero uses an email alone as the id; say so in the payload rather than rely on it.
    fallback={"id": ("id", "email")},
    rules=(ExprRule("channels", "channels", _channels_message),),
    stage=0,
)
TRACK = Action(
    name="track",
    method="POST",
    path="events/track",
    fields={
        "identity.id": USER_ID,
        "identity.email": EMAIL,
        "event_name": Field(kind="text", max_chars=MAX_CHARS, required=True),
        "data": DATA,
        # Without the original time Vero stamps every event with the moment it arrives.
        "extras.created_at": Field(kind="time", required=True),
        "extras.source": Field(kind="text"),
        "extras.check_id": Field(kind="text"),
    },
    identity=("identity.id", "identity.email"),
    # Seed 003: the identity "must contain an id"; as identify does, an email alone is the id,
    # so the user an event creates is the user identify made.
    fallback={"identity.id": ("identity.id", "identity.email")},
    duplicates=Duplicates(
        api="Vero",
        window="its few-minute window",
        user=("identity.id", "identity.email"),
        event="event_name",
        data="data",
        unique="extras.check_id",
        time="extras.created_at",
        fold=fold_event_name,
    ),
)
REQUIRED_ID = Field(kind="text", max_chars=MAX_CHARS, required=True)
ALIAS = Action(
    name="alias",
    method="PUT",
    path="users/reidentify",
    fields={"id": REQUIRED_ID, "new_id": REQUIRED_ID},
    identity=("id",),
    rules=(Distinct(("id", "new_id")),),
    stage=3,
)
UNSUBSCRIBE = Action(
    name="unsubscribe",
    method="POST",
    path="users/unsubscribe",
    fields={"id": REQUIRED_ID},
    identity=("id",),
    stage=1,
)
RESUBSCRIBE = Action(
    name="resubscribe",
    method="POST",
    path="users/resubscribe",
    fields={"id": REQUIRED_ID},
    identity=("id",),
    stage=1,
)
DELETE = Action(
    name="delete",
    method="POST",
    path="users/delete",
    fields={"id": REQUIRED_ID},
    identity=("id",),
    destructive=True,
    stage=4,
)
TAGS = Action(
    name="tags",
    method="PUT",
    path="users/tags/edit",
    fields={"id": REQUIRED_ID, "add": Field(kind="array"), "remove": Field(kind="array")},
    identity=("id",),
    rules=(AnyPresent(("add", "remove")),),
    # Seed 002 marks `add` required, and its removal example sends `add=[]`.
    defaults={"add": "[]"},
    stage=1,
)
ACTIONS = (IDENTIFY, TRACK, ALIAS, UNSUBSCRIBE, RESUBSCRIBE, DELETE, TAGS)

PRODUCTION = "https://api.getvero.com/api/v2"

# One dict for every request: aiohttp only reads it, and a copy per request is waste.
JSON_HEADERS = {"Content-Type": "application/json"}

# Vero answers these when the fault is passing (rate limit, overload); everything else is final.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Vero:
    """Vero's rules for where the token goes and what its answers mean."""

    name: str = "vero"
    title: str = "Vero"
    default_endpoint: str = PRODUCTION
    token_env: str = "VERO_AUTH_TOKEN"
    credential_fields: frozenset[str] = frozenset({"auth_token"})
    default_rate: float | None = None  # Vero documents no request limit
    time_format: str = TIME_FORMAT
    actions: Mapping[str, Action] = field(
        default_factory=lambda: {action.name: action for action in ACTIONS}
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
            return redirect_refusal(status)
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
