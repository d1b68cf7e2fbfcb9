"""Shared helpers for tests that run files through read -> validate -> payload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import polars as pl

from importer.checks.validate import FileState, validate_frame
from importer.columns import BODY, LINE
from importer.inputs.reader import iter_batches, open_input
from importer.mapping.file import Mapping, parse_mapping
from importer.payloads.build import build_bodies

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
NOW = datetime(2026, 1, 1, tzinfo=UTC)

TRACK = {
    "destination": "vero",
    "action": "track",
    "fields": {
        "identity.id": "user_id",
        "identity.email": "email",
        "event_name": "event",
        "extras.created_at": "occurred_at",
        "data": "*",
    },
}
IDENTIFY = {
    "destination": "vero",
    "action": "identify",
    "fields": {"id": "user_id", "email": "email", "data": "*"},
}

# Vero's schemas by action name, as the tests have always named them; Userpilot's by file stem
# (`userpilot-import-track`), since its action names repeat Vero's.
_SCHEMAS = {
    path.name.removeprefix("vero-").removesuffix(".schema.json"): (
        jsonschema.Draft202012Validator(json.loads(path.read_text()))
    )
    for path in (ROOT / "schemas").glob("vero-*.schema.json")
} | {
    path.name.removesuffix(".schema.json"): (
        jsonschema.Draft202012Validator(json.loads(path.read_text()))
    )
    for path in (ROOT / "schemas").glob("userpilot-*.schema.json")
}


def schema_of(mapping: Mapping) -> jsonschema.Draft202012Validator:
    """The JSON Schema validator of the mapping's action (its whole request body)."""
    if mapping.destination.name == "vero":
        return _SCHEMAS[mapping.action.name]
    return _SCHEMAS[f"{mapping.destination.name}-{mapping.action.name.replace('_', '-')}"]


def check_body(mapping: Mapping, body: dict[str, Any]) -> None:
    """Validate one built body against its schema; a list action's body is one row of the
    request's list, so it is checked as the list's only item."""
    batch = mapping.action.bulk
    whole = {batch.list_key: [body]} if batch is not None and batch.kind == "list" else body
    schema_of(mapping).validate(whole)


def make_mapping(raw: dict[str, Any] | None = None, **changes: Any) -> Mapping:
    """A checked mapping from a dict (TRACK by default) with top-level keys replaced."""
    merged = {**(raw or TRACK), **changes}
    return parse_mapping(merged, path=Path("test-mapping.toml"))


@dataclass
class Outcome:
    """Everything a file produced: valid rows, rejects, payload bodies."""

    valid: pl.DataFrame
    rejects: pl.DataFrame
    bodies: list[dict[str, Any]]
    naive_times: int
    lines: list[int]


def run_file(
    path: Path, mapping: Mapping, *, batch_rows: int = 1000, now: datetime = NOW
) -> Outcome:
    """Read, validate and build every row of `path`; check each body against the JSON Schema."""
    source = open_input(path)
    state = FileState()
    valid, rejects, bodies, lines = [], [], [], []
    naive = 0
    for batch in iter_batches(source, batch_rows=batch_rows):
        checked = validate_frame(batch.frame, mapping, state=state, now=now, route=True)
        valid.append(checked.valid)
        rejects.extend([batch.rejects, checked.rejects])
        naive += checked.naive_times
        built = build_bodies(checked.valid, mapping, source=source)
        bodies.extend(json.loads(text) for text in built[BODY].to_list())
        lines.extend(built[LINE].to_list())
    for body in bodies:
        check_body(mapping, body)
    empty = pl.DataFrame()
    return Outcome(
        valid=pl.concat(valid, how="diagonal_relaxed") if valid else empty,
        rejects=pl.concat(rejects, how="diagonal_relaxed") if rejects else empty,
        bodies=bodies,
        naive_times=naive,
        lines=lines,
    )


def write_csv(tmp_path: Path, header: str, *rows: str, name: str = "in.csv") -> Path:
    """A CSV file with LF line ends."""
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def write_jsonl(tmp_path: Path, *rows: dict[str, Any] | str, name: str = "in.jsonl") -> Path:
    """A JSONL file; dict rows are encoded, str rows are written as they are."""
    path = tmp_path / name
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextmanager
def mock_server_process(*options: str, env: dict[str, str]) -> Iterator[str]:
    """`importer mock-server --port 0 OPTIONS` in its own process, with `env` added to this
    one's environment (the token's variable); yields its `--endpoint` URL, ends it after."""
    command = [sys.executable, "-m", "importer", "mock-server", "--port", "0", *options]
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **env},
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "listening: --endpoint " in line, line
        yield line.split("--endpoint ")[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def doc_text(name: str) -> str:
    """A page of docs/ (the reference moved out of README.md), for tests that run its examples."""
    return (ROOT / "docs" / name).read_text(encoding="utf-8")
