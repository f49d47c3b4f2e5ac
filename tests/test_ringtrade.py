"""Ring trades: the state of a ring from its ring and ringmove records (meshnode.ringtrade)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode import records as r
from meshnode import ringtrade as rt
from meshnode.barter import OfferInfo
from meshnode.errors import NotAllowed, NotFound, TransitionError, ValidationError
from tests.conftest import NOW, Author

PEOPLE = [Author(seed) for seed in range(1, 7)]
OUTSIDER = Author(40)
OFFER_IDS = [bytes([200 + i]) * 32 for i in range(6)]


def make_ring(n: int = 3, *, proposer: int = 0, expires: int | None = None, ts: int = NOW) -> r.Record:
    body = r.RingBody(
        parties=tuple(p.public for p in PEOPLE[:n]), offers=tuple(OFFER_IDS[:n]), expires=expires
    )
    return PEOPLE[proposer].sign(body, ts=ts)


def move(who: Author, ring: r.Record, action: str, ts: int = NOW + 1_000, **kw) -> r.Record:
    return who.sign(r.RingMoveBody(ring=ring.id, action=action, **kw), ts=ts)


def book(ring_records, moves, offers=None, now=NOW + 10_000, **kw) -> rt.RingBook:
    return rt.derive_rings(ring_records, moves, offers or {}, now, **kw)


def all_do(action: str, ring: r.Record, n: int, ts: int = NOW + 1_000) -> list[r.Record]:
    return [move(p, ring, action, ts=ts + i) for i, p in enumerate(PEOPLE[:n])]


def test_a_ring_is_proposed_then_accepted_by_all_then_completed_by_all():
    ring = make_ring()
    got = book([ring], []).ring(ring.id)
    assert got.state == rt.PROPOSED and got.waiting_for() == tuple(p.public for p in PEOPLE[:3])
    assert got.gives(PEOPLE[1].public) == OFFER_IDS[1] and got.gets(PEOPLE[1].public) == OFFER_IDS[0]
    assert got.next_party(PEOPLE[2].public) == PEOPLE[0].public
    accepts = all_do("accept", ring, 3)
    two = book([ring], accepts[:2]).ring(ring.id)
    assert two.state == rt.PROPOSED and two.waiting_for() == (PEOPLE[2].public,)
    accepted = book([ring], accepts)
    assert accepted.ring(ring.id).state == rt.ACCEPTED
    assert accepted.reserved == {oid: ring.id for oid in OFFER_IDS[:3]}
    completes = all_do("complete", ring, 3, ts=NOW + 5_000)
    partly = book([ring], accepts + completes[:2]).ring(ring.id)
    assert partly.state == rt.ACCEPTED and partly.waiting_for() == (PEOPLE[2].public,)
    done = book([ring], accepts + completes)
    assert done.ring(ring.id).state == rt.COMPLETED and not done.reserved
    assert done.ring(ring.id).moves == tuple(m.id for m in accepts + completes)


def test_a_complete_counts_only_once_every_party_has_accepted():
    ring = make_ring()
    accepts = all_do("accept", ring, 3)
    early = move(PEOPLE[0], ring, "complete", ts=NOW + 500)
    b = book([ring], [*accepts[:2], early])
    assert (
        b.ring(ring.id).completed_by == frozenset() and "not every party has accepted" in b.refused[early.id]
    )
    b = book([ring], [*accepts, early])
    assert b.ring(ring.id).completed_by == {PEOPLE[0].public} and early.id not in b.refused


def test_the_proposers_decline_is_a_cancel_anyone_elses_a_decline():
    ring = make_ring(proposer=1)
    assert book([ring], [move(PEOPLE[1], ring, "decline")]).ring(ring.id).state == rt.CANCELLED
    assert book([ring], [move(PEOPLE[0], ring, "decline")]).ring(ring.id).state == rt.DECLINED


def test_equivocation_a_no_wins_unless_the_equivocator_completed_too():
    ring = make_ring()
    accepts, completes = all_do("accept", ring, 3), all_do("complete", ring, 3, ts=NOW + 5_000)
    no = move(PEOPLE[2], ring, "decline", ts=NOW + 9_000)
    b = book([ring], [*accepts, *completes[:2], no])
    assert b.ring(ring.id).state == rt.DECLINED and b.ring(ring.id).declined_by == {PEOPLE[2].public}
    assert not b.reserved  # a declined ring holds nothing
    b = book([ring], [*accepts, *completes, no])
    assert b.ring(ring.id).state == rt.COMPLETED and "completed" in b.refused[no.id]


def test_expiry_an_unaccepted_ring_expires_and_late_moves_do_not_count():
    deadline = NOW + 3_000
    ring = make_ring(expires=deadline)
    on_time = all_do("accept", ring, 2)
    late = move(PEOPLE[2], ring, "accept", ts=deadline)
    b = book([ring], [*on_time, late], now=NOW + 2_000)
    assert b.ring(ring.id).state == rt.PROPOSED and "expired" in b.refused[late.id]
    b = book([ring], [*on_time, late], now=deadline)
    assert b.ring(ring.id).state == rt.EXPIRED
    late_no = move(PEOPLE[2], ring, "decline", ts=deadline + 1)
    assert book([ring], [late_no], now=deadline + 5).ring(ring.id).state == rt.EXPIRED
    # Checked after the deadline (the book was derived before it): neither accept nor decline is signed.
    before = book([ring], on_time, now=NOW + 2_000).ring(ring.id)
    for action in ("accept", "decline"):
        with pytest.raises(TransitionError, match="expired"):
            rt.check_move(
                before, r.RingMoveBody(ring=ring.id, action=action), PEOPLE[2].public, now_ms=deadline
            )
    # Accepted in time: it never expires.
    all_in = [*on_time, move(PEOPLE[2], ring, "accept", ts=deadline - 1)]
    assert book([ring], all_in, now=deadline + 10**9).ring(ring.id).state == rt.ACCEPTED


def test_moves_by_outsiders_repeated_or_backdated_moves_are_refused_and_unknown_rings_wait():
    ring = make_ring()
    outsider = move(OUTSIDER, ring, "accept")
    first, again = move(PEOPLE[1], ring, "accept"), move(PEOPLE[1], ring, "accept", ts=NOW + 2_000)
    backdated = move(PEOPLE[2], ring, "accept", ts=NOW - 1)
    b = book([ring], [outsider, first, again, backdated])
    assert "only its parties" in b.refused[outsider.id]
    assert "already made this accept" in b.refused[again.id] and first.id not in b.refused
    assert "before ring" in b.refused[backdated.id]
    assert b.ring(ring.id).accepted_by == {PEOPLE[1].public}
    unknown = make_ring(4)
    waiting = move(PEOPLE[0], unknown, "accept")
    b = book([ring], [waiting])
    assert b.pending == {waiting.id}
    with pytest.raises(NotFound):
        b.ring(unknown.id)
    assert book([ring, unknown], [waiting]).ring(unknown.id).accepted_by == {PEOPLE[0].public}


def test_a_ring_naming_someone_elses_offer_is_refused_with_its_moves():
    ring = make_ring()
    offers = {OFFER_IDS[1]: OfferInfo(OFFER_IDS[1], PEOPLE[2].public, "give")}
    accept = move(PEOPLE[0], ring, "accept")
    b = book([ring], [accept], offers)
    assert ring.id not in b.rings and "belongs to" in b.refused[ring.id]
    assert "was refused" in b.refused[accept.id]


def test_a_completed_ring_consumes_gives_and_swaps_and_releases_lends_and_services():
    ring = make_ring(5)
    kinds = ["give", "swap", "lend", "service"]  # the fifth offer is unknown: consumed
    offers = {oid: OfferInfo(oid, PEOPLE[i].public, kinds[i]) for i, oid in enumerate(OFFER_IDS[:4])}
    b = book([ring], all_do("accept", ring, 5) + all_do("complete", ring, 5, ts=NOW + 5_000), offers)
    assert b.consumed == {OFFER_IDS[0], OFFER_IDS[1], OFFER_IDS[4]}
    # Another ring naming a consumed offer, not yet accepted, is unavailable.
    other = PEOPLE[3].sign(
        r.RingBody(
            parties=(PEOPLE[3].public, PEOPLE[0].public, PEOPLE[5].public),
            offers=(OFFER_IDS[3], OFFER_IDS[0], bytes(32)),
        )
    )
    b = book([ring, other], all_do("accept", ring, 5) + all_do("complete", ring, 5, ts=NOW + 5_000), offers)
    assert b.ring(other.id).state == rt.UNAVAILABLE and "given away" in b.ring(other.id).closed_because


def test_a_withdrawn_offer_makes_an_open_ring_unavailable_and_its_later_accepts_void():
    ring = make_ring()
    offers = {OFFER_IDS[2]: OfferInfo(OFFER_IDS[2], PEOPLE[2].public, "give", withdrawn_at=NOW + 500)}
    before, after = move(PEOPLE[0], ring, "accept", ts=NOW + 100), move(PEOPLE[1], ring, "accept")
    b = book([ring], [before, after], offers)
    assert b.ring(ring.id).state == rt.UNAVAILABLE and b.ring(ring.id).accepted_by == {PEOPLE[0].public}
    assert "withdrawn" in b.refused[after.id]


def test_check_move_refuses_what_the_fold_would_not_count_and_double_bookings():
    ring = make_ring()
    b = book([ring], [])
    trade = b.ring(ring.id)

    def check(who, action, **kw):
        body = r.RingMoveBody(ring=ring.id, action=action)
        rt.check_move(kw.pop("trade", trade), body, who.public, now_ms=kw.pop("now", NOW + 1), **kw)

    check(PEOPLE[0], "accept")
    with pytest.raises(NotAllowed, match="only its parties"):
        check(OUTSIDER, "accept")
    with pytest.raises(TransitionError, match="not every party has accepted"):
        check(PEOPLE[0], "complete")
    with pytest.raises(TransitionError, match="held by"):
        check(PEOPLE[0], "accept", reserved={OFFER_IDS[2]: bytes(32)})
    with pytest.raises(TransitionError, match="given away"):
        check(PEOPLE[0], "accept", consumed={OFFER_IDS[1]})
    with pytest.raises(TransitionError, match="check the clock"):
        check(PEOPLE[0], "accept", now=NOW - 1)
    with pytest.raises(ValidationError):
        rt.check_move(trade, r.RingMoveBody(ring=bytes(32), action="accept"), PEOPLE[0].public, now_ms=NOW)
    accepted = book([ring], all_do("accept", ring, 3)).ring(ring.id)
    with pytest.raises(TransitionError, match="twice"):
        check(PEOPLE[0], "accept", trade=accepted)
    check(PEOPLE[0], "complete", trade=accepted, now=NOW + 5_000)
    declined = book([ring], [move(PEOPLE[1], ring, "decline")]).ring(ring.id)
    with pytest.raises(TransitionError, match="final state"):
        check(PEOPLE[0], "accept", trade=declined)


def test_wrong_record_types_are_refused():
    ring = make_ring()
    with pytest.raises(ValidationError):
        rt.derive_rings([move(PEOPLE[0], ring, "accept")], [], {}, NOW)
    with pytest.raises(ValidationError):
        rt.derive_rings([], [ring], {}, NOW)


# --- properties -------------------------------------------------------------------------

ACTIONS = st.sampled_from(["accept", "decline", "complete"])


@st.composite
def scenarios(draw):
    n = draw(st.integers(3, 5))
    proposer = draw(st.integers(0, n - 1))
    ring = make_ring(n, proposer=proposer)
    steps = draw(st.lists(st.tuples(st.integers(0, n), ACTIONS, st.integers(0, 5)), max_size=14))
    moves = []
    for who, action, dt in steps:
        author = OUTSIDER if who == n else PEOPLE[who]
        moves.append(move(author, ring, action, ts=NOW + 1_000 + dt))
    return n, ring, moves


def _snapshot(b: rt.RingBook):
    return (dict(b.rings), dict(b.reserved), b.consumed, dict(b.refused), b.pending)


@given(scenarios(), st.randoms(use_true_random=False), st.data())
def test_the_book_depends_only_on_the_set_of_records(scenario, rnd, data):
    _n, ring, moves = scenario
    shuffled = list(moves) + data.draw(st.lists(st.sampled_from(moves), max_size=4) if moves else st.just([]))
    rnd.shuffle(shuffled)
    assert _snapshot(book([ring], moves)) == _snapshot(book([ring, ring], shuffled))


@given(scenarios())
def test_the_state_follows_the_rules(scenario):
    n, ring, moves = scenario
    parties = {p.public for p in PEOPLE[:n]}
    did = {(m.author, m.body.action) for m in moves}
    accepted = all((p, "accept") in did for p in parties)
    completed = accepted and all((p, "complete") in did for p in parties)
    declined = {p for p in parties if (p, "decline") in did}
    got = book([ring], moves).ring(ring.id)
    if completed:
        assert got.state == rt.COMPLETED
    elif declined:
        assert got.state == (rt.CANCELLED if ring.author in declined else rt.DECLINED)
        assert got.declined_by == declined
    else:
        assert got.state == (rt.ACCEPTED if accepted else rt.PROPOSED)
    assert got.completed_by == ({p for p in parties if (p, "complete") in did} if accepted else set())
    assert OUTSIDER.public not in got.accepted_by | got.completed_by | got.declined_by


@given(st.integers(3, 5), st.data())
def test_any_single_party_can_decline_any_unfinished_ring_of_any_size(n, data):
    ring = make_ring(n)
    accepts, completes = all_do("accept", ring, n), all_do("complete", ring, n, ts=NOW + 5_000)
    sofar = data.draw(st.sampled_from([[], accepts[:-1], accepts, accepts + completes[:-1]]))
    who = data.draw(st.integers(0, n - 1))
    got = book([ring], [*sofar, move(PEOPLE[who], ring, "decline", ts=NOW + 9_000)]).ring(ring.id)
    assert got.state == (rt.CANCELLED if who == 0 else rt.DECLINED)
    assert book([ring], accepts + completes).ring(ring.id).state == rt.COMPLETED


@given(scenarios())
def test_a_move_check_move_allows_is_counted_by_the_fold(scenario):
    n, ring, moves = scenario
    before = book([ring], moves, now=NOW + 100_000)
    trade = before.ring(ring.id)
    for i, person in enumerate([*PEOPLE[:n], OUTSIDER]):
        for action in ("accept", "decline", "complete"):
            body = r.RingMoveBody(ring=ring.id, action=action)
            try:
                rt.check_move(trade, body, person.public, now_ms=NOW + 50_000)
            except (NotAllowed, ValidationError):
                continue
            new = person.sign(body, ts=NOW + 50_000)
            after = book([ring], [*moves, new], now=NOW + 100_000)
            assert new.id in after.ring(ring.id).moves, (action, i, after.refused.get(new.id))
