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

from meshnode.errors import ClockSkewError, ExpiredError, MeshError
from meshnode.ids import short_id
from meshnode.records import MAX_CLOCK_SKEW_MS, AttestBody, Record, decode_record
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


def add_batch(conn: sqlite3.Connection, batch: list[Record], now_ms: int, result: AddResult) -> None:
    """Store ``batch`` (no two records with one id) and its derived state; report into ``result``."""
    candidates = _new_and_timely(conn, batch, now_ms, result)
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
    _raise_author_seqs(conn, accepted)
    _keep_latest_attests(conn, [r for r in accepted if r.type == "attest"])
    update_items(conn, accepted, numbers, set(stored), result)


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
                r.expires,
                r.body.target if r.type in TARGETING else None,
                r.encoded,
            )
            for r in accepted
        ],
    )
    return numbers


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
        [(r.author, r.body.subject, r.body.context, r.id, r.ts, r.seq, r.swarm, r.expires) for r in attests],
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


def prune_expired(conn: sqlite3.Connection, now_ms: int) -> int:
    """Delete what expired by ``now_ms``; return how many records were deleted.

    See :meth:`Store.prune_expired` for what goes.
    """
    doomed: dict[bytes, int] = {}
    item_expiry = dict(
        conn.execute(
            "SELECT r.id, i.expires FROM items i JOIN records r ON r.n = i.n"
            " WHERE i.expires IS NOT NULL AND i.expires <= ?",
            (now_ms,),
        ).fetchall()
    )
    doomed.update(item_expiry)
    for rid, target in select_in(
        conn, "SELECT id, target FROM records WHERE target IN ({})", list(item_expiry)
    ):
        doomed[rid] = item_expiry[target]
    for rid, expires in conn.execute(
        "SELECT r.id, r.expires FROM records r WHERE r.target IS NOT NULL AND r.expires <= ?"
        " AND NOT EXISTS (SELECT 1 FROM records t WHERE t.id = r.target)",
        (now_ms - ORPHAN_GRACE_MS,),
    ):
        doomed[rid] = expires
    # Attestations whose key's latest attest (still stored) has expired.
    for author, subject, context, expires in conn.execute(
        "SELECT author, subject, context, expires FROM attestations a"
        " WHERE expires IS NOT NULL AND expires <= ?"
        " AND EXISTS (SELECT 1 FROM records WHERE id = a.record_id)",
        (now_ms,),
    ).fetchall():
        for rid, raw in conn.execute(
            "SELECT id, raw FROM records WHERE author = ? AND type = 'attest'", (author,)
        ):
            body = decode_record(raw).body
            if body.subject == subject and body.context == context:
                doomed[rid] = expires
    for rid, expires in conn.execute(
        "SELECT id, expires FROM records WHERE type = 'attest' AND expires <= ?"
        " AND id NOT IN (SELECT record_id FROM attestations)",
        (now_ms,),
    ):
        doomed[rid] = expires
    if not doomed:
        return 0
    conn.executemany(
        "INSERT INTO pruned (id, expires) VALUES (?, ?)"
        " ON CONFLICT (id) DO UPDATE SET expires = max(expires, excluded.expires)",
        doomed.items(),
    )
    ids = list(doomed)
    for chunk in chunks(ids):
        doomed_n = [
            row[0]
            for row in conn.execute(
                f"SELECT n FROM records WHERE id IN ({marks(len(chunk))}) AND type IN ('offer', 'want')",
                chunk,
            )
        ]
        execute_in(conn, _FTS_REMOVE + " WHERE n IN ({})", doomed_n)
        # ON DELETE CASCADE removes the items rows.
        conn.execute(f"DELETE FROM records WHERE id IN ({marks(len(chunk))})", chunk)
    return len(ids)
