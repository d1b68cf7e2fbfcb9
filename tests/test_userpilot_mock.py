"""The mock Userpilot, over real loopback sockets: its header rules, rate window and jobs."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yarl

from importer.destinations.mocking import MockConfig
from importer.destinations.userpilot.mock import (
    UserpilotMock,
    check_import_row,
    error_body,
    parse_multipart,
)
from importer.mock.registry import mock_for
from importer.mock.server import RunningMock, mock_config, start_mock_server

TOKEN = "test-token"
HEADERS = {"Authorization": f"Token {TOKEN}", "X-API-Version": "2020-09-22"}
KEY_ONLY = {"Authorization": f"Token {TOKEN}"}
ROW = {
    "event_type": "track",
    "source": "backend-http-import",
    "user_id": "u1",
    "event_name": "Signed up",
    "inserted_at": "2024-07-28T08:55:35.874Z",
    "metadata": {"plan": "pro"},
}

Answer = tuple[int, Any, Mapping[str, str]]


class FakeClock:
    """A monotonic clock the test moves by hand: job states and the window need no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Client:
    """A session bound to one running mock, sending Userpilot's headers unless told others."""

    def __init__(self, mock: RunningMock, session: aiohttp.ClientSession) -> None:
        self.mock, self.session = mock, session

    async def send(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        headers: Mapping[str, str] = HEADERS,
        data: Any = None,
        url: str | yarl.URL | None = None,
    ) -> Answer:
        if body is not None:
            data = json.dumps(body).encode()
            headers = {**headers, "Content-Type": "application/json"}
        target = url if url is not None else f"{self.mock.url}/{path}"
        async with self.session.request(method, target, data=data, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers

    async def upload(self, rows: list[object], filename: str = "chunk-1.ndjson") -> Answer:
        """POST v1/imports with `rows` as an NDJSON file, as a multipart form."""
        text = "".join(json.dumps(row) + "\n" for row in rows).encode()
        form = aiohttp.FormData()
        # a stream: aiohttp warns about raw bytes over 1 MB
        upload = io.BytesIO(text)
        form.add_field("file", upload, filename=filename, content_type="application/x-ndjson")
        return await self.send("POST", "v1/imports", data=form, headers=KEY_ONLY)

    async def bulk(self, users: list[object]) -> Answer:
        return await self.send("POST", "v1/users/bulk_identify", {"users": users}, headers=KEY_ONLY)

    async def job(self, job_id: str) -> Answer:
        url = yarl.URL(f"{self.mock.url}/v1/background_jobs/{quote(job_id, safe='')}", encoded=True)
        return await self.send("GET", "", headers=KEY_ONLY, url=url)

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(self.mock.stats_url) as resp:
            stats: dict[str, Any] = await resp.json()
            return stats


Scenario = Callable[[Client], Awaitable[None]]


def play(
    scenario: Scenario, config: MockConfig | None = None, clock: FakeClock | None = None
) -> RunningMock:
    """Start a mock Userpilot on a free loopback port, play `scenario` against it, stop it."""

    async def main() -> RunningMock:
        config_ = config or MockConfig(keep_bodies=True)
        api = mock_for("userpilot")
        mock = await start_mock_server(config_, clock=clock or time.monotonic, api=api)
        try:
            async with aiohttp.ClientSession() as session:
                await scenario(Client(mock, session))
        finally:
            await mock.close()
        return mock

    return asyncio.run(main())


def errors_of(payload: Any) -> tuple[str, str]:
    """The (error_code, message) of Userpilot's single-error body."""
    (error,) = payload["errors"]
    assert set(error) == {"error", "error_code", "message", "details"}
    return error["error_code"], error["message"]


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param(f"Bearer {TOKEN}", id="bearer"),
        pytest.param("Token wrong-token", id="wrong-key"),
        pytest.param("Token ", id="empty-key"),
    ],
)
def test_a_missing_or_wrong_key_is_401(authorization: str | None) -> None:
    answers: list[Answer] = []
    headers = {"X-API-Version": "2020-09-22"}
    if authorization is not None:
        headers["Authorization"] = authorization

    async def scenario(client: Client) -> None:
        body = {"user_id": "1", "event_name": "x"}
        answers.append(await client.send("POST", "v1/track", body, headers=headers))

    mock = play(scenario)
    status, payload, _ = answers[0]
    assert (status, errors_of(payload)[0]) == (401, "UNAUTHORIZED")
    assert mock.state.bodies == []


@pytest.mark.parametrize("path", ["v1/track", "v1/identify"])
@pytest.mark.parametrize("version", [None, "2021-01-01"])
def test_track_and_identify_need_the_api_version(path: str, version: str | None) -> None:
    answers: list[Answer] = []
    headers = dict(KEY_ONLY) if version is None else {**KEY_ONLY, "X-API-Version": version}

    async def scenario(client: Client) -> None:
        body = {"user_id": "1", "event_name": "x"}
        answers.append(await client.send("POST", path, body, headers=headers))
        answers.append(await client.send("POST", "v1/companies/identify", {"company_id": "c"}))
        company = {"company_id": "c"}
        answers.append(await client.send("POST", "v1/companies/identify", company, headers=headers))

    play(scenario)
    status, payload, _ = answers[0]
    assert (status, errors_of(payload)) == (
        400,
        ("INVALID_REQUEST", "the X-API-Version header must be 2020-09-22"),
    )
    assert [answer[0] for answer in answers[1:]] == [202, 202]  # accepted with or without it


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        pytest.param(
            "v1/track",
            {"user_id": "1", "event_name": "x", "metadata": {"plan": {"tier": 1}}},
            "metadata.plan is a nested object: only primitive types (string, number, boolean, "
            "null) are supported",
            id="nested-object",
        ),
        pytest.param(
            "v1/identify",
            {"user_id": "1", "metadata": {"tags": ["a"]}},
            "metadata.tags is a nested array: only primitive types (string, number, boolean, "
            "null) are supported",
            id="nested-array",
        ),
        pytest.param(
            "v1/identify",
            {"user_id": 7},
            "user_id must be a non-empty string, not 7",
            id="numeric-user-id",
        ),
        pytest.param("v1/track", {"user_id": "1"}, "event_name is required", id="no-event-name"),
        pytest.param(
            "v1/track",
            {"user_id": "1", "event_name": ""},
            'event_name must be a non-empty string, not ""',
            id="empty-event-name",
        ),
        pytest.param(
            "v1/identify",
            {"user_id": "1", "company": {"name": "Acme"}},
            "company.company_id is required",
            id="company-without-id",
        ),
        pytest.param(
            "v1/identify",
            {"user_id": "1", "company": {"company_id": "c", "address": {"city": "x"}}},
            "company.address is a nested object: only primitive types (string, number, "
            "boolean, null) are supported",
            id="nested-company-value",
        ),
        pytest.param(
            "v1/companies/identify",
            {"company_id": 12},
            "company_id must be a non-empty string, not 12",
            id="numeric-company-id",
        ),
        pytest.param(
            "v1/track",
            {"user_id": "1", "event_name": "x", "metadata": "plan=pro"},
            "metadata must be a JSON object",
            id="metadata-not-object",
        ),
        pytest.param("v1/track", [1], "the request body must be a JSON object", id="not-object"),
    ],
)
def test_rule_breaks_are_400_with_the_error_body(path: str, body: object, message: str) -> None:
    answers: list[Answer] = []

    async def scenario(client: Client) -> None:
        answers.append(await client.send("POST", path, body))

    mock = play(scenario)
    status, payload, _ = answers[0]
    assert (status, errors_of(payload)) == (400, ("INVALID_REQUEST", message))
    assert mock.state.bodies == []


def test_good_live_bodies_are_202_and_recorded() -> None:
    bodies = [
        ("v1/track", {"user_id": "007", "event_name": "Paid", "metadata": {"n": 2, "ok": True}}),
        ("v1/identify", {"user_id": "1", "metadata": {"x": None}, "company": {"company_id": "c"}}),
        ("v1/identify", {"user_id": "2", "company": {"id": "c"}}),  # the guide's spelling
        ("v1/companies/identify", {"company_id": "c", "metadata": {"plan": "pro"}}),
    ]
    statuses: list[int] = []

    async def scenario(client: Client) -> None:
        for path, body in bodies:
            statuses.append((await client.send("POST", path, body))[0])

    mock = play(scenario)
    assert statuses == [202] * 4
    assert mock.state.bodies == [
        {**body, "_path": path, "_duplicate": False} for path, body in bodies
    ]


def test_the_window_refuses_the_request_beyond_n_without_retry_after() -> None:
    clock = FakeClock()
    seen: list[tuple[int, str | None]] = []
    peaks: list[int] = []
    body = {"user_id": "1", "event_name": "x"}

    async def scenario(client: Client) -> None:
        async def track(path: str = "v1/track") -> None:
            status, _, headers = await client.send("POST", path, body if "track" in path else {})
            seen.append((status, headers.get("Retry-After")))

        for _ in range(4):  # n + 1 in the same instant
            await track()
        await client.send("POST", "v1/identify", {"user_id": "1"})  # its own bucket
        await client.send("GET", "v1/background_jobs", headers=KEY_ONLY)  # not limited
        peaks.append((await client.stats())["window_peak"])
        clock.now += 59.9
        await track()  # the first four are still inside the minute
        clock.now += 0.1
        await track()  # they have left it

    config = mock_config(UserpilotMock(), limit_window=(3, 60.0), keep_bodies=True)
    mock = play(scenario, config, clock)
    assert seen == [(202, None)] * 3 + [(429, None), (429, None), (202, None)]
    assert peaks == [4]
    assert mock.state.window_peak == 5
    assert mock.state.by_status[429] == 2


def test_the_429_body_is_userpilots() -> None:
    answers: list[Answer] = []

    async def scenario(client: Client) -> None:
        answers.append(await client.send("POST", "v1/track", {"user_id": "1", "event_name": "x"}))

    play(scenario, MockConfig(rate_429=1.0, retry_after=None))
    status, payload, headers = answers[0]
    assert (status, errors_of(payload)[0], headers.get("Retry-After")) == (
        429,
        "RATE_LIMITED",
        None,
    )


def test_userpilots_defaults_are_its_documented_limit() -> None:
    config = mock_config(UserpilotMock(), token="t")
    assert (config.limit_window, config.retry_after, config.token) == ((600, 60.0), None, "t")
    assert mock_config(UserpilotMock(), retry_after="3").retry_after == "3"


def test_an_import_job_runs_queued_processing_completed_and_lands_once(tmp_path: Path) -> None:
    clock = FakeClock()
    record = tmp_path / "record.jsonl"
    rows = [ROW, {**ROW, "user_id": "u2"}]
    created: list[Answer] = []
    states: list[tuple[str, int, Any]] = []

    async def scenario(client: Client) -> None:
        created.append(await client.upload(rows))
        job_id = created[0][1]["job_id"]
        for step in (0.0, 0.75, 0.25, 1.75, 0.25, 5.0):  # binary fractions: exact sums
            clock.now += step
            _, job, _ = await client.job(job_id)
            states.append((job["status"], job["completed_rows"], job["end_time"]))

    config = MockConfig(job_seconds=3.0, record=record, keep_bodies=True)
    mock = play(scenario, config, clock)
    status, answer, _ = created[0]
    assert status == 200
    assert answer["status"] == "queued"
    assert answer["job_id"].startswith("import:jobs:NX-")
    assert (answer["filename"], answer["total_rows"], answer["end_time"]) == (
        "chunk-1.ndjson",
        2,
        None,
    )
    assert [state[:2] for state in states] == [
        ("queued", 0),
        ("queued", 0),
        ("processing", 0),
        ("processing", 0),
        ("completed", 2),
        ("completed", 2),
    ]
    assert [state[2] is None for state in states] == [True] * 4 + [False] * 2
    landed = [{**row, "_path": "v1/imports", "_job": answer["job_id"]} for row in rows]
    assert mock.state.bodies == landed
    assert [json.loads(line) for line in record.read_text().splitlines()] == landed
    stats = mock.state.stats()
    assert {k: stats[k] for k in ("jobs_created", "jobs_completed", "rows_landed")} == {
        "jobs_created": 1,
        "jobs_completed": 1,
        "rows_landed": 2,
    }
    assert stats["uploads_by_filename"] == {"chunk-1.ndjson": 1}


def test_the_stats_show_a_job_that_ended_since_the_last_request() -> None:
    clock = FakeClock()
    seen: list[tuple[int, int]] = []

    async def scenario(client: Client) -> None:
        await client.bulk([{"user_id": "1"}, {"user_id": "2"}])
        clock.now += 1.0
        stats = await client.stats()
        seen.append((stats["jobs_completed"], stats["rows_landed"]))

    mock = play(scenario, MockConfig(job_seconds=1.0, keep_bodies=True), clock)
    assert seen == [(1, 2)]
    assert [body["user_id"] for body in mock.state.bodies] == ["1", "2"]


def test_one_job_per_family_at_a_time() -> None:
    clock = FakeClock()
    seen: list[tuple[int, str | None]] = []
    users = [{"user_id": "1", "metadata": {"plan": "pro"}}]

    async def scenario(client: Client) -> None:
        async def note(answer: Answer) -> None:
            status, payload, _ = answer
            seen.append((status, errors_of(payload)[0] if status >= 400 else payload["status"]))

        await note(await client.bulk(users))
        await note(await client.bulk(users))  # the first still runs
        companies = {"companies": [{"company_id": "c"}]}
        await note(await client.send("POST", "v1/companies/bulk_identify", companies))
        await note(await client.upload([ROW]))  # imports are another family
        clock.now += 1.0
        await note(await client.bulk(users))

    mock = play(scenario, MockConfig(job_seconds=1.0, keep_bodies=True), clock)
    assert seen == [
        (202, "queued"),
        (409, "JOB_IN_PROGRESS"),
        (409, "JOB_IN_PROGRESS"),
        (200, "queued"),
        (202, "queued"),
    ]
    stats = mock.state.stats()
    assert (stats["conflicts"], stats["jobs_created"]) == (2, 3)


def test_failed_jobs_report_the_rows_before_the_first_bad_one() -> None:
    clock = FakeClock()
    jobs: list[dict[str, Any]] = []
    users = [{"user_id": str(n)} for n in range(3)]

    async def scenario(client: Client) -> None:
        first = (await client.bulk(users))[1]["job_id"]  # job 1: told to fail
        clock.now += 1.0
        bad = [*users[:2], {"user_id": 3}, {"user_id": "4"}]
        second = (await client.bulk(bad))[1]["job_id"]
        clock.now += 1.0
        third = (await client.bulk(users))[1]["job_id"]
        clock.now += 1.0
        for job_id in (first, second, third):
            jobs.append((await client.job(job_id))[1])

    mock = play(scenario, MockConfig(job_seconds=1.0, job_fail=(1,), keep_bodies=True), clock)
    assert [(job["status"], job["completed_rows"], job["total_rows"]) for job in jobs] == [
        ("failed", 0, 3),
        ("failed", 2, 4),
        ("completed", 3, 3),
    ]
    assert [(body["user_id"], body["_job"]) for body in mock.state.bodies] == [
        ("0", jobs[1]["job_id"]),
        ("1", jobs[1]["job_id"]),
        *[(str(n), jobs[2]["job_id"]) for n in range(3)],
    ]
    stats = mock.state.stats()
    assert (stats["jobs_failed"], stats["jobs_completed"], stats["rows_landed"]) == (2, 1, 5)


def test_the_job_list_is_newest_first_and_unknown_jobs_are_404() -> None:
    clock = FakeClock()
    answers: list[Answer] = []

    async def scenario(client: Client) -> None:
        ids = [(await client.upload([ROW], filename=f"c{n}.ndjson"))[1]["job_id"] for n in (1,)]
        clock.now += 1.0
        ids.append((await client.bulk([{"user_id": "1"}]))[1]["job_id"])
        ids.append((await client.upload([ROW], filename="c2.ndjson"))[1]["job_id"])
        answers.append(await client.send("GET", "v1/background_jobs", headers=KEY_ONLY))
        answers.append(await client.job("bulk:jobs:NX-00000000:nope"))
        answers.append((200, ids, {}))

    play(scenario, MockConfig(job_seconds=1.0), clock)
    (status, listed, _), (missing, payload, _), (_, ids, _) = answers
    assert status == 200
    assert [job["job_id"] for job in listed] == ids[::-1]
    assert [job["status"] for job in listed] == ["queued", "queued", "completed"]
    assert [job["filename"] for job in listed] == ["c2.ndjson", None, "c1.ndjson"]
    assert len(set(ids)) == 3
    assert (missing, errors_of(payload)[0]) == (404, "NOT_FOUND")


def test_a_job_id_with_colons_is_found_percent_encoded() -> None:
    clock = FakeClock()
    found: list[Answer] = []

    async def scenario(client: Client) -> None:
        job_id = (await client.bulk([{"user_id": "1"}]))[1]["job_id"]
        assert job_id.count(":") == 3
        found.append(await client.job(job_id))
        found.append((0, job_id, {}))

    play(scenario, clock=clock)
    (status, job, _), (_, job_id, _) = found
    assert (status, job["job_id"], job["type"]) == (200, job_id, "bulk_identify_users")
    assert job["links"] == f"/v1/background_jobs/{quote(job_id, safe='')}"


def test_multipart_fields_are_decoded() -> None:
    boundary = "----b0undary"
    raw = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="rows.ndjson"\r\n'
        "Content-Type: application/x-ndjson\r\n\r\n"
        '{"a": 1}\r\n{"b": 2}\n'
        f"\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="note"\r\n\r\n'
        "hello"
        f"\r\n--{boundary}--\r\n"
    ).encode()
    fields = parse_multipart(f"multipart/form-data; boundary={boundary}", raw)
    assert fields is not None
    assert (fields["file"].filename, fields["file"].data) == (
        "rows.ndjson",
        b'{"a": 1}\r\n{"b": 2}\n',
    )
    assert (fields["note"].filename, fields["note"].data) == (None, b"hello")
    assert parse_multipart("application/json", raw) is None


def test_an_import_without_a_file_or_over_the_bulk_limit_is_400() -> None:
    answers: list[Answer] = []

    async def scenario(client: Client) -> None:
        form = aiohttp.FormData()
        form.add_field("other", b"x", filename="x.ndjson")
        answers.append(await client.send("POST", "v1/imports", data=form, headers=KEY_ONLY))
        answers.append(await client.bulk([{"user_id": "1"}] * 10_001))
        answers.append(await client.bulk([]))

    mock = play(scenario)
    assert [(status, errors_of(payload)[1]) for status, payload, _ in answers] == [
        (400, "the multipart/form-data field file is required"),
        (400, "users holds 10,001 rows; the limit is 10,000"),
        (400, "users must be a non-empty JSON array"),
    ]
    assert mock.state.stats()["jobs_created"] == 0


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        pytest.param(ROW, None, id="track"),
        pytest.param(
            {**ROW, "inserted_at": "2024-07-28 08:55:35.874555"}, None, id="docs-example-time"
        ),
        pytest.param(
            {
                "event_type": "identify_company",
                "source": "backend-http-import",
                "company_id": "c",
                "inserted_at": "2024-07-28T08:55:35Z",
                "metadata": {},
            },
            None,
            id="identify-company",
        ),
        pytest.param({**ROW, "event_type": "purchase"}, "event_type must be one of", id="type"),
        pytest.param({**ROW, "source": "csv"}, "source must be one of", id="source"),
        pytest.param({**ROW, "inserted_at": "yesterday"}, "inserted_at must be", id="time"),
        pytest.param({**ROW, "inserted_at": 1722156935}, "inserted_at must be", id="epoch"),
        pytest.param({**ROW, "user_id": 7}, "user_id must be", id="numeric-user"),
        pytest.param({**ROW, "event_name": None}, "event_name must be", id="no-name"),
        pytest.param(
            {**ROW, "event_type": "identify_user", "company_id": 3},
            "company_id must be",
            id="numeric-company",
        ),
        pytest.param({**ROW, "metadata": {"a": [1]}}, "metadata.a is a nested", id="nested"),
        pytest.param("not json", "a row must be a JSON object", id="not-object"),
    ],
)
def test_import_row_rules(row: object, problem: str | None) -> None:
    found = check_import_row(row)
    assert found is None if problem is None else found is not None and found.startswith(problem)


def test_a_dropped_create_answer_still_creates_the_job() -> None:
    clock = FakeClock()
    listed: list[Any] = []

    async def scenario(client: Client) -> None:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.upload([ROW])
        listed.append((await client.send("GET", "v1/background_jobs", headers=KEY_ONLY))[1])
        clock.now += 1.0
        listed.append((await client.upload([ROW], filename="again.ndjson"))[0])

    mock = play(scenario, MockConfig(job_seconds=0.5, job_drop_answer=(1,)), clock)
    assert [(job["filename"], job["status"]) for job in listed[0]] == [("chunk-1.ndjson", "queued")]
    assert listed[1] == 200
    assert mock.state.dropped == 1
    assert mock.state.stats()["uploads_by_filename"] == {"chunk-1.ndjson": 1, "again.ndjson": 1}


def test_faults_apply_to_polls_too() -> None:
    answers: list[Answer] = []

    async def scenario(client: Client) -> None:
        for _ in range(2):
            answers.append(await client.send("GET", "v1/background_jobs", headers=KEY_ONLY))

    play(scenario, MockConfig(status_script=(503,)))
    assert [(status, payload) for status, payload, _ in answers] == [
        (503, json.loads(error_body(503))),
        (200, []),
    ]


def test_each_mock_holds_its_own_jobs() -> None:
    assert mock_for("userpilot") is not mock_for("userpilot")


def test_mock_server_command_serves_userpilot(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    command = [sys.executable, "-m", "importer", "mock-server", "--destination", "userpilot"]
    options = ["--port", "0", "--record", str(record), "--job-seconds", "0"]
    env = {**os.environ, "USERPILOT_API_KEY": TOKEN}
    process = subprocess.Popen(
        [*command, *options, "--job-fail", "2"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "Mock Userpilot API listening: --endpoint " in line, line
        url = line.split("--endpoint ")[1].strip()
        body = json.dumps({"users": [{"user_id": "1"}]}).encode()
        headers = {**KEY_ONLY, "Content-Type": "application/json"}
        request = urllib.request.Request(f"{url}/v1/users/bulk_identify", body, headers)
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 202
        with urllib.request.urlopen(url + "/_mock/stats", timeout=5) as resp:
            stats = json.load(resp)
        # a job of 0 s has ended by the next look: the stats themselves move jobs on
        assert (stats["jobs_completed"], stats["rows_landed"]) == (1, 1)
        lines = record.read_text().splitlines()
        assert [json.loads(line)["user_id"] for line in lines] == ["1"]
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def test_an_upload_over_a_mebibyte_gets_through() -> None:
    answers: list[Answer] = []

    async def scenario(client: Client) -> None:
        answers.append(await client.upload([{**ROW, "metadata": {"blob": "x" * 2_000_000}}]))

    play(scenario, MockConfig())
    status, answer, _ = answers[0]
    assert (status, answer["total_rows"]) == (200, 1)
    assert answer["file_size"] > 2_000_000
