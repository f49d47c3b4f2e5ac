"""The inbox: which stored records a node's owner should hear about.

Pure: no I/O and no clock. The daemon's feed (:mod:`meshnode.api.feed`)
calls :func:`notices_for` with every record it stores, gives it what only the
store knows (the parties of a trade, the trust in an author, the matches
found for an offer or a want), keeps the notices and streams them to
``meshnode watch``.

A :class:`Notice` says that one record matters to ``me`` and why:

``proposal``  someone proposed a trade to me (``record`` the proposal,
              ``about`` the same id).
``move``      the other party replied in one of my trades (accept, counter,
              decline, cancel, complete): ``record`` the reply, ``about``
              the proposal.
``vouch``     someone attested about me (a vouch or a warning):
              ``record`` the attest.
``match``     an offer or a want that matches one of mine, whichever arrived
              last (``record`` the other person's item, ``about`` mine), or
              my own new offer or want matching a neighbour's (the same two
              ids): a want added before the matching offer, or after it,
              gives the same notice.
``offer``     an offer from someone I trust at least
              :data:`TRUSTED_OFFER_LEVEL` (``record`` the offer), unless it
              is already a ``match``.
``ring``      someone proposed a trade ring I am a party to (``record`` the
              ring, ``about`` the same id).
``ringmove``  another party moved in one of my rings (accept, decline,
              complete): ``record`` the move, ``about`` the ring.
``due``       a loan I lent or borrowed is due within :data:`REMIND_BEFORE_MS`
              (``record`` the loan's latest move, ``about`` the proposal).
``overdue``   a loan I lent or borrowed is past its due date (the same ids).
``payment``   someone paid me in the swarm's currency (``record`` the
              transfer, ``about`` the trade it names, if any; whether it
              counts is the ledger's to say).
``topay``     a trade I received a priced offer in is done and I have not
              paid for it yet (``record`` the trade's latest move, ``about``
              the proposal; kept by :mod:`meshnode.api.ledgerservice`).
``fork``      someone signed two transfers at one place of their chain, a
              proof of double spending (``record`` and ``about`` the two
              transfers; kept by :mod:`meshnode.api.ledgerservice`).
``poolreached`` a pool I pledged to (my newest pledge is more than 0) or
              organise has reached its minimum and is still open
              (``record`` and ``about`` the pool: once per pool).
``poolclosed`` such a pool closed: ``closes`` has passed and it is closed,
              failed, confirmed or delivered, not cancelled (the same ids).
``poolmove``  the organiser of a pool I pledged to confirmed, cancelled or
              marked it delivered (``record`` the move, ``about`` the pool).

Nothing I signed myself is a notice, except through the match it finds. A
notice is identified by ``(kind, record, about)``: a record stored twice, or
a match found from both sides, is one notice. The loan reminders come from
time, not from a record arriving: :func:`loan_reminders` says which are due
``now_ms``; the same loan reminds once per due date (an extend is a new
latest move, so it reminds again). The pool notices come from time too:
:func:`pool_reminders` says which are due ``now_ms``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meshnode.barter import DAY_MS, LOAN_STATES, Trade
from meshnode.pools import CANCELLED, REACHED, Pool
from meshnode.records import (
    AttestBody,
    PoolMoveBody,
    ProposalBody,
    Record,
    ReplyBody,
    RingBody,
    RingMoveBody,
    TransferBody,
)

#: The kinds of notice, in the order the inbox explains them.
KINDS: tuple[str, ...] = (
    "proposal",
    "move",
    "ring",
    "ringmove",
    "vouch",
    "match",
    "offer",
    "due",
    "overdue",
    "payment",
    "topay",
    "fork",
    "poolreached",
    "poolclosed",
    "poolmove",
)
#: A loan reminds both parties this long before its due date.
REMIND_BEFORE_MS = DAY_MS
#: An offer from a neighbour trusted at least this much is a notice.
TRUSTED_OFFER_LEVEL = 0.5


@dataclass(frozen=True)
class Notice:
    """One thing the inbox tells: ``kind``, the ``record`` that caused it, ``about`` what, by ``peer``."""

    kind: str
    record: bytes
    peer: bytes
    about: bytes = b""

    @property
    def key(self) -> tuple[str, bytes, bytes]:
        """What identifies the notice: the same key is the same notice."""
        return (self.kind, self.record, self.about)


@dataclass(frozen=True)
class ItemMatch:
    """A match the store found for an item: ``mine`` is my item, ``theirs`` a neighbour's, by ``peer``."""

    mine: bytes
    theirs: bytes
    peer: bytes


def notices_for(
    record: Record,
    *,
    me: bytes,
    trade_parties: tuple[bytes, ...] | None = None,
    author_trust: float = 0.0,
    matches: Iterable[ItemMatch] = (),
) -> list[Notice]:
    """The notices one stored ``record`` gives ``me``.

    ``trade_parties``: for a reply, the (proposer, responder) of its trade,
    if the proposal is known; for a ring move, the ring's parties, if the
    ring is known; for a pool move, the pool's organiser then its pledgers
    (newest pledge above 0), if the pool is known. ``author_trust``: my trust in the record's
    author. ``matches``: for an offer or a want, the matches the store found
    between it and items on the other side (mine if the record is not;
    neighbours' if it is mine); the others are ignored.
    """
    body = record.body
    mine = record.author == me
    out: list[Notice] = []
    if record.type in ("offer", "want"):
        for m in matches:
            if mine and m.mine == record.id and m.peer != me:
                out.append(Notice("match", m.theirs, m.peer, m.mine))
            elif not mine and m.theirs == record.id and m.peer == record.author:
                out.append(Notice("match", record.id, record.author, m.mine))
        if record.type == "offer" and not mine and not out and author_trust >= TRUSTED_OFFER_LEVEL:
            out.append(Notice("offer", record.id, record.author))
    elif mine:
        return []
    elif isinstance(body, ProposalBody) and body.to == me:
        out.append(Notice("proposal", record.id, record.author, record.id))
    elif isinstance(body, ReplyBody) and trade_parties is not None and me in trade_parties:
        if record.author in trade_parties:
            out.append(Notice("move", record.id, record.author, body.proposal))
    elif isinstance(body, RingBody) and me in body.parties:
        out.append(Notice("ring", record.id, record.author, record.id))
    elif isinstance(body, RingMoveBody) and trade_parties is not None and me in trade_parties:
        if record.author in trade_parties:
            out.append(Notice("ringmove", record.id, record.author, body.ring))
    elif isinstance(body, PoolMoveBody) and trade_parties and me in trade_parties[1:]:
        if record.author == trade_parties[0]:
            out.append(Notice("poolmove", record.id, record.author, body.pool))
    elif isinstance(body, AttestBody) and body.subject == me:
        out.append(Notice("vouch", record.id, record.author))
    elif isinstance(body, TransferBody) and body.to == me:
        out.append(Notice("payment", record.id, record.author, body.trade or b""))
    return _unique(out)


def loan_reminders(trades: Iterable[Trade], *, me: bytes, now_ms: int) -> list[Notice]:
    """The ``due`` and ``overdue`` notices of my loans that are out, as of ``now_ms``.

    A loan handed over (or overdue, :mod:`meshnode.barter`) that I lent or
    borrowed gives ``overdue`` once ``now_ms`` reaches its due date, else
    ``due`` once it is within :data:`REMIND_BEFORE_MS` of it; ``peer`` is
    the other party. Other trades give nothing.
    """
    out: list[Notice] = []
    for t in trades:
        if t.state not in LOAN_STATES or t.due is None or t.role(me) is None:
            continue
        if now_ms >= t.due:
            out.append(Notice("overdue", t.latest_move, t.other(me), t.proposal_id))
        elif now_ms >= t.due - REMIND_BEFORE_MS:
            out.append(Notice("due", t.latest_move, t.other(me), t.proposal_id))
    return out


def pool_reminders(pools: Iterable[Pool], *, me: bytes, now_ms: int) -> list[Notice]:
    """The ``poolreached`` and ``poolclosed`` notices of the pools I pledged to or organise, as of ``now_ms``.

    ``poolreached`` while a pool is ``reached`` (before ``closes``, at least
    ``min`` pledged); ``poolclosed`` once ``now_ms`` reaches ``closes``,
    unless the organiser cancelled it. ``record`` and ``about`` are the pool
    id (each fires once per pool), ``peer`` the organiser.
    """
    out: list[Notice] = []
    for p in pools:
        if p.organiser != me and p.share_of(me) is None:
            continue
        if now_ms >= p.closes:
            if p.state != CANCELLED:
                out.append(Notice("poolclosed", p.pool_id, p.organiser, p.pool_id))
        elif p.state == REACHED:
            out.append(Notice("poolreached", p.pool_id, p.organiser, p.pool_id))
    return out


def _unique(notices: list[Notice]) -> list[Notice]:
    seen: set[tuple[str, bytes, bytes]] = set()
    out = []
    for n in notices:
        if n.key not in seen:
            seen.add(n.key)
            out.append(n)
    return out
