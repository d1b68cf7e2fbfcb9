"""The small frozen values that carry work from one stage of the pipeline to the next.

Path -> Batch -> (valid frame | Reject) -> Request -> Result -> checkpoint
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Request:
    """One API call ready to go: `body` is the final JSON bytes, without any credential.

    `input_id` is the content fingerprint of the file the row came from and `line` its line in
    that file; together they are the row's identity in the checkpoint log. `route` is a hash
    of the row's user: rows with the same route go through the same sender process.
    """

    method: str
    path: str
    body: bytes
    input_id: str
    source_file: str
    line: int
    route: int = 0


class Verdict(enum.Enum):
    """What to do with an answer from the API, decided in one place per destination."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Result:
    """The end of one request: delivered, or given up on with the last status and reason."""

    request: Request
    delivered: bool
    status: int | None
    error: str | None
    attempts: int
    # A refusal that is not the API's own (a 404, 405 or 501, or a body not in its format): a
    # sign the endpoint is wrong rather than the row (delivery/refusals.py).
    foreign: bool = False
