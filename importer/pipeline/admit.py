"""How a run admits its inputs before anything is sent: each is registered with the checkpoint as new, known, grown, changed or contained in another (overlapping inputs are sent once), and the summary says what each input was."""

from __future__ import annotations

from importer.delivery.options import DeliveryOptions
from importer.inputs.bytescan import read_prefixes
from importer.inputs.cloud import place_of
from importer.inputs.common import InputFile
from importer.outcome import Summary
from importer.pipeline.overlaps import admit_all
from importer.state.checkpoint import CheckpointLog
from importer.state.facts import Admission, InputFacts, RunIdentity


def admit_inputs(
    sources: list[InputFile],
    delivery: DeliveryOptions,
    identity: RunIdentity,
    *,
    resend_changed: bool = False,
) -> tuple[list[tuple[InputFile, Admission]], list[str]]:
    """Register every input with the checkpoint before anything is sent, and say what each is:
    known, grown (it takes over the done rows of the content it starts with), new, changed
    (same path as a known input, other content: left out unless `resend_changed`), or
    contained (its content is another input's of this run, or the start of it: see
    overlaps.py; left out, its rows are sent as that input's).

    Files whose content is known are registered first, so that a renamed file has moved before
    the others are judged by path. The log is closed again: delivery opens it for itself. Also
    returns the log's warnings (a damaged log is repaired by this first opening).
    """
    with CheckpointLog.open(delivery.state_dir, job=identity, fresh=delivery.fresh) as log:
        known = {item.fingerprint for item in log.known_inputs()}

        def admit(indices: list[int]) -> dict[int, Admission]:
            found: dict[int, Admission] = {}
            for index in sorted(indices, key=lambda i: sources[i].fingerprint not in known):
                source = sources[index]
                open_line = _open_line(source)
                if source.whole_before:  # not read: the line the log knows
                    open_line = next(
                        (
                            k.open_line
                            for k in log.known_inputs()
                            if k.fingerprint == source.fingerprint
                        ),
                        None,
                    )
                facts = InputFacts(size=source.size, path=place_of(source), open_line=open_line)
                prefixes = source.prefixes
                if source.whole_before:  # known: its prefixes are not looked at
                    prefixes = {}
                elif prefixes is None:  # opened without probes: look at this path's past contents
                    sizes = [
                        item.size
                        for item in log.known_inputs()
                        if item.path == facts.path and item.size and item.size < source.size
                    ]
                    prefixes = read_prefixes(source, sizes)
                found[index] = log.admit(
                    source.name, source.fingerprint, facts, prefixes, resend_changed=resend_changed
                )
            return found

        found = admit_all(sources, admit)
        _register_parts(log, sources, found)
    return [(source, found[index]) for index, source in enumerate(sources)], log.warnings


def _register_parts(
    log: CheckpointLog, sources: list[InputFile], found: dict[int, Admission]
) -> None:
    """Register each input contained in a longer one as the start of it: it takes over that
    one's done lines up to its own last line, as they are done, so that a later run knows it
    by its fingerprint even when the longer one is not read again (a snapshot kept beside the
    next, or an object not downloaded again). An equal content needs nothing: it is known."""
    by_name = {source.name: source for source in sources}
    known = {item.fingerprint: item for item in log.known_inputs()}
    for index, admission in found.items():
        source = sources[index]
        host = by_name.get(admission.within or "")
        if admission.kind != "contained" or host is None or source.fingerprint in known:
            continue
        base = known.get(host.fingerprint)
        if base is None or source.whole_before:
            continue
        # The line of its last row (a JSONL line is one; CSV rows count from the header's 1).
        last = source.lines + source.ends_open if source.format == "jsonl" else source.records + 1
        facts = InputFacts(size=source.size, path=place_of(source), open_line=_open_line(source))
        log.register_input(source.name, source.fingerprint, facts=facts, grows=(base.id, last))


def without_overlaps(sources: list[InputFile]) -> list[tuple[InputFile, Admission]]:
    """What each input is to a run without a checkpoint: new, or contained in another."""
    found = admit_all(sources, lambda indices: {i: Admission("new") for i in indices})
    return [(source, found[index]) for index, source in enumerate(sources)]


def to_read(source: InputFile, admission: Admission) -> bool:
    """Whether an input's rows are read and sent: not a changed or a contained one, nor one
    whose every row the checkpoint knows as handled (not even profiled: see open_inputs)."""
    if admission.kind in ("changed", "contained"):
        return False
    if source.whole_before:
        if admission.kind != "known":
            raise AssertionError(f"{source.name}: known whole, yet admitted as {admission.kind}")
        return False
    return True


def _open_line(source: InputFile) -> int | None:
    """The line of the last row when the content does not end in a newline: it may be cut short
    (a log being written), and a later, grown file may go on with it."""
    if not source.ends_open or source.format == "parquet":
        return None
    return source.lines + 1 if source.format == "jsonl" else source.records + 1


def note_admissions(summary: Summary, admitted: list[tuple[InputFile, Admission]]) -> None:
    """Say in the summary what each input was to the checkpoint, and warn of a changed file."""
    status = {(s.name, s.fingerprint): admission for s, admission in admitted}
    for item in summary.inputs:
        admission = status.get((item["file"], item["fingerprint"]))
        if admission is not None:
            item["status"] = admission.kind
            if admission.kind == "grown" and admission.previous is not None:
                item["grew_from"] = admission.previous.fingerprint
    unread = [(s, a) for s, a in admitted if s.whole_before and a.kind == "known"]
    for source, admission in unread:
        summary.inputs.append(
            {"file": source.name, "fingerprint": source.fingerprint, "status": "known"}
        )
        # Its rows are done before as surely as if they had been read and looked up.
        if admission.previous is not None:
            summary.rows_skipped += admission.previous.delivered
            summary.rows_failed_before += admission.previous.failed
    if unread:
        summary.notes.append(
            f"{len(unread):,} input(s) known as sent whole before, unchanged (same size and "
            "content fingerprint): not read again"
        )
    for source, admission in admitted:
        before = admission.previous
        if admission.kind == "contained":
            summary.inputs.append(
                {
                    "file": source.name,
                    "fingerprint": source.fingerprint,
                    "status": "contained",
                    "within": admission.within,
                }
            )
            summary.notes.append(
                f"{source.name} holds the same rows as the start of {admission.within} (or all "
                "of it): they were sent once, as that file's"
            )
            continue
        if admission.kind == "grown" and admission.cut_line is not None and before is not None:
            summary.warnings.append(
                f"{source.name}: line {admission.cut_line} had no newline when it was sent (as "
                f"part of {before.name}) and goes on now: it was sent again, complete"
            )
        if admission.kind not in ("changed", "resent") or before is None:
            continue
        sent = f"{before.delivered:,} rows of it were sent before (content {before.fingerprint})"
        if admission.kind == "resent":
            summary.warnings.append(
                f"{source.name} changed since it was sent: {sent}; --resend-changed sent it "
                "again as a new input"
            )
            continue
        summary.inputs.append(
            {"file": source.name, "fingerprint": source.fingerprint, "status": "changed"}
        )
        summary.warnings.append(
            f"{source.name} changed since it was sent ({sent}) and is not a growth of it: "
            "nothing of it was sent. Check what changed; to send all of it as a new input, "
            "run again with --resend-changed"
        )
