"""`--shard K/N`: the stable hash and what it hashes, the option and its environment variable,
shards as separate processes against one mock, their state, and the README's recipes."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from click.testing import CliRunner
from pipeline_helpers import (
    NOW,
    ROOT,
    doc_text,
    make_mapping,
    mock_server_process,
    run_file,
    write_jsonl,
)

from importer.checks.shard import Shard, parse_shard, shard_of, user_hashes
from importer.cli import options
from importer.cli.app import main
from importer.cli.run import run as run_command
from importer.columns import ROUTE
from importer.delivery.options import DeliveryOptions, SendOptions
from importer.errors import MappingError
from importer.pipeline.run import RunOptions, needs_route

TRACK = str(ROOT / "schemas" / "vero-track.toml")
EVENTS_CSV = str(ROOT / "samples" / "events.csv")
TOKEN = "tok-shard-3c9e1a"
DEADLINE_S = 60.0
README = doc_text("shards-and-schedulers.md")


def digest(text: str) -> bytes:
    """BLAKE2b-64 of the UTF-8 text, computed here without the importer."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def expected_route(text: str) -> int:
    return int.from_bytes(digest(text), "big") >> 1


def expected_shard(text: str, count: int) -> int:
    return int.from_bytes(digest(text)[:4], "big") % count


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def write_events(path: Path, *, bad_line: bool = False) -> Path:
    """240 events of 50 users, each row distinct; users 40-49 have only an email."""
    lines = ["user_id,email,event,occurred_at,item"]
    for i in range(240):
        user = i % 50
        user_id = f"u{user:05d}" if user < 40 else ""
        minute = f"{i // 60:02d}:{i % 60:02d}"
        lines.append(f"{user_id},user{user}@example.com,Viewed,2024-01-01T10:{minute}Z,sku-{i}")
    if bad_line:
        lines.append("u00001,user1@example.com,,2024-01-02T00:00:00Z,sku-bad")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def user_of(body: dict[str, Any]) -> str:
    """The user a body is for: its id, else its email (the first identity value)."""
    identity = body["identity"]
    return str(identity.get("id") or identity["email"])


# ------------------------------------------------------------------------------ the hash


@pytest.mark.parametrize(
    ("text", "route", "shard"),
    [
        pytest.param("u00001", 5780268781613704365, 1, id="id"),
        pytest.param("u00002", 1618688611944161301, 2, id="another-id"),
        pytest.param("user7@example.com", 3418422150433044467, 0, id="email"),
        pytest.param("zoë", 2961568833637562097, 0, id="utf-8"),
        pytest.param("Ω-🙂", 2276992552888130924, 0, id="astral"),
        pytest.param(" u 1 ", 3212931783906673499, 0, id="spaces-kept"),
    ],
)
def test_the_hash_is_pinned(text: str, route: int, shard: int) -> None:
    assert (expected_route(text), expected_shard(text, 3)) == (route, shard)
    routes = user_hashes(pl.Series("u", [text, None, text]))
    assert routes.dtype == pl.Int64
    assert routes.to_list() == [route, 0, route]
    assert pl.select(shard_of(pl.lit(route), 3)).item() == shard


def test_route_hashes_the_first_identity_value_as_sent(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path,
        {"user_id": "u00001", "email": "a@example.com", "event": "E", "t": "2024-01-01T00:00:00Z"},
        {"email": "user7@example.com", "event": "E", "t": "2024-01-01T00:00:00Z"},
        {"user_id": "", "email": "zoe@example.com", "event": "E", "t": "2024-01-01T00:00:00Z"},
        {"user_id": "zoë", "email": "zoe@example.com", "event": "E", "t": "2024-01-01T00:00:00Z"},
        {"user_id": 42, "event": "E", "t": "2024-01-01T00:00:00Z"},
    )
    fields = {
        "identity.id": "user_id",
        "identity.email": "email",
        "event_name": "event",
        "extras.created_at": "t",
    }
    outcome = run_file(path, make_mapping(fields=fields))
    expected = ["u00001", "user7@example.com", "zoe@example.com", "zoë", "42"]
    assert outcome.rejects.height == 0
    assert outcome.valid[ROUTE].to_list() == [expected_route(text) for text in expected]


ROUTES_SCRIPT = """
import json, sys
from pathlib import Path
from pipeline_helpers import make_mapping, run_file
print(json.dumps(run_file(Path(sys.argv[1]), make_mapping()).valid["__route"].to_list()))
"""


def test_route_is_the_same_in_processes_with_different_hash_seeds(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv")
    routes = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT / "tests")}
        done = subprocess.run(
            [sys.executable, "-c", ROUTES_SCRIPT, str(events)],
            capture_output=True,
            text=True,
            env=env,
            timeout=DEADLINE_S,
            check=True,
        )
        routes.append(json.loads(done.stdout))
    users = [f"u{i % 50:05d}" if i % 50 < 40 else f"user{i % 50}@example.com" for i in range(240)]
    assert routes[0] == routes[1] == [expected_route(user) for user in users]


# ------------------------------------------------------------------------------ the option


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("3/3", "shard 3/3: K must be 0, 1 or 2 (shards are numbered from 0", id="K=N"),
        pytest.param("-1/3", "shard -1/3: K must be 0, 1 or 2", id="negative"),
        pytest.param("2/2", "shard 2/2: K must be 0 or 1", id="two"),
        pytest.param("1/1", "shard 1/1: K must be 0 (", id="one"),
        pytest.param("12/12", "shard 12/12: K must be from 0 to 11", id="many"),
        pytest.param("0/0", "shard 0/0: N must be at least 1", id="no-shards"),
        pytest.param(
            "1-3", "a shard is K/N, such as 0/3 (shard K of N, K from 0 to N-1), not '1-3'"
        ),
        pytest.param("a/3", "not 'a/3'", id="letters"),
        pytest.param("1/3/3", "not '1/3/3'", id="three-parts"),
        pytest.param("1 / 3 3", "not '1 / 3 3'", id="space-inside-a-number"),
    ],
)
@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]])
def test_a_bad_shard_is_a_usage_error(command: list[str], value: str, message: str) -> None:
    code, _, err = invoke(*command, EVENTS_CSV, "--mapping", TRACK, "--shard", value)
    assert code == 2
    assert "Invalid value for '--shard'" in err
    assert message in err


def test_a_bad_shard_in_the_environment_is_a_usage_error() -> None:
    code, _, err = invoke("validate", EVENTS_CSV, "--mapping", TRACK, env={"IMPORTER_SHARD": "5/2"})
    assert code == 2
    assert "IMPORTER_SHARD" in err
    assert "shard 5/2: K must be 0 or 1" in err


def out_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def dry_run(
    tmp_path: Path, events: Path, name: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    out, report = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.report.json"
    code, _, err = invoke(
        "run", str(events), "--mapping", TRACK, "--dry-run", "--out", str(out),
        "--report", str(report), "--quiet", *extra, env=env,
    )  # fmt: skip
    assert code in (0, 3), err
    return code, out_lines(out), json.loads(report.read_text())


def test_dry_runs_of_the_shards_split_the_rows_by_user(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", bad_line=True)
    _, everything, _ = dry_run(tmp_path, events, "all")
    seen: Counter[str] = Counter()
    for k in range(3):
        code, lines, report = dry_run(tmp_path, events, f"shard{k}", "--shard", f"{k}/3")
        assert code == 3  # every shard validates every row: the bad one is rejected in each
        assert report["rows_rejected"] == 1
        assert report["shard"] == f"{k}/3"
        assert report["rows_valid"] == 240
        assert report["rows_other_shards"] == 240 - len(lines) > 0
        assert {expected_shard(user_of(line["body"]), 3) for line in lines} == {k}
        seen.update(json.dumps(line, sort_keys=True) for line in lines)
    assert seen == Counter(json.dumps(line, sort_keys=True) for line in everything)


def test_the_shard_comes_from_the_environment_unless_given(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv")
    env = {"IMPORTER_SHARD": "2/3"}
    _, lines, report = dry_run(tmp_path, events, "env", env=env)
    assert report["shard"] == "2/3"
    assert lines
    assert {expected_shard(user_of(line["body"]), 3) for line in lines} == {2}
    _, lines, report = dry_run(tmp_path, events, "given", "--shard", "0/3", env=env)
    assert report["shard"] == "0/3"
    assert {expected_shard(user_of(line["body"]), 3) for line in lines} == {0}
    _, lines, report = dry_run(tmp_path, events, "none", env={"IMPORTER_SHARD": ""})
    assert report["shard"] is None
    assert report["rows_other_shards"] == 0
    assert len(lines) == 240


def test_the_summary_says_how_many_rows_went_to_other_shards() -> None:
    code, out, _ = invoke("validate", EVENTS_CSV, "--mapping", TRACK, "--shard", "1/3")
    assert code == 3
    assert re.search(r"rejected +6\n", out)  # as without --shard: every row is checked
    assert re.search(r"left to other shards +315\n", out)
    assert "(shard 1/3: only the rows of its users were built or sent)" in out


def test_sharding_needs_an_identity() -> None:
    mapping = make_mapping()
    anonymous = dataclasses.replace(
        mapping, action=dataclasses.replace(mapping.action, identity=())
    )
    RunOptions(inputs=(), mapping=anonymous)
    with pytest.raises(MappingError, match="--shard needs each row's user"):
        RunOptions(inputs=(), mapping=anonymous, shard=Shard(0, 2))


# ------------------------------------------------------------------------------ state


def test_a_shard_has_its_own_default_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    events = write_events(tmp_path / "events.csv")
    code, _, err = invoke(
        "run", str(events), "--mapping", TRACK, "--endpoint", "embedded", "--shard", "1/3", "-q"
    )
    assert code == 0, err
    assert (tmp_path / ".importer" / "shard-1-of-3" / "checkpoint.log").is_file()
    assert not (tmp_path / ".importer" / "checkpoint.log").exists()


def test_a_shard_does_not_resume_another_shards_state(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv")
    state = str(tmp_path / "state")
    run = ("run", str(events), "--mapping", TRACK, "--endpoint", "embedded", "--state", state)
    code, _, err = invoke(*run, "--shard", "1/3", "-q")
    assert code == 0, err
    code, _, err = invoke(*run, "--shard", "2/3")
    assert code == 1
    assert (
        f"state directory {state} belongs to another shard: it holds shard-1-of-3, this run is "
        "shard-2-of-3. Each shard keeps its own state"
    ) in err
    assert "fingerprint" not in err
    code, _, err = invoke(*run)
    assert code == 1
    assert "belongs to another shard: it holds shard-1-of-3, this run sends every shard" in err
    code, out, err = invoke(*run, "--shard", "1/3")
    assert code == 0, err
    assert re.search(r"delivered +0\n", out)


# ------------------------------------------------------------------------------ processes


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VERO_AUTH_TOKEN", "IMPORTER_SHARD")}
    return {**env, **extra}


@contextmanager
def mock_server(record: Path) -> Iterator[str]:
    """`importer mock-server` in its own process, recording what it accepts; yields its URL."""
    options = ("--record", str(record), "--dedup-window", "0")
    with mock_server_process(*options, env={"VERO_AUTH_TOKEN": TOKEN}) as url:
        yield url


def recorded(record: Path) -> list[str]:
    """Each accepted body as canonical JSON, without the mock's own `_` keys."""
    if not record.exists():
        return []
    bodies = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]
    return [
        json.dumps({k: v for k, v in body.items() if not k.startswith("_")}, sort_keys=True)
        for body in bodies
    ]


@pytest.mark.long(seconds=12)
def test_three_shard_processes_send_what_one_run_sends(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", bad_line=True)
    record = tmp_path / "received.jsonl"
    by_shard: list[list[str]] = []
    with mock_server(record) as url:
        base = [sys.executable, "-m", "importer", "run", str(events), "--mapping", TRACK]
        base += ["--endpoint", url]
        for k in range(3):
            before = len(recorded(record))
            report = tmp_path / f"report{k}.json"
            done = subprocess.run(
                [*base, "--shard", f"{k}/3", "--report", str(report)],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                env=_env(VERO_AUTH_TOKEN=TOKEN),
                timeout=DEADLINE_S,
                check=False,
            )
            assert done.returncode == 3, done.stderr  # the bad row, rejected by every shard
            by_shard.append(recorded(record)[before:])
            summary = json.loads(report.read_text())
            assert summary["rows_sent"] == len(by_shard[k]) > 0
            assert summary["rows_sent"] + summary["rows_other_shards"] == summary["rows_valid"]
            assert (tmp_path / ".importer" / f"shard-{k}-of-3" / "checkpoint.log").is_file()
        before = len(recorded(record))
        whole = subprocess.run(
            [*base, "--state", str(tmp_path / "whole"), "-q"],
            capture_output=True,
            text=True,
            env=_env(VERO_AUTH_TOKEN=TOKEN),
            timeout=DEADLINE_S,
            check=False,
        )
        assert whole.returncode == 3, whole.stderr
        unsharded = recorded(record)[before:]
    union = Counter(body for bodies in by_shard for body in bodies)
    assert len(unsharded) == 240
    assert union == Counter(unsharded)
    assert max(union.values()) == 1
    shards_of_user: dict[str, set[int]] = {}
    for k, bodies in enumerate(by_shard):
        for body in bodies:
            shards_of_user.setdefault(user_of(json.loads(body)), set()).add(k)
    assert len(shards_of_user) == 50
    for user, shards in shards_of_user.items():
        assert shards == {expected_shard(user, 3)}, user


# ------------------------------------------------------------------------------ README


def shard_section() -> str:
    start = README.index("## Shards across machines")
    return README[start : README.index("\n## ", start + 1)]


def block(language: str) -> str:
    [found] = re.findall(rf"```{language}\n(.*?)```", shard_section(), re.DOTALL)
    return str(found)


def test_the_readme_names_the_environment_variable_and_help_too() -> None:
    assert "`IMPORTER_SHARD`" in shard_section()
    assert options.SHARD_ENV == "IMPORTER_SHARD"
    for command in ("run", "validate"):
        help_text = CliRunner().invoke(main, [command, "--help"]).stdout
        assert "--shard K/N" in help_text
        assert "IMPORTER_SHARD" in help_text


def test_the_readme_kubernetes_manifest_is_an_indexed_job_of_shards() -> None:
    job = yaml.safe_load(block("yaml"))
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 3
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    env = [item["name"] for item in container["env"]]
    values = {item["name"]: item for item in container["env"]}
    # $(NAME) expands only names declared before it in the same list.
    assert env.index("JOB_COMPLETION_INDEX") < env.index("IMPORTER_SHARD")
    index = values["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert values["IMPORTER_SHARD"]["value"] == "$(JOB_COMPLETION_INDEX)/3"
    assert set(values["VERO_AUTH_TOKEN"]["valueFrom"]) == {"secretKeyRef"}
    args = [arg.replace("$(JOB_COMPLETION_INDEX)", "2") for arg in container["args"]]
    assert args[0] == "run"
    params = run_command.make_context("run", args[1:]).params
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[str(Path(params["state_dir"]).parent)] in {v["name"] for v in pod["volumes"]}
    assert params["state_dir"] == Path("/state/shard-2-of-3")
    assert params["shard"] is None  # it comes from IMPORTER_SHARD when the pod runs


def test_the_readme_airflow_task_is_mapped_over_the_shards() -> None:
    tree = ast.parse(block("python"))
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    [expand] = [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "expand"]
    partial = expand.func.value  # type: ignore[attr-defined]
    assert isinstance(partial, ast.Call)
    assert isinstance(partial.func, ast.Attribute)
    assert partial.func.attr == "partial"
    assert ast.unparse(partial.func.value) == "BashOperator"
    [mapped] = expand.keywords
    constants: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            constants[ast.unparse(node.targets[0])] = node.value.value
    envs = eval(compile(ast.Expression(mapped.value), "README", "eval"), constants)
    assert mapped.arg == "env"
    assert envs == [{"IMPORTER_SHARD": f"{k}/3"} for k in range(3)]
    options = {k.arg: k.value for k in partial.keywords}
    command = shlex.split(ast.literal_eval(options["bash_command"]))
    assert command[:2] == ["importer", "run"]
    run_command.make_context("run", command[2:])
    assert ast.literal_eval(options["append_env"]) is True


def test_the_readme_one_liner_finds_a_users_shard() -> None:
    [line] = re.findall(r"`(python3 -c .*hashlib\.blake2b\(sys\.argv.*?)`", shard_section())
    command = shlex.split(line)
    assert command[0] == "python3"
    for user in ("u00001", "u00002", "user7@example.com"):
        done = subprocess.run(
            [sys.executable, *command[1:-2], user, "3"],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            check=True,
        )
        [route] = user_hashes(pl.Series([user])).to_list()
        assert int(done.stdout) == pl.select(shard_of(pl.lit(route), 3)).item()


@pytest.mark.parametrize("text", ["1/3", " 1/3", "1/3 ", "1 /3", "1/ 3", " 1 / 3 ", "\t1/3\n"])
def test_blanks_around_either_part_of_a_shard_are_ignored(text: str) -> None:
    assert parse_shard(text) == Shard(1, 3)


def test_route_is_left_out_where_nothing_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry run or a plain send has no use for ROUTE: no user is hashed for it."""
    from importer.checks import validate
    from importer.inputs.reader import iter_batches, open_input

    def refuse(ids: pl.Series) -> pl.Series:
        raise AssertionError("a user was hashed for a ROUTE nothing reads")

    monkeypatch.setattr(validate, "user_hashes", refuse)
    path = write_jsonl(
        tmp_path,
        {"user_id": "u1", "email": "a@example.com", "event": "E", "t": "2024-01-01T00:00:00Z"},
    )
    fields = {"identity.id": "user_id", "event_name": "event", "extras.created_at": "t"}
    mapping = make_mapping(fields=fields)
    (batch,) = iter_batches(open_input(path))
    checked = validate.validate_frame(batch.frame, mapping, state=validate.FileState(), now=NOW)
    assert checked.valid.height == 1
    assert ROUTE not in checked.valid.columns


@pytest.mark.parametrize(
    ("options", "reads"),
    [
        pytest.param({}, False, id="one-process"),
        pytest.param({"workers": 2}, True, id="workers"),
        pytest.param({"send": SendOptions(per_user_order=True)}, True, id="per-user-order"),
        pytest.param(
            {"send": SendOptions(per_user_order=True), "order_time": "extras.created_at"},
            True,
            id="order-time",
        ),
    ],
)
def test_sending_asks_for_route_where_delivery_reads_it(
    tmp_path: Path, options: dict[str, Any], reads: bool
) -> None:
    delivery = DeliveryOptions(
        endpoint="http://127.0.0.1:1", token="t", state_dir=tmp_path, **options
    )
    assert needs_route(delivery) is reads
