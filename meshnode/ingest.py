"""The one path by which records enter a node's store.

Gossip, sync and the local API all hand records here. Checks run cheapest
first: size and per-peer rate before decoding; swarm, clock skew, expiry and
per-author rate before the signature; the signature (the expensive part,
~80 % of ingest) in worker threads, since PyNaCl releases the GIL. Verified
records go to ONE writer task that stores them in batches, one transaction
per batch, in a worker thread.

Expired records are not refused here: whether a record still matters is the
store's call (an expired offer may have been extended by a later update; an
expired proposal may have been accepted in time). The store refuses ids it has
already pruned, and prunes what has expired.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
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

    def close(self) -> None: ...


class RecordStore(Protocol):
    """What ingest needs of the store (:class:`meshnode.store.Store` is one)."""

    def add_records(self, records: Sequence[rec.Record], *, now_ms: int) -> AddResult: ...

    def open_reader(self) -> RecordLookup: ...


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    rate_limited: int = 0
    too_new: int = 0  # valid as far as we know, but from the future by our clock: ignored, nobody blamed
    refused_by_store: int = 0
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
        verify_threads: int = 2,
        peer_rate: float = 200.0,
        peer_burst: float = 1000.0,
        author_rate: float = 20.0,
        author_burst: float = 500.0,
    ) -> None:
        self.store = store
        # Look-ups use their own read-only connection, so they never wait
        # behind a write batch (WAL lets readers run beside the writer).
        self._reader = store.open_reader()
        self._swarm_ids = swarm_ids
        self._clock = clock
        self._batch_size = batch_size
        self._send, self._recv = trio.open_memory_channel[rec.Record](queue_size)
        self._limiter = trio.CapacityLimiter(verify_threads)
        self._db_limiter = trio.CapacityLimiter(1)
        self._peer_limit = KeyedRateLimit(rate=peer_rate, burst=peer_burst)
        self._author_limit = KeyedRateLimit(rate=author_rate, burst=author_burst)
        self._recent = _RecentIds()
        self._pending: set[bytes] = set()
        self.stats = IngestStats()
        #: Called (in the trio thread) with every record newly stored.
        self.on_stored: list[Callable[[rec.Record], None]] = []

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
            await self._write(batch)

    async def _write(self, records: list[rec.Record]) -> None:
        now = self._clock()
        try:
            result = await trio.to_thread.run_sync(
                lambda: self.store.add_records(records, now_ms=now), limiter=self._db_limiter
            )
        except StoreError as exc:  # SQLite failed, the batch was rolled back: keep running, report it
            self.stats.last_error = f"store failed: {exc}"
            log.error("storing a batch of %d records failed: %s", len(records), exc)
            self._pending.difference_update(r.id for r in records)
            return
        except Exception as exc:  # a bug: one batch must not stop every later one, but say so loudly
            self.stats.last_error = f"storing a batch raised {exc!r}"
            log.exception("storing a batch of %d records raised an unexpected error", len(records))
            self._pending.difference_update(r.id for r in records)
            return
        self.stats.batches += 1
        added = set(result.added)
        self.stats.stored += len(added)
        self.stats.duplicates += len(result.duplicates)
        self.stats.refused_by_store += len(result.refused)
        for r in records:
            self._pending.discard(r.id)
            if r.id in added or r.id in result.duplicates:
                self._recent.add(r.id)
            if r.id in added:
                self._notify_stored(r)

    # --- entry points ----------------------------------------------------------

    async def judge(self, data: bytes, peer: str, swarm: Swarm) -> Verdict:
        """The gossip validator's question: relay this record or not? Never raises."""
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
        await self._enqueue(record)
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
        for _, error in result.refused:
            raise error
        if record.id in result.added:
            self.stats.stored += 1
            self._recent.add(record.id)
            self._notify_stored(record)

    async def ingest_many(
        self, datas: Iterable[bytes], *, swarm_ids: set[bytes] | None = None
    ) -> BatchReport:
        """Validate and store many encoded records (the sync path); wait until stored.

        Decoding and signature checks run in worker threads in chunks, so a
        large batch uses more than one core and leaves the trio loop free.
        """
        swarms = swarm_ids if swarm_ids is not None else self._swarm_ids()
        now = self._clock()
        chunk: list[bytes] = []
        good: list[rec.Record] = []
        invalid = refused = 0

        async def flush() -> None:
            nonlocal invalid, refused
            ok, bad, skewed = await trio.to_thread.run_sync(
                _open_all, list(chunk), now, swarms, limiter=self._limiter
            )
            good.extend(ok)
            invalid += bad
            refused += skewed
            chunk.clear()

        for data in datas:
            chunk.append(data)
            if len(chunk) >= 256:
                await flush()
        if chunk:
            await flush()
        stored = dup = 0
        for i in range(0, len(good), self._batch_size):
            part = good[i : i + self._batch_size]
            result = await trio.to_thread.run_sync(
                lambda part=part: self.store.add_records(part, now_ms=now), limiter=self._db_limiter
            )
            stored += len(result.added)
            dup += len(result.duplicates)
            refused += len(result.refused)
            added, dups = set(result.added), set(result.duplicates)
            for r in part:
                if r.id in added or r.id in dups:
                    self._recent.add(r.id)
                if r.id in added:
                    self._notify_stored(r)
        self.stats.stored += stored
        self.stats.duplicates += dup
        self.stats.invalid += invalid
        self.stats.refused_by_store += refused
        return BatchReport(stored=stored, duplicates=dup, invalid=invalid, refused=refused)

    def close(self) -> None:
        self._reader.close()

    # --- helpers ---------------------------------------------------------------

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

    async def _enqueue(self, record: rec.Record) -> None:
        self._pending.add(record.id)
        try:
            await self._send.send(record)
        except BaseException:  # cancelled while the queue was full: the record is not pending
            self._pending.discard(record.id)
            raise


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
