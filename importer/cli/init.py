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
from importer.mapping.presets import get_preset
from importer.pipeline.outputs import check_outputs

if TYPE_CHECKING:
    pass


@click.command()
@click.argument(
    "input_path",
    metavar="[INPUT]",
    required=False,
    type=click.Path(path_type=Path, dir_okay=False),
)
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
@click.option(
    "--preset",
    metavar="NAME",
    help="Start from this preset (`importer presets` lists them) instead of guessing from an "
    "INPUT: its text, comments and all, to edit.",
)
def init(
    input_path: Path | None,
    destination: str,
    action: str | None,
    out: Path | None,
    preset: str | None,
) -> None:
    """Write a commented mapping for INPUT, guessed from its header and first rows: which
    columns hold the user's id, the email, the event's name and its time (by their names and
    values); or, with --preset NAME, a copy of that preset. It loads as written; read it
    through before a run.

    \b
    Example:
      importer init samples/events.csv --out events.toml
      importer init --preset vero-track --out events.toml
      importer validate samples/events.csv --mapping events.toml
    """
    from importer.pipeline.exports import check_sample, describe_check
    from importer.pipeline.guess import (  # only this command needs them
        SAMPLE_ROWS,
        guess_mapping,
        open_to_guess,
    )

    if (input_path is None) == (preset is None):
        raise click.UsageError(
            "give an INPUT to guess a mapping from, or --preset NAME to start from a preset"
        )
    try:
        if preset is not None:
            _write(get_preset(preset).path.read_text(encoding="utf-8"), out, input_path)
            return
        assert input_path is not None  # one of the two, checked above
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
        source = open_to_guess(input_path)
        text = guess_mapping(source, target, chosen)
        _write(text, out, input_path)
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


def _write(text: str, out: Path | None, input_path: Path | None) -> None:
    """Print the mapping, or write it to --out and say what to run next."""
    from importer.files import write_atomic

    if out is None:
        click.echo(text, nl=False)
        return
    if out.exists():
        raise ImporterError(f"{out} exists: the mapping is not written over it")
    write_atomic(out, text.encode())
    click.echo(
        f"wrote {out}: check it, then: importer validate {input_path or 'INPUT'} --mapping {out}"
    )
