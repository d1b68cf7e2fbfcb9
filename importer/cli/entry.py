"""The `importer` console script: Ctrl-C during start-up is an interruption, not a traceback.

Importing Polars and aiohttp takes most of a second, and a SIGINT in that time would end the
process with a KeyboardInterrupt traceback (or click's "Aborted!" and exit 1). Until a command
takes Ctrl-C over (`accept_interrupts`), an interrupt exits 130 at once: nothing has been read
or sent yet.
"""

from __future__ import annotations

import signal
import sys

from importer.cli.exit_codes import EXIT_INTERRUPTED


def _interrupted_before_start(signum: int, frame: object) -> None:
    sys.stderr.write("\ninterrupted before anything was read or sent\n")
    raise SystemExit(EXIT_INTERRUPTED)  # click passes SystemExit through; it catches Ctrl-C


def main() -> None:
    """Run the command line with start-up interrupts handled."""
    signal.signal(signal.SIGINT, _interrupted_before_start)
    from importer.cli.app import main as cli

    cli()
