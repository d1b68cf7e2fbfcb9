"""The command line: parses options, calls the core, prints results and chooses exit codes.

Exit codes (the contract in DESIGN.md): 0 all good; 1 a fatal error the user can fix (bad mapping,
unreadable file, refused token); 2 a usage error; 3 finished, but rows were rejected or failed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from importer import __version__
from importer.errors import ImporterError
from importer.job import JobOptions, dry_run, validate_inputs
from importer.read import DEFAULT_BATCH_ROWS
from importer.report import Summary, format_summary, write_report
from importer.schema import load_mapping

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_PROBLEMS = 3


class BarProgress:
    """A tqdm bar per input on stderr; silent with --quiet or when stderr is not a terminal."""

    def __init__(self, *, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: tqdm[Any] | None = None

    def begin(self, name: str, total: int | None) -> None:
        """Start a bar for one input."""
        if self._enabled:
            self._bar = tqdm(
                total=total,
                desc=Path(name).name,
                unit=" rows",
                unit_scale=True,
                file=sys.stderr,
                leave=False,
            )

    def advance(self, rows: int) -> None:
        """Move the bar on."""
        if self._bar is not None:
            self._bar.update(rows)

    def end(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _progress(quiet: bool) -> BarProgress:
    return BarProgress(enabled=not quiet and sys.stderr.isatty())


def _fail(exc: ImporterError) -> None:
    click.echo(f"Error: {exc}", err=True)
    if exc.hint:
        click.echo(f"Hint: {exc.hint}", err=True)
    sys.exit(EXIT_FATAL)


def _finish(summary: Summary, *, report: Path | None, quiet: bool) -> None:
    if report is not None:
        write_report(report, summary)
    if not quiet:
        click.echo(format_summary(summary))
    problems = summary.rows_rejected or summary.rows_failed or summary.stopped
    sys.exit(EXIT_PROBLEMS if problems else EXIT_OK)


inputs_argument = click.argument(
    "inputs", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False)
)
schema_option = click.option(
    "--schema",
    "schema_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Mapping file (TOML): destination, action, [fields], [types]. See schemas/.",
)
rejects_option = click.option(
    "--rejects",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write rejected rows here (.csv or .jsonl) with _file, _line, _rule, _error.",
)
report_option = click.option(
    "--report",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a JSON summary here (rows_read, rows_valid, rows_rejected, ...).",
)
quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="Print only errors; no progress bar."
)
batch_option = click.option(
    "--batch-rows",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_ROWS,
    show_default=True,
    help="Rows read per batch; memory grows with this, not with the file.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="importer")
def main() -> None:
    """Import historical users and events from CSV/TSV/JSONL into Vero's Track API.

    Check files with `validate`, rehearse with `run --dry-run`, send with `run`, and re-send a
    reviewed payload file with `replay`. Exit codes: 0 all good, 1 fatal error, 2 usage error,
    3 finished but some rows were rejected or undeliverable.
    """


@main.command()
@inputs_argument
@schema_option
@rejects_option
@report_option
@batch_option
@quiet_option
def validate(
    inputs: tuple[Path, ...],
    schema_path: Path,
    rejects: Path | None,
    report: Path | None,
    batch_rows: int,
    quiet: bool,
) -> None:
    """Check INPUTS against the mapping and the API's rules; send nothing.

    Every row that would be refused is reported with its file, line, rule and message; the
    summary also counts events Vero would drop as duplicates. Exit 3 when any row is rejected.
    """
    try:
        options = JobOptions(
            inputs=inputs,
            mapping=load_mapping(schema_path),
            rejects_path=rejects,
            batch_rows=batch_rows,
        )
        summary = validate_inputs(options, progress=_progress(quiet))
    except ImporterError as exc:
        _fail(exc)
    _finish(summary, report=report, quiet=quiet)


@main.command()
@inputs_argument
@schema_option
@click.option(
    "--dry-run", is_flag=True, help="Read, validate and build every payload; send nothing."
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --dry-run: write the payloads here as JSONL (no credentials), for review or replay.",
)
@rejects_option
@report_option
@batch_option
@quiet_option
def run(
    inputs: tuple[Path, ...],
    schema_path: Path,
    dry_run: bool,
    out: Path | None,
    rejects: Path | None,
    report: Path | None,
    batch_rows: int,
    quiet: bool,
) -> None:
    """Validate INPUTS, build a payload per row and send them (or, with --dry-run, don't)."""
    if out is not None and not dry_run:
        raise click.UsageError("--out goes with --dry-run")
    try:
        options = JobOptions(
            inputs=inputs,
            mapping=load_mapping(schema_path),
            rejects_path=rejects,
            batch_rows=batch_rows,
        )
        summary = _dry_run(options, out=out, quiet=quiet)
    except ImporterError as exc:
        _fail(exc)
    _finish(summary, report=report, quiet=quiet)


def _dry_run(options: JobOptions, *, out: Path | None, quiet: bool) -> Summary:
    return dry_run(options, out=out, progress=_progress(quiet))


if __name__ == "__main__":
    main()
