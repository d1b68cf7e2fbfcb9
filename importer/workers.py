"""Sending from N processes: the HTTP work of one run spread over the machine's cores.

The parent keeps everything that must be one: reading, the checkpoint, the dead letters, the
progress and the summary. Each sender process (`python -m importer.workers`) only runs
`send_all` over the requests the parent hands it and answers with their results. A row goes to
the process its `route` (a hash of its user) picks, so one user's rows stay in one process.

Parent and senders talk over the sender's stdin and stdout in length-prefixed pickled frames;
the token travels in the first frame, never in argv or the environment (the senders' copy of
the environment goes without the destination's token variable). A sender that loses its
parent (kill -9) sees its stdin end and exits at once, so nothing is sent that nobody records.
The senders run in a session and process group of their own and ignore SIGINT and SIGTERM besides: a
terminal's Ctrl-C or a scheduler's stop reaches the parent, which drains them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import pickle
import signal
import struct
import sys
import time
import traceback
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

from importer.destinations import Destination, get_destination
from importer.errors import ImporterError
from importer.loops import run as run_loop
from importer.model import Request, Result
from importer.send import SendOptions, SendStats, close_source, send_all

# Requests handed to a sender in one frame at most; fewer when it would otherwise wait.
FRAME_REQUESTS = 256
# How long a sender may take to start and to say it is done beyond its own drain time.
GRACE_S = 10.0
_HEADER = struct.Struct(">I")


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    """The next frame; None when the other side has gone."""
    try:
        size = _HEADER.unpack(await reader.readexactly(_HEADER.size))[0]
        return pickle.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        return None


def _frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def share(options: SendOptions, workers: int) -> SendOptions:
    """One sender's part of the run's limits: concurrency and rate are totals across senders."""
    rate = None if options.rate is None else options.rate / workers
    concurrency = max(1, math.ceil(options.concurrency / workers))
    return dataclasses.replace(options, concurrency=concurrency, rate=rate)


class _Sender:
    """The parent's handle on one sender process."""

    def __init__(self, process: asyncio.subprocess.Process, window: int) -> None:
        if process.stdin is None or process.stdout is None:
            raise ValueError("a sender process needs its stdin and stdout piped")
        self.process = process
        self.writer = process.stdin
        self.reader = process.stdout
        self.window = window
        self.pending: list[tuple[int, str, str, bytes]] = []
        self.outstanding = 0
        self.room = asyncio.Event()
        self.room.set()
        self.stats: dict[str, Any] | None = None
        self.finished = False

    def send(self, message: object) -> None:
        """Queue a frame to the sender; a sender that has gone is not written to."""
        if not self.finished and not self.writer.is_closing():
            self.writer.write(_frame(message))

    def flush(self) -> None:
        """Hand the sender what is pending."""
        if self.pending:
            self.send(("batch", self.pending))
            self.pending = []


class _Pool:
    """The state of a run across senders; single-threaded by asyncio, like send_all's."""

    def __init__(
        self,
        senders: list[_Sender],
        *,
        on_result: Callable[[Result], None],
        on_retry: Callable[[Request, str], None] | None,
    ) -> None:
        self.senders = senders
        self.on_result = on_result
        self.on_retry = on_retry
        self.in_flight: dict[int, Request] = {}
        self.pulled = self.delivered = self.dead = 0
        self.halt = asyncio.Event()
        self.interrupted = False
        self.error: BaseException | None = None
        self._flush_scheduled = False

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.stop_all()

    def stop_all(self) -> None:
        """No new request starts anywhere; those in flight finish in each sender's drain."""
        if self.halt.is_set():
            return
        self.halt.set()
        for sender in self.senders:
            sender.send(("stop",))
            sender.room.set()  # a producer waiting for room wakes up and sees the halt

    async def produce(self, requests: AsyncIterable[Request] | Iterable[Request]) -> None:
        """Hand each request to its sender, at most `window` unanswered per sender."""
        exhausted = False
        try:
            if isinstance(requests, AsyncIterable):
                async for request in requests:
                    if not await self._hand(request):
                        return
            else:
                for request in requests:
                    if not await self._hand(request):
                        return
            exhausted = True
            for sender in self.senders:
                sender.flush()
                sender.send(("end",))
        except Exception as exc:
            self.fail(exc)
        finally:
            if not exhausted:
                with contextlib.suppress(Exception):
                    await close_source(requests)

    async def _hand(self, request: Request) -> bool:
        if self.halt.is_set():
            return False
        sender = self.senders[request.route % len(self.senders)]
        while sender.outstanding >= sender.window:
            sender.flush()
            sender.room.clear()
            await sender.room.wait()
            if self.halt.is_set():
                return False
        seq = self.pulled
        self.pulled += 1
        self.in_flight[seq] = request
        sender.outstanding += 1
        sender.pending.append((seq, request.method, request.path, request.body))
        if len(sender.pending) >= FRAME_REQUESTS:
            sender.flush()
        elif not self._flush_scheduled:
            # Whatever is pending goes out as soon as the producer waits for anything.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_all)
        return True

    def _flush_all(self) -> None:
        self._flush_scheduled = False
        for sender in self.senders:
            sender.flush()

    async def listen(self, sender: _Sender) -> None:
        """Take a sender's results until it says it is done or goes away; never raises, so
        that every sender gets its drain whatever went wrong here."""
        try:
            await self._listen(sender)
        except Exception as exc:
            self.fail(exc)

    async def _listen(self, sender: _Sender) -> None:
        while True:
            message = await _read_frame(sender.reader)
            if message is None:
                sender.finished = True
                if sender.stats is None:
                    code = await sender.process.wait()
                    self.fail(ImporterError(f"a sender process ended unexpectedly (exit {code})"))
                return
            kind = message[0]
            if kind == "results":
                self._results(sender, message[1])
            elif kind == "retry":
                self._retries(message[1])
            elif kind == "done":
                sender.stats = message[1]
                sender.finished = True
                if sender.stats.get("stopped_reason"):
                    self.stop_all()
                return
            elif kind == "error":
                sender.finished = True
                sender.stats = {}
                text, hint, is_importer_error = message[1:]
                self.fail(
                    ImporterError(text, hint=hint)
                    if is_importer_error
                    else RuntimeError(f"a sender process failed:\n{text}")
                )
                return

    def _retries(self, notices: list[tuple[int, str]]) -> None:
        if self.on_retry is None:
            return
        for seq, text in notices:
            request = self.in_flight.get(seq)
            if request is not None:
                try:
                    self.on_retry(request, text)
                except Exception as exc:
                    self.fail(exc)

    def _results(
        self, sender: _Sender, results: list[tuple[int, bool, int | None, str | None, int]]
    ) -> None:
        for seq, delivered, status, error, attempts in results:
            request = self.in_flight.pop(seq)
            sender.outstanding -= 1
            if delivered:
                self.delivered += 1
            else:
                self.dead += 1
            try:
                self.on_result(
                    Result(
                        request=request,
                        delivered=delivered,
                        status=status,
                        error=error,
                        attempts=attempts,
                    )
                )
            except Exception as exc:
                self.fail(exc)
        if sender.outstanding < sender.window:
            sender.room.set()


async def send_across_workers(
    requests: AsyncIterable[Request] | Iterable[Request],
    *,
    workers: int,
    endpoint: str,
    token: str,
    destination: Destination,
    options: SendOptions,
    on_result: Callable[[Result], None],
    on_retry: Callable[[Request, str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> SendStats:
    """send_all, spread over `workers` sender processes; the same guarantees and report.

    `options.concurrency` and `options.rate` are totals: each sender gets its share. Results
    come back to this process, which calls `on_result` for each, as send_all does.
    """
    started = time.monotonic()
    if get_destination(destination.name) is not destination:
        # A sender loads the destination by name; another object of that name would be
        # replaced by the registered one without a word.
        raise ImporterError(
            f"--workers needs a registered destination; {destination.name!r} is not the one "
            "registered under its name",
            hint="use --workers 1",
        )
    if stop is not None and stop.is_set():
        return SendStats(
            requests=0,
            retries=0,
            delivered=0,
            dead=0,
            stopped_reason=None,
            elapsed_s=0.0,
            interrupted=True,
        )
    part = share(options, workers)
    # The token goes in the first frame, not in the senders' environment.
    environment = {k: v for k, v in os.environ.items() if k != destination.token_env}
    start = {
        "endpoint": endpoint,
        "token": token,
        "destination": destination.name,
        "options": part,
    }
    senders: list[_Sender] = []
    try:
        for _ in range(workers):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",  # this importer's code, not a module of the same name in the cwd
                "-m",
                "importer.workers",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=environment,
                # Its own session and process group (uvloop knows no process_group): a
                # terminal's Ctrl-C or a scheduler's SIGTERM to the group reaches only this
                # process, which drains the senders in order.
                start_new_session=True,
            )
            sender = _Sender(process, window=2 * part.concurrency + FRAME_REQUESTS)
            sender.send(("start", start))
            senders.append(sender)
        pool = _Pool(senders, on_result=on_result, on_retry=on_retry)
        listeners = [asyncio.create_task(pool.listen(sender)) for sender in senders]
        producer = asyncio.create_task(pool.produce(requests))
        watch = asyncio.create_task(_watch(stop, pool)) if stop is not None else None
        try:
            await asyncio.gather(*listeners)
        finally:
            if watch is not None:
                watch.cancel()
            producer.cancel()
            await asyncio.gather(producer, *([watch] if watch else []), return_exceptions=True)
    finally:
        await _end(senders, grace=part.drain_s + GRACE_S)
    if pool.error is not None:
        raise pool.error
    parts = [sender.stats or {} for sender in senders]
    # The first sender that stopped the run speaks for it; they all stop the same way.
    stopper = next((part for part in parts if part.get("stopped_reason")), {})
    return SendStats(
        requests=sum(part.get("requests", 0) for part in parts),
        retries=sum(part.get("retries", 0) for part in parts),
        delivered=pool.delivered,
        dead=pool.dead,
        stopped_reason=stopper.get("stopped_reason"),
        stopped_status=stopper.get("stopped_status"),
        elapsed_s=time.monotonic() - started,
        interrupted=pool.interrupted,
        unfinished=pool.pulled - pool.delivered - pool.dead,
        abandoned=sum(part.get("abandoned", 0) for part in parts),
    )


async def _watch(stop: asyncio.Event, pool: _Pool) -> None:
    await stop.wait()
    if not pool.halt.is_set():
        pool.interrupted = True
    pool.stop_all()


async def _end(senders: list[_Sender], *, grace: float) -> None:
    """Wait for every sender to exit, at most `grace` seconds; then kill what is left."""
    for sender in senders:
        with contextlib.suppress(Exception):
            sender.writer.close()
    waits = [asyncio.create_task(sender.process.wait()) for sender in senders]
    if waits:
        await asyncio.wait(waits, timeout=grace)
        for sender in senders:
            if sender.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    sender.process.kill()
        await asyncio.gather(*waits, return_exceptions=True)


# ------------------------------------------------------------------------- the sender process


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
    first = await _read_frame(reader)
    if first is None:
        return
    config = first[1]
    incoming: asyncio.Queue[list[tuple[int, str, str, bytes]] | None] = asyncio.Queue()
    stop = asyncio.Event()
    results: list[tuple[int, bool, int | None, str | None, int]] = []
    retries: list[tuple[int, str]] = []
    scheduled = False

    def flush() -> None:
        nonlocal scheduled, results, retries
        scheduled = False
        if results:
            writer.write(_frame(("results", results)))
            results = []
        if retries:
            writer.write(_frame(("retry", retries)))
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
            message = await _read_frame(reader)
            if message is None:
                # The parent has gone: nobody would record what is sent from here on.
                os._exit(1)
            kind = message[0]
            if kind == "batch":
                await incoming.put(message[1])
            elif kind == "end":
                await incoming.put(None)
            elif kind == "stop":
                stop.set()

    async def requests() -> AsyncIterator[Request]:
        while (batch := await incoming.get()) is not None:
            for seq, method, path, body in batch:
                yield Request(
                    method=method, path=path, body=body, input_id="", source_file="", line=seq
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
        )
    except ImporterError as exc:
        flush()
        writer.write(_frame(("error", str(exc), exc.hint, True)))
    except Exception:
        flush()
        writer.write(_frame(("error", traceback.format_exc(), None, False)))
    else:
        flush()
        writer.write(_frame(("done", dataclasses.asdict(stats))))
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
