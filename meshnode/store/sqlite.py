"""The SQLite store: verified records in, derived current state out.

The store keeps records that the caller has already decoded and verified
(signature checked); it does not verify signatures. It does enforce the
rules it can see from its own contents, and it keeps the derived tables
(live items and their full-text index, latest attestations, per-author
sequence numbers) consistent with the records in the same transaction.

Derived state depends only on the *set* of records stored, never on the
order they arrived in:

* An item's current content is its newest valid update by ``(ts, seq, id)``
  (the original if it has none); it is withdrawn from the earliest valid
  withdrawal on, and an update never revives it. An update or withdraw is
  valid for an item when it has the item's author and swarm.
* An update or withdraw whose target is unknown is stored and waits; when the
  target arrives it applies (or, if it turns out not to be valid for that
  target, it is deleted again and reported as ``evicted``, exactly as if the
  target had come first and it had been refused).

Threads: one connection, usable from any thread (``check_same_thread=False``)
and serialised by a lock, so the node can call it through ``trio.to_thread``.
The node should write from one task; readers that must not wait for a write
batch open their own connection with :meth:`Store.reader` (WAL lets them read
while the writer writes).

Durability: WAL with ``synchronous=NORMAL``: a batch acknowledged by
:meth:`Store.add_records` survives the process being killed; after a power
failure the last few batches may be lost, never half of one.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from meshnode.errors import (
    BadValue,
    ClockSkewError,
    ExpiredError,
    MeshError,
    NotAllowed,
    StoreError,
)
from meshnode.records import (
    ITEM_KINDS,
    MAX_CLOCK_SKEW_MS,
    AttestBody,
    ItemBody,
    LendTerms,
    Record,
    decode_record,
)
from meshnode.store import schema

ITEM_TYPES = ("offer", "want")
_TARGETING = ("update", "withdraw")
BUSY_TIMEOUT_MS = 5_000
CACHE_SIZE_KIB = 16 * 1024  # the writer's page cache
READER_CACHE_SIZE_KIB = 4 * 1024  # each read-only connection's (the daemon keeps two)
# Checkpoint the WAL every ~40 MB instead of SQLite's 4 MB: a 1,000-record
# batch into a 100k-record store dirties >1,000 pages, so the default ran a
# checkpoint in nearly every commit (15k -> 22k records/s). The WAL file is
# truncated back to JOURNAL_SIZE_LIMIT after a checkpoint.
WAL_AUTOCHECKPOINT_PAGES = 10_000
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
MAX_QUERY_TERMS = 16
# An update still waiting for its target is pruned only this long after its
# own expiry: pruning it sooner could let the target, arriving later, come
# back live here although its newest version had expired everywhere else.
ORPHAN_GRACE_MS = 30 * 24 * 3600 * 1000
_CHUNK = 500  # ids per IN (...) list
_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_WORD_RE = re.compile(r"(\w+)(\*?)")


# --- results -------------------------------------------------------------------


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


@dataclass(frozen=True)
class LiveItem:
    """The current state of one offer or want (id = the original record's id)."""

    id: bytes
    type: str
    author: bytes
    swarm: bytes
    title: str
    kind: str
    desc: str
    tags: tuple[str, ...]
    where: str
    quantity: int | None
    expires: int | None
    created_ts: int
    updated_ts: int
    withdrawn: bool
    current_record_id: bytes
    terms: LendTerms | None = None
    withdrawn_ts: int | None = None

    def live(self, now_ms: int) -> bool:
        """Neither withdrawn nor expired at ``now_ms``."""
        return not self.withdrawn and (self.expires is None or self.expires > now_ms)


# --- full-text queries ---------------------------------------------------------------


def fts_query(text: str) -> str | None:
    """Turn user text into a safe FTS5 query: every word quoted, all required.

    A word followed by ``*`` is a prefix search. Operators, quotes and other
    punctuation in ``text`` have no special meaning. Returns ``None`` when the
    text holds no searchable word (the query then matches nothing).
    """
    if not isinstance(text, str):
        raise BadValue(f"query: expected text, found {type(text).__name__}")
    terms: list[str] = []
    for match in _WORD_RE.finditer(unicodedata.normalize("NFKC", text)):
        word, star = match.groups()
        if not any(c.isalnum() for c in word):
            continue
        terms.append(f'"{word}"{star}')
        if len(terms) == MAX_QUERY_TERMS:
            break
    return " ".join(terms) or None


# --- derived item state ----------------------------------------------------------

_ITEM_COLS = (
    "n, type, swarm, author, kind, title, description, tags, location, quantity, max_days,"
    " deposit, has_terms, expires, created_ts, updated_ts, cur_id, cur_seq, withdrawn_ts"
)
_N_ITEM_COLS = 19
_UPSERT_ITEM = (
    f"INSERT INTO items ({_ITEM_COLS}) VALUES ({', '.join('?' * _N_ITEM_COLS)})"
    " ON CONFLICT (n) DO UPDATE SET kind = excluded.kind, title = excluded.title,"
    " description = excluded.description, tags = excluded.tags, location = excluded.location,"
    " quantity = excluded.quantity, max_days = excluded.max_days, deposit = excluded.deposit,"
    " has_terms = excluded.has_terms, expires = excluded.expires,"
    " updated_ts = excluded.updated_ts, cur_id = excluded.cur_id, cur_seq = excluded.cur_seq,"
    " withdrawn_ts = excluded.withdrawn_ts"
)


@dataclass(frozen=True)
class _Head:
    """The envelope of a stored update or withdraw (no body)."""

    id: bytes
    type: str
    author: bytes
    swarm: bytes
    ts: int
    seq: int
    target: bytes


def _valid_for(head: _Head, original: Record) -> bool:
    return head.author == original.author and head.swarm == original.swarm


def _derive_item(
    original: Record, n: int, heads: Iterable[_Head], load: Callable[[bytes], Record]
) -> tuple[Any, ...]:
    """The ``items`` row of ``original`` (stored as ``records.n`` = ``n``) given
    the updates/withdraws that name it.

    A pure function of the set ``heads`` (max / min over it), so arrival
    order cannot matter. ``load`` fetches the winning update's full record.
    """
    updates: list[tuple[int, int, bytes]] = []
    withdrawn_ts: int | None = None
    for h in heads:
        if h.target != original.id or not _valid_for(h, original):
            continue
        if h.type == "update":
            updates.append((h.ts, h.seq, h.id))
        elif h.type == "withdraw" and (withdrawn_ts is None or h.ts < withdrawn_ts):
            withdrawn_ts = h.ts
    if updates:
        ts, seq, cur_id = max(updates)
        item: ItemBody = load(cur_id).body.item
    else:
        ts, seq, cur_id = original.ts, original.seq, original.id
        item = original.body
    terms = item.terms
    return (
        n,
        original.type,
        original.swarm,
        original.author,
        item.kind,
        item.title,
        item.desc,
        " ".join(item.tags),
        item.where,
        item.quantity,
        terms.max_days if terms is not None else None,
        terms.deposit if terms is not None else None,
        int(terms is not None),
        item.expires,
        original.ts,
        ts,
        cur_id,
        seq,
        withdrawn_ts,
    )


def _live_item(item_id: bytes, row: Sequence[Any]) -> LiveItem:
    (
        _n,
        item_type,
        swarm,
        author,
        kind,
        title,
        desc,
        tags,
        where,
        quantity,
        max_days,
        deposit,
        has_terms,
        expires,
        created_ts,
        updated_ts,
        cur_id,
        _cur_seq,
        withdrawn_ts,
    ) = row
    return LiveItem(
        id=item_id,
        type=item_type,
        author=author,
        swarm=swarm,
        title=title,
        kind=kind,
        desc=desc,
        tags=tuple(tags.split()),
        where=where,
        quantity=quantity,
        expires=expires,
        created_ts=created_ts,
        updated_ts=updated_ts,
        withdrawn=withdrawn_ts is not None,
        current_record_id=cur_id,
        terms=LendTerms(max_days=max_days, deposit=deposit) if has_terms else None,
        withdrawn_ts=withdrawn_ts,
    )


def _short(record_id: bytes) -> str:
    return record_id.hex()[:16] + "…"


def _chunks(seq: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


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


# --- the store ---------------------------------------------------------------------


class Store:
    """One SQLite database of records and their derived state. Open with :meth:`open`."""

    def __init__(self, conn: sqlite3.Connection, path: str, *, readonly: bool) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path
        self.readonly = readonly

    # --- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> Store:
        """Open (creating and migrating if needed) the store at ``path``.

        ``":memory:"`` gives a private in-memory store. ``readonly`` opens an
        existing, current store for reading only (see :meth:`reader`).
        Raises :class:`StoreError` if the file is not a meshnode database, was
        written by a newer meshnode, or cannot be opened.
        """
        where = str(path)
        memory = where == ":memory:"
        if readonly and memory:
            raise StoreError("an in-memory store cannot be opened read-only")
        try:
            if readonly:
                uri = Path(where).absolute().as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                conn = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {where}: {exc}") from None
        try:
            _prepare(conn, where, readonly=readonly, memory=memory)
        except BaseException:
            conn.close()
            raise
        return cls(conn, where, readonly=readonly)

    def reader(self) -> Store:
        """A second, read-only connection to the same file (reads run beside writes)."""
        if self.path == ":memory:":
            raise StoreError("an in-memory store has no second connection")
        return Store.open(self.path, readonly=True)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            try:
                if not self.readonly:
                    self._conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._op("reading the schema version"):
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # --- plumbing --------------------------------------------------------------------

    @contextmanager
    def _op(self, what: str) -> Iterator[sqlite3.Connection]:
        """Serialise on the connection and turn SQLite failures into StoreError."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StoreError(f"{what} failed: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        conn = self._conn
        if self.readonly:
            raise StoreError("this store connection is read-only")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _select_in(self, sql: str, values: Sequence[Any], *params: Any) -> Iterator[tuple[Any, ...]]:
        """Run ``sql`` (with one ``{}`` for an IN list) over ``values`` in chunks."""
        for chunk in _chunks(values):
            yield from self._conn.execute(sql.format(_marks(len(chunk))), (*chunk, *params))

    def _present(self, ids: Sequence[bytes]) -> set[bytes]:
        return {r[0] for r in self._select_in("SELECT id FROM records WHERE id IN ({})", ids)}

    def _pruned(self, ids: Sequence[bytes]) -> set[bytes]:
        return {r[0] for r in self._select_in("SELECT id FROM pruned WHERE id IN ({})", ids)}

    def _load(self, record_id: bytes) -> Record:
        return self._load_numbered(record_id)[1]

    def _load_numbered(self, record_id: bytes) -> tuple[int, Record]:
        row = self._conn.execute("SELECT n, raw FROM records WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            raise StoreError(f"record {_short(record_id)} vanished from the store")
        return row[0], decode_record(row[1])

    # --- writing ---------------------------------------------------------------------

    def add_records(self, records: Sequence[Record], *, now_ms: int) -> AddResult:
        """Store a batch of verified records in one transaction.

        Idempotent by id (a known id is reported in ``duplicates``). A record
        the rules refuse is reported in ``refused`` with its error and does not
        stop the rest of the batch. Each record is stored together with its
        derived state or not at all; if SQLite fails, nothing of the batch is
        stored and :class:`StoreError` is raised.
        """
        result = AddResult()
        batch: list[Record] = []
        seen: set[bytes] = set()
        for record in records:
            rid = record.id
            if rid in seen:
                result.duplicates.append(rid)
            else:
                seen.add(rid)
                batch.append(record)
        if not batch:
            return result
        with self._op("storing records"), self._transaction():
            self._add_batch(batch, now_ms, result)
        return result

    def add_record(self, record: Record, *, now_ms: int) -> bool:
        """Store one record; True if it is new, False if already stored.

        Raises the :class:`MeshError` that refused it.
        """
        result = self.add_records([record], now_ms=now_ms)
        if result.refused:
            raise result.refused[0][1]
        return bool(result.added)

    def _add_batch(self, batch: list[Record], now_ms: int, result: AddResult) -> None:
        conn = self._conn
        ids = [r.id for r in batch]
        present = self._present(ids)
        pruned = self._pruned([i for i in ids if i not in present])
        skew_limit = now_ms + MAX_CLOCK_SKEW_MS

        candidates: list[Record] = []
        for r in batch:
            rid = r.id
            if rid in present:
                result.duplicates.append(rid)
            elif rid in pruned:
                result.refused.append(
                    (rid, ExpiredError(f"{r.type} record {_short(rid)} expired and was pruned here"))
                )
            elif r.ts > skew_limit:
                result.refused.append(
                    (
                        rid,
                        ClockSkewError(
                            f"{r.type} record {_short(rid)} is timestamped"
                            f" {(r.ts - now_ms) // 1000} s in the future"
                        ),
                    )
                )
            else:
                candidates.append(r)
        if not candidates:
            return

        # What every named target is: a record of this batch, a stored one, or pruned.
        heads: dict[bytes, tuple[str, bytes, bytes]] = {r.id: (r.type, r.author, r.swarm) for r in candidates}
        unknown = list({r.body.target for r in candidates if r.type in _TARGETING} - heads.keys())
        stored_targets: set[bytes] = set()
        for tid, ttype, tauthor, tswarm in self._select_in(
            "SELECT id, type, author, swarm FROM records WHERE id IN ({})", unknown
        ):
            heads[tid] = (ttype, tauthor, tswarm)
            stored_targets.add(tid)
        pruned_targets = self._pruned([t for t in unknown if t not in heads])

        accepted: list[Record] = []
        for r in candidates:
            error: MeshError | None = None
            if r.type in _TARGETING:
                error = self._check_target(r, heads.get(r.body.target), r.body.target in pruned_targets)
            elif r.type == "attest":
                error = self._check_attest(r)
            if error is None:
                accepted.append(r)
            else:
                result.refused.append((r.id, error))
        if not accepted:
            return

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
                    r.body.target if r.type in _TARGETING else None,
                    r.encoded,
                )
                for r in accepted
            ],
        )
        result.added.extend(r.id for r in accepted)

        max_seq: dict[bytes, int] = {}
        for r in accepted:
            if r.seq > max_seq.get(r.author, -1):
                max_seq[r.author] = r.seq
        conn.executemany(
            "INSERT INTO author_seq (author, seq) VALUES (?, ?)"
            " ON CONFLICT (author) DO UPDATE SET seq = max(seq, excluded.seq)",
            max_seq.items(),
        )

        attests = [r for r in accepted if r.type == "attest"]
        if attests:
            conn.executemany(
                "INSERT INTO attestations (author, subject, context, record_id, ts, seq, swarm, expires)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (author, subject, context) DO UPDATE SET"
                " record_id = excluded.record_id, ts = excluded.ts, seq = excluded.seq,"
                " swarm = excluded.swarm, expires = excluded.expires"
                " WHERE (excluded.ts, excluded.seq, excluded.record_id)"
                " > (attestations.ts, attestations.seq, attestations.record_id)",
                [
                    (r.author, r.body.subject, r.body.context, r.id, r.ts, r.seq, r.swarm, r.expires)
                    for r in attests
                ],
            )

        self._derive_items(accepted, numbers, stored_targets, result)

    def _check_target(
        self, r: Record, head: tuple[str, bytes, bytes] | None, target_pruned: bool
    ) -> MeshError | None:
        target = r.body.target
        if head is None:
            if target_pruned:
                return ExpiredError(f"{r.type} names {_short(target)}, which expired and was pruned here")
            return None  # unknown target: store it; it applies when the target arrives
        ttype, tauthor, tswarm = head
        if ttype not in ITEM_TYPES:
            return NotAllowed(f"{r.type} names {_short(target)}, a {ttype} record, not an offer or want")
        if tauthor != r.author:
            return NotAllowed(f"{r.type} of {_short(target)} by someone other than its author")
        if tswarm != r.swarm:
            return NotAllowed(f"{r.type} of {_short(target)} from another swarm than the {ttype}'s")
        return None

    def _check_attest(self, r: Record) -> MeshError | None:
        body: AttestBody = r.body
        row = self._conn.execute(
            "SELECT ts, seq, record_id FROM attestations a WHERE author = ? AND subject = ? AND context = ?"
            " AND NOT EXISTS (SELECT 1 FROM records WHERE id = a.record_id)",
            (r.author, body.subject, body.context),
        ).fetchone()
        if row is not None and (r.ts, r.seq, r.id) < tuple(row):
            return ExpiredError(
                f"attest {_short(r.id)} is older than this author's attest about the same"
                " subject, which expired and was pruned here"
            )
        return None

    def _derive_items(
        self, accepted: list[Record], numbers: dict[bytes, int], stored_targets: set[bytes], result: AddResult
    ) -> None:
        """Bring ``items`` in step with the batch just inserted."""
        conn = self._conn
        by_id = {r.id: r for r in accepted}
        # Stored items that accepted updates/withdraws name (already validated).
        touched = sorted({r.body.target for r in accepted if r.type in _TARGETING} & stored_targets)
        probe = [r.id for r in accepted] + touched
        naming: dict[bytes, list[_Head]] = defaultdict(list)
        for row in self._select_in(
            "SELECT id, type, author, swarm, ts, seq, target FROM records WHERE target IN ({})", probe
        ):
            naming[row[6]].append(_Head(*row))

        def load(record_id: bytes) -> Record:
            return by_id.get(record_id) or self._load(record_id)

        rows: list[tuple[Any, ...]] = []
        evict: list[bytes] = []
        for r in accepted:
            heads = naming.get(r.id, ())
            if r.type in ITEM_TYPES:
                good = [h for h in heads if _valid_for(h, r)]
                evict.extend(h.id for h in heads if not _valid_for(h, r))
                rows.append(_derive_item(r, numbers[r.id], good, load))
            else:
                # Updates/withdraws stored earlier that name a record which is not an item.
                evict.extend(h.id for h in heads)
        touched_n: list[int] = []
        for target in touched:
            n, original = self._load_numbered(target)
            touched_n.append(n)
            rows.append(_derive_item(original, n, naming.get(target, ()), load))
        if evict:
            for chunk in _chunks(evict):
                conn.execute(f"DELETE FROM records WHERE id IN ({_marks(len(chunk))})", chunk)
            result.evicted.extend(evict)
        if not rows:
            return
        # The full-text index follows items in bulk: old text out, rows in, new text in.
        self._fts_delete(touched_n)
        conn.executemany(_UPSERT_ITEM, rows)
        first_n = min(numbers.values())
        conn.execute(
            "INSERT INTO items_fts (rowid, title, description, tags)"
            " SELECT n, title, description, tags FROM items WHERE n >= ?",
            (first_n,),
        )
        for chunk in _chunks(touched_n):
            conn.execute(
                "INSERT INTO items_fts (rowid, title, description, tags)"
                f" SELECT n, title, description, tags FROM items WHERE n IN ({_marks(len(chunk))})",
                chunk,
            )

    def _fts_delete(self, item_numbers: Sequence[int]) -> None:
        """Take these items' current text out of the full-text index."""
        for chunk in _chunks(item_numbers):
            self._conn.execute(
                "INSERT INTO items_fts (items_fts, rowid, title, description, tags)"
                " SELECT 'delete', n, title, description, tags FROM items"
                f" WHERE n IN ({_marks(len(chunk))})",
                chunk,
            )

    def prune_expired(self, now_ms: int) -> int:
        """Delete what expired by ``now_ms``; return how many records were deleted.

        * offers/wants whose current expiry has passed, with every update and
          withdraw that names them (and their ``items`` and FTS rows);
        * stored updates still waiting for their target whose own expiry
          passed more than :data:`ORPHAN_GRACE_MS` ago;
        * attestations: every attest of an (author, subject, context) whose
          latest attest has expired, and superseded attests that expired.

        Deleted ids go to ``pruned`` and are refused if offered again. The
        latest-attest row stays behind as a tombstone so that an older attest
        of the same key cannot become current.
        """
        with self._op("pruning expired records") as conn, self._transaction():
            doomed: dict[bytes, int] = {}
            expired_items = conn.execute(
                "SELECT r.id, i.expires FROM items i JOIN records r ON r.n = i.n"
                " WHERE i.expires IS NOT NULL AND i.expires <= ?",
                (now_ms,),
            ).fetchall()
            item_expiry = dict(expired_items)
            doomed.update(item_expiry)
            for rid, target in self._select_in(
                "SELECT id, target FROM records WHERE target IN ({})", list(item_expiry)
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
            for chunk in _chunks(ids):
                doomed_n = [
                    row[0]
                    for row in conn.execute(
                        f"SELECT n FROM records WHERE id IN ({_marks(len(chunk))})"
                        " AND type IN ('offer', 'want')",
                        chunk,
                    )
                ]
                self._fts_delete(doomed_n)
                # ON DELETE CASCADE removes the items rows.
                conn.execute(f"DELETE FROM records WHERE id IN ({_marks(len(chunk))})", chunk)
            return len(ids)

    def forget_pruned(self, before_ms: int) -> int:
        """Drop ``pruned`` entries that expired before ``before_ms``; return how many."""
        with self._op("forgetting pruned ids") as conn, self._transaction():
            return conn.execute("DELETE FROM pruned WHERE expires < ?", (before_ms,)).rowcount

    # --- reading ---------------------------------------------------------------------

    def get(self, record_id: bytes) -> Record | None:
        """The stored record with this id, or None."""
        with self._op("reading a record") as conn:
            row = conn.execute("SELECT raw FROM records WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else decode_record(row[0])

    def has(self, record_id: bytes) -> bool:
        with self._op("looking up a record") as conn:
            return conn.execute("SELECT 1 FROM records WHERE id = ?", (record_id,)).fetchone() is not None

    def ids_with_prefix(self, prefix: bytes, limit: int = 2) -> list[bytes]:
        """Record ids starting with ``prefix`` (uses the id index; for short ids)."""
        lo = prefix
        hi = None
        if prefix.strip(b"\xff"):  # not all 0xff: the next prefix has the same length
            hi = (int.from_bytes(prefix, "big") + 1).to_bytes(len(prefix), "big")
        with self._op("looking up an id prefix") as conn:
            if hi is None:
                rows = conn.execute("SELECT id FROM records WHERE id >= ? LIMIT ?", (lo, limit)).fetchall()
            else:
                rows = conn.execute(
                    "SELECT id FROM records WHERE id >= ? AND id < ? LIMIT ?", (lo, hi, limit)
                ).fetchall()
        return [bytes(r[0]) for r in rows if bytes(r[0]).startswith(prefix)]

    def missing(self, ids: Iterable[bytes]) -> list[bytes]:
        """The ids of ``ids`` not stored here, in their order, without repeats."""
        wanted = list(dict.fromkeys(ids))
        with self._op("looking up records"):
            present = self._present(wanted)
        return [i for i in wanted if i not in present]

    def is_pruned(self, record_id: bytes) -> bool:
        with self._op("looking up a pruned id") as conn:
            return conn.execute("SELECT 1 FROM pruned WHERE id = ?", (record_id,)).fetchone() is not None

    def pruned_among(self, ids: Iterable[bytes]) -> set[bytes]:
        """The ids of ``ids`` that pruning deleted here (they would be refused)."""
        wanted = list(dict.fromkeys(ids))
        with self._op("looking up pruned ids"):
            return self._pruned(wanted)

    def raw_records(self, ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """The stored encoded bytes of those of ``ids`` held here: id -> bytes."""
        wanted = list(dict.fromkeys(ids))
        with self._op("reading records"):
            return dict(self._select_in("SELECT id, raw FROM records WHERE id IN ({})", wanted))

    def count(self, swarm: bytes | None = None, type: str | None = None) -> int:
        where, params = [], []
        if swarm is not None:
            where.append("swarm = ?")
            params.append(swarm)
        if type is not None:
            where.append("type = ?")
            params.append(type)
        sql = "SELECT count(*) FROM records" + (" WHERE " + " AND ".join(where) if where else "")
        with self._op("counting records") as conn:
            return int(conn.execute(sql, params).fetchone()[0])

    def items(
        self,
        type: str = "offer",
        *,
        swarm: bytes | None = None,
        query: str | None = None,
        kind: str | None = None,
        tag: str | None = None,
        author: bytes | None = None,
        now_ms: int,
        limit: int = 100,
        include_withdrawn: bool = False,
    ) -> list[LiveItem]:
        """Live offers or wants matching every filter given.

        Live: not withdrawn (unless ``include_withdrawn``) and not expired at
        ``now_ms``. With ``query`` (user text, see :func:`fts_query`) results
        are ranked by relevance; otherwise newest (last updated) first.
        """
        if type not in ITEM_TYPES:
            raise BadValue(f"type: expected one of {list(ITEM_TYPES)}, found {type!r}")
        if kind is not None and kind not in ITEM_KINDS:
            raise BadValue(f"kind: expected one of {list(ITEM_KINDS)}, found {kind!r}")
        if limit <= 0:
            return []
        where = ["i.type = ?", "(i.expires IS NULL OR i.expires > ?)"]
        params: list[Any] = [type, now_ms]
        if swarm is not None:
            where.append("i.swarm = ?")
            params.append(swarm)
        if kind is not None:
            where.append("i.kind = ?")
            params.append(kind)
        if author is not None:
            where.append("i.author = ?")
            params.append(author)
        if tag is not None:
            tag = tag.strip().lower()
            if not _TAG_RE.match(tag):
                return []
            where.append("instr(' ' || i.tags || ' ', ?) > 0")
            params.append(f" {tag} ")
        if not include_withdrawn:
            where.append("i.withdrawn_ts IS NULL")
        cols = "r.id, " + ", ".join(f"i.{c.strip()}" for c in _ITEM_COLS.split(","))
        if query is not None:
            match = fts_query(query)
            if match is None:
                return []
            sql = (
                f"SELECT {cols} FROM items_fts JOIN items i ON i.n = items_fts.rowid"
                " JOIN records r ON r.n = i.n"
                f" WHERE items_fts MATCH ? AND {' AND '.join(where)}"
                " ORDER BY items_fts.rank, r.id LIMIT ?"
            )
            params = [match, *params, limit]
        else:
            sql = (
                f"SELECT {cols} FROM items i JOIN records r ON r.n = i.n WHERE {' AND '.join(where)}"
                " ORDER BY i.updated_ts DESC, r.id DESC LIMIT ?"
            )
            params.append(limit)
        with self._op("listing items") as conn:
            return [_live_item(row[0], row[1:]) for row in conn.execute(sql, params)]

    def item(self, item_id: bytes) -> LiveItem | None:
        """One offer or want by its original id, also when withdrawn or expired."""
        with self._op("reading an item") as conn:
            row = conn.execute(
                f"SELECT {_ITEM_COLS} FROM items WHERE n = (SELECT n FROM records WHERE id = ?)", (item_id,)
            ).fetchone()
        return None if row is None else _live_item(item_id, row)

    def records_of_type(self, type: str, *, swarm: bytes | None = None) -> list[Record]:
        """Every stored record of ``type`` (oldest first), e.g. proposals and replies."""
        sql = "SELECT raw FROM records WHERE type = ?"
        params: list[Any] = [type]
        if swarm is not None:
            sql += " AND swarm = ?"
            params.append(swarm)
        with self._op("listing records") as conn:
            raws = [r[0] for r in conn.execute(sql + " ORDER BY ts, id", params)]
        return [decode_record(raw) for raw in raws]

    def withdrawals(self) -> dict[bytes, int]:
        """Withdrawn items: item id -> time of its (earliest valid) withdrawal."""
        with self._op("listing withdrawals") as conn:
            return dict(
                conn.execute(
                    "SELECT r.id, i.withdrawn_ts FROM items i JOIN records r ON r.n = i.n"
                    " WHERE i.withdrawn_ts IS NOT NULL"
                )
            )

    def attestations(self, *, swarm: bytes | None = None, now_ms: int) -> list[Record]:
        """The latest attest per (author, subject, context), if it has not expired."""
        sql = (
            "SELECT r.raw FROM attestations a JOIN records r ON r.id = a.record_id"
            " WHERE (a.expires IS NULL OR a.expires > ?)"
        )
        params: list[Any] = [now_ms]
        if swarm is not None:
            sql += " AND a.swarm = ?"
            params.append(swarm)
        with self._op("listing attestations") as conn:
            raws = [r[0] for r in conn.execute(sql + " ORDER BY a.ts, a.record_id", params)]
        return [decode_record(raw) for raw in raws]

    def latest_seq(self, author: bytes) -> int:
        """The highest ``seq`` ever stored for ``author`` (0 if none)."""
        with self._op("reading a sequence number") as conn:
            row = conn.execute("SELECT seq FROM author_seq WHERE author = ?", (author,)).fetchone()
        return 0 if row is None else int(row[0])

    def ids_in_range(
        self,
        swarm: bytes,
        lo: tuple[int, bytes] | None,
        hi: tuple[int, bytes] | None,
        limit: int,
    ) -> list[tuple[int, bytes]]:
        """``(ts, id)`` of the swarm's records with ``lo <= (ts, id) < hi``, ascending.

        ``None`` leaves that end open.
        """
        sql = "SELECT ts, id FROM records WHERE swarm = ?"
        params: list[Any] = [swarm]
        if lo is not None:
            sql += " AND (ts, id) >= (?, ?)"
            params.extend(lo)
        if hi is not None:
            sql += " AND (ts, id) < (?, ?)"
            params.extend(hi)
        sql += " ORDER BY ts, id LIMIT ?"
        params.append(limit)
        with self._op("listing a range of ids") as conn:
            return [(int(ts), rid) for ts, rid in conn.execute(sql, params)]

    # --- checking --------------------------------------------------------------------

    def integrity_check(self) -> bool:
        """True if SQLite, the FTS index and every derived table agree with ``records``.

        Reads and re-derives everything: seconds for 100k records, so run it
        at start-up after a crash or on demand, not routinely.
        """
        return not self.integrity_problems()

    def integrity_problems(self, limit: int = 20) -> list[str]:
        """What :meth:`integrity_check` found wrong (at most ``limit`` lines)."""
        problems: list[str] = []
        with self._op("checking the store") as conn:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
            if [r[0] for r in rows] != ["ok"]:
                return [f"sqlite: {r[0]}" for r in rows[:limit]]
            if not self.readonly:  # FTS5 runs its check as a (non-writing) INSERT
                try:
                    conn.execute("INSERT INTO items_fts (items_fts, rank) VALUES ('integrity-check', 1)")
                except sqlite3.DatabaseError as exc:
                    problems.append(f"full-text index: {exc}")
            problems.extend(self._derived_problems(conn))
        return problems[:limit]

    def _derived_problems(self, conn: sqlite3.Connection) -> Iterator[str]:
        missing = conn.execute(
            "SELECT count(*) FROM records r WHERE type IN ('offer', 'want')"
            " AND NOT EXISTS (SELECT 1 FROM items WHERE n = r.n)"
        ).fetchone()[0]
        if missing:
            yield f"items: {missing} offers/wants have no item row"
        naming: dict[bytes, list[_Head]] = defaultdict(list)
        for row in conn.execute(
            "SELECT id, type, author, swarm, ts, seq, target FROM records WHERE target IS NOT NULL"
        ):
            naming[row[6]].append(_Head(*row))
        for stored in conn.execute(f"SELECT {_ITEM_COLS} FROM items"):
            raw = conn.execute("SELECT raw FROM records WHERE n = ?", (stored[0],)).fetchone()
            if raw is None:
                yield f"items: row {stored[0]} has no record"
                continue
            original = decode_record(raw[0])
            if original.type not in ITEM_TYPES:
                yield f"items: {_short(original.id)} is a {original.type} record"
                continue
            expected = _derive_item(original, stored[0], naming.get(original.id, ()), self._load)
            if tuple(stored) != expected:
                yield f"items: row of {_short(original.id)} differs from its records"
        for target, heads in naming.items():
            row = conn.execute("SELECT type, author, swarm FROM records WHERE id = ?", (target,)).fetchone()
            if row is None:
                continue
            for h in heads:
                if row[0] not in ITEM_TYPES or (h.author, h.swarm) != (row[1], row[2]):
                    yield f"records: stored {h.type} {_short(h.id)} is invalid for its target"
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
                yield f"attestations: latest of {_short(key[0])} about {_short(key[1])} is wrong"
        for key, (_ts, _seq, rid, present) in table.items():
            if not present and key in latest:
                yield f"attestations: tombstone of {_short(key[0])} hides stored attests"
            if not present and not self._conn.execute("SELECT 1 FROM pruned WHERE id = ?", (rid,)).fetchone():
                yield f"attestations: {_short(rid)} is neither stored nor pruned"
        lagging = conn.execute(
            "SELECT count(*) FROM (SELECT author, max(seq) AS m FROM records GROUP BY author) r"
            " LEFT JOIN author_seq s ON s.author = r.author WHERE s.seq IS NULL OR s.seq < r.m"
        ).fetchone()[0]
        if lagging:
            yield f"author_seq: {lagging} authors lag behind their records"


# --- opening helpers -------------------------------------------------------------------


def _prepare(conn: sqlite3.Connection, where: str, *, readonly: bool, memory: bool) -> None:
    """Check that ``conn`` is a meshnode database, configure it, migrate it."""
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{where} is not a meshnode database ({exc})") from None
    known = len(schema.MIGRATIONS)
    fresh = version == 0 and tables == 0 and app_id in (0, schema.APPLICATION_ID)
    if not fresh and app_id != schema.APPLICATION_ID:
        raise StoreError(
            f"{where} is an SQLite database of another application, not a meshnode store"
            " (move it away or choose another path)"
        )
    if version > known:
        raise StoreError(
            f"{where} has store schema version {version}, newer than the {known} this meshnode"
            " knows: upgrade meshnode (or restore a backup made by this version)"
        )
    try:
        if not readonly and not memory:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{where}: cannot switch the store to WAL mode (got {mode})")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA cache_size = -{READER_CACHE_SIZE_KIB if readonly else CACHE_SIZE_KIB}")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot configure the store {where}: {exc}") from None
    if version < known:
        if readonly:
            raise StoreError(
                f"{where} has store schema version {version}, older than {known}:"
                " open it read-write once to upgrade it"
            )
        _migrate(conn, where)


def _migrate(conn: sqlite3.Connection, where: str) -> None:
    """Apply the missing migration steps, each in its own transaction."""
    steps = schema.MIGRATIONS
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot lock the store {where} to upgrade it: {exc}") from None
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # re-read under the lock
        if version >= len(steps):
            conn.execute("ROLLBACK")
            return
        try:
            for statement in _statements(steps[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
            conn.execute("COMMIT")
        except (sqlite3.Error, StoreError) as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreError(
                f"upgrading the store {where} from schema version {version} to {version + 1} failed: {exc}"
            ) from None
