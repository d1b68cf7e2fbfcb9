"""Test order: the tests marked `long` (real waits of many seconds: a rate window, kills and
resumes) start first, so that the test workers overlap them with the short ones instead of one
of them ending the suite alone."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first, the others in their collected order (the sort is stable)."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
