"""Read CSV, TSV and JSONL inputs into bounded batches of rows that keep every value exactly.

Every batch is a DataFrame with a `LINE` column (the row's line: JSONL's line number, or the CSV
record's row as a spreadsheet numbers it, header = 1) and one String column per input column that
holds the cell as JSON text: `"007"` for text, `7` for a number, `{"a":1}` for an object, null
when the cell is empty or the key absent. Text stays text unless every value of a CSV column
round-trips exactly as a number or boolean, so `007`, zip codes and 9007199254740993 survive.

Polars' own defaults lose data and hide bad input (type widening, keys dropped after row 100,
silent padding of short rows, one bad line failing a whole NDJSON read), so a file is read in
passes: a byte pass (encoding, line endings, fingerprint), for CSV a record pass that finds
records with the wrong number of fields, and a streaming Polars pass that decides column types;
then the batches. A CSV without quotes or lone CRs (most exports) has its record and type passes
done as one pass of Polars string expressions over its lines, since there a record is a line;
others go through Python's csv module. Rows that cannot be read become rejects; files that
cannot be read raise InputError with the file, line and column. Should the two CSV parsers fail
or disagree (a bare quote or a lone CR in an unquoted field), a last pass names the first record
that is not RFC 4180. The batches are read through a check of each block against the byte pass's
hash, so a file rewritten during a run stops it instead of sending new rows under the old
content's fingerprint; CSV batches are read one ahead, in a thread.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
import stat
import threading
from collections import Counter
from collections.abc import Collection, Generator, Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from queue import Queue
from typing import IO, Any, NamedTuple, TypeVar

import polars as pl

from importer.columns import COLUMN, ERROR, LINE, RAW, REJECT_META, RULE
from importer.errors import InputError
from importer.inputs.locate import (
    COMPRESSED_ENDINGS,
    PARQUET_MAGIC,
    CorruptInput,
    compression_of,
    open_bytes,
    text_ending,
)
from importer.jsontext import json_string

# The importer's own columns sit next to the input's in read.py and validate.py, so an input
# column may not start like one of them (Mongo's "__v" is fine).
INTERNAL_PREFIXES = (
    LINE,
    RULE,
    ERROR,
    COLUMN,
    "__extra_fields",
    "__naive",
    "__message",
    "__text:",
    "__kind:",
    "__time_message:",
    "__t_",
)

_Item = TypeVar("_Item")
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
SEPARATORS = {"csv": ",", "tsv": "\t"}
CHUNK_BYTES = 1 << 20
# The record pass notes the byte offset of every CHUNK_RECORDS-th record, so Polars parses the
# file a known slice at a time: memory stays bounded and each slice's record count is checked.
CHUNK_RECORDS = 10_000
DEFAULT_BATCH_ROWS = 100_000
SAMPLE_LINES = 10_000  # JSONL lines whose keys the mapping is checked against before reading
EXTRA = "__extra_fields"
KINDS = ("integer", "number", "boolean")
# JSON's whitespace; bytes.strip() would also drop VT and FF, which JSON does not allow.
JSON_SPACE = b" \t\r\n"
JSON_KINDS: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
}

# Python's csv refuses fields over 128 KiB by default and calls it a quoting error; a long
# description or an embedded JSON document is still a field. Polars has no such limit.
csv.field_size_limit(1 << 30)

_INT_RE = r"^-?(?:0|[1-9][0-9]*)$"
_NUMBER_RE = r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$"
# \uD800-\uDFFF: a high or a low surrogate, either of which may stand alone.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class Prefix(NamedTuple):
    """The first bytes of an input's content, up to a size the byte pass was asked about: their
    hash (equal to a shorter input's fingerprint when the input is that one grown) and whether
    the line they end in goes on after them (a last line written without its newline, then
    continued)."""

    fingerprint: str
    continues_line: bool


@dataclass(frozen=True, slots=True)
class InputFile:
    """An input that passed the byte checks: where it is, how to parse it, what it contains.

    `fingerprint` is a hash of the content, so a renamed file keeps its identity and a changed
    one does not. `lines` counts newline-terminated lines (a progress total, not a row count).
    `columns` are the CSV header's names, or the keys seen on the first SAMPLE_LINES of JSONL.
    """

    path: Path
    format: str
    fingerprint: str
    size: int
    lines: int
    columns: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    column_kinds: dict[str, str] = field(default_factory=dict)
    records: int = 0
    bad_records: dict[int, int] = field(default_factory=dict)
    blank_records: frozenset[int] = frozenset()
    chunk_offsets: tuple[int, ...] = ()
    # The fingerprint's running hash after each CHUNK_BYTES block, to check the batches against.
    blocks: tuple[bytes, ...] = ()
    # Nothing but whitespace (or nothing at all): no header, no rows, like an empty file.
    blank: bool = False
    # A NUL byte somewhere: only then are CSV batches searched for NUL characters.
    nul_bytes: bool = False
    # No quote character and no lone CR: each CSV record is a line, its fields the line split at
    # the separator, so the profile needs no CSV parser (see _profile_plain).
    plain: bool = False
    # "gzip" or "zstd" (by the magic bytes): the passes read the decompressed stream, and the
    # fingerprint, size, lines and blocks are the decompressed content's.
    compression: str = ""
    # Parquet: the file's size and mtime when opened, checked before each batch (Polars reads
    # the file itself, so its blocks cannot go through _CheckedReader).
    stamp: tuple[int, int] = (0, 0)
    # The content does not end in a newline: its last line may be cut short (a log being written).
    ends_open: bool = False
    # By size, the content's first bytes at each size `open_input` was asked to probe and the
    # content is longer than (None: not asked; Parquet is never probed: it does not grow by
    # appending).
    prefixes: dict[int, Prefix] | None = None

    @property
    def name(self) -> str:
        """The path as the user gave it, for messages."""
        return str(self.path)


@dataclass(frozen=True, slots=True)
class Batch:
    """Up to N rows of one input: readable rows in `frame`, unreadable ones in `rejects`.

    `rejects` has LINE, RULE, COLUMN, ERROR and the row's own columns as JSON text (for a line
    that is not JSON, its text in `_raw`). `blank_lines` were skipped and are not rows.
    """

    input: InputFile
    frame: pl.DataFrame
    rejects: pl.DataFrame
    blank_lines: int = 0


def open_input(path: Path, *, probes: Collection[int] | None = None) -> InputFile:
    """Check `path` can be read (format, encoding, line endings, CSV structure) and profile it.

    `probes` are sizes (of inputs sent before) at which the byte pass also hashes the content's
    first bytes, so that a grown input is known without reading it again (`prefixes`)."""
    _refuse_special(path)
    input_format = FORMATS.get(text_ending(path))
    if input_format == "parquet" and path.suffix.lower() in COMPRESSED_ENDINGS:
        input_format = None  # Parquet compresses its own pages
    if input_format is None:
        known = ", ".join(sorted(FORMATS))
        packed = "/".join(COMPRESSED_ENDINGS)
        raise InputError(
            f"{path}: cannot tell the format from the name (known endings: {known}; "
            f"text formats also compressed, as {packed})"
        )
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    if input_format == "parquet":
        parquet = _open_parquet(path)
        return parquet if probes is None else replace(parquet, prefixes={})
    try:
        with path.open("rb") as handle:
            compression = compression_of(handle.read(4))
        scan = _scan_bytes(path, probes or ())
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    facts = InputFile(
        path=path,
        format=input_format,
        fingerprint=scan.fingerprint,
        size=scan.size,
        lines=scan.lines,
        blocks=scan.blocks,
        blank=scan.blank,
        nul_bytes=scan.nul_bytes,
        plain=scan.plain,
        compression=compression,
        ends_open=scan.ends_open,
        prefixes=None if probes is None else scan.prefixes,
    )
    if scan.blank:
        return facts
    if input_format == "jsonl":
        return replace(facts, columns=jsonl_keys(path, limit=SAMPLE_LINES))
    return _profile_csv(facts)


def iter_batches(source: InputFile, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Batch]:
    """The rows of `source` in batches of at most `batch_rows`, in file order."""
    if source.blank:
        return iter(())
    if source.format == "jsonl":
        return _iter_jsonl(source, batch_rows)
    if source.format == "parquet":
        return _iter_parquet(source, batch_rows)
    if not source.columns or source.records == 0:
        return iter(())
    return read_ahead(_iter_csv(source, batch_rows), name="importer-read")


_END = object()


def read_ahead(items: Generator[_Item, None, None], *, name: str) -> Iterator[_Item]:
    """`items`, each next one made in a thread (named `name`) while the caller works on this one.

    Reading, hashing, parsing and validating run in hashlib and Polars, which release the GIL,
    so a stage overlaps the next on another core. One item ahead at most: memory stays bounded,
    and errors are raised here, in order, as without the thread. The thread alone runs `items`
    and closes it, so an early stop (Ctrl-C included) waits for the item in the making at most.
    """
    wanted: Queue[bool] = Queue()  # True: make the next item; False: stop
    made: Queue[tuple[object, BaseException | None]] = Queue()

    def work() -> None:
        try:
            while wanted.get():
                try:
                    made.put((next(items, _END), None))
                except BaseException as exc:  # raised in the caller's thread, in order
                    made.put((_END, exc))
        finally:
            items.close()  # its file, when the caller stops early

    # A daemon: should a Ctrl-C land between start() and the try, nothing waits for it.
    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        wanted.put(True)
        while True:
            item, error = made.get()
            if error is not None:
                raise error
            if item is _END:
                return
            wanted.put(True)
            yield item  # type: ignore[misc]  # not _END
    finally:
        wanted.put(False)
        thread.join()


# What a pipe, device or socket is called in the message refusing it.
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a pipe (a FIFO, or a <(...) process substitution)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _refuse_special(path: Path) -> None:
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


def _scan_bytes(path: Path, probes: Collection[int] = ()) -> _Scan:
    """One pass over the bytes: refuse UTF-16, CR-only, compressed and non-UTF-8 files; hash,
    count lines, and tell whether there is anything but whitespace, whether a NUL byte, and
    whether the text is plain (no quote, no lone CR: see InputFile.plain); hash the first bytes
    at each of `probes` (sizes) too.

    A gzip or zstd file is decompressed (as a stream) and its content is what is hashed: the
    same rows are the same input, compressed or not, and later passes check the decompressed
    blocks against these hashes. The whole file is decompressed here, before any row is sent,
    so a damaged one stops the run with nothing sent even when the damage is near its end."""
    digest = hashlib.blake2b(digest_size=16)
    blocks: list[bytes] = []
    size = 0
    lines = 0
    pending = b""
    blank = True
    nul_bytes = False
    plain = True
    prober = _Probes(probes)
    with open_bytes(path) as handle:
        try:
            first = handle.read(CHUNK_BYTES)
        except CorruptInput as exc:
            raise _corrupt(exc, lines) from None
        _check_start(path, first)
        chunk = first
        while chunk:
            prober.update(digest, chunk, size)
            # A copy of the running hash per block costs nothing; see _CheckedReader.
            blocks.append(digest.copy().digest())
            if blank:  # only the first block of a file with content is looked at
                text = chunk.removeprefix(codecs.BOM_UTF8) if size == 0 else chunk
                blank = not text.strip(JSON_SPACE)
            nul_bytes = nul_bytes or b"\x00" in chunk  # memchr: a few ms a 100 MB
            size += len(chunk)
            buffer = pending + chunk
            # UTF-8 never puts a newline byte inside a character, so line-aligned pieces decode
            # on their own and an error's position maps straight onto a line and column.
            cut = buffer.rfind(b"\n") + 1
            piece, pending = buffer[:cut], buffer[cut:]
            _check_utf8(path, piece, lines)
            plain = plain and _is_plain(piece)
            lines += piece.count(b"\n")
            try:
                chunk = handle.read(CHUNK_BYTES)
            except CorruptInput as exc:
                raise _corrupt(exc, lines) from None
        _check_utf8(path, pending, lines)
        plain = plain and _is_plain(pending)
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


class _CheckedReader:
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
        chunk = self._handle.read(CHUNK_BYTES + 1 if last else CHUNK_BYTES)
        self._digest.update(chunk)
        if self._digest.copy().digest() != expected[index]:
            raise self._changed(index * CHUNK_BYTES)
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
        end = min(offset + CHUNK_BYTES, size)
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
        line_start = piece.rfind(b"\n", 0, exc.start) + 1
        line = lines_before + piece.count(b"\n", 0, exc.start) + 1
        if line == 1 and piece.startswith(codecs.BOM_UTF8):
            line_start += len(codecs.BOM_UTF8)  # the BOM is not a character the user sees
        column = len(piece[line_start : exc.start].decode("utf-8", "replace")) + 1
        bad = piece[exc.start : exc.end].hex(" ")
        raise InputError(
            f"{path}, line {line}, column {column}: bytes {bad} are not UTF-8",
            hint="re-export the file as UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)",
        ) from None


# ---------------------------------------------------------------------------------------- CSV


def _profile_csv(facts: InputFile) -> InputFile:
    """Find the header, the records with a wrong field count, and each column's lossless type."""
    separator = SEPARATORS[facts.format]
    found = _profile_plain(facts.path, separator) if facts.plain else None
    if found is None:
        header, records, bad, blank, offsets = _check_records(facts.path, separator)
        if not header:
            return facts
        stats: dict[str, bool] = {}
        for chunk in _iter_chunks(facts.path, header, separator, offsets, records, step=10):
            checks = _kind_checks([pl.col(column) for column in header], stats)
            if checks:
                stats = _and_stats(stats, chunk.select(checks))
    else:
        header, records, bad, blank, offsets, stats = found
    kinds = {}
    for index, column in enumerate(header):
        kinds[column] = next(
            (kind for kind in KINDS if stats.get(f"{index}\x00{kind}", True)), "string"
        )
    return replace(
        facts,
        columns=tuple(_without_meta(header)),
        header=tuple(header),
        column_kinds=kinds,
        records=records,
        bad_records=bad,
        blank_records=frozenset(blank),
        chunk_offsets=offsets,
    )


def _kind_checks(
    values: list[pl.Expr], stats: dict[str, bool], *, split: bool = False
) -> list[pl.Expr]:
    """Per value column (by position), whether every cell could be sent as an integer, a number
    or a boolean without changing its text: aggregates named `<index>\x00<kind>`, for the kinds
    `stats` (the slices before) have not ruled out already; most columns are text by the first
    slice and cost nothing after it. `split`: the values are a line split at the separator,
    where an empty field is "" (Polars' CSV reader makes it null, but a quoted "" stays "")."""
    checks: list[pl.Expr] = []
    for index, value in enumerate(values):
        # A failed cast is null too (an integer beyond Int64), so only an empty cell may pass
        # as null: the others must round-trip.
        is_int = value.str.contains(_INT_RE) & (
            value.str.to_integer(strict=False).cast(pl.String) == value
        ).fill_null(False)
        is_number = value.str.contains(_NUMBER_RE) & (
            value.cast(pl.Float64, strict=False).cast(pl.String) == value
        ).fill_null(False)
        is_empty = (value.is_null() | (value == "")) if split else value.is_null()
        checks += [
            check.all().alias(name)
            for check, name in (
                (is_empty | is_int, f"{index}\x00integer"),
                (is_empty | is_int | is_number, f"{index}\x00number"),
                (is_empty | value.is_in(["true", "false"]), f"{index}\x00boolean"),
            )
            if stats.get(name, True)
        ]
    return checks


def _and_stats(stats: dict[str, bool], part: pl.DataFrame) -> dict[str, bool]:
    """The kind checks so far and one more slice's: a kind holds only if it held in every slice."""
    return {**stats, **{name: bool(ok) for name, ok in part.row(0, named=True).items()}}


# Bytes of a plain CSV looked at in one Polars frame by _profile_plain: as fast as 8 MiB, and
# peak memory grows with it (124 MB for 2 MiB, 320 MB for 8 MiB, on a 74 MB file).
PLAIN_PIECE_BYTES = 2 * CHUNK_BYTES


def _profile_plain(
    path: Path, separator: str
) -> tuple[list[str], int, dict[int, int], list[int], tuple[int, ...], dict[str, bool]] | None:
    """What _check_records and the kinds pass find, for a file without quotes or lone CRs, in
    one pass of Polars string expressions; None when the first line is blank (left to them).

    Without quotes Python's csv splits records at LF (dropping a CR before it) and fields at
    the separator, so a line's field count is its separators plus one and an empty line is a
    blank record. Offsets come from the lines' byte lengths.
    """
    with open_bytes(path) as raw:
        if raw.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            raw.seek(0)
        first = raw.readline().decode("utf-8").removesuffix("\n").removesuffix("\r")
        if not first:
            return None
        header = first.split(separator)
        _check_header(path, header)
        offsets = [raw.tell()]
        width = len(header)
        values = [pl.col(f"field_{index}") for index in range(width)]
        stats = {}
        records = 0
        base = offsets[0]  # where the next piece starts
        bad: dict[int, int] = {}
        blank: list[int] = []
        pending = b""
        while True:
            block = raw.read(PLAIN_PIECE_BYTES)
            data = pending + block
            cut = data.rfind(b"\n") + 1 if block else len(data)
            if not cut:
                if not block:
                    break
                pending = data  # a line longer than a piece
                continue
            piece, pending = data[:cut], data[cut:]
            # The byte pass checked the UTF-8; split leaves an empty string after the last LF.
            lines = pl.Series("line", [piece], pl.Binary).cast(pl.String).str.split("\n")
            frame = lines.explode().to_frame()
            if piece.endswith(b"\n"):
                frame = frame.head(-1)
            length = pl.col("line").str.len_bytes().cast(pl.Int64)
            fields = pl.col("line").str.count_matches(separator, literal=True) + 1
            counted = frame.select(
                pl.int_range(records, records + pl.len(), dtype=pl.Int64).alias("index"),
                fields.alias("fields"),
                (length + 1).cum_sum().alias("end"),
                # Only a line of at most one byte may be blank ("" or the CR of a CRLF).
                ((fields != width) | (length <= 1)).alias("odd"),
                pl.col("line"),
            )
            is_blank = pl.col("line").is_in(["", "\r"])
            odd = counted.filter("odd").with_columns(is_blank.alias("blank"))
            wrong = ~pl.col("blank") & (pl.col("fields") != width)
            bad.update(odd.filter(wrong).select("index", "fields").iter_rows())
            blank.extend(odd.filter("blank")["index"].to_list())
            # The offset after every CHUNK_RECORDS-th record, as _check_records notes them (the
            # last line may have no LF to count).
            ends = counted.filter((pl.col("index") + 1) % CHUNK_RECORDS == 0)["end"]
            offsets.extend((ends.clip(upper_bound=len(piece)) + base).to_list())
            checks = _kind_checks(values, stats, split=True)
            if checks:
                line = pl.col("line").str.strip_suffix("\r")
                parts = frame.select(line.str.split_exact(separator, width - 1).alias("parts"))
                stats = _and_stats(stats, parts.unnest("parts").select(checks))
            records += frame.height
            base += len(piece)
            if not block:
                break
    if records % CHUNK_RECORDS:
        offsets.append(base)
    return header, records, bad, blank, tuple(offsets), stats


def _check_records(
    path: Path, separator: str
) -> tuple[list[str], int, dict[int, int], list[int], tuple[int, ...]]:
    """The header, the record count, records with the wrong field count, blank records, and the
    byte offset of every CHUNK_RECORDS-th record (the first after the header, the last the end).

    Python's csv module (strict) gives the exact field count of every record, which Polars does
    not: it pads short records with nulls. Counting lengths runs in C, CHUNK_RECORDS at a time;
    the binary file's position after each slice is where the next record starts. Only a file
    that has odd records gets a second pass to find which ones.
    """
    with open_bytes(path) as raw:
        if raw.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            raw.seek(0)
        # Binary lines split at LF only; a lone CR splits a line for Python's csv as it reads
        # text, so such a file goes through the (slower) text reader to keep its meaning.
        position = _TextPosition(raw) if _has_lone_cr(raw) else None
        lines = position.lines() if position else map(bytes.decode, raw)
        tell = position.tell if position else raw.tell
        rows = csv.reader(lines, delimiter=separator, strict=True)
        lengths: Counter[int] = Counter()
        try:
            header = next(rows, [])
            if not header and next(rows, None) is not None:
                raise InputError(
                    f"{path}, line 1: the first line is blank, but the header (the column "
                    "names) must be on line 1",
                    hint="remove the blank line(s) before the header",
                )
            offsets = [tell()]
            records = 0
            while True:
                lengths.update(map(len, islice(rows, CHUNK_RECORDS)))
                counted = lengths.total()
                if counted == records:
                    break
                records = counted
                offsets.append(tell())
        except csv.Error as exc:
            line = rows.line_num
            broken = _find_broken_record(path, separator)
            raise broken or _csv_error(path, line, str(exc)) from None
    if not header:
        return [], 0, {}, [], ()
    _check_header(path, header)
    if set(lengths) <= {len(header)}:
        return header, records, {}, [], tuple(offsets)
    bad: dict[int, int] = {}
    blank: list[int] = []
    with _text(path) as text:
        rows = csv.reader(text, delimiter=separator, strict=True)
        next(rows)
        for index, record in enumerate(rows):
            if not record:
                blank.append(index)
            elif len(record) != len(header):
                bad[index] = len(record)
    return header, records, bad, blank, tuple(offsets)


class _TextPosition:
    """Text lines split as Python's text mode splits them, with the byte offset reached."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._start = raw.tell()
        self._consumed = 0
        self._text = io.TextIOWrapper(raw, encoding="utf-8", newline="")

    def lines(self) -> Iterator[str]:
        """Each line; UTF-8 was checked, so a line's encoding is exactly the bytes it came from."""
        for line in iter(self._text.readline, ""):
            self._consumed += len(line.encode())
            yield line

    def tell(self) -> int:
        """The byte offset after the last line handed out."""
        return self._start + self._consumed


def _has_lone_cr(raw: IO[bytes]) -> bool:
    """Whether the file has a CR that is not part of a CRLF; leaves the position where it was."""
    start = raw.tell()
    found = False
    while chunk := raw.read(CHUNK_BYTES):
        # A chunk ending in CR may be followed by LF in the next one: read one byte more.
        if chunk.endswith(b"\r"):
            chunk += raw.read(1)
        if chunk.count(b"\r") != chunk.count(b"\r\n"):
            found = True
            break
    raw.seek(start)
    return found


def _text(path: Path) -> io.TextIOWrapper:
    return io.TextIOWrapper(open_bytes(path), encoding="utf-8-sig", newline="")


def _csv_error(path: Path, line: int, reason: str) -> InputError:
    return InputError(
        f"{path}, line {line}: the CSV quoting is broken ({reason})",
        hint="a field with a quote, separator or line break is quoted whole; a quoted field "
        "ends with a quote followed by a separator or the end of the line; a quote inside a "
        'quoted field is written twice ("")',
    )


def _find_broken_record(path: Path, separator: str) -> InputError | None:
    """The first record that is not RFC 4180 CSV, named by the line (as an editor counts) it
    starts on; None if every record is well formed.

    Runs only when the parsers fail or disagree, so it can afford to look at each record's text:
    Python's csv takes a quote inside an unquoted field as text where Polars opens a quoted
    field, and a lone CR ends a record for one and not the other.
    """
    sep = re.escape(separator)
    quoted = '"(?:[^"]|"")*"'
    strict = re.compile(_record_re(f'[^"{sep}\\r\\n]*', quoted, sep) + "(?:\\r?\\n)?")
    loose_cr = re.compile(_record_re(f'[^"{sep}\\n]*', quoted, sep) + "\\n?")
    consumed: list[str] = []

    def lines(handle: io.TextIOWrapper) -> Iterator[str]:
        for line in handle:
            consumed.append(line)
            yield line

    start = 1
    with _text(path) as handle:
        records = csv.reader(lines(handle), delimiter=separator, strict=True)
        while True:
            try:
                if next(records, None) is None:
                    return None
            except csv.Error as exc:
                return _csv_error(path, start, str(exc))
            text = "".join(consumed)
            consumed.clear()
            if not strict.fullmatch(text):
                reason = (
                    "a lone CR inside a field that is not quoted"
                    if loose_cr.fullmatch(text)
                    else "a quote inside a field that is not quoted, or text after a closing quote"
                )
                return _csv_error(path, start, reason)
            start += text.count("\n")


def _record_re(unquoted: str, quoted: str, sep: str) -> str:
    field = f"(?:{unquoted}|{quoted})"
    return f"{field}(?:{sep}{field})*"


def unusable_names(names: Iterable[str]) -> list[str]:
    """Input column names the importer cannot carry: its own, and what Polars reads as a
    pattern rather than a name (`*`, `^...$`)."""
    return sorted(
        name
        for name in names
        if name.startswith(INTERNAL_PREFIXES)
        or name == "*"
        or (name.startswith("^") and name.endswith("$"))
    )


def _check_header(path: Path, header: list[str]) -> None:
    empty = [index + 1 for index, name in enumerate(header) if not name.strip()]
    if empty:
        raise InputError(f"{path}, line 1: header column(s) {empty} have no name")
    unusable = unusable_names(header)
    if unusable:
        raise InputError(
            f"{path}, line 1: header names {', '.join(map(repr, unusable))} cannot be column "
            "names here (the importer's own, or a pattern to Polars); rename the column(s)"
        )
    seen = Counter(header)
    twice = sorted(name for name, count in seen.items() if count > 1)
    if twice:
        raise InputError(
            f"{path}, line 1: header names {', '.join(map(repr, twice))} more than once"
        )


def _iter_chunks(
    path: Path,
    header: list[str],
    separator: str,
    offsets: tuple[int, ...],
    records: int,
    *,
    step: int,
    checked: InputFile | None = None,
) -> Iterator[pl.DataFrame]:
    """The records of `path`, `step` offsets (step x CHUNK_RECORDS records) at a time, as text;
    with `checked`, read through a check against its byte pass (see _CheckedReader).

    Each slice is parsed on its own, so memory is bounded by the slice; a slice whose record
    count differs from the record pass's means the two parsers disagree on the quoting there.
    """
    # One column more than the header catches the fields of records that are too long;
    # records that are too short are known from the record pass.
    schema = dict.fromkeys([*header, EXTRA], pl.String)
    with open_bytes(path) as handle:
        reader = _CheckedReader(checked, handle) if checked is not None else None
        for first in range(0, len(offsets) - 1, step):
            last = min(first + step, len(offsets) - 1)
            if reader is None:
                handle.seek(offsets[first])
                data = handle.read(offsets[last] - offsets[first])
            else:
                data = reader.read(offsets[first], offsets[last])
                if last == len(offsets) - 1:
                    reader.finish()
            expected = min(last * CHUNK_RECORDS, records) - first * CHUNK_RECORDS
            try:
                chunk = pl.read_csv(
                    data,
                    has_header=False,
                    separator=separator,
                    schema=schema,
                    missing_columns="insert",
                    extra_columns="ignore",
                    truncate_ragged_lines=True,
                    row_index_name=LINE,
                    row_index_offset=first * CHUNK_RECORDS + 2,
                )
            except pl.exceptions.PolarsError as exc:
                raise _disagreement(path, separator, f"{exc}") from exc
            if chunk.height != expected:
                raise _disagreement(
                    path,
                    separator,
                    f"two CSV parsers disagree on the number of records from row "
                    f"{first * CHUNK_RECORDS + 2} ({expected} vs {chunk.height}); "
                    "the file's quoting is probably broken",
                )
            yield chunk


def _disagreement(path: Path, separator: str, detail: str) -> InputError:
    broken = _find_broken_record(path, separator)
    if broken is not None:
        return broken
    return InputError(f"{path}: cannot be parsed as CSV: {detail}")


def _iter_csv(source: InputFile, batch_rows: int) -> Iterator[Batch]:
    separator = SEPARATORS[source.format]
    encode = [_json_text(column, source.column_kinds[column]) for column in source.columns]
    bad_lines = pl.DataFrame(
        {
            LINE: [index + 2 for index in source.bad_records],
            "fields": list(source.bad_records.values()),
        },
        schema={LINE: pl.Int64, "fields": pl.Int64},
    )
    blank_lines = pl.Series(LINE, [index + 2 for index in source.blank_records], dtype=pl.Int64)
    is_blank = pl.col(LINE).is_in(blank_lines.implode())
    is_bad = pl.col(LINE).is_in(bad_lines[LINE].implode())
    step = max(1, batch_rows // CHUNK_RECORDS)
    chunks = _iter_chunks(
        source.path,
        list(source.header),
        separator,
        source.chunk_offsets,
        source.records,
        step=step,
        checked=source,
    )
    for chunk in chunks:
        for start in range(0, chunk.height, batch_rows):
            part = chunk.slice(start, batch_rows).with_columns(pl.col(LINE).cast(pl.Int64))
            rows = part.filter(~is_blank).select(LINE, *encode)
            blanks = part.height - rows.height
            rejects = (
                rows.filter(is_bad)
                .join(bad_lines, on=LINE, how="left")
                .select(
                    LINE,
                    pl.lit("csv_fields").alias(RULE),
                    pl.lit(None, pl.String).alias(COLUMN),
                    pl.format(
                        "record has {} fields, the header has {}",
                        pl.col("fields"),
                        pl.lit(len(source.columns)),
                    ).alias(ERROR),
                    *source.columns,
                )
            )
            rows = rows.filter(~is_bad)
            if source.nul_bytes:  # in CSV a NUL character is a NUL byte
                rows, nul = _split_nul(rows)
                rejects = pl.concat([rejects, nul]).sort(LINE)
            yield Batch(source, rows, rejects, blanks)


def _json_text(column: str, kind: str) -> pl.Expr:
    """The CSV cell as JSON text: lossless numbers and booleans are already JSON; text is quoted."""
    if kind == "string":
        return json_string(pl.col(column)).alias(column)
    return pl.col(column)


# -------------------------------------------------------------------------------------- JSONL


def _iter_jsonl(source: InputFile, batch_rows: int) -> Iterator[Batch]:
    """Parse JSONL a line at a time: one bad line is a reject, not the end of the file.

    Polars' NDJSON reader fails the whole read on one bad line and coerces types across lines, so
    lines go through Python's json (C); each value is kept as its own JSON text.
    """
    numbers: list[int] = []
    texts: list[bytes] = []
    blanks = 0
    with open_bytes(source.path) as handle:
        for number, text in enumerate(_CheckedReader(source, handle).lines(), start=1):
            if number == 1 and text.startswith(codecs.BOM_UTF8):
                text = text[len(codecs.BOM_UTF8) :]
                if not text:
                    break  # a BOM and nothing else: an empty file
            if not text.strip(JSON_SPACE):
                blanks += 1
                continue
            numbers.append(number)
            texts.append(text)
            if len(texts) >= batch_rows:
                yield _jsonl_batch(source, numbers, texts, blanks)
                numbers, texts, blanks = [], [], 0
    if texts or blanks:
        yield _jsonl_batch(source, numbers, texts, blanks)


def jsonl_keys(path: Path, *, limit: int | None = None) -> tuple[str, ...]:
    """The keys of the objects on the first `limit` lines (all lines: None), in first-seen order,
    without a rejects file's own columns; for checking a mapping before any row is read."""
    keys: dict[str, None] = {}
    with open_bytes(path) as handle:
        for raw in islice(handle, limit):
            try:
                value = _DECODER.decode(raw.decode("utf-8").lstrip("\ufeff"))
            except (ValueError, RecursionError):
                continue  # a bad line is a reject later, with its line number
            if isinstance(value, dict):
                keys.update(dict.fromkeys(value))
    return tuple(_without_meta(list(keys)))


def _jsonl_batch(source: InputFile, numbers: list[int], texts: list[bytes], blanks: int) -> Batch:
    good_lines: list[int] = []
    rows: list[dict[str, str]] = []
    bad: list[tuple[int, str, str, str]] = []
    encode = _ENCODER.encode
    for number, raw in zip(numbers, texts, strict=True):
        # The file is known to be UTF-8 (json.loads(bytes) would guess an encoding per line);
        # without its line ending, an error's column is the column in the line.
        text = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
        try:
            if text.startswith("\ufeff"):  # json.loads says so; JSONDecoder alone does not
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
            value = _LINE_DECODER.decode(text)
        except (ValueError, RecursionError) as exc:
            bad.append((number, "json", _json_error(exc), text))
            continue
        if not isinstance(value, dict):
            kind = JSON_KINDS.get(type(value), "boolean" if isinstance(value, bool) else "null")
            bad.append((number, "json_object", f"line is a JSON {kind}, not an object", text))
            continue
        unusable = unusable_names(value)
        if unusable:
            message = (
                f"key(s) {', '.join(map(repr, unusable))} cannot be column names here "
                "(the importer's own, or a pattern to Polars)"
            )
            bad.append((number, "json_object", message, text))
            continue
        row = {key: encode(item) for key, item in value.items()}
        if _SURROGATE_ESCAPE.search(text) and not _encodable(row):
            bad.append((number, "json", "a string holds a lone UTF-16 surrogate escape", text))
            continue
        good_lines.append(number)
        rows.append(row)
    frame = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
    frame = frame.select(pl.Series(LINE, good_lines, dtype=pl.Int64), pl.all().cast(pl.String))
    frame = frame.select(LINE, *_without_meta(frame.columns[1:]))
    # In JSON a NUL character is the escape \u0000; no backslash in the batch, no escape.
    nul = None
    if b"\\" in b"".join(texts):
        frame, nul = _split_nul(frame)
    rejects = pl.DataFrame(
        {
            LINE: [item[0] for item in bad],
            RULE: [item[1] for item in bad],
            COLUMN: [None] * len(bad),
            ERROR: [item[2] for item in bad],
            RAW: [item[3] for item in bad],
        },
        schema={
            LINE: pl.Int64,
            RULE: pl.String,
            COLUMN: pl.String,
            ERROR: pl.String,
            RAW: pl.String,
        },
    )
    if nul is not None and nul.height:
        rejects = pl.concat([rejects, nul], how="diagonal").sort(LINE)
    return Batch(source, frame, rejects, blanks)


# ------------------------------------------------------------------------------------ Parquet


def _open_parquet(path: Path) -> InputFile:
    """Check a Parquet file is whole (its magic at both ends, a footer Polars reads) and note
    its columns and row count; its bytes are hashed for the fingerprint, like a text file's."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            while chunk := handle.read(CHUNK_BYTES):
                digest.update(chunk)
            handle.seek(0)
            head = handle.read(len(PARQUET_MAGIC))
            handle.seek(max(info.st_size - len(PARQUET_MAGIC), 0))
            tail = handle.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if head != PARQUET_MAGIC or info.st_size < 2 * len(PARQUET_MAGIC) or tail != PARQUET_MAGIC:
        raise InputError(
            f"{path}: is not a whole Parquet file (it does not start and end with PAR1; "
            "a truncated file ends early); nothing from it was sent",
            hint="fetch or write the file again",
        )
    try:
        schema = pl.read_parquet_schema(path)
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{path}: cannot be read as Parquet ({_first_line(exc)})") from None
    names = list(schema)
    unusable = unusable_names(names)
    if unusable:
        raise InputError(
            f"{path}: column names {', '.join(map(repr, unusable))} cannot be column names "
            "here (the importer's own, or a pattern to Polars); rename the column(s)"
        )
    for name, dtype in schema.items():
        _parquet_json(name, dtype, path)  # a type JSON cannot carry is refused before any row
    return InputFile(
        path=path,
        format="parquet",
        fingerprint=digest.hexdigest(),
        size=info.st_size,
        lines=rows,
        columns=tuple(names),
        header=tuple(names),
        records=rows,
        stamp=(info.st_size, info.st_mtime_ns),
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.f"


def _parquet_json(name: str, dtype: pl.DataType, path: Path) -> pl.Expr:
    """Column `name` of Parquet type `dtype` as JSON text, keeping what the type says.

    Integers keep every digit (no float on the way); a decimal is a JSON number with its own
    digits (12.30 stays 12.30); a timestamp is ISO 8601 text, with its offset when the column has
    a time zone and without one when it is naive; lists and structs are JSON arrays and objects
    (as Polars' JSON writer writes them); binary is base64 text; a float that is NaN or infinite
    is left as its text for _split_non_finite to reject.
    """
    column = pl.col(name)
    if dtype.is_integer() or dtype.is_float() or isinstance(dtype, pl.Boolean | pl.Decimal):
        return column.cast(pl.String).alias(name)
    if isinstance(dtype, pl.Datetime):
        zone = "%:z" if dtype.time_zone else ""
        return json_string(column.dt.to_string(_TIME_FORMAT + zone)).alias(name)
    if isinstance(dtype, pl.Time):
        return json_string(column.dt.to_string("%H:%M:%S%.f")).alias(name)
    if isinstance(dtype, pl.Duration):
        return json_string(column.dt.to_string("iso")).alias(name)
    if isinstance(dtype, pl.Binary):
        return json_string(column.bin.encode("base64")).alias(name)
    if dtype.is_nested():
        if _holds(dtype, (pl.Binary, pl.Object)):
            raise InputError(f"{path}: column {name!r} holds binary values inside {dtype}")
        return json_string(column).alias(name)
    if isinstance(dtype, pl.Object):
        raise InputError(f"{path}: column {name!r} has a type JSON cannot carry ({dtype})")
    # Text, dates, categories, enums and all-null columns: their text.
    return json_string(column.cast(pl.String)).alias(name)


def _holds(dtype: pl.DataType, kinds: tuple[type, ...]) -> bool:
    """Whether a nested type has one of `kinds` somewhere inside."""
    if isinstance(dtype, kinds):
        return True
    if isinstance(dtype, pl.Struct):
        return any(_holds(field.dtype, kinds) for field in dtype.fields)
    inner = getattr(dtype, "inner", None)
    return inner is not None and _holds(inner, kinds)


def _iter_parquet(source: InputFile, batch_rows: int) -> Iterator[Batch]:
    """The rows of a Parquet file, `batch_rows` at a time, each cell as JSON text (see
    _parquet_json); LINE is the row's number (1-based).

    Each batch is its own slice of a scan, which reads only the row groups it needs, so memory
    holds a batch and its row groups. (collect_batches streams the same way but runs ahead of a
    slow consumer: 275 MB for 3M rows where slices peaked at 105 MB.)
    """
    path = source.path
    schema = pl.read_parquet_schema(path)
    encode = [_parquet_json(name, dtype, path) for name, dtype in schema.items()]
    floats = [name for name, dtype in schema.items() if dtype.is_float()]
    for start in range(0, source.records, batch_rows):
        _check_stamp(source)
        scan = pl.scan_parquet(path).with_row_index(LINE, offset=1).slice(start, batch_rows)
        try:
            frame = scan.select(pl.col(LINE).cast(pl.Int64), *encode).collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise InputError(
                f"{path}, row {start + 1:,} on: cannot be read as Parquet ({_first_line(exc)})",
                hint="fetch or write the file again",
            ) from None
        rows, rejects = _split_non_finite(frame, floats)
        yield Batch(source, rows, rejects)


def _check_stamp(source: InputFile) -> None:
    """Stop when the file's size or mtime moved since it was opened (see _CheckedReader)."""
    try:
        info = source.path.stat()
    except OSError as exc:
        raise InputError(f"{source.path}: cannot be read ({exc.strerror or exc})") from None
    if (info.st_size, info.st_mtime_ns) != source.stamp:
        raise InputError(
            f"{source.path}: the file changed while it was being read; nothing from the "
            "changed part was sent",
            hint="run again once it is final: the new content is a new input",
        )


def _split_non_finite(frame: pl.DataFrame, floats: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows without a NaN or infinite float, and those with one as rejects (rule "json",
    naming the first such column): JSON has no such number, as a JSONL line with NaN is a reject.
    """
    names = frame.columns[1:]
    hits = [(~pl.col(name).str.contains(r"^-?[0-9]"), name) for name in floats]
    empty = frame.clear().select(
        LINE,
        pl.lit(None, pl.String).alias(RULE),
        pl.lit(None, pl.String).alias(COLUMN),
        pl.lit(None, pl.String).alias(ERROR),
        *names,
    )
    if not hits:
        return frame, empty
    marked = frame.with_columns(
        pl.coalesce(pl.when(hit).then(pl.lit(name)) for hit, name in hits).alias(COLUMN),
        pl.coalesce(
            pl.when(hit).then(
                pl.format(f"column {name} holds {{}}, which JSON has no number for", pl.col(name))
            )
            for hit, name in hits
        ).alias(ERROR),
    )
    is_bad = pl.col(ERROR).is_not_null()
    rejects = marked.filter(is_bad).select(
        LINE,
        pl.lit("json").alias(RULE),
        COLUMN,
        ERROR,
        *(_float_text(name) if name in floats else name for name in names),
    )
    return marked.filter(~is_bad).drop(COLUMN, ERROR), rejects


def _float_text(name: str) -> pl.Expr:
    """A float cell as JSON text in a reject: NaN and infinities as strings."""
    value = pl.col(name)
    return pl.when(value.str.contains(r"^-?[0-9]")).then(value).otherwise(json_string(value))


# A NUL character in a cell's JSON text: the escape \u0000 after an even number of backslashes
# (in `\\u0000` the backslash is escaped and u0000 is text).
_NUL_ESCAPE = r"(?:^|[^\\])(?:\\\\)*\\u0000"


def _split_nul(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows of `frame` without a NUL character, and those with one as rejects (rule "nul",
    naming the first such column, then the row's columns); a key holding NUL is a column too.

    A NUL passes JSON, Polars and HTTP, then cuts or breaks the text in whatever stores it.
    """
    names = frame.columns[1:]
    nul_keys = [name for name in names if "\x00" in name]
    checks = [(pl.col(name).is_not_null(), name, "key") for name in nul_keys]
    if names:
        # A literal search first: the regex runs only on the rare column that may hold one.
        maybe = frame.select(
            pl.col(name).str.contains("\\u0000", literal=True).any().alias(name) for name in names
        ).row(0)
        checks += [
            (pl.col(name).str.contains(_NUL_ESCAPE), name, "column")
            for name, suspect in zip(names, maybe, strict=True)
            if suspect
        ]
    if not checks:
        return frame, frame.clear().select(
            LINE,
            pl.lit(None, pl.String).alias(RULE),
            pl.lit(None, pl.String).alias(COLUMN),
            pl.lit(None, pl.String).alias(ERROR),
            *names,
        )
    shown = {name: name.replace("\x00", "\\0") for _, name, _ in checks}
    marked = frame.with_columns(
        pl.coalesce(pl.when(hit).then(pl.lit(shown[name])) for hit, name, _ in checks).alias(
            COLUMN
        ),
        pl.coalesce(
            pl.when(hit).then(pl.lit(f"{what} {shown[name]} holds a NUL character (\\0)"))
            for hit, name, what in checks
        ).alias(ERROR),
    )
    is_bad = pl.col(ERROR).is_not_null()
    rejects = marked.filter(is_bad).select(LINE, pl.lit("nul").alias(RULE), COLUMN, ERROR, *names)
    return marked.filter(~is_bad).drop(COLUMN, ERROR, *nul_keys), rejects


def _without_meta(columns: list[str]) -> list[str]:
    if all(meta in columns for meta in REJECT_META):
        return [c for c in columns if c not in (*REJECT_META, RAW)]
    return list(columns)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is too large for a double")
    return value


class _DuplicateKeyError(ValueError):
    """One JSON object names a key twice: json keeps the last value, which changed a row's user."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members as a dict, refusing a key named twice rather than keeping the last."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(f"key {_show_key(key)} appears twice in one object")
            seen.add(key)
    return value


def _show_key(key: str) -> str:
    """A key as JSON text, readable where it can be; a lone surrogate is escaped, not UTF-8."""
    shown = json.dumps(key, ensure_ascii=False)
    try:
        shown.encode("utf-8")
    except UnicodeEncodeError:
        shown = json.dumps(key)
    return shown


_INT_DIGITS = re.compile(r"limit \((\d+) digits\) for integer string conversion: value has (\d+)")

# One decoder and encoder for all lines: json.loads/dumps with options build a new one per call,
# which was a third of the time spent on a JSONL file.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
# Input lines also refuse a key named twice in one object; load_json keeps json's last-wins.
_LINE_DECODER = json.JSONDecoder(
    parse_constant=_no_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys
)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def load_json(text: str) -> Any:
    """Parse strict JSON: NaN, Infinity and numbers beyond a double are errors, as RFC 8259 says.

    Raises ValueError (json.JSONDecodeError among them) or RecursionError.
    """
    return _DECODER.decode(text)


def dump_json(value: Any) -> str:
    """Compact JSON text that is valid UTF-8: a lone surrogate raises ValueError, not bad bytes."""
    text = _ENCODER.encode(value)
    text.encode("utf-8")  # UnicodeEncodeError is a ValueError
    return text


def _json_error(exc: Exception) -> str:
    if isinstance(exc, _DuplicateKeyError):
        return str(exc)
    if isinstance(exc, json.JSONDecodeError):
        if exc.msg.endswith(" at"):  # "Invalid control character at", "... starting at"
            return f"line is not valid JSON: {exc.msg} column {exc.colno}"
        return f"line is not valid JSON: {exc.msg} (column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "line is nested too deeply"
    # Python's own words name an interpreter setting; the user needs to hear what is wrong.
    if match := _INT_DIGITS.search(str(exc)):
        limit, digits = match.groups()
        return f"a number is too long: {digits} digits, the limit is {limit}"
    return f"line is not valid JSON: {exc}"


def _encodable(row: dict[str, str]) -> bool:
    try:
        for key, value in row.items():
            key.encode("utf-8")
            value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
            while offset < end and (chunk := handle.read(CHUNK_BYTES)):
                prober.update(digest, chunk, offset)
                offset += len(chunk)
    except OSError as exc:
        raise InputError(f"{source.path}: cannot be read ({exc.strerror or exc})") from exc
    return prober.prefixes(source.size)
