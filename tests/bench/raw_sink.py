"""A minimal HTTP/1.1 sink for benchmarks: answers every request with Vero's 200, nothing else.

    python tests/bench/raw_sink.py PORT_FILE

It parses just enough (headers, Content-Length, keep-alive) to answer each request, so nearly
all the CPU a benchmark measures is the importer's. It writes its port to PORT_FILE when it
listens (atomically, so a reader never sees half a number); SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 35\r\n\r\n"
    b'{"status":200,"message":"Success."}'
)


class Sink(asyncio.Protocol):
    """Answers each complete request on the connection as soon as its body has arrived."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

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
            self.transport.write(ANSWER)  # type: ignore[attr-defined]


async def serve(port_file: Path) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    partial = port_file.with_suffix(".partial")
    await asyncio.to_thread(partial.write_text, str(port))
    await asyncio.to_thread(partial.replace, port_file)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
