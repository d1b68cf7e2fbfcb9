"""The payload-file line: what a dry run's `--out` and a dead-letter file hold, and replay reads.

A payload file is JSONL, one request a line, its members in this order:

    {"method": "POST", "path": "events/track", "body": {...},
     "source": {"file": "events.csv", "line": 14}}

`method` and `path` name the API call; `body` is the request body exactly as it is sent, without
the credential (the destination's `credential_fields`; the token comes from the environment at
send time); `source` is the input file and line the row came from. A dead letter adds
`"status"` (the last HTTP status, null when none came) and `"error"` (why it was given up).
This module writes both kinds and parses them back; nobody else spells the format.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

import polars as pl

from importer.jsoncodec import dump_json, load_json
from importer.model import Result


@dataclass(frozen=True, slots=True)
class PayloadLine:
    """One request read back from a payload file; `body` is compact JSON text."""

    method: str
    path: str
    body: str


def payload_lines(body: pl.Expr, line: pl.Expr, *, method: str, path: str, source: str) -> pl.Expr:
    """Lines of a dry run's `--out`: the JSON text `body` and source `line` of one action's rows
    from the input `source`, built column-wise."""
    return pl.concat_str(
        pl.lit(_head(method, path)),
        body,
        pl.lit(_source(source)),
        line.cast(pl.String),
        pl.lit("}}"),
    )


def dead_letter_line(result: Result) -> bytes:
    """The dead-letter line of an undeliverable request: its payload line, status and error."""
    request = result.request
    tail = json.dumps(
        {"status": result.status, "error": result.error}, ensure_ascii=False, separators=(",", ":")
    )
    return b"".join(
        (
            _head(request.method, request.path).encode(),
            request.body,
            f"{_source(request.source_file)}{request.line}}},{tail[1:]}\n".encode(),
        )
    )


def parse_line(
    text: bytes, *, calls: Collection[tuple[str, str]], credential_fields: Collection[str]
) -> PayloadLine | str:
    """The request on one line of a payload file, or why it is not one: not a JSON object, a call
    not in `calls` (method, path), a body that is not an object or carries a credential."""
    try:
        line = load_json(text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        return f"line is not valid JSON: {exc}"
    if not isinstance(line, dict):
        return "line is not a JSON object"
    method, call, body = line.get("method"), line.get("path"), line.get("body")
    if (method, call) not in calls:
        known = ", ".join(f"{m} {p}" for m, p in sorted(calls))
        return f"{method} {call} is not a call of this destination ({known})"
    if not isinstance(body, dict):
        return "body must be a JSON object"
    credentials = sorted(name for name in credential_fields if name in body)
    if credentials:
        return f"body carries an {credentials[0]}; remove it (the token comes from the environment)"
    try:
        encoded = dump_json(body)
    except ValueError:
        return "body holds a lone UTF-16 surrogate, which is not text"
    return PayloadLine(method=str(method), path=str(call), body=encoded)


def call_of(text: bytes) -> tuple[str, str] | None:
    """The (method, path) a payload line names, or None when it names none; old files and new
    read the same, as every line has always begun with them."""
    try:
        line = load_json(text.decode("utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    if not isinstance(line, dict):
        return None
    method, path = line.get("method"), line.get("path")
    return (method, path) if isinstance(method, str) and isinstance(path, str) else None


def _head(method: str, path: str) -> str:
    """The start of a line, up to the body."""
    return json.dumps({"method": method, "path": path}, separators=(",", ":"))[:-1] + ',"body":'


def _source(file: str) -> str:
    """The members after the body, up to the source line's number."""
    return ',"source":{"file":' + json.dumps(file, ensure_ascii=False) + ',"line":'
