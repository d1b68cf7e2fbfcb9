"""Files as real systems export them (issue 20), end to end through the command line into the
embedded mock: the samples of samples/exports/ with their mappings, and each repair a mapping
declares (filter, null markers, object members, fallbacks, normalisers, time patterns, epoch
units, the field policy). Each test reads what the mock recorded, not what the importer says."""

from __future__ import annotations

import gzip
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pipeline_helpers import ROOT, write_csv, write_jsonl

from importer.cli.app import main
from importer.errors import MappingError
from importer.mapping.file import load_mapping

EXPORTS = ROOT / "samples" / "exports"
TOKEN = "vero-exports-test-token"
MOCK_KEYS = ("_path", "_job", "_duplicate")


def invoke(*args: str | Path) -> Result:
    env = {"VERO_AUTH_TOKEN": TOKEN, "USERPILOT_API_KEY": TOKEN}
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def send(tmp_path: Path, data: Path, mapping: Path | str) -> tuple[list[dict[str, Any]], dict]:
    """Run `data` with `mapping` (a path, or TOML text) into the embedded mock; the bodies it
    recorded (without the mock's keys and Vero's check_id) and the --report."""
    if isinstance(mapping, str):
        text, mapping = mapping, tmp_path / "mapping.toml"
        mapping.write_text(text, encoding="utf-8")
    state, report = tmp_path / "state", tmp_path / "report.json"
    result = invoke(
        "run", data, "--mapping", mapping, "--endpoint", "embedded", "--state", state,
        "--report", report, "-q",
    )  # fmt: skip
    assert result.exit_code in (0, 3), result.output
    received = state / "embedded-received.jsonl"
    lines = received.read_text(encoding="utf-8").splitlines() if received.exists() else []
    bodies = []
    for line in lines:
        body = {k: v for k, v in json.loads(line).items() if k not in MOCK_KEYS}
        body.get("extras", {}).pop("check_id", None)
        bodies.append(body)
    # Sent concurrently: in file order by the line the mock cannot see, so by content.
    bodies.sort(key=lambda body: json.dumps(body, sort_keys=True))
    return bodies, json.loads(report.read_text())


def in_order(*bodies: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(bodies, key=lambda body: json.dumps(body, sort_keys=True))


def event(user: str, name: str, at: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "identity": {"id": user},
        "event_name": name,
        "extras": {"created_at": at},
    }
    if data is not None:
        body["data"] = data
    return body


# --------------------------------------------------------------------------- the four shapes


def test_segment_sends_track_rows_at_their_event_time_without_the_envelope(tmp_path: Path) -> None:
    bodies, report = send(tmp_path, EXPORTS / "segment-events.jsonl", EXPORTS / "segment-vero.toml")
    assert bodies == in_order(
        event(
            "u-1001",
            "Order Completed",
            "2024-03-14T09:26:53+0000",  # timestamp, not receivedAt (11:02)
            {"revenue": 42.5, "currency": "EUR", "order_id": "o-9001"},
        ),
        event(
            "a-88aa", "Product Viewed", "2024-03-14T09:22:30+0000", {"sku": "SKU-1", "price": 19.99}
        ),
        event("u-1002", "Signed Up", "2024-03-13T18:00:00+0000", {"plan": "free"}),
    )
    # identify and page rows are filtered, not rejected; the bad time and the anonymous-less row are
    assert report["rows_filtered"] == 2
    assert report["rows_rejected"] == 2
    assert report["rejects_by_rule"] == {"timestamp": 1, "identity": 1}
    assert report["repairs"] == {"coalesce": 1}


def test_mixpanel_reads_the_user_and_epoch_time_inside_properties(tmp_path: Path) -> None:
    bodies, report = send(
        tmp_path, EXPORTS / "mixpanel-export.jsonl", EXPORTS / "mixpanel-vero.toml"
    )
    assert bodies == in_order(
        event(
            "u-2001",
            "Sign Up",
            "2024-03-14T09:26:53+0000",
            {"$browser": "Chrome", "plan": "pro", "referrer": "newsletter"},
        ),
        event(
            "u-2001", "Purchase", "2024-03-14T09:36:40+0000", {"amount": 49.0, "currency": "USD"}
        ),
        event(
            "u-2002", "Purchase", "2024-03-14T09:38:20+0000", {"amount": 15.5, "currency": "EUR"}
        ),
        event("u-2003", "Page View", "2024-03-14T09:40:00+0000", {"page": "/docs"}),
    )
    assert report["rejects_by_rule"] == {"timestamp": 1, "identity": 1}


def test_amplitude_json_gz_with_its_utc_times_and_event_properties(tmp_path: Path) -> None:
    bodies, report = send(
        tmp_path, EXPORTS / "amplitude-export.json.gz", EXPORTS / "amplitude-vero.toml"
    )
    assert bodies == in_order(
        event("u-3001", "session_start", "2023-03-14T09:26:53+0000", {}),
        event("u-3001", "add_to_cart", "2023-03-14T09:30:01+0000", {"sku": "SKU-7", "price": 12.5}),
        event("u-3002", "checkout", "2023-03-14T11:15:42+0000", {"sku": "SKU-7", "total": 25.0}),
        # "14/03/2023 11:20" read by the mapping's second pattern
        event("u-3003", "checkout", "2023-03-14T11:20:00+0000", {"sku": "SKU-9"}),
    )
    assert report["rejects_by_rule"] == {"identity": 1}
    assert report["repairs"]["time_format"] == 5


def test_a_postgres_dump_sends_no_null_marker_and_trims_emails(tmp_path: Path) -> None:
    bodies, report = send(tmp_path, EXPORTS / "postgres-users.csv", EXPORTS / "postgres-vero.toml")
    assert "\\N" not in json.dumps(bodies)
    assert bodies == in_order(
        {
            "id": "1001",
            "email": "ada@example.com",
            "data": {
                "first_name": "Ada",
                "plan": "pro",
                "created_at": "2023-01-05T10:00:00+0000",
                "last_seen_at": "2024-03-14T09:30:00+0000",
            },
        },
        {
            "id": "1002",
            "email": "grace@example.com",
            "data": {"first_name": "Grace", "created_at": "2023-02-11T08:15:30+0000"},
        },
        {
            "id": "1003",
            "data": {
                "first_name": "Linus",
                "plan": "free",
                "created_at": "2023-03-01T00:00:00+0000",
                "last_seen_at": "2024-03-01T18:05:00+0000",
            },
        },
        # its last_seen_at "13/45/2024 99:99" is dropped (drop_invalid), the user still sent
        {
            "id": "1005",
            "email": "BOB@Example.com",
            "data": {"first_name": "Bob", "created_at": "2023-04-20T16:45:00+0000"},
        },
        {
            "id": "orphan@example.com",
            "email": "orphan@example.com",
            "data": {
                "first_name": "Nobody",
                "plan": "free",
                "created_at": "2023-05-01T09:00:00+0000",
            },
        },
    )
    assert report["repairs"] == {"dropped": 1, "normalise": 2, "null_marker": 6, "time_format": 3}
    assert report["reject_examples"]["email"] == [
        f'{EXPORTS / "postgres-users.csv"}, line 5: email "łukasz@example.pl" is not a valid '
        "email address: non-ASCII local part"
    ]
    assert any("left out of rows sent without them" in w for w in report["warnings"])


# --------------------------------------------------------------------------- each repair

TRACK = """destination = "vero"
action = "track"
{top}
[fields]
"identity.id" = "{user}"
event_name = "event"
"extras.created_at" = "{time}"
data = "{data}"
{rest}
"""


def track(
    *, user: str = "user", time: str = "at", data: str = "props.*", top: str = "", rest: str = ""
) -> str:
    return TRACK.format(user=user, time=time, data=data, top=top, rest=rest)


AT = "2024-01-02T03:04:05Z"
SENT_AT = "2024-01-02T03:04:05+0000"


def test_where_counts_other_rows_as_filtered_not_rejected(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path,
        {"kind": "track", "user": "u1", "event": "A", "at": AT, "props": {}},
        {"kind": "page", "user": "u1", "event": None, "at": "garbage", "props": {}},
        {"kind": "track", "user": "u2", "event": "B", "at": AT, "props": {}},
    )
    bodies, report = send(tmp_path, data, track(top="where = \"kind = 'track'\""))
    assert sorted(b["event_name"] for b in bodies) == ["A", "B"]
    assert (report["rows_filtered"], report["rows_rejected"]) == (1, 0)


def test_a_reject_shows_its_row_as_read_before_the_repairs(tmp_path: Path) -> None:
    data = write_csv(
        tmp_path,
        "kind,user,email,event,at,plan",
        "page,u0, bad ,P,03/14/2024 09:30,\\N",  # filtered out, though it would be rejected
        "track,u1,  łukasz@example.pl ,A,03/14/2024 09:30,\\N",
        "track,u2,  ok@example.com ,B,03/14/2024 09:30,\\N",
    )
    mapping = track(
        top="where = \"kind = 'track'\"",
        data="*",
        rest=(
            '"identity.email" = "email"\n'
            '[repairs]\nnull_markers = ["\\\\N"]\n'
            '[repairs.normalise]\nemail = ["trim"]\n'
            '[repairs.time_formats]\nat = ["%m/%d/%Y %H:%M"]\n'
        ),
    )
    rejects, report = tmp_path / "rejects.jsonl", tmp_path / "report.json"
    (tmp_path / "m.toml").write_text(mapping, encoding="utf-8")
    result = invoke(
        "run", data, "--mapping", tmp_path / "m.toml", "--endpoint", "embedded",
        "--state", tmp_path / "state", "--rejects", rejects, "--report", report, "-q",
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    # Null markers count on every row read; the repairs after the filter on the rows it keeps.
    counts = json.loads(report.read_text())
    assert (counts["rows_filtered"], counts["rows_rejected"], counts["rows_sent"]) == (1, 1, 1)
    assert counts["repairs"] == {"null_marker": 3, "normalise": 2, "time_format": 2}
    [reject] = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert reject["_line"] == 3
    assert reject["_rule"] == "email"
    row = {k: v for k, v in reject.items() if not k.startswith("_")}
    assert row == {
        "kind": "track",
        "user": "u1",
        "email": "  łukasz@example.pl ",
        "event": "A",
        "at": "03/14/2024 09:30",
        "plan": "\\N",
    }


def test_a_filtered_row_does_not_decide_the_epoch_unit(tmp_path: Path) -> None:
    # The batch's first epoch value decides seconds or milliseconds: the first the filter keeps.
    data = write_csv(
        tmp_path, "kind,user,event,at", "page,u0,P,1710408413000", "track,u1,A,1710408413"
    )
    bodies, report = send(tmp_path, data, track(data="*", top="where = \"kind = 'track'\""))
    assert [b["extras"]["created_at"] for b in bodies] == ["2024-03-14T09:26:53+0000"]
    assert (report["rows_filtered"], report["rows_rejected"]) == (1, 0)


def test_null_markers_per_file_and_per_column(tmp_path: Path) -> None:
    data = write_csv(
        tmp_path,
        "user,event,at,plan,note",
        f"u1,A,{AT},\\N,n/a",
        f"u2,B,{AT},pro,fine",
    )
    mapping = track(
        data="*",
        rest='[repairs]\nnull_markers = ["\\\\N"]\n[repairs.nulls]\nnote = ["n/a"]\n',
    )
    bodies, report = send(tmp_path, data, mapping)
    by_event = {b["event_name"]: b.get("data") for b in bodies}
    assert by_event == {"A": None, "B": {"plan": "pro", "note": "fine"}}
    assert report["repairs"] == {"null_marker": 2}


def test_a_member_keeps_its_json_kind_and_star_leaves_out_members_mapped_elsewhere(
    tmp_path: Path,
) -> None:
    data = write_jsonl(
        tmp_path,
        {
            "event": "A",
            "props": {
                "uid": "12",
                "at": AT,
                "n": 12,
                "s": "12",
                "code": "007",
                "deep": {"other": 1},
            },
        },
        {"event": "B", "props": {"uid": 7, "at": AT, "flag": True, "token": "t", "code": 7}},
    )
    mapping = track(
        user="props.uid",
        time="props.at",
        rest='"data.code" = "props.code"\n[repairs]\nexclude = ["props.token"]\n',
    )
    bodies, _ = send(tmp_path, data, mapping)
    assert bodies == in_order(
        event("12", "A", SENT_AT, {"n": 12, "s": "12", "deep": {"other": 1}, "code": "007"}),
        event("7", "B", SENT_AT, {"flag": True, "code": 7}),
    )


def test_coalesce_takes_the_fallback_where_the_column_is_empty(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path,
        {"user": "u1", "anon": "a1", "event": "A", "at": AT, "props": {}},
        {"user": None, "anon": "a2", "event": "B", "at": AT, "props": {}},
        {"user": " ", "anon": "a3", "event": "C", "at": AT, "props": {}},
    )
    bodies, report = send(tmp_path, data, track(rest='[repairs.coalesce]\nuser = ["anon"]\n'))
    assert sorted(b["identity"]["id"] for b in bodies) == ["a2", "a3", "u1"]
    assert report["repairs"] == {"coalesce": 2}


def test_trim_and_lower_and_lowering_an_identity_is_opt_in(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path,
        {"user": "u1", "email": "  Ada@Example.COM ", "event": "A", "at": AT, "props": {}},
    )
    rest = '"identity.email" = "email"\n[repairs.normalise]\nemail = ["trim", "lower"]\n'
    (tmp_path / "m.toml").write_text(track(rest=rest), encoding="utf-8")
    with pytest.raises(MappingError, match="normalise_identity = true"):
        load_mapping(tmp_path / "m.toml")
    rest = rest.replace(
        "[repairs.normalise]", "[repairs]\nnormalise_identity = true\n[repairs.normalise]"
    )
    rest = rest.replace('"identity.email" = "email"\n', "")
    mapping = track(rest=rest).replace("[fields]\n", '[fields]\n"identity.email" = "email"\n')
    bodies, report = send(tmp_path, data, mapping)
    assert bodies[0]["identity"] == {"id": "u1", "email": "ada@example.com"}
    assert report["repairs"] == {"normalise": 1}


def test_time_patterns_in_order_with_an_offset_and_declared_epoch_units(tmp_path: Path) -> None:
    data = write_csv(
        tmp_path,
        "user,event,at,ms",
        "u1,A,03/14/2024 09:30,1710408413000",
        "u2,B,14.03.2024 09:30 +0200,1710408413000",
        "u3,C,2024-03-14T09:30:00Z,1710408413000",
    )
    mapping = track(
        data="*",
        rest=(
            '[types]\nms = "timestamp"\n'
            '[repairs.time_formats]\nat = ["%m/%d/%Y %H:%M", "%d.%m.%Y %H:%M %z"]\n'
            '[repairs.epoch_units]\nms = "ms"\n'
        ),
    )
    bodies, report = send(tmp_path, data, mapping)
    assert {b["identity"]["id"]: b["extras"]["created_at"] for b in bodies} == {
        "u1": "2024-03-14T09:30:00+0000",
        "u2": "2024-03-14T07:30:00+0000",
        "u3": "2024-03-14T09:30:00+0000",
    }
    assert {b["data"]["ms"] for b in bodies} == {"2024-03-14T09:26:53+0000"}
    assert report["repairs"] == {"time_format": 2}


def test_a_declared_epoch_unit_wins_over_the_first_value(tmp_path: Path) -> None:
    # 86400000 alone reads as seconds (year 1972); declared, it is milliseconds: 1970-01-02.
    data = write_csv(tmp_path, "user,event,at", "u1,A,86400000")
    bodies, _ = send(tmp_path, data, track(data="*", rest='[repairs.epoch_units]\nat = "ms"\n'))
    assert bodies[0]["extras"]["created_at"] == "1970-01-02T00:00:00+0000"


def test_drop_invalid_sends_the_row_without_the_bad_value_but_never_drops_an_identity(
    tmp_path: Path,
) -> None:
    data = write_jsonl(
        tmp_path,
        {"user": "u1", "email": "łukasz@example.pl", "event": "A", "at": AT, "props": {}},
        {"user": "u2", "email": "ok@example.com", "event": "B", "at": AT, "props": {}},
    )
    users = (
        'destination = "vero"\naction = "identify"\n[fields]\nid = "user"\nemail = "email"\n'
        "[repairs]\ndrop_invalid = [{cols}]\n"
    )
    (tmp_path / "m.toml").write_text(users.format(cols='"email", "user"'), encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_mapping(tmp_path / "m.toml")
    assert "'email' identifies the user" in str(caught.value)
    assert "'user' identifies the user" in str(caught.value)
    # data.timezone is a whole number from -12 to 14: 99 breaks it, and only it is left out.
    mapping = users.format(cols='"timezone"').replace(
        'email = "email"\n', 'email = "email"\ndata = "*"\n'
    )
    data = write_jsonl(
        tmp_path,
        {"user": "u1", "email": "a@example.com", "timezone": 99, "plan": "pro"},
        {"user": "u2", "email": "b@example.com", "timezone": 2, "plan": "free"},
        name="users.jsonl",
    )
    bodies, report = send(tmp_path, data, mapping)
    by_user = {b["id"]: b.get("data") for b in bodies}
    assert by_user == {"u1": {"plan": "pro"}, "u2": {"timezone": 2, "plan": "free"}}
    assert report["repairs"] == {"dropped": 1}
    assert report["rows_rejected"] == 0


def test_mapping_repair_problems_are_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        track(
            top='where = "kind = = 1"',
            rest=(
                "[repairs]\nnull_markers = 5\nbogus = 1\n"
                '[repairs.normalise]\nplan = ["upper"]\n'
                '[repairs.epoch_units]\nat = "ns"\n'
                '[repairs.time_formats]\nat = ["MM/DD"]\n'
            ),
        ),
        encoding="utf-8",
    )
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    text = str(caught.value)
    assert "has 6 problem(s)" in text
    for part in ("where = ", "null_markers", "repairs.bogus", "'upper'", "'ns'", "'MM/DD'"):
        assert part in text


def test_repairs_are_part_of_the_fingerprint(
    tmp_path: Path,
) -> None:
    plain = tmp_path / "plain.toml"
    plain.write_text(track(), encoding="utf-8")
    filtered = tmp_path / "filtered.toml"
    filtered.write_text(track(top="where = \"kind = 'track'\""), encoding="utf-8")
    assert load_mapping(plain).fingerprint != load_mapping(filtered).fingerprint


def test_a_semicolon_separated_csv_as_a_spreadsheet_exports_it(tmp_path: Path) -> None:
    # Decimal commas beside ";": read with a comma, every row would have the wrong field count.
    data = write_csv(
        tmp_path, "user;event;at;price", f"u1;Bought;{AT};1,50", f"u2;Bought;{AT};2,00"
    )
    bodies, report = send(tmp_path, data, track(data="*", rest='[repairs]\nseparator = ";"\n'))
    assert sorted(b["data"]["price"] for b in bodies) == ["1,50", "2,00"]
    assert report["rows_rejected"] == 0


# ------------------------------------------------- the separator and encoding a sheet is written in

SHEET_ROWS = (
    "user;event;at;name;price",
    f"u1;Bought;{AT};Müller;1,50 €",
    f"u2;Bought;{AT};Straße “Nord”;2,00 €",
    "u3;Bought;démain;Renée;3,00 €",
    f"u4;Bought;{AT};Zoë;4,00 €",
)
SHEET_MAPPING = '[repairs]\nseparator = ";"\nencoding = "{encoding}"\n'


def sheet_file(tmp_path: Path, kind: str) -> Path:
    """The sheet's rows in Windows-1252: as they are, with a quoted field (read by Python's csv
    rather than split at the separator), or gzip-compressed."""
    rows = list(SHEET_ROWS)
    if kind == "quoted":
        rows[4] = f'u4;Bought;{AT};"Zoë; jr.";4,00 €'
    data = ("\n".join(rows) + "\n").encode("cp1252")
    path = tmp_path / ("sheet.csv.gz" if kind == "gzip" else "sheet.csv")
    path.write_bytes(gzip.compress(data) if kind == "gzip" else data)
    return path


@pytest.mark.parametrize("kind", ["plain", "quoted", "gzip"])
@pytest.mark.parametrize("encoding", ["cp1252", "windows-1252"])
def test_a_windows_1252_spreadsheet_export_declared_in_the_mapping(
    tmp_path: Path, kind: str, encoding: str
) -> None:
    data = sheet_file(tmp_path, kind)
    mapping = track(data="*", rest=SHEET_MAPPING.format(encoding=encoding))
    bodies, report = send(tmp_path, data, mapping)
    fourth = "Zoë; jr." if kind == "quoted" else "Zoë"
    assert [(b["identity"]["id"], b["data"]) for b in bodies] == [
        ("u1", {"name": "Müller", "price": "1,50 €"}),
        ("u2", {"name": "Straße “Nord”", "price": "2,00 €"}),
        ("u4", {"name": fourth, "price": "4,00 €"}),
    ]
    # The reject names the row a spreadsheet shows, with the value as the file means it.
    assert report["reject_examples"] == {
        "timestamp": [
            f"{data}, line 4: démain is not a time (ISO 8601, epoch seconds or milliseconds)"
        ]
    }


def test_latin1_json_lines_declared_in_the_mapping(tmp_path: Path) -> None:
    rows = [
        {"user": "u1", "event": "Café", "at": AT, "props": {"city": "Zürich", "note": "½ à ¾"}},
        {"user": "u2", "event": "Crème", "at": AT, "props": {"city": "Nîmes"}},
    ]
    data = tmp_path / "in.jsonl"
    text = "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n"
    data.write_bytes(text.encode("latin-1"))
    bodies, report = send(tmp_path, data, track(rest='[repairs]\nencoding = "latin-1"\n'))
    assert bodies == in_order(
        event("u1", "Café", SENT_AT, {"city": "Zürich", "note": "½ à ¾"}),
        event("u2", "Crème", SENT_AT, {"city": "Nîmes"}),
    )
    assert report["rows_sent"] == 2


def test_an_undeclared_windows_1252_file_is_refused_with_the_line_that_declares_it(
    tmp_path: Path,
) -> None:
    data = sheet_file(tmp_path, "plain")
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(track(data="*", rest='[repairs]\nseparator = ";"\n'), encoding="utf-8")
    result = invoke("validate", data, "--mapping", mapping)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {data}, line 2, column 33: bytes fc are not UTF-8\n"
        "Hint: in Windows-1252, as spreadsheets export, the bytes read 'ü': declare the file's "
        'encoding with the line encoding = "cp1252" in the mapping\'s [repairs] table '
        '(encoding = "latin-1" for ISO-8859-1), or convert the file to UTF-8: '
        "iconv -f CP1252 -t UTF-8 sheet.csv > utf8-sheet.csv\n"
    )


@pytest.mark.parametrize(
    "value",
    [
        pytest.param('"utf-16"', id="utf16"),
        pytest.param('"ascii"', id="ascii"),
        pytest.param('"klingon"', id="unknown"),
        pytest.param('"utf\\u0000"', id="nul"),
        pytest.param("5", id="not-a-string"),
    ],
)
def test_an_encoding_not_read_here_is_a_mapping_problem(tmp_path: Path, value: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(track(rest=f"[repairs]\nencoding = {value}\n"), encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    shown = "5" if value == "5" else repr(tomllib.loads(f"v = {value}")["v"])
    assert str(caught.value) == (
        f"mapping file {path} has 1 problem(s):\n  - repairs.encoding = "
        f"{shown} is not an encoding read here (known: "
        '"utf-8"; "cp1252" (or "windows-1252"); "latin-1" (or "iso-8859-1"))'
    )


# Computed by main before repairs.encoding existed (45a9fbe): a state directory of a mapping
# without the key must still resume under it.
FINGERPRINTS = {
    "": "dd16442639a5cd31e02d1629aac39d29",
    '[repairs]\nseparator = ";"\n': "718356de7248dfa6e9eebcc2f63b8be2",
}


def test_encoding_is_part_of_the_fingerprint_only_when_not_utf8(tmp_path: Path) -> None:
    def fingerprint(rest: str) -> str:
        path = tmp_path / "m.toml"
        path.write_text(track(data="*", rest=rest), encoding="utf-8")
        return load_mapping(path).fingerprint

    for rest, before in FINGERPRINTS.items():
        assert fingerprint(rest) == before
    separator = '[repairs]\nseparator = ";"\n'
    assert fingerprint(f'{separator}encoding = "UTF-8"\n') == FINGERPRINTS[separator]
    cp1252 = fingerprint(f'{separator}encoding = "cp1252"\n')
    assert cp1252 == fingerprint(f'{separator}encoding = "Windows-1252"\n')
    assert cp1252 not in FINGERPRINTS.values()
    assert fingerprint(f'{separator}encoding = "latin-1"\n') not in (*FINGERPRINTS.values(), cp1252)


def test_a_declared_file_sent_before_is_known_again_by_its_own_bytes(tmp_path: Path) -> None:
    data = sheet_file(tmp_path, "gzip")
    mapping = track(data="*", rest=SHEET_MAPPING.format(encoding="cp1252"))
    first, report = send(tmp_path, data, mapping)
    assert report["rows_sent"] == 3
    again, report = send(tmp_path, data, mapping)
    assert (again, report["rows_sent"]) == (first, 0)


def test_a_key_only_later_lines_have_is_found_in_the_declared_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mapping is checked against the first lines' keys; a mapped key they lack sends the
    # check through the whole file (here from line 2 on), which reads it in its encoding too.
    monkeypatch.setattr("importer.inputs.reader.SAMPLE_LINES", 1)
    monkeypatch.setattr("importer.pipeline.run.SAMPLE_LINES", 1)
    rows = [
        {"user": "u1", "event": "Café", "at": AT, "props": {}},
        {"user": "u2", "event": "Crème", "at": AT, "props": {}, "plan": "Größe"},
    ]
    data = tmp_path / "in.jsonl"
    text = "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n"
    data.write_bytes(text.encode("latin-1"))
    mapping = track(rest='"data.plan" = "plan"\n[repairs]\nencoding = "latin-1"\n')
    bodies, _ = send(tmp_path, data, mapping)
    assert sorted((b["identity"]["id"], b.get("data")) for b in bodies) == [
        ("u1", None),
        ("u2", {"plan": "Größe"}),
    ]
