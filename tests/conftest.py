"""Test order: the tests marked `long` (real waits of many seconds: a rate window, kills and
resumes) start first, the longest (`seconds=`, 10 by default) first among them, so that the
test workers overlap them with the short ones instead of one of them ending the suite alone.
Workers take a test or two at a time (--maxschedchunk 1 in pyproject.toml): in xdist's default
first chunks, one worker would have been handed every long test at once."""

from __future__ import annotations

import pytest


def _start_order(item: pytest.Item) -> float:
    long = item.get_closest_marker("long")
    return 0.0 if long is None else -float(long.kwargs.get("seconds", 10))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first, longest first; the others in their collected order (a stable sort)."""
    items.sort(key=_start_order)
