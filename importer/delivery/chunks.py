"""The chunks of a bulk upload: rows of one input cut to the API's limits (rows and bytes), each
kept as NDJSON under a name that holds its content hash, the request body a list upload posts,
and a chunk built one ahead of the upload under way (see `built_ahead`)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import polars as pl

from importer.columns import BODY, LINE
from importer.delivery.options import Feed
from importer.destinations.base import BulkUpload
from importer.errors import InputError
from importer.outcome import Summary
from importer.progress import DeliveryProgress
from importer.state.checkpoint import CheckpointLog


@dataclass(slots=True)
class Chunk:
    """Rows of one input, as the NDJSON kept in the state directory until its job ends (one
    body per line); a list job's upload is the same bodies in a JSON list."""

    fingerprint: str
    name: str
    lines: list[int]
    content: bytes
    key: str
    file: str


def build_chunk(*, fingerprint: str, name: str, lines: list[int], bodies: pl.Series) -> Chunk:
    """One chunk of `bodies` (JSON text, one per row: never a raw line break inside)."""
    content = (bodies.str.join("\n")[0] + "\n").encode()
    digest = hashlib.sha256()
    digest.update(f"{fingerprint}:{lines[0]}:".encode())
    digest.update(content)
    key = digest.hexdigest()[:32]
    # A new name per attempt: a job found by name after a lost answer is this attempt's.
    file = f"importer-{key[:16]}-{secrets.token_hex(3)}.ndjson"
    return Chunk(fingerprint, name, lines, content, key, file)


def upload_body(batch: BulkUpload, content: bytes) -> bytes:
    """What a list job posts: `{"<list_key>": [body, ...]}` from a chunk's NDJSON; an "ids"
    upload posts each body's one value instead (`{"users": ["u1", "u2"]}`)."""
    if batch.kind == "ids":
        ids = [next(iter(json.loads(line).values())) for line in content.splitlines()]
        return json.dumps({batch.list_key: ids}, ensure_ascii=False).encode()
    return (
        b'{"'
        + batch.list_key.encode()
        + b'":['
        + content.rstrip(b"\n").replace(b"\n", b",")
        + b"]}"
    )


def cut_point(sizes: pl.Series, *, max_rows: int, max_bytes: int) -> int:
    """How many leading rows make one chunk: at most `max_rows`, and at most `max_bytes` of
    bodies plus separators (at least one row, so a body larger than a chunk still goes, alone,
    and the API judges it)."""
    fits = int((sizes.cast(pl.Int64).cum_sum() <= max_bytes).sum())
    return max(1, min(max_rows, fits))


class Chunker:
    """Cuts the bodies of `feeds` into chunks; skips what the checkpoint says is done.

    A chunk never spans two inputs. Feeds are read in a worker thread (Polars releases the GIL)
    while the event loop waits for jobs.
    """

    def __init__(
        self,
        feeds: Iterator[Feed],
        batch: BulkUpload,
        *,
        max_bytes: int,
        checkpoint: CheckpointLog,
        summary: Summary,
        progress: DeliveryProgress,
    ) -> None:
        self._feeds = feeds
        self._batch = batch
        self._max_bytes = max_bytes
        self._checkpoint = checkpoint
        self._summary = summary
        self._progress = progress
        self._registered: set[str] = set()
        self._shown = (0, 0, 0, 0)
        # Lines an earlier run's open job held and this run settled, by input: counted when
        # settled, so not counted again as done before.
        self.settled: dict[str, list[int]] = {}
        self.error: InputError | None = None  # why reading stopped before the inputs' end

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Every chunk to deliver, in input and line order."""
        pending: pl.DataFrame | None = None
        source: tuple[str, str] | None = None
        while True:
            try:
                feed = await asyncio.to_thread(next, self._feeds, None)
            except InputError as exc:
                # Damage found only when its batch is read: the rows read before it still go.
                self.error = exc
                feed = None
            self._show_skips()
            if feed is None:
                break
            if source is not None and source[0] != feed.fingerprint and pending is not None:
                for chunk in self._cut(pending, source, final=True)[0]:
                    yield chunk
                pending = None
            source = (feed.fingerprint, feed.name)
            todo = self._not_done(feed)
            pending = todo if pending is None else pl.concat([pending, todo])
            ready, pending = self._cut(pending, source, final=False)
            for chunk in ready:
                yield chunk
        if source is not None and pending is not None:
            for chunk in self._cut(pending, source, final=True)[0]:
                yield chunk
        self._show_skips()

    def _not_done(self, feed: Feed) -> pl.DataFrame:
        checkpoint = self._checkpoint
        if feed.fingerprint not in self._registered:
            checkpoint.register_input(feed.name, feed.fingerprint)
            self._registered.add(feed.fingerprint)
        frame = feed.frame.select(LINE, BODY)
        done = checkpoint.done_mask(feed.fingerprint, frame[LINE])
        settled = self.settled.get(feed.fingerprint)
        before = done if settled is None else done & ~frame[LINE].is_in(settled)
        if before.any():
            # Dead-lettered rows are handled too, but not done: they count apart.
            failed = before & checkpoint.failed_mask(feed.fingerprint, frame[LINE])
            self._summary.rows_skipped += int(before.sum()) - int(failed.sum())
            self._summary.rows_failed_before += int(failed.sum())
        return frame.filter(~done)

    def _cut(
        self, frame: pl.DataFrame, source: tuple[str, str], *, final: bool
    ) -> tuple[list[Chunk], pl.DataFrame | None]:
        """The whole chunks of `frame`, and (unless `final`) the rows left for the next batch
        to fill up."""
        batch, chunks = self._batch, []
        while frame.height:
            sizes = frame[BODY].str.len_bytes() + 1
            take = cut_point(sizes, max_rows=batch.max_rows, max_bytes=self._max_bytes)
            if take == frame.height and not final and int(sizes.sum()) < self._max_bytes:
                return chunks, frame
            head, frame = frame.head(take), frame.slice(take)
            chunks.append(
                build_chunk(
                    fingerprint=source[0],
                    name=source[1],
                    lines=head[LINE].to_list(),
                    bodies=head[BODY],
                )
            )
        return chunks, None

    def _show_skips(self) -> None:
        summary = self._summary
        now = (
            summary.rows_skipped,
            summary.rows_rejected,
            summary.blank_lines,
            summary.rows_failed_before,
        )
        done, rejected, blank, failed = (a - b for a, b in zip(now, self._shown, strict=True))
        self._progress.skip(done, rejected=rejected, blank=blank, failed=failed)
        self._shown = now


async def built_ahead(chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """`chunks`, each next one built (its batches read and cut) while the caller uploads and
    follows the one before: a job takes seconds to minutes, so the next chunk is ready when it
    ends.

    A chunk built ahead is only held in memory: nothing is recorded of it until its turn comes
    (the caller records a chunk just before uploading it), so a run stopped or killed before
    that leaves its rows not done, and the next run cuts and uploads them once. The caller
    settles the jobs an earlier run left open before it starts this, so no row of an open job
    is cut again.
    """
    ahead: asyncio.Future[Chunk | None] = asyncio.ensure_future(anext(chunks, None))
    try:
        while (chunk := await asyncio.shield(ahead)) is not None:
            ahead = asyncio.ensure_future(anext(chunks, None))
            yield chunk
    finally:
        # A batch being read in a thread cannot be stopped: let it end before anyone closes
        # the inputs under it; its chunk is dropped unrecorded.
        await asyncio.gather(ahead, return_exceptions=True)
        await chunks.aclose()  # type: ignore[attr-defined]
