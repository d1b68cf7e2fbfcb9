"""The sender process of `--workers`: send_all over what its parent hands in, results back.

    python -P -m importer.delivery.sender_process    (started by importer.delivery.workers, never by hand)

It reads length-prefixed pickled frames on stdin: first ("start", config) with the endpoint,
the token, the destination's name and this sender's share of the send options; then
("batch", [(seq, method, path, route, body), ...]), ("end",) when no more will come,
("ack", n) when the parent has recorded n more results, or ("stop",) to drain and finish. It answers on stdout with ("results", [(seq, delivered, status, error, attempts)]),
("retry", [(seq, message)]), and last ("done", stats) or ("error", text, hint, is_importer_error).
When stdin ends (the parent was killed) it exits at once: nobody would record what it sent.

A request starts only while fewer than twice this sender's concurrency are started and not yet
acknowledged: answers on their way to a parent that is killed are lost to its checkpoint, and
the resumed run sends them again, so what a kill -9 can make the API receive twice stays twice
--concurrency across senders, however far behind the parent is in reading them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pickle
import signal
import struct
import sys
import traceback
from collections.abc import AsyncIterator
from typing import Any

from importer.delivery.loops import run as run_loop
from importer.delivery.send import send_all
from importer.destinations import get_destination
from importer.errors import ImporterError
from importer.model import Request, Result

_HEADER = struct.Struct(">I")


class AckWindow:
    """The starts a sender may make ahead of what its parent has recorded."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.started = 0
        self.acked = 0
        self._room = asyncio.Event()

    def take(self) -> bool:
        """Count one start, if the window has room."""
        if self.started - self.acked < self.size:
            self.started += 1
            return True
        return False

    async def wait_take(self) -> None:
        """Wait for the parent's acknowledgements to make room, then count one start."""
        while not self.take():
            self._room.clear()
            await self._room.wait()

    def ack(self, count: int) -> None:
        """The parent has recorded `count` more results."""
        self.acked += count
        self._room.set()


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame; None when the other side has gone."""
    try:
        size = _HEADER.unpack(await reader.readexactly(_HEADER.size))[0]
        return pickle.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        return None


def frame(message: object) -> bytes:
    """One message as a frame: its length, then its pickle (both ends are this code)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def _serve() -> None:
    """Run send_all over what the parent hands in; answer with results, then the stats."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    # Frames go out on a copy of stdout; stdout itself points at stderr, so that a stray print
    # of any library cannot break a frame.
    frames = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, frames)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    first = await read_frame(reader)
    if first is None:
        return
    config = first[1]
    incoming: asyncio.Queue[list[tuple[int, str, str, int, bytes]] | None] = asyncio.Queue()
    stop = asyncio.Event()
    window = AckWindow(2 * config["options"].concurrency)
    results: list[tuple[int, bool, int | None, str | None, int]] = []
    retries: list[tuple[int, str]] = []
    scheduled = False

    def flush() -> None:
        nonlocal scheduled, results, retries
        scheduled = False
        if results:
            writer.write(frame(("results", results)))
            results = []
        if retries:
            writer.write(frame(("retry", retries)))
            retries = []

    def later() -> None:
        nonlocal scheduled
        if not scheduled:
            scheduled = True
            loop.call_soon(flush)

    def on_result(result: Result) -> None:
        results.append(
            (result.request.line, result.delivered, result.status, result.error, result.attempts)
        )
        later()

    def on_retry(request: Request, message: str) -> None:
        retries.append((request.line, message))
        later()

    async def listen() -> None:
        while True:
            message = await read_frame(reader)
            if message is None:
                # The parent has gone: nobody would record what is sent from here on.
                os._exit(1)
            kind = message[0]
            if kind == "batch":
                await incoming.put(message[1])
            elif kind == "ack":
                window.ack(message[1])
            elif kind == "end":
                await incoming.put(None)
            elif kind == "stop":
                stop.set()

    async def requests() -> AsyncIterator[Request]:
        while (batch := await incoming.get()) is not None:
            for seq, method, path, route, body in batch:
                # The route goes along: per_user_order keeps one user's rows in order by it.
                yield Request(
                    method=method,
                    path=path,
                    body=body,
                    input_id="",
                    source_file="",
                    line=seq,
                    route=route,
                )

    listener = asyncio.create_task(listen())
    try:
        stats = await send_all(
            requests(),
            endpoint=config["endpoint"],
            token=config["token"],
            destination=get_destination(config["destination"]),
            options=config["options"],
            on_result=on_result,
            on_retry=on_retry,
            stop=stop,
            gate=window,
        )
    except ImporterError as exc:
        flush()
        writer.write(frame(("error", str(exc), exc.hint, True)))
    except Exception:
        flush()
        writer.write(frame(("error", traceback.format_exc(), None, False)))
    else:
        flush()
        writer.write(frame(("done", dataclasses.asdict(stats))))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener


def main() -> None:
    """The sender process: Ctrl-C and SIGTERM are the parent's to handle. Sent to the whole
    process group (a terminal's Ctrl-C, a scheduler stopping a job), they would otherwise cut
    off the requests in flight that the parent is about to let finish."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run_loop(_serve())


if __name__ == "__main__":
    main()
