"""Assemble request bodies, column-wise in Polars, from validated payload-path columns.

A validated frame has one JSON text column per payload path the mapping fills; this module nests
dotted paths into one JSON object per row and, where the API drops repeated calls, adds the
deterministic unique id (and the mapping's [dedup] keys) that keep replayed events apart. No row
is encoded in Python.
"""

from __future__ import annotations

import json

import polars as pl

from importer.columns import BODY, LINE, ROUTE
from importer.inputs.common import InputFile
from importer.jsontext import json_object
from importer.mapping.file import Mapping


def check_id_prefix(fingerprint: str) -> str:
    """The part of every generated unique id that names the input's content (not its path)."""
    return fingerprint[:16]


def build_bodies(valid: pl.DataFrame, mapping: Mapping, *, source: InputFile) -> pl.DataFrame:
    """LINE and BODY (the JSON text of the request body) for every validated row, and ROUTE
    where the validated frame has it. Every body carries the action's constants, and its
    defaults where the row leaves a path empty."""
    paths = {c: pl.col(c) for c in valid.columns if not c.startswith("__")}
    duplicates = mapping.action.duplicates
    if duplicates is not None:
        # Same file content and line give the same id, so a re-sent row without data is absorbed
        # within the API's window (docs/delivery.md says when it is not), while two different
        # rows never share one. A mapped id wins
        # where the row has one; an empty one would let the API merge the row with others.
        unique = duplicates.unique
        # The prefix is encoded once; digits never need escaping.
        opening = json.dumps(check_id_prefix(source.fingerprint) + ":", ensure_ascii=False)[:-1]
        row_id = pl.concat_str(pl.lit(opening), pl.col(LINE), pl.lit('"'))
        paths[unique] = pl.coalesce(paths[unique], row_id) if unique in paths else row_id
        data = paths.get(duplicates.data)
        if mapping.dedup_data_key is not None and data is not None:
            data = _with_member(data, mapping.dedup_data_key, row_id)
        if mapping.dedup_time_key is not None and data is not None and duplicates.time in paths:
            # Only where there is data: without it the unique id already keeps rows apart.
            has_data = data.is_not_null() & (data != "{}")
            timed = _with_member(data, mapping.dedup_time_key, paths[duplicates.time])
            data = pl.when(has_data).then(timed).otherwise(data)
        if data is not None:
            paths[duplicates.data] = data
    action = mapping.action
    for path, text in action.defaults.items():
        default = pl.lit(text, pl.String)
        paths[path] = pl.coalesce(paths[path], default) if path in paths else default
    # Constants first and whatever the row says: the action's own members are not the row's.
    constants = {path: pl.lit(text, pl.String) for path, text in action.constants.items()}
    paths = {**constants, **{p: e for p, e in paths.items() if p not in constants}}
    route = [ROUTE] if ROUTE in valid.columns else []
    return valid.select(LINE, _nest(paths).alias(BODY), *route)


def _with_member(data: pl.Expr, key: str, value: pl.Expr) -> pl.Expr:
    member = pl.lit(json.dumps(key, ensure_ascii=False) + ":") + value
    return (
        pl.when(data.is_null() | (data == "{}"))
        .then(pl.lit("{") + member + pl.lit("}"))
        .otherwise(data.str.strip_suffix("}") + pl.lit(",") + member + pl.lit("}"))
    )


def _nest(paths: dict[str, pl.Expr]) -> pl.Expr:
    """One JSON object from dotted paths: `user.id` and `user.email` share one `user` object."""
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
