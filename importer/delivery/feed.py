"""Turn the input batches into requests: skip what the checkpoint says is done, read the next batch
in a thread while this one is sent, and with --order time release each user's rows in time order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import polars as pl

from importer.columns import BODY, LINE, METHOD, PATH, ROUTE
from importer.delivery.options import Feed
from importer.destinations import Action
from importer.errors import InputError
from importer.model import Request
from importer.outcome import Summary
from importer.progress import DeliveryProgress
from importer.state.checkpoint import CheckpointLog

# --order time ranks at most about this many rows in memory at once (some 60 bytes each): past
# it, the rows are ranked in buckets of users, from their keys spilled to disk.
RANK_ROWS = 2_000_000

# RequestFeed's working columns for --order time.
_INPUT, _NAME, _TIME, _POS, _SEQ, _RELEASE = (
    "__input",
    "__name",
    "__time",
    "__pos",
    "__seq",
    "__release",
)


class RequestFeed:
    """The Requests of `feeds` not done yet, for send_all.

    The next batch is read in a worker thread (Polars releases the GIL) while the current one is
    sent, so the sockets never wait for a batch. Each input is registered with the checkpoint,
    the rows it says are done are skipped, and the progress moves past every row that will not be
    sent. `checkpoint` None (a benchmark's) skips nothing.

    With `order_time` (a body path) each user's rows come in the order of that time (ties in
    input order) rather than the input's: see `_by_time`. Its files are kept in `spill_dir`.
    """

    def __init__(
        self,
        feeds: Iterator[Feed],
        *,
        checkpoint: CheckpointLog | None,
        summary: Summary,
        progress: DeliveryProgress,
        order_time: str | None = None,
        time_format: str = "",
        spill_dir: Path | None = None,
    ) -> None:
        self._feeds = feeds
        self._checkpoint = checkpoint
        self._summary = summary
        self._progress = progress
        self._reading: asyncio.Future[Feed | None] | None = None
        self._loading: asyncio.Future[pl.DataFrame] | None = None  # a spill file, read back
        self._registered: set[str] = set()
        self._shown = (0, 0, 0, 0)
        self._order_time = order_time
        self._time_format = time_format
        self._spill_dir = spill_dir
        self.held_most = 0  # with order_time: the most rows held back at once
        self.error: InputError | None = None  # why reading stopped before the inputs' end

    async def requests(self) -> AsyncIterator[Request]:
        """Every request to send, batch by batch."""
        if self._order_time is not None:
            async with contextlib.aclosing(self._by_time(self._order_time)) as ordered:
                async for request in ordered:
                    yield request
            return
        self._shown = self._not_sent()
        self._reading = self._read_next()
        while True:
            try:
                feed = await asyncio.shield(self._reading)
            except InputError as exc:
                # Damage found only when its batch is read (a Parquet data page): the input ends
                # here, so the requests out finish and are recorded, and the run says why.
                self.error = exc
                return
            if feed is None:
                self._show_skips()
                return
            self._reading = self._read_next()
            todo = self._todo(feed)
            for request in _requests_of(todo, feed.fingerprint, feed.name):
                yield request

    def _todo(self, feed: Feed) -> pl.DataFrame:
        """The rows of `feed` the checkpoint does not hold as done; moves the progress past the
        others."""
        todo = feed.frame
        checkpoint = self._checkpoint
        if checkpoint is not None:
            if feed.fingerprint not in self._registered:
                checkpoint.register_input(feed.name, feed.fingerprint)
                self._registered.add(feed.fingerprint)
            done = checkpoint.done_mask(feed.fingerprint, todo[LINE])
            skipped = int(done.sum())
            if skipped:
                # Dead-lettered rows are handled too, but not done: they count apart.
                failed = int(checkpoint.failed_mask(feed.fingerprint, todo[LINE]).sum())
                self._summary.rows_skipped += skipped - failed
                self._summary.rows_failed_before += failed
                todo = todo.filter(~done)
        # Counts of the batch being read may move meanwhile; the last skip() settles them.
        self._show_skips()
        return todo

    async def _by_time(self, path: str) -> AsyncIterator[Request]:
        """The rows not done, each user's in time order: a first pass keeps them in spill files
        and ranks them, the second sends each as soon as every earlier one of its user went.

        The time cannot be known before the whole input is read: a user's earliest row may be
        its last line. A row whose user has an earlier row further down the input is held back
        (in memory) until that row came; a file sorted by time holds none (`held_most`).
        """
        if self._spill_dir is None:
            raise ValueError("order_time needs a spill_dir")
        shutil.rmtree(self._spill_dir, ignore_errors=True)  # a killed run's
        self._spill_dir.mkdir(parents=True)
        # Nothing is sent before the first pass ends, so its writes may hold the event loop.
        self._shown = self._not_sent()
        chunks: list[tuple[Path, int]] = []
        key_files: list[Path] = []
        total = 0
        self._reading = self._read_next()
        while (feed := await asyncio.shield(self._reading)) is not None:
            self._reading = self._read_next()
            todo = self._todo(feed)
            if not todo.height:
                continue
            todo = todo.with_columns(
                pl.lit(feed.fingerprint).alias(_INPUT), pl.lit(feed.name).alias(_NAME)
            )
            file = self._spill_dir / f"{len(chunks)}.arrow"
            todo.write_ipc(file)
            chunks.append((file, todo.height))
            keys = todo.select(_route_key(todo), _time_key(path, self._time_format))
            key_files.append(self._spill_dir / f"{len(chunks) - 1}.keys.arrow")
            keys.with_row_index(_POS, offset=total).write_ipc(key_files[-1])
            total += todo.height
        self._show_skips()
        if not chunks:
            return
        ends = list(itertools.accumulate(rows for _, rows in chunks))
        ranking = asyncio.to_thread(rank_spilled, key_files, ends, self._spill_dir)
        self._loading = asyncio.ensure_future(ranking)
        await asyncio.shield(self._loading)
        held: pl.DataFrame | None = None
        start = 0
        for index, (file, rows) in enumerate(chunks):
            load = asyncio.to_thread(_load_chunk, file, self._spill_dir, index)
            self._loading = asyncio.ensure_future(load)
            frame = await asyncio.shield(self._loading)
            start += rows
            # Every row released by one of this chunk's rows goes now, in its user's time order.
            late = pl.col(_RELEASE) >= start
            both = frame if held is None else pl.concat([held, frame], how="vertical_relaxed")
            ready = both.filter(~late).sort(_RELEASE, _SEQ)
            held = both.filter(late)
            self.held_most = max(self.held_most, held.height)
            for input_id, name, part in _by_input(ready):
                for request in _requests_of(part, input_id, name):
                    yield request

    def _read_next(self) -> asyncio.Future[Feed | None]:
        return asyncio.ensure_future(asyncio.to_thread(next, self._feeds, None))

    async def settle(self) -> None:
        """Wait for the batch being read, if one is, and remove the spill files. A thread cannot
        be cancelled: when the run stops while one is busy, this waits for it, so nobody closes
        or reads `feeds` under it. Its result or error was already seen otherwise."""
        for reading in (self._reading, self._loading):
            if reading is not None:
                await asyncio.gather(reading, return_exceptions=True)
        if self._order_time is not None and self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)

    def _not_sent(self) -> tuple[int, int, int, int]:
        """Rows done before, rows rejected, blank lines, rows failed before: what will not be
        sent, so far."""
        summary = self._summary
        return (
            summary.rows_skipped,
            summary.rows_rejected,
            summary.blank_lines,
            summary.rows_failed_before,
        )

    def _show_skips(self) -> None:
        """Tell the progress what will not be sent since it was last told, by kind."""
        now = self._not_sent()
        done, rejected, blank, failed = (a - b for a, b in zip(now, self._shown, strict=True))
        self._progress.skip(done, rejected=rejected, blank=blank, failed=failed)
        self._shown = now


def _requests_of(todo: pl.DataFrame, fingerprint: str, name: str) -> Iterator[Request]:
    """The Requests of one input's rows, in the frame's order."""
    routes = todo[ROUTE].to_list() if ROUTE in todo.columns else itertools.repeat(0, todo.height)
    for line, body, method, path, route in zip(
        todo[LINE].to_list(),
        todo[BODY].cast(pl.Binary).to_list(),
        _values(todo[METHOD]),
        _values(todo[PATH]),
        routes,
        strict=True,
    ):
        yield Request(method, path, body, fingerprint, name, line, route)


def _by_input(frame: pl.DataFrame) -> Iterator[tuple[str, str, pl.DataFrame]]:
    """`frame` cut into runs of rows of one input, in order: rows held back from an earlier
    input may go out among another's."""
    if not frame.height:
        return
    runs = frame.select((pl.col(_INPUT) != pl.col(_INPUT).shift()).fill_null(True).cum_sum())
    for (_,), part in frame.with_columns(runs.to_series().alias("__run")).group_by(
        "__run", maintain_order=True
    ):
        yield part[_INPUT][0], part[_NAME][0], part


def _route_key(frame: pl.DataFrame) -> pl.Expr:
    return pl.col(ROUTE) if ROUTE in frame.columns else pl.lit(0, pl.UInt64).alias(ROUTE)


def _time_key(path: str, time_format: str) -> pl.Expr:
    """The time at `path` in each body (a row without one sorts first)."""
    text = pl.col(BODY).str.json_path_match("$." + path)
    when = text.str.to_datetime(time_format, strict=False) if time_format else text
    return when.alias(_TIME)


def rank_spilled(key_files: list[Path], ends: list[int], folder: Path) -> None:
    """Rank the keys spilled in `key_files` (ROUTE, _TIME, _POS, in input order) as
    `release_order` does, at most about RANK_ROWS rows in memory at once, into
    FOLDER/order-<chunk>-<bucket>.arrow files of _POS, _RELEASE and _SEQ: the chunk's rows
    whose user falls in that bucket. `ends` are the input positions where each chunk ends.

    One user's rows are ranked together (the bucket is its route modulo the bucket count), and
    rows of one _RELEASE are all one user's, so a _SEQ local to its bucket orders them as a
    global one would. One user with more than RANK_ROWS rows still makes its bucket that big.
    """
    buckets = max(1, -(-ends[-1] // RANK_ROWS))
    bounds = pl.Series(ends, dtype=pl.Int64)
    for bucket in range(buckets):
        keys = pl.scan_ipc(key_files).filter(pl.col(ROUTE) % buckets == bucket)
        ranked = _rank(keys.collect(engine="streaming"))
        chunk = bounds.search_sorted(ranked[_POS], side="right").alias("__chunk")
        for (index,), part in (
            ranked.with_columns(chunk).partition_by("__chunk", as_dict=True).items()
        ):
            part.drop("__chunk").write_ipc(folder / f"order-{index}-{bucket}.arrow")
        for file in key_files if bucket == buckets - 1 else ():
            file.unlink()


def _load_chunk(file: Path, folder: Path, index: int) -> pl.DataFrame:
    """Chunk `index`'s rows, with the _RELEASE and _SEQ of each: its spill file beside its
    rank files, put back in input order."""
    ranks = sorted(folder.glob(f"order-{index}-*.arrow"))
    order = pl.concat([pl.read_ipc(path) for path in ranks]).sort(_POS)
    for path in ranks:
        path.unlink()
    frame = pl.read_ipc(file)
    file.unlink()
    return pl.concat([frame, order.select(_RELEASE, _SEQ)], how="horizontal")


def release_order(keys: pl.DataFrame) -> pl.DataFrame:
    """For rows of ROUTE and _TIME, in input order: _SEQ, each row's place in the (route, time,
    input position) order, and _RELEASE, the input position after which it may go: the last
    position among its user's rows up to it in that order.

    Sending the rows read so far with _RELEASE reached, sorted by (_RELEASE, _SEQ), gives each
    user's rows in time order: all rows of one _RELEASE are the user of the row at it.
    """
    return _rank(keys.with_row_index(_POS)).select(_RELEASE, _SEQ)


def _rank(keys: pl.DataFrame) -> pl.DataFrame:
    """_POS, _RELEASE and _SEQ of keys of ROUTE, _TIME and _POS, in _POS order."""
    return (
        keys.with_columns(pl.col(_POS).cast(pl.Int64))
        .sort(ROUTE, _TIME, _POS, nulls_last=False)
        .with_row_index(_SEQ)
        .with_columns(pl.col(_POS).cum_max().over(ROUTE).alias(_RELEASE))
        .sort(_POS)
        .select(_POS, _RELEASE, _SEQ)
    )


def order_time_path(action: Action) -> str | None:
    """The body path of the time an action's rows are ordered by with --order time: its one
    required time field (an event's original time); None when it has none."""
    required = [p for p in sorted(action.time_fields) if action.fields[p].required]
    return required[0] if len(required) == 1 else None


def _values(column: pl.Series) -> Iterator[str] | list[str]:
    """A column's values as Python strings; one value repeated when the column holds only one
    (an action's method and path), rather than a string object per row."""
    if len(column) and column.n_unique() == 1:
        return itertools.repeat(column[0], len(column))
    return column.to_list()
