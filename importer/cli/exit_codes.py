"""The exit codes, the contract other tools rely on (DESIGN.md): 0 all delivered (or all valid); 1 a
fatal error the user can fix; 2 a usage error (click's); 3 finished, but rows were rejected or
undeliverable; 130 interrupted."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


EXIT_OK = 0


EXIT_FATAL = 1


EXIT_PROBLEMS = 3


EXIT_INTERRUPTED = 130
