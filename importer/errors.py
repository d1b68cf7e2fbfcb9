"""The one family of errors a user can fix; anything else is a bug and keeps its traceback.

    ImporterError              every mistake the user can fix; the CLI prints it and exits 1
    ├── MappingError           the mapping file or an option is wrong
    │   └── OptionError        options that cannot go together (the CLI: a usage error, exit 2)
    ├── InputError             an input file cannot be read (missing, encoding, header)
    ├── OutputError            an output cannot be written, or would destroy what the job
    │                          keeps (an input, the mapping, the state directory, another output)
    ├── CredentialError        no token, or an unreadable one
    │   └── TokenRefusedError  the API refused the token (HTTP 401); the run stopped
    └── CheckpointError        the state directory cannot be used: another job's, locked by
                               a running one, unusable, or its log damaged beyond resuming

A run the API ended for another reason (a redirect, an answer that is not the API's, an endpoint
that never answers) is stopped with a plain ImporterError.

Each message names the file (and line, column or key where there is one) and, where it helps,
what to do about it.
"""

from __future__ import annotations


class ImporterError(Exception):
    """A mistake the user can fix; `hint` says how, when there is something to say.

    `report` is the Report of the run the error stopped, when the Python API ran one (a
    refused token after some rows went); None otherwise.
    """

    report: object | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class MappingError(ImporterError):
    """The mapping file or an option does not describe a job we can run."""


class OptionError(MappingError):
    """Options that cannot go together, or one an action cannot honour (`--order time` without
    `--per-user-order`): the command line reports it as a usage error."""


class InputError(ImporterError):
    """An input file cannot be read as a whole (as opposed to a bad row, which is a Reject)."""


class OutputError(ImporterError):
    """A file the user asked for cannot be written, or writing it would destroy a file the job
    reads or keeps."""


class CredentialError(ImporterError):
    """The token is missing, unreadable, or was refused by the API."""


class TokenRefusedError(CredentialError):
    """The API refused the token (HTTP 401): every request would fail the same way."""


class CheckpointError(ImporterError):
    """The state directory cannot be used: written by a different job (mapping, destination or
    endpoint), locked by a running one, not a usable directory, or its job record damaged."""
