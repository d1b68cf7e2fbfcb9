from __future__ import annotations

from importer.entry import main

main()
