"""The content fingerprint's cost: blake2b (16-byte digest, today's), sha256 and xxhash's
xxh3_128 over the same bytes, in the byte pass's 1 MiB blocks, with a copy of the running hash
per block as the byte pass takes it. Prints MB/s and the ratio to blake2b; run:

    .venv/bin/python tests/bench/bench_hash.py [MB]
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any

BLOCK = 1 << 20


def _hashers() -> dict[str, Callable[[], Any]]:
    found: dict[str, Callable[[], Any]] = {
        "blake2b-128": lambda: hashlib.blake2b(digest_size=16),
        "sha256": hashlib.sha256,
    }
    try:
        import xxhash

        found["xxh3_128"] = xxhash.xxh3_128
    except ImportError:
        print("xxhash not installed: pip install xxhash", file=sys.stderr)
    return found


def main() -> None:
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    blocks = [os.urandom(BLOCK) for _ in range(64)]
    rounds = megabytes // len(blocks) or 1
    best: dict[str, float] = {}
    for _ in range(3):  # best of three, the hashers taking turns
        for name, make in _hashers().items():
            started = time.perf_counter()
            for _ in range(rounds):
                digest = make()
                for block in blocks:
                    digest.update(block)
                    digest.copy().digest()
                digest.hexdigest()
            elapsed = time.perf_counter() - started
            best[name] = min(best.get(name, elapsed), elapsed)
    size = rounds * len(blocks)
    base = best["blake2b-128"]
    for name, elapsed in best.items():
        print(f"{name:12} {size / elapsed:8.0f} MB/s  {base / elapsed:5.2f}x blake2b")


if __name__ == "__main__":
    main()
