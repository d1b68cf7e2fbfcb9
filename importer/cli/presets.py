"""`importer presets`: the mappings shipped with the package, one line each."""

from __future__ import annotations

import click

from importer.mapping.presets import presets as all_presets


@click.command()
def presets() -> None:
    """List the preset mappings, one a line: its name, then what it sends.

    Give a name to --mapping (`importer run events.csv --mapping vero-track`), or start a
    mapping of your own from one with `importer init --preset NAME --out mine.toml`.
    """
    found = all_presets()
    width = max(len(preset.name) for preset in found)
    for preset in found:
        click.echo(f"{preset.name:<{width}}  {preset.summary}")
