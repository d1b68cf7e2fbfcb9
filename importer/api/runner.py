"""Where a delivery's event loop runs when a Python caller starts it: wherever the caller lives.

    the main thread, no loop running   a loop of its own, SIGINT and SIGTERM wired to the drain
                                       (the first finishes the requests in flight and saves;
                                       a second saves what was acknowledged and quits at once)
    another thread (an Airflow task)   a loop of its own, no signal handlers (only the main
                                       thread may install them)
    inside a running loop (a notebook) a worker thread with a loop of its own; a Ctrl-C that
                                       reaches the waiting caller drains the same way

Either way an interrupted delivery returns its summary with `interrupted` set, after the drain;
the caller decides what that means (the CLI exits 130, the Python API raises KeyboardInterrupt).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from importer.delivery.deliver import DeliveryControl
from importer.delivery.loops import run as run_loop

T = TypeVar("T")

Job = Callable[[DeliveryControl], Coroutine[Any, Any, T]]
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Abandoned(KeyboardInterrupt):
    """A second Ctrl-C: the caller quits without waiting for the requests in flight; what was
    acknowledged is saved."""


def run_delivery(
    job: Job[T],
    *,
    notice: Callable[[str], None],
    abandon: Callable[[], None] | None = None,
    beside: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Run `job` to its end on a loop of its own, in this thread or, when this thread already
    runs a loop, in a worker thread. `notice` says that a signal started the drain; `abandon`
    is called on a second one after the save (the default raises Abandoned). `beside` runs
    alongside the job, cancelled when it ends (the CLI's timed progress events)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_here(job, notice=notice, abandon=abandon, beside=beside)
    return _run_in_thread(job, notice=notice, abandon=abandon, beside=beside)


async def _main(
    job: Job[T],
    control: DeliveryControl,
    *,
    signals: bool,
    notice: Callable[[str], None],
    abandon: Callable[[], None] | None,
    beside: Callable[[], Awaitable[None]] | None,
    abandoned: threading.Event | None = None,
) -> T:
    loop = asyncio.get_running_loop()
    # The handlers before ours, put back after: the loop's removal would leave the defaults,
    # and a host process (a scheduler's task runner) may rely on its own SIGTERM handler.
    wired: dict[signal.Signals, Any] = {}
    task = asyncio.current_task()
    if signals:
        for signum in SIGNALS:
            wired[signum] = signal.getsignal(signum)
            loop.add_signal_handler(
                signum, on_signal, signum, control, notice, abandon, task, abandoned
            )
    aside = None if beside is None else asyncio.ensure_future(beside())
    try:
        return await job(control)
    finally:
        if aside is not None:
            aside.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await aside
        for signum, previous in wired.items():
            loop.remove_signal_handler(signum)
            if previous is not None:
                signal.signal(signum, previous)


def on_signal(
    signum: int,
    control: DeliveryControl,
    notice: Callable[[str], None],
    abandon: Callable[[], None] | None = None,
    task: asyncio.Task[Any] | None = None,
    abandoned: threading.Event | None = None,
) -> None:
    """The first signal starts the drain and says so; a second saves what was acknowledged,
    calls `abandon` and cancels `task` (the delivery), noting it in `abandoned`."""
    if not control.stop.is_set():
        control.stop.set()
        notice(
            f"{signal.Signals(signum).name}: finishing the requests in flight, then saving the "
            "checkpoint (press Ctrl-C again to quit at once)"
        )
        return
    # Quit even when the disk refuses the sync: every mark already reached the OS as it came.
    with contextlib.suppress(Exception):
        control.sync()
    if abandon is not None:
        abandon()
    if abandoned is not None:
        abandoned.set()
    if task is not None:
        task.cancel()


def _run_here(
    job: Job[T],
    *,
    notice: Callable[[str], None],
    abandon: Callable[[], None] | None,
    beside: Callable[[], Awaitable[None]] | None,
) -> T:
    """In this thread; signal handlers only on the main thread, the one Python lets set them."""
    control = DeliveryControl()
    signals = threading.current_thread() is threading.main_thread()
    abandoned = threading.Event()
    main = _main(
        job,
        control,
        signals=signals,
        notice=notice,
        abandon=abandon,
        beside=beside,
        abandoned=abandoned,
    )
    try:
        return run_loop(main)
    except asyncio.CancelledError:
        if abandoned.is_set():
            raise Abandoned(ABANDONED) from None
        raise


ABANDONED = "interrupted again: quit at once; the checkpoint holds every acknowledged row"


def _run_in_thread(
    job: Job[T],
    *,
    notice: Callable[[str], None],
    abandon: Callable[[], None] | None,
    beside: Callable[[], Awaitable[None]] | None,
) -> T:
    """In a worker thread with its own loop, this thread waiting for it. A KeyboardInterrupt
    raised while waiting (a notebook's interrupt) starts the drain; a second one saves and
    gives up waiting."""
    control = DeliveryControl()
    started: Future[asyncio.AbstractEventLoop] = Future()
    done: Future[T] = Future()

    async def main() -> T:
        started.set_result(asyncio.get_running_loop())
        return await _main(job, control, signals=False, notice=notice, abandon=None, beside=beside)

    def work() -> None:
        try:
            done.set_result(run_loop(main()))
        except BaseException as exc:  # handed to the waiting caller, who raises it
            if not started.done():
                started.set_exception(exc)
            done.set_exception(exc)

    worker = threading.Thread(target=work, name="importer-delivery", daemon=True)
    worker.start()
    try:
        return done.result()
    except KeyboardInterrupt:
        if done.done():
            raise
        loop = started.result()
        loop.call_soon_threadsafe(control.stop.set)
        notice(
            "KeyboardInterrupt: finishing the requests in flight, then saving the checkpoint "
            "(interrupt again to quit at once)"
        )
    try:
        return done.result()
    except KeyboardInterrupt:
        if done.done():
            raise
        with contextlib.suppress(Exception):
            loop.call_soon_threadsafe(control.sync)
        raise Abandoned(ABANDONED) from None
