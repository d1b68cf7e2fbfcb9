"""Sending from N processes: the HTTP work of one run spread over the machine's cores.

The parent keeps everything that must be one: reading, the checkpoint, the dead letters, the
progress and the summary. Each sender process (delivery/sender_process.py) only runs
`send_all` over the requests the parent hands it and answers with their results. A row goes to
the process its `route` (a hash of its user) picks, so one user's rows stay in one process;
they reach it in the order they came, with their route, so `per_user_order` holds there too.

Parent and senders talk over the sender's stdin and stdout in length-prefixed pickled frames;
the token travels in the first frame, never in argv or the environment (the senders' copy of
the environment goes without the destination's token variable). A sender that loses its
parent (kill -9) sees its stdin end and exits at once, so nothing is sent that nobody records.
The senders run in a session and process group of their own and ignore SIGINT and SIGTERM
besides: a terminal's Ctrl-C or a scheduler's stop reaches the parent, which drains them in
order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

from importer.delivery.options import SendOptions
from importer.delivery.send import SendStats, close_source
from importer.delivery.sender_process import frame, read_frame
from importer.destinations import Destination, get_destination
from importer.errors import ImporterError
from importer.model import Request, Result
from importer.state.rate_log import partition

# Requests handed to a sender in one frame at most; fewer when it would otherwise wait.
FRAME_REQUESTS = 256
# How long a sender may take to start and to say it is done beyond its own drain time.
GRACE_S = 10.0


def share(options: SendOptions, workers: int, index: int = 0) -> SendOptions:
    """Sender `index`'s part of the run's limits: concurrency, rate and the starts allowed per
    window are totals across senders, and each holds a part of the window's earlier starts."""
    rate = None if options.rate is None else options.rate / workers
    concurrency = max(1, math.ceil(options.concurrency / workers))
    window = options.rate_window
    if window is not None:
        # Rounded down, so the senders together stay within the API's quota.
        window = (max(1, window[0] // workers), window[1])
    starts = partition(options.rate_starts, index, workers)
    return dataclasses.replace(
        options, concurrency=concurrency, rate=rate, rate_window=window, rate_starts=starts
    )


class _Sender:
    """The parent's handle on one sender process."""

    def __init__(self, process: asyncio.subprocess.Process, window: int) -> None:
        if process.stdin is None or process.stdout is None:
            raise ValueError("a sender process needs its stdin and stdout piped")
        self.process = process
        self.writer = process.stdin
        self.reader = process.stdout
        self.window = window
        self.pending: list[tuple[int, str, str, int, bytes]] = []
        self.outstanding = 0
        self.room = asyncio.Event()
        self.room.set()
        self.stats: dict[str, Any] | None = None
        self.finished = False

    def send(self, message: object) -> None:
        """Queue a frame to the sender; a sender that has gone is not written to."""
        if not self.finished and not self.writer.is_closing():
            self.writer.write(frame(message))

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
        sender.pending.append((seq, request.method, request.path, request.route, request.body))
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
            message = await read_frame(sender.reader)
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
        # After the recorder's write of these marks, which it scheduled first: the sender
        # starts more only once they are in the checkpoint (sender_process.AckWindow).
        asyncio.get_running_loop().call_soon(sender.send, ("ack", len(results)))
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

    `options.concurrency`, `options.rate` and `options.rate_window` are totals: each sender
    gets its share. Results come back to this process, which calls `on_result` for each, as
    send_all does.
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
    senders: list[_Sender] = []
    try:
        for index in range(workers):
            start = {
                "endpoint": endpoint,
                "token": token,
                "destination": destination.name,
                "options": share(options, workers, index),
            }
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",  # this importer's code, not a module of the same name in the cwd
                "-m",
                "importer.delivery.sender_process",
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
