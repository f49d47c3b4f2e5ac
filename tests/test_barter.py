"""Barter: the proposal state machine, reservations, expiry and the order-free fold."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from meshnode.barter import (
    DAY_MS,
    STATES,
    TERMINAL_STATES,
    OfferInfo,
    Trade,
    TradeBook,
    apply_reply,
    check_reply,
    close,
    derive_trades,
    start_trade,
)
from meshnode.errors import MeshError, NotAllowed, NotFound, TransitionError, ValidationError
from meshnode.ids import short_id
from meshnode.records import (
    REPLY_ACTIONS,
    OfferBody,
    ProposalBody,
    Record,
    ReplyBody,
    WithdrawBody,
)
from tests.conftest import NOW, SWARM, Author

ALICE, BOB, CAROL, DAVE = (Author(seed) for seed in (11, 12, 13, 14))
PARTIES = (ALICE, BOB, CAROL, DAVE)  # Dave owns no offers

_seq = itertools.count(1)


def _offer(author: Author, title: str, kind: str) -> Record:
    return author.sign(OfferBody(title=title, kind=kind), ts=NOW, seq=next(_seq))


A_GIVE = _offer(ALICE, "Apples", "give")
A_LEND = _offer(ALICE, "Drill", "lend")
A_SWAP = _offer(ALICE, "Board game", "swap")
B_SWAP = _offer(BOB, "Jam", "swap")
B_SERVICE = _offer(BOB, "Haircut", "service")
B_GIVE = _offer(BOB, "Books", "give")
C_GIVE = _offer(CAROL, "Chair", "give")
C_LEND = _offer(CAROL, "Ladder", "lend")
C_SERVICE = _offer(CAROL, "Bike repair", "service")
WORLD = (A_GIVE, A_LEND, A_SWAP, B_SWAP, B_SERVICE, B_GIVE, C_GIVE, C_LEND, C_SERVICE)
OFFERS = {o.id: OfferInfo(id=o.id, author=o.author, kind=o.body.kind) for o in WORLD}
WORLD_IDS = tuple(sorted(OFFERS))
OWN = {a.public: tuple(o.id for o in WORLD if o.author == a.public) for a in PARTIES}


def ids(*records: Record) -> tuple[bytes, ...]:
    return tuple(r.id for r in records)


def propose(
    frm: Author,
    to: Author,
    give: tuple[Record, ...] = (),
    take: tuple[Record, ...] = (),
    *,
    ts: int = 0,
    expires: int | None = None,
    seq: int | None = None,
) -> Record:
    """A proposal by ``frm`` to ``to``; ``ts`` and ``expires`` are offsets from NOW."""
    body = ProposalBody(
        to=to.public, give=ids(*give), take=ids(*take), expires=None if expires is None else NOW + expires
    )
    return frm.sign(body, ts=NOW + ts, seq=next(_seq) if seq is None else seq)


def reply(
    frm: Author,
    proposal: Record | bytes,
    action: str,
    *,
    ts: int,
    give: tuple[bytes, ...] = (),
    take: tuple[bytes, ...] = (),
    seq: int | None = None,
    swarm: bytes = SWARM,
    prev: Record | bytes | None = None,
    unchained: bool = False,
    until: int | None = None,
) -> Record:
    """A reply by ``frm``; ``ts`` is an offset from NOW; counter terms from ``frm``'s side.

    It answers ``prev`` (default: the proposal itself); ``unchained`` makes a
    reply that names no move, as releases before the chain made them. An
    ``extend`` moves the due date to ``until`` (ms; default 30 days after it).
    """
    pid = proposal if isinstance(proposal, bytes) else proposal.id
    answers = pid if prev is None else prev if isinstance(prev, bytes) else prev.id
    if action == "extend" and until is None:
        until = NOW + ts + 30 * DAY_MS
    body = ReplyBody(
        proposal=pid,
        action=action,
        give=tuple(give),
        take=tuple(take),
        prev=None if unchained else answers,
        until=until,
    )
    return frm.sign(body, ts=NOW + ts, seq=next(_seq) if seq is None else seq, swarm=swarm)


def run(trade: Trade, *replies: Record, **kw) -> Trade:
    for r in replies:
        trade = apply_reply(trade, r, **kw)
    return trade


def chain(proposal: Record, *steps: tuple) -> list[Record]:
    """Replies each answering the one before (the first answers the proposal).

    A step is ``(who, action, ts)`` or ``(who, action, ts, terms)`` with terms
    the keyword arguments of :func:`reply` (``give``/``take``).
    """
    out: list[Record] = []
    for who, action, ts, *terms in steps:
        out.append(
            reply(who, proposal, action, ts=ts, prev=out[-1] if out else proposal, **(terms or [{}])[0])
        )
    return out


def book(proposals, replies, *, now: int = 1_000, offers=None) -> TradeBook:
    return derive_trades(proposals, replies, OFFERS if offers is None else offers, NOW + now)


def withdrawn(offer: Record, at: int) -> dict[bytes, OfferInfo]:
    return {**OFFERS, offer.id: replace(OFFERS[offer.id], withdrawn_at=NOW + at)}


# --- the happy path and the legal moves -------------------------------------------


def test_happy_path_propose_accept_complete_by_both():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=10)
    t0 = start_trade(p)
    assert (t0.state, t0.proposer, t0.responder, t0.terms_by) == (
        "proposed",
        ALICE.public,
        BOB.public,
        ALICE.public,
    )
    assert (t0.give, t0.take) == (ids(A_GIVE), ids(B_SWAP))
    assert t0.awaiting() == BOB.public
    assert t0.created_ts == t0.updated_ts == NOW + 10

    accept = reply(BOB, p, "accept", ts=20)
    t1 = apply_reply(t0, accept, offers=OFFERS, reserved={})
    assert t1.state == "accepted" and t1.awaiting() is None
    assert t0.state == "proposed"  # pure: the old trade is untouched

    assert t1.latest_move == accept.id and t0.latest_move == p.id
    done_a = reply(ALICE, p, "complete", ts=30, prev=accept)
    t2 = apply_reply(t1, done_a)
    assert t2.state == "accepted" and t2.completed_by == {ALICE.public}
    assert t2.allowed_actions(ALICE.public) == frozenset()
    assert t2.allowed_actions(BOB.public) == {"complete"}

    done_b = reply(BOB, p, "complete", ts=40, prev=done_a)
    t3 = apply_reply(t2, done_b)
    assert t3.state == "completed" and t3.completed_by == {ALICE.public, BOB.public}
    assert t3.applied == ids(accept, done_a, done_b)
    assert t3.updated_ts == NOW + 40

    b = book([p], [accept, done_a, done_b])
    assert b.trades[p.id] == t3
    assert b.reserved == {} and b.refused == {} and b.pending == frozenset()
    assert b.consumed == {A_GIVE.id, B_SWAP.id}  # give and swap are consumed
    assert b.completed_pairs() == [(p.id, ALICE.public, BOB.public)]


def test_accept_reserves_and_completion_releases_lend_and_service():
    p = propose(ALICE, BOB, (A_LEND,), (B_SERVICE,), ts=10)
    rs = chain(p, (BOB, "accept", 20), (ALICE, "complete", 30), (BOB, "complete", 31))
    accepted = book([p], rs[:1])
    assert accepted.reserved == {A_LEND.id: p.id, B_SERVICE.id: p.id}
    done = book([p], rs[:2])
    assert done.trades[p.id].state == "accepted" and done.reserved  # one complete is not enough
    b = book([p], rs)
    assert b.trades[p.id].state == "completed"
    assert b.reserved == {} and b.consumed == frozenset()  # the drill comes back, the haircut recurs
    # ... so the same offers can be traded again
    p2 = propose(CAROL, ALICE, (C_GIVE,), (A_LEND,), ts=50)
    b2 = book([p, p2], [*rs, reply(ALICE, p2, "accept", ts=60)])
    assert b2.trades[p2.id].state == "accepted" and b2.reserved == {A_LEND.id: p2.id, C_GIVE.id: p2.id}


def test_unknown_offers_are_reserved_and_consumed():
    ghost_offer = bytes(range(32))
    p = ALICE.sign(ProposalBody(to=BOB.public, take=(ghost_offer,)), ts=NOW, seq=next(_seq))
    rs = chain(p, (BOB, "accept", 1), (BOB, "complete", 2), (ALICE, "complete", 3))
    assert book([p], rs[:1]).reserved == {ghost_offer: p.id}
    assert book([p], rs).consumed == {ghost_offer}


def test_counter_then_accept_by_the_original_proposer():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    # Bob, from his side: he gives the haircut, takes apples and the drill
    counter = reply(BOB, p, "counter", ts=5, give=ids(B_SERVICE), take=ids(A_GIVE, A_LEND))
    t = apply_reply(start_trade(p), counter, offers=OFFERS)
    assert t.state == "countered" and t.terms_by == BOB.public and t.awaiting() == ALICE.public
    assert (t.give, t.take) == (ids(A_GIVE, A_LEND), ids(B_SERVICE))  # proposer's point of view
    assert t.allowed_actions(ALICE.public) == {"accept", "decline", "counter"}
    assert t.allowed_actions(BOB.public) == {"cancel"}
    t = apply_reply(t, reply(ALICE, p, "accept", ts=6, prev=counter), offers=OFFERS, reserved={})
    assert t.state == "accepted" and (t.give, t.take) == (ids(A_GIVE, A_LEND), ids(B_SERVICE))


def test_counter_counter_then_accept():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    c1 = reply(BOB, p, "counter", ts=1, give=ids(B_SERVICE), take=ids(A_GIVE, A_LEND))
    c2 = reply(ALICE, p, "counter", ts=2, give=ids(A_LEND), take=ids(B_SERVICE, B_GIVE), prev=c1)
    t = run(start_trade(p), c1, c2, offers=OFFERS)
    assert t.state == "countered" and t.terms_by == ALICE.public and t.awaiting() == BOB.public
    assert (t.give, t.take) == (ids(A_LEND), ids(B_SERVICE, B_GIVE))
    t = apply_reply(t, reply(BOB, p, "accept", ts=3, prev=c2), offers=OFFERS, reserved={})
    assert t.state == "accepted"
    b = book([p], [c1, c2, reply(BOB, p, "accept", ts=3, seq=999, prev=c2)])
    assert b.trades[p.id].state == "accepted"
    assert b.reserved == {A_LEND.id: p.id, B_SERVICE.id: p.id, B_GIVE.id: p.id}


def test_decline_is_final():
    p = propose(ALICE, BOB, (A_GIVE,), ts=0)
    t = apply_reply(start_trade(p), reply(BOB, p, "decline", ts=1))
    assert t.state == "declined" and t.is_terminal and t.awaiting() is None
    assert t.allowed_actions(ALICE.public) == t.allowed_actions(BOB.public) == frozenset()


def test_cancel_by_proposer_before_accept():
    p = propose(ALICE, BOB, (A_GIVE,), ts=0)
    t = apply_reply(start_trade(p), reply(ALICE, p, "cancel", ts=1))
    assert t.state == "cancelled"


def test_cancel_by_counterer_in_countered():
    p = propose(ALICE, BOB, (A_GIVE,), ts=0)
    c = reply(BOB, p, "counter", ts=1, take=ids(A_LEND))
    t = run(start_trade(p), c, reply(BOB, p, "cancel", ts=2, prev=c))
    assert t.state == "cancelled"


def test_cancel_after_accept_releases_the_reservation():
    p1 = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    p2 = propose(CAROL, BOB, (C_GIVE,), (B_SWAP,), ts=1)
    acc1 = reply(BOB, p1, "accept", ts=10)
    acc2_early = reply(BOB, p2, "accept", ts=15)  # refused: p1 holds Bob's jam
    cancel1 = reply(ALICE, p1, "cancel", ts=20, prev=acc1)
    acc2 = reply(BOB, p2, "accept", ts=30)  # answers the proposal again, now free
    b = book([p1, p2], [acc1, acc2_early, cancel1, acc2])
    assert b.trades[p1.id].state == "cancelled"
    assert "reserved by accepted trade" in b.refused[acc2_early.id]
    assert b.trades[p2.id].state == "accepted"
    assert b.reserved == {B_SWAP.id: p2.id, C_GIVE.id: p2.id}
    assert set(b.refused) == {acc2_early.id}


def test_cancel_after_one_party_completed_is_refused():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    t = run(start_trade(p), *chain(p, (BOB, "accept", 1), (BOB, "complete", 2)))
    assert t.allowed_actions(ALICE.public) == {"complete"}
    with pytest.raises(TransitionError, match="accepted") as exc:
        apply_reply(t, reply(ALICE, p, "cancel", ts=3, prev=t.latest_move))
    assert "the proposer" in str(exc.value) and "already marked it complete" in str(exc.value)
    with pytest.raises(TransitionError, match="twice"):
        apply_reply(t, reply(BOB, p, "complete", ts=3, prev=t.latest_move))


# --- illegal moves ------------------------------------------------------------------


def _p() -> Record:
    return propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0, seq=1)


def _at(*steps: tuple[Author, str]) -> tuple[Record, Trade]:
    p = _p()
    t = start_trade(p)
    for i, (who, action) in enumerate(steps, start=1):
        terms = {"give": ids(A_LEND)} if action == "counter" and who is ALICE else {}
        if action == "counter" and who is BOB:
            terms = {"give": ids(B_SERVICE)}
        t = apply_reply(t, reply(who, p, action, ts=i, seq=100 + i, prev=t.latest_move, **terms))
    return p, t


ILLEGAL = [
    # (steps to reach the state, who replies, action, error, words the message must contain)
    ((), ALICE, "accept", TransitionError, ("proposed", "the proposer", "made", "responder")),
    ((), ALICE, "decline", TransitionError, ("proposed", "the proposer")),
    ((), ALICE, "counter", TransitionError, ("proposed", "the proposer")),
    ((), BOB, "cancel", TransitionError, ("proposed", "the responder", "decline")),
    ((), BOB, "complete", TransitionError, ("proposed", "the responder", "not yet accepted")),
    ((), CAROL, "accept", NotAllowed, ("proposed", "not a party", CAROL.public.hex()[:12])),
    ((), DAVE, "cancel", NotAllowed, ("proposed", "not a party")),
    (((BOB, "counter"),), BOB, "accept", TransitionError, ("countered", "the responder")),
    (((BOB, "counter"),), ALICE, "cancel", TransitionError, ("countered", "the proposer")),
    (((BOB, "counter"),), ALICE, "complete", TransitionError, ("countered", "the proposer")),
    (((BOB, "accept"),), BOB, "accept", TransitionError, ("accepted", "the responder")),
    (((BOB, "accept"),), ALICE, "counter", TransitionError, ("accepted", "the proposer")),
    (((BOB, "accept"),), BOB, "decline", TransitionError, ("accepted", "the responder")),
    (((BOB, "accept"),), CAROL, "complete", NotAllowed, ("accepted", "not a party")),
    (((BOB, "accept"), (ALICE, "complete")), ALICE, "complete", TransitionError, ("accepted", "twice")),
    (((BOB, "accept"), (ALICE, "complete")), BOB, "cancel", TransitionError, ("accepted", "the responder")),
    (((BOB, "decline"),), BOB, "accept", TransitionError, ("declined", "final", "the responder")),
    (((BOB, "decline"),), ALICE, "cancel", TransitionError, ("declined", "the proposer")),
    (((ALICE, "cancel"),), BOB, "accept", TransitionError, ("cancelled", "the responder")),
    (((ALICE, "cancel"),), CAROL, "accept", TransitionError, ("cancelled", "not a party")),
    (
        ((BOB, "accept"), (ALICE, "complete"), (BOB, "complete")),
        ALICE,
        "cancel",
        TransitionError,
        ("completed", "final", "the proposer"),
    ),
]


@pytest.mark.parametrize(
    ("steps", "who", "action", "error", "words"),
    ILLEGAL,
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_illegal_moves_are_refused_with_state_and_actor(steps, who, action, error, words):
    p, t = _at(*steps)
    terms = {"give": ids(A_LEND)} if action == "counter" else {}
    bad = reply(who, p, action, ts=50, prev=t.latest_move, **terms)
    assert action not in t.allowed_actions(who.public)
    with pytest.raises(error) as exc:
        apply_reply(t, bad)
    if error is NotAllowed and t.state not in TERMINAL_STATES:
        assert not isinstance(exc.value, TransitionError)
    for word in words:
        assert word in str(exc.value)
    with pytest.raises(error):
        check_reply(t, bad.body, who.public, now_ms=NOW + 50)
    # the fold ignores it and says why
    replies: list[Record] = []
    for i, (s_who, s_act) in enumerate(steps, start=1):
        prev = replies[-1] if replies else p
        replies.append(reply(s_who, p, s_act, ts=i, seq=100 + i, prev=prev, **_terms(s_who, s_act)))
    b = book([p], [*replies, bad])
    assert b.trades[p.id] == t
    assert b.refused == {bad.id: str(exc.value)}


def _terms(who: Author, action: str) -> dict[str, tuple[bytes, ...]]:
    if action != "counter":
        return {}
    return {"give": ids(A_LEND)} if who is ALICE else {"give": ids(B_SERVICE)}


def test_reply_to_another_proposal_or_not_a_reply_is_a_validation_error():
    p = _p()
    other = propose(ALICE, BOB, (A_LEND,), ts=0)
    with pytest.raises(ValidationError, match="expected this trade's proposal"):
        apply_reply(start_trade(p), reply(BOB, other, "accept", ts=1))
    with pytest.raises(ValidationError, match="expected a reply record, found a proposal"):
        apply_reply(start_trade(p), other)
    with pytest.raises(ValidationError, match="expected a proposal record"):
        start_trade(reply(BOB, p, "accept", ts=1))
    with pytest.raises(ValidationError, match="swarm"):
        apply_reply(start_trade(p), reply(BOB, p, "accept", ts=1, swarm=bytes(32)))
    with pytest.raises(ValidationError, match="expected proposal records"):
        derive_trades([reply(BOB, p, "accept", ts=1)], [], OFFERS, NOW)
    with pytest.raises(ValidationError, match="expected reply records"):
        derive_trades([p], [p], OFFERS, NOW)
    with pytest.raises(ValidationError, match="withdraw"):
        derive_trades([], [ALICE.sign(WithdrawBody(target=A_GIVE.id), seq=1)], OFFERS, NOW)


def test_check_reply_validates_the_body_and_the_clock():
    p = _p()
    t = start_trade(p)
    check_reply(t, ReplyBody(proposal=p.id, action="accept", prev=p.id), BOB.public, now_ms=NOW + 1)
    with pytest.raises(ValidationError, match="only a counter carries offers"):
        check_reply(
            t, ReplyBody(proposal=p.id, action="accept", take=ids(A_GIVE), prev=p.id), BOB.public, now_ms=NOW
        )
    with pytest.raises(ValidationError, match="expected a reply body"):
        check_reply(t, ProposalBody(to=BOB.public, give=ids(A_GIVE)), BOB.public, now_ms=NOW)
    t1 = apply_reply(t, reply(BOB, p, "counter", ts=100, give=ids(B_GIVE)))
    with pytest.raises(TransitionError, match="check the clock"):
        check_reply(
            t1, ReplyBody(proposal=p.id, action="accept", prev=t1.latest_move), ALICE.public, now_ms=NOW + 99
        )
    with pytest.raises(TransitionError, match="before the proposal"):
        apply_reply(t, reply(BOB, p, "accept", ts=-1))


# --- expiry ---------------------------------------------------------------------------


def test_expiry_by_clock_and_late_replies_are_ignored():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0, expires=100)
    assert book([p], [], now=99).trades[p.id].state == "proposed"
    expired = book([p], [], now=100).trades[p.id]
    assert expired.state == "expired" and expired.updated_ts == NOW + 100 and expired.is_terminal

    late = reply(BOB, p, "accept", ts=100)
    b = book([p], [late], now=150)
    assert b.trades[p.id].state == "expired" and b.reserved == {}
    assert "expired" in b.refused[late.id] and "the responder" in b.refused[late.id]
    with pytest.raises(TransitionError, match="expired") as exc:
        check_reply(start_trade(p), late.body, BOB.public, now_ms=NOW + 100)
    assert str(exc.value) == b.refused[late.id]
    with pytest.raises(TransitionError, match="expired"):
        check_reply(expired, late.body, BOB.public, now_ms=NOW + 100)
    with pytest.raises(TransitionError, match="expired"):
        apply_reply(start_trade(p), reply(ALICE, p, "cancel", ts=120))

    # a counter does not extend the deadline; an accepted trade never expires
    c = reply(BOB, p, "counter", ts=50, give=ids(B_GIVE))
    assert book([p], [c], now=100).trades[p.id].state == "expired"
    b = book([p], chain(p, (BOB, "accept", 99), (ALICE, "complete", 500)), now=10_000)
    assert b.trades[p.id].state == "accepted" and b.trades[p.id].completed_by == {ALICE.public}


# --- reservations and offers ---------------------------------------------------------


def test_two_accepts_of_the_same_offer_only_the_earlier_wins():
    p1 = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    p2 = propose(CAROL, BOB, (C_LEND,), (B_SWAP,), ts=1)
    acc2 = reply(BOB, p2, "accept", ts=20)
    acc1 = reply(BOB, p1, "accept", ts=21)
    for props, reps in [([p1, p2], [acc1, acc2]), ([p2, p1], [acc2, acc1])]:
        b = book(props, reps)
        assert b.trades[p2.id].state == "accepted"
        assert b.trades[p1.id].state == "proposed"
        assert b.reserved[B_SWAP.id] == p2.id
        assert b.refused[acc1.id].endswith(f"is reserved by accepted trade {short_id(p2.id)}")


def test_same_timestamp_accepts_are_ordered_by_author_then_seq_then_id():
    p1 = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    p2 = propose(CAROL, BOB, (C_LEND,), (B_SWAP,), ts=0)
    acc1 = reply(BOB, p1, "accept", ts=20, seq=7)
    acc2 = reply(BOB, p2, "accept", ts=20, seq=6)  # same ts and author: lower seq goes first
    for reps in ([acc1, acc2], [acc2, acc1]):
        b = book([p1, p2], reps)
        assert b.trades[p2.id].state == "accepted" and acc1.id in b.refused
    # a consumed offer can never be accepted again
    carol_done = reply(CAROL, p2, "complete", ts=21, prev=acc2)
    done = [acc2, carol_done, reply(BOB, p2, "complete", ts=22, prev=carol_done)]
    late = reply(BOB, p1, "accept", ts=30)
    b = book([p1, p2], [*done, late])
    assert b.consumed == {B_SWAP.id} and "already given away" in b.refused[late.id]


def test_equivocating_replies_a_no_wins_then_key_order():
    """Two answers to the same move by the same party: a decline ranks over an accept, whatever
    the timestamps; two of the same rank are tried in (ts, author, seq, id) order."""
    p = _p()
    acc = reply(BOB, p, "accept", ts=5, seq=3)
    dec = reply(BOB, p, "decline", ts=9, seq=4)
    for reps in ([acc, dec], [dec, acc]):
        b = book([p], reps)
        assert b.trades[p.id].applied == (dec.id,) and b.trades[p.id].state == "declined"
        assert "takes precedence" in b.refused[acc.id]
    acc2 = reply(BOB, p, "accept", ts=5, seq=3, give=(), take=())  # same key but the id
    counter = reply(BOB, p, "counter", ts=5, seq=3, give=ids(B_GIVE))
    first, second = sorted([acc2, counter], key=lambda r: r.id)
    for reps in ([acc2, counter], [counter, acc2]):
        b = book([p], reps)
        assert b.trades[p.id].applied == (first.id,) and set(b.refused) == {second.id}
        assert f"which reply {short_id(first.id)} answered first" in b.refused[second.id]


def test_withdrawn_offer_cannot_be_accepted_or_countered():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    acc = reply(BOB, p, "accept", ts=20)
    b = book([p], [acc], offers=withdrawn(A_GIVE, 15))
    assert b.trades[p.id].state == "unavailable" and "withdrawn" in b.refused[acc.id]
    assert (
        book([p], [acc], offers=withdrawn(A_GIVE, 20)).trades[p.id].state == "unavailable"
    )  # tie: withdraw wins
    # a withdraw after the accept does not undo the trade
    assert book([p], [acc], offers=withdrawn(A_GIVE, 21)).trades[p.id].state == "accepted"
    counter = reply(BOB, p, "counter", ts=20, give=ids(B_SWAP), take=ids(A_GIVE))
    with pytest.raises(TransitionError, match="withdrawn"):
        apply_reply(start_trade(p), counter, offers=withdrawn(B_SWAP, 10))


def test_offers_of_the_wrong_party_are_refused():
    p = propose(ALICE, BOB, (B_SWAP,), (A_GIVE,), ts=0)  # sides swapped by mistake
    acc = reply(BOB, p, "accept", ts=1)
    with pytest.raises(TransitionError, match="belongs to the responder") as exc:
        apply_reply(start_trade(p), acc, offers=OFFERS)
    assert "on the proposer's side" in str(exc.value)
    apply_reply(start_trade(p), acc)  # without offer knowledge the check cannot run
    b = book([p], [acc])
    assert b.trades[p.id].state == "proposed" and acc.id in b.refused

    p2 = propose(ALICE, BOB, (A_GIVE,), (C_GIVE,), ts=0)  # Carol's chair is not Bob's to give
    with pytest.raises(TransitionError, match="not a party"):
        apply_reply(start_trade(p2), reply(BOB, p2, "accept", ts=1), offers=OFFERS)
    bad_counter = reply(BOB, p, "counter", ts=1, give=ids(A_LEND))  # Bob "gives" Alice's drill
    with pytest.raises(TransitionError, match="belongs to the proposer"):
        apply_reply(start_trade(p), bad_counter, offers=OFFERS)
    both = reply(BOB, p, "counter", ts=1, give=ids(A_GIVE), take=ids(A_GIVE))
    with pytest.raises(TransitionError, match="both sides"):
        apply_reply(start_trade(p), both)


# --- order of arrival -------------------------------------------------------------


def test_reply_before_its_proposal_stays_pending_then_converges():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    acc, *done = chain(p, (BOB, "accept", 5), (ALICE, "complete", 6), (BOB, "complete", 7))
    early = book([], [*done, acc])
    assert early.trades == {} and early.pending == {acc.id, *ids(*done)} and early.refused == {}
    full = book([p], [*reversed(done), acc])
    assert full.pending == frozenset() and full.trades[p.id].state == "completed"
    assert full == book([p], [acc, *done])


def test_reply_timestamped_before_its_proposal_is_refused():
    p = propose(ALICE, BOB, (A_GIVE,), ts=10)
    acc = reply(BOB, p, "accept", ts=5)
    b = book([p], [acc])
    assert b.trades[p.id].state == "proposed" and "before the proposal" in b.refused[acc.id]


def test_book_helpers():
    p = _p()
    b = book([p], [])
    assert b.trade(p.id).state == "proposed"
    assert b.involving(ALICE.public) == [b.trades[p.id]] and b.involving(CAROL.public) == []
    with pytest.raises(NotFound):
        b.trade(bytes(32))
    accept = ReplyBody(proposal=p.id, action="accept", prev=p.id)
    b.check_reply(accept, BOB.public, now_ms=NOW + 1, offers=OFFERS)
    with pytest.raises(NotAllowed):
        b.check_reply(accept, CAROL.public, now_ms=NOW + 1)
    assert STATES == (
        "proposed",
        "countered",
        "accepted",
        "completed",
        "declined",
        "cancelled",
        "expired",
        "unavailable",
        "handed over",
        "overdue",
        "returned",
    )
    assert TERMINAL_STATES == {"completed", "declined", "cancelled", "expired", "unavailable", "returned"}


# --- properties: any order, any duplication; check_reply agrees with the fold -----


@dataclass(frozen=True)
class Scenario:
    proposals: tuple[Record, ...]  # present (some generated proposals are left out)
    replies: tuple[Record, ...]  # including replies to the left-out ones
    offers: dict[bytes, OfferInfo]
    now: int

    @property
    def max_ts(self) -> int:
        return max(r.ts for r in (*self.proposals, *self.replies))


def _offer_ids(draw, author: Author, max_size: int = 2) -> tuple[bytes, ...]:
    pool = OWN[author.public]
    if not pool or draw(st.integers(0, 11)) == 0:
        pool = WORLD_IDS  # now and then, someone else's offer
    return tuple(draw(st.lists(st.sampled_from(pool), unique=True, max_size=max_size)))


def _counter_terms(draw, who: Author, counterparty: Author) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    give = _offer_ids(draw, who)
    take = _offer_ids(draw, counterparty)
    if not give and not take:
        take = (draw(st.sampled_from(WORLD_IDS)),)
    return give, take


def _author(key: bytes) -> Author:
    return next(a for a in PARTIES if a.public == key)


@st.composite
def scenarios(draw) -> Scenario:
    """Several trades with scripts of mostly legal (by the state machine alone) and some random moves."""
    gone = draw(st.dictionaries(st.sampled_from(WORLD_IDS), st.integers(0, 120), max_size=2))
    terms = draw(st.lists(st.none() | st.integers(1, 20), min_size=len(WORLD_IDS), max_size=len(WORLD_IDS)))
    offers = {
        oid: replace(
            info,
            withdrawn_at=None if oid not in gone else NOW + gone[oid],
            max_days=days if info.kind == "lend" else None,  # a loan's term (lend offers only)
        )
        for (oid, info), days in zip(OFFERS.items(), terms, strict=True)
    }
    seq = itertools.count(1)
    proposals: list[Record] = []
    replies: list[Record] = []
    ends: dict[bytes, int] = {}  # proposal id -> ts of its last scripted move
    for _ in range(draw(st.integers(1, 4))):
        cast = PARTIES if draw(st.integers(0, 5)) == 0 else PARTIES[:3]  # Dave owns nothing: rarely
        proposer, responder = draw(st.permutations(cast))[:2]
        give, take = _offer_ids(draw, proposer), _offer_ids(draw, responder)
        if not give and not take:
            take = (draw(st.sampled_from(WORLD_IDS)),)
        ts = draw(st.integers(0, 40))
        if proposals and draw(st.booleans()):
            # a rival: someone else wants what an earlier proposal takes, a bit later
            earlier = draw(st.sampled_from(proposals))
            responder = _author(earlier.body.to)
            proposer = draw(st.sampled_from([a for a in PARTIES if a is not responder]))
            give, take = _offer_ids(draw, proposer), earlier.body.take or earlier.body.give
            ts = draw(st.sampled_from([earlier.ts - NOW, ends[earlier.id]])) + draw(st.integers(0, 30))
        expires = draw(st.none() | st.integers(ts + 1, ts + 100))
        body = ProposalBody(
            to=responder.public, give=give, take=take, expires=None if expires is None else NOW + expires
        )
        prop = proposer.sign(body, ts=NOW + ts, seq=next(seq))
        if draw(st.integers(0, 9)) > 0:  # one in ten is never delivered
            proposals.append(prop)
        trade = start_trade(prop)
        moves_made: list[bytes] = [prop.id]  # every move of this trade's script, to fork from
        t = ts
        for _ in range(draw(st.integers(0, 6))):
            t += draw(st.integers(-3, 15))
            moves = [
                (who, action)
                for who in (proposer, responder)
                for action in sorted(trade.allowed_actions(who.public))
            ]
            if moves and draw(st.integers(0, 4)) > 0:
                onward = [m for m in moves if m[1] not in ("cancel", "decline")]
                if onward and draw(st.integers(0, 2)) > 0:
                    moves = onward  # mostly move the trade forward
                who, action = draw(st.sampled_from(moves))
            else:
                who, action = draw(st.sampled_from(PARTIES)), draw(st.sampled_from(REPLY_ACTIONS))
            g, k = ((), ())
            if action == "counter":
                g, k = _counter_terms(draw, who, responder if who is proposer else proposer)
            prev: bytes | None = trade.latest_move
            fork = draw(st.integers(0, 19))
            if fork < 4:  # a fork: an answer to an earlier move (a race, or a backdated move)
                prev = draw(st.sampled_from(moves_made))
            elif fork == 4:  # made before replies were chained
                prev = None
            elif fork == 5:  # names a move not held (yet), or one of another trade
                prev = draw(
                    st.sampled_from([bytes([7]) * 32, *(r.id for r in replies), *(q.id for q in proposals)])
                )
            until = NOW + max(t, 0) + draw(st.integers(-2, 40)) * DAY_MS if action == "extend" else None
            rec = who.sign(
                ReplyBody(proposal=prop.id, action=action, give=g, take=k, prev=prev, until=until),
                ts=NOW + max(t, 0),
                seq=next(seq) if draw(st.integers(0, 5)) else 0,  # now and then, an equivocation
            )
            replies.append(rec)
            moves_made.append(rec.id)
            try:
                trade = apply_reply(trade, rec, offers=offers)  # offers: a loan's moves need them
            except MeshError:
                pass
        ends[prop.id] = t
    later = draw(st.sampled_from([0, 0, 15 * DAY_MS, 40 * DAY_MS]))  # now and then, loans are overdue
    return Scenario(tuple(proposals), tuple(replies), offers, NOW + later + draw(st.integers(0, 200)))


@settings(max_examples=150, deadline=None)
@given(sc=scenarios(), data=st.data())
def test_any_order_and_any_duplication_give_the_same_book(sc, data):
    expected = derive_trades(sc.proposals, sc.replies, sc.offers, sc.now)
    props = data.draw(st.permutations(sc.proposals), label="proposals")
    if props:
        props += data.draw(st.lists(st.sampled_from(sc.proposals), max_size=3), label="duplicate proposals")
    reps = list(data.draw(st.permutations(sc.replies), label="replies"))
    if reps:
        reps += data.draw(st.lists(st.sampled_from(sc.replies), max_size=4), label="duplicate replies")
        reps = data.draw(st.permutations(reps), label="shuffled again")
    got = derive_trades(iter(props), iter(reps), dict(reversed(sc.offers.items())), sc.now)
    assert got == expected
    assert list(got.trades) == list(expected.trades)
    # every reply is accounted for exactly once
    applied = {rid for t in got.trades.values() for rid in t.applied}
    assert applied | set(got.refused) | got.pending == {r.id for r in sc.replies}
    assert len(applied) + len(got.refused) + len(got.pending) == len({r.id for r in sc.replies})
    # reservations are exactly the offers of the accepted trades and of the loans that are out
    out = ("accepted", "handed over", "overdue")
    held = {oid: t.proposal_id for t in got.trades.values() if t.state in out for oid in t.offers}
    assert got.reserved == held


@settings(max_examples=150, deadline=None)
@given(sc=scenarios(), data=st.data())
def test_check_reply_agrees_with_the_fold_for_a_reply_at_the_end(sc, data):
    if not sc.proposals:
        return
    prop = data.draw(st.sampled_from(sc.proposals), label="proposal")
    ts = sc.max_ts + 1
    before = derive_trades(sc.proposals, sc.replies, sc.offers, ts)
    trade = before.trades[prop.id]
    moves = [(a, action) for a in PARTIES for action in sorted(trade.allowed_actions(a.public))]
    if moves and data.draw(st.booleans(), label="legal by the state machine"):
        who, action = data.draw(st.sampled_from(moves), label="move")
    else:
        who = data.draw(st.sampled_from(PARTIES), label="who")
        action = data.draw(st.sampled_from(REPLY_ACTIONS), label="action")
    g, k = ((), ())
    if action == "counter":
        g, k = _counter_terms(
            data.draw, who, _author(trade.other(who.public)) if trade.role(who.public) else ALICE
        )
    latest = data.draw(st.integers(0, 5), label="answers the latest move") > 0
    prev = trade.latest_move
    if not latest:
        prev = data.draw(st.sampled_from([prop.id, *(r.id for r in sc.replies)]), label="prev")
        latest = prev == trade.latest_move
    until = None
    if action == "extend":
        until = (trade.due or ts) + data.draw(st.integers(-2, 40), label="extend by days") * DAY_MS
    new = who.sign(
        ReplyBody(proposal=prop.id, action=action, give=g, take=k, prev=prev, until=until),
        ts=ts,
        seq=len(sc.replies) + 50,
    )
    after = derive_trades(sc.proposals, [*sc.replies, new], sc.offers, ts)
    try:
        check_reply(
            trade,
            new.body,
            who.public,
            now_ms=ts,
            offers=sc.offers,
            reserved=before.reserved,
            consumed=before.consumed,
        )
    except MeshError as exc:
        if not latest:  # the fold may rank a stale answer into a fork; never apply it unrefused here
            assert "latest move" in str(exc)
            return
        assert after.refused[new.id] == str(exc)
        if trade.state == "unavailable":
            # the fold's tree does not know what was consumed: a cancel or decline it found legal
            # and the fold refused (the trade had closed) raises the floor, as any refused no does
            got = after.trades[prop.id]
            assert got.floor >= trade.floor and replace(got, floor=trade.floor) == trade
            assert {k: v for k, v in after.trades.items() if k != prop.id} == {
                k: v for k, v in before.trades.items() if k != prop.id
            }
        else:
            assert after.trades == before.trades
        assert after.reserved == before.reserved
    else:
        assert new.id not in after.refused
        moved = apply_reply(trade, new, offers=sc.offers, reserved=before.reserved, consumed=before.consumed)
        assert after.trades[prop.id] == moved and moved.applied[-1] == new.id
        # other trades change only by closing: the new reply may have given away what they name
        withdrawn = {oid: i.withdrawn_at for oid, i in sc.offers.items() if i.withdrawn_at is not None}
        assert {k: v for k, v in after.trades.items() if k != prop.id} == {
            k: close(v, now_ms=ts, withdrawn=withdrawn, consumed=after.consumed)
            for k, v in before.trades.items()
            if k != prop.id
        }


def test_the_scenario_generator_reaches_every_state_and_refusal():
    """The properties above are only as good as the scenarios: check they go everywhere."""
    seen: set[str] = set()

    @settings(max_examples=1500, derandomize=True, database=None, phases=[Phase.generate], deadline=None)
    @given(sc=scenarios())
    def explore(sc):
        b = derive_trades(sc.proposals, sc.replies, sc.offers, sc.now)
        seen.update(t.state for t in b.trades.values())
        seen.update(reason for why in b.refused.values() for reason in REASONS if reason in why)
        if b.pending:
            seen.add("pending")

    explore()
    assert {*STATES, *REASONS, "pending"} - seen == set()


REASONS = (
    "reserved by accepted trade",
    "withdrawn",
    "already given away",
    "expired",
    "belongs to",
    "not a party",
    "final state",
    "before the proposal",
    "answered first",  # a fork lost to a sibling applied first
    "takes precedence",  # a fork lost to a better-ranked sibling
    "which was not applied",  # follows a reply that was not applied
    "names no move",  # unchained
    "not a move of",  # its chain leads into another trade
    "check the clock",  # dated before the move it answers
)


# --- chains: moves follow the replies they name, never timestamps ---------------------


def _completed() -> tuple[Record, list[Record]]:
    """Alice gives apples for Bob's jam: Bob accepts at +10, Alice completes at +20, Bob at +30."""
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    return p, chain(p, (BOB, "accept", 10), (ALICE, "complete", 20), (BOB, "complete", 30))


def test_a_backdated_cancel_changes_nothing():
    """The attack of issue 12: a cancel dated 50 ms after the accept, once both have completed."""
    p, (acc, done_a, done_b) = _completed()
    honest = book([p], [acc, done_a, done_b])
    assert honest.trades[p.id].state == "completed"
    for canceller in (ALICE, BOB):
        backdated = reply(canceller, p, "cancel", ts=10 + 50, prev=acc)
        for reps in ([acc, done_a, done_b, backdated], [backdated, done_b, acc, done_a]):
            b = book([p], reps)
            assert b.trades == honest.trades and b.consumed == honest.consumed == {A_GIVE.id, B_SWAP.id}
            assert "that the other party has answered takes precedence" in b.refused[backdated.id]
    # an unchained one (as made before the chain) is never applied at all
    old_style = reply(ALICE, p, "cancel", ts=11, unchained=True)
    b = book([p], [acc, done_a, done_b, old_style])
    assert b.trades == honest.trades and "names no move" in b.refused[old_style.id]


FORK_MOVES = [(who, action) for who in (ALICE, BOB, CAROL) for action in REPLY_ACTIONS]


@pytest.mark.parametrize("at", range(3), ids=("proposal", "accept", "first complete"))
@pytest.mark.parametrize(("who", "action"), FORK_MOVES, ids=lambda v: v if isinstance(v, str) else None)
def test_no_single_party_fork_rewrites_a_completed_trade(at, who, action):
    """Whatever one party signs, answering whichever earlier move, at whatever time: still completed."""
    p, replies = _completed()
    honest = book([p], replies)
    prev = [p, *replies][at]
    for ts in (prev.ts - NOW, prev.ts - NOW + 1, 10_000):
        terms = {"give": OWN[who.public][:1] or ids(A_LEND)} if action == "counter" else {}
        fork = reply(who, p, action, ts=ts, prev=prev, **terms)
        b = book([p], [*replies, fork], now=20_000)
        t, h = b.trades[p.id], honest.trades[p.id]
        assert (t.state, t.give, t.take, t.completed_by) == (h.state, h.give, h.take, h.completed_by)
        assert b.consumed == honest.consumed and b.reserved == honest.reserved
        if (who, action) != (BOB, "complete") or at == 0:  # Bob's second complete: either counts
            assert b.trades == honest.trades and fork.id in b.refused


def test_a_cancel_wins_over_an_unanswered_move_and_cannot_be_undone_by_the_canceller():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    # a race: Alice cancels while Bob accepts and completes; Alice never answered the accept
    cancel = reply(ALICE, p, "cancel", ts=50)
    acc, done_b = chain(p, (BOB, "accept", 10), (BOB, "complete", 11))
    b = book([p], [acc, done_b, cancel])
    assert b.trades[p.id].state == "cancelled" and b.reserved == {} and b.trades[p.id].applied == (cancel.id,)
    # once Alice answered the accept (she completed), her cancel of the proposal loses
    done_a = reply(ALICE, p, "complete", ts=12, prev=done_b)
    b = book([p], [acc, done_b, cancel, done_a])
    assert b.trades[p.id].state == "completed" and "takes precedence" in b.refused[cancel.id]
    # Bob accepts then cancels; a later fork of his own (accept, complete) cannot revive it
    acc2, bob_cancel = chain(p, (BOB, "accept", 10), (BOB, "cancel", 20))
    revive = chain(p, (BOB, "accept", 5), (BOB, "complete", 6))
    b = book([p], [acc2, bob_cancel, *revive])
    assert b.trades[p.id].state == "cancelled" and b.reserved == {}
    assert "takes precedence" in b.refused[revive[0].id] and "not applied" in b.refused[revive[1].id]


def test_concurrent_completes_both_count_and_cannot_be_cancelled():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    acc = reply(BOB, p, "accept", ts=10)
    done_a = reply(ALICE, p, "complete", ts=20, prev=acc)
    done_b = reply(BOB, p, "complete", ts=21, prev=acc)  # Bob had not seen Alice's
    for reps in ([acc, done_a, done_b], [done_b, done_a, acc]):
        t = book([p], reps).trades[p.id]
        assert t.state == "completed" and t.applied == (acc.id, done_a.id, done_b.id)
    # each complete answers the other's: a backdated cancel of the accept loses
    for who in (ALICE, BOB):
        cancel = reply(who, p, "cancel", ts=11, prev=acc)
        b = book([p], [acc, done_a, done_b, cancel])
        assert b.trades[p.id].state == "completed" and "takes precedence" in b.refused[cancel.id]
    # an answer to the crossing complete meets a completed trade (found by the property test)
    after = reply(ALICE, p, "complete", ts=30, prev=done_b)
    b = book([p], [acc, done_a, done_b, after])
    assert b.trades[p.id].state == "completed" and "completed, a final state" in b.refused[after.id]
    # a second complete by the same party is no crossing
    again = reply(ALICE, p, "complete", ts=22, prev=acc)
    b = book([p], [acc, done_a, again])
    assert b.trades[p.id].completed_by == {ALICE.public} and "answered first" in b.refused[again.id]


def test_a_reply_waits_for_the_move_it_answers():
    p, (acc, done_a, done_b) = _completed()
    early = book([p], [done_a, done_b])
    assert early.trades[p.id].state == "proposed" and early.pending == {done_a.id, done_b.id}
    assert early.refused == {}
    assert book([p], [done_b, acc, done_a]).trades[p.id].state == "completed"
    # a reply naming a move of another trade is refused, as is one naming that one
    other = propose(CAROL, BOB, (C_GIVE,), (B_GIVE,), ts=0)
    stray = reply(BOB, p, "accept", ts=5, prev=other)
    follow = reply(ALICE, p, "complete", ts=6, prev=stray)
    b = book([p, other], [stray, follow])
    assert "not a move of" in b.refused[stray.id] and "not applied" in b.refused[follow.id]


def test_check_reply_wants_the_latest_move():
    p, (acc, done_a, _) = _completed()
    b = book([p], [acc, done_a])
    t = b.trades[p.id]
    assert t.latest_move == done_a.id
    b.check_reply(ReplyBody(proposal=p.id, action="complete", prev=done_a.id), BOB.public, now_ms=NOW + 30)
    with pytest.raises(TransitionError) as exc:
        b.check_reply(ReplyBody(proposal=p.id, action="complete", prev=p.id), BOB.public, now_ms=NOW + 30)
    assert f"latest move is {short_id(done_a.id)}" in str(exc.value) and "look at the trade again" in str(
        exc.value
    )
    with pytest.raises(TransitionError, match="names no move it answers") as exc:
        b.check_reply(ReplyBody(proposal=p.id, action="complete"), BOB.public, now_ms=NOW + 30)
    assert short_id(done_a.id) in str(exc.value)
    # completes commute: Bob's, naming the accept Alice's answered too, still counts
    b.check_reply(ReplyBody(proposal=p.id, action="complete", prev=acc.id), BOB.public, now_ms=NOW + 30)


def test_a_trade_whose_answered_accept_was_refused_is_stalled():
    """Alice offers her apples to Bob and to Carol; both accept, and she completes both. The earlier
    accept holds the apples; the other trade stays proposed, and only an answered reply could move it."""
    p1 = propose(ALICE, BOB, (A_GIVE,), ts=0)
    p2 = propose(ALICE, CAROL, (A_GIVE,), ts=0)
    r1 = chain(p1, (BOB, "accept", 10), (ALICE, "complete", 30))
    r2 = chain(p2, (CAROL, "accept", 20), (ALICE, "complete", 31))
    b = book([p1, p2], [*r1, *r2])
    assert b.trades[p1.id].state == "accepted" and "reserved by accepted trade" in b.refused[r2[0].id]
    stalled = b.trades[p2.id]
    assert stalled.state == "proposed" and stalled.floor == 2 and stalled.latest_move == p2.id
    decline = ReplyBody(proposal=p2.id, action="decline", prev=p2.id)
    with pytest.raises(TransitionError, match="the other party has answered takes precedence") as exc:
        b.check_reply(decline, CAROL.public, now_ms=NOW + 40)
    late = CAROL.sign(decline, ts=NOW + 40, seq=77)
    after = book([p1, p2], [*r1, *r2, late])
    assert after.refused[late.id] == str(exc.value) and after.trades == b.trades


# --- unavailable: a trade not yet accepted whose offer is gone for good closes --------


def test_a_proposal_on_an_offer_withdrawn_before_it_is_unavailable():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=10)
    t = book([p], [], offers=withdrawn(B_SWAP, 5)).trades[p.id]
    assert t.state == "unavailable" and t.is_terminal and t.unavailable_offer == B_SWAP.id
    assert t.closed_because == f"offer {short_id(B_SWAP.id)} was withdrawn at {NOW + 5}"
    assert t.updated_ts == NOW + 10  # the proposal came after the withdrawal


def test_a_proposal_whose_offer_is_withdrawn_later_closes_and_refuses_replies():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    counter = reply(BOB, p, "counter", ts=10, give=ids(B_SWAP), take=ids(A_GIVE))
    offers = withdrawn(A_GIVE, 30)
    assert book([p], [counter], offers=offers, now=29).trades[p.id].state == "countered"  # not yet
    b = book([p], [counter], offers=offers, now=30)
    t = b.trades[p.id]
    assert (t.state, t.unavailable_offer, t.updated_ts) == ("unavailable", A_GIVE.id, NOW + 30)
    assert "withdrawn" in t.closed_because
    # a reply after the withdrawal is refused by the fold and by check_reply, in the same words
    accept = reply(ALICE, p, "accept", ts=40, prev=counter)
    with pytest.raises(TransitionError, match="unavailable") as exc:
        b.check_reply(accept.body, ALICE.public, now_ms=NOW + 40, offers=offers)
    after = book([p], [counter, accept], offers=offers, now=40)
    assert after.refused[accept.id] == str(exc.value) and after.trades == b.trades


def test_a_proposal_on_an_offer_given_away_in_another_trade_is_unavailable():
    p1 = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    p2 = propose(CAROL, BOB, (C_LEND,), (B_SWAP,), ts=5)  # a rival for Bob's jam (swap: consumed)
    done = chain(p1, (BOB, "accept", 10), (ALICE, "complete", 20), (BOB, "complete", 30))
    b = book([p1, p2], done)
    assert b.trades[p1.id].state == "completed" and B_SWAP.id in b.consumed
    t = b.trades[p2.id]
    assert t.state == "unavailable" and t.unavailable_offer == B_SWAP.id
    assert "already given away in a completed trade" in t.closed_because
    # while the first trade is only accepted, the jam is reserved: that closes nothing
    held = book([p1, p2], done[:2])
    assert held.trades[p1.id].state == "accepted" and held.trades[p2.id].state == "proposed"
    # a lent drill comes back: another trade naming it stays open
    p3 = propose(ALICE, CAROL, (A_GIVE,), (C_LEND,), ts=4)
    lent = chain(p2, (BOB, "accept", 10), (CAROL, "complete", 20), (BOB, "complete", 30))
    b = book([p2, p3], lent)
    assert b.trades[p2.id].state == "completed" and b.trades[p3.id].state == "proposed"


def test_unavailable_is_the_same_in_every_arrival_order():
    p1 = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    p2 = propose(CAROL, BOB, (C_GIVE,), (B_SWAP,), ts=5)
    p3 = propose(CAROL, ALICE, (C_LEND,), (A_SWAP,), ts=6)
    done = chain(p1, (BOB, "accept", 10), (ALICE, "complete", 20), (BOB, "complete", 30))
    late = reply(BOB, p2, "accept", ts=40)
    records = [p1, p2, p3, *done, late]
    offers = withdrawn(A_SWAP, 50)
    expected = derive_trades([p1, p2, p3], [*done, late], offers, NOW + 100)
    assert [expected.trades[p.id].state for p in (p1, p2, p3)] == ["completed", "unavailable", "unavailable"]
    assert "unavailable" in expected.refused[late.id]
    for order in itertools.permutations(records):
        props = [r for r in order if r.type == "proposal"]
        reps = [r for r in order if r.type == "reply"]
        assert derive_trades(props, reps, dict(reversed(offers.items())), NOW + 100) == expected


def test_a_withdraw_after_the_accept_does_not_close_the_trade():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    acc = reply(BOB, p, "accept", ts=20)
    t = book([p], [acc], offers=withdrawn(B_SWAP, 25), now=100).trades[p.id]
    assert t.state == "accepted" and t.closed_because == "" and t.unavailable_offer is None


def test_an_expired_trade_stays_expired_when_its_offer_is_gone_too():
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0, expires=50)
    assert book([p], [], offers=withdrawn(B_SWAP, 10), now=60).trades[p.id].state == "expired"
    assert book([p], [], offers=withdrawn(B_SWAP, 10), now=40).trades[p.id].state == "unavailable"
