"""The SQLite store: verified records in, derived current state out.

:class:`Store` is the one face of the store; the work is done by one module
per job:

* :mod:`~meshnode.store.connection` opens and configures the connection
  (WAL, pragmas) and :mod:`~meshnode.store.schema` migrates it;
* :mod:`~meshnode.store.write` stores batches and prunes, keeping the
  derived tables in step with the records in the same transaction;
* :mod:`~meshnode.store.derive` is the rule (pure) by which offers and wants
  get their current state from their updates and withdraws;
* :mod:`~meshnode.store.search` turns user text and filters into queries;
* :mod:`~meshnode.store.integrity` checks that everything derived agrees
  with the records.

The store keeps records that the caller has already decoded and verified
(signature checked); it does not verify signatures. Derived state depends
only on the *set* of records stored, never on the order they arrived in.

Threads: one connection, usable from any thread (``check_same_thread=False``)
and serialised by a lock, so the node can call it through ``trio.to_thread``.
The node should write from one task; readers that must not wait for a write
batch use :meth:`Store.open_reader` (WAL lets a second connection read while
the writer writes).

Durability: WAL with ``synchronous=NORMAL``: a batch acknowledged by
:meth:`Store.add_records` survives the process being killed; after a power
failure the last few batches may be lost, never half of one.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from meshnode.errors import BadValue, NotFound, StoreError
from meshnode.ids import short_id
from meshnode.inbox import Notice
from meshnode.matching import Match, Matchable
from meshnode.records import Record, decode_record
from meshnode.store import inbox, matches, quota, search, write
from meshnode.store.connection import MEMORY, open_connection, quick_check, select_in, transaction
from meshnode.store.derive import ITEM_COLUMNS, ITEM_TYPES, ItemRow, LiveItem, live_item
from meshnode.store.inbox import StoredNotice
from meshnode.store.integrity import integrity_problems
from meshnode.store.lookups import present_ids, pruned_ids
from meshnode.store.quota import QuotaPolicy
from meshnode.store.search import fts_query
from meshnode.store.write import ORPHAN_GRACE_MS, AddResult

__all__ = ["ITEM_TYPES", "ORPHAN_GRACE_MS", "AddResult", "LiveItem", "Store", "fts_query"]


class Store:
    """One SQLite database of records and their derived state. Open with :meth:`open`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        *,
        readonly: bool,
        lock: threading.RLock | None = None,
        owns_connection: bool = True,
    ) -> None:
        self._conn = conn
        self._lock = lock if lock is not None else threading.RLock()
        self._owns_connection = owns_connection
        self.path = path
        self.readonly = readonly
        self._policy: QuotaPolicy | None = None

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
        conn = open_connection(where, readonly=readonly)
        if not readonly and where != MEMORY:
            try:
                quick_check(conn, where)  # a damaged file stops the start, not a later write
            except BaseException:
                conn.close()
                raise
        return cls(conn, where, readonly=readonly)

    def reader(self) -> Store:
        """A second, read-only connection to the same file (reads run beside writes)."""
        if self.path == MEMORY:
            raise StoreError("an in-memory store has no second connection")
        return Store.open(self.path, readonly=True)

    def open_reader(self) -> Store:
        """A read-only store for reads beside the writer; release it with its ``close()``.

        For a file: a second, read-only connection (:meth:`reader`), so reads
        never wait behind a write batch. In memory, where a second connection
        would see another, empty database: this store's own connection and
        lock, read-only, and its ``close()`` leaves the connection open.
        """
        if self.path != MEMORY:
            return self.reader()
        return Store(self._conn, self.path, readonly=True, lock=self._lock, owns_connection=False)

    def close(self) -> None:
        """Close the connection (idempotent); a view from :meth:`open_reader` leaves it open."""
        if not self._owns_connection:
            return
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
        with self._op("reading the schema version") as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

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
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """:meth:`_op` in one write transaction (refused on a read-only store)."""
        with self._op(what) as conn:
            if self.readonly:
                raise StoreError("this store connection is read-only")
            with transaction(conn):
                yield conn

    def _decoded(self, what: str, sql: str, params: Sequence[Any]) -> list[Record]:
        """The records whose encoded bytes ``sql`` selects (one column), decoded."""
        with self._op(what) as conn:
            raws = [r[0] for r in conn.execute(sql, params)]
        return [decode_record(raw) for raw in raws]

    # --- writing ---------------------------------------------------------------------

    def add_records(self, records: Sequence[Record], *, now_ms: int) -> AddResult:
        """Store a batch of verified records in one transaction.

        Idempotent by id (a known id is reported in ``duplicates``). A record
        the rules refuse (see :mod:`meshnode.store.write`) is reported in
        ``refused`` with its error and does not stop the rest of the batch.
        Each record is stored together with its derived state or not at all;
        if SQLite fails, nothing of the batch is stored and
        :class:`StoreError` is raised.
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
        policy = self._policy
        free = quota.free_bytes(self.path) if policy is not None and self.path != MEMORY else None
        with self._write("storing records") as conn:
            write.add_batch(conn, batch, now_ms, result, policy, free)
        return result

    def set_quota_policy(self, policy: QuotaPolicy | None) -> None:
        """Bound what this store keeps by ``policy`` from now on (None: unbounded, as tests like).

        The node sets it at start (its own key) and again whenever its trust
        view changes (whose records are protected, the eviction order); see
        :mod:`meshnode.store.quota`.
        """
        with self._op("setting the quota policy") as conn:
            if policy is not None:
                quota.load_policy(conn, policy)
            self._policy = policy

    def storage(self) -> dict[str, Any]:
        """What the quotas and the disk floor look like now (for ``meshnode status``)."""
        policy = self._policy
        with self._op("reading storage use") as conn:
            records, size = conn.execute(
                "SELECT coalesce(sum(records), 0), coalesce(sum(bytes), 0) FROM usage"
            ).fetchone()
        free = quota.free_bytes(self.path) if self.path != MEMORY else None
        out: dict[str, Any] = {"records": records, "bytes": size, "free_bytes": free}
        if policy is not None:
            q = policy.quotas
            out |= {
                "swarm_records": q.swarm_records,
                "swarm_bytes": q.swarm_bytes,
                "author_records": q.author_records,
                "author_bytes": q.author_bytes,
                "disk_floor_bytes": q.disk_floor_bytes,
                "storing_others": free is None or free >= q.disk_floor_bytes,
            }
        return out

    def add_record(self, record: Record, *, now_ms: int) -> bool:
        """Store one record; True if it is new, False if already stored.

        Raises the :class:`MeshError` that refused it.
        """
        result = self.add_records([record], now_ms=now_ms)
        if result.refused:
            raise result.refused[0][1]
        return bool(result.added)

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
        total, more = 0, True
        while more:  # bounded steps, one transaction each: writers get the lock in between
            with self._write("pruning expired records") as conn:
                count, more = write.prune_expired(conn, now_ms)
            total += count
        return total

    def forget_pruned(self, before_ms: int) -> int:
        """Drop ``pruned`` entries that expired before ``before_ms``; return how many."""
        with self._write("forgetting pruned ids") as conn:
            return conn.execute("DELETE FROM pruned WHERE expires < ?", (before_ms,)).rowcount

    # --- reading ---------------------------------------------------------------------

    def get(self, record_id: bytes) -> Record | None:
        """The stored record with this id, or None."""
        found = self._decoded("reading a record", "SELECT raw FROM records WHERE id = ?", (record_id,))
        return found[0] if found else None

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
        with self._op("looking up records") as conn:
            present = present_ids(conn, wanted)
        return [i for i in wanted if i not in present]

    def is_pruned(self, record_id: bytes) -> bool:
        with self._op("looking up a pruned id") as conn:
            return conn.execute("SELECT 1 FROM pruned WHERE id = ?", (record_id,)).fetchone() is not None

    def pruned_among(self, ids: Iterable[bytes]) -> set[bytes]:
        """The ids of ``ids`` that pruning deleted here (they would be refused)."""
        with self._op("looking up pruned ids") as conn:
            return pruned_ids(conn, list(dict.fromkeys(ids)))

    def raw_records(self, ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """The stored encoded bytes of those of ``ids`` held here: id -> bytes."""
        with self._op("reading records") as conn:
            sql = "SELECT id, raw FROM records WHERE id IN ({})"
            return dict(select_in(conn, sql, list(dict.fromkeys(ids))))

    def count(self, swarm: bytes | None = None, type: str | None = None) -> int:
        where, params = search.equal_to([("swarm", swarm), ("type", type)])
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
        trust: Mapping[bytes, float] | None = None,
        near: str | None = None,
        km: float | None = None,
        exclude: Collection[bytes] = (),
        swarms: Collection[bytes] | None = None,
    ) -> list[LiveItem]:
        """Live offers or wants matching every filter given, at most ``limit``.

        Live: not withdrawn (unless ``include_withdrawn``) and not expired at
        ``now_ms``. With ``trust`` (author key -> level; an author missing
        there is at level 0) the most trusted authors' items come first, and
        the limit applies after that ranking. Then, with ``query`` (user
        text, see :func:`fts_query`), by relevance; otherwise newest (last
        updated, a date after ``now_ms`` counting as ``now_ms``) first.
        With ``near`` (a geohash), only items whose ``where`` cell's centre
        is within ``km`` (default :data:`search.DEFAULT_NEAR_KM`) of its
        centre, the nearest first after trust (and relevance); see
        :mod:`meshnode.store.search`. Items whose id is in ``exclude`` are
        left out before the limit; with ``swarms``, only the items of those
        swarms (filtered in the query too). Raises :class:`BadValue` for a bad
        ``near`` or ``km`` (``km`` without ``near`` too).
        """
        if near is None and km is not None:
            raise BadValue("km: give it with near (a geohash), the place to measure from")
        place = search.Near.parse(near, km) if near is not None else None
        found = search.items_query(
            type,
            swarm=swarm,
            query=query,
            kind=kind,
            tag=tag,
            author=author,
            now_ms=now_ms,
            limit=limit,
            include_withdrawn=include_withdrawn,
            ranked=bool(trust),
            near=place,
            excluding=bool(exclude),
            swarms=swarms,
        )
        if found is None:
            return []
        sql, params = found
        with self._op("listing items") as conn:
            if place is not None:
                conn.create_function(search.DISTANCE_FUNCTION, 3, search.location_km, deterministic=True)
            if exclude:
                conn.execute(search.CREATE_EXCLUDED_TABLE)
                conn.execute(f"DELETE FROM {search.EXCLUDED_TABLE}")
                conn.executemany(f"INSERT INTO {search.EXCLUDED_TABLE} VALUES (?)", ((i,) for i in exclude))
            if trust:
                conn.execute(search.CREATE_TRUST_TABLE)
                conn.execute(f"DELETE FROM {search.TRUST_TABLE}")
                conn.executemany(f"INSERT INTO {search.TRUST_TABLE} VALUES (?, ?)", trust.items())
            return [live_item(row[0], ItemRow._make(row[1:])) for row in conn.execute(sql, params)]

    def items_by_id(self, item_ids: Iterable[bytes]) -> dict[bytes, LiveItem]:
        """Those of ``item_ids`` that are offers or wants here (also withdrawn or expired): id -> item."""
        sql = (
            f"SELECT r.id, {', '.join(f'i.{c}' for c in ITEM_COLUMNS.split(', '))}"
            " FROM records r JOIN items i ON i.n = r.n WHERE r.id IN ({})"
        )
        with self._op("reading items") as conn:
            rows = list(select_in(conn, sql, list(dict.fromkeys(item_ids))))
        return {bytes(row[0]): live_item(bytes(row[0]), ItemRow._make(row[1:])) for row in rows}

    def item(self, item_id: bytes) -> LiveItem | None:
        """One offer or want by its original id, also when withdrawn or expired."""
        with self._op("reading an item") as conn:
            row = conn.execute(
                f"SELECT {ITEM_COLUMNS} FROM items WHERE n = (SELECT n FROM records WHERE id = ?)", (item_id,)
            ).fetchone()
        return None if row is None else live_item(item_id, ItemRow._make(row))

    def offers_matching(
        self, want: bytes | Matchable, now_ms: int, limit: int = 20
    ) -> list[tuple[Match, LiveItem]]:
        """Live offers that meet ``want``, best first: (match, offer) pairs, at most ``limit``.

        ``want`` is an item's id, or an item (a :class:`Matchable`: stored or
        just arrived). The rules are :mod:`meshnode.matching`'s, the search
        :mod:`meshnode.store.matches`'. Raises :class:`NotFound` for an
        unknown id and :class:`BadValue` for an item that is not a want.
        """
        item = self._matchable(want, "want")
        with self._op("matching offers") as conn:
            return matches.offers_for_want(conn, item, now_ms, limit)

    def wants_matching(
        self, offer: bytes | Matchable, now_ms: int, limit: int = 20
    ) -> list[tuple[Match, LiveItem]]:
        """Live wants that ``offer`` (an id or an item) meets, best first: (match, want) pairs.

        As :meth:`offers_matching`, from the offer's side.
        """
        item = self._matchable(offer, "offer")
        with self._op("matching wants") as conn:
            return matches.wants_for_offer(conn, item, now_ms, limit)

    def _matchable(self, item: bytes | Matchable, type: str) -> Matchable:
        found: Matchable
        if not isinstance(item, bytes):
            found = item
        elif (stored := self.item(item)) is not None:
            found = stored
        else:
            raise NotFound(f"{short_id(item)} is not an offer or want here")
        if found.type != type:
            raise BadValue(f"{short_id(found.id)} is a {found.type}, not a {type}")
        return found

    def records_of_type(self, type: str, *, swarm: bytes | None = None) -> list[Record]:
        """Every stored record of ``type`` (oldest first), e.g. proposals and replies."""
        where, params = search.equal_to([("type", type), ("swarm", swarm)])
        sql = f"SELECT raw FROM records WHERE {' AND '.join(where)} ORDER BY ts, id"
        return self._decoded("listing records", sql, params)

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
        where, params = search.equal_to([("a.swarm", swarm)])
        sql = (
            "SELECT r.raw FROM attestations a JOIN records r ON r.id = a.record_id"
            f" WHERE {' AND '.join(['(a.expires IS NULL OR a.expires > ?)', *where])}"
            " ORDER BY a.ts, a.record_id"
        )
        return self._decoded("listing attestations", sql, [now_ms, *params])

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

    # --- the inbox --------------------------------------------------------------------

    def add_notices(self, notices: Sequence[Notice], *, at: int) -> list[StoredNotice]:
        """Keep the notices not kept yet (meshnode.store.inbox); return those added, numbered."""
        if not notices:
            return []
        with self._write("keeping inbox notices") as conn:
            return inbox.add_notices(conn, notices, at)

    def notices(self, *, after: int = 0, limit: int = 100, newest_first: bool = False) -> list[StoredNotice]:
        """Inbox notices numbered after ``after`` (oldest first unless ``newest_first``)."""
        with self._op("reading the inbox") as conn:
            return inbox.notices(conn, after=after, limit=limit, newest_first=newest_first)

    def count_notices(self, after: int = 0) -> int:
        """How many inbox notices are numbered after ``after``."""
        with self._op("reading the inbox") as conn:
            return inbox.count_after(conn, after)

    def inbox_marks(self) -> tuple[int, int]:
        """``(seen, last)``: how far the owner has read the inbox, and its newest notice's number."""
        with self._op("reading the inbox") as conn:
            return inbox.seen(conn), inbox.last_seq(conn)

    def mark_inbox_seen(self, seq: int) -> None:
        """The owner has read the inbox up to notice ``seq``."""
        with self._write("marking the inbox read") as conn:
            inbox.mark_seen(conn, seq)

    # --- checking --------------------------------------------------------------------

    def integrity_check(self) -> bool:
        """True if SQLite, the FTS index and every derived table agree with ``records``.

        Reads and re-derives everything: seconds for 100k records, so run it
        at start-up after a crash or on demand, not routinely.
        """
        return not self.integrity_problems()

    def integrity_problems(self, limit: int = 20) -> list[str]:
        """What :meth:`integrity_check` found wrong (at most ``limit`` lines)."""
        with self._op("checking the store") as conn:
            return integrity_problems(conn, readonly=self.readonly, limit=limit)
