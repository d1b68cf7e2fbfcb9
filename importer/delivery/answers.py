"""An API's answer as the importer reads it: at most a bounded number of bytes (an answer is never trusted to be small), and a status and message said in one line."""

from __future__ import annotations

import aiohttp

# An answer's body is read up to this many bytes: enough for any API message, and a server (or
# a proxy) that answers with megabytes of HTML cannot fill memory, the log or the dead letters.
ANSWER_BYTES = 64 * 1024


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of the body; releasing the response drops the rest with the socket."""
    if response.content_length is not None and response.content_length <= limit:
        return await response.read()  # the common case, in one step
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def describe_answer(status: int | None, message: str) -> str:
    """A retry reason that always names the HTTP status when there was one."""
    if status is None or message.startswith(f"HTTP {status}"):
        return message
    return f"HTTP {status}: {message}"
