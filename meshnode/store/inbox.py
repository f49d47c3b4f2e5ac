"""The inbox's rows: notices kept in order, and how far the owner has read them.

A notice (:class:`meshnode.inbox.Notice`) is stored once per
``(kind, record, about)`` and numbered by ``seq`` in the order it was found;
``seq`` is never reused, so "everything after ``seq``" is a stable cursor for
the inbox (``local_state['inbox_seen']``) and for the event stream's
``Last-Event-ID``. Only the newest :data:`MAX_NOTICES` are kept: a flood of
proposals from strangers pushes out old notices, never records.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from meshnode.inbox import Notice

#: The inbox keeps at most this many notices (the oldest go first).
MAX_NOTICES = 10_000
_SEEN_KEY = "inbox_seen"


@dataclass(frozen=True)
class StoredNotice:
    """A notice as the inbox keeps it: its number ``seq`` and when it was found (``at``, ms)."""

    seq: int
    at: int
    notice: Notice


def add_notices(conn: sqlite3.Connection, notices: Sequence[Notice], at: int) -> list[StoredNotice]:
    """Store the notices not stored yet (in one transaction the caller opened); return them numbered."""
    added = []
    for n in notices:
        cur = conn.execute(
            "INSERT OR IGNORE INTO inbox (at, kind, record, about, peer) VALUES (?, ?, ?, ?, ?)",
            (at, n.kind, n.record, n.about, n.peer),
        )
        if cur.rowcount:
            added.append(StoredNotice(int(cur.lastrowid or 0), at, n))
    if added:
        conn.execute(
            "DELETE FROM inbox WHERE seq <= (SELECT max(seq) FROM inbox) - ?",
            (MAX_NOTICES,),
        )
    return added


def notices(
    conn: sqlite3.Connection, *, after: int = 0, limit: int = 100, newest_first: bool = False
) -> list[StoredNotice]:
    """Notices numbered after ``after``: the oldest ``limit`` of them, or the newest if ``newest_first``."""
    order = "DESC" if newest_first else "ASC"
    rows = conn.execute(
        f"SELECT seq, at, kind, record, about, peer FROM inbox WHERE seq > ? ORDER BY seq {order} LIMIT ?",
        (after, limit),
    ).fetchall()
    return [
        StoredNotice(seq, at, Notice(kind, bytes(record), bytes(peer), bytes(about)))
        for seq, at, kind, record, about, peer in rows
    ]


def count_after(conn: sqlite3.Connection, after: int) -> int:
    """How many notices are numbered after ``after``."""
    return int(conn.execute("SELECT count(*) FROM inbox WHERE seq > ?", (after,)).fetchone()[0])


def last_seq(conn: sqlite3.Connection) -> int:
    """The number of the newest notice (0 if none was ever kept)."""
    row = conn.execute("SELECT max(seq) FROM inbox").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def seen(conn: sqlite3.Connection) -> int:
    """How far the owner has read: the ``seq`` of the last notice shown by ``meshnode inbox``."""
    row = conn.execute("SELECT value FROM local_state WHERE key = ?", (_SEEN_KEY,)).fetchone()
    return int(row[0]) if row else 0


def mark_seen(conn: sqlite3.Connection, seq: int) -> None:
    """Record that the owner has read up to ``seq`` (never moves back)."""
    conn.execute(
        "INSERT INTO local_state (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
        (_SEEN_KEY, seq),
    )
