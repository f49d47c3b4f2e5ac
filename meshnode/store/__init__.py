"""Persistent storage of records and the state derived from them (SQLite).

See :mod:`meshnode.store.sqlite` for the rules and :mod:`meshnode.store.schema`
for the tables.
"""

from meshnode.store.schema import SCHEMA_VERSION
from meshnode.store.sqlite import ITEM_TYPES, AddResult, LiveItem, Store, fts_query

__all__ = ["ITEM_TYPES", "SCHEMA_VERSION", "AddResult", "LiveItem", "Store", "fts_query"]
