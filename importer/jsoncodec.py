"""The strict JSON codec: numbers as RFC 8259 allows them, valid UTF-8 out, and for input lines
a key named only once per object.

One decoder and one encoder serve every call (json.loads/dumps with options build new ones per
call, which was a third of the time spent on a JSONL file)."""

from __future__ import annotations

import json
import re
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is too large for a double")
    return value


class WrittenNumber(float):
    """A JSON number with a fraction or an exponent, and the text it was written as.

    Read back as a float, `1e3` would be written again as 1000.0, and an id sent as "1000.0":
    a line's top-level value keeps its text (inputs/jsonl.py), so an id travels as written.
    """

    __slots__ = ("text",)

    def __new__(cls, text: str) -> WrittenNumber:
        number = super().__new__(cls, _finite_float(text))
        number.text = text
        return number


class _DuplicateKeyError(ValueError):
    """One JSON object names a key twice: json keeps the last value, which changed a row's user."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members as a dict, refusing a key named twice rather than keeping the last."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(f"key {_show_key(key)} appears twice in one object")
            seen.add(key)
    return value


def _show_key(key: str) -> str:
    """A key as JSON text, readable where it can be; a lone surrogate is escaped, not UTF-8."""
    shown = json.dumps(key, ensure_ascii=False)
    try:
        shown.encode("utf-8")
    except UnicodeEncodeError:
        shown = json.dumps(key)
    return shown


_INT_DIGITS = re.compile(r"limit \((\d+) digits\) for integer string conversion: value has (\d+)")


# One decoder and encoder for all lines: json.loads/dumps with options build a new one per call,
# which was a third of the time spent on a JSONL file.
DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


# Input lines also refuse a key named twice in one object (load_json keeps json's last-wins),
# and keep the text of their numbers with a fraction or an exponent.
LINE_DECODER = json.JSONDecoder(
    parse_constant=_no_constant, parse_float=WrittenNumber, object_pairs_hook=_unique_keys
)


ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def load_json(text: str) -> Any:
    """Parse strict JSON: NaN, Infinity and numbers beyond a double are errors, as RFC 8259 says.

    Raises ValueError (json.JSONDecodeError among them) or RecursionError.
    """
    return DECODER.decode(text)


def dump_json(value: Any) -> str:
    """Compact JSON text that is valid UTF-8: a lone surrogate raises ValueError, not bad bytes."""
    text = ENCODER.encode(value)
    text.encode("utf-8")  # UnicodeEncodeError is a ValueError
    return text


def json_error(exc: Exception) -> str:
    if isinstance(exc, _DuplicateKeyError):
        return str(exc)
    if isinstance(exc, json.JSONDecodeError):
        if exc.msg.endswith(" at"):  # "Invalid control character at", "... starting at"
            return f"line is not valid JSON: {exc.msg} column {exc.colno}"
        return f"line is not valid JSON: {exc.msg} (column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "line is nested too deeply"
    # Python's own words name an interpreter setting; the user needs to hear what is wrong.
    if match := _INT_DIGITS.search(str(exc)):
        limit, digits = match.groups()
        return f"a number is too long: {digits} digits, the limit is {limit}"
    return f"line is not valid JSON: {exc}"
