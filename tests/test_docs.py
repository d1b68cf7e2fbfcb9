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

import pytest
from pipeline_helpers import ROOT

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
                words = shlex.split(line, comments=True) if line.strip() else []
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
