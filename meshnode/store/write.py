"""What storing a batch of records and pruning expired ones do to the store's tables.

Both run inside one transaction that the caller opened (:class:`Store`
serialises and commits). The records were decoded and verified by the
caller; the rules applied here are the ones the store can see from its own
contents:

* a known id is a duplicate; a pruned id is refused (:class:`ExpiredError`);
  a record more than :data:`~meshnode.records.MAX_CLOCK_SKEW_MS` in the
  future is refused (:class:`ClockSkewError`);
* an update or withdraw is refused when its target is stored and it may not
  apply to it (:func:`~meshnode.store.derive.target_refusal`) or its target
  was pruned; with an unknown target it is stored and waits;
* an attest older than a pruned latest attest of the same (author, subject,
  context) is refused;
* ``items`` (see :mod:`meshnode.store.derive`), its full-text index,
  ``attestations`` and ``author_seq`` follow the records in the same
  transaction; a waiting update or withdraw that a newly stored target shows
  to be invalid is deleted and reported as evicted.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from meshnode import lifetime
from meshnode.errors import ClockSkewError, ExpiredError, MeshError, OverQuota, StorageFull
from meshnode.ids import short_id
from meshnode.records import MAX_CLOCK_SKEW_MS, AttestBody, Record
from meshnode.store import quota
from meshnode.store.connection import chunks, execute_in, marks, select_in
from meshnode.store.derive import (
    ITEM_COLUMNS,
    ITEM_TYPES,
    TARGETING,
    ItemHead,
    ItemRow,
    Target,
    derive_item,
    invalid_heads,
    refusal_of_unknown_target,
    target_refusal,
)
from meshnode.store.lookups import (
    heads_naming,
    load_numbered,
    load_record,
    present_ids,
    pruned_ids,
    stored_targets,
)

# An update still waiting for its target is pruned only this long after its
# own expiry: pruning it sooner could let the target, arriving later, come
# back live here although its newest version had expired everywhere else.
ORPHAN_GRACE_MS = 30 * 24 * 3600 * 1000

# Columns an update or withdraw cannot change: the rest are replaced on conflict.
_FIXED_ITEM_COLUMNS = ("n", "type", "swarm", "author", "created_ts")
_UPSERT_ITEM = (
    f"INSERT INTO items ({ITEM_COLUMNS}) VALUES ({marks(len(ItemRow._fields))})"
    " ON CONFLICT (n) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ItemRow._fields if c not in _FIXED_ITEM_COLUMNS)
)
_FTS_ADD = (
    "INSERT INTO items_fts (rowid, title, description, tags) SELECT n, title, description, tags FROM items"
)
_FTS_REMOVE = (
    "INSERT INTO items_fts (items_fts, rowid, title, description, tags)"
    " SELECT 'delete', n, title, description, tags FROM items"
)


@dataclass
class AddResult:
    """What :meth:`Store.add_records` did with each record of a batch.

    ``evicted`` lists previously stored updates/withdraws that the batch showed
    to be invalid (their target arrived and has another author, another swarm
    or is not an offer/want); they were deleted.
    """

    added: list[bytes] = field(default_factory=list)
    duplicates: list[bytes] = field(default_factory=list)
    refused: list[tuple[bytes, MeshError]] = field(default_factory=list)
    evicted: list[bytes] = field(default_factory=list)


# --- storing a batch ---------------------------------------------------------------


def add_batch(
    conn: sqlite3.Connection,
    batch: list[Record],
    now_ms: int,
    result: AddResult,
    policy: quota.QuotaPolicy | None = None,
    free_bytes: int | None = None,
) -> None:
    """Store ``batch`` (no two records with one id) and its derived state; report into ``result``.

    With a ``policy``, the quotas hold after the batch (:mod:`meshnode.store.quota`);
    ``free_bytes`` below its floor refuses every record not by the owner.
    """
    candidates = _new_and_timely(conn, batch, now_ms, result)
    if candidates and policy is not None and free_bytes is not None:
        candidates = _within_disk_floor(candidates, policy, free_bytes, result)
    if not candidates:
        return

    # What every named target is: a record of this batch, a stored one, or pruned.
    targets: dict[bytes, Target] = {r.id: r for r in candidates}
    unknown = list({r.body.target for r in candidates if r.type in TARGETING} - targets.keys())
    stored = stored_targets(conn, unknown)
    targets.update(stored)
    pruned_targets = pruned_ids(conn, [t for t in unknown if t not in targets])

    accepted: list[Record] = []
    for r in candidates:
        error: MeshError | None = None
        if r.type in TARGETING:
            head = ItemHead.of(r)
            target = targets.get(head.target)
            if target is None:
                error = refusal_of_unknown_target(head, head.target in pruned_targets)
            else:
                error = target_refusal(head, target)
        elif r.type == "attest":
            error = _attest_refusal(conn, r)
        if error is None:
            accepted.append(r)
        else:
            result.refused.append((r.id, error))
    if not accepted:
        return

    numbers = _insert_records(conn, accepted)
    result.added.extend(r.id for r in accepted)
    _count_usage(conn, accepted)
    _raise_author_seqs(conn, accepted)
    attests = [r for r in accepted if r.type == "attest"]
    _keep_latest_attests(conn, attests)
    conn.executemany(
        "INSERT INTO attest_keys (n, author, subject, context) VALUES (?, ?, ?, ?)",
        [(numbers[r.id], r.author, r.body.subject, r.body.context) for r in attests],
    )
    update_items(conn, accepted, numbers, set(stored), result)
    if policy is not None:
        _evict_over_quota(conn, accepted, policy, now_ms, result)


def _within_disk_floor(
    candidates: list[Record], policy: quota.QuotaPolicy, free_bytes: int, result: AddResult
) -> list[Record]:
    """Below the free-disk floor only the owner's own records are stored."""
    floor = policy.quotas.disk_floor_bytes
    if free_bytes >= floor:
        return candidates
    kept: list[Record] = []
    for r in candidates:
        if r.author == policy.owner:
            kept.append(r)
        else:
            error = StorageFull(
                f"{r.type} record {short_id(r.id)} refused: {free_bytes >> 20} MiB free on this"
                f" node's disk, under its floor of {floor >> 20} MiB"
            )
            result.refused.append((r.id, error))
    return kept


def _evict_over_quota(
    conn: sqlite3.Connection,
    accepted: list[Record],
    policy: quota.QuotaPolicy,
    now_ms: int,
    result: AddResult,
) -> None:
    """Evict what the quotas touched by ``accepted`` leave no room for (see :mod:`meshnode.store.quota`).

    A record of this batch that is evicted at once is reported as refused, not added.
    """
    doomed = quota.over_quota(conn, [(r.swarm, r.author) for r in accepted], policy)
    if not doomed:
        return
    doomed = quota.with_dependents(conn, doomed)
    quota.remember_evicted(conn, doomed, now_ms)
    delete_records(conn, doomed)
    gone = set(doomed)
    new = {r.id: r for r in accepted}
    result.added[:] = [rid for rid in result.added if rid not in gone]
    for rid in doomed:
        r = new.get(rid)
        if r is None:
            result.evicted.append(rid)
        else:
            error = OverQuota(f"{r.type} record {short_id(rid)}: no room left in this node's quotas")
            result.refused.append((rid, error))


def _new_and_timely(
    conn: sqlite3.Connection, batch: list[Record], now_ms: int, result: AddResult
) -> list[Record]:
    """The records of ``batch`` neither stored, nor pruned, nor too far in the future."""
    ids = [r.id for r in batch]
    present = present_ids(conn, ids)
    pruned = pruned_ids(conn, [i for i in ids if i not in present])
    skew_limit = now_ms + MAX_CLOCK_SKEW_MS
    candidates: list[Record] = []
    for r in batch:
        rid = r.id
        if rid in present:
            result.duplicates.append(rid)
        elif rid in pruned:
            result.refused.append(
                (rid, ExpiredError(f"{r.type} record {short_id(rid)} expired and was pruned here"))
            )
        elif lifetime.past_lifetime(r, now_ms):
            error: MeshError = ExpiredError(
                f"{r.type} record {short_id(rid)} is older than the longest lifetime of its type"
            )
            result.refused.append((rid, error))
        elif r.ts > skew_limit:
            seconds = (r.ts - now_ms) // 1000
            error = ClockSkewError(
                f"{r.type} record {short_id(rid)} is timestamped {seconds} s in the future"
            )
            result.refused.append((rid, error))
        else:
            candidates.append(r)
    return candidates


def _attest_refusal(conn: sqlite3.Connection, r: Record) -> MeshError | None:
    """Why attest ``r`` is refused: older than a latest attest that pruning deleted."""
    body: AttestBody = r.body
    row = conn.execute(
        "SELECT ts, seq, record_id FROM attestations a WHERE author = ? AND subject = ? AND context = ?"
        " AND NOT EXISTS (SELECT 1 FROM records WHERE id = a.record_id)",
        (r.author, body.subject, body.context),
    ).fetchone()
    if row is not None and (r.ts, r.seq, r.id) < tuple(row):
        return ExpiredError(
            f"attest {short_id(r.id)} is older than this author's attest about the same"
            " subject, which expired and was pruned here"
        )
    return None


def _insert_records(conn: sqlite3.Connection, accepted: list[Record]) -> dict[bytes, int]:
    """Insert the records; return each one's ``records.n``."""
    # Number the rows ourselves (as SQLite would: max + 1; we hold the write
    # lock), so that the items rows can point at them without a look-up.
    first_n = conn.execute("SELECT coalesce(max(n), 0) + 1 FROM records").fetchone()[0]
    numbers = {r.id: first_n + i for i, r in enumerate(accepted)}
    conn.executemany(
        "INSERT INTO records (n, id, type, swarm, author, seq, ts, expires, target, raw)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                numbers[r.id],
                r.id,
                r.type,
                r.swarm,
                r.author,
                r.seq,
                r.ts,
                lifetime.expiry(r),
                r.body.target if r.type in TARGETING else None,
                r.encoded,
            )
            for r in accepted
        ],
    )
    return numbers


def _count_usage(conn: sqlite3.Connection, accepted: list[Record]) -> None:
    """Add the batch's records and bytes to ``usage``, one upsert per (swarm, author)."""
    usage: dict[tuple[bytes, bytes], list[int]] = {}
    for r in accepted:
        counts = usage.setdefault((r.swarm, r.author), [0, 0])
        counts[0] += 1
        counts[1] += len(r.encoded)
    conn.executemany(
        "INSERT INTO usage (swarm, author, records, bytes) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (swarm, author) DO UPDATE SET"
        " records = records + excluded.records, bytes = bytes + excluded.bytes",
        [(swarm, author, n, size) for (swarm, author), (n, size) in usage.items()],
    )


def _raise_author_seqs(conn: sqlite3.Connection, accepted: list[Record]) -> None:
    """``author_seq`` never goes down: the highest seq per author of the batch raises it."""
    max_seq: dict[bytes, int] = {}
    for r in accepted:
        if r.seq > max_seq.get(r.author, -1):
            max_seq[r.author] = r.seq
    conn.executemany(
        "INSERT INTO author_seq (author, seq) VALUES (?, ?)"
        " ON CONFLICT (author) DO UPDATE SET seq = max(seq, excluded.seq)",
        max_seq.items(),
    )


def _keep_latest_attests(conn: sqlite3.Connection, attests: list[Record]) -> None:
    """``attestations`` keeps the newest attest per (author, subject, context) by (ts, seq, id)."""
    if not attests:
        return
    conn.executemany(
        "INSERT INTO attestations (author, subject, context, record_id, ts, seq, swarm, expires)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (author, subject, context) DO UPDATE SET"
        " record_id = excluded.record_id, ts = excluded.ts, seq = excluded.seq,"
        " swarm = excluded.swarm, expires = excluded.expires"
        " WHERE (excluded.ts, excluded.seq, excluded.record_id)"
        " > (attestations.ts, attestations.seq, attestations.record_id)",
        [
            (r.author, r.body.subject, r.body.context, r.id, r.ts, r.seq, r.swarm, lifetime.expiry(r))
            for r in attests
        ],
    )


def update_items(
    conn: sqlite3.Connection,
    accepted: list[Record],
    numbers: dict[bytes, int],
    stored_targets: set[bytes],
    result: AddResult,
) -> None:
    """Bring ``items`` and its full-text index in step with the records just inserted."""
    by_id = {r.id: r for r in accepted}
    # Stored items that accepted updates/withdraws name (already validated).
    touched = sorted({r.body.target for r in accepted if r.type in TARGETING} & stored_targets)
    naming = heads_naming(conn, [r.id for r in accepted] + touched)

    def load(record_id: bytes) -> Record:
        return by_id.get(record_id) or load_record(conn, record_id)

    rows: list[ItemRow] = []
    evict: list[bytes] = []
    for r in accepted:
        heads = naming.get(r.id, ())
        if heads:  # updates/withdraws stored earlier, waiting for this record: those that may not apply go
            evict.extend(h.id for h in invalid_heads(r, heads))
        if r.type in ITEM_TYPES:
            rows.append(derive_item(r, numbers[r.id], heads, load))
    touched_n: list[int] = []
    for target in touched:
        n, original = load_numbered(conn, target)
        touched_n.append(n)
        rows.append(derive_item(original, n, naming.get(target, ()), load))
    if evict:
        execute_in(conn, "DELETE FROM records WHERE id IN ({})", evict)
        result.evicted.extend(evict)
    if not rows:
        return
    # The full-text index follows items in bulk: old text out, rows in, new text in.
    execute_in(conn, _FTS_REMOVE + " WHERE n IN ({})", touched_n)
    conn.executemany(_UPSERT_ITEM, rows)
    conn.execute(_FTS_ADD + " WHERE n >= ?", (min(numbers.values()),))
    execute_in(conn, _FTS_ADD + " WHERE n IN ({})", touched_n)


# --- pruning ---------------------------------------------------------------------------


#: The most records of one category that one pruning step deletes (one transaction).
PRUNE_BATCH = 2_000


def prune_expired(conn: sqlite3.Connection, now_ms: int, limit: int = PRUNE_BATCH) -> tuple[int, bool]:
    """Delete some of what expired by ``now_ms``: (how many records went, whether more may be left).

    At most ``limit`` per category (expired items, orphaned heads, expired
    attestation keys, superseded attests), plus what must go with them; the
    caller repeats, one transaction per step, while more may be left. Every
    look-up is by index. See :meth:`Store.prune_expired` for what goes.
    """
    doomed: dict[bytes, int] = {}
    full = False

    def take(rows: list[tuple[bytes, int]]) -> dict[bytes, int]:
        nonlocal full
        full = full or len(rows) >= limit
        found = dict(rows)
        doomed.update(found)
        return found

    item_expiry = take(
        conn.execute(
            "SELECT r.id, i.expires FROM items i JOIN records r ON r.n = i.n"
            " WHERE i.expires IS NOT NULL AND i.expires <= ? LIMIT ?",
            (now_ms, limit),
        ).fetchall()
    )
    for rid, target in select_in(
        conn, "SELECT id, target FROM records WHERE target IN ({})", list(item_expiry)
    ):
        doomed[rid] = item_expiry[target]
    # Heads still waiting for their target, long after they expired (or were made).
    take(
        conn.execute(
            "SELECT r.id, coalesce(r.expires, r.ts) FROM records r WHERE r.target IS NOT NULL"
            " AND coalesce(r.expires, r.ts) <= ?"
            " AND NOT EXISTS (SELECT 1 FROM records t WHERE t.id = r.target) LIMIT ?",
            (now_ms - ORPHAN_GRACE_MS, limit),
        ).fetchall()
    )
    # Attestation keys whose latest attest (still stored) has expired: every attest of the key.
    keys = conn.execute(
        "SELECT author, subject, context, expires FROM attestations a"
        " WHERE expires IS NOT NULL AND expires <= ?"
        " AND EXISTS (SELECT 1 FROM records WHERE id = a.record_id) LIMIT ?",
        (now_ms, limit),
    ).fetchall()
    full = full or len(keys) >= limit
    for author, subject, context, expires in keys:
        for (rid,) in conn.execute(
            "SELECT r.id FROM attest_keys k JOIN records r ON r.n = k.n"
            " WHERE k.author = ? AND k.subject = ? AND k.context = ?",
            (author, subject, context),
        ):
            doomed[rid] = expires
    take(
        conn.execute(
            "SELECT id, expires FROM records WHERE type = 'attest' AND expires <= ?"
            " AND id NOT IN (SELECT record_id FROM attestations) LIMIT ?",
            (now_ms, limit),
        ).fetchall()
    )
    if not doomed:
        return 0, False
    conn.executemany(
        "INSERT INTO pruned (id, expires) VALUES (?, ?)"
        " ON CONFLICT (id) DO UPDATE SET expires = max(expires, excluded.expires)",
        doomed.items(),
    )
    delete_records(conn, list(doomed))
    return len(doomed), full


def delete_records(conn: sqlite3.Connection, ids: list[bytes]) -> None:
    """Delete the records ``ids`` with their derived rows (items, full-text index, attest keys)."""
    for chunk in chunks(ids):
        doomed_n = [
            row[0]
            for row in conn.execute(
                f"SELECT n FROM records WHERE id IN ({marks(len(chunk))}) AND type IN ('offer', 'want')",
                chunk,
            )
        ]
        execute_in(conn, _FTS_REMOVE + " WHERE n IN ({})", doomed_n)
        # ON DELETE CASCADE removes the items and attest_keys rows.
        conn.execute(f"DELETE FROM records WHERE id IN ({marks(len(chunk))})", chunk)
