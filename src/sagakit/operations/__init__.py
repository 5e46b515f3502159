"""Operating sagas: find them with one query, and act on many at once.

The CLI's ``list`` and the dashboard sit on :func:`find` and :func:`count`; see
:mod:`sagakit.operations._query` for which conditions the store answers and which read logs.
"""

from sagakit.operations._bulk import BulkOutcome, act_on_each, matches
from sagakit.operations._query import Page, Query, SagaView, count, cursor_of, find, position_of
from sagakit.operations._versions import VersionInfo, versions

__all__ = [
    "BulkOutcome",
    "Page",
    "Query",
    "SagaView",
    "VersionInfo",
    "act_on_each",
    "count",
    "cursor_of",
    "find",
    "matches",
    "position_of",
    "versions",
]
