"""Read a payload file (a dry run's --out, or a dead-letter file) back into request bodies.

Each line is a request as importer.payloads.payload_file describes it. A line that is not one, or names
a call the destination does not have, is a reject with its line; the rest are sent as they
are, with the same engine, limits and checkpoint as a run.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path

import polars as pl

from importer.checks.rejects import RejectsWriter
from importer.columns import BODY, COLUMN, ERROR, LINE, METHOD, PATH, RAW, RULE
from importer.delivery.options import Feed
from importer.destinations import DESTINATIONS, Action, Destination
from importer.errors import InputError
from importer.inputs.reader import open_input
from importer.outcome import Summary
from importer.payloads.payload_file import PayloadLine, call_of, parse_line

BATCH_LINES = 50_000
# Lines read to tell a payload file's destination from the calls it names.
SNIFF_LINES = 1_000
SCAN_BYTES = 1 << 20


def destination_of_payloads(path: Path) -> Destination | None:
    """The destination whose calls the first lines of the payload file name (destinations'
    paths differ); None when no line names one (an
    empty or unreadable file: the caller's default stands, and replay reports the file)."""
    calls = {
        (action.method, action.path): destination
        for destination in DESTINATIONS.values()
        for action in destination.actions.values()
    }
    try:
        with path.open("rb") as handle:
            for number, text in enumerate(handle):
                if number >= SNIFF_LINES:
                    break
                found = calls.get(call_of(text) or ("", ""))
                if found is not None:
                    return found
    except OSError:
        return None
    return None


def destructive_calls(path: Path, destination: Destination) -> list[Action]:
    """The actions of `destination` that cannot be undone and that the payload file holds. A
    pass over the bytes looks for their paths; only a file that holds one is read line by line
    (a hand-edited line may space its members differently)."""
    wanted = {(a.method, a.path): a for a in destination.actions.values() if a.destructive}
    names = {json.dumps(p).encode() for _, p in wanted}
    if not names or not _holds_any(path, names):
        return []
    found: dict[tuple[str, str], Action] = {}
    with path.open("rb") as handle:
        for text in handle:
            call = call_of(text) if any(name in text for name in names) else None
            if call in wanted:
                found[call] = wanted[call]
    return list(found.values())


def _holds_any(path: Path, needles: set[bytes]) -> bool:
    """Whether the file's bytes hold any of `needles` (read a piece at a time)."""
    longest = max(len(needle) for needle in needles)
    tail = b""
    try:
        with path.open("rb") as handle:
            while piece := handle.read(SCAN_BYTES):
                window = tail + piece
                if any(needle in window for needle in needles):
                    return True
                tail = window[-longest:]
    except OSError:
        return False
    return False


def iter_payload_feeds(
    path: Path,
    *,
    destination: Destination,
    summary: Summary,
    rejects: RejectsWriter | None = None,
) -> Generator[Feed, None, None]:
    """The requests of the payload file at `path`, in batches, with its bad lines rejected."""
    source = open_input(path)
    if source.format != "jsonl":
        raise InputError(
            f"{path}: a payload file is JSONL (.jsonl), as written by --out or --dead-letter"
        )
    calls = {(a.method, a.path) for a in destination.actions.values()}
    good: dict[str, list[object]] = {LINE: [], BODY: [], METHOD: [], PATH: []}
    bad: dict[str, list[object]] = {LINE: [], RULE: [], ERROR: [], RAW: []}
    with path.open("rb") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                summary.blank_lines += 1
                continue
            summary.rows_read += 1
            request = parse_line(text, calls=calls, credential_fields=destination.credential_fields)
            if not isinstance(request, PayloadLine):
                for key, value in zip(
                    bad,
                    (number, "payload", request, text.decode("utf-8", "replace").rstrip()),
                    strict=True,
                ):
                    bad[key].append(value)
                continue
            summary.rows_valid += 1
            for key, value in zip(
                good, (number, request.body, request.method, request.path), strict=True
            ):
                good[key].append(value)
            if len(good[LINE]) >= BATCH_LINES:
                yield _feed(source.fingerprint, str(path), good)
                good = {key: [] for key in good}
    if bad[LINE]:
        frame = pl.DataFrame(
            bad, schema={LINE: pl.Int64, RULE: pl.String, ERROR: pl.String, RAW: pl.String}
        )
        summary.add_rejects(frame, source=str(path))
        if rejects is not None:
            rejects.write(
                frame.with_columns(pl.lit(None, pl.String).alias(COLUMN)), source=str(path)
            )
    if good[LINE]:
        yield _feed(source.fingerprint, str(path), good)


def _feed(fingerprint: str, name: str, columns: dict[str, list[object]]) -> Feed:
    frame = pl.DataFrame(
        columns, schema={LINE: pl.Int64, BODY: pl.String, METHOD: pl.String, PATH: pl.String}
    )
    return Feed(fingerprint=fingerprint, name=name, frame=frame)
