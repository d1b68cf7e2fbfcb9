"""Inputs of one run that hold the same rows: two copies under two names, a file and a grown
copy of it, cumulative daily snapshots. Each row of content is sent once, whatever the names.

An input is contained in another when their contents (decompressed, for gzip and zstd) are
equal, or when its content is the start of the other's: the other is it, grown. Parquet is
contained only when equal (it does not grow by appending). Rows are never compared one by one,
and two unrelated files never meet: only whole contents and their first bytes are compared.
"""

from __future__ import annotations

from collections.abc import Callable

from importer.inputs import common
from importer.inputs.bytescan import read_prefixes
from importer.inputs.cloud import CloudInput
from importer.inputs.common import InputFile, Prefix
from importer.state.facts import Admission


def containers(sources: list[InputFile]) -> dict[int, list[int]]:
    """For each input (by index), the inputs that contain it, longest first; of two equal
    contents, the one named first contains the other.

    A prefix is checked on the longer input's first bytes at the shorter one's size: from the
    byte pass's probes where it took them, else read again. An input of a full block or more
    can only start another whose first block hashes the same, so unrelated large files are
    never read again; a shorter one costs at most one block of reading."""
    held: dict[int, list[int]] = {index: [] for index in range(len(sources))}
    for index, source in enumerate(sources):
        held[index] = [
            other
            for other in range(index)
            if sources[other].fingerprint == source.fingerprint and source.size
        ]
    text = [i for i, s in enumerate(sources) if s.format != "parquet" and s.size]
    for longer in text:
        outer = sources[longer]
        if isinstance(outer, CloudInput) and outer.downloads is None:
            # An object known whole and not downloaded: the inputs that start like it were
            # registered as parts of it when it was sent (see admit_inputs), so are known.
            continue
        shorter = [
            i for i in text if sources[i].size < outer.size and _may_start(outer, sources[i])
        ]
        if not shorter:
            continue
        probes: dict[int, Prefix] = dict(outer.prefixes or {})
        missing = {sources[i].size for i in shorter} - probes.keys()
        if missing:
            probes.update(read_prefixes(outer, missing))
        for inner in shorter:
            probe = probes.get(sources[inner].size)
            if probe is not None and probe.fingerprint == sources[inner].fingerprint:
                held[inner].append(longer)
    for hosts in held.values():
        hosts.sort(key=lambda other: (-sources[other].size, other))
    return held


def _may_start(outer: InputFile, inner: InputFile) -> bool:
    """Whether `inner` can be the start of `outer` as far as their block hashes tell: the
    running hash after each whole block of `inner` is `outer`'s too (of an input not read
    again, only the first block's is known)."""
    known = min(inner.size // common.CHUNK_BYTES, len(inner.blocks), len(outer.blocks))
    return inner.blocks[:known] == outer.blocks[:known]


def admit_all(
    sources: list[InputFile],
    admit: Callable[[list[int]], dict[int, Admission]],
) -> dict[int, Admission]:
    """What each input is to the run: the inputs no other one contains are given to `admit`
    (the checkpoint's judgement, by index, in one call), and each contained one is "contained"
    in the longest of its containers that is sent. An input whose every container was left out
    as changed is judged itself, in the next round."""
    hosts = containers(sources)
    found: dict[int, Admission] = {}
    pool = list(range(len(sources)))
    while pool:
        waiting = set(pool)
        tops = [i for i in pool if not any(h in waiting for h in hosts[i])]
        found.update(admit(tops))
        sent = {i for i in tops if found[i].kind != "changed"}
        for index in pool:
            if index in found:
                continue
            host = next((h for h in hosts[index] if h in sent), None)
            if host is not None:
                found[index] = Admission("contained", within=sources[host].name)
        pool = [i for i in pool if i not in found]
    return found
