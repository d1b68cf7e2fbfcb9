"""Keep the token out of everything the importer writes: messages, dead letters, logs and reports
carry an API's answer only after it is scrubbed of the token and its credential fields, and clipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from urllib.parse import quote

# Messages are cut to this many characters, after the token was scrubbed out of the whole text.
MESSAGE_CHARS = 500


# A token echoed after its field name is hidden even when cut short or re-encoded by the server.
_FIELD_VALUE = r"""((?:{names})(?:\\?["'])?\s*[:=]\s*(?:\\?["'])?)[^"'\\\s&,;}}]+"""


# The shortest token prefix worth hiding at the end of a text cut at ANSWER_BYTES.
_PREFIX_CHARS = 4


def make_scrubber(token: str, *, fields: Iterable[str] = ()) -> Callable[[str], str]:
    """A function that hides the token in server text: raw, JSON-escaped or URL-quoted, any
    value after one of the credential's field names (`fields`), and a start of the token that
    ends a cut text."""
    forms = {token, _json_escaped(token), quote(token, safe="")} - {""}
    ordered = sorted(forms, key=len, reverse=True)
    names = "|".join(re.escape(name) for name in sorted(fields))
    field_value = re.compile(_FIELD_VALUE.format(names=names), re.IGNORECASE) if names else None

    def scrub(text: str) -> str:
        for form in ordered:
            if form in text:
                text = text.replace(form, "***")
        if field_value is not None:
            text = field_value.sub(r"\1***", text)
        for form in ordered:
            size = _prefix_ending(text, form)
            if size >= _PREFIX_CHARS:
                return text[:-size] + "***"
        return text

    return scrub


def _prefix_ending(text: str, form: str) -> int:
    """The length of the longest start of `form`, shorter than all of it, that ends `text`.

    Knuth-Morris-Pratt over the last len(form) - 1 characters: linear in both lengths, where
    trying every length was quadratic in the token's (a 5 MB token spun for many minutes).
    """
    tail = text[max(0, len(text) - len(form) + 1) :] if len(form) > 1 else ""
    if form[:_PREFIX_CHARS] not in tail:
        return 0  # the usual case, found at C speed
    pattern = form[: len(tail)]
    # fall[i]: the longest proper start of pattern that also ends pattern[: i + 1]
    fall = [0] * len(pattern)
    size = 0
    for i in range(1, len(pattern)):
        char = pattern[i]
        while size and pattern[size] != char:
            size = fall[size - 1]
        if pattern[size] == char:
            size += 1
        fall[i] = size
    size = 0
    for char in tail:
        while size and (size == len(pattern) or pattern[size] != char):
            size = fall[size - 1]
        if pattern[size] == char:
            size += 1
    return size


def clip(text: str, limit: int = MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def _json_escaped(text: str) -> str:
    return json.dumps(text)[1:-1]
