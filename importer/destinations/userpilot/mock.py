"""Userpilot for the mock server: live track and identify, Bulk Import and bulk identify jobs.

Its readings are docs/userpilot.md's (each citing the docs.userpilot.com page): the key in `Authorization: Token <key>`,
`X-API-Version: 2020-09-22` required on track and identify, errors as
`{"errors": [{"error", "error_code", "message", "details"}]}` (the codes are ours: none is
documented), 202 on the live calls and bulk identify, 200 on an import. A job runs on the
server's clock, with no task of its own: queued for the first third of `job_seconds`, then
processing, then completed (its rows land, each recorded once) or failed. One job at a time per
family (imports; bulk users and companies together): another create meanwhile is a 409.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import HTTP
from typing import Any
from urllib.parse import quote

from aiohttp import web

from importer.destinations.base import rate_family_of
from importer.destinations.mocking import DROP, Judgement, MockCall, MockConfig
from importer.destinations.userpilot.api import API_VERSION, MAX_BULK_ROWS, USERPILOT

TRACK, IDENTIFY, COMPANY = "v1/track", "v1/identify", "v1/companies/identify"
IMPORTS = "v1/imports"
BULK_USERS, BULK_COMPANIES = "v1/users/bulk_identify", "v1/companies/bulk_identify"
# DELETE with {"users": [ids]} / {"companies": [ids]}: 202, the deletion scheduled
# (https://docs.userpilot.com/api-references/delete/overview).
DELETE_USERS, DELETE_COMPANIES = "v1/users", "v1/companies"
DELETES = {DELETE_USERS: "users", DELETE_COMPANIES: "companies"}
JOBS, JOB = "v1/background_jobs", "v1/background_jobs/{job_id}"
# The guides require X-API-Version here (live calls and deletions).
VERSIONED = frozenset({TRACK, IDENTIFY, DELETE_USERS, DELETE_COMPANIES})
# Bulk Import row rules (import/event-schema, import/row-validation): the ids each type needs.
EVENT_TYPES: Mapping[str, tuple[str, ...]] = {
    "identify_user": ("user_id",),
    "identify_company": ("company_id",),
    "track": ("user_id", "event_name"),
    "page_view": ("user_id", "hostname", "pathname"),
}
SOURCES = frozenset(
    {
        "web-client",
        "backend-http",
        "backend-hubspot",
        "backend-salesforce",
        "backend-segment",
        "backend-http-import",
    }
)
ENDED = frozenset({"completed", "failed"})
# (error, error_code, message) of each status the mock answers; no code is documented.
ERRORS: Mapping[int, tuple[str, str, str]] = {
    400: ("bad_request", "INVALID_REQUEST", "Bad Request - Invalid input"),
    401: ("unauthorized", "UNAUTHORIZED", "Unauthorized - Invalid API key"),
    404: ("not_found", "NOT_FOUND", "Not Found"),
    409: ("conflict", "JOB_IN_PROGRESS", "Conflict - a job of this kind is already in progress"),
    429: ("too_many_requests", "RATE_LIMITED", "Too Many Requests - 600 requests per minute"),
    500: ("internal_server_error", "INTERNAL_ERROR", "Internal Server Error"),
    502: ("bad_gateway", "BAD_GATEWAY", "Bad Gateway"),
    503: ("service_unavailable", "SERVICE_UNAVAILABLE", "Service Unavailable"),
}


def error_body(status: int, message: str | None = None, details: object = None) -> bytes:
    """Userpilot's error shape for `status`, with our message when there is a better one."""
    error, code, text = ERRORS.get(status, ("error", f"HTTP_{status}", f"HTTP {status}"))
    entry = {"error": error, "error_code": code, "message": message or text}
    entry["details"] = details if details is not None else {}
    return json.dumps({"errors": [entry]}).encode()


def _bad(message: str, **details: object) -> Judgement:
    return Judgement(400, error_body(400, message, details))


def _text_problem(body: Mapping[str, Any], name: str, where: str = "") -> str | None:
    """Why `body[name]` is not the non-empty string every Userpilot id and name is."""
    value = body.get(name)
    if isinstance(value, str) and value:
        return None
    if name not in body:
        return f"{where}{name} is required"
    return f"{where}{name} must be a non-empty string, not {json.dumps(value)}"


def _primitives_problem(body: Mapping[str, Any], name: str) -> str | None:
    """Why `body[name]` is not an object of primitives (string, number, boolean, null)."""
    if name not in body:
        return None
    value = body[name]
    if not isinstance(value, dict):
        return f"{name} must be a JSON object"
    for key, member in value.items():
        if isinstance(member, dict | list):
            kind = "object" if isinstance(member, dict) else "array"
            return (
                f"{name}.{key} is a nested {kind}: only primitive types (string, number, "
                "boolean, null) are supported"
            )
    return None


def check_track(body: Mapping[str, Any]) -> str | None:
    """Why `POST v1/track` would refuse this body, or None."""
    return (
        _text_problem(body, "user_id")
        or _text_problem(body, "event_name")
        or _primitives_problem(body, "metadata")
    )


def check_identify(body: Mapping[str, Any]) -> str | None:
    """Why `POST v1/identify` would refuse this body; the company takes `company_id` (the API
    reference) or `id` (the identify guide)."""
    problem = _text_problem(body, "user_id") or _primitives_problem(body, "metadata")
    if problem is not None or "company" not in body:
        return problem
    problem = _primitives_problem(body, "company")
    if problem is not None:
        return problem
    company = body["company"]
    if "company_id" not in company and "id" in company:
        return _text_problem(company, "id", "company.")
    return _text_problem(company, "company_id", "company.")


def check_company(body: Mapping[str, Any]) -> str | None:
    """Why `POST v1/companies/identify` would refuse this body, or None."""
    return _text_problem(body, "company_id") or _primitives_problem(body, "metadata")


def check_import_row(row: object) -> str | None:
    """Why Bulk Import would refuse one NDJSON row (docs/userpilot.md, Bulk Import), or None."""
    if not isinstance(row, dict):
        return "a row must be a JSON object"
    event_type = row.get("event_type")
    if event_type not in EVENT_TYPES:
        return f"event_type must be one of {', '.join(EVENT_TYPES)}, not {json.dumps(event_type)}"
    if row.get("source") not in SOURCES:
        return f"source must be one of {', '.join(sorted(SOURCES))}"
    inserted_at = row.get("inserted_at")
    try:
        datetime.fromisoformat(inserted_at)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return f"inserted_at must be an ISO 8601 string, not {json.dumps(inserted_at)}"
    for name in EVENT_TYPES[event_type]:
        problem = _text_problem(row, name)
        if problem is not None:
            return problem
    if event_type == "identify_user" and "company_id" in row:
        problem = _text_problem(row, "company_id")
        if problem is not None:
            return problem
    return _primitives_problem(row, "metadata")


def check_bulk_user(row: object) -> str | None:
    """Why bulk identify would refuse one of its `users`, or None."""
    if not isinstance(row, dict):
        return "a user must be a JSON object"
    problem = _text_problem(row, "user_id")
    if problem is None and "company_id" in row:
        problem = _text_problem(row, "company_id")
    return problem or _primitives_problem(row, "metadata")


def check_bulk_company(row: object) -> str | None:
    """Why bulk identify would refuse one of its `companies`, or None."""
    if not isinstance(row, dict):
        return "a company must be a JSON object"
    return _text_problem(row, "company_id") or _primitives_problem(row, "metadata")


LIVE: Mapping[str, Callable[[Mapping[str, Any]], str | None]] = {
    TRACK: check_track,
    IDENTIFY: check_identify,
    COMPANY: check_company,
}
# create path -> (the body's list key, the row rule, the job's `type`)
BULK: Mapping[str, tuple[str, Callable[[object], str | None], str]] = {
    BULK_USERS: ("users", check_bulk_user, "bulk_identify_users"),
    BULK_COMPANIES: ("companies", check_bulk_company, "bulk_identify_companies"),
}


@dataclass(frozen=True, slots=True)
class Upload:
    """One multipart form field: its file name (None for a plain field) and its bytes."""

    filename: str | None
    data: bytes


def parse_multipart(content_type: str, raw: bytes) -> dict[str, Upload] | None:
    """The fields of a multipart/form-data body, or None when it is not one.

    Split on the boundary by hand: a 50 MB upload through email.parser would be parsed line by
    line; only each part's few header lines go through it.
    """
    header = EmailMessage()
    header["Content-Type"] = content_type
    boundary = header.get_boundary()
    if header.get_content_type() != "multipart/form-data" or not boundary:
        return None
    fields: dict[str, Upload] = {}
    for part in raw.split(b"--" + boundary.encode("latin-1"))[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, found, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not found:
            return None
        headers = BytesHeaderParser(policy=HTTP).parsebytes(head + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = Upload(headers.get_filename(), data.removesuffix(b"\r\n"))
    return fields


def _ndjson_rows(data: bytes) -> list[object]:
    """The rows of an NDJSON file; a line that is not JSON becomes its text, a bad row."""
    rows: list[object] = []
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            rows.append(line.decode("utf-8", "replace"))
    return rows


def _first_bad(rows: list[object], check: Callable[[object], str | None]) -> int | None:
    """The index of the first row `check` refuses, None when all pass."""
    return next((i for i, row in enumerate(rows) if check(row) is not None), None)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class BackgroundJob:
    """One background job; `rows` are held until they land, then let go."""

    job_id: str
    family: str  # "import" or "bulk": one job of each may run at a time
    kind: str  # the `type` the status shows
    path: str  # the create path, recorded with each row as `_path`
    created: float  # server clock
    started: datetime  # wall clock, for start_time and end_time
    filename: str | None
    file_size: int
    total_rows: int
    rows: list[object] | None
    first_bad: int | None
    fails: bool  # its number is in MockConfig.job_fail
    status: str = "queued"
    completed_rows: int = 0
    ended: float | None = None

    def describe(self, now: float) -> dict[str, Any]:
        """What `GET v1/background_jobs/{job_id}` answers about it."""
        end = self.ended if self.ended is not None else now
        ended = self.started + timedelta(seconds=end - self.created)
        return {
            "job_id": self.job_id,
            "status": self.status,
            "type": self.kind,
            "filename": self.filename,
            "file_size": self.file_size,
            "total_rows": self.total_rows,
            "completed_rows": self.completed_rows,
            "elapsed_time": int(end - self.created),
            "start_time": _iso(self.started),
            "end_time": _iso(ended) if self.ended is not None else None,
            "links": f"/{JOBS}/{quote(self.job_id, safe='')}",
        }


@dataclass(slots=True)
class UserpilotMock:
    """Userpilot's side of the mock server (`MockAPI` with the optional hooks); it holds the
    jobs it was given, so each server needs its own (the mock server's registry makes a new one)."""

    base_path: str = ""
    config: MockConfig = field(default_factory=MockConfig)
    clock: Callable[[], float] = time.monotonic
    jobs: dict[str, BackgroundJob] = field(default_factory=dict)
    running: dict[str, BackgroundJob] = field(default_factory=dict)  # family -> its open job
    counters: Counter[str] = field(default_factory=Counter)
    uploads: Counter[str] = field(default_factory=Counter)

    @property
    def routes(self) -> frozenset[tuple[str, str]]:
        """Every (method, path) served; anything else is a 404."""
        posts = (TRACK, IDENTIFY, COMPANY, IMPORTS, BULK_USERS, BULK_COMPANIES)
        deletes = {("DELETE", path) for path in DELETES}
        return frozenset(
            {("POST", path) for path in posts} | {("GET", JOBS), ("GET", JOB)} | deletes
        )

    def config_defaults(self) -> Mapping[str, object]:
        """Userpilot's documented limit, 600 requests a minute per token for each of track and
        identify, and its 429 with no Retry-After."""
        return {"limit_window": (600, 60.0), "retry_after": None}

    def attach(self, config: MockConfig, clock: Callable[[], float]) -> None:
        """Take the server's job settings and clock."""
        self.config, self.clock = config, clock

    def rate_bucket(self, method: str, path: str) -> str | None:
        """The endpoint family the API declares for the path (api.RATE_FAMILIES): identify
        with company and bulk identify, track, and imports with their job polls."""
        return rate_family_of(USERPILOT, path)

    def decode(self, content_type: str, raw: bytes) -> object:
        """A multipart upload's fields (as Upload), else the JSON body (None: not JSON)."""
        if content_type.lower().startswith("multipart/"):
            return parse_multipart(content_type, raw)
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def credential(self, request: web.Request, body: object) -> object:
        """The key of `Authorization: Token <key>`; any other scheme is no key at all."""
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return key if scheme == "Token" and key else None

    def judge(self, method: str, path: str, body: object) -> Judgement:
        """Unused: the server calls judge_call, which sees headers and route parameters."""
        return Judgement(500, self.answer(500))

    def judge_call(self, call: MockCall) -> Judgement:
        """Userpilot's answer to an authorised request."""
        if call.path in VERSIONED and call.headers.get("X-API-Version") != API_VERSION:
            got = call.headers.get("X-API-Version")
            return _bad(
                f"the X-API-Version header must be {API_VERSION}",
                header="X-API-Version",
                received=got,
            )
        if call.path == JOB:
            return self.show_job(call.params["job_id"])
        if call.path == JOBS:
            now = self.clock()
            listed = [job.describe(now) for job in reversed(self.jobs.values())]
            return Judgement(200, json.dumps(listed).encode())
        if call.path == IMPORTS:
            return self.create_import(call)
        if call.path in BULK:
            return self.create_bulk(call)
        if call.method == "DELETE":
            return self.schedule_deletion(call)
        body = call.body
        if not isinstance(body, dict):
            return _bad("the request body must be a JSON object")
        problem = LIVE[call.path](body)
        if problem is not None:
            return _bad(problem)
        return Judgement(202, b'{"status":"accepted"}', record=body)

    def show_job(self, job_id: str) -> Judgement:
        job = self.jobs.get(job_id)
        if job is None:
            return Judgement(404, error_body(404, f"no job {job_id}"))
        return Judgement(200, json.dumps(job.describe(self.clock())).encode())

    def create_import(self, call: MockCall) -> Judgement:
        fields = call.body if isinstance(call.body, dict) else {}
        upload = fields.get("file")
        if not isinstance(upload, Upload):
            return _bad("the multipart/form-data field file is required")
        rows = _ndjson_rows(upload.data)
        if not rows:
            return _bad("the file holds no rows")
        name = upload.filename or _digest_name(upload.data)
        first_bad = _first_bad(rows, check_import_row)
        return self.create_job(
            "import", "import", IMPORTS, name, upload.filename, len(upload.data), rows, first_bad
        )

    def create_bulk(self, call: MockCall) -> Judgement:
        key, check, kind = BULK[call.path]
        body = call.body
        rows = body.get(key) if isinstance(body, dict) else None
        if not isinstance(rows, list) or not rows:
            return _bad(f"{key} must be a non-empty JSON array")
        if len(rows) > MAX_BULK_ROWS:
            return _bad(f"{key} holds {len(rows):,} rows; the limit is {MAX_BULK_ROWS:,}")
        name = call.query.get("filename") or _digest_name(call.raw)
        first_bad = _first_bad(rows, check)
        return self.create_job("bulk", kind, call.path, name, None, len(call.raw), rows, first_bad)

    def schedule_deletion(self, call: MockCall) -> Judgement:
        """`DELETE v1/users` or `v1/companies`: a non-empty list of ids, scheduled (202)."""
        key = DELETES[call.path]
        body = call.body
        ids = body.get(key) if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            return _bad(f"{key} must be a non-empty JSON array of ids")
        if not all(isinstance(one, str) and one for one in ids):
            return _bad(f"{key} must hold only non-empty string ids")
        self.counters["deletions_scheduled"] += len(ids)
        message = {"message": f"{len(ids)} {key} have been scheduled for deletion"}
        return Judgement(202, json.dumps(message).encode(), record={key: ids})

    def create_job(
        self,
        family: str,
        kind: str,
        path: str,
        name: str,
        filename: str | None,
        size: int,
        rows: list[object],
        first_bad: int | None,
    ) -> Judgement:
        """Start a job unless one of its family is open (409); its answer may be dropped."""
        if family in self.running:
            self.counters["conflicts"] += 1
            running = self.running[family].job_id
            return Judgement(409, error_body(409, details={"running_job_id": running}))
        self.counters["jobs_created"] += 1
        number = self.counters["jobs_created"]
        job = BackgroundJob(
            job_id=_job_id(family, self.config.seed, number),
            family=family,
            kind=kind,
            path=path,
            created=self.clock(),
            started=datetime.now(UTC),
            filename=filename,
            file_size=size,
            total_rows=len(rows),
            rows=rows,
            first_bad=first_bad,
            fails=number in self.config.job_fail,
        )
        self.jobs[job.job_id] = self.running[family] = job
        self.uploads[name] += 1
        if number in self.config.job_drop_answer:
            return Judgement(DROP, b"")
        answer = {
            key: value
            for key, value in job.describe(job.created).items()
            if key not in ("completed_rows", "elapsed_time")
        }
        return Judgement(200 if family == "import" else 202, json.dumps(answer).encode())

    def advance(self) -> list[dict[str, Any]]:
        """Move open jobs on by the clock; the rows of those that ended, as they landed."""
        now, landed = self.clock(), []
        for family, job in list(self.running.items()):
            if job.status == "queued" and now >= job.created + self.config.job_seconds / 3:
                job.status = "processing"
            if now < job.created + self.config.job_seconds:
                continue
            rows = job.rows or []
            good = 0 if job.fails else len(rows) if job.first_bad is None else job.first_bad
            job.status = "completed" if good == len(rows) else "failed"
            job.completed_rows, job.ended, job.rows = good, now, None
            for row in rows[:good]:
                if isinstance(row, dict):  # always: rows before the first bad one are objects
                    # the job lets go of its rows: mark them in place rather than copy them
                    row["_path"], row["_job"] = job.path, job.job_id
                    landed.append(row)
            self.counters["jobs_completed" if job.status == "completed" else "jobs_failed"] += 1
            self.counters["rows_landed"] += good
            del self.running[family]
        return landed

    def stats(self) -> dict[str, object]:
        """The job counters for `GET /_mock/stats`."""
        names = (
            "jobs_created",
            "jobs_completed",
            "jobs_failed",
            "conflicts",
            "rows_landed",
            "deletions_scheduled",
        )
        return {
            **{name: self.counters[name] for name in names},
            "uploads_by_filename": dict(self.uploads),
        }

    def answer(self, status: int) -> bytes:
        """Userpilot's error body for a status the server decides: 401, 404, 429, 5xx."""
        return error_body(status)


def _digest_name(raw: bytes) -> str:
    """What counts as an upload's name when it has none: its content."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def _job_id(family: str, seed: int, number: int) -> str:
    """A job id shaped like the docs' `bulk:jobs:NX-ac54070e:<uuid>`, the same on every run."""
    digest = hashlib.sha256(f"{family}:{seed}:{number}".encode()).digest()
    return f"{family}:jobs:NX-{digest[:4].hex()}:{uuid.UUID(bytes=digest[4:20], version=4)}"
