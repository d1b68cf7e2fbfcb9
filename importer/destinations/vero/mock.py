"""Vero Track API v2 for the mock server: its routes, where the token travels, its 400 rules.

Seeds 000-003: every action answers JSON `{"status": N, "message": "..."}` and 200 on success;
the token is `auth_token` in the body (or the query string). Only `events/track` has a duplicate
window; the mock server runs it on the key `dedup_key` gives.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from importer.destinations.mocking import Judgement

MAX_LENGTH = 255  # Vero: id, email and event_name must be *less than* 255 characters
TIMEZONES = range(-12, 15)  # GMT offsets a clock can show: -12 (Baker Island) to +14 (Kiribati)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
UNIX_TIME = re.compile(r"-?\d+(\.\d+)?")
MESSAGES = {
    200: "Success.",
    401: "Invalid authentication: You must provide a valid auth_token to access this resource.",
    404: "The resource doesn't exist",
    429: "Too many requests",
    500: "An error occurred with our API",
    502: "Bad gateway",
    503: "Service unavailable",
}

Check = Callable[[dict[str, Any]], str | None]


def _is_id(value: object) -> bool:
    """Vero takes a string or a number as an identifier (a JSON bool is neither)."""
    return (isinstance(value, str) and value != "") or (
        isinstance(value, int | float) and not isinstance(value, bool)
    )


def _is_integer(value: object) -> bool:
    """A JSON integer; 2.0 counts, as it does for JSON Schema's "integer"."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _check_id(body: dict[str, Any], name: str, prefix: str = "") -> str | None:
    """One present identifier: a string or a number under 255 characters."""
    value = body[name]
    if not _is_id(value):
        return f"{prefix}{name} must be a string or a number"
    if len(str(value)) >= MAX_LENGTH:
        return f"{prefix}{name} must be less than {MAX_LENGTH} characters"
    return None


def _check_user(user: dict[str, Any], prefix: str) -> str | None:
    """Vero's rules for `id` and `email`; `prefix` is how the message names their object."""
    if not (_is_id(user.get("id")) or _is_id(user.get("email"))):
        owner = prefix.rstrip(".") or "the body"
        return f"{owner} must have an id or an email (a string or a number)"
    for name in ("id", "email"):
        if user.get(name) in (None, ""):  # absent, as a blank value is to Vero; the other is set
            continue
        problem = _check_id(user, name, prefix)
        if problem is not None:
            return problem
    email = user.get("email")
    if email not in (None, "") and not (isinstance(email, str) and EMAIL.fullmatch(email)):
        return f"{prefix}email must be a valid email address"
    return None


def _require_id(body: dict[str, Any], name: str = "id") -> str | None:
    """A required identifier: the user actions other than identify and track take no email."""
    if body.get(name) in (None, ""):
        return f"{name} is required"
    return _check_id(body, name)


def _check_objects(body: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in body and not isinstance(body[name], dict):
            return f"{name} must be a JSON object"
    return None


def _is_birthday(value: object) -> bool:
    """ISO 8601 or a UNIX timestamp, the two forms the seed says Vero accepts."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return True
    if not isinstance(value, str):
        return False
    if UNIX_TIME.fullmatch(value):
        return True
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _check_reserved(data: dict[str, Any]) -> str | None:
    """The reserved user attributes the seed gives a type: timezone and birthday."""
    timezone = data.get("timezone")
    if timezone is not None and not (_is_integer(timezone) and int(timezone) in TIMEZONES):
        return "data.timezone must be an integer GMT offset from -12 to 14"
    birthday = data.get("birthday")
    if birthday is not None and not _is_birthday(birthday):
        return "data.birthday must be an ISO 8601 date or a UNIX timestamp"
    return None


def check_identify(body: dict[str, Any]) -> str | None:
    """Why Vero would answer 400 to this `users/track` body, or None when it is fine."""
    problem = _check_user(body, "") or _check_objects(body, ("data",))
    if problem is not None:
        return problem
    channels = body.get("channels", [])
    if not (isinstance(channels, list) and all(isinstance(c, dict) for c in channels)):
        return "channels must be a JSON array of objects (type, address, platform)"
    return _check_reserved(body.get("data") or {})


def check_track(body: dict[str, Any]) -> str | None:
    """Why Vero would answer 400 to this `events/track` body, or None when it is fine."""
    identity = body.get("identity")
    if not isinstance(identity, dict):
        return "identity must be a JSON object with an id or an email"
    if identity.get("id") in (None, ""):  # seed 003: the identity "must contain an id"
        return "identity must contain an id"
    problem = _check_user(identity, "identity.")
    if problem is not None:
        return problem
    name = body.get("event_name")
    if not isinstance(name, str) or not name:
        return "event_name must be a non-empty string"
    if len(name) >= MAX_LENGTH:
        return f"event_name must be less than {MAX_LENGTH} characters"
    return _check_objects(body, ("data", "extras"))


def check_alias(body: dict[str, Any]) -> str | None:
    """Why Vero would answer 400 to this `users/reidentify` body, or None when it is fine."""
    problem = _require_id(body) or _require_id(body, "new_id")
    if problem is None and str(body["id"]) == str(body["new_id"]):
        problem = "new_id must differ from id"
    return problem


def check_user_id(body: dict[str, Any]) -> str | None:
    """Why Vero would answer 400 to an unsubscribe, resubscribe or delete body, or None."""
    return _require_id(body)


def check_tags(body: dict[str, Any]) -> str | None:
    """Why Vero would answer 400 to this `users/tags/edit` body, or None when it is fine."""
    problem = _require_id(body)
    if problem is not None:
        return problem
    if body.get("add") is None:  # seed 002: `add` is required, `[]` when only removing
        return "add is required (an empty array when only removing tags)"
    for name in ("add", "remove"):
        tags = body.get(name)
        if tags is None:  # remove is optional
            continue
        if not (isinstance(tags, list) and all(isinstance(tag, str) for tag in tags)):
            return f"{name} must be a JSON array of strings"
    if not (body.get("add") or body.get("remove")):
        return "add or remove must hold at least one tag"
    return None


def dedup_key(body: dict[str, Any]) -> tuple[str, ...]:
    """What Vero compares to call a valid track body a duplicate (seed 000's three rules).

    An empty `data` counts as no data, as a Rails backend's `present?` would see it.
    """
    identity = body["identity"]
    user = identity.get("id")
    user = str(user if _is_id(user) else identity.get("email"))
    name = body["event_name"].lower().replace(" ", "_")
    data = body.get("data")
    if data:
        return (user, name, "data", json.dumps(data, sort_keys=True, separators=(",", ":")))
    check_id = (body.get("extras") or {}).get("check_id")
    if check_id is not None:
        return (user, name, "check_id", json.dumps(check_id))
    return (user, name)


# (method, path under /api/v2) -> the rules of that action
RULES: Mapping[tuple[str, str], Check] = {
    ("POST", "users/track"): check_identify,
    ("POST", "events/track"): check_track,
    ("PUT", "users/reidentify"): check_alias,
    ("POST", "users/unsubscribe"): check_user_id,
    ("POST", "users/resubscribe"): check_user_id,
    ("POST", "users/delete"): check_user_id,
    ("PUT", "users/tags/edit"): check_tags,
}


def _answer(status: int, message: str | None = None) -> bytes:
    text = json.dumps({"status": status, "message": message or MESSAGES.get(status, "Error")})
    return text.encode()


@dataclass(frozen=True, slots=True)
class VeroMock:
    """Vero's side of the mock server (the `MockAPI` interface of importer.mock.server)."""

    base_path: str = "/api/v2"
    rules: Mapping[tuple[str, str], Check] = field(default_factory=lambda: dict(RULES))
    ok_answer: bytes = _answer(200)

    @property
    def routes(self) -> frozenset[tuple[str, str]]:
        """Every (method, path) Vero answers; anything else is its 404."""
        return frozenset(self.rules)

    def credential(self, request: web.Request, body: object) -> object:
        """Take `auth_token` out of the body, so it is never recorded; else from the query."""
        token = body.pop("auth_token", None) if isinstance(body, dict) else None
        return request.query.get("auth_token") if token is None else token

    def judge(self, method: str, path: str, body: object) -> Judgement:
        """Vero's answer to an authorised body: 200, or 400 naming the documented rule broken."""
        if not isinstance(body, dict):
            return Judgement(400, self.answer(400, "the request body must be a JSON object"))
        problem = self.rules[method, path](body)
        if problem is not None:
            return Judgement(400, self.answer(400, problem))
        key = dedup_key(body) if path == "events/track" else None
        return Judgement(200, self.ok_answer, record=body, dedup_key=key)

    def answer(self, status: int, message: str | None = None) -> bytes:
        """Vero's JSON answer shape, for 401, 404 and injected faults as for its own 400s."""
        return _answer(status, message)


VERO_MOCK = VeroMock()
