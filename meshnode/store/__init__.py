"""Persistent storage of records and the state derived from them (SQLite).

:class:`Store` (in :mod:`meshnode.store.sqlite`) is the one face of the
store; its module docstring names the module that does each job.
:mod:`meshnode.store.schema` holds the tables.
"""

from meshnode.store.derive import ITEM_TYPES, LiveItem
from meshnode.store.quota import QuotaPolicy, Quotas
from meshnode.store.schema import SCHEMA_VERSION
from meshnode.store.search import fts_query
from meshnode.store.sqlite import Store
from meshnode.store.write import AddResult

__all__ = [
    "ITEM_TYPES",
    "SCHEMA_VERSION",
    "AddResult",
    "LiveItem",
    "QuotaPolicy",
    "Quotas",
    "Store",
    "fts_query",
]
