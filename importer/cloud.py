"""Inputs in object storage: `s3://bucket/key` and `s3://bucket/prefix/*.parquet`.

A pattern is expanded by listing the bucket (sorted by key, so a nightly run reads a prefix in
the same order each time). Each object is streamed down in chunks into a temporary folder and
read there like any local file, so every format, check and fingerprint works unchanged and
memory stays bounded; all of a run's objects are downloaded before the first row is read (every
input is checked before anything is sent), so the disk holds one copy of each. The folder goes
when the run's inputs are dropped, or at the latest when the process exits.

Messages, reports and the checkpoint name the object by its URL, never by the temporary copy.
Credentials and the endpoint of an S3-compatible store come from boto3's usual environment
(AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_ENDPOINT_URL, ...). boto3 is imported only when a cloud
input is named: it is the optional `cloud` extra.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import tempfile
import weakref
from collections.abc import Collection, Iterable
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from importer.errors import InputError
from importer.read import InputFile, open_input
from importer.sources import expand_inputs

# A URL given on the command line arrives as a Path, which folds `s3://` into `s3:/`.
URL = re.compile(r"^(?P<scheme>s3|gs):/+(?P<rest>.*)$", re.S)
GLOB_CHARS = re.compile(r"[*?\[]")
CHUNK_BYTES = 1 << 20  # what one read of an object's body holds in memory
INSTALL_HINT = "pip install 'importer[cloud]'"


class _Downloads:
    """The temporary folder a run's objects are downloaded into; removed when the last input
    read from it is dropped, or when the process exits."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="importer-cloud-"))
        self._count = 0
        weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)

    def place(self, key: str) -> Path:
        """A new file for the object `key`: its own subfolder, so that two keys with the same
        last part do not meet, and the key's last part as its name, which tells the format."""
        self._count += 1
        folder = self.folder / str(self._count)
        folder.mkdir()
        return folder / (PurePosixPath(key).name or "object")


@dataclass(frozen=True, slots=True)
class CloudInput(InputFile):
    """An input read from a downloaded copy of an object; named by the object's URL."""

    url: str = ""
    # Keeps the temporary folder (and so the copy at `path`) for as long as the input is used.
    downloads: _Downloads | None = None

    @property
    def name(self) -> str:
        """The object's URL, for messages, reports and the checkpoint."""
        return self.url


def cloud_url(path: Path | str) -> str | None:
    """The URL `path` names when it is an object in cloud storage (`s3://...`, `gs://...`)."""
    match = URL.match(str(path))
    return None if match is None else f"{match['scheme']}://{match['rest']}"


def place_of(source: InputFile) -> str:
    """Where an input lives, as the checkpoint knows it from run to run: an object's URL, else
    the file's resolved path (a temporary copy's path would be new each run)."""
    return source.url if isinstance(source, CloudInput) else str(source.path.resolve())


def open_sources(paths: Iterable[Path], *, probes: Collection[int] | None) -> list[InputFile]:
    """Open every input `paths` name, in order: local directories and globs expanded as
    `expand_inputs` does, cloud URLs and patterns listed, downloaded and opened from the copy."""
    sources: list[InputFile] = []
    downloads: _Downloads | None = None
    for path in paths:
        url = cloud_url(path)
        if url is None:
            sources += [open_input(item, probes=probes) for item in expand_inputs((path,))]
            continue
        client = _client(url)
        for found in expand_url(client, url):
            downloads = downloads or _Downloads()
            copy = downloads.place(found)
            _download(client, found, copy)
            sources.append(_open_copy(found, copy, downloads, probes))
    return sources


def expand_url(client: Any, url: str) -> list[str]:
    """The object URLs `url` names: itself, or for a pattern (`*`, `?`, `[...]` in the key) the
    objects whose keys it matches, sorted by key. A wildcard stops at `/` as in a local glob."""
    bucket, key = _split(url)
    magic = GLOB_CHARS.search(key)
    if magic is None:
        return [url]
    prefix = key[: magic.start()]
    parts = key.split("/")
    keys: list[str] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", ())]
    except _store_errors() as exc:
        raise _refusal(url, exc) from None
    found = sorted(name for name in keys if _matches(name.split("/"), parts))
    if not found:
        raise InputError(f"{url}: the pattern matches no object in bucket {bucket}")
    return [f"s3://{bucket}/{name}" for name in found]


def _matches(key: list[str], pattern: list[str]) -> bool:
    """Whether a key matches the pattern part by part (S3 keys are case-sensitive)."""
    return len(key) == len(pattern) and all(
        fnmatch.fnmatchcase(part, wanted) for part, wanted in zip(key, pattern, strict=True)
    )


def _split(url: str) -> tuple[str, str]:
    """The bucket and the key of an `s3://` URL."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise InputError(
            f"{url}: name an object or a pattern: s3://bucket/key or s3://bucket/*.csv"
        )
    return bucket, key


def _client(url: str) -> Any:
    """An S3 client configured from the environment, as boto3 does by itself (credentials,
    region, AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 for an S3-compatible store)."""
    if url.startswith("gs://"):
        raise InputError(
            f"{url}: gs:// inputs are not built yet",
            hint="copy the files down first (gcloud storage cp), and import the local copies",
        )
    try:
        import boto3  # the optional `cloud` extra: only for cloud inputs
    except ImportError:
        raise InputError(f"{url}: s3:// inputs need boto3", hint=INSTALL_HINT) from None
    try:
        return boto3.session.Session().client("s3")  # the environment as it is now
    except _store_errors() as exc:
        raise _refusal(url, exc) from None


def _download(client: Any, url: str, copy: Path) -> None:
    """Stream the object `url` into `copy`, a chunk at a time."""
    bucket, key = _split(url)
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with copy.open("wb") as out:
            for chunk in body.iter_chunks(CHUNK_BYTES):
                out.write(chunk)
    except OSError as exc:
        raise InputError(f"{url}: cannot be downloaded to {copy} ({exc.strerror or exc})") from exc
    except _store_errors() as exc:
        raise _refusal(url, exc) from None


def _open_copy(
    url: str, copy: Path, downloads: _Downloads, probes: Collection[int] | None
) -> CloudInput:
    """Open the downloaded copy of `url`; its checks' messages name the URL, not the copy."""
    try:
        source = open_input(copy, probes=probes)
    except InputError as exc:
        raise InputError(str(exc).replace(str(copy), url), hint=exc.hint) from None
    facts = {item.name: getattr(source, item.name) for item in fields(source)}
    return CloudInput(**facts, url=url, downloads=downloads)


# What S3's error codes mean for the user, in words they can act on.
REFUSALS = {
    "NoSuchBucket": "no such bucket",
    "NoSuchKey": "no such object",
    "404": "no such object",
    "AccessDenied": "access denied (check the credentials and the bucket's policy)",
    "403": "access denied (check the credentials and the bucket's policy)",
    "InvalidAccessKeyId": "the access key is not known to the store",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
}


def _store_errors() -> tuple[type[Exception], ...]:
    """What a call to the store raises when it fails; botocore is there once _client worked."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _refusal(url: str, exc: Exception) -> InputError:
    """One clear error for a failed call to the store, naming the URL."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return InputError(f"{url}: {REFUSALS.get(code, str(exc))}")
    if isinstance(exc, NoCredentialsError):
        return InputError(
            f"{url}: no credentials for the store",
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
        )
    return InputError(f"{url}: the store cannot be read ({exc})")
