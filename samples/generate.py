"""Regenerate the sample inputs (deterministic): python samples/generate.py

The good rows are random but realistic; the bad rows are fixed and listed in the README, each
at a known line, so the README's commands show what a reject looks like.
"""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).parent
FIRST = [
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Alan",
    "Radia",
]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen"]
PLANS = ["free", "starter", "pro", "enterprise"]
PRODUCTS = [("Red T-shirt", 19.99), ("Blue shoes", 40.0), ("Wool socks", 7.5), ("Rain coat", 89.0)]
EVENTS = ["Signed up", "Logged in", "Viewed product", "Purchased Item", "purchased_item"]
TAGS = ["vip", "beta", "newsletter", "churn-risk", "trial", "partner"]
START = datetime(2023, 1, 1, tzinfo=UTC)


def users(rng: random.Random, count: int) -> list[dict[str, str]]:
    rows = []
    for number in range(1, count + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        signed_up = START + timedelta(minutes=rng.randrange(0, 500_000))
        rows.append(
            {
                "user_id": f"u{number:05d}",
                "email": f"{first}.{last}{number}@example.com".lower(),
                "first_name": first,
                "last_name": last,
                "plan": rng.choice(PLANS),
                "zip": f"{rng.randrange(0, 99999):05d}",
                "signed_up_at": signed_up.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    return rows


def events(rng: random.Random, people: list[dict[str, str]], count: int) -> list[dict[str, str]]:
    rows = []
    for _ in range(count):
        person = rng.choice(people[:40])  # a few busy users, so repeats are realistic
        event = rng.choice(EVENTS)
        when = START + timedelta(seconds=rng.randrange(0, 30_000_000))
        product, price = (
            rng.choice(PRODUCTS) if event != "Logged in" and event != "Signed up" else ("", "")
        )
        rows.append(
            {
                "user_id": person["user_id"],
                "email": person["email"],
                "event": event,
                "occurred_at": rng.choice(
                    [
                        when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        when.strftime("%Y-%m-%d %H:%M:%S"),
                        when.astimezone().strftime("%Y-%m-%dT%H:%M:%S.123+00:00"),
                    ]
                ),
                "product": product,
                "price": str(price),
            }
        )
    return rows


def subscriptions(rng: random.Random, people: list[dict[str, str]]) -> list[dict[str, str]]:
    """One row per user for the user actions: alias (new_id), un/resubscribe, tags, and the two
    reserved properties identify types (timezone, birthday)."""
    rows = []
    for number, person in enumerate(people, start=1):
        picked = rng.sample(TAGS, rng.randrange(1, 4))
        cut = rng.randrange(0, len(picked) + 1)
        born = datetime(1950, 1, 1) + timedelta(days=rng.randrange(0, 20_000))
        rows.append(
            {
                "user_id": person["user_id"],
                "email": person["email"],
                "new_id": f"crm-{number:06d}",
                "subscribed": rng.choice(["true", "false"]),
                "tags_add": ";".join(picked[:cut]),
                "tags_remove": ";".join(picked[cut:]),
                "timezone": str(rng.randrange(-12, 15)),
                "birthday": born.strftime("%Y-%m-%d"),
            }
        )
    return rows


def main() -> None:
    rng = random.Random(20261122)
    people = users(rng, 300)
    members = subscriptions(random.Random(20261123), people[:100])
    happenings = events(rng, people, 400)
    # Bad user rows, at fixed places.
    people[9]["email"] = "not-an-email"
    people[19]["user_id"] = ""
    people[19]["email"] = ""
    people[29]["user_id"] = "x" * 300
    write_csv(HERE / "users.csv", people, bad_record_at=49)
    write_jsonl(HERE / "users.jsonl", people[:150], garbage_at=74)
    # Bad event rows, at fixed places.
    happenings[4]["occurred_at"] = "2023-02-30T10:00:00Z"
    happenings[14]["occurred_at"] = "2999-01-01T00:00:00Z"
    happenings[24]["occurred_at"] = ""
    happenings[34]["event"] = ""
    happenings[44]["email"] = "someone@@example"
    happenings[44]["user_id"] = ""
    write_csv(HERE / "events.csv", happenings, bad_record_at=99)
    for row in happenings:
        if row["price"]:
            row["price"] = float(row["price"])
        when = row["occurred_at"]
        if when and not when.startswith("2999") and "-02-30" not in when:
            parsed = datetime.fromisoformat(when.replace("Z", "+00:00"))
            parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            row["occurred_at"] = int(parsed.timestamp() * 1000)
    write_jsonl(HERE / "events.jsonl", happenings, garbage_at=199)
    # Bad rows for the user actions, at fixed places.
    members[9]["tags_add"] = members[9]["tags_remove"] = ""
    members[19]["new_id"] = members[19]["user_id"]
    members[29]["timezone"] = "+2"
    members[39]["birthday"] = "yesterday"
    members[49]["user_id"] = "y" * 300
    write_csv(HERE / "subscriptions.csv", members)
    userpilot()


# Userpilot's samples are small and written out, each row showing one of its rules. `007` and
# `0042` are ids a spreadsheet would turn into numbers. Bad rows: users line 7 (settings holds a
# JSON object, and metadata takes only primitives) and line 9 (no user_id); events line 7 (no
# event name) and line 10 (a time no parser reads); companies line 6 (no company_id).
USERPILOT_USERS = """\
user_id,email,name,plan,signed_up_at,company_id,beta,settings
007,james.bond@example.com,James Bond,enterprise,2023-03-14T09:26:53Z,c-001,true,
0042,ada.lovelace@example.com,Ada Lovelace,pro,2023-01-05T08:00:00+01:00,c-002,false,
u1003,grace.hopper@example.com,Grace Hopper,starter,2023-02-11 14:30:00,c-002,,
u1004,linus.torvalds@example.com,Linus Torvalds,free,2023-04-02T17:45:10Z,,false,
u1005,margaret.hamilton@example.com,Margaret Hamilton,enterprise,2023-05-19T06:12:00-04:00,c-003,true,
u1006,ken.thompson@example.com,Ken Thompson,pro,2023-06-30T12:00:00Z,c-001,true,"{""theme"": ""dark"", ""beta_features"": [""sso"", ""audit-log""]}"
u1007,barbara.liskov@example.com,Barbara Liskov,starter,2023-07-07T07:07:07.250Z,c-004,,
,dennis.ritchie@example.com,Dennis Ritchie,pro,2023-08-15T10:20:30Z,c-003,false,
u1009,frances.allen@example.com,Frances Allen,free,2023-09-01T00:00:00Z,,,
u1010,radia.perlman@example.com,Radia Perlman,pro,2023-10-10T10:10:10+02:00,c-004,true,
u1011,alan.kay@example.com,Alan Kay,enterprise,2023-11-11T11:11:11Z,c-001,false,
u1012,john.backus@example.com,John Backus,starter,2023-12-24T18:30:00Z,c-005,,
"""
USERPILOT_EVENTS = """\
user_id,event,occurred_at,page,plan,amount
007,logged_in,2023-03-14T09:30:00Z,/login,enterprise,
007,viewed_report,2023-03-14T09:31:12.500+00:00,/reports/q1,enterprise,
0042,logged_in,2023-03-15T08:02:44+01:00,/login,pro,
0042,upgraded_plan,2023-03-15T08:05:00+01:00,/billing,enterprise,499.0
u1003,logged_in,2023-03-16T14:00:00-05:00,/login,starter,
u1003,,2023-03-16T14:01:30-05:00,/dashboard,starter,
u1004,created_project,2023-04-02T18:00:00Z,/projects/new,free,
u1005,invited_teammate,2023-05-20T09:15:00-04:00,/team,enterprise,
u1005,exported_csv,last tuesday,/reports/q2,enterprise,
u1007,upgraded_plan,2023-07-08T10:00:00Z,/billing,pro,99.5
u1009,logged_in,2023-09-01T00:05:00Z,/login,free,
u1010,viewed_report,2023-10-11T16:45:30+02:00,/reports/q3,pro,
u1011,created_project,2023-11-12T09:00:00Z,/projects/new,enterprise,
u1012,logged_in,2023-12-27T08:00:00Z,/login,starter,
"""
USERPILOT_COMPANIES = """\
company_id,name,plan,employees,created_at
c-001,Universal Exports,enterprise,5000,2019-06-01T00:00:00Z
c-002,Analytical Engines Ltd,pro,42,2020-01-15T09:00:00+00:00
c-003,Apollo Guidance,enterprise,350,2021-03-03T12:00:00Z
c-004,CLU Systems,starter,12,2022-07-19T08:30:00-07:00
,Nameless Startup,free,3,2023-02-01T00:00:00Z
c-005,Fortran Works,starter,8,2023-05-05T05:05:05Z
c-006,Ethernet Labs,pro,120,2023-08-08T08:08:08Z
c-007,Smalltalk & Co,free,1,2023-10-31T23:59:59Z
"""


USERPILOT_PAGE_VIEWS = """\
user_id,host,page,occurred_at,user_agent
007,app.example.com,/login,2023-03-14T09:29:58Z,Mozilla/5.0 (Macintosh)
007,app.example.com,/reports/q1,2023-03-14T09:31:10Z,Mozilla/5.0 (Macintosh)
0042,app.example.com,/billing,2023-03-15T08:04:00+01:00,
u1003,,/dashboard,2023-03-16T14:01:00-05:00,Mozilla/5.0 (X11; Linux x86_64)
u1004,app.example.com,/projects/new,2023-04-02T17:59:00Z,
"""


def userpilot() -> None:
    """Write the Userpilot samples: users, events, page views and companies."""
    for name, rows in (
        ("userpilot-users.csv", USERPILOT_USERS),
        ("userpilot-events.csv", USERPILOT_EVENTS),
        ("userpilot-page-views.csv", USERPILOT_PAGE_VIEWS),
        ("userpilot-companies.csv", USERPILOT_COMPANIES),
    ):
        (HERE / name).write_text(rows, encoding="utf-8")


def write_csv(path: Path, rows: list[dict[str, str]], *, bad_record_at: int = -1) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(rows[0].keys())
        for index, row in enumerate(rows):
            if index == bad_record_at:
                writer.writerow(list(row.values())[:3])  # a record cut short by a bad export
            writer.writerow(row.values())


def write_jsonl(path: Path, rows: list[dict[str, object]], *, garbage_at: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for index, row in enumerate(rows):
            if index == garbage_at:
                handle.write('{"user_id": "u00001", "event": "Logged in", \n')  # truncated line
            compact = {key: value for key, value in row.items() if value != ""}
            handle.write(json.dumps(compact, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
