"""The README is a front page and docs/ holds the reference: every relative link lands on a file
(and a heading, when it names one), every page is listed, and the docs' commands against the
embedded mock run as written."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from pipeline_helpers import ROOT

from importer.cli.app import main

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(path: Path) -> str:
    """The page without its fenced code blocks, where brackets and # are code."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated one numbered."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#+ +(.+?) *#*$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(prose(path)) if not re.match(r"^[a-z]+:", target)]


def test_the_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 400, f"README.md has {len(lines)} lines: move reference into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_and_its_heading(page: Path) -> None:
    for target in relative_links(page):
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        assert linked.is_relative_to(ROOT), (page.name, target)
        assert linked.exists(), (page.name, target)
        if anchor:
            assert linked.suffix == ".md", (page.name, target)
            assert anchor in anchors(prose(linked)), (page.name, target)


def test_the_link_check_sees_links_and_anchors() -> None:
    assert "docs/mapping.md" in relative_links(ROOT / "README.md")
    headings = "# Delivery\n## Duplicates: the trap in Vero's API\n## Delivery\n### `--shard` K/N\n"
    assert anchors(headings) == {
        "delivery",
        "duplicates-the-trap-in-veros-api",
        "delivery-1",
        "--shard-kn",
    }


@pytest.mark.parametrize("index", ["README.md", "docs/README.md"])
def test_every_docs_page_is_listed(index: str) -> None:
    page = ROOT / index
    listed = {(page.parent / target.partition("#")[0]).resolve() for target in relative_links(page)}
    for doc in DOCS.glob("*.md"):
        if doc.name != "README.md":
            assert doc.resolve() in listed, (index, doc.name)


def embedded_commands() -> list[tuple[str, str]]:
    """(page, command) for each command in the docs that runs against the embedded mock, but
    for those another test runs: the install line (test_readme), Userpilot's samples
    (test_readme) and the sample job file (test_jobfile)."""
    found = []
    for page in PAGES:
        for block in re.findall(
            # ```text blocks are output (docs/cli.md's --help), not commands
            r"^```(?!text)[a-z]*\n(.*?)^```",
            page.read_text(encoding="utf-8"),
            re.DOTALL | re.M,
        ):
            for line in block.replace("\\\n", " ").splitlines():
                is_command = line.startswith(("importer ", ".venv/bin/importer "))
                words = shlex.split(line, comments=True) if is_command else []
                if (
                    words
                    and words[0] in ("importer", ".venv/bin/importer")
                    and "embedded" in words
                    and "&&" not in line
                    and "samples/userpilot-" not in line
                    and "samples/migration.toml" not in line
                ):
                    found.append((page.name, line))
    return found


def test_the_docs_show_commands_against_the_mock() -> None:
    pages = {page for page, _ in embedded_commands()}
    assert {"mapping.md", "delivery.md"} <= pages, pages


@pytest.mark.parametrize(
    ("page", "line"),
    embedded_commands(),
    ids=lambda item: item if item.endswith(".md") else shlex.split(item)[-1].rsplit("/", 1)[-1],
)
def test_every_command_against_the_mock_runs_as_written(
    tmp_path: Path, page: str, line: str
) -> None:
    for folder in ("samples", "schemas"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    done = subprocess.run(
        [sys.executable, "-m", "importer", *shlex.split(line)[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # The samples have bad rows on purpose (README.md, "Samples"): every such run exits 3.
    assert done.returncode == 3, (page, line, done.stdout, done.stderr)
    assert re.search(r"delivered +[1-9]", done.stdout), (page, line, done.stdout)


SHELL_STOPS = {"&&", "||", ";", "|", ">", ">>", "2>&1", "&"}
COMMAND_IN_LINE = re.compile(
    r"(?:^|[\s\"'=/])importer (validate|run|replay|status|init|mock-server|presets)\b([^\"'#]*)"
)


def documented_invocations() -> list[tuple[str, list[str]]]:
    """Every `importer COMMAND ...` in a code block of the README or the docs (shell lines, cron
    lines, the command strings of scheduler snippets), as (page, argv after `importer`)."""
    found = []
    for page in [ROOT / "README.md", *PAGES]:
        for block in re.findall(
            r"^```[a-z]*\n(.*?)^```", page.read_text(encoding="utf-8"), re.DOTALL | re.M
        ):
            for line in block.replace("\\\n", " ").splitlines():
                for match in COMMAND_IN_LINE.finditer(line):
                    words = [match.group(1)]
                    for word in shlex.split(match.group(2), comments=True):
                        if word in SHELL_STOPS or word.startswith(("2>", ">", "$(")):
                            break
                        words.append(word)
                    if not any(word.startswith("[") for word in words):  # a synopsis
                        found.append((page.name, words))
    return found


def test_the_scanner_finds_commands_in_shell_cron_and_scheduler_snippets() -> None:
    pages = {page for page, _ in documented_invocations()}
    assert {"README.md", "nightly.md", "shards-and-schedulers.md"} <= pages


@pytest.mark.parametrize(
    ("page", "argv"),
    [
        pytest.param(page, argv, id=f"{page}: {' '.join(argv)[:50]}")
        for page, argv in documented_invocations()
    ],
)
def test_every_documented_command_parses_against_its_help(page: str, argv: list[str]) -> None:
    """Each documented command line names a command and options that exist, with values they
    take: the snippets a scheduler runs cannot drift from `--help` unnoticed."""
    command = main.get_command(click.Context(main), argv[0])
    assert command is not None, (page, argv)
    try:
        command.make_context(argv[0], argv[1:])
    except click.exceptions.Exit:
        pass
    except click.UsageError as exc:
        pytest.fail(f"{page}: importer {' '.join(argv)}: {exc.format_message()}")


def test_the_duplicate_promise_says_when_a_resend_becomes_a_second_event() -> None:
    """Issue 19: Vero's window is 5 minutes in seed 000 and 3 in 001/002, and check_id is not in
    the key when data is present; the promise must say so rather than "still absorbed"."""
    delivery = prose(DOCS / "delivery.md")
    assert "still absorbed" not in delivery
    section = delivery.split("### When a re-sent row becomes a second event", 1)[1]
    section = " ".join(section.split("\n## ", 1)[0].split())
    assert "count on three" in section
    assert "`check_id` is **not** in it" in section
    assert "twice `--concurrency`" in section
    vero = " ".join(prose(DOCS / "vero.md").split())
    assert "five (5) minute window" in vero
    assert "three minute window" in vero
