"""Where inputs live: directories and globs named as inputs become lists of files, and a gzip or
zstd file is read as the stream of its decompressed bytes, never unpacked to disk.

inputs/reader.py reads a text input in several passes; `open_bytes` gives each pass a stream of the
decompressed content that reads, tells and seeks as a file does (a seek forward reads on, a seek
back starts the decompression again), so the passes need not know whether a file is compressed.
"""

from __future__ import annotations

import glob
import gzip
import io
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import zstandard

from importer.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PARQUET_MAGIC = b"PAR1"
# Endings that say a text input is compressed; the magic bytes decide whether it is.
COMPRESSED_ENDINGS = (".gz", ".zst")
INPUT_ENDINGS = (".csv", ".tsv", ".jsonl", ".ndjson")
# What a directory named as an input contributes: files with one of these endings.
KNOWN_ENDINGS = (
    *INPUT_ENDINGS,
    ".parquet",
    *(f"{ending}{packed}" for ending in INPUT_ENDINGS for packed in COMPRESSED_ENDINGS),
)
# Compressed bytes handed to zstd at a time. zstandard's decompressobj has no output limit, so
# the input is fed in small pieces to keep each piece's output small (typically 10-20x this).
ZSTD_FEED_BYTES = 1 << 14
SKIP_BYTES = 1 << 20  # a seek forward reads and drops this much at a time


class CorruptInput(InputError):
    """A compressed input whose data cannot be decompressed: truncated, or damaged."""

    def __init__(self, path: Path, compression: str, reason: str) -> None:
        super().__init__(f"{path}: the {compression} data is damaged ({reason})")
        self.path = path
        self.compression = compression
        self.reason = reason


def text_ending(path: Path) -> str:
    """The ending that names the input's format: `.csv` for `x.csv.gz` as for `x.csv`."""
    suffix = path.suffix.lower()
    if suffix in COMPRESSED_ENDINGS:
        return Path(path.stem).suffix.lower()
    return suffix


def compression_of(head: bytes) -> str:
    """The compression the first bytes of a file show: "gzip", "zstd", or "" for none."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return ""


def open_bytes(path: Path) -> IO[bytes]:
    """`path` opened for reading its content: decompressed when its magic bytes say gzip or zstd
    (whatever its name), else the file itself."""
    handle = path.open("rb")
    compression = compression_of(handle.peek(len(ZSTD_MAGIC))[: len(ZSTD_MAGIC)])
    if not compression:
        return handle
    handle.close()
    return io.BufferedReader(_Decompressed(path, compression), buffer_size=1 << 16)


class _Decompressed(io.RawIOBase):
    """The decompressed bytes of a gzip or zstd file as a raw stream that can tell and seek."""

    def __init__(self, path: Path, compression: str) -> None:
        super().__init__()
        self._path = path
        self._compression = compression
        self._file = path.open("rb")
        self._gzip = gzip.GzipFile(fileobj=self._file, mode="rb")
        self._zstd = zstandard.ZstdDecompressor().decompressobj()
        self._in_frame = False  # zstd: bytes of a frame fed and its end not yet seen
        self._pending = bytearray()  # zstd: decompressed, not yet read
        self._position = 0

    def _restart(self) -> None:
        """Back to the start of the content: the file is decompressed again from its start."""
        self._file.close()
        self._file = self._path.open("rb")
        self._gzip = gzip.GzipFile(fileobj=self._file, mode="rb")
        self._zstd = zstandard.ZstdDecompressor().decompressobj()
        self._in_frame = False
        self._pending.clear()
        self._position = 0

    def readable(self) -> bool:
        """A stream to read."""
        return True

    def seekable(self) -> bool:
        """Seeking works (back by decompressing again from the start)."""
        return True

    def tell(self) -> int:
        """The offset in the decompressed content."""
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Go to `offset` of the decompressed content (SEEK_SET or SEEK_CUR)."""
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a compressed stream cannot seek from its end")
        if offset < self._position:
            self._restart()
        while self._position < offset:
            if not self._read(min(SKIP_BYTES, offset - self._position)):
                break
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Fill `buffer` with the next decompressed bytes; 0 at the end."""
        data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Close the file."""
        if hasattr(self, "_file"):  # not when opening the file failed
            self._gzip.close()
            self._file.close()
        super().close()

    def _read(self, size: int) -> bytes:
        try:
            data = self._gzip.read(size) if self._compression == "gzip" else self._read_zstd(size)
        except (gzip.BadGzipFile, EOFError, zlib.error, zstandard.ZstdError) as exc:
            raise CorruptInput(self._path, self._compression, _reason(exc)) from None
        self._position += len(data)
        return data

    def _read_zstd(self, size: int) -> bytes:
        while len(self._pending) < size:
            feed = self._file.read(ZSTD_FEED_BYTES)
            if not feed:
                if self._in_frame:  # the stream reader would end here without a word
                    raise EOFError("the file ends inside a zstd frame: it is truncated")
                break
            self._feed(feed)
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    def _feed(self, data: bytes) -> None:
        """Decompress `data`; a file may hold several frames one after the other."""
        while data:
            self._in_frame = True
            self._pending += self._zstd.decompress(data)
            if not self._zstd.eof:
                return
            self._in_frame = False
            data = self._zstd.unused_data
            self._zstd = zstandard.ZstdDecompressor().decompressobj()


def _reason(exc: Exception) -> str:
    """What went wrong, in words a user can act on."""
    if isinstance(exc, EOFError):
        return "the file ends before the compressed data does: it is truncated"
    text = str(exc)
    if "CRC check failed" in text:
        return "CRC check failed: the content is not what was compressed"
    return text.removeprefix("zstd decompressor error: ").removeprefix("zstd decompress error: ")


def expand_inputs(paths: Iterable[Path]) -> list[Path]:
    """The input files `paths` name: a directory stands for its files with a known ending (sorted
    by name, not recursive, hidden files left out), a glob for the files it matches (sorted); a
    file is itself. A directory or glob that names no file is an InputError.

    Sorted so that a nightly run reads a folder in the same order each time it is given it.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                item
                for item in path.iterdir()
                if item.name.lower().endswith(KNOWN_ENDINGS)
                and not item.name.startswith(".")
                and item.is_file()
            )
            if not found:
                raise InputError(
                    f"{path}: the directory holds no input file (it is not searched "
                    f"recursively; endings read: {', '.join(KNOWN_ENDINGS)})"
                )
            files += found
        elif glob.has_magic(str(path)) and not path.exists():
            found = sorted(Path(name) for name in glob.glob(str(path)) if Path(name).is_file())
            if not found:
                raise InputError(f"{path}: the pattern matches no file")
            files += found
        else:
            files.append(path)
    return files
