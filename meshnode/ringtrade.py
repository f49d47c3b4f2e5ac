"""Ring trades: the state of each proposed ring, derived from its ``ring`` and ``ringmove`` records.

A ring (:class:`meshnode.records.RingBody`) is proposed by one of its 3 to 5
parties: party ``i`` gives ``offers[i]`` to party ``(i + 1) % n``. Each party
answers with ``ringmove`` records (:class:`~meshnode.records.RingMoveBody`):
``accept``, ``decline`` or ``complete``. Like :mod:`meshnode.barter` this
module is a pure state machine: no I/O, no clock (time is ``now_ms``).

States
------

``proposed``    the ring is out; not every party has accepted yet.
``accepted``    every party has accepted; the ring's offers are reserved.
``completed``   every party has accepted and every party has completed (final).
``declined``    a party other than the proposer declined (final).
``cancelled``   the proposer declined: they withdrew the ring (final).
``expired``     not every party had accepted when ``expires`` came (final).
``unavailable`` a ring not yet accepted names an offer withdrawn at or before
                ``now_ms``, or given away by a completed ring or trade (final;
                :attr:`RingTrade.closed_because` says which and why).

The rules (a move that breaks one is refused, with the reason, in :attr:`RingBook.refused`)
-------------------------------------------------------------------------------------------

* Only a party may move; a move must be in the ring's swarm and timestamped
  at or after the ring record.
* Each party's **first** move of each action counts, first by
  ``(ts, seq, id)``; a second accept (decline, complete) by the same party is
  refused as a repetition. Moves are otherwise not ordered among each other:
  the state is a function of *which* moves exist, never of when they arrived.
* ``accept`` counts only if timestamped before the ring's ``expires`` (if
  any) and if no known offer of the ring was withdrawn at or before it.
  The ring is ``accepted`` once every party's accept counts. An accepted ring
  never expires or becomes unavailable.
* ``complete`` counts only once the ring is accepted (until then it is
  refused; it counts as soon as the last accept is among the records). The
  ring is ``completed`` once every party's complete counts.
* ``decline`` counts unless the ring is completed; a decline timestamped at
  or after ``expires`` of a ring not accepted is refused (the ring had
  expired first). One decline that counts ends the ring: ``cancelled`` if the
  proposer is among the decliners, else ``declined``.

Precedence: ``completed`` > ``cancelled``/``declined`` > ``accepted`` >
``expired`` > ``unavailable`` > ``proposed``.

**Equivocation.** A party who signs both ``accept`` and ``decline`` (or
``complete`` and ``decline``) has said no: the decline wins, as a no wins
over an unanswered yes in barter, and the ring is declined. The one exception
is a completed ring: completion needs the equivocator's *own* complete as
well as everyone else's, so they built on the accepted ring themselves and
their decline is refused. Consequences: nobody can undo a completed ring
(that would take withdrawing one's complete, and records are never taken
back), nobody's decline can be overridden by others, and until the ring is
completed any party can still back out, even after others have completed.
That last one is the honest limit of signed records (nothing can force a
party to deliver): the others see who completed and who declined.

Without ordering, a state can change as records arrive (a decline that
arrives late turns an accepted ring into a declined one, a late complete may
complete it and so refuse a decline); the same *set* of records always gives
the same :class:`RingBook`, whatever the order or repetition.

Offers, reservations and consumption
------------------------------------

Offers are known through :class:`meshnode.barter.OfferInfo`. A ring that
names a known offer of another author than the party who gives it is refused
(with every move on it). An ``accepted`` ring reserves all its offers
(:attr:`RingBook.reserved`; when two accepted rings name the same offer,
the one accepted first, by the ``ts`` of its last counted accept then ring
id, holds it). A ``completed`` ring, as a completed barter trade:

* consumes ``give`` and ``swap`` offers (out of circulation for good,
  :attr:`RingBook.consumed`);
* releases ``lend`` and ``service`` offers (they may be traded anew);
* consumes offers it does not know (never promise twice what may be gone).

The fold does not refuse an accept because another ring or trade holds the
offer: an owner who accepts two rings naming the same offer sells it twice,
and no order of records can prevent that. :func:`check_move`, which the
service calls before signing a move, refuses it instead (and everything the
fold would refuse), so an honest node never signs a move the fold ignores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from types import MappingProxyType

from meshnode.barter import RETURNING_KINDS, OfferInfo
from meshnode.errors import NotAllowed, NotFound, TransitionError, ValidationError
from meshnode.ids import short_id
from meshnode.records import Record, RingBody, RingMoveBody, check_body

PROPOSED = "proposed"
ACCEPTED = "accepted"
COMPLETED = "completed"
DECLINED = "declined"
CANCELLED = "cancelled"
EXPIRED = "expired"
UNAVAILABLE = "unavailable"
STATES: tuple[str, ...] = (PROPOSED, ACCEPTED, COMPLETED, DECLINED, CANCELLED, EXPIRED, UNAVAILABLE)
TERMINAL_STATES: frozenset[str] = frozenset({COMPLETED, DECLINED, CANCELLED, EXPIRED, UNAVAILABLE})

ACCEPT, DECLINE, COMPLETE = "accept", "decline", "complete"


@dataclass(frozen=True)
class RingTrade:
    """One proposed ring and the moves that count on it.

    ``parties`` and ``offers`` are the ring's (party ``i`` gives ``offers[i]``
    to party ``(i + 1) % n``); ``proposer`` signed the ring record.
    ``accepted_by``, ``completed_by`` and ``declined_by`` hold the parties
    whose move of that kind counts; ``moves`` the ids of those moves, ordered
    by ``(ts, author, seq, id)``. ``accepted_ts`` is the ``ts`` of the last
    counted accept once accepted (else ``None``); ``updated_ts`` the ``ts``
    of the last counted move (or the deadline, once expired).
    """

    ring_id: bytes
    swarm: bytes
    proposer: bytes
    parties: tuple[bytes, ...]
    offers: tuple[bytes, ...]
    note: str
    expires: int | None
    created_ts: int
    state: str
    accepted_by: frozenset[bytes]
    completed_by: frozenset[bytes]
    declined_by: frozenset[bytes]
    moves: tuple[bytes, ...]
    accepted_ts: int | None
    updated_ts: int
    closed_because: str = ""

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def gives(self, party: bytes) -> bytes:
        """The offer ``party`` gives (to the next party)."""
        return self.offers[self._index(party)]

    def gets(self, party: bytes) -> bytes:
        """The offer ``party`` gets (from the previous party)."""
        return self.offers[self._index(party) - 1]

    def next_party(self, party: bytes) -> bytes:
        """Who ``party`` gives to."""
        return self.parties[(self._index(party) + 1) % len(self.parties)]

    def waiting_for(self) -> tuple[bytes, ...]:
        """The parties whose move the ring waits for: to accept, or (accepted) to complete."""
        if self.state == PROPOSED:
            return tuple(p for p in self.parties if p not in self.accepted_by)
        if self.state == ACCEPTED:
            return tuple(p for p in self.parties if p not in self.completed_by)
        return ()

    def allowed_actions(self, who: bytes) -> frozenset[str]:
        """The moves ``who`` may make by the state alone (:func:`check_move` checks one fully)."""
        if who not in self.parties or self.is_terminal:
            return frozenset()
        if self.state == PROPOSED:
            return frozenset({DECLINE} if who in self.accepted_by else {ACCEPT, DECLINE})
        return frozenset({DECLINE} if who in self.completed_by else {COMPLETE, DECLINE})

    def _index(self, party: bytes) -> int:
        try:
            return self.parties.index(party)
        except ValueError:
            raise NotAllowed(f"{short_id(party)} is not a party to ring {short_id(self.ring_id)}") from None


@dataclass(frozen=True)
class RingBook:
    """Every ring derived from a set of records, as of one ``now_ms``.

    ``rings``: ring id -> :class:`RingTrade`. ``reserved``: offer id -> the
    accepted, unfinished ring holding it. ``consumed``: offers given away or
    swapped by completed rings. ``refused``: ring or move record id -> why it
    does not count. ``pending``: moves whose ring record is not (yet) known.
    """

    rings: Mapping[bytes, RingTrade]
    reserved: Mapping[bytes, bytes]
    consumed: frozenset[bytes]
    refused: Mapping[bytes, str]
    pending: frozenset[bytes]

    def ring(self, ring_id: bytes) -> RingTrade:
        """The ring of ``ring_id``; :class:`NotFound` if there is none."""
        try:
            return self.rings[ring_id]
        except KeyError:
            raise NotFound(f"no ring {short_id(ring_id)} is known") from None

    def involving(self, key: bytes) -> list[RingTrade]:
        """The rings ``key`` is a party to, oldest first."""
        found = [r for r in self.rings.values() if key in r.parties]
        return sorted(found, key=lambda r: (r.created_ts, r.ring_id))


def derive_rings(
    rings: Iterable[Record],
    moves: Iterable[Record],
    offers: Mapping[bytes, OfferInfo],
    now_ms: int,
    *,
    consumed: AbstractSet[bytes] = frozenset(),
) -> RingBook:
    """Fold ``ring`` and ``ringmove`` records into a :class:`RingBook` as of ``now_ms``.

    ``consumed``: offers given away elsewhere (e.g. by completed barter
    trades); a ring not yet accepted that names one is ``unavailable``.
    Depends only on the *set* of records, ``offers``, ``consumed`` and
    ``now_ms``. See the module docstring for the rules.
    """
    ring_records: dict[bytes, Record] = {}
    for record in rings:
        if record.type != "ring" or not isinstance(record.body, RingBody):
            raise ValidationError(f"expected ring records, found a {record.type} record")
        ring_records[record.id] = record
    move_records: dict[bytes, Record] = {}
    for record in moves:
        if record.type != "ringmove" or not isinstance(record.body, RingMoveBody):
            raise ValidationError(f"expected ringmove records, found a {record.type} record")
        move_records[record.id] = record

    refused: dict[bytes, str] = {}
    pending: set[bytes] = set()
    for rid, record in ring_records.items():
        wrong = _wrong_owner(record, offers)
        if wrong:
            refused[rid] = wrong
    by_ring: dict[bytes, list[Record]] = {rid: [] for rid in ring_records if rid not in refused}
    for mid, move in move_records.items():
        target = move.body.ring
        if target in by_ring:
            by_ring[target].append(move)
        elif target in refused:
            refused[mid] = f"ring {short_id(target)} was refused: {refused[target]}"
        else:
            pending.add(mid)

    trades = {rid: _fold_ring(ring_records[rid], ms, offers, refused) for rid, ms in by_ring.items()}

    gone: set[bytes] = set()
    reserved: dict[bytes, bytes] = {}
    for trade in sorted(trades.values(), key=lambda t: (t.accepted_ts or 0, t.ring_id)):
        if trade.state == COMPLETED:
            gone.update(oid for oid in trade.offers if _is_consumed(offers.get(oid)))
        elif trade.state == ACCEPTED:
            for oid in trade.offers:
                reserved.setdefault(oid, trade.ring_id)
    for rid, trade in trades.items():
        trades[rid] = close(trade, now_ms=now_ms, offers=offers, consumed=gone | consumed)

    return RingBook(
        rings=MappingProxyType(trades),
        reserved=MappingProxyType(dict(sorted(reserved.items()))),
        consumed=frozenset(gone),
        refused=MappingProxyType(refused),
        pending=frozenset(pending),
    )


def close(
    trade: RingTrade, *, now_ms: int, offers: Mapping[bytes, OfferInfo], consumed: AbstractSet[bytes]
) -> RingTrade:
    """``trade`` as of ``now_ms`` if not yet accepted: ``expired``, else ``unavailable``, else as it is."""
    if trade.state != PROPOSED:
        return trade
    if trade.expires is not None and now_ms >= trade.expires:
        return replace(trade, state=EXPIRED, updated_ts=max(trade.updated_ts, trade.expires))
    why = _gone(trade, offers, consumed, now_ms)
    if why:
        return replace(trade, state=UNAVAILABLE, closed_because=why)
    return trade


def check_move(
    trade: RingTrade,
    body: RingMoveBody,
    author: bytes,
    *,
    now_ms: int,
    offers: Mapping[bytes, OfferInfo] | None = None,
    reserved: Mapping[bytes, bytes] | None = None,
    consumed: AbstractSet[bytes] | None = None,
) -> None:
    """Raise unless ``author`` may sign ``body`` (with ``ts = now_ms``) on ``trade`` now.

    What the service calls before signing a move. ``reserved`` (offer id ->
    the ring or trade holding it) and ``consumed`` are what rings *and*
    barter trades hold; an accept naming such an offer is refused, as is
    anything the fold would refuse, so a move that passes is counted.
    Refuses moves on a final ring, a second move of the same kind, a
    complete before everyone accepted, and an accept or a decline of a ring
    not accepted once its deadline has come.
    """
    if not isinstance(body, RingMoveBody):
        raise ValidationError(f"expected a ring move, found {type(body).__name__}")
    check_body(body)
    rid, action, known = short_id(trade.ring_id), body.action, offers or {}
    if body.ring != trade.ring_id:
        raise ValidationError(f"the move names ring {short_id(body.ring)}, expected ring {rid}")
    if author not in trade.parties:
        raise NotAllowed(f"key {short_id(author)} cannot {action} ring {rid}: only its parties may move")
    if now_ms < trade.created_ts:
        raise TransitionError(
            f"cannot {action} ring {rid} at {now_ms}: the ring was proposed at {trade.created_ts}"
            " (check the clock)"
        )
    if trade.is_terminal:
        why = f" ({trade.closed_because})" if trade.closed_because else ""
        raise TransitionError(f"cannot {action} ring {rid}: it is {trade.state}, a final state{why}")
    if action == ACCEPT:
        if author in trade.accepted_by:
            raise TransitionError(f"cannot accept ring {rid} twice: you already accepted it")
        if trade.expires is not None and now_ms >= trade.expires:
            raise TransitionError(f"cannot accept ring {rid}: it expired at {trade.expires}")
        why = _gone(trade, known, consumed or frozenset(), now_ms)
        if why:
            raise TransitionError(f"cannot accept ring {rid}: {why}")
        for oid in trade.offers:
            holder = (reserved or {}).get(oid)
            if holder is not None and holder != trade.ring_id:
                raise TransitionError(
                    f"cannot accept ring {rid}: offer {short_id(oid)} is held by accepted"
                    f" trade or ring {short_id(holder)}"
                )
    elif action == DECLINE:
        if trade.state != ACCEPTED and trade.expires is not None and now_ms >= trade.expires:
            raise TransitionError(f"cannot decline ring {rid}: it expired at {trade.expires}")
    elif action == COMPLETE:
        if trade.state != ACCEPTED:
            waiting = ", ".join(short_id(p) for p in trade.waiting_for())
            raise TransitionError(
                f"cannot complete ring {rid}: not every party has accepted it yet (waiting for {waiting})"
            )
        if author in trade.completed_by:
            raise TransitionError(f"cannot complete ring {rid} twice: you already completed it")


# --- the fold of one ring ----------------------------------------------------------


def _fold_ring(
    ring: Record, moves: list[Record], offers: Mapping[bytes, OfferInfo], refused: dict[bytes, str]
) -> RingTrade:
    """The ring's state from its moves (each counted or refused into ``refused``)."""
    body: RingBody = ring.body
    rid = short_id(ring.id)
    first: dict[tuple[bytes, str], Record] = {}
    candidates: list[Record] = []
    for move in sorted(moves, key=_order):
        action, who = move.body.action, move.author
        why = ""
        if who not in body.parties:
            why = f"key {short_id(who)} cannot {action} ring {rid}: only its parties may move"
        elif move.swarm != ring.swarm:
            why = f"the {action} by {short_id(who)} is for another swarm than ring {rid}"
        elif move.ts < ring.ts:
            why = f"the {action} by {short_id(who)} is timestamped {move.ts}, before ring {rid} ({ring.ts})"
        elif (who, action) in first:
            earlier = first[who, action]
            why = f"{short_id(who)} already made this {action} on ring {rid} (move {short_id(earlier.id)})"
        if why:
            refused[move.id] = why
            continue
        first[who, action] = move
        candidates.append(move)

    accepts: dict[bytes, Record] = {}
    for move in candidates:
        if move.body.action != ACCEPT:
            continue
        why = _late(body, move, rid) or _withdrawn(body, offers, move.ts)
        if why:
            refused[move.id] = f"the accept by {short_id(move.author)} of ring {rid} does not count: {why}"
        else:
            accepts[move.author] = move
    accepted = len(accepts) == len(body.parties)
    completes: dict[bytes, Record] = {}
    for move in candidates:
        if move.body.action != COMPLETE:
            continue
        if accepted:
            completes[move.author] = move
        else:
            waiting = ", ".join(short_id(p) for p in body.parties if p not in accepts)
            refused[move.id] = (
                f"the complete by {short_id(move.author)} of ring {rid} does not count: not every"
                f" party has accepted (waiting for {waiting})"
            )
    completed = accepted and len(completes) == len(body.parties)
    declines: dict[bytes, Record] = {}
    for move in candidates:
        if move.body.action != DECLINE:
            continue
        name = short_id(move.author)
        late = _late(body, move, rid)
        if completed:
            refused[move.id] = (
                f"the decline by {name} of ring {rid} does not count: the ring is completed,"
                " every party (they too) marked it complete"
            )
        elif not accepted and late:
            refused[move.id] = f"the decline by {name} of ring {rid} does not count: {late}"
        else:
            declines[move.author] = move

    counted = sorted((*accepts.values(), *completes.values(), *declines.values()), key=_order)
    if completed:
        state = COMPLETED
    elif declines:
        state = CANCELLED if ring.author in declines else DECLINED
    else:
        state = ACCEPTED if accepted else PROPOSED
    return RingTrade(
        ring_id=ring.id,
        swarm=ring.swarm,
        proposer=ring.author,
        parties=body.parties,
        offers=body.offers,
        note=body.note,
        expires=body.expires,
        created_ts=ring.ts,
        state=state,
        accepted_by=frozenset(accepts),
        completed_by=frozenset(completes),
        declined_by=frozenset(declines),
        moves=tuple(m.id for m in counted),
        accepted_ts=max(m.ts for m in accepts.values()) if accepted else None,
        updated_ts=max([ring.ts, *(m.ts for m in counted)]),
    )


def _wrong_owner(ring: Record, offers: Mapping[bytes, OfferInfo]) -> str:
    body: RingBody = ring.body
    for party, oid in zip(body.parties, body.offers, strict=True):
        info = offers.get(oid)
        if info is not None and info.author != party:
            return (
                f"ring {short_id(ring.id)} has {short_id(party)} give offer {short_id(oid)},"
                f" which belongs to {short_id(info.author)}"
            )
    return ""


def _late(body: RingBody, move: Record, rid: str) -> str:
    if body.expires is not None and move.ts >= body.expires:
        return f"ring {rid} expired at {body.expires}, before the move ({move.ts})"
    return ""


def _withdrawn(body: RingBody, offers: Mapping[bytes, OfferInfo], ts: int) -> str:
    for oid in body.offers:
        info = offers.get(oid)
        if info is not None and info.withdrawn_at is not None and info.withdrawn_at <= ts:
            return f"offer {short_id(oid)} was withdrawn at {info.withdrawn_at}"
    return ""


def _gone(trade: RingTrade, offers: Mapping[bytes, OfferInfo], consumed: AbstractSet[bytes], ts: int) -> str:
    """Why an offer of ``trade`` is gone for good at ``ts`` (withdrawn or given away); '' if none is."""
    body = RingBody(parties=trade.parties, offers=trade.offers)
    withdrawn = _withdrawn(body, offers, ts)
    if withdrawn:
        return withdrawn
    for oid in trade.offers:
        if oid in consumed:
            return f"offer {short_id(oid)} was already given away in a completed trade or ring"
    return ""


def _is_consumed(info: OfferInfo | None) -> bool:
    """Whether completing a ring takes this offer out of circulation (unknown: yes)."""
    return info is None or info.kind not in RETURNING_KINDS


def _order(record: Record) -> tuple[int, bytes, int, bytes]:
    return (record.ts, record.author, record.seq, record.id)
