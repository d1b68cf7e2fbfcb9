"""Bulk CSV/JSONL importer and replayer for customer-engagement APIs."""

from __future__ import annotations

__version__ = "0.1.0"
