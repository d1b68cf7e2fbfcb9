"""`importer init`: a commented mapping guessed from an input's names and first values."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from importer.cli.shell import (
    fail,
)
from importer.destinations import DESTINATIONS, get_destination
from importer.errors import ImporterError
from importer.pipeline.outputs import check_outputs

if TYPE_CHECKING:
    pass


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--destination",
    type=click.Choice(sorted(DESTINATIONS)),
    default="vero",
    show_default=True,
    help="The API the mapping is for.",
)
@click.option(
    "--action",
    help="The action (default: guessed: an event column means the destination's event action, "
    "else its identify).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the mapping here (an existing file is never overwritten); default: print it.",
)
def init(input_path: Path, destination: str, action: str | None, out: Path | None) -> None:
    """Write a commented mapping for INPUT, guessed from its header and first rows: which
    columns hold the user's id, the email, the event's name and its time (by their names and
    values). It loads as written; read it through before a run.

    \b
    Example:
      importer init samples/events.csv --out events.toml
      importer validate samples/events.csv --mapping events.toml
    """
    from importer.files import write_atomic
    from importer.inputs.reader import open_input
    from importer.pipeline.exports import check_sample, describe_check
    from importer.pipeline.guess import SAMPLE_ROWS, guess_mapping  # only this command needs it

    try:
        target = get_destination(destination)
        chosen = None
        if action is not None:
            chosen = target.actions.get(action)
            if chosen is None:
                raise click.BadParameter(
                    f"{action!r} is not an action of {destination} ({', '.join(target.actions)})",
                    param_hint="--action",
                )
        if out is not None and out.exists():
            raise ImporterError(f"{out} exists: the mapping is not written over it")
        check_outputs({"--out": out}, inputs=(input_path,), mapping=None, state_dir=None)
        source = open_input(input_path)
        text = guess_mapping(source, target, chosen)
        if out is None:
            click.echo(text, nl=False)
        else:
            write_atomic(out, text.encode())
            click.echo(
                f"wrote {out}: check it, then: importer validate {input_path} --mapping {out}"
            )
        # The mapping tried on the file's first rows, so a wrong guess shows before a run.
        try:
            found = check_sample(source, text, now=datetime.now(UTC), rows=SAMPLE_ROWS)
        except ImporterError as exc:
            click.echo(
                f"the mapping could not be checked on the file's first rows: {exc}", err=True
            )
        else:
            click.echo(describe_check(found), err=True)
    except ImporterError as exc:
        fail(exc)
