"""Bounded storage: quotas per author and per swarm, and a free-disk floor.

Any key can sign valid records, so a node that stored everything valid could
be filled by anyone. The store therefore bounds what it keeps of each swarm:

* per (swarm, author): :attr:`Quotas.author_records` records and
  :attr:`Quotas.author_bytes` bytes (encoded size);
* per swarm: :attr:`Quotas.swarm_records` and :attr:`Quotas.swarm_bytes`.

After each batch (in its transaction) every quota the batch touched is
checked, per author first, then per swarm. Over a quota, records are
**evicted**: those of the authors the owner distrusts (lowest score first),
then those of authors with no trust at all, the oldest first (by ``ts``).
Never evicted: the owner's own records and those of every author with a
positive trust score (:class:`QuotaPolicy`, given by the node from its trust
view). So a flood from fresh keys pushes out only itself and other strangers.

Evictions keep the derived state whole: an offer or want goes with every
update and withdraw naming it (an update or withdraw of a stored item is
never evicted alone), an attest with every attest of its (author, subject,
context), leaving the ``attestations`` row as a tombstone as pruning does.
Evicted ids go to ``pruned`` (refused if offered again) until their expiry,
or for :data:`EVICTION_MEMORY_MS` if they have none.

Free disk: below :attr:`Quotas.disk_floor_bytes` free on the store's file
system, the store keeps only the owner's own records and refuses everyone
else's (:class:`~meshnode.errors.StorageFull`, which is no fault of the
sender), until space is freed.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from meshnode.store.connection import execute_in, select_in

#: How long an evicted record that states no expiry stays refused.
EVICTION_MEMORY_MS = 30 * 24 * 3600 * 1000


@dataclass(frozen=True)
class Quotas:
    """The bounds of what a store keeps (defaults sized for one street, see the docstring)."""

    author_records: int = 1_000
    author_bytes: int = 1 << 20
    swarm_records: int = 20_000
    swarm_bytes: int = 32 << 20
    disk_floor_bytes: int = 256 << 20


@dataclass(frozen=True)
class QuotaPolicy:
    """Whose records are never evicted, and the order of the rest.

    ``scores``: trust scores of authors the owner has an opinion of (from its
    trust view); an author missing here scores 0. Protected: ``owner`` and
    every author scoring > 0.
    """

    owner: bytes | None = None
    scores: dict[bytes, float] = field(default_factory=dict)
    quotas: Quotas = field(default_factory=Quotas)

    def protected(self, author: bytes) -> bool:
        return author == self.owner or self.scores.get(author, 0.0) > 0


def free_bytes(path: str) -> int | None:
    """Free bytes for unprivileged users on the file system holding ``path`` (None: unknown)."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)) or ".")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def load_policy(conn: sqlite3.Connection, policy: QuotaPolicy) -> None:
    """Put ``policy``'s scores where the eviction queries read them (a temp table of this connection)."""
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS quota_scores (author BLOB PRIMARY KEY, score REAL NOT NULL)"
        " WITHOUT ROWID"
    )
    conn.execute("DELETE FROM temp.quota_scores")
    rows = {a: s for a, s in policy.scores.items() if s != 0}
    if policy.owner is not None:
        rows[policy.owner] = float("inf")
    conn.executemany("INSERT INTO temp.quota_scores (author, score) VALUES (?, ?)", rows.items())


def over_quota(
    conn: sqlite3.Connection, touched: Iterable[tuple[bytes, bytes]], policy: QuotaPolicy
) -> list[bytes]:
    """The ids to evict so that every quota ``touched`` (swarm, author) pairs take part in holds."""
    q = policy.quotas
    doomed: dict[bytes, int] = {}  # id -> encoded size
    freed: dict[bytes, tuple[int, int]] = {}  # swarm -> (records, bytes) the author step frees
    for swarm, author in sorted(set(touched)):
        freed.setdefault(swarm, (0, 0))
        if policy.protected(author):
            continue
        row = conn.execute(
            "SELECT records, bytes FROM usage WHERE swarm = ? AND author = ?", (swarm, author)
        ).fetchone()
        if row is None or (row[0] <= q.author_records and row[1] <= q.author_bytes):
            continue
        candidates = conn.execute(
            "SELECT id, length(raw) FROM records r WHERE author = ? AND swarm = ?"
            f" AND {_NOT_A_HEAD_OF_A_STORED_ITEM} ORDER BY ts, id",
            (author, swarm),
        )
        chosen = _enough(candidates, row[0] - q.author_records, row[1] - q.author_bytes, doomed)
        doomed.update(chosen)
        count, size = freed[swarm]
        freed[swarm] = (count + len(chosen), size + sum(chosen.values()))
    for swarm, (freed_records, freed_bytes) in sorted(freed.items()):
        records, size = conn.execute(
            "SELECT coalesce(sum(records), 0), coalesce(sum(bytes), 0) FROM usage WHERE swarm = ?", (swarm,)
        ).fetchone()
        records, size = records - freed_records, size - freed_bytes
        if records <= q.swarm_records and size <= q.swarm_bytes:
            continue
        victims = _swarm_victims(conn, swarm)
        doomed.update(_enough(victims, records - q.swarm_records, size - q.swarm_bytes, doomed))
    return list(doomed)


# An update or withdraw of an item that is stored goes only with that item.
_NOT_A_HEAD_OF_A_STORED_ITEM = (
    "(r.target IS NULL OR NOT EXISTS (SELECT 1 FROM records t WHERE t.id = r.target))"
)


def _swarm_victims(conn: sqlite3.Connection, swarm: bytes) -> Iterator[tuple[bytes, int]]:
    """``(id, size)`` of the swarm's evictable records, in eviction order."""
    yield from conn.execute(
        "SELECT r.id, length(r.raw) FROM records r JOIN temp.quota_scores q ON q.author = r.author"
        f" WHERE q.score < 0 AND r.swarm = ? AND {_NOT_A_HEAD_OF_A_STORED_ITEM} ORDER BY q.score, r.ts, r.id",
        (swarm,),
    )
    # Strangers, oldest first: walks the (swarm, ts, id) index, skipping the known.
    yield from conn.execute(
        "SELECT r.id, length(r.raw) FROM records r WHERE r.swarm = ?"
        " AND r.author NOT IN (SELECT author FROM temp.quota_scores)"
        f" AND {_NOT_A_HEAD_OF_A_STORED_ITEM} ORDER BY r.ts, r.id",
        (swarm,),
    )


def _enough(
    candidates: Iterable[tuple[bytes, int]], records: int, size: int, already: dict[bytes, int]
) -> dict[bytes, int]:
    """The first candidates (id -> size) that free at least ``records`` records and ``size`` bytes."""
    out: dict[bytes, int] = {}
    for rid, length in candidates:
        if records <= 0 and size <= 0:
            break
        if rid in already:
            continue
        out[rid] = length
        records -= 1
        size -= length
    return out


def with_dependents(conn: sqlite3.Connection, ids: list[bytes]) -> list[bytes]:
    """``ids`` and what must go with them: the heads of items, the other attests of each key."""
    out = dict.fromkeys(ids)
    for (rid,) in select_in(conn, "SELECT id FROM records WHERE target IN ({})", ids):
        out[rid] = None
    for (rid,) in select_in(
        conn,
        "SELECT r2.id FROM records r JOIN attest_keys k ON k.n = r.n"
        " JOIN attest_keys k2 ON k2.author = k.author AND k2.subject = k.subject AND k2.context = k.context"
        " JOIN records r2 ON r2.n = k2.n WHERE r.id IN ({})",
        ids,
    ):
        out[rid] = None
    return list(out)


def remember_evicted(conn: sqlite3.Connection, ids: list[bytes], now_ms: int) -> None:
    """Add evicted ``ids`` to ``pruned`` (refused when offered again) before they are deleted."""
    execute_in(
        conn,
        f"INSERT INTO pruned (id, expires) SELECT id, coalesce(expires, {now_ms + EVICTION_MEMORY_MS:d})"
        " FROM records WHERE id IN ({})"
        " ON CONFLICT (id) DO UPDATE SET expires = max(expires, excluded.expires)",
        ids,
    )
