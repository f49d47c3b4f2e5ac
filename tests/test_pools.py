"""Group buying: a pool's state and its pledgers' shares from pool, pledge and poolmove records."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode import pools as pl
from meshnode import records as r
from meshnode.errors import NotAllowed, NotFound, TransitionError, ValidationError
from tests.conftest import NOW, Author

ORG = Author(1)
PEOPLE = [Author(seed) for seed in range(2, 7)]
OTHER_SWARM = bytes([9]) * 32
CLOSES = NOW + 100_000


def make_pool(
    *, lo: int = 10, hi: int = 30, closes: int = CLOSES, price: int = 1800, ts: int = NOW
) -> r.Record:
    body = r.PoolBody(
        title="Organic apples", supplier="Ferme du Coin", unit_price=price, min=lo, max=hi, closes=closes
    )
    return ORG.sign(body, ts=ts)


def pledge(who: Author, pool: r.Record, quantity: int, ts: int = NOW + 1_000, **kw) -> r.Record:
    return who.sign(r.PledgeBody(pool=pool.id, quantity=quantity), ts=ts, **kw)


def move(who: Author, pool: r.Record, action: str, ts: int = CLOSES, **kw) -> r.Record:
    return who.sign(r.PoolMoveBody(pool=pool.id, action=action, **kw), ts=ts)


def book(pools, pledges=(), moves=(), now=NOW + 10_000) -> pl.PoolBook:
    return pl.derive_pools(pools, pledges, moves, now)


def three_pledge(pool: r.Record, qty=(4, 3, 5)) -> list[r.Record]:
    return [pledge(PEOPLE[i], pool, q, ts=NOW + 1_000 * (i + 1)) for i, q in enumerate(qty)]


# --- states ------------------------------------------------------------------------


def test_a_pool_is_open_then_reached_then_closed_then_confirmed_then_delivered():
    pool = make_pool()
    assert book([pool]).pool(pool.id).state == pl.OPEN
    pledges = three_pledge(pool)
    assert book([pool], pledges[:2]).pool(pool.id).state == pl.OPEN
    reached = book([pool], pledges).pool(pool.id)
    assert reached.state == pl.REACHED and reached.pledged == 12 and reached.reached
    assert [(s.member, s.quantity, s.cost) for s in reached.shares] == [
        (PEOPLE[0].public, 4, 4 * 1800),
        (PEOPLE[1].public, 3, 3 * 1800),
        (PEOPLE[2].public, 5, 5 * 1800),
    ]
    assert reached.total_cost == 12 * 1800
    closed = book([pool], pledges, now=CLOSES).pool(pool.id)
    assert closed.state == pl.CLOSED and closed.ordered
    confirm = move(ORG, pool, "confirm", ts=CLOSES + 5)
    confirmed = book([pool], pledges, [confirm], now=CLOSES + 10).pool(pool.id)
    assert confirmed.state == pl.CONFIRMED and confirmed.confirmed_ts == CLOSES + 5
    delivered = move(ORG, pool, "delivered", ts=CLOSES + 50)
    done = book([pool], pledges, [confirm, delivered], now=CLOSES + 100).pool(pool.id)
    assert done.state == pl.DELIVERED and done.is_terminal and done.moves == (confirm.id, delivered.id)
    assert book([pool], pledges).pledged_by(PEOPLE[1].public) == [reached]


def test_a_pool_that_did_not_reach_its_minimum_fails_when_it_closes():
    pool = make_pool()
    pledges = three_pledge(pool, (2, 2, 2))
    got = book([pool], pledges, now=CLOSES).pool(pool.id)
    assert got.state == pl.FAILED and got.is_terminal and not got.ordered
    assert got.shares and got.pledged == 6  # what would have been ordered
    b = book([pool], pledges, [move(ORG, pool, "confirm", ts=CLOSES + 1)], now=CLOSES + 2)
    assert b.pool(pool.id).state == pl.FAILED
    assert "only 6 of the minimum 10" in next(iter(b.refused.values()))


def test_pledges_at_or_after_close_never_count():
    pool = make_pool(lo=5)
    on_time = pledge(PEOPLE[0], pool, 4, ts=CLOSES - 1)
    late = pledge(PEOPLE[1], pool, 9, ts=CLOSES)
    late_change = pledge(PEOPLE[0], pool, 0, ts=CLOSES + 1)
    b = book([pool], [on_time, late, late_change], now=CLOSES + 2)
    got = b.pool(pool.id)
    assert got.state == pl.FAILED and got.pledged == 4
    assert "after pool" in b.refused[late.id] and late_change.id in b.refused
    assert got.share_of(PEOPLE[0].public).pledge == on_time.id


def test_the_newest_pledge_replaces_and_zero_withdraws():
    pool = make_pool()
    first = pledge(PEOPLE[0], pool, 8, ts=NOW + 1_000)
    more = pledge(PEOPLE[0], pool, 12, ts=NOW + 2_000)
    b = book([pool], [more, first])
    assert b.pool(pool.id).pledged == 12 and b.replaced == {first.id: more.id}
    assert b.pool(pool.id).state == pl.REACHED
    # Same timestamp: the higher seq is newer.
    same = pledge(PEOPLE[0], pool, 3, ts=NOW + 2_000)
    assert book([pool], [first, more, same]).pool(pool.id).pledged == 3
    out = pledge(PEOPLE[0], pool, 0, ts=NOW + 3_000)
    gone = book([pool], [first, more, out]).pool(pool.id)
    assert gone.shares == () and gone.pledged == 0 and gone.state == pl.OPEN


def test_beyond_max_the_earliest_newest_pledges_are_served_the_last_partly():
    pool = make_pool(lo=5, hi=10)
    pledges = three_pledge(pool, (4, 5, 6))
    got = book([pool], pledges).pool(pool.id)
    assert [(s.pledged, s.quantity, s.partly) for s in got.shares] == [
        (4, 4, False),
        (5, 5, False),
        (6, 1, True),
    ]
    assert got.served == 10 and got.pledged == 15 and got.total_cost == 10 * 1800
    # Raising a pledge later puts the member at the back of the line.
    raised = pledge(PEOPLE[0], pool, 5, ts=NOW + 9_000)
    got = book([pool], [*pledges, raised]).pool(pool.id)
    assert [(s.member, s.quantity) for s in got.shares] == [
        (PEOPLE[1].public, 5),
        (PEOPLE[2].public, 5),
        (PEOPLE[0].public, 0),
    ]


def test_the_organiser_may_pledge_too():
    pool = make_pool(lo=3)
    got = book([pool], [pledge(ORG, pool, 3)]).pool(pool.id)
    assert got.state == pl.REACHED and got.share_of(ORG.public).quantity == 3


def test_cancel_while_open_and_after_close_but_not_after_confirm():
    pool = make_pool()
    pledges = three_pledge(pool)
    cancel = move(ORG, pool, "cancel", ts=NOW + 5_000, note="the farm lost its harvest")
    got = book([pool], pledges, [cancel]).pool(pool.id)
    assert got.state == pl.CANCELLED and not got.ordered and got.cancelled_ts == NOW + 5_000
    late_cancel = move(ORG, pool, "cancel", ts=CLOSES + 1)
    assert book([pool], pledges, [late_cancel], now=CLOSES + 2).pool(pool.id).state == pl.CANCELLED
    confirm = move(ORG, pool, "confirm", ts=CLOSES)
    b = book([pool], pledges, [late_cancel, confirm], now=CLOSES + 2)
    assert b.pool(pool.id).state == pl.CONFIRMED and "already confirmed" in b.refused[late_cancel.id]
    # The organiser's first decision wins: an early cancel beats a later confirm.
    b = book([pool], pledges, [confirm, cancel], now=CLOSES + 2)
    assert b.pool(pool.id).state == pl.CANCELLED and "already cancelled" in b.refused[confirm.id]


def test_no_early_confirm_and_delivered_needs_a_confirm():
    pool = make_pool()
    pledges = three_pledge(pool)
    early = move(ORG, pool, "confirm", ts=CLOSES - 1)
    delivered = move(ORG, pool, "delivered", ts=CLOSES + 9)
    b = book([pool], pledges, [early, delivered], now=CLOSES + 10)
    assert b.pool(pool.id).state == pl.CLOSED
    assert "closes at" in b.refused[early.id] and "not confirmed" in b.refused[delivered.id]
    confirm = move(ORG, pool, "confirm", ts=CLOSES + 1)
    again = move(ORG, pool, "delivered", ts=CLOSES + 20)
    b = book([pool], pledges, [early, delivered, confirm, again], now=CLOSES + 30)
    assert b.pool(pool.id).state == pl.DELIVERED and "already marked delivered" in b.refused[again.id]


def test_moves_by_anyone_but_the_organiser_are_refused_with_the_reason():
    pool = make_pool()
    pledges = three_pledge(pool)
    moves = [move(PEOPLE[0], pool, a, ts=CLOSES + 1) for a in ("confirm", "cancel", "delivered")]
    b = book([pool], pledges, moves, now=CLOSES + 2)
    assert b.pool(pool.id).state == pl.CLOSED
    for m in moves:
        assert "only its organiser may" in b.refused[m.id]


def test_records_in_another_swarm_or_before_the_pool_do_not_count():
    pool = make_pool()
    elsewhere = pledge(PEOPLE[0], pool, 20, swarm=OTHER_SWARM)
    before = pledge(PEOPLE[1], pool, 20, ts=NOW - 1)
    b = book([pool], [elsewhere, before])
    assert b.pool(pool.id).pledged == 0
    assert "another swarm" in b.refused[elsewhere.id] and "before pool" in b.refused[before.id]


def test_a_pool_closing_before_it_was_published_is_refused_with_its_records():
    pool = make_pool(closes=NOW)
    p = pledge(PEOPLE[0], pool, 1, ts=NOW)
    b = book([pool], [p])
    assert pool.id not in b.pools and "closes at" in b.refused[pool.id] and "was refused" in b.refused[p.id]
    with pytest.raises(NotFound):
        b.pool(pool.id)


def test_records_for_an_unknown_pool_are_pending_and_wrong_types_refused():
    pool = make_pool()
    b = book([], [pledge(PEOPLE[0], pool, 1)], [move(ORG, pool, "cancel")])
    assert len(b.pending) == 2 and not b.pools
    with pytest.raises(ValidationError):
        pl.derive_pools([pledge(PEOPLE[0], pool, 1)], [], [], NOW)


# --- checks before signing ----------------------------------------------------------


def test_check_pledge_and_check_move_refuse_with_reasons():
    pool = make_pool()
    pledges = three_pledge(pool)
    open_pool = book([pool], pledges).pool(pool.id)
    pl.check_pledge(open_pool, r.PledgeBody(pool=pool.id, quantity=2), PEOPLE[3].public, now_ms=NOW + 10)
    with pytest.raises(TransitionError, match="no pledge"):
        pl.check_pledge(open_pool, r.PledgeBody(pool=pool.id, quantity=0), PEOPLE[3].public, now_ms=NOW + 10)
    with pytest.raises(TransitionError, match="closed at"):
        pl.check_pledge(open_pool, r.PledgeBody(pool=pool.id, quantity=2), PEOPLE[3].public, now_ms=CLOSES)
    with pytest.raises(NotAllowed, match="only its organiser"):
        pl.check_move(open_pool, r.PoolMoveBody(pool=pool.id, action="cancel"), PEOPLE[0].public, now_ms=NOW)
    with pytest.raises(TransitionError, match="closes at"):
        pl.check_move(open_pool, r.PoolMoveBody(pool=pool.id, action="confirm"), ORG.public, now_ms=NOW + 10)
    with pytest.raises(TransitionError, match="not confirmed"):
        pl.check_move(
            open_pool, r.PoolMoveBody(pool=pool.id, action="delivered"), ORG.public, now_ms=NOW + 10
        )
    closed = book([pool], pledges, now=CLOSES).pool(pool.id)
    pl.check_move(closed, r.PoolMoveBody(pool=pool.id, action="confirm"), ORG.public, now_ms=CLOSES)
    with pytest.raises(ValidationError, match="expected pool"):
        pl.check_move(closed, r.PoolMoveBody(pool=bytes(32), action="confirm"), ORG.public, now_ms=CLOSES)


# --- properties -------------------------------------------------------------------------

ACTIONS = st.sampled_from(["confirm", "cancel", "delivered"])
WHEN = st.sampled_from([-1, 0, 1, 500, 40_000, 99_999, 100_000, 100_001, 150_000])
NOWS = st.sampled_from([NOW + 50_000, CLOSES, CLOSES + 200_000])


@st.composite
def scenarios(draw):
    lo = draw(st.integers(1, 12))
    hi = draw(st.integers(lo, 16))
    pool = make_pool(lo=lo, hi=hi, price=draw(st.integers(0, 500)))
    records = []
    for who, qty, dt in draw(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 8), WHEN), max_size=14)):
        records.append(pledge(ORG if who == 5 else PEOPLE[who], pool, qty, ts=NOW + dt))
    moves = []
    for who, action, dt in draw(st.lists(st.tuples(st.integers(0, 4), ACTIONS, WHEN), max_size=6)):
        moves.append(move(ORG if who else PEOPLE[0], pool, action, ts=NOW + dt))
    return pool, records, moves


def _snapshot(b: pl.PoolBook):
    return (dict(b.pools), dict(b.refused), dict(b.replaced), b.pending)


@settings(max_examples=150, deadline=None)
@given(scenarios(), NOWS, st.randoms(use_true_random=False), st.data())
def test_the_book_depends_only_on_the_set_of_records(scenario, now, rnd, data):
    pool, pledges, moves = scenario
    extra_p = data.draw(st.lists(st.sampled_from(pledges), max_size=4)) if pledges else []
    extra_m = data.draw(st.lists(st.sampled_from(moves), max_size=3)) if moves else []
    p2, m2 = [*pledges, *extra_p], [*moves, *extra_m]
    rnd.shuffle(p2)
    rnd.shuffle(m2)
    assert _snapshot(book([pool], pledges, moves, now)) == _snapshot(book([pool, pool], p2, m2, now))


@settings(max_examples=150, deadline=None)
@given(scenarios(), NOWS)
def test_shares_follow_the_rules(scenario, now):
    pool, pledges, moves = scenario
    got = book([pool], pledges, moves, now).pool(pool.id)
    body = pool.body
    # Never more than max in total, and each share costs its quantity at the unit price.
    assert got.served == sum(s.quantity for s in got.shares) <= body.max
    assert all(0 <= s.quantity <= s.pledged and s.cost == s.quantity * body.unit_price for s in got.shares)
    # Only the newest pledge before close counts, per member; a later one never does.
    newest: dict[bytes, r.Record] = {}
    for p in pledges:
        if NOW <= p.ts < CLOSES and (p.author not in newest or (p.ts, p.seq, p.id) > _key(newest[p.author])):
            newest[p.author] = p
    expected = {a: p.body.quantity for a, p in newest.items() if p.body.quantity}
    assert {s.member: s.pledged for s in got.shares} == expected
    assert all(s.pledge == newest[s.member].id for s in got.shares)
    # Served in order; only one member is served partly, and nobody after them.
    quantities = [s.quantity for s in got.shares]
    short = [i for i, s in enumerate(got.shares) if s.partly]
    if short:
        assert got.served == body.max and all(q == 0 for q in quantities[short[0] + 1 :])
    else:
        assert got.served == got.pledged


@settings(max_examples=150, deadline=None)
@given(scenarios(), NOWS)
def test_the_state_follows_the_rules(scenario, now):
    pool, pledges, moves = scenario
    b = book([pool], pledges, moves, now)
    got = b.pool(pool.id)
    by_org = [m for m in moves if m.author == ORG.public and m.ts >= NOW]  # none before the pool
    reached = got.pledged >= pool.body.min
    confirms = [m for m in by_org if m.body.action == "confirm" and m.ts >= CLOSES and reached]
    cancels = [m for m in by_org if m.body.action == "cancel"]
    first = min([*confirms, *cancels], key=_key, default=None)
    if first is None or first.body.action == "cancel":
        assert got.confirmed_ts is None and got.state != pl.DELIVERED
        if first is not None:
            assert got.state == pl.CANCELLED
        elif now >= CLOSES:
            assert got.state == (pl.CLOSED if reached else pl.FAILED)
        else:
            assert got.state == (pl.REACHED if reached else pl.OPEN)
    else:
        delivered = any(m.body.action == "delivered" and m.ts >= first.ts for m in by_org)
        assert got.state == (pl.DELIVERED if delivered else pl.CONFIRMED)
    assert all(m.author == ORG.public for m in moves if m.id in got.moves)
    for m in moves:
        assert (m.id in got.moves) != (m.id in b.refused)


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.sampled_from([NOW + 50_000, CLOSES, CLOSES + 1_000]), st.integers(0, 5))
def test_a_record_the_checks_allow_is_counted_by_the_fold(scenario, when, qty):
    pool, pledges, moves = scenario
    before = book([pool], pledges, moves, when).pool(pool.id)
    for person in (*PEOPLE[:2], ORG):
        body = r.PledgeBody(pool=pool.id, quantity=qty)
        try:
            pl.check_pledge(before, body, person.public, now_ms=when)
        except (NotAllowed, ValidationError):
            pass
        else:
            new = person.sign(body, ts=when)
            after = book([pool], [*pledges, new], moves, when)
            assert new.id not in after.refused and new.id not in after.replaced
        for action in ("confirm", "cancel", "delivered"):
            mbody = r.PoolMoveBody(pool=pool.id, action=action)
            try:
                pl.check_move(before, mbody, person.public, now_ms=when)
            except (NotAllowed, ValidationError):
                continue
            new = person.sign(mbody, ts=when)
            after = book([pool], pledges, [*moves, new], when)
            assert new.id in after.pool(pool.id).moves, (action, after.refused.get(new.id))


def _key(record: r.Record):
    return (record.ts, record.seq, record.id)
