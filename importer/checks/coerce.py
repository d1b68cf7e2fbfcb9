"""`[types]` in a mapping: a source column forced to a type, with a message where it cannot be.

Cells are JSON text (see inputs/reader.py); a converted cell is JSON text again.
"""

from __future__ import annotations

import polars as pl

from importer.jsoncodec import dump_json, load_json
from importer.jsontext import json_as_text, json_kind, json_string

INT_RE = r"^-?(?:0|[1-9]\d*)$"
NUMBER_RE = r"^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$"
TRUE_WORDS = ["true", "yes", "1"]
FALSE_WORDS = ["false", "no", "0"]


def coerce(value: pl.Expr, type_name: str) -> tuple[pl.Expr, pl.Expr]:
    """The cell converted to the forced type, and a message where it cannot be."""
    kind = json_kind(value)
    text = json_as_text(value)
    if type_name == "string":
        converted = (
            pl.when(kind == "string").then(value).otherwise(json_string(pl.coalesce(text, value)))
        )
        return pl.when(kind == "null").then(None).otherwise(converted), pl.lit(None, pl.String)
    if type_name in ("integer", "number"):
        pattern = INT_RE if type_name == "integer" else NUMBER_RE
        ok = text.str.contains(pattern)
        message = pl.when(value.is_not_null() & (kind != "null") & ~ok.fill_null(False)).then(
            pl.format(
                "{} is not {}",
                value,
                pl.lit("an integer" if type_name == "integer" else "a number"),
            )
        )
        return pl.when(ok).then(text), message
    if type_name == "boolean":
        lowered = text.str.to_lowercase()
        converted = (
            pl.when(lowered.is_in(TRUE_WORDS))
            .then(pl.lit("true"))
            .when(lowered.is_in(FALSE_WORDS))
            .then(pl.lit("false"))
        )
        message = pl.when(value.is_not_null() & (kind != "null") & converted.is_null()).then(
            pl.format("{} is not a boolean (true/false, yes/no, 1/0)", value)
        )
        return converted, message
    # json: a text cell that holds JSON, as CSV exports write nested data
    parsed = (
        pl.when(kind == "string")
        .then(text)
        .otherwise(value)
        .map_batches(_reencode, return_dtype=pl.String)
    )
    message = pl.when(value.is_not_null() & parsed.is_null()).then(
        pl.format("{} is not valid JSON", value)
    )
    return parsed, message


def _reencode(texts: pl.Series) -> pl.Series:
    """Each text's JSON re-encoded compactly, null where it is not JSON (a Python pass, json only)."""

    def one(text: str | None) -> str | None:
        if text is None:
            return None
        try:
            return dump_json(load_json(text))
        except (ValueError, RecursionError):
            return None

    return pl.Series(texts.name, [one(t) for t in texts.to_list()], dtype=pl.String)
