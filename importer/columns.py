"""The names of the columns that pass between stages, in one place.

    read      LINE (the row's line), and for rejects RULE, COLUMN, ERROR and RAW (the text of a
              line that could not be parsed); REJECT_META heads a rejects file's rows
    validate  USER and EVENT of each valid row, for the duplicate report
    payload   BODY: the JSON text of each request body
    delivery  METHOD and PATH of each request, ROUTE (a stable hash of its user, see
              checks/shard.py) for the sender process that sends it and the shard it belongs to

Each stage's own working columns stay private to it; these are the contract.
"""

from __future__ import annotations

LINE = "__line"
RULE = "__rule"
ERROR = "__error"
COLUMN = "__column"
RAW = "_raw"
# A rejects file carries these before the row's own columns; reading it again drops them.
REJECT_META = ("_file", "_line", "_rule", "_error")
USER = "__user"
EVENT = "__event"
BODY = "__body"
METHOD = "__method"
PATH = "__path"
ROUTE = "__route"
