"""docs/cli.md is every command's --help as the CLI prints it, and is up to date."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner
from pipeline_helpers import ROOT

from importer.cli.app import main
from importer.cli.reference import WIDTH, reference

PAGE = ROOT / "docs" / "cli.md"


def test_docs_cli_md_is_up_to_date() -> None:
    assert PAGE.read_text(encoding="utf-8") == reference(), (
        "docs/cli.md is out of date: python -m importer.cli.reference > docs/cli.md"
    )


@pytest.mark.parametrize("command", ["", *main.list_commands(click.Context(main))])
def test_each_section_is_what_help_prints(command: str) -> None:
    """The page is the real --help, not a rendering of its own."""
    args = [command, "--help"] if command else ["--help"]
    printed = CliRunner().invoke(
        main, args, prog_name="importer", terminal_width=WIDTH, max_content_width=WIDTH
    )
    assert printed.exit_code == 0
    heading = f"## importer {command}".rstrip()
    section = re.search(
        rf"^{re.escape(heading)}\n\n```text\n(.*?)```$",
        PAGE.read_text(encoding="utf-8"),
        re.S | re.M,
    )
    assert section is not None, heading
    assert section.group(1) == printed.output


def test_the_page_documents_shell_completion() -> None:
    assert "_IMPORTER_COMPLETE=bash_source importer" in PAGE.read_text(encoding="utf-8")


def test_shell_completion_completes_commands_as_the_page_says() -> None:
    env = {"_IMPORTER_COMPLETE": "bash_complete", "COMP_WORDS": "importer pre", "COMP_CWORD": "1"}
    completed = CliRunner(env=env).invoke(main, [], prog_name="importer")
    assert completed.output.splitlines() == ["plain,presets"]
