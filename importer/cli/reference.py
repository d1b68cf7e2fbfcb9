"""docs/cli.md, the CLI reference, made from the commands' own --help.

    python -m importer.cli.reference > docs/cli.md

tests/test_cli_reference.py fails when the page and the help differ, so the reference cannot
fall behind the options (sqlite-utils keeps its reference in step the same way, with cog).
"""

from __future__ import annotations

import click

from importer.cli.app import main

# Fixed, so that the page does not depend on the terminal it was made in.
WIDTH = 100
HEADER = """\
# CLI reference

Every command's `--help`, as the installed `importer` prints it. Made by
`python -m importer.cli.reference > docs/cli.md`; a test fails when this page and the help
differ. The options of `run`, `validate` and `replay` can also come from the environment
variable each one names (`env var:`); a flag wins. See [Going to production](production.md).

## Shell completion

click completes commands, options and file names. Add one line to the shell's startup file:

```
eval "$(_IMPORTER_COMPLETE=bash_source importer)"   # ~/.bashrc
eval "$(_IMPORTER_COMPLETE=zsh_source importer)"    # ~/.zshrc
_IMPORTER_COMPLETE=fish_source importer | source    # ~/.config/fish/completions/importer.fish
```
"""


def help_text(command: click.Command, name: str, parent: click.Context | None = None) -> str:
    """`command --help` as printed under the name `name`, WIDTH columns wide."""
    settings = {"terminal_width": WIDTH, "max_content_width": WIDTH, **command.context_settings}
    return command.get_help(click.Context(command, info_name=name, parent=parent, **settings))


def reference() -> str:
    """The whole page: the group's help, then each command's, in the order `--help` lists them."""
    settings = {"terminal_width": WIDTH, "max_content_width": WIDTH, **main.context_settings}
    root = click.Context(main, info_name="importer", **settings)
    parts = [HEADER, "## importer\n", "```text", help_text(main, "importer"), "```"]
    for name in main.list_commands(root):
        command = main.get_command(root, name)
        assert command is not None
        parts += [f"\n## importer {name}\n", "```text", help_text(command, name, root), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    click.echo(reference(), nl=False)
