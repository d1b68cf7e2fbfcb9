"""A made-up API, defined entirely here, to prove a destination needs no change to the core.

Pinger takes `POST v1/pings` with a body of another shape than Vero's (`who.key`, `what`,
`props`, `when` as epoch-free ISO text with a Z), its key in an `X-Api-Key` header, and answers
202 `{"accepted": true}`; errors are `{"problem": "..."}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from importer.destinations.base import Action, Field
from importer.destinations.mocking import Judgement
from importer.model import Verdict

PING = Action(
    name="ping",
    method="POST",
    path="v1/pings",
    fields={
        "who.key": Field(kind="text", max_chars=20, required=True),
        "what": Field(kind="text", required=True),
        "props": Field(kind="object"),
        "when": Field(kind="time", required=True),
    },
    identity=("who.key",),
)


class PingerMock:
    """Pinger's stand-in: the key in a header, 202 on success, 422 for a body without `what`."""

    base_path = "/pinger"
    routes = frozenset({("POST", "v1/pings")})

    def credential(self, request: web.Request, body: object) -> object:
        return request.headers.get("X-Api-Key")

    def judge(self, method: str, path: str, body: object) -> Judgement:
        if not isinstance(body, dict) or not body.get("what") or "who" not in body:
            return Judgement(422, json.dumps({"problem": "what and who are required"}).encode())
        return Judgement(202, b'{"accepted": true}', record=body)

    def answer(self, status: int) -> bytes:
        return json.dumps({"problem": f"status {status}"}).encode()


@dataclass(frozen=True, slots=True)
class Pinger:
    """The destination: header auth, its own answers, its own time format and mock."""

    name: str = "pinger"
    title: str = "Pinger"
    default_endpoint: str = "https://api.pinger.invalid"
    token_env: str = "PINGER_KEY"
    credential_fields: frozenset[str] = frozenset()
    default_rate: float | None = None
    time_format: str = "%Y-%m-%dT%H:%M:%SZ"
    actions: Mapping[str, Action] = field(default_factory=lambda: {PING.name: PING})

    def authorize(self, body: bytes, token: str) -> tuple[bytes, dict[str, str]]:
        return body, {"Content-Type": "application/json", "X-Api-Key": token}

    def classify(self, status: int, body: bytes) -> tuple[Verdict, str]:
        if status == 202 and body.startswith(b'{"accepted"'):
            return Verdict.DELIVERED, "delivered"
        if status == 401:
            return Verdict.STOP, "the key was refused"
        if status in (429, 500, 502, 503, 504):
            return Verdict.RETRY, f"HTTP {status}"
        if 200 <= status < 300:
            return Verdict.STOP, f"HTTP {status} without Pinger's answer"
        return Verdict.DEAD, body.decode("utf-8", "replace")


PINGER = Pinger()
