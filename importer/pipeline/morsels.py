"""How Polars runs the pipeline's queries: in morsels of CHUNK_RECORDS rows, not of a batch.

Polars' streaming engine, the default in Polars 2, cuts a query's input into morsels of
POLARS_IDEAL_MORSEL_SIZE rows (100,000 unless set) and runs them on its threads. A batch was
100,000 rows (DEFAULT_BATCH_ROWS), so each validation, duplicate and body query was one morsel:
one core, with every intermediate column of 100,000 rows alive at once. In morsels of 10,000 rows
both cores of a small machine work and the intermediates are a tenth: in batches of 100,000 the
1M-row dry run took about 8% less time and peaked 57 MB lower (five alternated runs,
docs/performance.md). The setting is Polars' own (`pl.Config.set_streaming_chunk_size`),
process-wide: it holds while a run does and is put back after, and a caller who set the
variable keeps their value.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl

from importer.inputs.common import CHUNK_RECORDS

MORSEL_VARIABLE = "POLARS_IDEAL_MORSEL_SIZE"
MORSEL_ROWS = CHUNK_RECORDS

_lock = threading.Lock()
_runs = 0  # runs inside polars_morsels now (the API may run several at once, in threads)


@contextmanager
def polars_morsels() -> Iterator[None]:
    """Run the body with Polars' morsels at MORSEL_ROWS rows, unless the caller chose a size."""
    global _runs
    with _lock:
        ours = _runs > 0 or MORSEL_VARIABLE not in os.environ
        if ours:
            if _runs == 0:
                pl.Config.set_streaming_chunk_size(MORSEL_ROWS)
            _runs += 1
    try:
        yield
    finally:
        if ours:
            with _lock:
                _runs -= 1
                if _runs == 0:
                    pl.Config.set_streaming_chunk_size(None)
