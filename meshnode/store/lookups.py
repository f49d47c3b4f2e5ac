"""The look-ups into the store's tables that writing, reading and checking share.

Each takes an open connection; the caller holds the store's lock (and, when
writing, its transaction).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from meshnode.errors import StoreError
from meshnode.ids import short_id
from meshnode.records import Record, decode_record
from meshnode.store.connection import select_in
from meshnode.store.derive import ItemHead

_SELECT_HEADS = "SELECT id, type, author, swarm, ts, seq, target FROM records"


def present_ids(conn: sqlite3.Connection, ids: Sequence[bytes]) -> set[bytes]:
    """The ids of ``ids`` that are stored."""
    return {r[0] for r in select_in(conn, "SELECT id FROM records WHERE id IN ({})", ids)}


def pruned_ids(conn: sqlite3.Connection, ids: Sequence[bytes]) -> set[bytes]:
    """The ids of ``ids`` that pruning deleted."""
    return {r[0] for r in select_in(conn, "SELECT id FROM pruned WHERE id IN ({})", ids)}


class StoredTarget(NamedTuple):
    """What a stored record is as the target of an update or withdraw."""

    type: str
    author: bytes
    swarm: bytes


def stored_targets(conn: sqlite3.Connection, ids: Sequence[bytes]) -> dict[bytes, StoredTarget]:
    """The stored records of ``ids`` as targets: id -> (type, author, swarm)."""
    sql = "SELECT id, type, author, swarm FROM records WHERE id IN ({})"
    return {row[0]: StoredTarget(*row[1:]) for row in select_in(conn, sql, ids)}


def load_numbered(conn: sqlite3.Connection, record_id: bytes) -> tuple[int, Record]:
    """A stored record and its ``records.n``; :class:`StoreError` if it is not there."""
    row = conn.execute("SELECT n, raw FROM records WHERE id = ?", (record_id,)).fetchone()
    if row is None:
        raise StoreError(f"record {short_id(record_id)} vanished from the store")
    return row[0], decode_record(row[1])


def load_record(conn: sqlite3.Connection, record_id: bytes) -> Record:
    """A stored record; :class:`StoreError` if it is not there."""
    return load_numbered(conn, record_id)[1]


def heads_naming(conn: sqlite3.Connection, targets: Sequence[bytes] | None) -> dict[bytes, list[ItemHead]]:
    """The stored updates and withdraws by the id they name: those naming ``targets``, or all."""
    if targets is None:
        rows: Iterable[tuple[Any, ...]] = conn.execute(_SELECT_HEADS + " WHERE target IS NOT NULL")
    else:
        rows = select_in(conn, _SELECT_HEADS + " WHERE target IN ({})", targets)
    naming: dict[bytes, list[ItemHead]] = defaultdict(list)
    for row in rows:
        naming[row[6]].append(ItemHead(*row))
    return naming
