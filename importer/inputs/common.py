"""What the reading stage hands on: an input's facts (InputFile), its rows in batches (Batch), and
the limits every format reader shares."""

from __future__ import annotations

import re
import threading
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import NamedTuple, TypeVar

import polars as pl

from importer.columns import COLUMN, ERROR, LINE, RAW, REJECT_META, RULE
from importer.jsoncodec import WrittenNumber

# The importer's own columns sit next to the input's in the readers and checks/validate.py, so an input
# column may not start like one of them (Mongo's "__v" is fine).
INTERNAL_PREFIXES = (
    LINE,
    RULE,
    ERROR,
    COLUMN,
    "__extra_fields",
    "__naive",
    "__outside",
    "__filtered",
    "__dropped",
    "__repair:",
    "__message",
    "__text:",
    "__kind:",
    "__time_message:",
    "__epoch:",
    "__t_",
)


_Item = TypeVar("_Item")


FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    # Amplitude and others export JSON lines under `.json`: read so when a file or a glob names
    # one. A directory does not pick them up (locate.KNOWN_ENDINGS): manifests and reports
    # beside the data end in .json too.
    ".json": "jsonl",
    ".parquet": "parquet",
}


SEPARATORS = {"csv": ",", "tsv": "\t"}


CHUNK_BYTES = 1 << 20


# The record pass notes the byte offset of every CHUNK_RECORDS-th record, so Polars parses the
# file a known slice at a time: memory stays bounded and each slice's record count is checked.
CHUNK_RECORDS = 10_000


# Rows read, checked and built together. Polars works on a batch in morsels of 10,000 rows
# (pipeline/morsels.py), so 50,000 rows keep both cores busy, and the batch in flight, with its
# JSON text, checks and bodies, is the peak: a 1M-row dry run peaked at 282 MB in batches of
# 50,000 against 390 MB in batches of 100,000 (and 423 MB at 20M rows), for 3% more time.
DEFAULT_BATCH_ROWS = 50_000


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
    WrittenNumber: "number",  # a float that keeps its text, as input lines read it
}


INTEGER_TEXT = r"^-?(?:0|[1-9][0-9]*)$"


NUMBER_TEXT = r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$"


# \uD800-\uDFFF: a high or a low surrogate, either of which may stand alone.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


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
    # the file itself, so its blocks cannot go through CheckedReader).
    stamp: tuple[int, int] = (0, 0)
    # The content does not end in a newline: its last line may be cut short (a log being written).
    ends_open: bool = False
    # By size, the content's first bytes at each size `open_input` was asked to probe and the
    # content is longer than (None: not asked; Parquet is never probed: it does not grow by
    # appending).
    prefixes: dict[int, Prefix] | None = None
    # The checkpoint knows every row of this content as handled: its rows were not profiled
    # (no columns, no records) and are not read; a run skips it (see reader.open_input).
    whole_before: bool = False
    # The content's quick fingerprint ("algorithm:digest", see bytescan.quick_fingerprint),
    # or the store's own checksum of an object ("s3-etag:...", "gcs-md5:..."), and the file's
    # size on disk (compressed, as the object's): what tells it again, night after night,
    # without the byte pass. "" when there is none.
    quick: str = ""
    disk_size: int = 0
    # The mapping's declared separator (repairs.separator, a spreadsheet's ";"); "" = the
    # format's own (SEPARATORS).
    separator: str = ""
    # The mapping's declared encoding (repairs.encoding: "cp1252", "iso8859-1"); "" = UTF-8.
    # Every fact above is the file's own bytes'; only what a parser reads is transcoded.
    encoding: str = ""

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


def utf8_of(data: bytes, encoding: str) -> bytes:
    """`data` as UTF-8 for a parser: itself for a UTF-8 input (`encoding` ""), else decoded from
    the input's declared encoding, which the byte pass checked it is written in.

    The encodings a mapping may declare (mapping/repairs.ENCODINGS) take one byte a character,
    LF, CR, quotes and separators their ASCII bytes: a slice cut at a line's end decodes on its
    own, and a line, a byte offset and a column are the same in the file and in its text. So
    every pass works on the file's bytes, and only the slices a parser reads are transcoded,
    one at a time: memory stays bounded by a slice."""
    return data.decode(encoding).encode() if encoding else data


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


# A NUL character in a cell's JSON text: the escape \u0000 after an even number of backslashes
# (in `\\u0000` the backslash is escaped and u0000 is text).
NUL_ESCAPE = r"(?:^|[^\\])(?:\\\\)*\\u0000"


def split_nul(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
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
            (pl.col(name).str.contains(NUL_ESCAPE), name, "column")
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


def without_meta(columns: list[str]) -> list[str]:
    if all(meta in columns for meta in REJECT_META):
        return [c for c in columns if c not in (*REJECT_META, RAW)]
    return list(columns)
