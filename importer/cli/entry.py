"""The `importer` console script: Ctrl-C during start-up is an interruption, not a traceback.

Importing Polars and aiohttp takes most of a second, and a SIGINT in that time would end the
process with a KeyboardInterrupt traceback (or click's "Aborted!" and exit 1). Until a command
takes Ctrl-C over (`accept_interrupts`), an interrupt exits 130 at once: nothing has been read
or sent yet.
"""

from __future__ import annotations

import signal
import sys

EXIT_INTERRUPTED = 130


def _interrupted_before_start(signum: int, frame: object) -> None:
    sys.stderr.write("\ninterrupted before anything was read or sent\n")
    raise SystemExit(EXIT_INTERRUPTED)  # click passes SystemExit through; it catches Ctrl-C


def accept_interrupts() -> None:
    """From here on Ctrl-C raises KeyboardInterrupt, which the command turns into its answer."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> None:
    """Run the command line with start-up interrupts handled."""
    signal.signal(signal.SIGINT, _interrupted_before_start)
    from importer.cli.app import main as cli

    cli()
