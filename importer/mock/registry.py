"""Which mock stands in for which destination: the mock server's own registry.

A destination's declaration never names its mock (a test double is passed in, never imported by
the code it stands in for); `importer mock-server --destination NAME` and `--endpoint embedded`
look the mock up here. A mock that holds state (Userpilot's jobs) is made anew for each server.
"""

from __future__ import annotations

from collections.abc import Callable

from importer.destinations.mocking import MockAPI
from importer.destinations.userpilot.mock import UserpilotMock
from importer.destinations.vero.mock import VERO_MOCK
from importer.errors import MappingError

MOCKS: dict[str, Callable[[], MockAPI]] = {
    "vero": lambda: VERO_MOCK,
    "userpilot": UserpilotMock,
}
DEFAULT = "vero"


def register_mock(name: str, make: Callable[[], MockAPI]) -> None:
    """Serve `make()` for the destination called `name` (a destination added from outside)."""
    MOCKS[name] = make


def mock_for(name: str = DEFAULT) -> MockAPI:
    """A mock of the destination called `name`, ready for one server."""
    make = MOCKS.get(name)
    if make is None:
        known = ", ".join(sorted(MOCKS))
        raise MappingError(f"no mock of the destination {name!r} (mocks: {known})")
    return make()
