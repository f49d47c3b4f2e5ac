"""The SQLite schema of the store, its ordered migrations, and applying them.

``MIGRATIONS[i]`` takes a database from schema version ``i`` to ``i + 1``;
the version lives in ``PRAGMA user_version`` and a meshnode database is
marked with ``PRAGMA application_id`` = :data:`APPLICATION_ID`. Each step
runs in one transaction together with the version bump (:func:`migrate`),
so a database is always at exactly one known version. Never edit a released
step: append a new one.

Tables
------
``records``
    Every stored record: its id, the envelope fields the queries need and
    ``raw``, the canonical encoded bytes (the record is rebuilt from these).
    ``target`` is the item an update or withdraw names (``NULL`` otherwise).
    A rowid table (``n``) with ``UNIQUE(id)``: for random 32-byte ids this
    inserts about twice as fast as ``WITHOUT ROWID``. Indexed by
    ``(type, swarm)`` (serves type-only and type+swarm look-ups; swarm-only
    ones use ``(swarm, ts, id)``, the index set reconciliation scans),
    ``(author, seq)`` and ``target``.
``items``
    The live view of offers and wants: one row per original offer/want with
    its current content (newest valid update by ``(ts, seq, id)``), derived
    from ``records`` and kept in step with it in the same transaction. Keyed
    by the original's ``records.n`` (its id is found through ``records``):
    a second random 32-byte-key index would double the pages each batch
    dirties.
``items_fts``
    FTS5 index over title, description and tags of ``items`` (external
    content, rowid = ``items.n``). The store writes it in bulk after each
    batch (``INSERT ... SELECT``), not from triggers: FTS5 fed row by row from
    a trigger cost ~35 us per row against ~6 us in bulk (SQLite 3.40).
``attestations``
    The latest attest per ``(author, subject, context)``. The row outlives a
    pruned record as a tombstone, so an older attest cannot resurface.
``author_seq``
    Highest ``seq`` seen per author (never lowered, not even by pruning).
``pruned``
    Ids deleted by pruning or evicted by a quota, with the expiry that caused
    it (or until when an eviction is remembered); these are refused if a peer
    offers them again, and forgotten a while after that time.
``attest_keys``
    The (author, subject, context) of every stored attest, so that pruning
    finds an attestation's records by index (version 2).
``usage``
    Records and bytes stored per (swarm, author): what the quotas read
    (version 2). The writer adds each batch's counts (one upsert per pair: a
    row trigger cost ~10 us per record); a trigger subtracts deleted rows.
``inbox``
    The owner's notices (:mod:`meshnode.inbox`), numbered in the order they
    were found (``seq``, never reused), one per ``(kind, record, about)``;
    ``at`` is when (local clock, ms). Kept to the newest
    :data:`meshnode.store.inbox.MAX_NOTICES` (version 3).
``local_state``
    Small facts of this node, by key: how far the owner has read the inbox
    (version 3).

Version 4 adds ``items.price``: the price of a service or lend item in the
swarm's currency (hundredths; NULL when it has none, as every item stored
before had).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

from meshnode.errors import MeshError, StoreError
from meshnode.records import decode_record

#: "mesh" in ASCII; identifies a meshnode database file.
APPLICATION_ID = 0x6D657368

_V1 = """
CREATE TABLE records (
    n       INTEGER PRIMARY KEY,
    id      BLOB    NOT NULL UNIQUE,
    type    TEXT    NOT NULL,
    swarm   BLOB    NOT NULL,
    author  BLOB    NOT NULL,
    seq     INTEGER NOT NULL,
    ts      INTEGER NOT NULL,
    expires INTEGER,
    target  BLOB,
    raw     BLOB    NOT NULL
);
CREATE INDEX records_type_swarm ON records (type, swarm);
CREATE INDEX records_author_seq ON records (author, seq);
CREATE INDEX records_swarm_ts_id ON records (swarm, ts, id);
CREATE INDEX records_target ON records (target) WHERE target IS NOT NULL;

CREATE TABLE items (
    n            INTEGER PRIMARY KEY REFERENCES records (n) ON DELETE CASCADE,
    type         TEXT    NOT NULL CHECK (type IN ('offer', 'want')),
    swarm        BLOB    NOT NULL,
    author       BLOB    NOT NULL,
    kind         TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    description  TEXT    NOT NULL,
    tags         TEXT    NOT NULL,
    location     TEXT    NOT NULL,
    quantity     INTEGER,
    max_days     INTEGER,
    deposit      TEXT,
    has_terms    INTEGER NOT NULL DEFAULT 0,
    expires      INTEGER,
    created_ts   INTEGER NOT NULL,
    updated_ts   INTEGER NOT NULL,
    cur_id       BLOB    NOT NULL,
    cur_seq      INTEGER NOT NULL,
    withdrawn_ts INTEGER
);
CREATE INDEX items_type_updated ON items (type, updated_ts);
CREATE INDEX items_author ON items (author);
CREATE INDEX items_expires ON items (expires) WHERE expires IS NOT NULL;

CREATE VIRTUAL TABLE items_fts USING fts5 (
    title, description, tags,
    content = 'items', content_rowid = 'n',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
-- A title hit weighs most, then tags, then the description.
INSERT INTO items_fts (items_fts, rank) VALUES ('rank', 'bm25(10.0, 1.0, 4.0)');

CREATE TABLE attestations (
    author    BLOB    NOT NULL,
    subject   BLOB    NOT NULL,
    context   TEXT    NOT NULL,
    record_id BLOB    NOT NULL,
    ts        INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    swarm     BLOB    NOT NULL,
    expires   INTEGER,
    PRIMARY KEY (author, subject, context)
);

CREATE TABLE author_seq (
    author BLOB    PRIMARY KEY,
    seq    INTEGER NOT NULL
);

CREATE TABLE pruned (
    id      BLOB    PRIMARY KEY,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
"""

_DAY = 24 * 3600 * 1000

# Version 2 (issue 12): every offer, want and vouch expires (meshnode.lifetime;
# its numbers as of this step: 60/365 days for items and updates, 365/730 for
# attests); per-(swarm, author) usage for the quotas; attest
# keys indexed for pruning (it was quadratic in an author's attests).
_V2 = f"""
CREATE TABLE attest_keys (
    n       INTEGER PRIMARY KEY REFERENCES records (n) ON DELETE CASCADE,
    author  BLOB    NOT NULL,
    subject BLOB    NOT NULL,
    context TEXT    NOT NULL
);
CREATE INDEX attest_keys_key ON attest_keys (author, subject, context);

CREATE TABLE usage (
    swarm   BLOB    NOT NULL,
    author  BLOB    NOT NULL,
    records INTEGER NOT NULL,
    bytes   INTEGER NOT NULL,
    PRIMARY KEY (swarm, author)
) WITHOUT ROWID;
INSERT INTO usage (swarm, author, records, bytes)
    SELECT swarm, author, count(*), sum(length(raw)) FROM records GROUP BY swarm, author;

CREATE TRIGGER usage_remove AFTER DELETE ON records BEGIN
    UPDATE usage SET records = records - 1, bytes = bytes - length(old.raw)
    WHERE swarm = old.swarm AND author = old.author;
    DELETE FROM usage WHERE swarm = old.swarm AND author = old.author AND records <= 0;
END;

UPDATE records SET expires = min(
    coalesce(expires, ts + CASE type WHEN 'attest' THEN {365 * _DAY} ELSE {60 * _DAY} END),
    ts + CASE type WHEN 'attest' THEN {730 * _DAY} ELSE {365 * _DAY} END
) WHERE type IN ('offer', 'want', 'update', 'attest');
UPDATE items SET expires = min(
    coalesce(expires, updated_ts + {60 * _DAY}), updated_ts + {365 * _DAY}, created_ts + {365 * _DAY}
);
UPDATE attestations SET expires = min(coalesce(expires, ts + {365 * _DAY}), ts + {730 * _DAY});
"""


def _v2(conn: sqlite3.Connection) -> None:
    """Version 2: :data:`_V2`, then the attest keys of the attests already stored."""
    for statement in _statements(_V2):
        conn.execute(statement)
    rows = conn.execute("SELECT n, raw FROM records WHERE type = 'attest'").fetchall()
    keys = []
    for n, raw in rows:
        record = decode_record(raw)
        keys.append((n, record.author, record.body.subject, record.body.context))
    conn.executemany("INSERT INTO attest_keys (n, author, subject, context) VALUES (?, ?, ?, ?)", keys)


_V3 = """
CREATE TABLE inbox (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    record BLOB    NOT NULL,
    about  BLOB    NOT NULL DEFAULT x'',
    peer   BLOB    NOT NULL,
    UNIQUE (kind, record, about)
);
CREATE TABLE local_state (
    key   TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;
"""


#: Ordered migration steps: ``MIGRATIONS[i]`` upgrades version ``i`` to ``i + 1``:
#: an SQL script, or a function that runs in the step's transaction.
_V4 = """
ALTER TABLE items ADD COLUMN price INTEGER;
"""

MIGRATIONS: tuple[str | Callable[[sqlite3.Connection], None], ...] = (_V1, _v2, _V3, _V4)

#: The schema version this code writes and understands.
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, where: str) -> None:
    """Apply the missing steps of :data:`MIGRATIONS`, each in its own transaction.

    The version is read again under the write lock, so two processes opening
    one old file upgrade it once. Raises :class:`StoreError` if a step fails
    (that step is rolled back).
    """
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot lock the store {where} to upgrade it: {exc}") from None
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # re-read under the lock
        if version >= len(MIGRATIONS):
            conn.execute("ROLLBACK")
            return
        try:
            step = MIGRATIONS[version]
            if callable(step):
                step(conn)
            else:
                for statement in _statements(step):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except (sqlite3.Error, MeshError) as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(
                f"upgrading the store {where} from schema version {version} to {version + 1} failed: {exc}"
            ) from None


def _statements(script: str) -> Iterator[str]:
    """Split an SQL script into complete statements (trigger bodies stay whole)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip():
        raise StoreError(f"schema script ends with an incomplete statement: {buf.strip()[:60]!r}")
