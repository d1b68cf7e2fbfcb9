"""Shards: the part of a job one of N machines sends, chosen by a stable hash of each row's user.

The hash is BLAKE2b with an 8-byte digest (hashlib's `blake2b(data, digest_size=8)`, no key,
salt or person) of the user id's UTF-8 text, read as an unsigned big-endian integer `h`. It is
the same on every machine, OS, Python and Polars version, unlike Python's `hash()` (salted per
process) and Polars' `hash()` (documented as free to change between versions).

    ROUTE (the sender process, the user key of ordered sending) = h >> 1, 63 bits, never negative
    shard                                                         = (h >> 32) % N

The shard takes the digest's first 4 bytes and a sender process is ROUTE % workers: their low
bits are independent of those 4 bytes, so all N x workers pairs get users (with the same bits
in both, `--shard K/3 --workers 3` would send through one process of three).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import polars as pl

from importer.errors import MappingError

# ROUTE is h >> 1, so ROUTE // 2**31 is h >> 32: the first 4 bytes of the digest.
_SHARD_SHIFT = 2**31

__all__ = ["Shard", "parse_shard", "shard_of", "user_hashes"]


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count`, numbered from 0 like a Kubernetes Indexed Job's
    JOB_COMPLETION_INDEX."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise MappingError(f"shard {self.label}: N must be at least 1")
        if not 0 <= self.index < self.count:
            raise MappingError(
                f"shard {self.label}: K must be {_choices(self.count)} "
                "(shards are numbered from 0, like JOB_COMPLETION_INDEX)"
            )

    @property
    def label(self) -> str:
        """`K/N`, as the option takes it."""
        return f"{self.index}/{self.count}"

    @property
    def state_name(self) -> str:
        """The default state directory's name for this shard: `shard-K-of-N`."""
        return f"shard-{self.index}-of-{self.count}"

    def mask(self, route: pl.Expr) -> pl.Expr:
        """True on the rows of this shard, from their ROUTE."""
        return shard_of(route, self.count) == self.index


def _choices(count: int) -> str:
    """The values K may take, in words: `0`, `0 or 1`, `0, 1 or 2`, `from 0 to 9`."""
    if count <= 3:
        values = [str(k) for k in range(count)]
        return values[0] if count == 1 else f"{', '.join(values[:-1])} or {values[-1]}"
    return f"from 0 to {count - 1}"


def parse_shard(text: str) -> Shard:
    """`K/N` as a Shard; a MappingError says what is wrong with any other text."""
    # Blanks around either part are ignored alike (" 0/3" and "1 /3"), none inside a number.
    found = re.fullmatch(r"\s*(-?[0-9]+)\s*/\s*([0-9]+)\s*", text)
    if found is None:
        raise MappingError(
            f"a shard is K/N, such as 0/3 (shard K of N, K from 0 to N-1), not {text!r}"
        )
    return Shard(int(found[1]), int(found[2]))


def shard_of(route: pl.Expr, count: int) -> pl.Expr:
    """The shard (0 to `count` - 1) of each row, from its ROUTE."""
    return (route // _SHARD_SHIFT) % count


def user_hashes(ids: pl.Series) -> pl.Series:
    """ROUTE for each user id text: BLAKE2b-64 of its UTF-8 bytes >> 1 (see the module's
    docstring); 0 where there is no id.

    hashlib is a Python call per value, so it runs once per distinct id of the batch and a join
    takes the result back to the rows.
    """
    distinct = ids.drop_nulls().unique()
    blake2b = hashlib.blake2b
    digests = [blake2b(text.encode(), digest_size=8).digest() for text in distinct.to_list()]
    hashes = pl.Series(digests, dtype=pl.Binary).bin.reinterpret(dtype=pl.UInt64, endianness="big")
    table = pl.DataFrame({"id": distinct, "route": (hashes // 2).cast(pl.Int64)})
    routes = ids.rename("id").to_frame().join(table, on="id", how="left", maintain_order="left")
    return routes["route"].fill_null(0).rename(ids.name)
