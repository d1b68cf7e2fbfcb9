"""Userpilot (seed 004 and docs.userpilot.com): live track, identify and company identify; Bulk
Import jobs (the only way to keep an event's date) and bulk identify jobs, as data the core
reads, with Userpilot's answers and its mock.

Where the documentation is silent or disagrees, the safer reading is taken; the README's
Userpilot section lists each one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from importer.destinations.base import Action, BulkUpload, Field, Option, Requires, redirect_refusal
from importer.model import Verdict

HOSTS = {"us": "https://analytex.userpilot.io", "eu": "https://analytex-eu.userpilot.io"}
API_VERSION = "2020-09-22"
# ISO 8601 UTC with milliseconds and a Z: what the import schema's "String (ISO)" most safely
# means (its own example has no zone at all).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.3fZ"
# Bulk Import's row `source` for events sent through its HTTP API.
IMPORT_SOURCE = "backend-http-import"
# Documented for bulk identify; the import docs give no limit, so it is borrowed for them too.
MAX_CHUNK_MB = 50
MAX_BULK_ROWS = 10_000
# Job states: the docs list them without defining them; these two are taken to be the ends.
JOB_RUNNING = frozenset({"queued", "validating", "processing", "pending_refresh"})
JOB_COMPLETED = frozenset({"completed"})
JOB_FAILED = frozenset({"failed"})
JOB_STATUS_PATH = "v1/background_jobs/{job_id}"

ID = Field(kind="text", required=True)
OPTIONAL_ID = Field(kind="text")
METADATA = Field(kind="object", members="primitive")
INSERTED_AT = Field(kind="time", required=True)


def _import_upload() -> BulkUpload:
    return BulkUpload(
        kind="file",
        create_path="v1/imports",
        status_path=JOB_STATUS_PATH,
        max_rows=1_000_000,
        max_bytes=MAX_CHUNK_MB * 1_000_000,
        running=JOB_RUNNING,
        finished=JOB_COMPLETED,
        failed=JOB_FAILED,
    )


def _bulk_upload(path: str, list_key: str) -> BulkUpload:
    return BulkUpload(
        kind="list",
        create_path=path,
        status_path=JOB_STATUS_PATH,
        max_rows=MAX_BULK_ROWS,
        max_bytes=MAX_CHUNK_MB * 1_000_000,
        list_key=list_key,
        running=JOB_RUNNING,
        finished=JOB_COMPLETED,
        failed=JOB_FAILED,
    )


# Deletions (https://docs.userpilot.com/api-references/delete/overview): "1 request every 2
# seconds"; no cap on ids a request is documented, so batches stay modest.
DELETE_INTERVAL_S = 2.0
MAX_DELETE_IDS = 1_000


def _delete_upload(path: str, list_key: str) -> BulkUpload:
    return BulkUpload(
        kind="ids",
        method="DELETE",
        create_path=path,
        status_path="",  # 202 "scheduled": no job to follow is documented
        max_rows=MAX_DELETE_IDS,
        max_bytes=MAX_CHUNK_MB * 1_000_000,
        list_key=list_key,
        min_interval_s=DELETE_INTERVAL_S,
    )


def _import_constants(event_type: str) -> dict[str, str]:
    return {"event_type": json.dumps(event_type), "source": json.dumps(IMPORT_SOURCE)}


TRACK = Action(
    name="track",
    method="POST",
    path="v1/track",
    fields={"user_id": ID, "event_name": ID, "metadata": METADATA},
    identity=("user_id",),
    receipt_time=True,
)
IDENTIFY = Action(
    name="identify",
    method="POST",
    path="v1/identify",
    fields={
        "user_id": ID,
        "metadata": METADATA,
        "company": METADATA,
        # The API reference's key; the identify guide says `id` (see the README).
        "company.company_id": OPTIONAL_ID,
    },
    identity=("user_id",),
    rules=(Requires("company.company_id", when="company"),),
    stage=0,
)
COMPANY = Action(
    name="company",
    method="POST",
    path="v1/companies/identify",
    fields={"company_id": ID, "metadata": METADATA},
    identity=("company_id",),
    stage=0,
)
IMPORT_TRACK = Action(
    name="import_track",
    method="POST",
    path="v1/imports",
    fields={"user_id": ID, "event_name": ID, "inserted_at": INSERTED_AT, "metadata": METADATA},
    identity=("user_id",),
    constants=_import_constants("track"),
    defaults={"metadata": "{}"},
    bulk=_import_upload(),
)
IMPORT_IDENTIFY = Action(
    name="import_identify",
    method="POST",
    path="v1/imports",
    fields={
        "user_id": ID,
        "company_id": OPTIONAL_ID,
        "inserted_at": INSERTED_AT,
        "metadata": METADATA,
    },
    identity=("user_id",),
    constants=_import_constants("identify_user"),
    defaults={"metadata": "{}"},
    bulk=_import_upload(),
    stage=0,
)
IMPORT_COMPANY = Action(
    name="import_company",
    method="POST",
    path="v1/imports",
    fields={"company_id": ID, "inserted_at": INSERTED_AT, "metadata": METADATA},
    identity=("company_id",),
    constants=_import_constants("identify_company"),
    defaults={"metadata": "{}"},
    bulk=_import_upload(),
    stage=0,
)
# A page view of the import Event Schema
# (https://docs.userpilot.com/api-references/import/event-schema): user_id, hostname and
# pathname are required strings; there is no url field; user_agent appears only in its example.
IMPORT_PAGE_VIEW = Action(
    name="import_page_view",
    method="POST",
    path="v1/imports",
    fields={
        "user_id": ID,
        "hostname": ID,
        "pathname": ID,
        "user_agent": OPTIONAL_ID,
        "inserted_at": INSERTED_AT,
    },
    identity=("user_id",),
    constants=_import_constants("page_view"),
    bulk=_import_upload(),
)
BULK_IDENTIFY = Action(
    name="bulk_identify",
    method="POST",
    path="v1/users/bulk_identify",
    fields={"user_id": ID, "company_id": OPTIONAL_ID, "metadata": METADATA},
    identity=("user_id",),
    bulk=_bulk_upload("v1/users/bulk_identify", "users"),
    stage=0,
)
BULK_COMPANY = Action(
    name="bulk_company",
    method="POST",
    path="v1/companies/bulk_identify",
    fields={"company_id": ID, "metadata": METADATA},
    identity=("company_id",),
    bulk=_bulk_upload("v1/companies/bulk_identify", "companies"),
    stage=0,
)
DELETE_USERS = Action(
    name="delete_users",
    method="DELETE",
    path="v1/users",
    fields={"user_id": ID},
    identity=("user_id",),
    bulk=_delete_upload("v1/users", "users"),
    destructive=True,
    stage=4,
)
DELETE_COMPANIES = Action(
    name="delete_companies",
    method="DELETE",
    path="v1/companies",
    fields={"company_id": ID},
    identity=("company_id",),
    bulk=_delete_upload("v1/companies", "companies"),
    destructive=True,
    stage=4,
)
ACTIONS = (
    TRACK,
    IDENTIFY,
    COMPANY,
    IMPORT_TRACK,
    IMPORT_IDENTIFY,
    IMPORT_COMPANY,
    IMPORT_PAGE_VIEW,
    BULK_IDENTIFY,
    BULK_COMPANY,
    DELETE_USERS,
    DELETE_COMPANIES,
)

OPTIONS = {
    "region": Option(
        kind=str,
        default="us",
        values=tuple(HOSTS),
        help="where the account lives: us (analytex.userpilot.io) or eu (analytex-eu)",
    ),
    "nested": Option(
        kind=str,
        default="reject",
        values=("reject", "json"),
        help="a nested object or array in metadata: reject the row, or send it as JSON text",
    ),
    "chunk_mb": Option(
        kind=int,
        default=MAX_CHUNK_MB,
        minimum=1,
        maximum=MAX_CHUNK_MB,
        help="the largest import or bulk file, in MB",
    ),
}

# Its 600 requests a minute count per key and endpoint family (docs.userpilot.com article 195
# gives identify and track 600 each); company identify and bulk identify are taken to count as
# identify, and imports with the job polls as a third family, kept to the same limit.
RATE_FAMILIES = {
    "v1/track": "track",
    "v1/identify": "identify",
    "v1/companies/identify": "identify",
    "v1/users/bulk_identify": "identify",
    "v1/companies/bulk_identify": "identify",
    "v1/imports": "imports",
    "v1/background_jobs": "imports",
}

# Userpilot answers these when the fault is passing: rate limit, overload, and a job of the
# same token still running (409, documented for imports).
RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Userpilot:
    """Userpilot's rules for where the key goes and what its answers mean."""

    name: str = "userpilot"
    title: str = "Userpilot"
    default_endpoint: str = HOSTS["us"]
    token_env: str = "USERPILOT_API_KEY"
    credential_fields: frozenset[str] = frozenset()  # the key travels in a header only
    # 600 requests a minute per token for each endpoint family (RATE_FAMILIES).
    default_rate: float | None = 10.0
    rate_window: tuple[int, float] | None = (600, 60.0)
    rate_families: Mapping[str, str] = field(default_factory=lambda: dict(RATE_FAMILIES))
    # Its 429 documents no Retry-After: 1, 2, 4, 8 s... and never sooner than 1 s.
    throttle_floor_s: float = 1.0
    time_format: str = TIME_FORMAT
    actions: Mapping[str, Action] = field(
        default_factory=lambda: {action.name: action for action in ACTIONS}
    )
    options: Mapping[str, Option] = field(default_factory=lambda: dict(OPTIONS))

    def endpoint(self, options: Mapping[str, object]) -> str:
        """The host of the mapping's region."""
        return HOSTS[str(options.get("region", "us"))]

    def authorize(self, body: bytes, token: str) -> tuple[bytes, dict[str, str]]:
        """The body as built; the key in the Authorization header, with the API version."""
        return body, _headers(token)

    def classify(self, status: int, body: bytes) -> tuple[Verdict, str]:
        """Map an HTTP answer onto delivered, retry, dead letter or stop, with Userpilot's
        message (`error_code: message (details)` per error). Any 2xx counts: the docs give 202,
        and 200 for imports and (in one guide) companies; an HTML page is a proxy, not Userpilot.
        """
        if 200 <= status < 300:
            if body.lstrip()[:1] == b"<":
                return Verdict.STOP, (
                    f"the endpoint answered HTTP {status} with an HTML page, not Userpilot's "
                    "JSON, so no row can be counted as delivered: is --endpoint the API's host "
                    f"(such as {HOSTS['us']})?"
                )
            return Verdict.DELIVERED, "delivered"
        message = error_summary(body) or f"HTTP {status}"
        if status in (401, 403):
            return Verdict.STOP, f"Userpilot refused the API key (HTTP {status}): {message}"
        if 300 <= status < 400:
            return redirect_refusal(status)
        if status in RETRYABLE_STATUSES:
            return Verdict.RETRY, message
        return Verdict.DEAD, message


@functools.lru_cache(maxsize=4)
def _headers(token: str) -> dict[str, str]:
    """One header dict per key: aiohttp only reads it."""
    return {
        "Authorization": f"Token {token}",
        "X-API-Version": API_VERSION,
        "Content-Type": "application/json",
        "Accept": "application/json, text/plain, */*",
    }


def error_summary(body: bytes) -> str:
    """Userpilot's `{"errors": [{"error_code", "message", "details"}]}` as one line, errors
    joined by "; "; the body's text when it is not that shape."""
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        answer = None
    errors = answer.get("errors") if isinstance(answer, dict) else None
    if isinstance(errors, list) and errors:
        parts = []
        for error in errors:
            if not isinstance(error, dict):
                parts.append(str(error))
                continue
            code = error.get("error_code") or error.get("error")
            text = error.get("message") or error.get("error") or ""
            part = f"{code}: {text}" if code and code != text else str(text)
            details = error.get("details")
            if details not in (None, "", {}, []):
                shown = details if isinstance(details, str) else json.dumps(details)
                part += f" ({shown})"
            parts.append(part)
        return "; ".join(parts)
    if isinstance(answer, dict) and isinstance(answer.get("message"), str):
        return str(answer["message"])
    return body.decode("utf-8", "replace").strip()


USERPILOT = Userpilot()
