"""Which event loop runs the sending: uvloop when it is installed (the `fast` extra), else asyncio.

One rule for the CLI, the sender processes and the benchmark's bare client, so that a measured
ratio compares like with like. IMPORTER_EVENT_LOOP=asyncio turns uvloop off.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

LOOP_ENV = "IMPORTER_EVENT_LOOP"

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when installed and not turned off; None means asyncio's own."""
    if os.environ.get(LOOP_ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    """'uvloop' or 'asyncio': what `run` uses, for reports and benchmarks."""
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the loop `loop_factory` chooses."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
