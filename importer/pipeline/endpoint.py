"""Where a run sends: the endpoint it was given, or the embedded mock, started for the run.

Delivery takes a URL and a token and never knows whether a mock answers them (a test double is
passed in, never imported by the code it stands in for). `--endpoint embedded` is decided here:
the destination's mock, found through the mock server's registry, runs inside the run's event
loop on a free loopback port, and what it received goes into the run's summary.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

from importer.delivery.options import DeliveryOptions
from importer.destinations import Destination
from importer.errors import CheckpointError
from importer.outcome import Summary
from importer.state.layout import EMBEDDED_RECORD_NAME

EMBEDDED = "embedded"
EMBEDDED_TOKEN = "embedded-mock-token"


@contextlib.asynccontextmanager
async def open_endpoint(
    delivery: DeliveryOptions, destination: Destination, summary: Summary
) -> AsyncIterator[DeliveryOptions]:
    """`delivery` as it is for a real endpoint; for `embedded`, pointed at a mock started for the
    run, whose counts land in `summary.embedded` when the run ends."""
    if delivery.endpoint != EMBEDDED:
        yield delivery
        return
    # Imported here: only a run to the embedded mock needs aiohttp's server.
    from importer.mock.registry import mock_for
    from importer.mock.server import embedded_mock, mock_config

    token = delivery.token or EMBEDDED_TOKEN
    api = mock_for(destination.name)
    # A replay opens the mock before its checkpoint made the state directory the record goes in.
    try:
        delivery.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(
            f"state directory {delivery.state_dir} cannot be made: {exc.strerror or exc}"
        ) from None
    # The API's documented limits (a rate window, no Retry-After) hold at the embedded mock too.
    config = mock_config(api, token=token, record=delivery.state_dir / EMBEDDED_RECORD_NAME)
    async with embedded_mock(config, api=api) as mock:
        try:
            yield replace(delivery, endpoint=mock.url, token=token)
        finally:
            summary.embedded = mock.state.stats()
