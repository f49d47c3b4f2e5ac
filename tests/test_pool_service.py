"""Group buying's service without sockets: parsing, refusals that sign nothing, pledges, the pool notices.

A fake node (a real in-memory store, a key, a clock) stands in for the
network, as in tests/test_ledger_service.py. :func:`meshnode.inbox.
pool_reminders` and the notices' sentences are tested as pure functions.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
import trio

from meshnode import pools as pl
from meshnode import records as r
from meshnode.api.notices import Known, notice_json
from meshnode.api.poolservice import (
    DAY_MS,
    REMIND_EVERY_S,
    PoolService,
    next_look,
    parse_closes,
    you_can,
)
from meshnode.api.service import ApiService
from meshnode.errors import BadValue, NotAllowed, NotFound, TransitionError
from meshnode.home import Home
from meshnode.inbox import KINDS, notices_for, pool_reminders
from meshnode.store import Store
from meshnode.store.inbox import StoredNotice
from tests.conftest import NOW, SWARM, Author
from tests.webutil import FakeNode as SharedFakeNode

ALICE, BOB, CAROL = Author(31), Author(32), Author(33)
ELM = SimpleNamespace(id=SWARM, name="Elm Street")


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeNode(SharedFakeNode):
    """The shared fake node (tests/webutil.py), its clock at NOW."""

    def __init__(self, store: Store, me: Author) -> None:
        super().__init__(store, me)
        self.now = NOW


@pytest.fixture
def node():
    with Store.open(":memory:") as store:
        yield FakeNode(store, ALICE)


@pytest.fixture
def api(node, tmp_path):
    service = ApiService(node, Home(tmp_path / "home"), request_stop=lambda: None)
    yield service
    service.close()


def count(node: FakeNode, type_: str) -> int:
    return len(node.store.records_of_type(type_))


async def add(service: PoolService, **kw) -> dict:
    args = {
        "title": "Organic apples",
        "supplier": "Ferme du Coin",
        "unit_price": "18",
        "min_": 10,
        "max_": 30,
        "closes": iso(NOW + 3_600_000),
        "unit": "crate",
    }
    args.update(kw)
    with trio.fail_after(10):
        return await service.add(**args)


# --- parsing -------------------------------------------------------------------------


def test_closes_is_a_date_s_end_or_a_time_with_a_timezone_in_the_coming_year():
    day = dt.datetime.fromtimestamp(NOW / 1000, tz=dt.UTC).date() + dt.timedelta(days=3)
    end = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000) + DAY_MS - 1
    assert parse_closes(day.isoformat(), NOW) == end
    assert parse_closes(iso(NOW + 20_000), NOW) == NOW + 20_000
    assert parse_closes(iso(NOW + 20_000).replace("Z", "+00:00"), NOW) == NOW + 20_000
    for text, words in (
        (iso(NOW + 20_000)[:-1], "expected a timezone"),
        (iso(NOW - 1_000), "in the past"),
        (iso(NOW + 366 * DAY_MS), "more than 365 days ahead"),
        ("next friday", "expected a date like 2026-12-15"),
        ("2026-02-30", "expected a date like"),
    ):
        with pytest.raises(BadValue, match=words):
            parse_closes(text, NOW)
    with pytest.raises(BadValue, match="expected text"):
        parse_closes(20, NOW)


# --- the service -----------------------------------------------------------------------


async def test_add_publishes_a_pool_in_hundredths_and_lists_it(api, node):
    service = PoolService(api)
    shown = await add(service, unit_price="2.5")
    assert shown["unit_price"] == 250 and shown["unit_price_text"] == "2.50"
    assert shown["currency"] == "hours" and shown["state"] == "open" and shown["organiser_name"] == "you"
    assert shown["closes"] == iso(NOW + 3_600_000) and shown["swarm"] == "Elm Street"
    assert shown["you_can"] == ["pledge", "cancel"] and shown["shares"] == []
    with trio.fail_after(10):
        listed = await service.list_pools()
        again = await service.show(shown["id"][:10])
    assert [p["id"] for p in listed] == [shown["id"]] and "shares" not in listed[0]
    assert again["id"] == shown["id"]


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"max_": 5}, "max: expected at least min"),
        ({"min_": 0}, "min: expected a whole number"),
        ({"min_": True}, "min: expected a whole number"),
        ({"unit_price": "1.234"}, "unit price"),
        ({"unit_price": "-3"}, "unit price"),
        ({"title": "   "}, "title: expected what is bought"),
        ({"supplier": ""}, "from: expected who sells it"),
        ({"closes": "2020-01-01"}, "in the past"),
        ({"swarm": "Oak Lane"}, "no swarm named"),
    ],
)
async def test_a_refused_pool_is_never_signed(api, node, kw, words):
    with pytest.raises((BadValue, NotFound), match=words):
        await add(PoolService(api), **kw)
    assert count(node, "pool") == 0


async def test_pledges_are_checked_before_they_are_signed(api, node):
    service = PoolService(api)
    pool = await add(service, closes=iso(NOW + 60_000))
    node.now += 1_000
    with trio.fail_after(10):
        shown = await service.pledge(pool["id"], 4)
    assert (shown["my_pledge"], shown["my_quantity"], shown["my_cost"]) == (4, 4, 4 * 1800)
    assert shown["shares"][0]["member_name"] == "you"
    with pytest.raises(BadValue, match="already pledged 4"):
        await service.pledge(pool["id"], 4)
    for bad in (-1, "3", 2.5, None):
        with pytest.raises(BadValue, match="quantity"):
            await service.pledge(pool["id"], bad)
    with pytest.raises(NotFound):
        await service.pledge("abcdef", 1)
    with pytest.raises(TransitionError, match="closes at"):
        await service.move(pool["id"], "confirm")
    with pytest.raises(BadValue, match="action"):
        await service.move(pool["id"], "ship")
    assert count(node, "pledge") == 1 and count(node, "poolmove") == 0
    node.now += 1_000
    with trio.fail_after(10):
        withdrawn = await service.pledge(pool["id"][:12], 0)
    assert withdrawn["my_pledge"] == 0 and withdrawn["shares"] == []
    node.now = NOW + 60_000
    with pytest.raises(TransitionError, match="it closed at"):
        await service.pledge(pool["id"], 2)
    assert count(node, "pledge") == 2


async def test_only_the_organiser_moves_a_pool_and_refused_records_are_shown(api, node):
    theirs = BOB.sign(
        r.PoolBody(title="Honey", supplier="Rucher", unit_price=900, min=2, max=5, closes=NOW + 10_000),
        ts=NOW - 1_000,
    )
    late = CAROL.sign(r.PledgeBody(pool=theirs.id, quantity=3), ts=NOW + 10_000)
    node.stored(theirs, BOB.sign(r.PledgeBody(pool=theirs.id, quantity=2), ts=NOW - 500), late)
    service = PoolService(api)
    with pytest.raises(NotAllowed, match="only its organiser may"):
        await service.move(theirs.id.hex(), "cancel")
    node.now = NOW + 10_000
    with trio.fail_after(10):
        shown = await service.show(theirs.id.hex())
    assert shown["state"] == "closed" and shown["organiser_name"] != "you" and shown["you_can"] == []
    assert [x["record"] for x in shown["refused"]] == [late.id.hex()]
    assert "came after pool" in shown["refused"][0]["reason"]
    assert await service.list_pools() != []
    assert count(node, "poolmove") == 0


async def test_remind_keeps_reached_then_closed_once_and_says_when_to_look_again(api, node):
    service = PoolService(api)
    pool = await add(service, min_=3, closes=iso(NOW + 30_000))
    pid = bytes.fromhex(pool["id"])
    node.stored(BOB.sign(r.PledgeBody(pool=pid, quantity=3), ts=NOW + 1_000))
    node.now = NOW + 2_000
    with trio.fail_after(10):
        wait = await service.remind()
        assert wait == pytest.approx(28.05)
        await service.remind()
    kept = [(n.notice.kind, n.notice.record) for n in node.store.notices()]
    assert kept == [("poolreached", pid)]
    node.now = NOW + 30_000
    with trio.fail_after(10):
        assert await service.remind() == REMIND_EVERY_S
        shown = await api.inbox.inbox(all_=True)
    assert [n["kind"] for n in shown["notices"]] == ["poolreached", "poolclosed"]
    assert "reached its minimum" in shown["notices"][0]["text"]
    assert "your pool" in shown["notices"][1]["text"]


# --- pure parts ------------------------------------------------------------------------


def derive(records, now):
    pools = [x for x in records if x.type == "pool"]
    pledges = [x for x in records if x.type == "pledge"]
    moves = [x for x in records if x.type == "poolmove"]
    return pl.derive_pools(pools, pledges, moves, now)


def test_pool_reminders_tell_the_organiser_and_the_pledgers_once_each():
    closes = NOW + 50_000
    pool = ALICE.sign(
        r.PoolBody(title="Apples", supplier="Ferme", unit_price=1800, min=5, max=9, closes=closes)
    )
    bob = BOB.sign(r.PledgeBody(pool=pool.id, quantity=3), ts=NOW + 10)
    carol = CAROL.sign(r.PledgeBody(pool=pool.id, quantity=2), ts=NOW + 20)
    carol_out = CAROL.sign(r.PledgeBody(pool=pool.id, quantity=0), ts=NOW + 30)
    assert {"poolreached", "poolclosed"} <= set(KINDS)

    def told(records, who, now):
        return [
            (n.kind, n.record, n.peer, n.about)
            for n in pool_reminders(derive(records, now).pools.values(), me=who.public, now_ms=now)
        ]

    assert told([pool, bob], ALICE, NOW + 100) == []  # open: nothing yet
    reached = [("poolreached", pool.id, ALICE.public, pool.id)]
    assert told([pool, bob, carol], ALICE, NOW + 100) == reached
    assert told([pool, bob, carol], BOB, NOW + 100) == reached
    assert told([pool, bob, carol, carol_out], CAROL, NOW + 100) == []  # withdrew: not a pledger
    closed = [("poolclosed", pool.id, ALICE.public, pool.id)]
    assert told([pool, bob, carol], CAROL, closes) == closed
    assert told([pool, bob], BOB, closes) == closed  # failed: closed too
    cancel = ALICE.sign(r.PoolMoveBody(pool=pool.id, action="cancel"), ts=NOW + 40)
    assert told([pool, bob, carol, cancel], BOB, closes) == []
    assert told([pool, bob, carol], Author(40), closes) == []


def test_pool_notice_sentences_with_and_without_the_derived_pool():
    closes = NOW + 50_000
    pool = ALICE.sign(
        r.PoolBody(title="Apples", supplier="Ferme", unit_price=1800, min=5, max=6, closes=closes)
    )
    bob = BOB.sign(r.PledgeBody(pool=pool.id, quantity=4), ts=NOW + 10)
    carol = CAROL.sign(r.PledgeBody(pool=pool.id, quantity=3), ts=NOW + 20)
    names = {ALICE.public: "Alice", BOB.public: "Bob", CAROL.public: "you"}

    def text(kind, records, now, with_pool=True):
        book = derive(records, now)
        known = Known(
            CAROL.public,
            {pool.id: pool},
            {},
            {},
            names.__getitem__,
            lambda k: 0.0,
            frozenset({SWARM}),
            {SWARM: "hours"},
            book.pools if with_pool else {},
        )
        from meshnode.inbox import Notice

        stored = StoredNotice(seq=1, at=now, notice=Notice(kind, pool.id, ALICE.public, pool.id))
        out = notice_json(stored, known)
        assert out is not None
        return out["text"]

    reached = text("poolreached", [pool, bob, carol], NOW + 100)
    assert reached.startswith("Apples (Alice's pool, 7 of min 5 pledged) reached its minimum (pool ")
    closed = text("poolclosed", [pool, bob, carol], closes)
    assert "closed: you get 2 (of 3 pledged) for 36.00 hours" in closed
    failed = text("poolclosed", [pool, carol], closes)
    assert "closed without reaching its minimum: nothing is ordered" in failed
    assert "min 5) reached its minimum" in text("poolreached", [pool], NOW, with_pool=False)
    assert "meshnode pool show" in text("poolclosed", [pool], closes, with_pool=False)


def test_next_look_and_you_can():
    pool = ALICE.sign(
        r.PoolBody(title="Apples", supplier="Ferme", unit_price=1, min=1, max=2, closes=NOW + 5_000)
    )
    book = derive([pool], NOW)
    assert next_look(book.pools.values(), NOW) == pytest.approx(5.05)
    assert next_look(book.pools.values(), NOW + 5_000) == REMIND_EVERY_S
    assert next_look([], NOW) == REMIND_EVERY_S
    open_pool = book.pool(pool.id)
    assert you_can(open_pool, ALICE.public, NOW) == ["pledge", "cancel"]
    assert you_can(open_pool, BOB.public, NOW) == ["pledge"]
    failed = derive([pool], NOW + 5_000).pool(pool.id)
    assert you_can(failed, ALICE.public, NOW + 5_000) == ["cancel"]


def test_an_organiser_s_move_is_a_notice_for_the_pledgers_only():
    pool = BOB.sign(
        r.PoolBody(title="Honey", supplier="Rucher", unit_price=900, min=1, max=5, closes=NOW + 1_000)
    )
    confirm = BOB.sign(r.PoolMoveBody(pool=pool.id, action="confirm"), ts=NOW + 2_000)
    parties = (BOB.public, ALICE.public, CAROL.public)
    [told] = notices_for(confirm, me=ALICE.public, trade_parties=parties)
    assert (told.kind, told.record, told.peer, told.about) == ("poolmove", confirm.id, BOB.public, pool.id)
    assert notices_for(confirm, me=Author(41).public, trade_parties=parties) == []
    assert notices_for(confirm, me=ALICE.public, trade_parties=None) == []
    assert notices_for(confirm, me=BOB.public, trade_parties=parties) == []  # my own move
    not_theirs = CAROL.sign(r.PoolMoveBody(pool=pool.id, action="cancel"), ts=NOW + 2_000)
    assert notices_for(not_theirs, me=ALICE.public, trade_parties=parties) == []


async def test_the_feed_finds_the_pledgers_of_a_moved_pool(api, node):
    pool = BOB.sign(
        r.PoolBody(title="Honey", supplier="Rucher", unit_price=900, min=1, max=5, closes=NOW + 1_000)
    )
    mine = ALICE.sign(r.PledgeBody(pool=pool.id, quantity=2), ts=NOW + 10)
    confirm = BOB.sign(r.PoolMoveBody(pool=pool.id, action="confirm", note="Saturday"), ts=NOW + 2_000)
    node.now = NOW + 3_000
    node.stored(pool, mine, confirm)
    kept = api.feed._keep([confirm], lambda key: 0.0)
    assert [(k.notice.kind, k.notice.about) for k in kept] == [("poolmove", pool.id)]
    with trio.fail_after(10):
        shown = await api.inbox.inbox(all_=True)
    [notice] = shown["notices"]
    assert "confirmed the order of Honey (pool " in notice["text"] and notice["note"] == "Saturday"
    withdrawn = ALICE.sign(r.PledgeBody(pool=pool.id, quantity=0), ts=NOW + 20)
    node.stored(withdrawn)
    again = BOB.sign(r.PoolMoveBody(pool=pool.id, action="delivered"), ts=NOW + 2_500)
    node.stored(again)
    assert api.feed._keep([again], lambda key: 0.0) == []  # Alice withdrew: no longer a pledger


async def test_the_cli_prints_a_pool_in_words(api, node):
    from meshnode.cli.poolcmds import pool_list, pool_text

    service = PoolService(api)
    pool = await add(service, title="Apples", unit="crate", closes=iso(NOW + 60_000))
    node.now += 1_000
    with trio.fail_after(10):
        shown = await service.pledge(pool["id"], 3)
        listed = await service.list_pools()
    text = pool_text(shown)
    assert f"pool {pool['id'][:12]}: Apples from Ferme du Coin, 18.00 hours a crate (by you)" in text
    assert "state: open: pledges welcome" in text and "3 pledged (min 10, max 30)" in text
    assert "  you: pledged 3, gets 3, 54.00 hours" in text
    assert "you pledged 3: you get 3 for 54.00 hours" in text
    assert f"meshnode pledge {pool['id'][:12]} N, meshnode pool cancel {pool['id'][:12]}" in text
    lines = pool_list(listed).splitlines()
    assert lines[0].startswith(pool["id"][:12]) and "; you pledged 3" in lines[1]
    assert "no pools open" in pool_list([])
