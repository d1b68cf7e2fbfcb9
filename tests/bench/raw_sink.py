"""A minimal HTTP/1.1 sink for benchmarks: answers every request with Vero's 200, nothing else.

    python tests/bench/raw_sink.py PORT_FILE [--delay-ms N]

It parses just enough (headers, Content-Length, keep-alive) to answer each request, so nearly
all the CPU a benchmark measures is the importer's. It writes its port to PORT_FILE when it
listens (atomically, so a reader never sees half a number); SIGTERM stops it. `--delay-ms N`
answers each request N ms after its body arrived, as a distant API would: a timer per request,
so a waiting answer never holds up another connection.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
from pathlib import Path

ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 35\r\n\r\n"
    b'{"status":200,"message":"Success."}'
)


class Sink(asyncio.Protocol):
    """Answers each complete request on the connection `delay` seconds after its body arrived
    (at once when 0)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""
        self.loop = asyncio.get_running_loop()

    def answer(self) -> None:
        """Write one answer, unless the client hung up while it waited."""
        if not self.transport.is_closing():
            self.transport.write(ANSWER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 : head.find(b"\r\n", start)]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            if self.delay:
                self.loop.call_later(self.delay, self.answer)
            else:
                self.answer()


async def serve(port_file: Path, delay_ms: float = 0.0) -> None:
    """Listen on a free loopback port, publish it in `port_file`, answer until SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        functools.partial(Sink, delay_ms / 1000), "127.0.0.1", 0, backlog=1024
    )
    port = server.sockets[0].getsockname()[1]
    partial = port_file.with_suffix(".partial")
    await asyncio.to_thread(partial.write_text, str(port))
    await asyncio.to_thread(partial.replace, port_file)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("port_file", type=Path)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port_file, args.delay_ms))
