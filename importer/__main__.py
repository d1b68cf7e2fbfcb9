from __future__ import annotations

from importer.cli import main

main()
