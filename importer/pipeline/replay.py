"""Read a payload file (a dry run's --out, or a dead-letter file) back into request bodies.

Each line is a request as importer.payloads.payload_file describes it. A line that is not one, or names
a call the destination does not have, is a reject with its line; the rest are sent as they
are, with the same engine, limits and checkpoint as a run.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import polars as pl

from importer.checks.rejects import RejectsWriter
from importer.columns import BODY, COLUMN, ERROR, LINE, METHOD, PATH, RAW, RULE
from importer.delivery.options import Feed
from importer.destinations import Destination
from importer.errors import InputError
from importer.inputs.reader import open_input
from importer.outcome import Summary
from importer.payloads.payload_file import PayloadLine, parse_line

BATCH_LINES = 50_000


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
