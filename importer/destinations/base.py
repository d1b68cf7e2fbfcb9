"""The interface every destination implements: its actions, how to authorise, how to read answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from importer.model import Verdict


@dataclass(frozen=True, slots=True)
class Action:
    """One API call a mapping can target, and the payload paths it may fill.

    `fields` are the exact payload paths (`identity.id`); `object_fields` take a JSON object and
    accept `"*"` as their source as well as sub-paths (`data.plan`); `time_fields` are sent as
    timestamps in the destination's format.
    """

    name: str
    method: str
    path: str
    fields: frozenset[str]
    object_fields: frozenset[str] = field(default_factory=frozenset)
    time_fields: frozenset[str] = field(default_factory=frozenset)

    def accepts(self, payload_path: str) -> bool:
        """Whether a mapping may name `payload_path` for this action."""
        if payload_path in self.fields or payload_path in self.object_fields:
            return True
        parent, _, child = payload_path.partition(".")
        return bool(child) and parent in self.object_fields


class Destination(Protocol):
    """What the pipeline needs to know about one API."""

    @property
    def name(self) -> str:
        """The name mappings use, e.g. "vero"."""
        ...

    @property
    def default_endpoint(self) -> str:
        """The production base URL."""
        ...

    @property
    def token_env(self) -> str:
        """The environment variable that holds the token."""
        ...

    @property
    def actions(self) -> Mapping[str, Action]:
        """The calls a mapping can target, by action name."""
        ...

    def authorize(self, body: bytes, token: str) -> tuple[bytes, dict[str, str]]:
        """The body and headers to send, with the credential placed where the API wants it."""
        ...

    def classify(self, status: int, body: bytes) -> tuple[Verdict, str]:
        """What to do with an HTTP answer, and a message for the user."""
        ...
