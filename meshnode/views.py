"""What a node shows: trades and trust derived from its store, as seen from its key.

The store holds records and the item view; the pure core derives the rest
(:func:`meshnode.barter.derive_trades`, :class:`meshnode.trust.TrustGraph`).
This module feeds one into the other. Blocking (SQLite) calls: run it in a
worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshnode import barter, trust
from meshnode.errors import BadValue, NotFound
from meshnode.identity import key_of_peer_id
from meshnode.ids import short_id
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


def offer_infos(store: Store, ids: set[bytes] | None = None) -> dict[bytes, barter.OfferInfo]:
    """What barter needs to know of the offers ``ids`` (default: every offer in a trade)."""
    if ids is None:
        ids = set()
        for r in store.records_of_type("proposal"):
            ids.update(r.body.give, r.body.take)
        for r in store.records_of_type("reply"):
            ids.update(r.body.give, r.body.take)
    withdrawn = store.withdrawals() if ids else {}
    out: dict[bytes, barter.OfferInfo] = {}
    for oid in ids:
        item = store.item(oid)
        if item is not None and item.type == "offer":
            out[oid] = barter.OfferInfo(
                id=oid, author=item.author, kind=item.kind, withdrawn_at=withdrawn.get(oid)
            )
    return out


def trade_book(store: Store, now_ms: int, swarm: bytes | None = None) -> barter.TradeBook:
    """Every trade this node knows of, derived from its proposals and replies."""
    proposals = store.records_of_type("proposal", swarm=swarm)
    replies = store.records_of_type("reply", swarm=swarm)
    ids: set[bytes] = set()
    for r in (*proposals, *replies):
        ids.update(r.body.give, r.body.take)
    return barter.derive_trades(proposals, replies, offer_infos(store, ids), now_ms)


@dataclass(frozen=True)
class TrustView:
    """Trust scores of every key, seen from ``source``."""

    source: bytes
    graph: trust.TrustGraph
    scores: dict[bytes, float]

    def score(self, key: bytes) -> float:
        return 1.0 if key == self.source else self.scores.get(key, 0.0)


def trust_view(store: Store, source: bytes, now_ms: int, book: barter.TradeBook | None = None) -> TrustView:
    book = book if book is not None else trade_book(store, now_ms)
    edges = trust.edges_from_attestations(store.attestations(now_ms=now_ms), now_ms)
    edges += trust.edges_from_trades(book.completed_pairs())
    graph = trust.TrustGraph(edges)
    return TrustView(source=source, graph=graph, scores=graph.scores(source))


def find_trade(book: barter.TradeBook, proposal_id: bytes) -> barter.Trade:
    trade = book.trades.get(proposal_id)
    if trade is None:
        raise NotFound(f"no proposal {short_id(proposal_id)} on this node: see 'meshnode proposals'")
    return trade
