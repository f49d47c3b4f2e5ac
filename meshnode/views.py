"""What a node shows: trades and trust derived from its store, as seen from its key.

The store holds records and the item view; the pure core derives the rest
(:func:`meshnode.barter.derive_trades`, :class:`meshnode.trust.TrustGraph`).
This module feeds one into the other. Its plain functions block (SQLite):
run them in a worker thread. :class:`ViewCache` keeps what they derive.

What each view needs
--------------------
* **Trades with replies** (:func:`trade_core`): reservations couple trades, so
  every trade that has a reply is folded together, from its proposal, the
  replies and the offers they name (one batch look-up). A proposal no reply
  names stays ``proposed`` (or ``expired``) and touches no other trade: it
  needs no fold and no offer look-up (:func:`open_trades`).
* **Trust** (:func:`trust_view`): the live attestations and the completed
  trades, which are all trades with replies; never the proposals nobody
  answered. A flood of proposals naming 32 random ids each costs nothing here.
* **The trade book** (:func:`trade_book`): the trades with replies, the
  open proposals beside them, and each open trade closed (:func:`book_as_of`,
  :func:`meshnode.barter.close`): expired once its deadline passes, or
  unavailable once an offer its terms name is withdrawn (the store's
  withdrawals, one small query) or given away by a completed trade.

Caching: why invalidation by ingest
-----------------------------------
Deriving from a flooded store takes seconds, so requests never derive:
:class:`ViewCache` keeps one :class:`Derived` snapshot and is told of every
record stored (it is one of the ingest's ``on_stored`` listeners) and of
every removal (:meth:`ViewCache.invalidate`, after pruning). A store counter
would say *that* something changed, not *what*: under a flood something
always changes, and the cache would be rebuilt on every request. Told the
record, the cache judges it against the snapshot (:meth:`Derived.absorb`):

* an attest matters only if its author is the node's own key or a key its
  trust walk reaches (a key it does not reach passes no trust nor distrust
  on, so strangers vouching for strangers change no score);
* a reply matters if it is from a party of a known trade; a reply to an
  unknown proposal waits, and that proposal matters when it arrives;
* any other proposal is simply added as an open trade (no rebuild), unless
  it names an offer withdrawn since the snapshot (then it matters);
* an offer, update or withdraw matters if a trade with replies names it; a
  withdraw also if an open trade names its offer (else it is remembered,
  see the proposal rule above);
* a ring or a ring move always matters (a completed ring gives offers away,
  which closes the open trades naming them; rings are few);
* and time: the snapshot is stale once a live attest of a reached key
  expires.

Everything else (offers and wants nobody trades, profiles, strangers'
vouches) leaves the snapshot current. A stale snapshot is rebuilt in a
worker thread (``trio.to_thread``), one rebuild at a time; records stored
meanwhile are judged against the new snapshot when it is done. A request
waits for at most one rebuild that started after it arrived (and the end of
one already running): what it gets holds every record stored before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace

import trio

from meshnode import barter, ringtrade, trust
from meshnode.errors import BadValue, NotFound
from meshnode.identity import key_of_peer_id
from meshnode.ids import short_id
from meshnode.records import Record, decode_record
from meshnode.store import Store

MIN_PREFIX_HEX = 6


def parse_id(text: str, store: Store) -> bytes:
    """A full record id from its hex form or a unique hex prefix (≥ 6 digits)."""
    t = text.strip().lower()
    if not t or any(c not in "0123456789abcdef" for c in t):
        raise BadValue(f"expected a record id in hex (as shown by meshnode), found {text!r}")
    if len(t) == 64:
        return bytes.fromhex(t)
    if len(t) < MIN_PREFIX_HEX or len(t) > 64:
        raise BadValue(
            f"expected a record id of 64 hex digits or a prefix of at least {MIN_PREFIX_HEX}, found {text!r}"
        )
    matches = store.ids_with_prefix(bytes.fromhex(t[: len(t) - len(t) % 2]), limit=64)
    matches = [m for m in matches if m.hex().startswith(t)]
    if not matches:
        raise NotFound(f"no record with id {text!r} on this node")
    if len(matches) > 1:
        raise BadValue(f"id {text!r} is ambiguous ({len(matches)} records): give more digits")
    return matches[0]


def parse_peer(text: str) -> bytes:
    """An author key from a peer id (12D3KooW…) or 64 hex digits."""
    return key_of_peer_id(text)


#: Trust scores are ranked by this many decimal digits (equal after rounding: one level).
RANK_DIGITS = 3
#: Records whose id or target is an offer a trade may name.
_OFFER_TYPES = ("offer", "update", "withdraw")


def offer_infos(store: Store, ids: set[bytes] | None = None) -> dict[bytes, barter.OfferInfo]:
    """What barter needs to know of the offers ``ids`` (default: every offer in a trade)."""
    if ids is None:
        ids = set()
        for r in (*store.records_of_type("proposal"), *store.records_of_type("reply")):
            ids.update(r.body.give, r.body.take)
    return {
        oid: barter.OfferInfo(
            id=oid,
            author=item.author,
            kind=item.kind,
            withdrawn_at=item.withdrawn_ts,
            max_days=item.terms.max_days if item.terms is not None else None,
        )
        for oid, item in store.items_by_id(ids).items()
        if item.type == "offer"
    }


def ring_book(
    store: Store, swarms: AbstractSet[bytes] | None, now_ms: int, consumed: AbstractSet[bytes] = frozenset()
) -> tuple[ringtrade.RingBook, dict[bytes, barter.OfferInfo]]:
    """The rings of ``swarms`` (None: all) folded, and their offers (``consumed``: given away by trades)."""
    rings = [r for r in store.records_of_type("ring") if swarms is None or r.swarm in swarms]
    moves = [r for r in store.records_of_type("ringmove") if swarms is None or r.swarm in swarms]
    offers = offer_infos(store, {oid for r in rings for oid in r.body.offers})
    return ringtrade.derive_rings(rings, moves, offers, now_ms, consumed=consumed), offers


def named_offers(records: Iterable[Record]) -> set[bytes]:
    """Every offer id the proposals and replies ``records`` name."""
    ids: set[bytes] = set()
    for r in records:
        ids.update(r.body.give, r.body.take)
    return ids


def trade_core(store: Store, now_ms: int) -> barter.TradeBook:
    """The trades that have replies (and the replies waiting for their proposal), folded.

    Holds every reservation, consumed offer and completed trade of the full
    book: a trade without replies has none.
    """
    return _fold(store, now_ms)[0]


def _fold(store: Store, now_ms: int) -> tuple[barter.TradeBook, set[bytes], set[bytes]]:
    """:func:`trade_core`, the proposal ids the replies name, and the offers the fold looked up."""
    replies = store.records_of_type("reply")
    answered = {r.body.proposal for r in replies}
    proposals = [r for r in map(decode_record, store.raw_records(answered).values()) if r.type == "proposal"]
    offers = named_offers([*proposals, *replies])
    return barter.derive_trades(proposals, replies, offer_infos(store, offers), now_ms), answered, offers


def open_trades(store: Store, answered: set[bytes]) -> dict[bytes, barter.Trade]:
    """The trades of the proposals not in ``answered`` (no reply names them): each as proposed."""
    return {r.id: barter.start_trade(r) for r in store.records_of_type("proposal") if r.id not in answered}


def book_as_of(
    core: barter.TradeBook,
    open_: dict[bytes, barter.Trade],
    now_ms: int,
    withdrawn: Mapping[bytes, int] | None = None,
    given_by_rings: AbstractSet[bytes] = frozenset(),
) -> barter.TradeBook:
    """The trade book of ``core`` and the open trades ``open_``, closed as of ``now_ms``.

    A trade still open (proposed or countered) is expired or unavailable as
    :func:`meshnode.barter.derive_trades` does (:func:`meshnode.barter.close`;
    ``withdrawn``: offer id -> withdrawal time, :meth:`Store.withdrawals`),
    and unavailable too when a completed ring gave one of its offers away
    (``given_by_rings``: :attr:`meshnode.ringtrade.RingBook.consumed`).
    Trades come oldest first.
    """
    trades = {**open_, **core.trades}
    consumed = core.consumed | given_by_rings
    for pid, t in trades.items():
        trades[pid] = barter.close(t, now_ms=now_ms, withdrawn=withdrawn or {}, consumed=consumed)
    ordered = dict(sorted(trades.items(), key=lambda kv: (kv[1].created_ts, kv[1].proposer, kv[0])))
    return replace(core, trades=ordered)


def trade_book(store: Store, now_ms: int) -> barter.TradeBook:
    """Every trade this node knows of, derived from its proposals and replies."""
    core = trade_core(store, now_ms)
    rings, _ = ring_book(store, None, now_ms, core.consumed)
    return book_as_of(core, open_trades(store, set(core.trades)), now_ms, store.withdrawals(), rings.consumed)


@dataclass(frozen=True)
class TrustView:
    """Trust scores of every key, seen from ``source``.

    ``ranking``: the keys a listing ranks by trust, each with its level
    (score rounded to :data:`RANK_DIGITS`): ``source`` first (1.0), then
    every key whose level is above 0.
    """

    source: bytes
    graph: trust.TrustGraph
    scores: dict[bytes, float]
    ranking: dict[bytes, float] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        levels = {self.source: 1.0}
        for key, score in self.scores.items():
            level = round(score, RANK_DIGITS)
            if level > 0 and key != self.source:
                levels[key] = level
        object.__setattr__(self, "ranking", levels)

    def score(self, key: bytes) -> float:
        return 1.0 if key == self.source else self.scores.get(key, 0.0)


def _trust_of(attests: list[Record], core: barter.TradeBook, source: bytes, now_ms: int) -> TrustView:
    edges = trust.edges_from_attestations(attests, now_ms)
    edges += trust.edges_from_trades(core.completed_pairs(), core.late_loans(now_ms))
    graph = trust.TrustGraph(edges)
    return TrustView(source=source, graph=graph, scores=graph.scores(source))


def trust_view(store: Store, source: bytes, now_ms: int, core: barter.TradeBook | None = None) -> TrustView:
    """Trust seen from ``source``: live attestations and completed trades (``core``: :func:`trade_core`)."""
    core = core if core is not None else trade_core(store, now_ms)
    return _trust_of(store.attestations(now_ms=now_ms), core, source, now_ms)


@dataclass
class Derived:
    """One derivation of trades and trust (:func:`derive`), and what can make it stale.

    ``open`` grows as proposals arrive (:meth:`absorb`); the rest is fixed.
    ``answered``: proposal ids some stored reply names (also those not
    stored). ``offers``: the offers the trades with replies name.
    ``withdrawn``: the store's withdrawals (item id -> when); ``open_offers``:
    the offers the open trades name; ``withdrawn_since``: offers a withdraw
    absorbed since names (not yet in ``withdrawn``). ``expires_at``: when
    the first live attest of a reached key expires (the trust view changes
    then), if any does. ``ring_reserved`` and ``given_by_rings``: what the
    rings hold (:attr:`meshnode.ringtrade.RingBook.reserved`, ``consumed``).
    """

    core: barter.TradeBook
    open: dict[bytes, barter.Trade]
    trust: TrustView
    answered: set[bytes]
    offers: frozenset[bytes]
    expires_at: int | None
    withdrawn: dict[bytes, int] = field(default_factory=dict)
    open_offers: set[bytes] = field(default_factory=set)
    withdrawn_since: set[bytes] = field(default_factory=set)
    ring_reserved: Mapping[bytes, bytes] = field(default_factory=dict)
    given_by_rings: frozenset[bytes] = frozenset()

    def current_at(self, now_ms: int) -> bool:
        """Whether time alone leaves the snapshot as it is at ``now_ms``."""
        return self.expires_at is None or now_ms < self.expires_at

    def absorb(self, record: Record) -> bool:
        """Take in a record just stored; True if the snapshot is stale because of it.

        See the module docstring for which records matter.
        """
        kind = record.type
        if kind in ("ring", "ringmove"):
            return True  # a completed ring gives offers away (rings are few: derive again)
        if kind == "attest":
            return record.author == self.trust.source or record.author in self.trust.scores
        if kind == "reply":
            pid = record.body.proposal
            trade = self.core.trades.get(pid) or self.open.get(pid)
            if trade is None:
                self.answered.add(pid)
                return False
            return trade.role(record.author) is not None
        if kind == "proposal":
            named = {*record.body.give, *record.body.take}
            if record.id in self.answered or not named.isdisjoint(self.withdrawn_since):
                return True
            self.open.setdefault(record.id, barter.start_trade(record))
            self.open_offers |= named
            return False
        if kind == "withdraw" and record.body.target not in self.offers:
            if record.body.target in self.open_offers:
                return True
            self.withdrawn_since.add(record.body.target)
            return False
        if kind in _OFFER_TYPES:
            return (record.id if kind == "offer" else record.body.target) in self.offers
        return False

    def book(self, open_: dict[bytes, barter.Trade], now_ms: int) -> barter.TradeBook:
        """The trade book at ``now_ms`` (``open_``: a copy of :attr:`open`, which may grow meanwhile)."""
        return book_as_of(self.core, open_, now_ms, self.withdrawn, self.given_by_rings)


def derive(store: Store, source: bytes, now_ms: int) -> Derived:
    """Derive trades and trust from ``store`` as ``source`` sees them at ``now_ms`` (blocking)."""
    core, answered, offers = _fold(store, now_ms)
    attests = store.attestations(now_ms=now_ms)
    view = _trust_of(attests, core, source, now_ms)
    expiries = [
        a.body.expires
        for a in attests
        if a.body.expires is not None and (a.author == source or a.author in view.scores)
    ]
    for t in core.trades.values():  # a loan falls overdue, then late, with time alone
        if t.due is not None and t.state == barter.HANDED_OVER:
            expiries.append(t.due)
        elif t.due is not None and t.state == barter.OVERDUE:
            expiries.append(t.due + barter.LOAN_GRACE_MS + 1)
    open_ = open_trades(store, answered)
    rings, _ = ring_book(store, None, now_ms, core.consumed)
    return Derived(
        core=core,
        open=open_,
        trust=view,
        answered=answered,
        offers=frozenset(offers),
        expires_at=min(expiries, default=None),
        withdrawn=store.withdrawals(),
        open_offers={oid for t in open_.values() for oid in t.offers},
        ring_reserved=rings.reserved,
        given_by_rings=rings.consumed,
    )


def find_trade(book: barter.TradeBook, proposal_id: bytes) -> barter.Trade:
    trade = book.trades.get(proposal_id)
    if trade is None:
        raise NotFound(f"no proposal {short_id(proposal_id)} on this node: see 'meshnode proposals'")
    return trade


class ViewCache:
    """The current :class:`Derived` snapshot of one store, as ``source`` sees it (see the module docstring).

    Feed it every record stored (:meth:`on_stored`, an ingest listener) and
    call :meth:`invalidate` after records are removed. ``derivations``
    counts the snapshots derived so far.
    """

    def __init__(self, store: Store, source: bytes, clock: Callable[[], int]) -> None:
        self._store = store
        self._source = source
        self._clock = clock
        self._derived: Derived | None = None
        self._stale = False
        self._building: trio.Event | None = None
        self._arrived: list[Record] = []
        self._removed_meanwhile = False
        self._started = 0  # rebuilds started
        self._done = 0  # the number of the rebuild that made the current snapshot
        self.derivations = 0

    def on_stored(self, record: Record) -> None:
        """A record was stored: mark the snapshot stale if it matters (cheap: runs in the ingest task)."""
        if self._building is not None:
            self._arrived.append(record)  # judged against the snapshot being built
        elif self._derived is not None and not self._stale:
            self._stale = self._derived.absorb(record)

    def invalidate(self) -> None:
        """Records were removed (pruned or evicted): derive again before the next answer."""
        self._stale = True
        if self._building is not None:
            self._removed_meanwhile = True

    async def derived(self) -> Derived:
        """A snapshot holding every record stored before the call.

        Waits for at most one rebuild that starts after the call (and for the
        end of one already running, which may be enough).
        """
        called = self._started
        while True:
            derived = self._derived
            if derived is not None:
                if self._done > called or (not self._stale and derived.current_at(self._clock())):
                    return derived
            if self._building is None:
                await self._rebuild()
            else:
                await self._building.wait()

    async def trust(self) -> TrustView:
        return (await self.derived()).trust

    def trust_now(self) -> Callable[[bytes], float]:
        """Trust as the latest snapshot has it, without waiting for a rebuild (0 for all before the first)."""
        derived = self._derived
        return derived.trust.score if derived is not None else (lambda key: 0.0)

    async def ring_holds(self) -> tuple[Mapping[bytes, bytes], frozenset[bytes]]:
        """What rings hold: offer id -> the accepted ring reserving it, and the offers completed rings gave.

        Only accepted rings hold offers, and time never undoes an accept, so the snapshot's
        rings stay right until a ring record arrives (which makes it stale).
        """
        derived = await self.derived()
        return derived.ring_reserved, derived.given_by_rings

    async def book(self) -> barter.TradeBook:
        """Every trade this node knows of, as of now."""
        derived = await self.derived()
        open_ = dict(derived.open)  # copied here: arrivals add to it while the thread works
        return await trio.to_thread.run_sync(derived.book, open_, self._clock())

    async def _rebuild(self) -> None:
        self._started += 1
        number = self._started
        self._building = done = trio.Event()
        self._arrived = []
        self._removed_meanwhile = False
        try:
            derived = await trio.to_thread.run_sync(derive, self._store, self._source, self._clock())
            self.derivations += 1
            stale = self._removed_meanwhile
            for record in self._arrived:
                stale = derived.absorb(record) or stale
            self._derived, self._stale, self._done = derived, stale, number
        finally:
            self._building = None
            self._arrived = []
            done.set()
