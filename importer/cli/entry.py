"""The `importer` console script: Ctrl-C during start-up is an interruption, not a traceback.

Importing Polars and aiohttp takes most of a second, and a SIGINT in that time would end the
process with a KeyboardInterrupt traceback (or click's "Aborted!" and exit 1). Until a command
takes Ctrl-C over (`accept_interrupts`), an interrupt exits 130 at once: nothing has been read
or sent yet.
"""

from __future__ import annotations

import os
import signal
import sys

from importer.cli.early import asks_json, error_line
from importer.cli.exit_codes import EXIT_INTERRUPTED

_BEFORE_START = "interrupted before anything was read or sent"


def _interrupted_before_start(signum: int, frame: object) -> None:
    # The format is read from argv and the environment: click has not parsed them yet.
    if asks_json(sys.argv[1:], os.environ):
        sys.stderr.write(error_line(_BEFORE_START, exit_code=EXIT_INTERRUPTED))
    else:
        sys.stderr.write(f"\n{_BEFORE_START}\n")
    raise SystemExit(EXIT_INTERRUPTED)  # click passes SystemExit through; it catches Ctrl-C


def main() -> None:
    """Run the command line with start-up interrupts handled."""
    signal.signal(signal.SIGINT, _interrupted_before_start)
    from importer.cli.app import main as cli

    cli()
