"""Operating sagas: find them with one query, and act on many at once.

The CLI's ``list`` and the dashboard sit on :func:`find` and :func:`count`; see
:mod:`sagakit.operations._query` for which conditions the store answers and which read logs.
"""

from sagakit.operations._query import Page, Query, SagaView, count, cursor_of, find, position_of

__all__ = ["Page", "Query", "SagaView", "count", "cursor_of", "find", "position_of"]
