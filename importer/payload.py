"""Assemble request bodies, column-wise in Polars, from validated payload-path columns.

A validated frame has one JSON text column per payload path (`identity.id`, `event_name`,
`extras.created_at`, `data`); this module nests them into one JSON object per row, adds the
deterministic `extras.check_id` that keeps Vero from dropping replayed events as duplicates, and
turns the bodies into Requests or payload-file lines. No row is encoded in Python.
"""

from __future__ import annotations

import json

import polars as pl

from importer.jsontext import json_object, json_string
from importer.read import LINE, InputFile
from importer.schema import Mapping

BODY = "__body"
CHECK_ID = "extras.check_id"


def check_id_prefix(fingerprint: str) -> str:
    """The part of every check_id that names the input's content (not its path)."""
    return fingerprint[:16]


def build_bodies(valid: pl.DataFrame, mapping: Mapping, *, source: InputFile) -> pl.DataFrame:
    """LINE and BODY (the JSON text of the request body) for every validated row."""
    paths = {c: pl.col(c) for c in valid.columns if not c.startswith("__")}
    if CHECK_ID in mapping.action.fields:
        # Same file content and line give the same id, so a re-sent row is still absorbed by
        # Vero's deduplication, while two different rows never share one. A mapped check_id
        # wins where the row has one; an empty one would let Vero merge the row with others.
        row_id = json_string(
            pl.lit(check_id_prefix(source.fingerprint) + ":") + pl.col(LINE).cast(pl.String)
        )
        paths[CHECK_ID] = pl.coalesce(paths[CHECK_ID], row_id) if CHECK_ID in paths else row_id
        if mapping.dedup_data_key is not None and "data" in paths:
            paths["data"] = _with_member(paths["data"], mapping.dedup_data_key, row_id)
    return valid.select(LINE, _nest(paths).alias(BODY))


def _with_member(data: pl.Expr, key: str, value: pl.Expr) -> pl.Expr:
    member = pl.lit(json.dumps(key, ensure_ascii=False) + ":") + value
    return (
        pl.when(data.is_null() | (data == "{}"))
        .then(pl.lit("{") + member + pl.lit("}"))
        .otherwise(data.str.strip_suffix("}") + pl.lit(",") + member + pl.lit("}"))
    )


def _nest(paths: dict[str, pl.Expr]) -> pl.Expr:
    """One JSON object from dotted paths: `identity.id` and `identity.email` share `identity`."""
    groups: dict[str, list[tuple[str, pl.Expr]]] = {}
    members: dict[str, pl.Expr] = {}
    for path, expr in paths.items():
        head, _, rest = path.partition(".")
        if rest:
            groups.setdefault(head, []).append((rest, expr))
            members.setdefault(head, pl.lit(None, pl.String))
        else:
            members[head] = expr
    for head, children in groups.items():
        members[head] = json_object(children)
    return json_object(list(members.items()))


def payload_lines(bodies: pl.DataFrame, mapping: Mapping, *, source: InputFile) -> pl.Series:
    """Payload-file lines (DESIGN.md): method, path, body and source of each request."""
    action = mapping.action
    head = json.dumps({"method": action.method, "path": action.path}, separators=(",", ":"))[:-1]
    file_json = json.dumps(source.name, ensure_ascii=False)
    return bodies.select(
        pl.concat_str(
            pl.lit(head + ',"body":'),
            pl.col(BODY),
            pl.lit(',"source":{"file":' + file_json + ',"line":'),
            pl.col(LINE).cast(pl.String),
            pl.lit("}}"),
        )
    ).to_series()
