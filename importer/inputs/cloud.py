"""Inputs in object storage: `s3://bucket/key`, `s3://bucket/prefix/*.parquet`, and the same
with `gs://` for Google Cloud Storage.

A pattern is expanded by listing the bucket (sorted by key, so a nightly run reads a prefix in
the same order each time). Each object is streamed down in chunks into a temporary folder and
read there like any local file, so every format, check and fingerprint works unchanged and
memory stays bounded; all of a run's objects are downloaded before the first row is read (every
input is checked before anything is sent), so the disk holds one copy of each. The folder goes
when the run's inputs are dropped, or at the latest when the process exits.

Messages, reports and the checkpoint name the object by its URL, never by the temporary copy.
Credentials and endpoints come from each library's usual environment: boto3's (AWS_ACCESS_KEY_ID,
AWS_PROFILE, AWS_ENDPOINT_URL, ...) for S3 and S3-compatible stores, google-cloud-storage's
(GOOGLE_APPLICATION_CREDENTIALS, STORAGE_EMULATOR_HOST, ...) for GCS. Both stores sit behind
_Store (list keys, copy an object), so the expansion and the download are written once. Each
library is imported only when one of its URLs is named: they are the optional `cloud` extra.
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
from typing import BinaryIO, Protocol

from importer.errors import InputError
from importer.inputs.common import InputFile
from importer.inputs.locate import expand_inputs
from importer.inputs.reader import open_input

# A URL given on the command line arrives as a Path, which folds `s3://` into `s3:/`.
URL = re.compile(r"^(?P<scheme>s3|gs):/+(?P<rest>.*)$", re.S)
GLOB_CHARS = re.compile(r"[*?\[]")
CHUNK_BYTES = 1 << 20  # what one read of an object's body holds in memory
# The distribution is engage-importer ("importer" on the package index is another project);
# until it is published, the extra installs from the checkout.
INSTALL_HINT = "install the cloud extra: pip install '.[cloud]' in the checkout"


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
        store = _store(url)
        for found in expand_url(store, url):
            downloads = downloads or _Downloads()
            copy = downloads.place(found)
            _download(store, found, copy)
            sources.append(_open_copy(found, copy, downloads, probes))
    return sources


class _Store(Protocol):
    """What the expansion and the download need of an object store; one per scheme."""

    scheme: str
    errors: tuple[type[Exception], ...]  # what its calls raise when the store refuses

    def keys(self, bucket: str, prefix: str) -> Iterable[str]:
        """Every key in `bucket` that starts with `prefix`."""
        ...

    def copy(self, bucket: str, key: str, out: BinaryIO) -> None:
        """Write the object's bytes to `out`, streamed a piece at a time."""
        ...

    def refusal(self, url: str, exc: Exception) -> InputError:
        """One clear error naming `url` for one of `errors`."""
        ...


def expand_url(store: _Store, url: str) -> list[str]:
    """The object URLs `url` names: itself, or for a pattern (`*`, `?`, `[...]` in the key) the
    objects whose keys it matches, sorted by key. A wildcard stops at `/` as in a local glob."""
    bucket, key = _split(url)
    magic = GLOB_CHARS.search(key)
    if magic is None:
        return [url]
    parts = key.split("/")
    try:
        keys = list(store.keys(bucket, key[: magic.start()]))
    except store.errors as exc:
        raise store.refusal(url, exc) from None
    found = sorted(name for name in keys if _matches(name.split("/"), parts))
    if not found:
        raise InputError(f"{url}: the pattern matches no object in bucket {bucket}")
    return [f"{store.scheme}://{bucket}/{name}" for name in found]


def _matches(key: list[str], pattern: list[str]) -> bool:
    """Whether a key matches the pattern part by part (object keys are case-sensitive)."""
    return len(key) == len(pattern) and all(
        fnmatch.fnmatchcase(part, wanted) for part, wanted in zip(key, pattern, strict=True)
    )


def _split(url: str) -> tuple[str, str]:
    """The bucket and the key of an `s3://` or `gs://` URL."""
    scheme, _, rest = url.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise InputError(
            f"{url}: name an object or a pattern: {scheme}://bucket/key or {scheme}://bucket/*.csv"
        )
    return bucket, key


def _store(url: str) -> _Store:
    """The store `url` lives in, configured from the environment as its library does by itself."""
    return _GoogleStorage(url) if url.startswith("gs://") else _S3(url)


def _download(store: _Store, url: str, copy: Path) -> None:
    """Stream the object `url` into `copy`."""
    bucket, key = _split(url)
    try:
        with copy.open("wb") as out:
            store.copy(bucket, key, out)
    # First: a failed connection can be an OSError too (requests' errors are), yet is the store's.
    except store.errors as exc:
        raise store.refusal(url, exc) from None
    except OSError as exc:
        raise InputError(f"{url}: cannot be downloaded to {copy} ({exc.strerror or exc})") from exc


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


ACCESS_DENIED = "access denied (check the credentials and the bucket's policy)"

# What S3's error codes mean for the user, in words they can act on.
REFUSALS = {
    "NoSuchBucket": "no such bucket",
    "NoSuchKey": "no such object",
    "404": "no such object",
    "AccessDenied": ACCESS_DENIED,
    "403": ACCESS_DENIED,
    "InvalidAccessKeyId": "the access key is not known to the store",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
}


class _S3:
    """Amazon S3 or an S3-compatible store, through boto3: credentials, region and endpoint
    (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3) come from boto3's usual environment."""

    scheme = "s3"

    def __init__(self, url: str) -> None:
        try:
            import boto3  # the optional `cloud` extra: only for cloud inputs
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError:
            raise InputError(f"{url}: s3:// inputs need boto3", hint=INSTALL_HINT) from None
        self.errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        try:
            self.client = boto3.session.Session().client("s3")  # the environment as it is now
        except self.errors as exc:
            raise self.refusal(url, exc) from None

    def keys(self, bucket: str, prefix: str) -> Iterable[str]:
        """Every key under `prefix`, a page of the listing at a time."""
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            yield from (item["Key"] for item in page.get("Contents", ()))

    def copy(self, bucket: str, key: str, out: BinaryIO) -> None:
        """Write the object's body to `out`, CHUNK_BYTES at a time."""
        body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(CHUNK_BYTES):
            out.write(chunk)

    def refusal(self, url: str, exc: Exception) -> InputError:
        """S3's error code in words, or the library's own message."""
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


class _GoogleStorage:
    """Google Cloud Storage, through google-cloud-storage: credentials from Application Default
    Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's login, the metadata server). With
    STORAGE_EMULATOR_HOST set the library talks to that emulator, anonymously, by itself."""

    scheme = "gs"

    def __init__(self, url: str) -> None:
        try:
            import requests
            from google.api_core.exceptions import GoogleAPIError
            from google.auth.exceptions import GoogleAuthError
            from google.cloud import storage  # the optional `cloud` extra
        except ImportError:
            raise InputError(
                f"{url}: gs:// inputs need google-cloud-storage", hint=INSTALL_HINT
            ) from None
        self.errors: tuple[type[Exception], ...] = (
            GoogleAPIError,
            GoogleAuthError,
            requests.RequestException,
        )
        try:
            self.client = storage.Client()
        except self.errors as exc:
            raise self.refusal(url, exc) from None

    def keys(self, bucket: str, prefix: str) -> Iterable[str]:
        """Every key under `prefix`; the iterator fetches the listing a page at a time."""
        return (blob.name for blob in self.client.list_blobs(bucket, prefix=prefix))

    def copy(self, bucket: str, key: str, out: BinaryIO) -> None:
        """Write the object to `out`; the library streams it and checks its checksum."""
        self.client.bucket(bucket).blob(key).download_to_file(out)

    def refusal(self, url: str, exc: Exception) -> InputError:
        """The store's refusal in words, or the library's own message."""
        from google.api_core.exceptions import Forbidden, NotFound, Unauthorized
        from google.auth.exceptions import DefaultCredentialsError

        if isinstance(exc, NotFound):
            bucket, _ = _split(url)
            return InputError(f"{url}: {self._missing(bucket)}")
        if isinstance(exc, Forbidden):
            return InputError(f"{url}: {ACCESS_DENIED}")
        if isinstance(exc, Unauthorized):
            return InputError(f"{url}: the store refused the credentials")
        if isinstance(exc, DefaultCredentialsError):
            return InputError(
                f"{url}: no credentials for the store ({exc})",
                hint="set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, "
                "or run `gcloud auth application-default login`",
            )
        return InputError(f"{url}: the store cannot be read ({exc})")

    def _missing(self, bucket: str) -> str:
        """What a 404 means: GCS answers the same for a missing bucket and a missing object."""
        try:
            return "no such object" if self.client.bucket(bucket).exists() else "no such bucket"
        except self.errors:
            return "no such bucket or object"
