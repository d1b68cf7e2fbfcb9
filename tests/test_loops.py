"""Which event loop sends: uvloop when installed, unless IMPORTER_EVENT_LOOP=asyncio."""

from __future__ import annotations

import asyncio
import sys
import types

import pytest

from importer.delivery.loops import LOOP_ENV, loop_factory, loop_name, run


def _fake_uvloop(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    fake = types.ModuleType("uvloop")
    fake.new_event_loop = asyncio.new_event_loop  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvloop", fake)
    return fake


def test_uvloop_is_used_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOOP_ENV, raising=False)
    fake = _fake_uvloop(monkeypatch)
    assert loop_factory() is fake.new_event_loop  # type: ignore[attr-defined]
    assert loop_name() == "uvloop"


def test_the_environment_turns_uvloop_off(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_uvloop(monkeypatch)
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    assert loop_factory() is None
    assert loop_name() == "asyncio"


def test_without_uvloop_asyncio_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOOP_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loop_factory() is None

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run(answer()) == 42
