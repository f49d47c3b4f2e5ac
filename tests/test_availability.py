"""Whether an offer can be had (available, reserved, given, withdrawn) does not depend on arrival order.

The store's order-independence property (tests/test_store.py,
``test_items_do_not_depend_on_arrival_order``) extended to availability:
a pool of signed records (offers, proposals, accepts, completes, a cancel,
a withdrawal, a competing accept, an accept after a withdrawal) goes into a
fresh store in any order and any subset, one record per batch, and every
offer's state must come out the same.

The state is derived as the API derives it: the trade book (both from
scratch, :func:`meshnode.views.trade_book`, and through the API's
incremental :class:`meshnode.views.ViewCache`, fed record by record and
asked between arrivals) read by ``ApiService._where_and_state`` itself (called
on a stub, so the rule tested is the API's, not a copy of it).
"""

from __future__ import annotations

from types import SimpleNamespace

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode import records as r
from meshnode import views
from meshnode.api.service import ApiService, Held
from meshnode.store import Store
from tests.conftest import NOW, Author

ALICE, BOB, CAROL = Author(11), Author(12), Author(13)
LATER = NOW + 60_000  # when the states are read
_API = SimpleNamespace(node=SimpleNamespace(swarms=lambda: []))  # what _where_and_state reads of self


def _offer(author: Author, title: str, kind: str) -> r.Record:
    return author.sign(r.OfferBody(title=title, kind=kind), ts=NOW)


def _propose(author: Author, to: Author, ts: int, give=(), take=()) -> r.Record:
    body = r.ProposalBody(to=to.public, give=tuple(o.id for o in give), take=tuple(o.id for o in take))
    return author.sign(body, ts=ts)


def _reply(
    author: Author, proposal: r.Record, action: str, ts: int, after: r.Record | None = None
) -> r.Record:
    return author.sign(r.ReplyBody(proposal=proposal.id, action=action, prev=(after or proposal).id), ts=ts)


def _pool() -> tuple[list[r.Record], dict[str, r.Record]]:
    ladder = _offer(ALICE, "Ladder", "swap")
    drill = _offer(ALICE, "Cordless drill", "lend")
    bike = _offer(ALICE, "Kid's bike", "give")
    lamp = _offer(ALICE, "Desk lamp", "give")
    saw = _offer(BOB, "Saw", "give")
    kettle = _offer(CAROL, "Kettle", "give")
    # Bob swaps his saw for Alice's ladder: accepted, completed by both (the ladder and the saw are given).
    t1 = _propose(BOB, ALICE, NOW + 1, give=[saw], take=[ladder])
    t1_accept = _reply(ALICE, t1, "accept", NOW + 2)
    # Carol wants the ladder too: Alice's later accept is refused (the ladder is reserved, then gone).
    t2 = _propose(CAROL, ALICE, NOW + 1, take=[ladder])
    # Bob borrows the drill and gives it back: completed, so the drill is available again.
    t3 = _propose(BOB, ALICE, NOW + 5, take=[drill])
    t3_accept = _reply(ALICE, t3, "accept", NOW + 6)
    # Carol gets the bike: accepted, not completed (reserved).
    t4 = _propose(CAROL, ALICE, NOW + 5, take=[bike])
    # Bob asks for the lamp; Alice withdraws it, then accepts (refused: withdrawn first).
    t5 = _propose(BOB, ALICE, NOW + 5, take=[lamp])
    # Bob asks for Carol's kettle; she accepts, he cancels (available again).
    t6 = _propose(BOB, CAROL, NOW + 5, take=[kettle])
    t6_accept = _reply(CAROL, t6, "accept", NOW + 6)
    pool = [
        *(ladder, drill, bike, lamp, saw, kettle),
        *(t1, t1_accept, _reply(BOB, t1, "complete", NOW + 3, t1_accept)),
        _reply(ALICE, t1, "complete", NOW + 3, t1_accept),
        *(t2, _reply(ALICE, t2, "accept", NOW + 4)),
        *(t3, t3_accept, _reply(BOB, t3, "complete", NOW + 7, t3_accept)),
        _reply(ALICE, t3, "complete", NOW + 7, t3_accept),
        *(t4, _reply(ALICE, t4, "accept", NOW + 6)),
        *(t5, ALICE.sign(r.WithdrawBody(target=lamp.id), ts=NOW + 6), _reply(ALICE, t5, "accept", NOW + 7)),
        *(t6, t6_accept, _reply(BOB, t6, "cancel", NOW + 7, t6_accept)),
    ]
    offers = {"ladder": ladder, "drill": drill, "bike": bike, "lamp": lamp, "saw": saw, "kettle": kettle}
    return pool, offers


POOL, OFFERS = _pool()


def _states(store: Store, book) -> dict[str, str]:
    items = store.items_by_id(o.id for o in OFFERS.values())
    held = Held(book, book.reserved, book.consumed)  # trades only: no rings here
    return {
        name: ApiService._where_and_state(_API, items[o.id], held)["state"]  # type: ignore[arg-type]
        for name, o in OFFERS.items()
        if o.id in items
    }


def _arrive(records: list[r.Record], asks: list[bool]) -> tuple[dict[str, str], dict[str, str]]:
    """Store ``records`` one by one; the states from scratch and through the API's cache."""

    async def run() -> tuple[dict[str, str], dict[str, str]]:
        with Store.open(":memory:") as store:
            cache = views.ViewCache(store, ALICE.public, lambda: LATER)
            for record, ask in zip(records, asks, strict=True):
                result = store.add_records([record], now_ms=NOW)
                assert not result.refused, result.refused
                cache.on_stored(record)
                if ask:
                    await cache.book()
            return _states(store, views.trade_book(store, LATER)), _states(store, await cache.book())

    return trio.run(run)


def test_the_whole_pool_in_its_order_and_reversed():
    expected = {
        "ladder": "given",
        "saw": "given",
        "drill": "available",
        "bike": "reserved",
        "lamp": "withdrawn",
        "kettle": "available",
    }
    for order in (POOL, POOL[::-1]):
        fresh, cached = _arrive(order, [True] * len(order))
        assert fresh == cached == expected


def test_offers_arriving_after_their_trades():
    trades_first = POOL[6:] + POOL[:6]
    fresh, cached = _arrive(trades_first, [i % 3 == 0 for i in range(len(POOL))])
    assert fresh == cached == _arrive(POOL, [False] * len(POOL))[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_availability_does_not_depend_on_arrival_order(data):
    chosen = data.draw(st.sets(st.sampled_from(range(len(POOL)))), label="subset")
    records = [POOL[i] for i in sorted(chosen)]
    first = data.draw(st.permutations(records), label="first order")
    second = data.draw(st.permutations(records), label="second order")
    asks = data.draw(st.lists(st.booleans(), min_size=len(records), max_size=len(records)), label="asks")
    fresh1, cached1 = _arrive(first, asks)
    fresh2, cached2 = _arrive(second, [False] * len(records))
    assert fresh1 == cached1 == fresh2 == cached2
