"""The `importer` command group: each command is a module of this package (as pip's
`_internal/commands/`), over the core, which never imports the CLI.

    entry.py        the console script: Ctrl-C during start-up is an exit, not a traceback
    app.py          the group: it imports a command's module only when that command is asked
                    for, so `mock-server` and `status` never load Polars (`--help` loads all)
    shell.py        a command's frame: errors and interrupts to messages and exit codes
    options.py      the options several commands share, one decorator per family
    progress.py     bars and progress events; events.py the --log-format json writer
    report.py       the summary printed after a run; status.py the state's status
    validate.py run.py replay.py status.py init.py mock_server.py presets.py   one a command
    reference.py    docs/cli.md, made from the commands' own --help

Exit codes (exit_codes.py, the contract in DESIGN.md): 0 all good; 1 a fatal error the user can
fix (bad mapping, unreadable file, refused token); 2 a usage error; 3 finished, but rows were
rejected or failed; 130 interrupted.
"""

from __future__ import annotations

from importlib import import_module

import click

from importer import __version__

# Each command's name and the module of this package that defines it, under the same name as
# a function. The names are fixed here, so listing them (completion, the group's usage errors)
# imports nothing.
COMMANDS = {
    "init": "init",
    "mock-server": "mock_server",
    "presets": "presets",
    "replay": "replay",
    "run": "run",
    "status": "status",
    "validate": "validate",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when first asked for (click's documented LazyGroup):
    a command pays only for what it imports itself."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, sorted as click sorts them, without importing any."""
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command called `cmd_name`, its module imported now; None for an unknown name."""
        module = COMMANDS.get(cmd_name)
        if module is None:
            return super().get_command(ctx, cmd_name)
        command = getattr(import_module(f"importer.cli.{module}"), module)
        assert isinstance(command, click.Command), cmd_name
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="importer")
def main() -> None:
    """Import historical users and events from CSV/TSV/JSONL into Vero's Track API or Userpilot.

    Check files with `validate`, rehearse with `run --dry-run`, send with `run`, and re-send a
    reviewed payload file with `replay`. Exit codes: 0 all good, 1 fatal error, 2 usage error,
    3 finished but some rows were rejected or undeliverable (or the API would drop events as
    duplicates and the mapping does not accept that), 130 interrupted (run the same command
    again to go on).
    """
