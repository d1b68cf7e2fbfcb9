"""What the command line asks for that matters before click has parsed it: whether errors are
JSON events (`--log-format json`, or IMPORTER_LOG_FORMAT=json). Kept free of heavy imports, so
the console script can answer a Ctrl-C during start-up in the format that was asked for."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

LOG_FORMAT_ENV = "IMPORTER_LOG_FORMAT"
JSON = "json"


def asks_json(args: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Whether `args` (or, when they name no --log-format, the environment) ask for JSON events;
    the last --log-format given wins, as click's does."""
    chosen = None
    for arg, value in zip(args, [*args[1:], ""], strict=True):
        if arg == "--":
            break
        if arg.startswith("--log-format="):
            chosen = arg.partition("=")[2]
        elif arg == "--log-format":
            chosen = value
    if chosen is None:
        chosen = environ.get(LOG_FORMAT_ENV, "")
    return chosen == JSON


def error_line(message: str, *, exit_code: int) -> str:
    """An `error` event as events.EventLog writes it, for the moments before it can be loaded."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = {"ts": now, "event": "error", "message": message, "hint": None, "exit_code": exit_code}
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
