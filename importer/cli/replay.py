"""`importer replay`: send a payload file (a dry run's --out, or dead letters) as it is, resumable like a run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from importer.api.settings import (
    delivery_options,
)
from importer.cli.events import (
    start_event,
)
from importer.cli.options import (
    concurrency_option,
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
)
from importer.cli.progress import delivery_progress
from importer.cli.report import (
    finish_delivery,
)
from importer.cli.shell import (
    LoggedCommand,
    accept_interrupts,
    deliver_with_signals,
    fail,
    interrupted_delivery,
)
from importer.destinations import get_destination
from importer.errors import ImporterError
from importer.pipeline.outputs import check_outputs
from importer.pipeline.run import (
    replay_payloads,
)

if TYPE_CHECKING:
    pass


@click.command(cls=LoggedCommand)
@click.argument("payloads", type=click.Path(path_type=Path, dir_okay=False))
@endpoint_option
@concurrency_option
@rate_option
@state_option
@fresh_option
@destination_option("The API the payloads are for.")
@rejects_option
@dead_letter_option
@report_option
@token_file_option
@retries_option
@timeout_option
@log_options
@quiet_option
def replay(
    payloads: Path,
    endpoint: str | None,
    concurrency: int,
    rate: float | None,
    state_dir: Path,
    fresh: bool,
    destination: str,
    rejects: Path | None,
    dead_letter: Path | None,
    report: Path | None,
    token_file: Path | None,
    max_retries: int,
    timeout: float,
    quiet: bool,
) -> None:
    """Send a payload file as it is: a reviewed dry run (--out) or fixed dead letters.

    Uses the same engine, limits and checkpoint as `run`; running it again resumes. Each line is
    {"method", "path", "body", "source"}; a line that is not such a request is rejected.
    """
    try:
        accept_interrupts()
        target = get_destination(destination)
        delivery = delivery_options(
            endpoint=endpoint,
            destination=target,
            token_file=token_file,
            state_dir=state_dir,
            fresh=fresh,
            dead_letter=dead_letter,
            concurrency=concurrency,
            rate=rate,
            max_retries=max_retries,
            timeout=timeout,
        )
        check_outputs(
            {
                "--rejects": rejects,
                "--report": report,
                "--dead-letter": delivery.dead_letter_path,
                **report_html_output(),
            },
            inputs=[payloads],
            state_dir=state_dir,
        )
        start_event(
            "replay",
            (payloads,),
            endpoint=delivery.endpoint,
            destination=target.name,
            state=str(state_dir),
        )
        bar = delivery_progress(quiet)
        summary = deliver_with_signals(
            lambda control: replay_payloads(
                payloads, target, delivery, rejects_path=rejects, progress=bar, control=control
            ),
            bar,
        )
    except ImporterError as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted_delivery(state_dir)
    finish_delivery(summary, report=report, quiet=quiet)
