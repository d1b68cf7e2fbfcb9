"""What a caller asks of a run, before anything is read: what to read (`Reading`), how to send (`Sending`, which becomes the delivery's options once the mapping says where), and what the caller sees (`Front`); with the checks of options that no mapping is needed for."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from importer.api.settings import (
    MAX_WORKERS,
    default_poll_s,
    delivery_options,
    order_time_for,
    ordered,
)
from importer.checks.shard import Shard
from importer.checks.validate import Window, window_column, window_refusal
from importer.delivery.deliver import DeliveryControl
from importer.delivery.options import DeliveryOptions
from importer.destinations import Destination, get_destination
from importer.errors import OptionError
from importer.inputs.common import DEFAULT_BATCH_ROWS
from importer.jobfile.parse import Step, is_job_file
from importer.jobfile.record import step_state
from importer.jobfile.steps import per_step
from importer.mapping.file import Mapping
from importer.pipeline.run import (
    RunOptions,
)
from importer.progress import DeliveryProgress, NoProgress, Progress
from importer.state.layout import DEFAULT_STATE

ORDERS = ("file", "time")


class Deliver(Protocol):
    """Runs a delivery to its end and returns what it returned: the CLI's signal frame, or the
    Python API's runner."""

    def __call__(
        self, job: Callable[[DeliveryControl], Coroutine[Any, Any, Any]], /
    ) -> Any: ...  # pragma: no cover - a protocol


def _ignore(*_: Any, **__: Any) -> None:
    """A hook nobody listens to."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Front:
    """What the caller sees of a run: read and delivery progress, where delivery runs, and
    hooks: `start(command, inputs, **fields)` before the first row is read, `step(name,
    status, **details)` as a job file's steps start and end, `warning(message)` for what a
    caller should read before sending starts."""

    deliver: Deliver
    read: Progress = dataclasses.field(default_factory=NoProgress)
    delivery: DeliveryProgress = dataclasses.field(default_factory=DeliveryProgress)
    start: Callable[..., None] = _ignore
    step: Callable[..., None] | None = None
    warning: Callable[[str], None] = _ignore
    # Asks the person running it to confirm what cannot be undone; None: nobody can be asked.
    ask: Callable[[str], bool] | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Sending:
    """How a caller asked to send, before the mapping says where: the options of `importer
    run` and `importer replay` that reach delivery. The token, when given, never shows in a
    repr."""

    endpoint: str | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    token_file: Path | None = None
    fresh: bool = False
    dead_letter: Path | None = None
    concurrency: int = 32
    rate: float | None = None
    max_retries: int = 8
    timeout: float = 30.0
    workers: int | None = None
    checkpoint: bool = True
    poll_interval: float | None = None
    job_wait: float = 3600.0
    per_user_order: bool = False
    order: str = "file"
    # Calls that cannot be undone (deletions) run only when confirmed: here, or by Front.ask.
    yes: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.workers is not None and not 1 <= self.workers <= MAX_WORKERS:
            problems.append(f"workers must be from 1 to {MAX_WORKERS}, not {self.workers!r}")
        if self.order not in ORDERS:
            problems.append(f"order must be one of {', '.join(ORDERS)}, not {self.order!r}")
        if self.poll_interval is not None and not self.poll_interval >= 0.05:
            problems.append(f"poll_interval must be at least 0.05 s, not {self.poll_interval!r}")
        if not self.job_wait >= 1.0:
            problems.append(f"job_wait must be at least 1 s, not {self.job_wait!r}")
        if self.token is not None and self.token_file is not None:
            problems.append("give the token or a token file, not both")
        if problems:
            raise OptionError("; ".join(problems))

    def _options(
        self,
        destination: Destination,
        state_dir: Path,
        dead_letter: Path | None,
        *,
        workers: int | None = 1,
        checkpoint: bool = True,
        mapping_options: dict[str, object] | None = None,
    ) -> DeliveryOptions:
        return delivery_options(
            endpoint=self.endpoint,
            destination=destination,
            token_file=self.token_file,
            token=self.token,
            state_dir=state_dir,
            fresh=self.fresh,
            dead_letter=dead_letter,
            concurrency=self.concurrency,
            rate=self.rate,
            max_retries=self.max_retries,
            timeout=self.timeout,
            workers=workers,
            checkpoint=checkpoint,
            options=mapping_options,
        )

    def _mapping_options(
        self, mapping: Mapping, state_dir: Path, dead_letter: Path | None
    ) -> DeliveryOptions:
        return self._options(
            mapping.destination,
            state_dir,
            dead_letter,
            workers=self.workers,
            checkpoint=self.checkpoint,
            mapping_options=mapping.options,
        )

    def for_run(self, mapping: Mapping, state_dir: Path) -> DeliveryOptions:
        """The delivery of one run of `mapping` kept in `state_dir`."""
        order_time = order_time_for(
            mapping.action, per_user_order=self.per_user_order, order=self.order
        )
        delivery = self._mapping_options(mapping, state_dir, self.dead_letter)
        return dataclasses.replace(
            delivery,
            poll_s=self.poll_interval or default_poll_s(delivery.endpoint),
            busy_wait_s=self.job_wait,
            order_time=order_time,
            send=dataclasses.replace(delivery.send, per_user_order=self.per_user_order),
        )

    def for_step(self, step: Step, state_dir: Path) -> DeliveryOptions:
        """The delivery of one step of a job file kept in `state_dir`: its own state directory
        and dead letters, and the order kept where its action can keep it."""
        delivery = self._mapping_options(
            step.mapping, step_state(state_dir, step.name), per_step(self.dead_letter, step.name)
        )
        return ordered(
            dataclasses.replace(
                delivery,
                poll_s=self.poll_interval or default_poll_s(self.endpoint),
                busy_wait_s=self.job_wait,
                rate_dir=state_dir,  # the steps share the API's window, so its record
            ),
            step.mapping.action,
            per_user_order=self.per_user_order,
            order=self.order,
        )

    def for_replay(self, destination: str, state_dir: Path) -> DeliveryOptions:
        """The delivery of a payload file for `destination` (one sender process)."""
        return self._options(get_destination(destination), state_dir, self.dead_letter)


def window_of(since: datetime | None, until: datetime | None) -> Window | None:
    """--since and --until as a Window; None when neither is given."""
    if since is None and until is None:
        return None
    if since is not None and until is not None and since >= until:
        raise OptionError(
            f"--since {since.isoformat()} is not before --until {until.isoformat()}: "
            "no row could be kept"
        )
    return Window(since=since, until=until)


def check_window(window: Window | None, mapping: Mapping, step: str | None = None) -> None:
    """A usage error when the window is given for rows that have no time."""
    if window is not None and window_column(mapping) is None:
        where = "" if step is None else f"step {step}: "
        raise OptionError(where + window_refusal(mapping))


def job_file_path(inputs: Sequence[Path], mapping_path: Path | None) -> Path | None:
    """The job file INPUTS names, if it is one; mixing a job file with --mapping or with
    inputs, or inputs without --mapping, is a usage error."""
    jobs = [path for path in inputs if is_job_file(path)]
    if not jobs:
        if mapping_path is None:
            raise OptionError(
                "Missing option '--mapping' / '--schema' (or give a job file: JOB.toml)"
            )
        return None
    if mapping_path is not None:
        raise OptionError(
            f"{jobs[0]} is a job file, which names each step's mapping: leave out --mapping"
        )
    if len(inputs) > 1:
        raise OptionError(f"{jobs[0]} is a job file: give it alone, its steps name inputs")
    return jobs[0]


def default_state(shard: Shard | None) -> Path:
    """The state directory when none is named: .importer/, or a shard's own below it."""
    return DEFAULT_STATE if shard is None else DEFAULT_STATE / shard.state_name


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """What a run reads and how: the options of `validate` and `run` before any is sent."""

    inputs: tuple[Path, ...]
    mapping: Path | None = None
    rejects: Path | None = None
    report: Path | None = None
    # The one-page HTML picture of the run (--report-html), guarded like the other outputs.
    report_html: Path | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS
    shard: Shard | None = None
    window: Window | None = None

    def options(self, mapping: Mapping) -> RunOptions:
        """The run's options for `mapping`."""
        return RunOptions(
            inputs=self.inputs,
            mapping=mapping,
            rejects_path=self.rejects,
            batch_rows=self.batch_rows,
            shard=self.shard,
            window=self.window,
        )
