"""The inbox feed: finds the owner's notices in what the node stores, keeps them, tells the watchers.

The node calls :meth:`InboxFeed.on_stored` with every record it stores (its
own too); that only queues the record. :meth:`InboxFeed.run` takes what has
queued, works out the notices in a worker thread (:func:`meshnode.inbox.
notices_for`, with what the store knows: the parties of a trade, the owner's
live offers and wants to match against, a neighbour's items that match a new
one of the owner's), keeps them (:meth:`meshnode.store.Store.add_notices`)
and hands each new one to every watcher (the API's event stream).

Matching an arriving neighbour's item is done in memory against the owner's
own live offers and wants (a few, reloaded when one of them changes), so a
sync of 100,000 strangers' offers costs no query per record. A new item of
the owner's is matched against the neighbours' by the store
(:meth:`meshnode.store.Store.offers_matching` / ``wants_matching``).

A watcher that does not keep up (its buffer of :data:`WATCH_BUFFER` fills)
is dropped: its stream ends and the client reconnects from the last notice
it saw (the stream's ``Last-Event-ID``), losing nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

import trio

from meshnode import matching
from meshnode.barter import Trade
from meshnode.inbox import ItemMatch, Notice, loan_reminders, notices_for
from meshnode.pools import derive_pools
from meshnode.records import ItemBody, PoolMoveBody, ProposalBody, Record, ReplyBody, RingBody, RingMoveBody
from meshnode.store import LiveItem, Store
from meshnode.store.inbox import StoredNotice

log = logging.getLogger(__name__)

#: Notices a watcher may have unread before it is dropped.
WATCH_BUFFER = 256
#: How many of the owner's live offers (and wants) are matched against arrivals.
MAX_OWN_ITEMS = 1000
#: How many neighbours' items a new item of the owner's is matched with at most.
MAX_MATCHES = 20
_ITEM_TYPES = frozenset({"offer", "want", "update", "withdraw"})
_TYPES = _ITEM_TYPES | {"proposal", "reply", "attest", "ring", "ringmove", "transfer", "poolmove"}


def arrived_item(record: Record) -> matching.Item:
    """An offer or want as its record states it (what :mod:`meshnode.matching` reads)."""
    body: ItemBody = record.body
    return matching.Item(
        record.id, record.type, body.kind, body.title, body.desc, body.tags, record.author, record.swarm
    )


class OwnItems:
    """The owner's live offers and wants, indexed by the words and tags a match needs.

    A match needs a shared tag or a shared word (:mod:`meshnode.matching`),
    so only the owner's items sharing one with an arriving item are handed
    to :func:`meshnode.matching.match`: a sync of many strangers' offers
    costs one tokenising per record, not one match per record and own item.
    """

    def __init__(self, items: list[LiveItem]) -> None:
        self.items = items
        self._by_key: dict[tuple[str, str, str], list[LiveItem]] = {}
        for it in items:
            for key in self._keys(it, it.type):
                self._by_key.setdefault(key, []).append(it)

    @staticmethod
    def _keys(item: matching.Matchable, as_type: str) -> set[tuple[str, str, str]]:
        if item.type == "want":
            words = matching.want_words(item)
        else:
            head, desc = matching.offer_words(item)
            words = head | desc
        return {(as_type, "w", w) for w in words} | {
            (as_type, "t", t) for t in matching.folded_tags(item.tags)
        }

    def candidates(self, arriving: matching.Matchable) -> list[LiveItem]:
        """The owner's items of the other type that share a word or a tag with ``arriving``."""
        other = "want" if arriving.type == "offer" else "offer"
        if not any(it.type == other for it in self.items):
            return []
        found: dict[bytes, LiveItem] = {}
        for key in self._keys(arriving, other):
            for it in self._by_key.get(key, ()):
                found[it.id] = it
        return list(found.values())


class InboxFeed:
    """The owner's notices as records arrive (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        reader: Store,
        me: bytes,
        *,
        clock: Callable[[], int],
        trust: Callable[[], Awaitable[Callable[[bytes], float]]],
    ) -> None:
        self._store = store
        self._reader = reader
        self._me = me
        self._clock = clock
        self._trust = trust
        self._queued: list[Record] = []
        self._arrived = trio.Event()
        self._watchers: set[trio.MemorySendChannel[StoredNotice]] = set()
        self._own: OwnItems | None = None  # the owner's live offers and wants (None: load them)
        self.found = 0  # notices kept so far

    def on_stored(self, record: Record) -> None:
        """A record was stored (an ingest listener: cheap, runs in the ingest task)."""
        if record.type in _TYPES:
            self._queued.append(record)
            self._arrived.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Find, keep and tell notices until cancelled."""
        task_status.started()
        while True:
            await self._arrived.wait()
            self._arrived = trio.Event()
            batch, self._queued = self._queued, []
            score = await self._trust()  # derived again only if an attest or a trade came since
            try:
                added = await trio.to_thread.run_sync(self._keep, batch, score)
            except Exception:  # a bad record or a store error must not stop the feed
                log.exception("finding inbox notices in %d records failed", len(batch))
                continue
            self.found += len(added)
            for stored in added:
                self._tell(stored)

    async def remind(self, trades: Iterable[Trade]) -> int:
        """Keep and tell the loan reminders due now (:func:`meshnode.inbox.loan_reminders`); how many are new.

        A reminder kept before is not kept or told again.
        """
        return await self.keep(loan_reminders(trades, me=self._me, now_ms=self._clock()))

    async def keep(self, notices: list[Notice]) -> int:
        """Keep ``notices`` not found in a stored record, and tell the watchers; how many are new.

        A notice kept before (same ``(kind, record, about)``) is not kept or told again.
        """
        if not notices:
            return 0
        now = self._clock()
        added = await trio.to_thread.run_sync(lambda: self._store.add_notices(notices, at=now))
        self.found += len(added)
        for stored in added:
            self._tell(stored)
        return len(added)

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[trio.MemoryReceiveChannel[StoredNotice]]:
        """New notices as they are kept; the channel ends if the watcher falls behind."""
        send, receive = trio.open_memory_channel[StoredNotice](WATCH_BUFFER)
        self._watchers.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._watchers.discard(send)
            send.close()

    def _tell(self, stored: StoredNotice) -> None:
        for send in list(self._watchers):
            try:
                send.send_nowait(stored)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._watchers.discard(send)  # too slow or gone: its stream ends, it resumes by id
                send.close()

    # --- in a worker thread ------------------------------------------------------------

    def _keep(self, batch: list[Record], score: Callable[[bytes], float]) -> list[StoredNotice]:
        now = self._clock()
        if self._own is None or any(r.author == self._me and r.type in _ITEM_TYPES for r in batch):
            self._own = self._own_items(now)
        found: list[Notice] = []
        for record in batch:
            found += self._notices(record, now, score)
        return self._store.add_notices(found, at=now) if found else []

    def _own_items(self, now: int) -> OwnItems:
        return OwnItems(
            [
                it
                for type_ in ("offer", "want")
                for it in self._reader.items(type_, author=self._me, now_ms=now, limit=MAX_OWN_ITEMS)
            ]
        )

    def _notices(self, record: Record, now: int, score: Callable[[bytes], float]) -> list[Notice]:
        body = record.body
        parties: tuple[bytes, ...] | None = None
        matches: list[ItemMatch] = []
        if isinstance(body, ReplyBody):
            proposal = self._reader.get(body.proposal)
            if proposal is not None and isinstance(proposal.body, ProposalBody):
                parties = (proposal.author, proposal.body.to)
        elif isinstance(body, RingMoveBody):
            ring = self._reader.get(body.ring)
            if ring is not None and isinstance(ring.body, RingBody):
                parties = ring.body.parties
        elif isinstance(body, PoolMoveBody):
            parties = self._pool_parties(body.pool, now)
        elif record.type in ("offer", "want"):
            matches = self._matches(record, now)
        return notices_for(
            record, me=self._me, trade_parties=parties, author_trust=score(record.author), matches=matches
        )

    def _pool_parties(self, pool_id: bytes, now: int) -> tuple[bytes, ...] | None:
        """A pool's organiser, then its pledgers (:func:`meshnode.pools.derive_pools`); None if unknown."""
        pool = self._reader.get(pool_id)
        if pool is None or pool.type != "pool":
            return None
        found = self._reader.records_of_type("pledge", swarm=pool.swarm)
        pledges = [p for p in found if p.body.pool == pool_id]
        derived = derive_pools([pool], pledges, [], now).pools.get(pool_id)
        return (pool.author, *(s.member for s in derived.shares)) if derived is not None else None

    def _matches(self, record: Record, now: int) -> list[ItemMatch]:
        item = arrived_item(record)
        if record.author == self._me:
            return [
                ItemMatch(item.id, theirs.id, theirs.author)
                for theirs in self._neighbours_matching(item, now)
            ]
        out = []
        for mine in self._own.candidates(item) if self._own is not None else ():
            if not mine.live(now):
                continue
            found = matching.match(mine, item) if item.type == "offer" else matching.match(item, mine)
            if found is not None:
                out.append(ItemMatch(mine.id, item.id, item.author))
        return out

    def _neighbours_matching(self, item: matching.Item, now: int) -> list[LiveItem]:
        """Neighbours' live items that match a new item of the owner's."""
        if item.type == "want":
            return [it for _, it in self._reader.offers_matching(item, now_ms=now, limit=MAX_MATCHES)]
        return [it for _, it in self._reader.wants_matching(item, now_ms=now, limit=MAX_MATCHES)]
