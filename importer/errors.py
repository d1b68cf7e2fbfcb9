"""The one family of errors a user can fix; anything else is a bug and keeps its traceback.

    ImporterError              every mistake the user can fix; the CLI prints it and exits 1
    ├── MappingError           the mapping file or an option is wrong
    ├── InputError             an input file cannot be read (missing, encoding, header)
    ├── CredentialError        no token, or the API refused it
    └── CheckpointError        the state directory cannot be used: another job's, locked by
                               a running one, unusable, or its log damaged beyond resuming

Each message names the file (and line, column or key where there is one) and, where it helps,
what to do about it.
"""

from __future__ import annotations


class ImporterError(Exception):
    """A mistake the user can fix; `hint` says how, when there is something to say."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class MappingError(ImporterError):
    """The mapping file or an option does not describe a job we can run."""


class InputError(ImporterError):
    """An input file cannot be read as a whole (as opposed to a bad row, which is a Reject)."""


class CredentialError(ImporterError):
    """The token is missing, unreadable, or was refused by the API."""


class CheckpointError(ImporterError):
    """The state directory cannot be used: written by a different job (mapping, destination or
    endpoint), locked by a running one, not a usable directory, or its job record damaged."""
