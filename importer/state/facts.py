"""The values a state directory answers with: the run it belongs to, what it knows of each input,
its open bulk-upload chunks and its status."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from importer.errors import MappingError


@dataclass(frozen=True, slots=True)
class RunIdentity:
    """What a state directory is bound to; `endpoint` is logical: "embedded" or a base URL."""

    mapping_fingerprint: str
    destination: str
    endpoint: str

    def __post_init__(self) -> None:
        for name in ("mapping_fingerprint", "destination", "endpoint"):
            if not getattr(self, name):
                raise ValueError(f"RunIdentity.{name} must not be empty")
        parts = urlsplit(self.endpoint)
        if parts.username or parts.password or parts.query:
            # The log is not a secret store: credentials travel in headers, never in the URL.
            raise MappingError("--endpoint must not carry credentials or a query string")


@dataclass(frozen=True, slots=True)
class Failure:
    """One dead-lettered row as the log remembers it."""

    line: int
    status: int | None
    error: str


@dataclass(frozen=True, slots=True)
class InputStatus:
    """Progress of one input file, for `importer status`: `delivered` and `failed` count the
    rows sent from this content; `inherited` the rows it took over from the content it grew
    from (`grew_from`, a fingerprint); `names` every name it was seen under, first to last."""

    name: str
    fingerprint: str
    delivered: int
    failed: int
    failures: tuple[Failure, ...]
    updated_at: datetime | None
    first_at: datetime | None = None
    names: tuple[str, ...] = ()
    grew_from: str | None = None
    inherited: int = 0
    size: int | None = None
    # One entry per reason the rows failed: (status or None, error, rows, first line), most
    # rows first; rows past the first MAX_REASONS reasons count under `other_failed`.
    reasons: tuple[tuple[int | None, str, int, int], ...] = ()
    other_failed: int = 0
    # Of the rows that failed, those a replay into STATE/replay has delivered since (counted
    # in `delivered`, no longer in `failed`).
    replayed: int = 0


@dataclass(frozen=True, slots=True)
class InputFacts:
    """What the log keeps of an input's content besides its fingerprint, so that a later run
    tells a grown or a changed file from a new one: its size, its resolved path, and the line
    of its last row when that row has no newline yet (it may be cut short)."""

    size: int
    path: str
    open_line: int | None = None


@dataclass(frozen=True, slots=True)
class KnownInput:
    """An input the log knows, as a later run compares its inputs with it."""

    id: int
    fingerprint: str
    name: str
    delivered: int  # rows of this content done and not dead-lettered, taken over ones included
    size: int | None
    path: str | None
    open_line: int | None
    whole: bool = False  # every row of it handled: a run need not read it again
    failed: int = 0  # rows of this content dead-lettered, taken over ones included


@dataclass(frozen=True, slots=True)
class Admission:
    """What `CheckpointLog.admit` made of an input: `kind` is "known", "grown", "new",
    "changed" (not registered: skip it) or "resent" (changed, sent as a new input anyway);
    `previous` the known input it is, grew from or replaces; `cut_line` the line of a grown
    input's row that was cut short before (not taken over: sent again, complete). The run
    adds "contained": its content is another input's of the same run (`within`, by name), or
    the start of it, and is sent once, as that input's (not registered: skip it)."""

    kind: str
    previous: KnownInput | None = None
    cut_line: int | None = None
    within: str | None = None


@dataclass(slots=True)
class ChunkState:
    """One chunk of an action delivered as jobs: the file built from some rows of one input,
    the job the API started for it, and how that job ended.

    `stage` is "built" (recorded before the upload: the answer may have been lost), "uploaded"
    (the API gave `job` for it) or "ended" (`outcome` holds the job's final state).
    """

    key: str
    input_id: int
    file: str
    rows: int
    bytes: int
    ranges: list[tuple[int, int]] = field(default_factory=list)  # the rows' lines
    stage: str = "built"
    job: str | None = None
    outcome: str | None = None
    fingerprint: str = ""
    input_name: str = ""

    @property
    def lines(self) -> list[int]:
        """Every line of the chunk's rows, in order."""
        return [line for first, last in self.ranges for line in range(first, last + 1)]


@dataclass(frozen=True, slots=True)
class StateStatus:
    """What a state directory says, read without the mapping or the inputs at hand.

    `open_jobs` are chunks uploaded whose job has not been seen to end: a rerun polls them.
    """

    job: RunIdentity | None
    created_at: datetime | None
    inputs: tuple[InputStatus, ...]
    warnings: tuple[str, ...]
    open_jobs: tuple[ChunkState, ...] = ()
