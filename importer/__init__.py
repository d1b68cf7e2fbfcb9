"""Bulk CSV/JSONL importer and replayer for customer-engagement APIs.

The Python API, the same engine as the `importer` command:

    import importer
    report = importer.run("events.csv", mapping="mapping.toml", endpoint="embedded")
    report.rows_sent, report.exit_code

`run`, `dry_run`, `validate` and `replay` return a `Report`; errors raise `ImporterError` and
its subclasses. Names load on first use, so that `import importer` (and the command's start)
stays quick.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from importer.errors import (
    CheckpointError,
    CredentialError,
    ImporterError,
    InputError,
    MappingError,
    OptionError,
    OutputError,
    TokenRefusedError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from importer.api.callback import ProgressEvent
    from importer.api.calls import dry_run, replay, run, validate
    from importer.api.report import Report, StepReport

_LAZY = {
    "run": "importer.api.calls",
    "dry_run": "importer.api.calls",
    "validate": "importer.api.calls",
    "replay": "importer.api.calls",
    "Report": "importer.api.report",
    "StepReport": "importer.api.report",
    "ProgressEvent": "importer.api.callback",
}

__all__ = [
    "CheckpointError",
    "CredentialError",
    "ImporterError",
    "InputError",
    "MappingError",
    "OptionError",
    "OutputError",
    "ProgressEvent",
    "Report",
    "StepReport",
    "TokenRefusedError",
    "__version__",
    "dry_run",
    "replay",
    "run",
    "validate",
]


def __getattr__(name: str) -> Any:
    """Load an API name on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'importer' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
