"""Barter: the proposal state machine, and the fold that turns records into trades.

A trade is a ``proposal`` record and the ``reply`` records that name it. This
module owns nothing and does no I/O: like a rust-libp2p behaviour it is a pure
state machine that the node drives. Time is always a parameter (``now_ms``);
there is no clock.

States
------

``proposed``   the proposal is out; the responder (``body.to``) must answer.
``countered``  someone answered with new terms; the other party must answer.
``accepted``   the current terms are agreed; their offers are reserved.
``completed``  both parties said ``complete`` (final).
``declined``   the awaiting party said no (final).
``cancelled``  a party withdrew from the trade (final).
``expired``    the proposal's ``expires`` passed before anyone accepted (final).
``unavailable`` the current terms of a trade not yet accepted name an offer that
               is gone for good: withdrawn, or given away or swapped by another,
               completed trade (final; :attr:`Trade.closed_because` says which
               offer and why, :attr:`Trade.unavailable_offer` names it).
``handed over`` a loan: the borrower has confirmed receipt (see Loans).
``overdue``    a loan handed over whose due date has passed (derived from ``now_ms``).
``returned``   a loan the lender has confirmed is back (final; for trust it is a
               completed trade).

Terms are always kept from the **proposer's** point of view: ``give`` are the
offers the proposer hands over, ``take`` the offers the proposer receives. A
``counter`` reply states its terms from the *replier's* point of view and is
translated here.

Moves (who may send which reply)
--------------------------------

* ``proposed`` / ``countered``: the party who did *not* make the current terms
  (the awaiting party, :meth:`Trade.awaiting`) may ``accept``, ``decline`` or
  ``counter``; the party who made them (:attr:`Trade.terms_by`) may ``cancel``.
  A counter makes the counterer the author of the new terms.
* ``accepted``: each party may ``complete`` once; the trade is ``completed``
  when both have. Either party may ``cancel`` while nobody has completed yet.
* final states admit no reply at all.
* A key that is neither proposer nor responder may do nothing
  (:class:`~meshnode.errors.NotAllowed`); a party making an illegal move gets a
  :class:`~meshnode.errors.TransitionError`.

Loans
-----

A trade is a **loan** when its current terms hold a known ``lend`` offer
(:class:`OfferInfo`) on one side only: the author of those offers is the
**lender**, the other party the **borrower**. Once accepted, and before
anyone has completed, a loan may go on instead of completing:

* ``received`` by the borrower (its note may say in what condition):
  ``handed over``. The due date is the ``received``'s ``ts`` plus the
  shortest ``max_days`` of the lend offers' terms, or
  :data:`DEFAULT_LOAN_DAYS` when none sets one. The reservations stay: the
  thing is out.
* ``extend`` by the lender, with ``until`` later than the current due date
  and than the extend itself: the due date becomes ``until`` (any number of
  times, also once overdue).
* ``returned`` by the lender: ``returned``, final. It ends the trade as
  ``completed`` does: reservations released, ``give`` and ``swap`` offers
  of the other side consumed, the lend offers back in circulation; trust
  counts it as a completed trade (:meth:`TradeBook.completed_pairs`).

A ``handed over`` loan whose due date is at or before ``now_ms`` is
``overdue`` (derived after the fold, like expiry; the moves allowed are the
same). Neither party may cancel or complete a loan once handed over: only
the lender can end it, by saying it is back. A loan overdue for more than
:data:`LOAN_GRACE_MS` is listed by :meth:`TradeBook.late_loans`, which trust
uses to weaken the lender's trade edge to the borrower.

Expiry
------

A proposal may carry ``expires`` (ms). A trade still ``proposed`` or
``countered`` at ``now_ms >= expires`` is ``expired``; a reply timestamped
``>= expires`` to a trade that is not yet accepted is refused, because the
trade had expired first. Counters do not extend the deadline. Accepted trades
never expire.

Unavailable
-----------

Like expiry, closing a trade whose offer is gone is derived from the records
alone, after the fold (:func:`close`). A trade still ``proposed`` or
``countered`` whose current terms (give or take) name an offer withdrawn at
or before ``now_ms``, or consumed by a completed trade (:attr:`TradeBook.consumed`),
is ``unavailable``; the first such offer of the terms (give then take) is
named. An expired trade stays ``expired`` (the deadline is checked first). A
reservation by another accepted trade closes nothing: it can still be
cancelled. An accepted trade never closes this way (a withdraw after the
accept does not undo it). Within the fold, a reply to a trade not yet
accepted is refused once its terms name an offer withdrawn at or before the
reply's ``ts`` or consumed at the point the reply is tried, with the same
words a reply to the closed trade gets: the trade had closed first.

Offers, reservations and consumption
------------------------------------

Barter knows offers only through :class:`OfferInfo` (id, author, kind, when
withdrawn). Where an offer is known:

* its author must be the right party: ``give`` holds the proposer's offers,
  ``take`` the responder's. A ``counter`` or ``accept`` naming a known offer of
  the wrong author is refused; an offer may not sit on both sides.
* an offer withdrawn at or before the move's timestamp cannot be named by a
  ``counter`` or ``accept`` (a withdraw at the same millisecond wins). A
  withdraw *after* the accept does not undo the trade.

An ``accept`` reserves every offer of the current terms (give and take),
known or not. It is refused if any of them is already reserved by another
accepted, unfinished trade, or was consumed by a completed trade. A
``cancel`` after accept releases the reservations. A completed trade:

* consumes ``give`` and ``swap`` offers: they stay out of circulation for good
  (:attr:`TradeBook.consumed`);
* releases ``lend`` and ``service`` offers: the thing comes back (or the
  service can be done again), so they may be traded anew;
* consumes offers it does not know (the conservative choice: never promise
  twice what may already be gone). Once the offer record arrives and the book
  is derived again, its real kind decides.

Chains: the order of a trade's moves
------------------------------------

Every reply names the move it answers (``ReplyBody.prev``): the proposal for
the first reply, else the reply it follows. The replies of a trade form a
tree of hash links rooted at the proposal, and a trade's moves are one path
down that tree. Timestamps never order the moves of one trade; they still
say when an offer was withdrawn, when a proposal expires, and (below) how
trades are interleaved.

* A reply applies only as an answer to the trade's *latest* move
  (:attr:`Trade.latest_move`); :func:`apply_reply` and :func:`check_reply`
  refuse any other ``prev``, with one exception: completes commute, so when
  both parties complete at once (each naming the accept), both count and the
  trade is completed. A reply timestamped before the move it answers is
  refused (check the clock).
* A reply without ``prev`` (signed by a release before replies were chained;
  such records still decode and are kept) is never applied: the fold refuses
  it. Trades negotiated before then show only their chained moves (usually
  just the proposal), and their parties reply again. Anything else would let
  a party sign an unchained, backdated reply and reorder the trade.
* A reply whose ``prev`` (or an ancestor's) is not among the records waits in
  :attr:`TradeBook.pending`; one whose chain leads to a record that is not a
  move of its own trade, or that follows a reply the fold did not apply, is
  refused.

Forks: two or more replies naming the same move (a race between the parties,
or a party equivocating). Which branch counts is decided by the records
alone, never by timestamps or arrival order. A *legal* reply (a legal move
from the state its path leads to, offers and withdrawals checked) ranks by:

1. **answered**: a legal reply by the other party follows it somewhere below
   (the other party built on it, so it cannot be taken back), or it is a
   ``complete`` and the other party's ``complete`` answers the same move;
2. **ends in a no**: it, or a legal reply below it, is a ``cancel`` or
   ``decline`` (a move nobody has answered yet can still be refused or
   withdrawn: a no at the same point wins over it);
3. anything else.

Only the replies of the best rank present at a move are candidates; the
others lose the fork. Candidates are tried in the global order below; the
first one that applies is the trade's next move and the other candidates
lose the fork. Why this protects finished trades: a ``completed`` trade has a
``complete`` by each party at its end, so at every move of its path the
branch it took is *answered*; a party alone can only add unanswered
branches, which rank lower, so no backdated or forked reply by one party can
change a completed trade. A ``cancelled`` or ``declined`` trade ends in a no,
so the canceller cannot revive it with a fork of yes-moves of their own
(they rank lower), and the other party's yes-moves after it are illegal. The
price of rule 2: until the other party has answered a move, a cancel or
decline by either party at the same point wins over it (a ``complete`` by
one party alone is an unanswered move).

When every candidate at a trade's latest move was refused (an accept whose
offers another trade holds) the trade stays there, and only a new reply of
at least that rank can still apply (:attr:`Trade.floor`).

Across trades: reservations
---------------------------

Reservations couple trades, so all trades are folded together, in one global
order: each candidate reply is tried at the key ``(ts, author, seq, id)``
(never before the move it answers, whose own key is smaller or equal). Within
a trade that order only matters between candidates of the same fork; across
trades it decides which of two accepts of the same offer holds it. So the
owner of an offer who accepts it in two trades (a double sale) still decides
by his timestamps which accept holds it: no order can prevent a double sale
without a third party; a trade's own moves are never reordered by it.

Convergence
-----------

:func:`derive_trades` must give the same :class:`TradeBook` for the same *set*
of records, whatever the order or repetition in which they arrived. It never
looks at arrival order: forks are ranked from the tree alone, and candidates
are tried in the global key order above. A reply that is not applied is kept
in :attr:`TradeBook.refused` with the reason; one whose proposal or ``prev``
is unknown waits in :attr:`TradeBook.pending`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from types import MappingProxyType

from meshnode.errors import MeshError, NotAllowed, NotFound, TransitionError, ValidationError
from meshnode.ids import short_id
from meshnode.records import ProposalBody, Record, ReplyBody, check_body

PROPOSED = "proposed"
COUNTERED = "countered"
ACCEPTED = "accepted"
COMPLETED = "completed"
DECLINED = "declined"
CANCELLED = "cancelled"
EXPIRED = "expired"
UNAVAILABLE = "unavailable"
HANDED_OVER = "handed over"
OVERDUE = "overdue"
RETURNED = "returned"

STATES: tuple[str, ...] = (
    PROPOSED,
    COUNTERED,
    ACCEPTED,
    COMPLETED,
    DECLINED,
    CANCELLED,
    EXPIRED,
    UNAVAILABLE,
    HANDED_OVER,
    OVERDUE,
    RETURNED,
)
TERMINAL_STATES: frozenset[str] = frozenset({COMPLETED, DECLINED, CANCELLED, EXPIRED, UNAVAILABLE, RETURNED})
LOAN_STATES: frozenset[str] = frozenset({HANDED_OVER, OVERDUE})
"""States of a loan that is out (the thing is with the borrower)."""
DONE_STATES: frozenset[str] = frozenset({COMPLETED, RETURNED})
"""States in which the exchange happened (trust counts them)."""
OPEN_STATES: frozenset[str] = frozenset({PROPOSED, COUNTERED})
"""States in which the terms are still being negotiated (and the trade can expire)."""

ACCEPT, DECLINE, COUNTER, CANCEL, COMPLETE = "accept", "decline", "counter", "cancel", "complete"
RECEIVED, EXTEND, RETURN = "received", "extend", "returned"
DAY_MS = 86_400_000
DEFAULT_LOAN_DAYS = 14
"""A loan's term when none of its lend offers sets ``max_days``."""
LOAN_GRACE_MS = 7 * DAY_MS
"""How long a loan may be overdue before it weakens the borrower's trade edge."""
ANSWERS: frozenset[str] = frozenset({ACCEPT, DECLINE, COUNTER})
"""The moves of the awaiting party in an open trade."""
NO_MOVES: frozenset[str] = frozenset({CANCEL, DECLINE})
"""The moves that end a trade without an exchange (a fork branch holding one ranks higher)."""

RANK_ANSWERED = 2
RANK_ENDS_IN_NO = 1
"""Fork ranks (see the module docstring): a reply's rank is the sum of those that hold."""

RETURNING_KINDS: frozenset[str] = frozenset({"lend", "service"})
"""Offer kinds a completed trade releases (the item comes back, the service can be done again)."""


@dataclass(frozen=True)
class OfferInfo:
    """What barter needs to know of an offer.

    ``withdrawn_at`` is the ``ts`` (ms) of the author's withdraw record, if any.
    """

    id: bytes
    author: bytes
    kind: str  # lend | give | swap | service
    withdrawn_at: int | None = None
    max_days: int | None = None  # a lend offer's term (LendTerms.max_days)


@dataclass(frozen=True)
class Trade:
    """One proposal and the moves applied to it so far.

    ``give``/``take`` are the current terms from the proposer's point of view;
    ``terms_by`` is the party who made them (the proposer, or the last
    counterer). ``completed_by`` holds the parties who sent ``complete``.
    ``updated_ts`` is the ``ts`` of the last applied move (or, once expired,
    the deadline). ``applied`` lists the ids of the applied replies in chain
    order. ``floor`` is the fork rank a new reply to the latest move needs to
    be applied (0 unless replies of a higher rank there were refused, see the
    module docstring). ``closed_because`` says why an ``unavailable`` trade
    closed (which offer, withdrawn when or given away), ``unavailable_offer``
    is that offer; both empty otherwise. A loan, once handed over, has its
    ``lender``, its ``due`` date (ms) and when it was handed over
    (``handed_over_ts``); all ``None`` otherwise.
    """

    proposal_id: bytes
    proposer: bytes
    responder: bytes
    state: str
    give: tuple[bytes, ...]
    take: tuple[bytes, ...]
    terms_by: bytes
    completed_by: frozenset[bytes]
    expires: int | None
    created_ts: int
    updated_ts: int
    applied: tuple[bytes, ...]
    swarm: bytes = b""
    floor: int = 0
    closed_because: str = ""
    unavailable_offer: bytes | None = None
    lender: bytes | None = None
    due: int | None = None
    handed_over_ts: int | None = None

    @property
    def latest_move(self) -> bytes:
        """The id a new reply must name as ``prev``: the last applied reply, else the proposal."""
        return self.applied[-1] if self.applied else self.proposal_id

    @property
    def offers(self) -> tuple[bytes, ...]:
        """Every offer of the current terms: ``give`` then ``take``."""
        return self.give + self.take

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def borrower(self) -> bytes | None:
        """The party who borrowed, for a loan handed over (or returned); else ``None``."""
        return None if self.lender is None else self.other(self.lender)

    def role(self, key: bytes) -> str | None:
        """``"proposer"``, ``"responder"`` or ``None`` for a key that is no party."""
        if key == self.proposer:
            return "proposer"
        if key == self.responder:
            return "responder"
        return None

    def other(self, key: bytes) -> bytes:
        """The counterparty of ``key`` (which must be a party)."""
        if key == self.proposer:
            return self.responder
        if key == self.responder:
            return self.proposer
        raise NotAllowed(f"{_actor(self, key)} is not a party to trade {short_id(self.proposal_id)}")

    def awaiting(self) -> bytes | None:
        """Who must move next: the party who did not make the current terms.

        ``None`` once accepted (either party may complete) or final.
        """
        if self.state in OPEN_STATES:
            return self.other(self.terms_by)
        return None

    def allowed_actions(self, who: bytes) -> frozenset[str]:
        """The replies ``who`` may send by the state machine alone.

        Offers, reservations and the clock are not considered: :func:`check_reply`
        gives the full answer for one concrete move.
        """
        if self.state in TERMINAL_STATES or self.role(who) is None:
            return frozenset()
        if self.state in OPEN_STATES:
            return frozenset({CANCEL}) if who == self.terms_by else ANSWERS
        if self.state in LOAN_STATES:
            return frozenset({EXTEND, RETURN}) if who == self.lender else frozenset()
        # accepted (a loan's borrower may also say ``received``: the offers decide)
        if who in self.completed_by:
            return frozenset()
        return frozenset({COMPLETE}) if self.completed_by else frozenset({COMPLETE, CANCEL, RECEIVED})


def start_trade(proposal: Record) -> Trade:
    """The trade a ``proposal`` record opens, in state ``proposed``."""
    if proposal.type != "proposal" or not isinstance(proposal.body, ProposalBody):
        raise ValidationError(f"expected a proposal record, found a {proposal.type} record")
    body: ProposalBody = proposal.body
    return Trade(
        proposal_id=proposal.id,
        proposer=proposal.author,
        responder=body.to,
        state=PROPOSED,
        give=tuple(body.give),
        take=tuple(body.take),
        terms_by=proposal.author,
        completed_by=frozenset(),
        expires=body.expires,
        created_ts=proposal.ts,
        updated_ts=proposal.ts,
        applied=(),
        swarm=proposal.swarm,
    )


def apply_reply(
    trade: Trade,
    reply: Record,
    *,
    offers: Mapping[bytes, OfferInfo] | None = None,
    reserved: Mapping[bytes, bytes] | None = None,
    consumed: AbstractSet[bytes] | None = None,
) -> Trade:
    """The trade after ``reply``, or an error saying why the move is illegal.

    Pure: ``trade`` is not changed. ``offers`` enables the ownership and
    withdrawal checks, ``reserved`` (offer id -> proposal id of the accepted
    trade holding it) and ``consumed`` the reservation checks of an accept;
    leave them ``None`` to skip those checks. Expiry is judged by the reply's
    own ``ts`` against the proposal's ``expires``, never by a clock; turning an
    open trade into ``expired`` is :func:`derive_trades`'s job.

    Raises :class:`ValidationError` for a record that is not a reply to this
    trade (wrong type, other proposal, other swarm), :class:`NotAllowed` for a
    key that is no party, and :class:`TransitionError` for an illegal move.
    """
    if reply.type != "reply" or not isinstance(reply.body, ReplyBody):
        raise ValidationError(f"expected a reply record, found a {reply.type} record")
    if trade.swarm and reply.swarm != trade.swarm:
        raise ValidationError(
            f"reply is for swarm {short_id(reply.swarm)}, but trade {short_id(trade.proposal_id)}"
            f" is in swarm {short_id(trade.swarm)}"
        )
    return _move(
        trade,
        reply.body,
        reply.author,
        reply.ts,
        reply_id=reply.id,
        offers=offers,
        reserved=reserved,
        consumed=consumed,
    )


def check_reply(
    trade: Trade,
    reply_body: ReplyBody,
    author: bytes,
    *,
    now_ms: int,
    offers: Mapping[bytes, OfferInfo] | None = None,
    reserved: Mapping[bytes, bytes] | None = None,
    consumed: AbstractSet[bytes] | None = None,
) -> None:
    """Raise unless ``author`` may send ``reply_body`` on ``trade`` now.

    What the CLI and API call before signing a new reply (which will carry
    ``ts = now_ms``). It runs exactly the checks :func:`derive_trades` will run
    on that reply when it is the latest record, so a reply that passes here is
    applied by the fold, and one refused here would be ignored by it. A clock
    behind the trade's last move is refused: the reply would be ordered before
    moves it answers. ``reply_body.prev`` must be :attr:`Trade.latest_move`.
    """
    if not isinstance(reply_body, ReplyBody):
        raise ValidationError(f"expected a reply body, found {type(reply_body).__name__}")
    check_body(reply_body)
    # In the fold's order: the move by the trade alone, then its fork rank,
    # then the reservations of other trades.
    _move(
        _reopened(trade),
        reply_body,
        author,
        now_ms,
        reply_id=None,
        offers=offers,
        reserved=None,
        consumed=None,
    )
    if _own_rank(reply_body.action) < trade.floor:
        raise TransitionError(_outranked(trade, author, reply_body.action, trade.latest_move, trade.floor))
    _move(
        trade,
        reply_body,
        author,
        now_ms,
        reply_id=None,
        offers=offers,
        reserved=reserved,
        consumed=consumed,
    )


# --- the state machine ---------------------------------------------------------


def _move(
    trade: Trade,
    body: ReplyBody,
    author: bytes,
    ts: int,
    *,
    reply_id: bytes | None,
    offers: Mapping[bytes, OfferInfo] | None,
    reserved: Mapping[bytes, bytes] | None,
    consumed: AbstractSet[bytes] | None,
) -> Trade:
    """The one implementation of every move, shared by apply_reply and check_reply."""
    tid = short_id(trade.proposal_id)
    action = body.action
    if body.proposal != trade.proposal_id:
        raise ValidationError(
            f"reply names proposal {short_id(body.proposal)}, expected this trade's proposal {tid}"
        )
    actor = _actor(trade, author)
    state = trade.state
    latest = trade.latest_move
    if body.prev is None:
        raise TransitionError(
            f"{actor} cannot {_doing(action)} trade {tid}: the reply names no move it answers (made by a"
            f" release before replies were chained); reply again, naming the latest move {short_id(latest)}"
        )
    if body.prev != latest and not _crossing_complete(trade, body, author):
        raise TransitionError(
            f"{actor} cannot {_doing(action)} trade {tid}: the reply answers move {short_id(body.prev)}, but"
            f" the trade's latest move is {short_id(latest)}; look at the trade again and answer its"
            " latest move"
        )
    if state == EXPIRED or (state in OPEN_STATES and trade.expires is not None and ts >= trade.expires):
        raise TransitionError(
            f"{actor} cannot {_doing(action)} trade {tid}: it expired at {trade.expires}"
            f" before being accepted (the reply is at {ts})"
        )
    gone = _gone_offer(trade, offers, consumed, ts) if state in OPEN_STATES else None
    if state == UNAVAILABLE or gone is not None:
        why = trade.closed_because if gone is None else gone[1]
        raise TransitionError(
            f"{actor} cannot {_doing(action)} trade {tid}: it is unavailable, a final state ({why})"
        )
    if state in TERMINAL_STATES:
        raise TransitionError(f"{actor} cannot {_doing(action)} trade {tid}: it is {state}, a final state")
    if trade.role(author) is None:
        raise NotAllowed(
            f"{actor} cannot {_doing(action)} trade {tid} (state {state}): only the proposer"
            f" {short_id(trade.proposer)} and the responder {short_id(trade.responder)} may reply"
        )
    if ts < trade.created_ts:
        raise TransitionError(
            f"{actor} cannot {_doing(action)} trade {tid} (state {state}): the reply is timestamped {ts},"
            f" before the proposal itself ({trade.created_ts})"
        )
    if ts < trade.updated_ts:
        raise TransitionError(
            f"{actor} cannot {_doing(action)} trade {tid} (state {state}) at {ts}: the trade's last move"
            f" was at {trade.updated_ts}, and a reply cannot be ordered before it (check the clock)"
        )

    applied = trade.applied + ((reply_id,) if reply_id is not None else ())
    moved = replace(trade, updated_ts=ts, applied=applied, floor=0)

    if state in OPEN_STATES:
        awaiting = trade.other(trade.terms_by)
        if action in ANSWERS:
            if author != awaiting:
                raise TransitionError(
                    f"{actor} cannot {_doing(action)} trade {tid}: it is {state} on terms they made"
                    f" themselves; {_actor(trade, awaiting)} must answer (they may cancel instead)"
                )
            if action == DECLINE:
                return replace(moved, state=DECLINED)
            if action == ACCEPT:
                _check_terms(
                    trade,
                    trade.give,
                    trade.take,
                    ts,
                    offers,
                    reserved,
                    consumed,
                    accepting=True,
                    what=f"{actor} cannot accept trade {tid} (state {state})",
                )
                return replace(moved, state=ACCEPTED, completed_by=frozenset())
            # counter: the body speaks from the replier's side
            if author == trade.proposer:
                give, take = tuple(body.give), tuple(body.take)
            else:
                give, take = tuple(body.take), tuple(body.give)
            _check_terms(
                trade,
                give,
                take,
                ts,
                offers,
                reserved,
                consumed,
                accepting=False,
                what=f"{actor} cannot counter trade {tid} (state {state})",
            )
            return replace(moved, state=COUNTERED, give=give, take=take, terms_by=author)
        if action == CANCEL:
            if author != trade.terms_by:
                raise TransitionError(
                    f"{actor} cannot cancel trade {tid}: it is {state} and awaits their answer;"
                    f" only {_actor(trade, trade.terms_by)}, who made the current terms, may cancel"
                    " (decline it instead)"
                )
            return replace(moved, state=CANCELLED)
        if action in (COMPLETE, RECEIVED, EXTEND, RETURN):
            raise TransitionError(
                f"{actor} cannot {_doing(action)} trade {tid}: it is {state}, not yet accepted"
            )
        raise ValidationError(f"unknown reply action {action!r}")

    if state in LOAN_STATES:
        return _loan_move(trade, moved, body, author, ts)
    if action in (EXTEND, RETURN):
        raise TransitionError(
            f"{actor} cannot {_doing(action)} trade {tid}: it is {state}; only a loan the borrower has"
            " received can be extended or returned"
        )
    if action == RECEIVED:
        return _received(trade, moved, author, ts, offers)
    # accepted
    if action in ANSWERS:
        raise TransitionError(
            f"{actor} cannot {_doing(action)} trade {tid}: it is already accepted;"
            " only complete (or cancel, before anyone completes) remain"
        )
    if action == CANCEL:
        if trade.completed_by:
            who = " and ".join(_actor(trade, k) for k in sorted(trade.completed_by))
            raise TransitionError(
                f"{actor} cannot cancel trade {tid}: it is accepted and {who} already marked it complete"
            )
        return replace(moved, state=CANCELLED)
    if action == COMPLETE:
        if author in trade.completed_by:
            raise TransitionError(
                f"{actor} cannot complete trade {tid} twice: it is accepted and they already"
                f" marked it complete; waiting for {_actor(trade, trade.other(author))}"
            )
        done = trade.completed_by | {author}
        new_state = COMPLETED if done >= {trade.proposer, trade.responder} else ACCEPTED
        return replace(moved, state=new_state, completed_by=done)
    raise ValidationError(f"unknown reply action {action!r}")


def lender_of(trade: Trade, offers: Mapping[bytes, OfferInfo] | None) -> bytes | None:
    """The lender, if ``trade``'s current terms make it a loan (see Loans); else ``None``."""
    if offers is None:
        return None
    sides = set()
    for side, ids in (("give", trade.give), ("take", trade.take)):
        for oid in ids:
            info = offers.get(oid)
            if info is not None and info.kind == "lend":
                sides.add(side)
    if len(sides) != 1:
        return None
    return trade.proposer if sides == {"give"} else trade.responder


def loan_days(trade: Trade, offers: Mapping[bytes, OfferInfo]) -> int:
    """A loan's term in days: the shortest ``max_days`` of its lend offers, else the default."""
    days = [
        info.max_days
        for oid in trade.offers
        if (info := offers.get(oid)) is not None and info.kind == "lend" and info.max_days is not None
    ]
    return min(days) if days else DEFAULT_LOAN_DAYS


def _received(
    trade: Trade, moved: Trade, author: bytes, ts: int, offers: Mapping[bytes, OfferInfo] | None
) -> Trade:
    """``received`` on an accepted trade: the borrower has the thing, the loan is handed over."""
    actor, tid = _actor(trade, author), short_id(trade.proposal_id)
    lender = lender_of(trade, offers)
    if lender is None:
        raise TransitionError(
            f"{actor} cannot say received on trade {tid}: it is no loan (no known lend offer on one"
            " side of its terms); complete it instead"
        )
    if author == lender:
        raise TransitionError(
            f"{actor} cannot say received on trade {tid}: they are the lender; the borrower"
            f" {short_id(trade.other(lender))} confirms receipt"
        )
    if trade.completed_by:
        raise TransitionError(f"{actor} cannot say received on trade {tid}: it was already marked complete")
    assert offers is not None  # lender_of found one
    due = ts + loan_days(trade, offers) * DAY_MS
    return replace(moved, state=HANDED_OVER, lender=lender, due=due, handed_over_ts=ts)


def _loan_move(trade: Trade, moved: Trade, body: ReplyBody, author: bytes, ts: int) -> Trade:
    """``extend`` or ``returned`` by the lender on a loan handed over."""
    actor, tid, action = _actor(trade, author), short_id(trade.proposal_id), body.action
    assert trade.lender is not None and trade.due is not None
    if action not in (EXTEND, RETURN):
        raise TransitionError(
            f"{actor} cannot {_doing(action)} trade {tid}: the loan is {trade.state}; only the lender"
            f" {short_id(trade.lender)} may extend it or say it is returned"
        )
    if author != trade.lender:
        raise TransitionError(
            f"{actor} cannot {_doing(action)} trade {tid}: only the lender {short_id(trade.lender)} may"
            f" {'extend the loan' if action == EXTEND else 'say the thing is back'}"
        )
    if action == RETURN:
        return replace(moved, state=RETURNED)
    until = body.until
    assert until is not None  # records: an extend carries until
    if until <= trade.due or until <= ts:
        raise TransitionError(
            f"{actor} cannot extend trade {tid} to {until}: the new due date must be later than"
            f" the current one ({trade.due}) and than the extend itself ({ts})"
        )
    return replace(moved, state=HANDED_OVER, due=until)


def _check_terms(
    trade: Trade,
    give: tuple[bytes, ...],
    take: tuple[bytes, ...],
    ts: int,
    offers: Mapping[bytes, OfferInfo] | None,
    reserved: Mapping[bytes, bytes] | None,
    consumed: AbstractSet[bytes] | None,
    *,
    accepting: bool,
    what: str,
) -> None:
    """Refuse terms naming offers of the wrong party, withdrawn, or (for accept) taken."""
    both = sorted(set(give) & set(take))
    if both:
        raise TransitionError(f"{what}: offer {short_id(both[0])} is on both sides of the terms")
    for side, ids, owner in (("give", give, trade.proposer), ("take", take, trade.responder)):
        for oid in ids:
            info = offers.get(oid) if offers is not None else None
            if info is not None:
                if info.author != owner:
                    raise TransitionError(
                        f"{what}: offer {short_id(oid)} is on the {trade.role(owner)}'s side ({side}),"
                        f" but it belongs to {_actor(trade, info.author)}"
                    )
                if info.withdrawn_at is not None and info.withdrawn_at <= ts:
                    raise TransitionError(
                        f"{what}: offer {short_id(oid)} was withdrawn at {info.withdrawn_at}"
                    )
            if not accepting:
                continue
            if consumed is not None and oid in consumed:
                raise TransitionError(
                    f"{what}: offer {short_id(oid)} was already given away in a completed trade"
                )
            holder = reserved.get(oid) if reserved is not None else None
            if holder is not None and holder != trade.proposal_id:
                raise TransitionError(
                    f"{what}: offer {short_id(oid)} is reserved by accepted trade {short_id(holder)}"
                )


def _gone_offer(
    trade: Trade,
    offers: Mapping[bytes, OfferInfo] | Mapping[bytes, int] | None,
    consumed: AbstractSet[bytes] | None,
    ts: int,
) -> tuple[bytes, str] | None:
    """The first offer of ``trade``'s terms gone for good at ``ts``, and why; None if there is none.

    ``offers`` maps offer ids to :class:`OfferInfo` or straight to the
    withdrawal time (ms).
    """
    for oid in trade.offers:  # withdrawals first: the fold's tree knows them, not what was consumed
        info = offers.get(oid) if offers is not None else None
        at = info.withdrawn_at if isinstance(info, OfferInfo) else info
        if at is not None and at <= ts:
            return oid, f"offer {short_id(oid)} was withdrawn at {at}"
    for oid in trade.offers:
        if consumed is not None and oid in consumed:
            return oid, f"offer {short_id(oid)} was already given away in a completed trade"
    return None


def _reopened(trade: Trade) -> Trade:
    """An ``unavailable`` trade as the fold's tree sees it (without what was consumed): still open."""
    if trade.state == OVERDUE:
        return replace(trade, state=HANDED_OVER)
    if trade.state != UNAVAILABLE:
        return trade
    state = COUNTERED if trade.applied else PROPOSED  # every move applied to an open trade is a counter
    return replace(trade, state=state, closed_because="", unavailable_offer=None)


def close(
    trade: Trade, *, now_ms: int, withdrawn: Mapping[bytes, int], consumed: AbstractSet[bytes]
) -> Trade:
    """``trade`` closed as of ``now_ms`` if it is still open: ``expired``, else ``unavailable``.

    ``withdrawn``: offer id -> when it was withdrawn; ``consumed``: the offers
    completed trades gave away (:attr:`TradeBook.consumed`). A loan handed
    over whose due date has come is ``overdue``. See the module docstring; any
    other trade is returned as it is.
    """
    if trade.state == HANDED_OVER and trade.due is not None and now_ms >= trade.due:
        return replace(trade, state=OVERDUE)
    if trade.state not in OPEN_STATES:
        return trade
    if trade.expires is not None and now_ms >= trade.expires:
        return replace(trade, state=EXPIRED, updated_ts=max(trade.updated_ts, trade.expires))
    gone = _gone_offer(trade, withdrawn, consumed, now_ms)
    if gone is None:
        return trade
    oid, why = gone
    at = withdrawn.get(oid)
    updated = max(trade.updated_ts, at) if at is not None and at <= now_ms else trade.updated_ts
    return replace(trade, state=UNAVAILABLE, closed_because=why, unavailable_offer=oid, updated_ts=updated)


# --- the fold ----------------------------------------------------------------------


@dataclass(frozen=True)
class TradeBook:
    """Every trade derived from a set of records, as of one ``now_ms``.

    ``trades``: proposal id -> trade (expiry applied). ``reserved``: offer id ->
    proposal id of the accepted, unfinished trade holding it. ``consumed``:
    offers given away or swapped by completed trades. ``refused``: reply id ->
    why the fold ignored it. ``pending``: replies whose proposal is unknown.
    """

    trades: Mapping[bytes, Trade]
    reserved: Mapping[bytes, bytes]
    consumed: frozenset[bytes]
    refused: Mapping[bytes, str]
    pending: frozenset[bytes]

    def trade(self, proposal_id: bytes) -> Trade:
        """The trade of ``proposal_id``; :class:`NotFound` if there is none."""
        try:
            return self.trades[proposal_id]
        except KeyError:
            raise NotFound(f"no trade for proposal {short_id(proposal_id)} is known") from None

    def involving(self, key: bytes) -> list[Trade]:
        """The trades where ``key`` is proposer or responder, oldest first."""
        return [t for t in self.trades.values() if key in (t.proposer, t.responder)]

    def completed_pairs(self) -> list[tuple[bytes, bytes, bytes]]:
        """``(proposal_id, proposer, responder)`` of every completed trade and returned loan, in order."""
        done = sorted(
            (t for t in self.trades.values() if t.state in DONE_STATES),
            key=lambda t: (t.updated_ts, t.proposal_id),
        )
        return [(t.proposal_id, t.proposer, t.responder) for t in done]

    def late_loans(self, now_ms: int) -> list[tuple[bytes, bytes, bytes]]:
        """``(proposal_id, lender, borrower)`` of every loan overdue by more than :data:`LOAN_GRACE_MS`."""
        late = sorted(
            (
                t
                for t in self.trades.values()
                if t.state == OVERDUE and t.due is not None and now_ms - t.due > LOAN_GRACE_MS
            ),
            key=lambda t: (t.due or 0, t.proposal_id),
        )
        return [(t.proposal_id, t.lender, t.other(t.lender)) for t in late if t.lender is not None]

    def check_reply(
        self,
        reply_body: ReplyBody,
        author: bytes,
        *,
        now_ms: int,
        offers: Mapping[bytes, OfferInfo] | None = None,
    ) -> None:
        """:func:`check_reply` against this book's trade, reservations and consumed offers."""
        check_reply(
            self.trade(reply_body.proposal),
            reply_body,
            author,
            now_ms=now_ms,
            offers=offers,
            reserved=self.reserved,
            consumed=self.consumed,
        )


def derive_trades(
    proposals: Iterable[Record],
    replies: Iterable[Record],
    offers: Mapping[bytes, OfferInfo],
    now_ms: int,
) -> TradeBook:
    """Fold proposal and reply records into a :class:`TradeBook` as of ``now_ms``.

    Depends only on the *set* of records (duplicates and order are irrelevant),
    the offers and ``now_ms``. See the module docstring for the rules.
    """
    props: dict[bytes, Record] = {}
    for record in proposals:
        if record.type != "proposal" or not isinstance(record.body, ProposalBody):
            raise ValidationError(f"expected proposal records, found a {record.type} record")
        props[record.id] = record
    reps: dict[bytes, Record] = {}
    for record in replies:
        if record.type != "reply" or not isinstance(record.body, ReplyBody):
            raise ValidationError(f"expected reply records, found a {record.type} record")
        reps[record.id] = record

    trades: dict[bytes, Trade] = {p.id: start_trade(p) for p in sorted(props.values(), key=_order)}
    refused: dict[bytes, str] = {}
    pending: set[bytes] = set()
    by_trade: dict[bytes, list[Record]] = {}
    for reply in sorted(reps.values(), key=_order):
        pid = reply.body.proposal
        if reply.body.prev is None:
            refused[reply.id] = _unchained(trades.get(pid), reply)
        elif pid not in trades:
            pending.add(reply.id)
        else:
            by_trade.setdefault(pid, []).append(reply)

    trees = {pid: _Tree.grow(trades[pid], rs, offers, refused) for pid, rs in by_trade.items()}
    fold = _Fold(trades, trees, offers, props, reps, refused)
    fold.run()
    for pid, rs in by_trade.items():
        _place_the_rest(trades[pid], rs, fold.applied, reps, props, refused, pending)
        latest = trades[pid].latest_move
        floor = trees[pid].top_rank(latest)
        if floor:
            trades[pid] = replace(trades[pid], floor=floor)

    withdrawn = {oid: info.withdrawn_at for oid, info in offers.items() if info.withdrawn_at is not None}
    for pid, trade in trades.items():
        trades[pid] = close(trade, now_ms=now_ms, withdrawn=withdrawn, consumed=fold.consumed)

    return TradeBook(
        trades=MappingProxyType(trades),
        reserved=MappingProxyType(dict(sorted(fold.reserved.items()))),
        consumed=frozenset(fold.consumed),
        refused=MappingProxyType(refused),
        pending=frozenset(pending),
    )


@dataclass
class _Tree:
    """One trade's replies as a tree of ``prev`` links, each judged by the trade alone.

    ``legal[move]`` are the replies naming ``move`` that are legal moves from
    the state their path leads to (offers and withdrawals checked, other
    trades' reservations not); ``rank[reply id]`` is each one's fork rank.
    Illegal replies go to ``refused`` as they are found.
    """

    trade: Trade
    kids: dict[bytes, list[Record]]
    legal: dict[bytes, list[Record]]
    rank: dict[bytes, int]

    @classmethod
    def grow(
        cls, trade: Trade, replies: list[Record], offers: Mapping[bytes, OfferInfo], refused: dict[bytes, str]
    ) -> _Tree:
        kids: dict[bytes, list[Record]] = {}
        for reply in replies:
            assert reply.body.prev is not None  # unchained replies never get here
            kids.setdefault(reply.body.prev, []).append(reply)
        legal: dict[bytes, list[Record]] = {}
        state: dict[bytes, Trade] = {trade.proposal_id: trade}
        reached: list[Record] = []  # parents before children
        stack = [trade.proposal_id]
        while stack:
            move = stack.pop()
            for reply in kids.get(move, ()):
                try:
                    state[reply.id] = apply_reply(state[move], reply, offers=offers)
                except MeshError as exc:
                    refused[reply.id] = str(exc)
                    continue
                legal.setdefault(move, []).append(reply)
                reached.append(reply)
                stack.append(reply.id)
        # Who moved below each reply (1: proposer, 2: responder), and whether a no did.
        # Completes that crossed (both parties' answering the same move) answer each other.
        below: dict[bytes, int] = {}
        completers: dict[bytes, int] = {}
        for move, kids_of_move in legal.items():
            for kid in kids_of_move:
                if kid.body.action == COMPLETE:
                    completers[move] = completers.get(move, 0) | _party_bit(trade, kid.author)
        no_below: dict[bytes, bool] = {}
        rank: dict[bytes, int] = {}
        for reply in reversed(reached):
            who, no = 0, False
            for kid in legal.get(reply.id, ()):
                who |= below[kid.id] | _party_bit(trade, kid.author)
                no = no or no_below[kid.id] or kid.body.action in NO_MOVES
            below[reply.id], no_below[reply.id] = who, no
            if reply.body.action == COMPLETE:
                assert reply.body.prev is not None
                who |= completers[reply.body.prev]
            answered = bool(who & _party_bit(trade, trade.other(reply.author)))
            rank[reply.id] = (RANK_ANSWERED if answered else 0) + (
                RANK_ENDS_IN_NO if no or reply.body.action in NO_MOVES else 0
            )
        return cls(trade, kids, legal, rank)

    def top_rank(self, move: bytes) -> int:
        """The best fork rank among the legal replies naming ``move`` (0 if none)."""
        return max((self.rank[r.id] for r in self.legal.get(move, ())), default=0)


class _Fold:
    """The global fold: candidates of every trade tried in ``(ts, author, seq, id)`` order."""

    def __init__(
        self,
        trades: dict[bytes, Trade],
        trees: Mapping[bytes, _Tree],
        offers: Mapping[bytes, OfferInfo],
        props: Mapping[bytes, Record],
        reps: Mapping[bytes, Record],
        refused: dict[bytes, str],
    ) -> None:
        self.trades, self.trees, self.offers, self.refused = trades, trees, offers, refused
        self.props, self.reps = props, reps
        self.reserved: dict[bytes, bytes] = {}
        self.consumed: set[bytes] = set()
        self.applied: set[bytes] = set()
        self.answered_by: dict[bytes, bytes] = {}  # move -> the reply applied after it
        self._heap: list[tuple[tuple[int, bytes, int, bytes], bytes]] = []

    def run(self) -> None:
        for pid, tree in self.trees.items():
            self._offer(tree, pid, _order(self.props[pid]))
        while self._heap:
            key, rid = heapq.heappop(self._heap)
            self._try(self.reps[rid], key)

    def _offer(self, tree: _Tree, move: bytes, at: tuple[int, bytes, int, bytes]) -> None:
        """Queue the best-ranked replies to ``move`` (just applied at key ``at``); refuse the rest."""
        top = tree.top_rank(move)
        for reply in tree.legal.get(move, ()):
            if tree.rank[reply.id] < top:
                self.refused[reply.id] = _outranked(tree.trade, reply.author, reply.body.action, move, top)
            else:
                heapq.heappush(self._heap, (max(_order(reply), at), reply.id))

    def _try(self, reply: Record, key: tuple[int, bytes, int, bytes]) -> None:
        pid = reply.body.proposal
        before = self.trades[pid]
        prev = reply.body.prev
        assert prev is not None
        crossing = before.latest_move != prev
        if crossing and not _crossing_complete(before, reply.body, reply.author):
            winner = self.answered_by[prev]
            self.refused[reply.id] = _fork_lost(before, reply, winner)
            return
        try:
            after = apply_reply(
                before, reply, offers=self.offers, reserved=self.reserved, consumed=self.consumed
            )
        except MeshError as exc:
            self.refused[reply.id] = str(exc)
            return
        self.trades[pid] = after
        self.applied.add(reply.id)
        self.answered_by.setdefault(prev, reply.id)
        if after.state == ACCEPTED and before.state != ACCEPTED:
            for oid in after.offers:
                self.reserved[oid] = pid
        elif before.state in (ACCEPTED, HANDED_OVER) and after.state in (CANCELLED, *DONE_STATES):
            for oid in after.offers:
                if self.reserved.get(oid) == pid:
                    del self.reserved[oid]
                if after.state in DONE_STATES and _is_consumed(self.offers.get(oid)):
                    self.consumed.add(oid)
        if crossing:
            # The tree judged its answers as if the other complete were not there; the
            # trade is completed (final), so each is refused for that.
            for kid in self.trees[pid].kids.get(reply.id, ()):
                self.refused[kid.id] = _refusal(after, kid)
            return
        self._offer(self.trees[pid], reply.id, key)


def _place_the_rest(
    trade: Trade,
    replies: list[Record],
    applied: AbstractSet[bytes],
    reps: Mapping[bytes, Record],
    props: Mapping[bytes, Record],
    refused: dict[bytes, str],
    pending: set[bytes],
) -> None:
    """Refuse, or leave pending, the replies of ``trade`` the fold never reached.

    Such a reply follows a reply that was not applied (refused), names a
    record that is not a move of this trade (refused), or its chain leads to a
    record not held yet (pending: it waits).
    """
    waiting: dict[bytes, bool] = {}  # reply id -> waits for a missing record
    for reply in replies:
        if reply.id in applied or reply.id in refused:
            continue
        chain = [reply]
        while True:  # up the chain to a reply already placed, or to the chain's end
            prev = chain[-1].body.prev
            assert prev is not None
            parent = reps.get(prev)
            if prev in waiting or parent is None or parent.body.proposal != trade.proposal_id:
                break
            if prev in refused or prev in applied:
                break
            chain.append(parent)
        prev = chain[-1].body.prev
        assert prev is not None
        waits = waiting.get(prev, prev not in reps and prev not in props and prev != trade.proposal_id)
        for link in reversed(chain):
            waiting[link.id] = waits
            if waits:
                pending.add(link.id)
            else:
                refused[link.id] = _detached(trade, link, reps)


def _refusal(trade: Trade, reply: Record) -> str:
    """Why ``reply`` is no legal move on ``trade`` (which must be final)."""
    try:
        apply_reply(trade, reply)
    except MeshError as exc:
        return str(exc)
    raise AssertionError("a reply to a final trade was applied")  # pragma: no cover


def _unchained(trade: Trade | None, reply: Record) -> str:
    actor = _actor(trade, reply.author) if trade is not None else f"key {short_id(reply.author)}"
    return (
        f"{actor} cannot {_doing(reply.body.action)} trade {short_id(reply.body.proposal)}: the reply names"
        " no move it answers (made by a release before replies were chained), so it is never applied;"
        " the party must reply again"
    )


def _outranked(trade: Trade, author: bytes, action: str, move: bytes, rank: int) -> str:
    why = "that the other party has answered" if rank >= RANK_ANSWERED else "that cancels or declines"
    return (
        f"{_actor(trade, author)} cannot {_doing(action)} trade {short_id(trade.proposal_id)}: it"
        f" answers move {short_id(move)}, where a reply {why} takes precedence (a fork is decided by answers,"
        " never by time)"
    )


def _fork_lost(trade: Trade, reply: Record, winner: bytes) -> str:
    prev = reply.body.prev
    assert prev is not None
    return (
        f"{_actor(trade, reply.author)} cannot {_doing(reply.body.action)} trade"
        f" {short_id(trade.proposal_id)}: it answers move {short_id(prev)}, which reply"
        f" {short_id(winner)} answered first (a fork); the trade went on from there"
    )


def _detached(trade: Trade, reply: Record, reps: Mapping[bytes, Record]) -> str:
    prev = reply.body.prev
    assert prev is not None
    actor, action, tid = _actor(trade, reply.author), _doing(reply.body.action), short_id(trade.proposal_id)
    parent = reps.get(prev)
    if parent is not None and parent.body.proposal == trade.proposal_id:
        return (
            f"{actor} cannot {action} trade {tid}: it answers reply {short_id(prev)}, which was not applied"
        )
    return (
        f"{actor} cannot {action} trade {tid}: it answers record {short_id(prev)}, which is not a move of it"
    )


def _crossing_complete(trade: Trade, body: ReplyBody, author: bytes) -> bool:
    """Whether ``body`` is a complete that crossed the other party's: both answer the accept.

    Completes commute: when both parties complete at the same time, each
    names the accept, and both count (the trade is completed).
    """
    return (
        body.action == COMPLETE
        and trade.state == ACCEPTED
        and trade.role(author) is not None
        and trade.completed_by == {trade.other(author)}
        and len(trade.applied) >= 2
        and trade.applied[-2] == body.prev
    )


def _party_bit(trade: Trade, key: bytes) -> int:
    return 1 if key == trade.proposer else 2 if key == trade.responder else 0


def _own_rank(action: str) -> int:
    """The fork rank of a new reply (nothing answers it yet)."""
    return RANK_ENDS_IN_NO if action in NO_MOVES else 0


def _order(record: Record) -> tuple[int, bytes, int, bytes]:
    return (record.ts, record.author, record.seq, record.id)


def _is_consumed(info: OfferInfo | None) -> bool:
    """Whether completing a trade takes this offer out of circulation (unknown: yes)."""
    return info is None or info.kind not in RETURNING_KINDS


def _doing(action: str) -> str:
    """What a reply action does, as "X cannot ... trade" reads it ("say returned on", not "returned")."""
    return {RECEIVED: "say received on", RETURN: "say returned on"}.get(action, action)


def _actor(trade: Trade, key: bytes) -> str:
    role = trade.role(key)
    if role is None:
        return f"key {short_id(key)} (not a party)"
    return f"the {role} {short_id(key)}"
