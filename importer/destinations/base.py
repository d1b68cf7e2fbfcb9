"""What a destination declares about its API, as data the core reads.

The core (read, validate, payload, delivery, send, checkpoint, report, job) names no API and no
payload path: it asks the destination. Per action a destination declares the call (method,
path), its payload paths and the kind of value each takes (`Field`), which paths identify the
user, which are required, the API's own rules across paths (`Distinct`, `AnyPresent`,
`ExprRule`), which path falls back to another (`fallback`), and how bodies are made unique
against the API's duplicate suppression (`Duplicates`). The destination itself says where the
credential goes, how answers are classified, its default request rate and its mock (`mock()`).

Rules are data or Polars expressions over whole columns: the core turns them into one message
column per rule, never a loop over rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from importer.model import Verdict

if TYPE_CHECKING:
    import polars as pl

# text: a JSON string (numbers are sent as text); object: a JSON object, which takes "*" and
# sub-keys (`data.plan`); array: a JSON array of strings, from a JSON array or a delimited
# string; json: any JSON value; time: a timestamp, sent in the destination's time format;
# integer: a whole number.
Kind = Literal["text", "object", "array", "json", "time", "integer"]
KINDS: frozenset[str] = frozenset({"text", "object", "array", "json", "time", "integer"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    """One payload path of an action: the kind of value it takes and the API's limits on it.

    `max_chars`: a text must be shorter than this. `pattern`: a text must match this regular
    expression, else the row is rejected under rule `pattern_rule` with "<path> <value>
    <pattern_message>". `minimum`/`maximum` bound an integer. `required`: the mapping must
    name the path and every row must give it a value. `what`: how a message names the value.
    """

    kind: Kind = "text"
    max_chars: int | None = None
    pattern: str | None = None
    pattern_rule: str = "format"
    pattern_message: str = "is not valid"
    # Why a value breaks `pattern`: (regular expression the bad value matches, reason), the
    # first that matches appended to the message ("... is not a valid email address: no @").
    pattern_reasons: tuple[tuple[str, str], ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    required: bool = False
    # "primitive": an object whose members may only be text, numbers or times (Userpilot's
    # metadata); a nested object or array is a reject unless the mapping's `nested = "json"`
    # sends it as JSON text; numbers and booleans travel as typed.
    members: Literal["any", "primitive"] = "any"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}")


@dataclass(frozen=True, slots=True)
class Distinct:
    """Two paths may not hold the same value (Vero's alias: `new_id` differs from `id`)."""

    paths: tuple[str, str]
    rule: str = "distinct"


@dataclass(frozen=True, slots=True)
class AnyPresent:
    """At least one of `paths` must hold a value that is not empty (an empty array is empty)."""

    paths: tuple[str, ...]
    rule: str = "empty"


@dataclass(frozen=True, slots=True)
class ExprRule:
    """An API rule on one path as a Polars expression: `message(value)` is the reject message
    where a row breaks it, null elsewhere; `value` is the path's JSON text column."""

    path: str
    rule: str
    message: Callable[[pl.Expr], pl.Expr]


@dataclass(frozen=True, slots=True)
class Requires:
    """`path` must hold a value wherever `when` does (Userpilot: a `company` object needs its
    `company.company_id`)."""

    path: str
    when: str
    rule: str = "required"


RowRule = Distinct | AnyPresent | ExprRule | Requires


_KIND_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """A top-level mapping key a destination adds (Userpilot: `region`, `nested`, `chunk_mb`).

    `values`: the allowed values (None: any of `kind` within `minimum`..`maximum`).
    """

    kind: type
    default: object
    values: tuple[object, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""

    def problem(self, name: str, value: object) -> str | None:
        """Why `value` is not allowed for the key `name`, or None."""
        if not isinstance(value, self.kind) or isinstance(value, bool) != (self.kind is bool):
            return f"{name} = {value!r} must be {_KIND_NAMES.get(self.kind, self.kind.__name__)}"
        if self.values is not None and value not in self.values:
            return f"{name} = {value!r} is not one of {', '.join(map(repr, self.values))}"
        number = value if isinstance(value, int | float) else None
        if number is not None and self.minimum is not None and number < self.minimum:
            return f"{name} = {value!r} is below {self.minimum:g}"
        if number is not None and self.maximum is not None and number > self.maximum:
            return f"{name} = {value!r} is above {self.maximum:g}"
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class BulkUpload:
    """An action delivered as jobs rather than one request per row (Userpilot's Bulk Import and
    bulk identify): rows are cut into chunks, each chunk is one upload that starts a job on the
    API's side, and the job is polled until it ends.

    `kind`: "file" uploads the chunk as an NDJSON file (multipart form field `file`); "list"
    posts a JSON object `{list_key: [rows]}`; "ids" a JSON object `{list_key: [ids]}`. `max_rows`/`max_bytes` bound one chunk.
    `status_path` is the job's status route with `{job_id}`; `running` and `finished` are the
    `running`, `finished` and `failed` are the job states that mean "still going", "ended
    well" and "ended badly"; any other state stops the run with nothing marked.
    """

    kind: Literal["file", "list", "ids"]
    create_path: str
    status_path: str
    max_rows: int
    max_bytes: int
    list_key: str = ""
    running: frozenset[str] = frozenset()
    finished: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()
    # "ids" sends `{list_key: [the one value of each row]}` (Userpilot's deletions). An empty
    # `status_path`: the API starts no job it lets anyone follow, and a 2xx means accepted.
    method: str = "POST"
    # At least this many seconds between two uploads (Userpilot's deletions: one every 2 s).
    min_interval_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Duplicates:
    """How the API drops repeated calls, so the importer can make each body unique and report
    what would still be dropped.

    The API drops a call when the same user (`user` paths) sends the same `event` (names equal
    after `fold`) with the same `data` within its window; without data the key also holds
    `unique`, which the importer fills per source row (the input's fingerprint and the line)
    unless the mapping names it. `time` is the event's original time, which `[dedup] time_key`
    copies into data so the same event at different times stays distinct. `api` and `window`
    are how the report names the API and its window.
    """

    api: str
    window: str
    user: tuple[str, ...]
    event: str
    data: str
    unique: str
    time: str
    fold: Callable[[pl.Expr], pl.Expr]


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """One API call a mapping can target.

    `fields` holds every payload path the mapping may name; an `object` field also takes `"*"`
    and sub-keys (`data.plan`), and a declared sub-key (`data.timezone`) has its own kind.
    `identity`: the mapping names at least one, and each row has a value in one. `fallback`:
    a path sent with the first value among other paths (Vero: an email alone is the id).
    """

    name: str
    method: str
    path: str
    fields: Mapping[str, Field]
    identity: tuple[str, ...] = ()
    fallback: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rules: tuple[RowRule, ...] = ()
    duplicates: Duplicates | None = None
    # Members every body carries whatever the row says, as JSON text by path (an import row's
    # `"event_type": '"track"'`), and members a body gets when the mapping leaves them empty.
    constants: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, str] = field(default_factory=dict)
    # True when the API stamps the event with the moment it receives it: a mapped time then
    # travels only as a property, and validate and the dry run say so.
    receipt_time: bool = False
    bulk: BulkUpload | None = None
    # True when the call cannot be undone (deleting users): a run asks for confirmation on a
    # terminal and needs --yes elsewhere, and its dry run says how many it would delete.
    destructive: bool = False
    # Where a job file's automatic order puts a step of this action: lower stages go first, and
    # a step waits for every step of a lower one (users exist before their tags, events after
    # users, aliases after the old id's events, deletions last).
    stage: int = 2

    @property
    def object_fields(self) -> frozenset[str]:
        """The paths that take a JSON object (and `"*"`, and sub-keys)."""
        return frozenset(p for p, f in self.fields.items() if f.kind == "object")

    @property
    def time_fields(self) -> frozenset[str]:
        """The paths sent as timestamps in the destination's format."""
        return frozenset(p for p, f in self.fields.items() if f.kind == "time")

    @property
    def required(self) -> tuple[str, ...]:
        """The paths every mapping of this action must name."""
        return tuple(p for p, f in self.fields.items() if f.required)

    def accepts(self, payload_path: str) -> bool:
        """Whether a mapping may name `payload_path` for this action."""
        if payload_path in self.fields:
            return True
        parent, _, child = payload_path.partition(".")
        return bool(child) and parent in self.object_fields

    def field_of(self, payload_path: str) -> Field:
        """The declared field of a path; an undeclared sub-key of an object is any JSON."""
        declared = self.fields.get(payload_path)
        return declared if declared is not None else Field(kind="json")

    def paths_shown(self) -> list[str]:
        """The paths a mapping may name, as a message lists them."""
        return sorted(self.fields) + sorted(f"{p}.<key>" for p in self.object_fields)


class Destination(Protocol):
    """What the pipeline needs to know about one API."""

    @property
    def name(self) -> str:
        """The name mappings use, e.g. "vero"."""
        ...

    @property
    def title(self) -> str:
        """The API's name as messages give it, e.g. "Vero"."""
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
    def credential_fields(self) -> frozenset[str]:
        """Body members that carry the credential: a payload file must not hold them, and a
        server's message is scrubbed of whatever follows their names."""
        ...

    @property
    def default_rate(self) -> float | None:
        """Requests per second the API allows by default (None: no documented limit)."""
        ...

    @property
    def time_format(self) -> str:
        """How a timestamp is sent (a strftime format of the UTC time)."""
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


def redirect_refusal(status: int) -> tuple[Verdict, str]:
    """What every destination makes of a 3xx: stop, and say why it is not followed."""
    return Verdict.STOP, (
        f"the endpoint answered with a redirect (HTTP {status}); redirects are not "
        "followed, because a POST would be re-sent elsewhere or turned into a GET: "
        "use the final URL as --endpoint"
    )


# Optional members a destination may declare; the functions below read them with their
# defaults, so a destination that has no use for one need not say so.


def deleted_things(action: Action) -> str:
    """What a destructive action deletes, as a message names them ("users", "companies")."""
    return "companies" if "compan" in action.name else "users"


# Answers no API gives to a row it merely refuses: the path or the method is wrong, or what
# answered does not implement the call (a web server's 501).
FOREIGN_STATUSES = frozenset({404, 405, 501})


def foreign_refusal(destination: Destination, status: int, body: bytes) -> bool:
    """Whether a refusal looks like another server's rather than the API's own error for a row
    (`foreign_refusal(status, body)` when the destination declares it): by default a 404, 405
    or 501, or a body that is not a JSON object (an HTML error page)."""
    own = getattr(destination, "foreign_refusal", None)
    if own is not None:
        return bool(own(status, body))
    if status in FOREIGN_STATUSES:
        return True
    stripped = body.lstrip()
    return not (stripped.startswith(b"{") and stripped.rstrip().endswith(b"}"))


def options_of(destination: Destination) -> Mapping[str, Option]:
    """The destination's own top-level mapping keys (`options`), by name."""
    return getattr(destination, "options", {})


def endpoint_of(destination: Destination, options: Mapping[str, object]) -> str:
    """The base URL for a mapping's options (`endpoint(options)`; Userpilot's region)."""
    choose = getattr(destination, "endpoint", None)
    return destination.default_endpoint if choose is None else str(choose(options))


def throttle_floor_of(destination: Destination) -> float:
    """Seconds to wait at least before retrying a 429 that says no Retry-After, doubled each
    time (`throttle_floor_s`; 0: the usual jittered backoff)."""
    return float(getattr(destination, "throttle_floor_s", 0.0))


def rate_window_of(destination: Destination) -> tuple[int, float] | None:
    """At most this many requests may start in any window of this many seconds, per token and
    rate family (`rate_window`; None: no such limit)."""
    return getattr(destination, "rate_window", None)


def rate_family_of(destination: Destination, path: str) -> str:
    """Which of the API's windows a request to `path` counts against (`rate_families`: a path,
    or the prefix of its sub-paths, to a family name; a path it does not name, and any path of
    a destination that declares none, counts against the one window of "all")."""
    families: Mapping[str, str] = getattr(destination, "rate_families", {})
    found = families.get(path)
    if found is None:
        found = next((f for p, f in families.items() if path.startswith(p + "/")), "all")
    return found
