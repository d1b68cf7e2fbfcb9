"""An endpoint that refuses everything is wrong, not every row: while nothing has been accepted,
the first refusals that are not the API's own (delivery.send marks them `foreign`) are held back
rather than dead-lettered; when REFUSALS_TO_STOP of them come in a row the run stops with a
message and leaves those rows unmarked for the next run. Anything accepted, or a refusal in
the API's own words (a 400 with its error body), settles the question and lets them through."""

from __future__ import annotations

from collections.abc import Callable

from importer.model import Result

REFUSALS_TO_STOP = 20


class RefusalGuard:
    """Wraps a sender's `on_result`; `stop(reason, status)` ends the run."""

    def __init__(
        self,
        on_result: Callable[[Result], None],
        stop: Callable[[str, int | None], None],
        *,
        endpoint: str,
        example_endpoint: str,
    ) -> None:
        self._on_result = on_result
        self._stop = stop
        self._endpoint = endpoint
        self._example = example_endpoint
        self._held: list[Result] | None = []
        self._stopped = False

    def record(self, result: Result) -> None:
        """Pass a result on, or hold it while the endpoint is in question."""
        held = self._held
        if self._stopped:
            if result.delivered or not result.foreign:
                self._on_result(result)
            return  # a refusal in flight when the run stopped: unmarked as the others
        if held is None:
            self._on_result(result)
            return
        if result.delivered or not result.foreign:
            self.release()
            self._on_result(result)
            return
        held.append(result)
        if len(held) >= REFUSALS_TO_STOP:
            first = held[0]
            self._stopped = True  # the rows stay unmarked: the next run sends them
            self._stop(
                f"the endpoint looks wrong: its first {len(held)} answers all refused the "
                f"request and none was accepted (e.g. HTTP {first.status}: {first.error}); is "
                f"--endpoint the API's base URL (such as {self._example}, not {self._endpoint})? "
                "Nothing was marked: the next run sends these rows again",
                first.status,
            )

    def release(self) -> None:
        """Pass on what was held (the endpoint answered as the API does, or the run ended
        before the question was settled: those rows are dead letters as any other)."""
        if self._stopped:
            return
        held, self._held = self._held, None
        for result in held or ():
            self._on_result(result)
