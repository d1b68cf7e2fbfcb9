"""`importer replay`: send a payload file (a dry run's --out, or dead letters) as it is, resumable
like a run."""

from __future__ import annotations

from pathlib import Path

import click

from importer.api.engine import replay_summary
from importer.api.requests import Sending
from importer.cli.options import (
    concurrency_option,
    confirmation,
    dead_letter_option,
    destination_option,
    endpoint_option,
    fresh_option,
    log_options,
    quiet_option,
    rate_option,
    rejects_option,
    report_html_output,
    report_option,
    retries_option,
    state_option,
    timeout_option,
    token_file_option,
    yes_option,
)
from importer.cli.report import finish_delivery
from importer.cli.shell import (
    LoggedCommand,
    accept_interrupts,
    cli_front,
    fail,
    interrupted_delivery,
)
from importer.errors import ImporterError


@click.command(cls=LoggedCommand)
@click.argument("payloads", type=click.Path(path_type=Path, dir_okay=False))
@endpoint_option
@concurrency_option
@rate_option
@state_option
@fresh_option
@destination_option(
    "The API the payloads are for (default: the one whose calls the file's lines name, else vero).",
    default=None,
)
@rejects_option
@dead_letter_option
@report_option
@token_file_option
@retries_option
@timeout_option
@yes_option
@log_options
@quiet_option
def replay(
    payloads: Path,
    endpoint: str | None,
    concurrency: int,
    rate: float | None,
    state_dir: Path,
    fresh: bool,
    destination: str | None,
    rejects: Path | None,
    dead_letter: Path | None,
    report: Path | None,
    token_file: Path | None,
    max_retries: int,
    timeout: float,
    yes: bool,
    quiet: bool,
) -> None:
    """Send a payload file as it is: a reviewed dry run (--out) or fixed dead letters.

    Uses the same engine, limits and checkpoint as `run`; running it again resumes. Each line is
    {"method", "path", "body", "source"}; a line that is not such a request is rejected.
    """
    try:
        accept_interrupts()
        summary = replay_summary(
            payloads,
            Sending(
                endpoint=endpoint,
                token_file=token_file,
                fresh=fresh,
                dead_letter=dead_letter,
                concurrency=concurrency,
                rate=rate,
                max_retries=max_retries,
                timeout=timeout,
                yes=yes,
            ),
            cli_front(quiet, ask=confirmation()),
            destination=destination,
            state_dir=state_dir,
            rejects=rejects,
            report=report,
            report_html=report_html_output()["--report-html"],
        )
    except ImporterError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted_delivery(state_dir)
    finish_delivery(summary, report=report, quiet=quiet)
