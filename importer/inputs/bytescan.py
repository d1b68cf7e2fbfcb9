"""The byte pass over an input: refuse what cannot be read (pipes, UTF-16, CR-only, text not in
its encoding (UTF-8 unless the mapping declares another), damaged compression), fingerprint the
content, hash its first bytes at given sizes, and check each block again as the batches read it.

The fingerprint, sizes, lines and blocks are always the file's own bytes' (decompressed), never
a transcoding's: a state directory knows the file whatever the mapping says it is written in."""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import re
import stat
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import xxhash

from importer.errors import InputError
from importer.inputs import common
from importer.inputs.common import (
    JSON_SPACE,
    InputFile,
    Prefix,
)
from importer.inputs.locate import (
    PARQUET_MAGIC,
    CorruptInput,
    open_bytes,
)

# What a pipe, device or socket is called in the message refusing it.
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a pipe (a FIFO, or a <(...) process substitution)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def refuse_special(path: Path) -> None:
    """Refuse anything but a regular file or a directory (which is refused later, by name).

    An input is read several times (fingerprint, profile, batches): a pipe would be drained by the
    first pass and block the next one forever. stat() does not open the file, so it cannot block.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing or unreadable: said once the format is known
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")
    raise InputError(
        f"{path}: is {kind}, not a regular file; the importer reads an input more than once "
        "(first to fingerprint it, so that a run can resume), which only a file allows",
        hint="save it to a file first (e.g. `... > events.csv`) and import that file",
    )


class NotUtf8Error(InputError):
    """An input's bytes are not UTF-8 and the mapping declares no other encoding: `importer
    init` then reads it as Windows-1252, and writes that into the mapping it guesses."""


class _Scan(NamedTuple):
    """What the byte pass found: see InputFile's fields of the same names."""

    fingerprint: str
    size: int
    lines: int
    blocks: tuple[bytes, ...]
    blank: bool
    nul_bytes: bool
    ends_open: bool
    prefixes: dict[int, Prefix]
    plain: bool
    quick: str


# The quick fingerprint's algorithm, written before its digest: a reader that does not know
# an algorithm does not trust the fingerprint (the file is then read as a new night's file).
QUICK_ALGORITHM = "xxh3_128"


def quick_fingerprint(path: Path) -> str:
    """The quick fingerprint of `path`'s content (decompressed): the hash that tells a file
    sent whole before without the byte pass's checks and its slower content fingerprint."""
    digest = xxhash.xxh3_128()
    try:
        with open_bytes(path) as handle:
            while chunk := handle.read(common.CHUNK_BYTES):
                digest.update(chunk)
    except CorruptInput as exc:
        raise _corrupt(exc, 0) from None
    return f"{QUICK_ALGORITHM}:{digest.hexdigest()}"


class _Probes:
    """Hashes of the content's first bytes at given sizes, taken as the byte pass goes: the
    running hash is updated up to each size, copied, then on, so a probe costs one copy."""

    def __init__(self, sizes: Collection[int]) -> None:
        self._sizes = sorted({size for size in sizes if size > 0})
        self._next = 0
        self._last = b""  # the content's last byte so far
        # size -> (hash, the byte before it, up to 2 bytes after it)
        self._found: dict[int, tuple[str, bytes, bytes]] = {}
        self._waiting: list[int] = []  # probes that still lack the bytes after them

    def update(self, digest: Any, chunk: bytes, offset: int) -> None:
        """Hash `chunk` (content from `offset`) into `digest`, probing on the way."""
        view = memoryview(chunk)
        for size in self._waiting:
            found, before, after = self._found[size]
            self._found[size] = (found, before, after + chunk[: 2 - len(after)])
        self._waiting = [size for size in self._waiting if len(self._found[size][2]) < 2]
        start = 0
        end = offset + len(chunk)
        while self._next < len(self._sizes) and self._sizes[self._next] <= end:
            cut = self._sizes[self._next] - offset
            digest.update(view[start:cut])
            before = chunk[cut - 1 : cut] if cut else self._last
            after = chunk[cut : cut + 2]
            self._found[self._sizes[self._next]] = (digest.hexdigest(), before, after)
            if len(after) < 2:
                self._waiting.append(self._sizes[self._next])
            start = cut
            self._next += 1
        digest.update(view[start:])
        if chunk:
            self._last = chunk[-1:]

    def prefixes(self, size: int) -> dict[int, Prefix]:
        """The probes below `size` (the content's): at `size` itself it is the whole content."""
        return {
            at: Prefix(found, not _line_ends(before, after))
            for at, (found, before, after) in self._found.items()
            if at < size
        }


def _line_ends(before: bytes, after: bytes) -> bool:
    """Whether a line ends between `before` and `after` (LF or CRLF, on either side)."""
    return before == b"\n" or after[:1] == b"\n" or after[:2] == b"\r\n"


def scan_bytes(path: Path, probes: Collection[int] = (), *, encoding: str = "") -> _Scan:
    """One pass over the bytes: refuse UTF-16, CR-only, compressed files and text that is not in
    `encoding` (codecs' name of the mapping's declared one; "" = UTF-8); hash,
    count lines, and tell whether there is anything but whitespace, whether a NUL byte, and
    whether the text is plain (no quote, no lone CR: see InputFile.plain); hash the first bytes
    at each of `probes` (sizes) too.

    A gzip or zstd file is decompressed (as a stream) and its content is what is hashed: the
    same rows are the same input, compressed or not, and later passes check the decompressed
    blocks against these hashes. The whole file is decompressed here, before any row is sent,
    so a damaged one stops the run with nothing sent even when the damage is near its end."""
    digest = hashlib.blake2b(digest_size=16)
    quick = xxhash.xxh3_128()  # about 5% of the blake2b's time
    blocks: list[bytes] = []
    size = 0
    lines = 0
    pending = b""
    blank = True
    nul_bytes = False
    plain = True
    prober = _Probes(probes)
    check_text = _check_utf8 if not encoding else _declared_check(encoding)
    utf8 = _Utf8Watch() if encoding else None
    with open_bytes(path) as handle:
        try:
            first = handle.read(common.CHUNK_BYTES)
        except CorruptInput as exc:
            raise _corrupt(exc, lines) from None
        _check_start(path, first)
        if encoding and first.startswith(codecs.BOM_UTF8):
            raise InputError(
                f"{path}: the file starts with UTF-8's byte order mark: it is UTF-8, not "
                f"{encoding} as the mapping declares (repairs.encoding)",
                hint="remove the `encoding` line from the mapping's [repairs] table",
            )
        chunk = first
        while chunk:
            quick.update(chunk)
            prober.update(digest, chunk, size)
            # A copy of the running hash per block costs nothing; see CheckedReader.
            blocks.append(digest.copy().digest())
            if blank:  # only the first block of a file with content is looked at
                text = chunk.removeprefix(codecs.BOM_UTF8) if size == 0 else chunk
                blank = not text.strip(JSON_SPACE)
            nul_bytes = nul_bytes or b"\x00" in chunk  # memchr: a few ms a 100 MB
            size += len(chunk)
            buffer = pending + chunk
            # UTF-8 never puts a newline byte inside a character (nor does a declared encoding),
            # so line-aligned pieces decode on their own and an error's position maps straight
            # onto a line and column.
            cut = buffer.rfind(b"\n") + 1
            piece, pending = buffer[:cut], buffer[cut:]
            check_text(path, piece, lines)
            if utf8 is not None:
                utf8.update(piece, lines)
            plain = plain and _is_plain(piece)
            lines += piece.count(b"\n")
            try:
                chunk = handle.read(common.CHUNK_BYTES)
            except CorruptInput as exc:
                raise _corrupt(exc, lines) from None
        check_text(path, pending, lines)
        plain = plain and _is_plain(pending)
        if utf8 is not None:
            utf8.update(pending, lines)
            utf8.refuse(path, encoding)
    return _Scan(
        digest.hexdigest(),
        size,
        lines,
        tuple(blocks),
        blank,
        nul_bytes,
        ends_open=bool(pending),
        prefixes=prober.prefixes(size),
        plain=plain,
        quick=f"{QUICK_ALGORITHM}:{quick.hexdigest()}",
    )


def _corrupt(exc: CorruptInput, lines: int) -> InputError:
    """A damaged compressed input, named with the last line that decompressed whole."""
    where = f"after line {lines:,}" if lines else "before the end of line 1"
    return InputError(
        f"{exc.path}: the {exc.compression} data is damaged {where} ({exc.reason}); "
        "nothing from it was sent",
        hint=f"fetch or compress the file again (`{exc.compression} -t {exc.path}` tests it)",
    )


def _is_plain(piece: bytes) -> bool:
    """No quote and no CR but in CRLF; `piece` ends at a line's end, so no CRLF is cut apart."""
    if b'"' in piece:
        return False
    return b"\r" not in piece or piece.count(b"\r") == piece.count(b"\r\n")


# The magic bytes of compressed files, the format's name and the command that undoes it. UTF-8
# text cannot start like gzip, zstd or xz (invalid bytes) or zip (control characters); bzip2's
# "BZh" can, so its block magic (or an empty stream's end magic) must follow too. A gzip or zstd
# file is read decompressed (see sources.open_bytes): met here, it was compressed twice.
_COMPRESSED = (
    (re.compile(rb"\x1f\x8b"), "gzip", "gzip -dc"),
    (re.compile(rb"\x28\xb5\x2f\xfd"), "zstd", "zstd -dc"),
    (re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)"), "bzip2", "bzip2 -dc"),
    (re.compile(rb"\xfd7zXZ\x00"), "xz", "xz -dc"),
    (re.compile(rb"PK\x03\x04"), "zip", "unzip -p"),
)


def _check_start(path: Path, first: bytes) -> None:
    for magic, name, command in _COMPRESSED:
        if magic.match(first):
            raise InputError(
                f"{path}: the file is compressed ({name}), not text",
                hint=f"decompress it first, e.g. {command} {path} > plain-{path.name} "
                "(gzip and zstd files are read as they are)",
            )
    if first.startswith(PARQUET_MAGIC) and b"\x00" in first[:4096]:
        raise InputError(
            f"{path}: the file is Parquet, not text",
            hint="name it with the ending .parquet, which is read as Parquet",
        )
    if first.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        encoding = "UTF-32"
    elif first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _looks_utf16(first):
        encoding = "UTF-16"
    else:
        encoding = ""
    if encoding:
        raise InputError(
            f"{path}: the file is {encoding}, not UTF-8",
            hint=f"convert it first, e.g. iconv -f {encoding} -t UTF-8 {path} > utf8-{path.name}",
        )
    if b"\r" in first and b"\n" not in first:
        raise InputError(
            f"{path}: lines end with CR only (old Mac style); only LF and CRLF are read",
            hint=f"convert it first, e.g. tr '\\r' '\\n' < {path} > lf-{path.name}",
        )


class CheckedReader:
    """Reads an input front to back in the byte pass's blocks and hands out a block's bytes only
    once the running hash up to its end matches the byte pass's, and the file ends where it
    ended then: every row comes from the content its fingerprint names, even when the file is
    rewritten during a run (same length or not)."""

    def __init__(self, source: InputFile, handle: IO[bytes]) -> None:
        self._source = source
        self._handle = handle
        self._digest = hashlib.blake2b(digest_size=16)
        self._checked = 0  # blocks checked so far
        self._tail = b""  # checked bytes not handed out yet: the end of the last block
        self._start = 0  # the file offset of _tail[0]

    def block(self) -> bytes:
        """The next block, checked; b"" after the last one."""
        expected = self._source.blocks
        index = self._checked
        if index == len(expected):
            return b""
        # One byte more than the last block had shows a file that grew.
        last = index == len(expected) - 1
        chunk = self._handle.read(common.CHUNK_BYTES + 1 if last else common.CHUNK_BYTES)
        self._digest.update(chunk)
        if self._digest.copy().digest() != expected[index]:
            raise self._changed(index * common.CHUNK_BYTES)
        self._checked += 1
        return chunk

    def read(self, start: int, end: int) -> bytes:
        """The checked bytes from offset `start` to `end`; calls go forward, never back."""
        parts = [self._tail]
        reached = self._start + len(self._tail)
        while reached < end and (block := self.block()):
            parts.append(block)
            reached += len(block)
        keep = len(parts[-1]) - max(reached - end, 0)
        parts[-1], self._tail = parts[-1][:keep], parts[-1][keep:]
        skip = start - self._start  # the header, on the first call
        self._start = end
        while skip:
            head = parts.pop(0)
            if len(head) > skip:
                parts.insert(0, head[skip:])
                break
            skip -= len(head)
        # Joined once and the blocks let go: memory stays at one copy of the slice.
        return b"".join(parts)

    def finish(self) -> None:
        """Check the rest of the file, up to its end."""
        while self.block():
            pass

    def lines(self) -> Iterator[bytes]:
        """The checked lines, each with its LF (the last one may have none)."""
        pending: list[bytes] = []
        while block := self.block():
            cut = block.rfind(b"\n") + 1
            if not cut:  # a line longer than a block
                pending.append(block)
                continue
            pending.append(block[:cut])
            yield from io.BytesIO(b"".join(pending))
            pending = [block[cut:]]
        if tail := b"".join(pending):
            yield tail

    def _changed(self, offset: int) -> InputError:
        path, size = self._source.path, self._source.size
        end = min(offset + common.CHUNK_BYTES, size)
        # A compressed file's own size is not its content's: only the bytes can be compared.
        now = size if self._source.compression else os.fstat(self._handle.fileno()).st_size
        if now != size:
            detail = f"it had {size:,} bytes when it was opened and has {now:,} now"
        elif self._source.compression:
            detail = f"decompressed bytes {offset:,} to {end:,} are not what they were"
        else:
            detail = f"bytes {offset:,} to {end:,} are not what they were when it was opened"
        return InputError(
            f"{path}: the file changed while it was being read ({detail}); "
            "nothing from the changed part was sent",
            hint="restore it and run again, or run again once it is final: the new content "
            "is a new input",
        )


def _looks_utf16(first: bytes) -> bool:
    """UTF-16 without a BOM: mostly-Latin text puts a NUL in every other byte.

    A NUL anywhere is not enough, as UTF-8 may hold one (a JSONL line with a raw NUL is a bad
    row, not a UTF-16 file).
    """
    sample = first[:4096]
    return any(
        half.count(0) >= 2 and half.count(0) * 4 >= len(half) * 3
        for half in (sample[::2], sample[1::2])
    )


def _check_utf8(path: Path, piece: bytes, lines_before: int) -> None:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, line_start = _line_of(piece, exc.start, lines_before)
        if line == 1 and piece.startswith(codecs.BOM_UTF8):
            line_start += len(codecs.BOM_UTF8)  # the BOM is not a character the user sees
        column = len(piece[line_start : exc.start].decode("utf-8", "replace")) + 1
        bad = piece[exc.start : exc.end]
        raise NotUtf8Error(
            f"{path}, line {line}, column {column}: bytes {bad.hex(' ')} are not UTF-8",
            hint=_declare_hint(path, bad),
        ) from None


def _declare_hint(path: Path, bad: bytes) -> str:
    """How to read a file whose `bad` bytes are not UTF-8: the mapping line that declares its
    encoding, or the command that converts it. Spreadsheets export Windows-1252 (a superset of
    Latin-1's letters): what the bytes read there shows the user the file's encoding."""
    as_1252 = bad.decode("cp1252", "replace")
    if "\ufffd" in as_1252:  # a byte Windows-1252 leaves undefined: Latin-1, if anything
        said, declared, command = "they are not Windows-1252 either", "latin-1", "LATIN1"
        other = ""
    else:
        said = f"in Windows-1252, as spreadsheets export, the bytes read {as_1252!r}"
        declared, command, other = "cp1252", "CP1252", ' (encoding = "latin-1" for ISO-8859-1)'
    return (
        f'{said}: declare the file\'s encoding with the line encoding = "{declared}" in the '
        f"mapping's [repairs] table{other}, or convert the file to UTF-8: "
        f"iconv -f {command} -t UTF-8 {path.name} > utf8-{path.name}"
    )


def _declared_check(encoding: str) -> Callable[[Path, bytes, int], None]:
    """The check that a piece is text in `encoding`, the mapping's declared one (one byte a
    character: a column is a count of bytes)."""

    def check(path: Path, piece: bytes, lines_before: int) -> None:
        try:
            piece.decode(encoding)
        except UnicodeDecodeError as exc:
            line, line_start = _line_of(piece, exc.start, lines_before)
            bad = piece[exc.start : exc.end].hex(" ")
            raise InputError(
                f"{path}, line {line}, column {exc.start - line_start + 1}: bytes {bad} are not "
                f"{encoding}, the encoding the mapping declares (repairs.encoding)",
                hint='if the file is ISO-8859-1, declare encoding = "latin-1" instead; if it is '
                "UTF-8, remove the `encoding` line from the mapping",
            ) from None

    return check


_NON_ASCII = re.compile(rb"[\x80-\xff]")


class _Utf8Watch:
    """Whether a file declared in a one-byte encoding is UTF-8 after all: every byte valid
    UTF-8 and some not ASCII. Read as cp1252, such a file would send "MÃ¼ller" for "Müller";
    a real cp1252 text whose every accented letter happens to form a UTF-8 sequence is not
    met in practice, so the file is refused rather than garbled."""

    def __init__(self) -> None:
        self.valid = True
        self.first: tuple[int, int, str] | None = None  # line, column, the character

    def update(self, piece: bytes, lines_before: int) -> None:
        """Take the next line-aligned piece of the file."""
        if not self.valid or piece.isascii():
            return
        try:
            piece.decode("utf-8")
        except UnicodeDecodeError:
            self.valid = False
            return
        if self.first is None:
            at = _NON_ASCII.search(piece).start()  # the piece is not ASCII: there is one
            line, line_start = _line_of(piece, at, lines_before)
            character = piece[at : at + 4].decode("utf-8", "ignore")[:1]
            self.first = (line, at - line_start + 1, character)

    def refuse(self, path: Path, encoding: str) -> None:
        """Refuse the file if, read whole, it was UTF-8 with a character beyond ASCII."""
        if not self.valid or self.first is None:
            return
        line, column, character = self.first
        misread = character.encode("utf-8").decode(encoding, "replace")
        raise InputError(
            f"{path}, line {line}, column {column}: the file is UTF-8 ({character!r} there would "
            f"read as {misread!r} in {encoding}, the encoding the mapping declares "
            "(repairs.encoding))",
            hint="remove the `encoding` line from the mapping's [repairs] table",
        )


def _line_of(piece: bytes, start: int, lines_before: int) -> tuple[int, int]:
    """The line of the byte at `start` of `piece` (which starts a line `lines_before` lines into
    the file), and where in `piece` that line starts."""
    line_start = piece.rfind(b"\n", 0, start) + 1
    return lines_before + piece.count(b"\n", 0, start) + 1, line_start


def read_prefixes(source: InputFile, sizes: Collection[int]) -> dict[int, Prefix]:
    """The content's first bytes at `sizes`, read again up to the largest: for an input opened
    without probes (see open_input)."""
    if source.format == "parquet" or not sizes:
        return {}
    digest = hashlib.blake2b(digest_size=16)
    prober = _Probes(sizes)
    offset, end = 0, max(sizes) + 2  # two bytes past a probe tell whether its line goes on
    try:
        with open_bytes(source.path) as handle:
            while offset < end and (chunk := handle.read(common.CHUNK_BYTES)):
                prober.update(digest, chunk, offset)
                offset += len(chunk)
    except OSError as exc:
        raise InputError(f"{source.path}: cannot be read ({exc.strerror or exc})") from exc
    return prober.prefixes(source.size)
