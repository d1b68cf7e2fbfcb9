"""The exit codes, the contract other tools rely on (DESIGN.md): 0 all delivered (or all valid); 1 a
fatal error the user can fix; 2 a usage error (click's); 3 finished, but rows were rejected or
undeliverable; 130 interrupted."""

from __future__ import annotations

from importer.api.report import EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEMS

__all__ = ["EXIT_FATAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_PROBLEMS"]
