"""The one path by which records enter a node's store.

Gossip, sync and the local API all hand records here. Checks run cheapest
first: size and per-peer rate before decoding; swarm, clock skew, expiry and
per-author rate before the signature; the signature (the expensive part,
~80 % of ingest) in worker threads, since PyNaCl releases the GIL. Verified
records go to ONE writer task that stores them in batches, one transaction
per batch, in a worker thread.

A gossiped record is ACCEPTed (relayed) only once the batch that holds it is
stored: :meth:`Ingest.judge` waits for the writer (the batching is kept: the
writer takes everything queued meanwhile), and answers IGNORE when the store
refused the record, the write failed, or it did not finish within
``accept_wait`` seconds (the record may still be stored; it is not relayed).

Authors this node has never seen (no record of theirs was ever stored here)
get a separate, smaller budget, so a flood from fresh keys cannot crowd out
known authors: on gossip at most ``new_author_queue`` of their records wait
for the writer at once and ``new_author_rate`` a second are taken (beyond
that: IGNORE, blaming nobody); on sync the caller passes a
:class:`NewAuthorBudget` (at most so many unseen authors per session), and
records of further unseen authors are refused.

:meth:`Ingest.ingest_many` (sync) opens (decodes, checks, verifies) chunks
of records in worker threads, ``verify_threads`` at once, and stores each
batch as soon as it is opened, so opening and storing overlap on every core.

Expired records are not refused here: whether a record still matters is the
store's call (an expired offer may have been extended by a later update; an
expired proposal may have been accepted in time). The store refuses ids it has
already pruned, and prunes what has expired.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from meshnode import records as rec
from meshnode.errors import ClockSkewError, MeshError, StoreError
from meshnode.ratelimit import KeyedRateLimit
from meshnode.swarm import Swarm
from meshnode.verdicts import Verdict

if TYPE_CHECKING:
    from meshnode.store import AddResult

log = logging.getLogger(__name__)


class RecordLookup(Protocol):
    """What ingest asks of its read connection (see :meth:`RecordStore.open_reader`)."""

    def has(self, record_id: bytes) -> bool: ...

    def latest_seq(self, author: bytes) -> int: ...

    def close(self) -> None: ...


class RecordStore(Protocol):
    """What ingest needs of the store (:class:`meshnode.store.Store` is one)."""

    def add_records(self, records: Sequence[rec.Record], *, now_ms: int) -> AddResult: ...

    def open_reader(self) -> RecordLookup: ...


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class NewAuthorBudget:
    """How many authors this node has never seen one caller may introduce (mutable).

    ``admit(author)`` is True for an author already admitted, and for a new
    one while fewer than ``limit`` are; ``refused`` counts the records
    refused by it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.admitted: set[bytes] = set()
        self.refused = 0

    def admit(self, author: bytes) -> bool:
        if author in self.admitted:
            return True
        if len(self.admitted) >= self.limit:
            self.refused += 1
            return False
        self.admitted.add(author)
        return True


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    rate_limited: int = 0
    too_new: int = 0  # valid as far as we know, but from the future by our clock: ignored, nobody blamed
    refused_by_store: int = 0
    new_author_limited: int = 0  # records of never-seen authors over their budget: ignored/refused
    not_stored: int = 0  # gossiped records not relayed because their write failed or took too long
    batches: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class BatchReport:
    """What became of a batch handed to :meth:`Ingest.ingest_many`.

    ``invalid``: records that fail validation (malformed, bad signature, wrong
    swarm): proof that whoever sent them misbehaves. ``refused``: valid records
    that this node will not take (too far in the future by our clock, already
    pruned here, refused by the store's rules): an honest peer may hold them.
    """

    stored: int
    duplicates: int
    invalid: int
    refused: int = 0
    new_authors_refused: int = 0  # of ``refused``: over the caller's NewAuthorBudget


class _RecentIds:
    """A bounded set of ids known to be stored (saves a database look-up)."""

    def __init__(self, size: int = 65536) -> None:
        self._ids: OrderedDict[bytes, None] = OrderedDict()
        self._size = size

    def add(self, rid: bytes) -> None:
        self._ids[rid] = None
        self._ids.move_to_end(rid)
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def __contains__(self, rid: bytes) -> bool:
        return rid in self._ids


class _Queued:
    """A record waiting for the writer; ``done`` is set once its batch is written (or failed)."""

    __slots__ = ("done", "record", "stored")

    def __init__(self, record: rec.Record) -> None:
        self.record = record
        self.done = trio.Event()
        self.stored = False  # newly stored by the writer


class Ingest:
    """Validate, de-duplicate and store records; see the module docstring."""

    def __init__(
        self,
        store: RecordStore,
        *,
        swarm_ids: Callable[[], set[bytes]],
        clock: Callable[[], int] = wall_clock_ms,
        batch_size: int = 512,
        queue_size: int = 4096,
        verify_threads: int = 1,  # opener threads; a second one was slower (GIL, see bench/README.md)
        peer_rate: float = 200.0,
        peer_burst: float = 1000.0,
        author_rate: float = 20.0,
        author_burst: float = 500.0,
        new_author_queue: int = 256,
        new_author_rate: float = 50.0,
        new_author_burst: float = 500.0,
        accept_wait: float = 4.0,
        open_chunk: int = 256,
    ) -> None:
        self.store = store
        # Look-ups use their own read-only connection, so they never wait
        # behind a write batch (WAL lets readers run beside the writer).
        self._reader = store.open_reader()
        self._swarm_ids = swarm_ids
        self._clock = clock
        self._batch_size = batch_size
        self._send, self._recv = trio.open_memory_channel[_Queued](queue_size)
        self._limiter = trio.CapacityLimiter(verify_threads)
        self._db_limiter = trio.CapacityLimiter(1)
        self._peer_limit = KeyedRateLimit(rate=peer_rate, burst=peer_burst)
        self._author_limit = KeyedRateLimit(rate=author_rate, burst=author_burst)
        # One bucket for every never-seen author together (the key is constant).
        self._new_author_limit = KeyedRateLimit(rate=new_author_rate, burst=new_author_burst, max_keys=1)
        self._new_author_queue = new_author_queue
        self._new_in_flight = 0
        self._accept_wait = accept_wait
        self._open_chunk = open_chunk
        self._recent = _RecentIds()
        self._known_authors = _RecentIds()
        self._pending: set[bytes] = set()
        self.stats = IngestStats()
        #: Called (in the trio thread) with every record newly stored.
        self.on_stored: list[Callable[[rec.Record], None]] = []
        #: Called (in the trio thread) with the ids a batch deleted: its quotas' evictions,
        #: or waiting updates its records showed to be invalid.
        self.on_evicted: list[Callable[[list[bytes]], None]] = []

    # --- the writer ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The single writer: stores queued records in batches until cancelled."""
        task_status.started()
        async for first in self._recv:
            batch = [first]
            while len(batch) < self._batch_size:
                try:
                    batch.append(self._recv.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await self._write(batch)
            finally:  # whatever happened (also a cancellation), nobody waits forever
                for item in batch:
                    self._pending.discard(item.record.id)
                    item.done.set()

    async def _write(self, batch: list[_Queued]) -> None:
        now = self._clock()
        records = [item.record for item in batch]
        try:
            result = await trio.to_thread.run_sync(
                lambda: self.store.add_records(records, now_ms=now), limiter=self._db_limiter
            )
        except StoreError as exc:  # SQLite failed, the batch was rolled back: keep running, report it
            self.stats.last_error = f"store failed: {exc}"
            log.error("storing a batch of %d records failed: %s", len(records), exc)
            return
        except Exception as exc:  # a bug: one batch must not stop every later one, but say so loudly
            self.stats.last_error = f"storing a batch raised {exc!r}"
            log.exception("storing a batch of %d records raised an unexpected error", len(records))
            return
        self.stats.batches += 1
        added = set(result.added)
        self.stats.stored += len(added)
        self.stats.duplicates += len(result.duplicates)
        self.stats.refused_by_store += len(result.refused)
        for item in batch:
            self._stored(item.record, added, result.duplicates)
            item.stored = item.record.id in added
        self._notify_evicted(result)

    def _stored(self, r: rec.Record, added: set[bytes], duplicates: Collection[bytes]) -> None:
        """Bookkeeping for one record of a written batch."""
        if r.id in added or r.id in duplicates:
            self._recent.add(r.id)
            self._known_authors.add(r.author)
        if r.id in added:
            self._notify_stored(r)

    # --- entry points ----------------------------------------------------------

    async def judge(self, data: bytes, peer: str, swarm: Swarm) -> Verdict:
        """The gossip validator's question: relay this record or not? Never raises.

        ACCEPT only once the record is stored (see the module docstring).
        """
        self.stats.received += 1
        now = self._clock()
        if peer != "local" and not self._peer_limit.allow(peer, time.monotonic()):
            self.stats.rate_limited += 1
            return Verdict.IGNORE
        try:
            record = rec.decode_record(data)
            rec.check_record(record, now_ms=now, swarms={swarm.id}, allow_expired=True)
        except ClockSkewError:
            # Too new for our clock: an honest relay whose clock runs ahead of
            # ours forwards such records, so it is no proof of malice (as in sync).
            self.stats.too_new += 1
            return Verdict.IGNORE
        except MeshError:
            self.stats.invalid += 1
            return Verdict.REJECT
        rid = record.id
        known = rid in self._recent or rid in self._pending
        if known and peer != "local":
            self.stats.duplicates += 1
            return Verdict.IGNORE
        if peer != "local" and not self._author_limit.allow(record.author, time.monotonic()):
            self.stats.rate_limited += 1
            return Verdict.IGNORE
        try:
            # One signature check takes ~40 us: cheaper inline than a thread hop
            # (~4 ms measured under load). Bulk checks (sync) use worker threads.
            stored = self._known_or_verify(record)
            new_author = not stored and peer != "local" and not self._author_known(record.author)
        except StoreError as exc:  # our store failed the look-up: not the forwarder's fault
            self.stats.last_error = f"store failed: {exc}"
            return Verdict.IGNORE
        except MeshError:
            self.stats.invalid += 1
            return Verdict.REJECT
        if peer == "local":
            return Verdict.ACCEPT  # our own publish: already stored, must be relayed
        if stored:
            self._recent.add(rid)
            self.stats.duplicates += 1
            return Verdict.IGNORE
        if new_author and (
            self._new_in_flight >= self._new_author_queue
            or not self._new_author_limit.allow(None, time.monotonic())
        ):
            self.stats.new_author_limited += 1
            return Verdict.IGNORE
        self._new_in_flight += new_author
        try:
            item = await self._enqueue(record)
            with trio.move_on_after(self._accept_wait):
                await item.done.wait()
        finally:
            self._new_in_flight -= new_author
        if not item.stored:  # refused by the store, failed, or not yet written: do not relay
            self.stats.not_stored += 1
            return Verdict.IGNORE
        return Verdict.ACCEPT

    async def submit(self, record: rec.Record) -> None:
        """Store a locally made (already signed) record and wait until it is stored.

        Raises :class:`MeshError` if it is invalid or the store refuses it.
        """
        rec.check_record(record, now_ms=self._clock(), swarms=self._swarm_ids())
        rec.verify_record(record)  # one check, ~40 us: cheaper inline than a thread hop
        result = await trio.to_thread.run_sync(
            lambda: self.store.add_records([record], now_ms=self._clock()), limiter=self._db_limiter
        )
        self._notify_evicted(result)
        for _, error in result.refused:
            raise error
        if record.id in result.added:
            self.stats.stored += 1
            self._recent.add(record.id)
            self._known_authors.add(record.author)
            self._notify_stored(record)

    async def ingest_many(
        self,
        datas: Iterable[bytes],
        *,
        swarm_ids: set[bytes] | None = None,
        new_authors: NewAuthorBudget | None = None,
    ) -> BatchReport:
        """Validate and store many encoded records (the sync path); wait until stored.

        Chunks are opened (decoded, checked, verified) in worker threads,
        ``verify_threads`` at once, and each batch is stored as soon as it is
        opened, so the work uses every core and leaves the trio loop free.
        With ``new_authors``, records of authors never seen here beyond that
        budget are refused (``refused`` and ``new_authors_refused``).
        """
        swarms = swarm_ids if swarm_ids is not None else self._swarm_ids()
        now = self._clock()
        items = list(datas)
        step = self._open_chunk
        tally = _Tally()
        opened_send, opened_recv = trio.open_memory_channel[list[rec.Record]](0)

        async def open_chunk(chunk: list[bytes], send: trio.MemorySendChannel[list[rec.Record]]) -> None:
            async with send:
                ok, bad, skewed, unseen = await trio.to_thread.run_sync(
                    self._open_all, chunk, now, swarms, new_authors is not None, limiter=self._limiter
                )
                tally.invalid += bad
                tally.refused += skewed
                if new_authors is not None and unseen:
                    ok = self._within_budget(ok, unseen, new_authors, tally)
                if ok:
                    await send.send(ok)

        try:
            async with trio.open_nursery() as nursery:
                async with opened_send:
                    for start in range(0, len(items), step):
                        nursery.start_soon(open_chunk, items[start : start + step], opened_send.clone())
                async with opened_recv:
                    pending: list[rec.Record] = []
                    async for ok in opened_recv:
                        pending.extend(ok)
                        while len(pending) >= self._batch_size:
                            await self._store_part(pending[: self._batch_size], now, tally)
                            del pending[: self._batch_size]
                    if pending:
                        await self._store_part(pending, now, tally)
        except BaseExceptionGroup as group:  # raise what went wrong (a StoreError ...) as it is
            failures = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
            if not failures:
                raise
            raise failures[0] from None
        self.stats.stored += tally.stored
        self.stats.duplicates += tally.duplicates
        self.stats.invalid += tally.invalid
        self.stats.refused_by_store += tally.refused
        self.stats.new_author_limited += tally.new_authors_refused
        return BatchReport(
            stored=tally.stored,
            duplicates=tally.duplicates,
            invalid=tally.invalid,
            refused=tally.refused,
            new_authors_refused=tally.new_authors_refused,
        )

    def close(self) -> None:
        self._reader.close()

    # --- helpers ---------------------------------------------------------------

    async def _store_part(self, part: list[rec.Record], now: int, tally: _Tally) -> None:
        result = await trio.to_thread.run_sync(
            lambda: self.store.add_records(part, now_ms=now), limiter=self._db_limiter
        )
        tally.stored += len(result.added)
        tally.duplicates += len(result.duplicates)
        tally.refused += len(result.refused)
        added, dups = set(result.added), set(result.duplicates)
        for r in part:
            self._stored(r, added, dups)
        self._notify_evicted(result)

    def _within_budget(
        self, ok: list[rec.Record], unseen: set[bytes], budget: NewAuthorBudget, tally: _Tally
    ) -> list[rec.Record]:
        """``ok`` without the records of unseen authors over ``budget`` (counted as refused)."""
        kept = []
        for r in ok:
            if r.author in unseen and r.author not in self._known_authors and not budget.admit(r.author):
                tally.refused += 1
                tally.new_authors_refused += 1
            else:
                kept.append(r)
        return kept

    def _open_all(
        self, datas: list[bytes], now: int, swarms: set[bytes], find_unseen: bool
    ) -> tuple[list[rec.Record], int, int, set[bytes]]:
        """In a worker thread: open every record; also which authors were never seen here."""
        ok, bad, skewed = _open_all(datas, now, swarms)
        unseen: set[bytes] = set()
        if find_unseen:
            for author in {r.author for r in ok}:
                if author not in self._known_authors and self._reader.latest_seq(author) == 0:
                    unseen.add(author)
        return ok, bad, skewed, unseen

    def _author_known(self, author: bytes) -> bool:
        """Whether any record of ``author`` was ever stored here (cached)."""
        if author in self._known_authors:
            return True
        if self._reader.latest_seq(author) > 0:
            self._known_authors.add(author)
            return True
        return False

    def _notify_evicted(self, result: AddResult) -> None:
        if not result.evicted:
            return
        for callback in self.on_evicted:
            try:
                callback(list(result.evicted))
            except Exception:  # a bug in a listener must not stop the writer
                log.exception("on_evicted callback %r failed", callback)

    def _notify_stored(self, record: rec.Record) -> None:
        for callback in self.on_stored:
            try:
                callback(record)
            except Exception:  # a bug in a listener must not stop the writer (nor the other listeners)
                log.exception("on_stored callback %r failed for record %s", callback, record.id.hex())

    def _known_or_verify(self, record: rec.Record) -> bool:
        """True if already stored; else verify the signature (raises if bad)."""
        if self._reader.has(record.id):
            return True
        rec.verify_record(record)
        return False

    async def _enqueue(self, record: rec.Record) -> _Queued:
        item = _Queued(record)
        self._pending.add(record.id)
        try:
            await self._send.send(item)
        except BaseException:  # cancelled while the queue was full: the record is not pending
            self._pending.discard(record.id)
            raise
        return item


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


@dataclass
class _Tally:
    """What became of the records of one ``ingest_many`` call so far."""

    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    refused: int = 0
    new_authors_refused: int = 0


def _open_all(datas: list[bytes], now: int, swarms: set[bytes]) -> tuple[list[rec.Record], int, int]:
    """Open every record: (the valid ones, how many are invalid, how many are too far ahead)."""
    ok: list[rec.Record] = []
    bad = skewed = 0
    for data in datas:
        try:
            ok.append(rec.open_record(data, now_ms=now, swarms=swarms, allow_expired=True))
        except ClockSkewError:
            skewed += 1  # valid, but our clock says it is from the future: not proof of malice
        except MeshError:
            bad += 1
    return ok, bad, skewed
