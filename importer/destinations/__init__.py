"""What differs between APIs: actions and their paths, payload fields, auth, response classes."""

from __future__ import annotations

from importer.destinations.base import Action, Destination
from importer.destinations.userpilot.api import USERPILOT
from importer.destinations.vero.api import VERO
from importer.errors import MappingError

DESTINATIONS: dict[str, Destination] = {VERO.name: VERO, USERPILOT.name: USERPILOT}
# The destination a payload file is for when neither the caller nor its lines say (the first
# destination, whose payload files carried no name).
DEFAULT_DESTINATION = VERO.name


def get_destination(name: str) -> Destination:
    """The destination called `name`, or a MappingError listing the ones we know."""
    try:
        return DESTINATIONS[name]
    except KeyError:
        known = ", ".join(sorted(DESTINATIONS))
        raise MappingError(f"unknown destination {name!r} (known: {known})") from None


__all__ = ["DEFAULT_DESTINATION", "DESTINATIONS", "Action", "Destination", "get_destination"]
