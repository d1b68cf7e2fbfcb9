"""What differs between APIs: actions and their paths, payload fields, auth, response classes."""

from __future__ import annotations

from importer.destinations.base import Action, Destination
from importer.destinations.userpilot.api import USERPILOT
from importer.destinations.vero.api import VERO
from importer.errors import MappingError

DESTINATIONS: dict[str, Destination] = {VERO.name: VERO, USERPILOT.name: USERPILOT}


def get_destination(name: str) -> Destination:
    """The destination called `name`, or a MappingError listing the ones we know."""
    try:
        return DESTINATIONS[name]
    except KeyError:
        known = ", ".join(sorted(DESTINATIONS))
        raise MappingError(f"unknown destination {name!r} (known: {known})") from None


__all__ = ["DESTINATIONS", "Action", "Destination", "get_destination"]
