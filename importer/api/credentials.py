"""Where a run's token comes from: the destination's environment variable, or a file named by the
caller; never an argument. The CLI and the Python API both ask here."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from importer.destinations import Destination
from importer.errors import CredentialError
from importer.pipeline.endpoint import EMBEDDED

# Real API tokens are tens of characters; a larger "token file" is the wrong file, and every
# error message is scrubbed of the token, which costs time in proportion to its length.
MAX_TOKEN_BYTES = 4096


TOKEN_FILE = "the --token-file"


def read_token_file(path: Path) -> str:
    """The token in `path`, without surrounding white space.

    Neither its text nor its path enters a message: a token pasted where the path belongs
    would otherwise be printed for anyone reading the terminal or the job's log.
    """
    try:
        with path.open("rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise CredentialError(f"{TOKEN_FILE} is not a regular file")
            raw = handle.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise CredentialError(
            f"{TOKEN_FILE} cannot be read: {exc.strerror or type(exc).__name__}",
            hint="the path is not shown, in case it is the token itself",
        ) from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise CredentialError(
            f"{TOKEN_FILE} is larger than {MAX_TOKEN_BYTES // 1024} KiB: it should hold the "
            "token alone"
        )
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialError(f"{TOKEN_FILE} is not UTF-8 text") from None
    if not token:
        raise CredentialError(f"{TOKEN_FILE} is empty")
    if any(char.isspace() for char in token):
        raise CredentialError(
            f"{TOKEN_FILE} holds more than one word or line: it should hold the token alone"
        )
    return token


def resolve_token(
    destination: Destination, token_file: Path | None, endpoint: str, *, token: str | None = None
) -> str | None:
    """The token a Python caller passed (`token`), else from --token-file or the environment;
    never from a command-line argument."""
    if token is not None:
        given = token.strip()
        if not given or any(char.isspace() for char in given):
            raise CredentialError("the token argument is empty or holds more than one word")
        if len(given.encode()) > MAX_TOKEN_BYTES:
            raise CredentialError(
                f"the token argument is longer than {MAX_TOKEN_BYTES // 1024} KiB: it should "
                "be the token alone"
            )
        return given
    if token_file is not None:
        return read_token_file(token_file)
    token = os.environ.get(destination.token_env, "").strip()
    if len(token.encode()) > MAX_TOKEN_BYTES:
        raise CredentialError(
            f"{destination.token_env} is longer than {MAX_TOKEN_BYTES // 1024} KiB: it should "
            "hold the token alone"
        )
    if token:
        return token
    if endpoint == EMBEDDED:
        return None
    raise CredentialError(
        f"no API token: set {destination.token_env} or pass --token-file PATH",
        hint="tokens are never taken from the command line, where other users and shell "
        "history can read them",
    )
