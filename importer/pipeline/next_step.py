"""What a person runs next: the whole `importer replay` command for a run's dead letters, so a
copy of it sends them where the run sent (never a credential a URL may carry)."""

from __future__ import annotations

import shlex
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from importer.destinations import Destination
from importer.state.layout import REPLAY_DIR


def public_endpoint(url: str) -> str:
    """`url` without what may carry a credential: its user and password, and its query."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url  # "embedded", or not a URL at all: nothing to strip
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def replay_command(
    dead_letters: str | Path, *, endpoint: str, destination: Destination, state_dir: Path
) -> str:
    """`importer replay FILE [--endpoint URL] --destination NAME --state STATE/replay`:
    `--endpoint` only when the run did not use the destination's default (a replay has no
    mapping, so an API's region option is not known to it); never a token or a token file. The
    replay keeps its checkpoint (and its own dead letters) beside the run's, in the run's state
    directory: the run's log belongs to the run's mapping and refuses another job."""
    args = ["importer", "replay", str(dead_letters)]
    if endpoint.rstrip("/") != destination.default_endpoint.rstrip("/"):
        args += ["--endpoint", public_endpoint(endpoint)]
    args += ["--destination", destination.name, "--state", str(state_dir / REPLAY_DIR)]
    return shlex.join(args)
