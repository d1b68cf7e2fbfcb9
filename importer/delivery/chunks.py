"""The chunks of a bulk upload: rows of one input as NDJSON, the request body a list upload
posts, and where a chunk is cut."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

import polars as pl

from importer.destinations.base import BulkUpload


@dataclass(slots=True)
class Chunk:
    """Rows of one input, as the NDJSON kept in the state directory until its job ends (one
    body per line); a list job's upload is the same bodies in a JSON list."""

    fingerprint: str
    name: str
    lines: list[int]
    content: bytes
    key: str
    file: str


def build_chunk(*, fingerprint: str, name: str, lines: list[int], bodies: pl.Series) -> Chunk:
    """One chunk of `bodies` (JSON text, one per row: never a raw line break inside)."""
    content = (bodies.str.join("\n")[0] + "\n").encode()
    digest = hashlib.sha256()
    digest.update(f"{fingerprint}:{lines[0]}:".encode())
    digest.update(content)
    key = digest.hexdigest()[:32]
    # A new name per attempt: a job found by name after a lost answer is this attempt's.
    file = f"importer-{key[:16]}-{secrets.token_hex(3)}.ndjson"
    return Chunk(fingerprint, name, lines, content, key, file)


def upload_body(batch: BulkUpload, content: bytes) -> bytes:
    """What a list job posts: `{"<list_key>": [body, ...]}` from a chunk's NDJSON; an "ids"
    upload posts each body's one value instead (`{"users": ["u1", "u2"]}`)."""
    if batch.kind == "ids":
        ids = [next(iter(json.loads(line).values())) for line in content.splitlines()]
        return json.dumps({batch.list_key: ids}, ensure_ascii=False).encode()
    return (
        b'{"'
        + batch.list_key.encode()
        + b'":['
        + content.rstrip(b"\n").replace(b"\n", b",")
        + b"]}"
    )


def cut_point(sizes: pl.Series, *, max_rows: int, max_bytes: int) -> int:
    """How many leading rows make one chunk: at most `max_rows`, and at most `max_bytes` of
    bodies plus separators (at least one row, so a body larger than a chunk still goes, alone,
    and the API judges it)."""
    fits = int((sizes.cast(pl.Int64).cum_sum() <= max_bytes).sum())
    return max(1, min(max_rows, fits))
