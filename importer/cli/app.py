"""The `importer` command group: each command is a module of this package (as pip's
`_internal/commands/`), over the core, which never imports the CLI.

    entry.py        the console script: Ctrl-C during start-up is an exit, not a traceback
    shell.py        a command's frame: errors and interrupts to messages and exit codes
    options.py      the options several commands share, one decorator per family
    progress.py     bars and progress events; events.py the --log-format json writer
    report.py       the summary printed after a run; status.py the state's status
    validate.py run.py replay.py status.py init.py mock_server.py presets.py   one a command
    job_file.py     a job file's steps, for run and validate

Exit codes (exit_codes.py, the contract in DESIGN.md): 0 all good; 1 a fatal error the user can
fix (bad mapping, unreadable file, refused token); 2 a usage error; 3 finished, but rows were
rejected or failed; 130 interrupted.
"""

from __future__ import annotations

import click

from importer import __version__
from importer.cli.init import init
from importer.cli.mock_server import mock_server
from importer.cli.presets import presets
from importer.cli.replay import replay
from importer.cli.run import run
from importer.cli.status import status
from importer.cli.validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="importer")
def main() -> None:
    """Import historical users and events from CSV/TSV/JSONL into Vero's Track API or Userpilot.

    Check files with `validate`, rehearse with `run --dry-run`, send with `run`, and re-send a
    reviewed payload file with `replay`. Exit codes: 0 all good, 1 fatal error, 2 usage error,
    3 finished but some rows were rejected or undeliverable (or the API would drop events as
    duplicates and the mapping does not accept that), 130 interrupted (run the same command
    again to go on).
    """


for command in (validate, run, replay, status, mock_server, init, presets):
    main.add_command(command)
