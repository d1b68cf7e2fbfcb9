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
from dataclasses import dataclass, fields, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from importer.errors import InputError
from importer.inputs.common import FORMATS, InputFile
from importer.inputs.locate import expand_inputs, text_ending
from importer.inputs.reader import Whole, open_input

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


def open_sources(
    paths: Iterable[Path],
    *,
    probes: Collection[int] | None,
    whole: Whole | None = None,
    pinned: Collection[str] = (),
    separator: str = "",
    encoding: str = "",
) -> list[InputFile]:
    """Open every input `paths` name, in order: local directories and globs expanded as
    `expand_inputs` does, cloud URLs and patterns listed, downloaded and opened from the copy.
    `probes`, `whole`, `pinned`, `separator` and `encoding` as for `open_input`."""
    sources: list[InputFile] = []
    downloads: _Downloads | None = None
    for path in paths:
        url = cloud_url(path)
        if url is None:
            sources += [
                open_input(
                    item,
                    probes=probes,
                    whole=whole,
                    pinned=pinned,
                    separator=separator,
                    encoding=encoding,
                )
                for item in expand_inputs((path,))
            ]
            continue
        store = _store(url)
        for found in expand_url(store, url):
            known = _known_whole(store, found, whole)
            if known is not None:
                sources.append(known)
                continue
            downloads = downloads or _Downloads()
            copy = downloads.place(found)
            checksum = _download(store, found, copy)
            source = _open_copy(found, copy, downloads, probes, whole, pinned, separator, encoding)
            # The store's checksum of the bytes downloaded tells the object again next time
            # without downloading it; else the quick fingerprint of the copy does.
            if checksum:
                source = replace(source, quick=checksum, disk_size=copy.stat().st_size)
            sources.append(source)
    return sources


def _known_whole(store: _Store, url: str, whole: Whole | None) -> CloudInput | None:
    """The object at `url` as an input not read again, when the store's checksum and size are
    those of a content the checkpoint knows every row of as handled: it is not downloaded."""
    if not whole:
        return None
    bucket, key = _split(url)
    try:
        found = store.checksum(bucket, key)
    except store.errors as exc:
        raise store.refusal(url, exc) from None
    if found is None or (found[1], found[0]) not in whole:
        return None
    checksum, disk_size = found
    fingerprint, size, head = whole[(disk_size, checksum)]
    name = PurePosixPath(key).name or "object"
    return CloudInput(
        path=Path(name),
        format=FORMATS.get(text_ending(Path(name)), "csv"),
        fingerprint=fingerprint,
        size=size,
        lines=0,
        blocks=(head,) if head else (),
        whole_before=True,
        quick=checksum,
        disk_size=disk_size,
        url=url,
    )


class _Store(Protocol):
    """What the expansion and the download need of an object store; one per scheme."""

    scheme: str
    errors: tuple[type[Exception], ...]  # what its calls raise when the store refuses

    def keys(self, bucket: str, prefix: str) -> Iterable[str]:
        """Every key in `bucket` that starts with `prefix`."""
        ...

    def copy(self, bucket: str, key: str, out: BinaryIO) -> str:
        """Write the object's bytes to `out`, streamed a piece at a time; the store's checksum
        of those very bytes (see `checksum`), or ""."""
        ...

    def checksum(self, bucket: str, key: str) -> tuple[str, int] | None:
        """The store's own checksum of the object's bytes, named by its kind, and its size;
        None when the store keeps none that changes with every change of the bytes."""
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


def _etag(value: object) -> str:
    """An S3 ETag as a checksum name, or "" when there is none."""
    text = str(value or "").strip('"')
    return f"s3-etag:{text}" if text else ""


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


def _download(store: _Store, url: str, copy: Path) -> str:
    """Stream the object `url` into `copy`; the store's checksum of it, or ""."""
    bucket, key = _split(url)
    try:
        with copy.open("wb") as out:
            return store.copy(bucket, key, out)
    # First: a failed connection can be an OSError too (requests' errors are), yet is the store's.
    except store.errors as exc:
        raise store.refusal(url, exc) from None
    except OSError as exc:
        raise InputError(f"{url}: cannot be downloaded to {copy} ({exc.strerror or exc})") from exc


def _open_copy(
    url: str,
    copy: Path,
    downloads: _Downloads,
    probes: Collection[int] | None,
    whole: Whole | None,
    pinned: Collection[str] = (),
    separator: str = "",
    encoding: str = "",
) -> CloudInput:
    """Open the downloaded copy of `url`; its checks' messages name the URL, not the copy."""
    try:
        source = open_input(
            copy,
            probes=probes,
            whole=whole,
            pinned=pinned,
            separator=separator,
            encoding=encoding,
        )
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

    def copy(self, bucket: str, key: str, out: BinaryIO) -> str:
        """Write the object's body to `out`, CHUNK_BYTES at a time; its ETag."""
        answer = self.client.get_object(Bucket=bucket, Key=key)
        for chunk in answer["Body"].iter_chunks(CHUNK_BYTES):
            out.write(chunk)
        return _etag(answer.get("ETag"))

    def checksum(self, bucket: str, key: str) -> tuple[str, int] | None:
        """The object's ETag and size. An ETag changes whenever the object is written with
        other bytes (an MD5 of them, of their parts for a multipart upload, or a value of its
        own under SSE-KMS: then an unchanged copy is merely downloaded again)."""
        answer = self.client.head_object(Bucket=bucket, Key=key)
        etag = _etag(answer.get("ETag"))
        return (etag, int(answer["ContentLength"])) if etag else None

    def refusal(self, url: str, exc: Exception) -> InputError:
        """S3's error code in words, or the library's own message."""
        from botocore.exceptions import ClientError, NoCredentialsError, ParamValidationError

        if isinstance(exc, ParamValidationError):
            # boto checks names before it asks: its message is a regular expression, not advice.
            bucket, _ = _split(url)
            if "bucket name" in str(exc).lower():
                return InputError(
                    f"{url}: {bucket!r} is not a valid S3 bucket name",
                    hint="a bucket's name is 3 to 63 lowercase letters, digits, dots and hyphens",
                )
            return InputError(f"{url}: S3 does not accept this URL's bucket or key")
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

    def copy(self, bucket: str, key: str, out: BinaryIO) -> str:
        """Write the object to `out`; the library streams it and checks its checksum. Its
        MD5, of the generation downloaded (a newer one written meanwhile is refused)."""
        blob = self.client.bucket(bucket).get_blob(key)
        if blob is None:
            blob = self.client.bucket(bucket).blob(key)
            blob.download_to_file(out)  # raises NotFound, said as "no such object"
            return ""
        blob.download_to_file(out, if_generation_match=blob.generation)
        return f"gcs-md5:{blob.md5_hash}" if blob.md5_hash else ""

    def checksum(self, bucket: str, key: str) -> tuple[str, int] | None:
        """The object's MD5 and size; None for a composite object, which has only a CRC32C
        (32 bits are too few to take a changed object for an unchanged one)."""
        blob = self.client.bucket(bucket).get_blob(key)
        if blob is None or not blob.md5_hash or blob.size is None:
            return None
        return f"gcs-md5:{blob.md5_hash}", int(blob.size)

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
