"""Loans in the trade machine (meshnode.barter): received, extend, returned, overdue, and their refusals."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.barter import DAY_MS, DEFAULT_LOAN_DAYS, LOAN_GRACE_MS, lender_of
from meshnode.records import ReplyBody
from tests.conftest import NOW
from tests.test_barter import (
    A_GIVE,
    A_LEND,
    ALICE,
    B_GIVE,
    B_SWAP,
    BOB,
    CAROL,
    OFFERS,
    book,
    chain,
    propose,
    reply,
)

TERMS = {**OFFERS, A_LEND.id: replace(OFFERS[A_LEND.id], max_days=7)}  # Alice lends her drill for 7 days


def _loan():
    """Bob asks to borrow Alice's drill (7 days): Alice accepts at +10, Bob has it at +20."""
    p = propose(BOB, ALICE, (), (A_LEND,), ts=0)
    return p, chain(p, (ALICE, "accept", 10), (BOB, "received", 20))


def test_received_hands_the_loan_over_with_a_due_date_from_the_terms():
    p, replies = _loan()
    t = book([p], replies, offers=TERMS).trades[p.id]
    assert t.state == "handed over"
    assert (t.lender, t.borrower) == (ALICE.public, BOB.public)
    assert t.handed_over_ts == NOW + 20 and t.due == NOW + 20 + 7 * DAY_MS
    assert t.allowed_actions(ALICE.public) == {"extend", "returned"} and not t.allowed_actions(BOB.public)
    # without max_days in the terms: the default term
    t = book([p], replies).trades[p.id]
    assert t.due == NOW + 20 + DEFAULT_LOAN_DAYS * DAY_MS


def test_extend_then_returned_ends_it_like_a_completed_trade():
    p, replies = _loan()
    due = NOW + 20 + 7 * DAY_MS
    ext = reply(ALICE, p, "extend", ts=30, prev=replies[-1], until=due + 3 * DAY_MS)
    back = reply(ALICE, p, "returned", ts=40, prev=ext)
    b = book([p], [*replies, ext], offers=TERMS)
    assert b.trades[p.id].due == due + 3 * DAY_MS and b.reserved == {A_LEND.id: p.id}
    b = book([p], [*replies, ext, back], offers=TERMS)
    t = b.trades[p.id]
    assert t.state == "returned" and t.is_terminal
    assert b.reserved == {} and A_LEND.id not in b.consumed  # the drill is back in circulation
    assert b.completed_pairs() == [(p.id, BOB.public, ALICE.public)]  # trust counts it as a trade


def test_overdue_after_the_due_date_and_late_after_the_grace_period():
    p, replies = _loan()
    due = NOW + 20 + 7 * DAY_MS
    assert book([p], replies, offers=TERMS, now=due - NOW - 1).trades[p.id].state == "handed over"
    assert book([p], replies, offers=TERMS, now=due - NOW).trades[p.id].state == "overdue"
    assert (
        book([p], replies, offers=TERMS, now=due - NOW + LOAN_GRACE_MS).late_loans(due + LOAN_GRACE_MS) == []
    )
    late = book([p], replies, offers=TERMS, now=due - NOW + LOAN_GRACE_MS + 1)
    assert late.late_loans(due + LOAN_GRACE_MS + 1) == [(p.id, ALICE.public, BOB.public)]
    # an overdue loan may still be extended or returned; extending ends the overdue
    ext = reply(ALICE, p, "extend", ts=due - NOW + 5, prev=replies[-1], until=due + 10 * DAY_MS)
    b = book([p], [*replies, ext], offers=TERMS, now=due - NOW + 6)
    assert b.trades[p.id].state == "handed over" and ext.id not in b.refused


@pytest.mark.parametrize(
    ("who", "action", "why"),
    [
        (ALICE, "received", "they are the lender"),
        (ALICE, "returned", "only a loan the borrower has received"),
        (BOB, "extend", "only a loan the borrower has received"),
    ],
)
def test_loan_moves_refused_before_the_handover(who, action, why):
    p, (acc, _) = _loan()
    move = reply(who, p, action, ts=20, prev=acc)
    b = book([p], [acc, move], offers=TERMS)
    assert b.trades[p.id].state == "accepted" and why in b.refused[move.id]


@pytest.mark.parametrize(
    ("who", "action", "why"),
    [
        (BOB, "extend", "only the lender"),
        (BOB, "returned", "only the lender"),
        (BOB, "cancel", "only the lender"),
        (ALICE, "cancel", "only the lender"),
        (ALICE, "complete", "only the lender"),
        (CAROL, "returned", "not a party"),
    ],
)
def test_loan_moves_refused_once_handed_over(who, action, why):
    p, replies = _loan()
    move = reply(who, p, action, ts=30, prev=replies[-1])
    b = book([p], [*replies, move], offers=TERMS)
    assert b.trades[p.id].state == "handed over" and why in b.refused[move.id]


def test_an_extend_must_move_the_due_date_later():
    p, replies = _loan()
    due = NOW + 20 + 7 * DAY_MS
    for until in (due, due - DAY_MS, NOW + 25):
        ext = reply(ALICE, p, "extend", ts=30, prev=replies[-1], until=until)
        b = book([p], [*replies, ext], offers=TERMS)
        assert b.trades[p.id].due == due and "must be later" in b.refused[ext.id]


def test_received_on_a_trade_that_is_no_loan():
    # no lend offer: a swap
    p = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    acc, got = chain(p, (BOB, "accept", 10), (BOB, "received", 20))
    assert "no loan" in book([p], [acc, got]).refused[got.id]
    # a lend offer whose record this node does not hold: not known as a loan
    p2 = propose(BOB, ALICE, (), (A_LEND,), ts=0)
    acc2, got2 = chain(p2, (ALICE, "accept", 10), (BOB, "received", 20))
    unknown = {k: v for k, v in OFFERS.items() if k != A_LEND.id}
    assert "no loan" in book([p2], [acc2, got2], offers=unknown).refused[got2.id]
    # after one party completed, it is completed as a trade, not handed over
    p3 = propose(BOB, ALICE, (), (A_LEND,), ts=0)
    acc3, done, got3 = chain(p3, (ALICE, "accept", 10), (ALICE, "complete", 15), (BOB, "received", 20))
    assert "already marked complete" in book([p3], [acc3, done, got3], offers=TERMS).refused[got3.id]


def test_the_lender_is_the_author_of_the_lend_offers_on_one_side():
    p = propose(BOB, ALICE, (B_GIVE,), (A_LEND,), ts=0)  # Bob gives books for the loan of the drill
    t = book([p], []).trades[p.id]
    assert lender_of(t, OFFERS) == ALICE.public
    p = propose(ALICE, BOB, (A_LEND,), (), ts=0)  # Alice offers to lend
    assert lender_of(book([p], []).trades[p.id], OFFERS) == ALICE.public
    assert lender_of(book([p], []).trades[p.id], None) is None


def test_an_extend_carries_until_and_only_an_extend_does():
    from meshnode.errors import ValidationError
    from meshnode.records import check_body

    with pytest.raises(ValidationError, match="until"):
        check_body(ReplyBody(proposal=bytes(32), action="extend", prev=bytes(32)))
    with pytest.raises(ValidationError, match="until"):
        check_body(ReplyBody(proposal=bytes(32), action="returned", prev=bytes(32), until=5))
    check_body(ReplyBody(proposal=bytes(32), action="extend", prev=bytes(32), until=5))


@settings(max_examples=60, deadline=None)
@given(order=st.permutations(range(5)), now=st.sampled_from([100, 8 * DAY_MS, 40 * DAY_MS]))
def test_a_loan_is_the_same_in_any_arrival_order(order, now):
    p, replies = _loan()
    due = NOW + 20 + 7 * DAY_MS
    ext = reply(ALICE, p, "extend", ts=30, prev=replies[-1], until=due + DAY_MS)
    stray = reply(BOB, p, "returned", ts=31, prev=ext)  # refused: only the lender
    back = reply(ALICE, p, "returned", ts=40, prev=ext)
    records = [*replies, ext, stray, back]
    expected = book([p], records, offers=TERMS, now=now)
    got = book([p], [records[i] for i in order], offers=TERMS, now=now)
    assert got == expected and got.trades[p.id].state == "returned" and stray.id in got.refused
    # without the return, the state depends on the time only
    partial = [r for r in records if r is not back]
    states = {
        book([p], list(perm), offers=TERMS, now=now).trades[p.id].state
        for perm in itertools.permutations(partial)
    }
    assert len(states) == 1


def test_a_late_loan_weakens_only_the_lenders_trade_edge_to_the_borrower():
    from meshnode.trust import LATE_LOAN_FACTOR, edges_from_trades, trade_weight

    p, replies = _loan()
    due = NOW + 20 + 7 * DAY_MS
    earlier = propose(ALICE, BOB, (A_GIVE,), (B_SWAP,), ts=0)
    done = chain(earlier, (BOB, "accept", 1), (ALICE, "complete", 2), (BOB, "complete", 3))
    late = book([p, earlier], [*replies, *done], offers=TERMS, now=due - NOW + LOAN_GRACE_MS + 1)
    now = due + LOAN_GRACE_MS + 1
    edges = {(e.source, e.target): e for e in edges_from_trades(late.completed_pairs(), late.late_loans(now))}
    to_bob, to_alice = edges[(ALICE.public, BOB.public)], edges[(BOB.public, ALICE.public)]
    assert to_bob.weight == pytest.approx(trade_weight(1) * LATE_LOAN_FACTOR) and to_bob.late_loans == (p.id,)
    assert to_alice.weight == pytest.approx(trade_weight(1)) and to_alice.late_loans == ()
    # a late loan between strangers makes no edge; the same loan listed twice counts once
    assert edges_from_trades([], late.late_loans(now)) == []
    twice = edges_from_trades(late.completed_pairs(), late.late_loans(now) * 2)
    assert {(e.source, e.target): e for e in twice} == edges


def test_loan_reminders_say_due_a_day_before_and_overdue_after():
    from meshnode.inbox import REMIND_BEFORE_MS, Notice, loan_reminders

    p, replies = _loan()
    due = NOW + 20 + 7 * DAY_MS

    def at(now: int, me: bytes = BOB.public) -> list[Notice]:
        trades = book([p], replies, offers=TERMS, now=now - NOW).trades.values()
        return loan_reminders(trades, me=me, now_ms=now)

    assert at(due - REMIND_BEFORE_MS - 1) == []
    assert at(due - REMIND_BEFORE_MS) == [Notice("due", replies[-1].id, ALICE.public, p.id)]
    assert at(due - 1, ALICE.public) == [Notice("due", replies[-1].id, BOB.public, p.id)]
    assert at(due) == [Notice("overdue", replies[-1].id, ALICE.public, p.id)]
    assert at(due, CAROL.public) == []  # no party: nothing
    # an extend is a new latest move: it reminds again for the new due date
    ext = reply(ALICE, p, "extend", ts=30, prev=replies[-1], until=due + 5 * DAY_MS)
    trades = book([p], [*replies, ext], offers=TERMS, now=due + 5 * DAY_MS - NOW).trades.values()
    assert loan_reminders(trades, me=BOB.public, now_ms=due + 5 * DAY_MS) == [
        Notice("overdue", ext.id, ALICE.public, p.id)
    ]
    # a returned loan reminds nobody
    back = reply(ALICE, p, "returned", ts=40, prev=ext)
    trades = book([p], [*replies, ext, back], offers=TERMS, now=40 * DAY_MS).trades.values()
    assert loan_reminders(trades, me=BOB.public, now_ms=NOW + 40 * DAY_MS) == []
