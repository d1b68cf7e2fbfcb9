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
