"""Checking that a store is whole: SQLite's own check, the full-text index, every derived table.

After a crash (the store is WAL with ``synchronous=NORMAL``: a batch is
stored whole or not at all) the derived tables must still agree with
``records``. :func:`integrity_problems` re-derives them from the records
(with :mod:`meshnode.store.derive`) and reports each disagreement as one
line. It reads everything: seconds for 100k records.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from meshnode.ids import short_id
from meshnode.records import decode_record
from meshnode.store.derive import ITEM_COLUMNS, ITEM_TYPES, derive_item, invalid_heads
from meshnode.store.lookups import heads_naming, load_record, stored_targets


def integrity_problems(conn: sqlite3.Connection, *, readonly: bool, limit: int) -> list[str]:
    """What is wrong with the store on ``conn`` (at most ``limit`` lines; none: it is whole).

    On a read-only connection the full-text index is not checked (FTS5 runs
    its check as an INSERT).
    """
    rows = conn.execute("PRAGMA integrity_check").fetchall()
    if [r[0] for r in rows] != ["ok"]:
        return [f"sqlite: {r[0]}" for r in rows[:limit]]
    problems: list[str] = []
    if not readonly:
        try:
            conn.execute("INSERT INTO items_fts (items_fts, rank) VALUES ('integrity-check', 1)")
        except sqlite3.DatabaseError as exc:
            problems.append(f"full-text index: {exc}")
    problems.extend(_counted_problems(conn))
    problems.extend(_item_problems(conn))
    problems.extend(_attestation_problems(conn))
    return problems[:limit]


#: Rules checked by counting the rows that break them: (SQL counting them, the problem's line).
_COUNTED_RULES = (
    (
        "SELECT count(*) FROM records r WHERE type IN ('offer', 'want')"
        " AND NOT EXISTS (SELECT 1 FROM items WHERE n = r.n)",
        "items: {} offers/wants have no item row",
    ),
    (
        "SELECT count(*) FROM (SELECT author, max(seq) AS m FROM records GROUP BY author) r"
        " LEFT JOIN author_seq s ON s.author = r.author WHERE s.seq IS NULL OR s.seq < r.m",
        "author_seq: {} authors lag behind their records",
    ),
    (
        "SELECT count(*) FROM (SELECT swarm, author, count(*) AS c, sum(length(raw)) AS b FROM records"
        " GROUP BY swarm, author) r LEFT JOIN usage u ON u.swarm = r.swarm AND u.author = r.author"
        " WHERE u.records IS NOT r.c OR u.bytes IS NOT r.b",
        "usage: {} (swarm, author) pairs are miscounted",
    ),
    (
        "SELECT count(*) FROM usage u"
        " WHERE NOT EXISTS (SELECT 1 FROM records WHERE swarm = u.swarm AND author = u.author)",
        "usage: {} (swarm, author) pairs have no records",
    ),
    (
        "SELECT count(*) FROM records r WHERE type = 'attest'"
        " AND NOT EXISTS (SELECT 1 FROM attest_keys WHERE n = r.n)",
        "attest_keys: {} attests have no key row",
    ),
)


def _counted_problems(conn: sqlite3.Connection) -> Iterator[str]:
    """Rows that break :data:`_COUNTED_RULES` (missing items rows, lagging ``author_seq``, usage, keys)."""
    for sql, problem in _COUNTED_RULES:
        count = conn.execute(sql).fetchone()[0]
        if count:
            yield problem.format(count)


def _item_problems(conn: sqlite3.Connection) -> Iterator[str]:
    """``items`` rows that differ from what their records derive, and heads invalid for their target."""
    naming = heads_naming(conn, None)
    for stored in conn.execute(f"SELECT {ITEM_COLUMNS} FROM items"):
        raw = conn.execute("SELECT raw FROM records WHERE n = ?", (stored[0],)).fetchone()
        if raw is None:
            yield f"items: row {stored[0]} has no record"
            continue
        original = decode_record(raw[0])
        if original.type not in ITEM_TYPES:
            yield f"items: {short_id(original.id)} is a {original.type} record"
            continue
        expected = derive_item(
            original, stored[0], naming.get(original.id, ()), lambda rid: load_record(conn, rid)
        )
        if tuple(stored) != expected:
            yield f"items: row of {short_id(original.id)} differs from its records"
    for target_id, target in stored_targets(conn, list(naming)).items():
        for h in invalid_heads(target, naming[target_id]):
            yield f"records: stored {h.type} {short_id(h.id)} is invalid for its target"


def _attestation_problems(conn: sqlite3.Connection) -> Iterator[str]:
    """``attestations`` rows that are not the latest stored attest of their key, or bad tombstones."""
    latest: dict[tuple[bytes, bytes, str], tuple[int, int, bytes]] = {}
    for rid, raw, ts, seq in conn.execute("SELECT id, raw, ts, seq FROM records WHERE type = 'attest'"):
        r = decode_record(raw)
        key = (r.author, r.body.subject, r.body.context)
        latest[key] = max(latest.get(key, (ts, seq, rid)), (ts, seq, rid))
    table = {
        (a, s, c): (ts, seq, rid, present)
        for a, s, c, ts, seq, rid, present in conn.execute(
            "SELECT author, subject, context, ts, seq, record_id,"
            " EXISTS (SELECT 1 FROM records WHERE id = a.record_id) FROM attestations a"
        )
    }
    for key, best in latest.items():
        got = table.get(key)
        if got is None or got[:3] != best:
            yield f"attestations: latest of {short_id(key[0])} about {short_id(key[1])} is wrong"
    for key, (_ts, _seq, rid, present) in table.items():
        if not present and key in latest:
            yield f"attestations: tombstone of {short_id(key[0])} hides stored attests"
        if not present and not conn.execute("SELECT 1 FROM pruned WHERE id = ?", (rid,)).fetchone():
            yield f"attestations: {short_id(rid)} is neither stored nor pruned"
