"""Polars expressions over cells that hold JSON text, the form every value takes between stages.

Read stores each cell as the JSON text of its value (`"a"`, `7`, `{...}`); validation, payload
building and the rejects writer all look at kinds, decode scalars or build objects from them.
"""

from __future__ import annotations

import json

import polars as pl


def json_string(value: pl.Expr) -> pl.Expr:
    """Text as a JSON string literal, escaped by Polars' JSON encoder; null stays null."""
    return (
        pl.when(value.is_not_null())
        .then(pl.struct(value.alias("")).struct.json_encode().str.slice(4).str.strip_suffix("}"))
        .otherwise(None)
    )


def json_kind(value: pl.Expr) -> pl.Expr:
    """The JSON kind of a JSON text cell, from its first character."""
    first = value.str.slice(0, 1)
    return (
        pl.when(first == '"')
        .then(pl.lit("string"))
        .when(first == "{")
        .then(pl.lit("object"))
        .when(first == "[")
        .then(pl.lit("array"))
        .when(value.is_in(["true", "false"]))
        .then(pl.lit("boolean"))
        .when(value == "null")
        .then(pl.lit("null"))
        .when(value.is_not_null())
        .then(pl.lit("number"))
    )


def json_as_text(value: pl.Expr) -> pl.Expr:
    """A scalar JSON text cell as plain text: strings decoded, numbers and booleans as written.

    A string literal without a backslash has no escape, so its text is what lies between its
    quotes; only the others go through the JSON decoder, which is given null for the rest. The
    tests are on the first character, not json_kind: this runs on every cell that is read.
    """
    quoted = value.str.starts_with('"')
    escaped = value.str.contains("\\", literal=True)
    decoded = pl.when(quoted & escaped).then(value).str.json_decode(pl.String)
    nested = value.str.starts_with("{") | value.str.starts_with("[") | (value == "null")
    return (
        pl.when(quoted & ~escaped)
        .then(value.str.head(-1).str.tail(-1))
        .when(quoted)
        .then(decoded)
        .when(~nested)
        .then(value)
    )


def json_text_of(value: pl.Expr, text: pl.Expr) -> pl.Expr:
    """`text` (the plain text of the JSON text cell `value`, or null) as a JSON string literal:
    the cell itself where it is a string without escapes (the literal Polars' encoder would
    write again), else encoded. The encoder is given only the rows that need it."""
    as_is = value.str.starts_with('"') & ~value.str.contains("\\", literal=True)
    reuse = text.is_not_null() & as_is
    return pl.when(reuse).then(value).otherwise(json_string(pl.when(~reuse).then(text)))


def json_object(members: list[tuple[str, pl.Expr]]) -> pl.Expr:
    """A JSON object from (key, JSON text) pairs; null members are left out, none at all is null."""
    parts = [pl.lit(json.dumps(key, ensure_ascii=False) + ":") + value for key, value in members]
    inner = pl.concat_str(parts, separator=",", ignore_nulls=True)
    # Not when(inner != "").then(...): an eager frame evaluates `inner` twice, and nested objects
    # twice again at every level. A member is never "", so "{}" means every member was null.
    return pl.concat_str(pl.lit("{"), inner, pl.lit("}")).replace("{}", None)


# A JSON string literal, escapes included: what a scan over JSON text must step over whole.
STRING_LITERAL = r'"(?:[^"\\]|\\.)*"'


def json_outside_strings(value: pl.Expr) -> pl.Expr:
    """JSON text with every string literal emptied to `""`: what is left is structure, numbers
    and literals, which a pattern can search without being fooled by a string's content."""
    return value.str.replace_all(STRING_LITERAL, '""')
