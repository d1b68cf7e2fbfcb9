"""Each validation rule of the seeds, on real files: what passes, what is rejected and why."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import IDENTIFY, make_mapping, run_file, write_csv, write_jsonl

HEADER = "user_id,email,event,occurred_at"


def one_event(
    tmp_path: Path, row: str, **mapping_changes: object
) -> tuple[list[dict], list[tuple]]:
    outcome = run_file(write_csv(tmp_path, HEADER, row), make_mapping(**mapping_changes))
    rejects = (
        outcome.rejects.select("__rule", "__column", "__error").rows()
        if outcome.rejects.height
        else []
    )
    return outcome.bodies, rejects


@pytest.mark.parametrize(
    ("when", "sent"),
    [
        pytest.param("2023-05-30T04:46:31Z", "2023-05-30T04:46:31+0000", id="iso-z"),
        pytest.param("2023-05-30T04:46:31+02:00", "2023-05-30T02:46:31+0000", id="offset-colon"),
        pytest.param("2023-05-30T04:46:31-0130", "2023-05-30T06:16:31+0000", id="offset-compact"),
        pytest.param("2023-05-30T04:46:31+05", "2023-05-29T23:46:31+0000", id="offset-hours"),
        pytest.param("2023-05-30 04:46:31", "2023-05-30T04:46:31+0000", id="space-naive"),
        pytest.param("2023-05-30T04:46:31.987654Z", "2023-05-30T04:46:31+0000", id="fraction"),
        pytest.param("2023-05-30 04:46:31 UTC", "2023-05-30T04:46:31+0000", id="utc-word"),
        pytest.param("2023-05-30T04:46", "2023-05-30T04:46:00+0000", id="no-seconds"),
        pytest.param("2023-05-30", "2023-05-30T00:00:00+0000", id="date-only"),
        pytest.param("1685421991", "2023-05-30T04:46:31+0000", id="epoch-seconds"),
        pytest.param("1685421991000", "2023-05-30T04:46:31+0000", id="epoch-millis"),
        pytest.param("1685421991.5", "2023-05-30T04:46:31+0000", id="epoch-fraction"),
    ],
)
def test_times_are_sent_in_utc(tmp_path: Path, when: str, sent: str) -> None:
    bodies, rejects = one_event(tmp_path, f"u1,a@example.com,Login,{when}")
    assert rejects == []
    assert bodies[0]["extras"]["created_at"] == sent


@pytest.mark.parametrize(
    ("when", "message"),
    [
        pytest.param(
            "2021-02-30T10:00:00Z",
            "2021-02-30T10:00:00Z is not a calendar date: 2021-02-30 does not exist",
            id="impossible-date",
        ),
        pytest.param("2023-13-01T10:00:00Z", "2023-13-01 does not exist", id="month-13"),
        pytest.param("2023-05-30T24:00:00Z", "is not a time", id="hour-24"),
        pytest.param("2023-05-30T23:59:60Z", "is not a time", id="leap-second"),
        pytest.param("yesterday", "yesterday is not a time", id="words"),
        pytest.param("", "time is empty", id="empty"),
        pytest.param("2999-01-01T00:00:00Z", "2999-01-01T00:00:00Z is in the future", id="future"),
        pytest.param("2026-01-01T00:00:01Z", "is in the future", id="one-second-ahead"),
        pytest.param("30/05/2023", "is not a time", id="day-first"),
    ],
)
def test_bad_times_are_rejected_never_now(tmp_path: Path, when: str, message: str) -> None:
    bodies, rejects = one_event(tmp_path, f"u1,a@example.com,Login,{when}")
    assert bodies == []
    [(rule, column, error)] = rejects
    assert (rule, column) == ("timestamp", "occurred_at")
    assert message in error


def test_naive_times_take_the_mapping_timezone_and_are_counted(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        HEADER,
        "u1,a@example.com,Login,2023-07-01 12:00:00",
        "u1,a@example.com,Login,2023-07-01T12:00:00Z",
        "u1,a@example.com,Login,2023-01-15 12:00:00",
    )
    outcome = run_file(path, make_mapping(timezone="Europe/Berlin"))
    sent = [body["extras"]["created_at"] for body in outcome.bodies]
    assert sent == [
        "2023-07-01T10:00:00+0000",
        "2023-07-01T12:00:00+0000",
        "2023-01-15T11:00:00+0000",
    ]
    assert outcome.naive_times == 2


def test_a_naive_time_in_a_daylight_saving_gap_is_rejected(tmp_path: Path) -> None:
    path = write_csv(tmp_path, HEADER, "u1,a@example.com,Login,2023-03-26 02:30:00")
    outcome = run_file(path, make_mapping(timezone="Europe/Berlin"))
    assert outcome.rejects["__error"].to_list() == [
        "2023-03-26 02:30:00 does not exist in Europe/Berlin (a daylight-saving gap)"
    ]


@pytest.mark.parametrize("batch_rows", [1, 2, 1000])
def test_epoch_unit_is_decided_by_the_first_value_whatever_the_batches(
    tmp_path: Path, batch_rows: int
) -> None:
    path = write_csv(
        tmp_path,
        HEADER,
        "u1,a@example.com,Login,1685421991",
        "u1,a@example.com,Login,1685421992000",
        "u1,a@example.com,Login,1685421993000",
        "u1,a@example.com,Login,1685421994",
    )
    outcome = run_file(path, make_mapping(), batch_rows=batch_rows)
    assert outcome.lines == [2, 5]
    assert outcome.rejects["__error"].to_list() == [
        f"epoch {n} does not look like seconds as the column's first epoch value does"
        for n in (1685421992000, 1685421993000)
    ]


def test_a_compact_date_is_not_taken_for_epoch_seconds(tmp_path: Path) -> None:
    path = write_csv(tmp_path, HEADER, "u1,a@example.com,Login,20230101")
    outcome = run_file(path, make_mapping())
    assert outcome.bodies == []
    assert outcome.rejects["__error"].to_list() == [
        "20230101 is ambiguous: a date written as YYYYMMDD, or epoch seconds in 1970-73; "
        "write dates as YYYY-MM-DD"
    ]


def test_an_empty_optional_timestamp_is_no_value_not_a_reject(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "user_id,event,occurred_at,renewed_at",
        "u1,Renew,2023-05-30T10:00:00Z,",
        "u1,Renew,2023-05-30T10:00:00Z,2023-05-30 12:00",
    )
    outcome = run_file(path, make_mapping(types={"renewed_at": "timestamp"}))
    assert [body.get("data") for body in outcome.bodies] == [
        None,
        {"renewed_at": "2023-05-30T12:00:00+0000"},
    ]


def test_jsonl_epoch_numbers_and_iso_strings_mix(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        {"user_id": "u1", "event": "Login", "occurred_at": 1685421991},
        {"user_id": "u1", "event": "Login", "occurred_at": "2023-05-30T04:46:31Z"},
        {"user_id": "u1", "event": "Login", "occurred_at": {"when": 1}},
    )
    outcome = run_file(path, make_mapping())
    assert [b["extras"]["created_at"] for b in outcome.bodies] == ["2023-05-30T04:46:31+0000"] * 2
    assert outcome.rejects["__error"].to_list() == ['{"when":1} is not a time']


@pytest.mark.parametrize(
    ("row", "rule", "column", "message"),
    [
        pytest.param(
            ",,Login,2023-05-30",
            "identity",
            "user_id",
            "no user identity: identity.id (user_id) and identity.email (email) empty",
            id="no-identity",
        ),
        pytest.param(
            f"{'x' * 255},,Login,2023-05-30",
            "length",
            "user_id",
            "identity.id is 255 characters; Vero needs fewer than 255",
            id="id-255",
        ),
        pytest.param(
            f"u1,{'e' * 250}@x.com,Login,2023-05-30",
            "length",
            "email",
            "identity.email is 256 characters; Vero needs fewer than 255",
            id="email-long",
        ),
        pytest.param(
            "u1,not-an-email,Login,2023-05-30",
            "email",
            "email",
            'identity.email "not-an-email" is not a valid email address: no @',
            id="email-no-at",
        ),
        pytest.param(
            "u1,a@b,Login,2023-05-30",
            "email",
            "email",
            'identity.email "a@b" is not a valid email address: no dot in the domain',
            id="email-no-dot",
        ),
        pytest.param(
            "u1,a b@example.com,Login,2023-05-30",
            "email",
            "email",
            'identity.email "a b@example.com" is not a valid email address: a space inside',
            id="email-space",
        ),
        pytest.param(
            "u1,a@example.com,,2023-05-30",
            "required",
            "event",
            "event_name is empty",
            id="no-event",
        ),
        pytest.param(
            "u1,a@example.com,   ,2023-05-30",
            "required",
            "event",
            "event_name is empty",
            id="blank-event",
        ),
        pytest.param(
            f"u1,a@example.com,{'E' * 300},2023-05-30",
            "length",
            "event",
            "event_name is 300 characters; Vero needs fewer than 255",
            id="event-long",
        ),
    ],
)
def test_track_rules(tmp_path: Path, row: str, rule: str, column: str, message: str) -> None:
    bodies, rejects = one_event(tmp_path, row)
    assert bodies == []
    assert rejects == [(rule, column, message)]


def test_lengths_just_under_the_limit_pass(tmp_path: Path) -> None:
    bodies, rejects = one_event(
        tmp_path, f"{'x' * 254},{'e' * 242}@example.com,{'E' * 254},2023-05-30"
    )
    assert rejects == []
    assert len(bodies[0]["identity"]["id"]) == 254


def test_good_rows_around_a_bad_row_go_on(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        HEADER,
        "u1,a@example.com,Login,2023-05-30",
        "u2,bad,Login,2023-05-30",
        "u3,c@example.com,Login,2023-05-30",
    )
    outcome = run_file(path, make_mapping())
    assert [b["identity"]["id"] for b in outcome.bodies] == ["u1", "u3"]
    assert outcome.rejects["__line"].to_list() == [3]


def test_an_email_alone_identifies_a_track(tmp_path: Path) -> None:
    # Seed 003: the identity must contain an id; as identify does, the email is the id.
    bodies, rejects = one_event(tmp_path, ",a@example.com,Login,2023-05-30")
    assert rejects == []
    assert bodies[0]["identity"] == {"id": "a@example.com", "email": "a@example.com"}


def test_identify_with_an_email_alone_sends_it_as_the_id(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "user_id,email,plan", ",a@example.com,pro", "u2,b@example.com,free")
    outcome = run_file(path, make_mapping(IDENTIFY))
    assert outcome.bodies == [
        {"id": "a@example.com", "email": "a@example.com", "data": {"plan": "pro"}},
        {"id": "u2", "email": "b@example.com", "data": {"plan": "free"}},
    ]


def test_numeric_ids_are_sent_as_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path, {"user_id": 1000, "event": "Login", "occurred_at": "2023-05-30"})
    outcome = run_file(path, make_mapping())
    assert outcome.bodies[0]["identity"] == {"id": "1000"}


def test_an_object_as_id_is_rejected(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path, {"user_id": {"a": 1}, "event": "Login", "occurred_at": "2023-05-30"}
    )
    outcome = run_file(path, make_mapping())
    assert outcome.rejects["__error"].to_list() == ["identity.id must be text, not a JSON object"]


def test_data_from_one_column_must_be_an_object(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        {"user_id": "u1", "event": "Buy", "occurred_at": "2023-05-30", "props": {"sku": "A1"}},
        {"user_id": "u1", "event": "Buy", "occurred_at": "2023-05-30", "props": [1, 2]},
        {"user_id": "u1", "event": "Buy", "occurred_at": "2023-05-30"},
    )
    fields = {
        "identity.id": "user_id",
        "event_name": "event",
        "extras.created_at": "occurred_at",
        "data": "props",
    }
    outcome = run_file(path, make_mapping(fields=fields))
    assert [b.get("data") for b in outcome.bodies] == [{"sku": "A1"}, None]
    assert outcome.rejects["__rule"].to_list() == ["data_object"]
    assert "data must be a JSON object, not an array" in outcome.rejects["__error"][0]


def test_a_json_text_column_becomes_data_with_types_json(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "user_id,event,occurred_at,props",
        'u1,Buy,2023-05-30,"{""sku"": ""A1""}"',
        "u1,Buy,2023-05-30,{oops",
    )
    fields = {
        "identity.id": "user_id",
        "event_name": "event",
        "extras.created_at": "occurred_at",
        "data": "props",
    }
    outcome = run_file(path, make_mapping(fields=fields, types={"props": "json"}))
    assert [b["data"] for b in outcome.bodies] == [{"sku": "A1"}]
    assert outcome.rejects.select("__rule", "__error").rows() == [
        ("type", '"{oops" is not valid JSON')
    ]


@pytest.mark.parametrize(
    "cell",
    [
        pytest.param('"{""a"": NaN}"', id="nan"),
        pytest.param('"{""a"": -Infinity}"', id="infinity"),
        pytest.param('"{""a"": 1e400}"', id="beyond-a-double"),
        pytest.param('"{""a"": ""\\ud800""}"', id="lone-surrogate"),
    ],
)
def test_a_json_column_is_strict_json(tmp_path: Path, cell: str) -> None:
    path = write_csv(tmp_path, "user_id,event,occurred_at,props", f"u1,Buy,2023-05-30,{cell}")
    fields = {
        "identity.id": "user_id",
        "event_name": "event",
        "extras.created_at": "occurred_at",
        "data": "props",
    }
    outcome = run_file(path, make_mapping(fields=fields, types={"props": "json"}))
    assert outcome.bodies == []
    [(rule, error)] = outcome.rejects.select("__rule", "__error").rows()
    assert rule == "type"
    assert error.endswith("is not valid JSON")


@pytest.mark.parametrize(
    ("type_name", "cell", "sent"),
    [
        pytest.param("string", "01234", "01234", id="zip-stays-text"),
        pytest.param("string", "1234", "1234", id="number-forced-to-text"),
        pytest.param("integer", "42", 42, id="integer"),
        pytest.param("number", "4.5", 4.5, id="number"),
        pytest.param("boolean", "yes", True, id="boolean-yes"),
        pytest.param("boolean", "FALSE", False, id="boolean-false"),
        pytest.param(
            "timestamp", "2023-05-30 10:00:00", "2023-05-30T10:00:00+0000", id="timestamp"
        ),
    ],
)
def test_forced_types(tmp_path: Path, type_name: str, cell: str, sent: object) -> None:
    path = write_csv(tmp_path, "user_id,event,occurred_at,value", f"u1,Buy,2023-05-30,{cell}")
    outcome = run_file(path, make_mapping(types={"value": type_name}))
    assert outcome.bodies[0]["data"] == {"value": sent}


@pytest.mark.parametrize(
    ("type_name", "cell", "message"),
    [
        pytest.param("integer", "4.5", "4.5 is not an integer", id="integer"),
        pytest.param("number", "abc", '"abc" is not a number', id="number"),
        pytest.param(
            "boolean", "maybe", '"maybe" is not a boolean (true/false, yes/no, 1/0)', id="boolean"
        ),
    ],
)
def test_forced_types_reject_what_does_not_fit(
    tmp_path: Path, type_name: str, cell: str, message: str
) -> None:
    path = write_csv(tmp_path, "user_id,event,occurred_at,value", f"u1,Buy,2023-05-30,{cell}")
    outcome = run_file(path, make_mapping(types={"value": type_name}))
    assert outcome.rejects.select("__rule", "__column", "__error").rows() == [
        ("type", "value", message)
    ]


def test_star_data_keeps_types_and_leaves_out_empty_cells(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "user_id,event,occurred_at,zip,price,vip,note",
        "u1,Buy,2023-05-30,01234,9.5,true,",
        "u2,Buy,2023-05-30,98765,10,false,hi",
    )
    outcome = run_file(path, make_mapping())
    assert [b["data"] for b in outcome.bodies] == [
        {"zip": "01234", "price": 9.5, "vip": True},
        {"zip": "98765", "price": 10, "vip": False, "note": "hi"},
    ]


def test_data_sub_paths_and_star_merge(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "user_id,event,occurred_at,sku,qty", "u1,Buy,2023-05-30,A1,2")
    fields = {
        "identity.id": "user_id",
        "event_name": "event",
        "extras.created_at": "occurred_at",
        "data": "*",
        "data.product_sku": "sku",
    }
    outcome = run_file(path, make_mapping(fields=fields))
    assert outcome.bodies[0]["data"] == {"qty": 2, "product_sku": "A1"}


def test_a_blank_id_beside_an_email_is_left_out(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "user_id,email,event,occurred_at",
        '"",a@example.com,Logged in,2023-05-30',
        '"  ",b@example.com,Logged in,2023-05-30',
    )
    outcome = run_file(path, make_mapping())
    assert [body["identity"] for body in outcome.bodies] == [
        {"id": "a@example.com", "email": "a@example.com"},
        {"id": "b@example.com", "email": "b@example.com"},
    ]
    # Two users, not one user called "": the dedup key must tell them apart.
    assert outcome.valid["__user"].to_list() == ["a@example.com", "b@example.com"]


def test_a_data_column_survives_an_empty_data_key_column(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "user_id,event,occurred_at,props,extra",
        'u1,Buy,2023-05-30,"{""a"": 1}",',
        'u1,Buy,2023-05-30,"{""a"": 1}",x',
        "u1,Buy,2023-05-30,,x",
    )
    fields = {
        "identity.id": "user_id",
        "event_name": "event",
        "extras.created_at": "occurred_at",
        "data": "props",
        "data.extra": "extra",
    }
    outcome = run_file(path, make_mapping(fields=fields, types={"props": "json"}))
    assert [body.get("data") for body in outcome.bodies] == [
        {"a": 1},
        {"a": 1, "extra": "x"},
        {"extra": "x"},
    ]


def test_a_data_key_named_in_the_mapping_wins_over_a_column_of_that_name(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "user_id,event,occurred_at,p,x", "u1,Buy,2023-05-30,1,2")
    fields = {
        "identity.id": "user_id",
        "event_name": "event",
        "extras.created_at": "occurred_at",
        "data": "*",
        "data.p": "x",
    }
    outcome = run_file(path, make_mapping(fields=fields))
    # The text, not a parsed dict: json.loads keeps the last of two equal keys silently.
    assert outcome.valid["data"].to_list() == ['{"p":2}']


def test_channels_must_be_an_array_of_objects(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "user_id,ch",
        'u1,"[{""type"": ""push"", ""address"": ""tok"", ""platform"": ""ios""}]"',
        "u2,hello",
        'u3,"[1, 2]"',
        "u4,",
    )
    fields = {"id": "user_id", "channels": "ch"}
    mapping = make_mapping(IDENTIFY, fields=fields, types={"ch": "json"})
    outcome = run_file(path, mapping)
    assert [body["id"] for body in outcome.bodies] == ["u1", "u4"]
    assert outcome.bodies[0]["channels"] == [{"type": "push", "address": "tok", "platform": "ios"}]
    assert outcome.rejects["__rule"].to_list() == ["type", "channels"]
