from __future__ import annotations

from importer.cli.entry import main

main()
