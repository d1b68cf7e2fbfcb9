"""Calls that cannot be undone (deleting users or companies) run only when the caller said so:
`--yes`, or an answer on a terminal. The CLI asks; this module decides and refuses."""

from __future__ import annotations

from collections.abc import Callable

from importer.destinations.base import Action, Destination, deleted_things
from importer.errors import OptionError


def confirm_destructive(
    destination: Destination,
    action: Action,
    *,
    yes: bool,
    ask: Callable[[str], bool] | None,
    where: str,
) -> None:
    """Refuse to run a destructive `action` unless `yes`, or `ask` (None: nothing can ask, as
    when stdin is not a terminal) returns True for the question. `where` names the endpoint."""
    if not action.destructive or yes:
        return
    things = deleted_things(action)
    question = (
        f"{action.name} deletes {things} in {destination.title} at {where}, which cannot be "
        f"undone (run with --dry-run first to count them). Delete them?"
    )
    if ask is None:
        raise OptionError(
            f"{action.name} deletes {things} in {destination.title}, which cannot be undone: "
            "add --yes to confirm (nothing can ask here, as stdin is not a terminal)"
        )
    if not ask(question):
        raise OptionError(f"not confirmed: nothing was deleted ({action.name} needs a yes)")
