"""The inbox feed without sockets: records stored -> notices kept and told to watchers."""

from __future__ import annotations

import nacl.signing
import trio

from meshnode import records as rec
from meshnode.api.feed import InboxFeed, OwnItems
from meshnode.store import Store

SWARM = b"s" * 32
ALICE, BOB = nacl.signing.SigningKey(b"\x01" * 32), nacl.signing.SigningKey(b"\x02" * 32)
ME = ALICE.verify_key.encode()
NOW = 1_700_000_000_000


class Scores:
    def __init__(self) -> None:
        self.levels: dict[bytes, float] = {}

    async def __call__(self):
        return lambda key: self.levels.get(key, 0.0)


def signed(body: object, key: nacl.signing.SigningKey, seq: int) -> rec.Record:
    return rec.new_record(body, swarm=SWARM, seq=seq, ts=NOW + seq, signing_key=key)


class Harness:
    """A store, a feed on it, and ``add`` that stores records and tells the feed (as ingest does)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.scores = Scores()
        self.feed = InboxFeed(store, store.open_reader(), ME, clock=lambda: NOW + 10_000, trust=self.scores)

    def add(self, *records: rec.Record) -> None:
        self.store.add_records(list(records), now_ms=NOW)
        for r in records:
            self.feed.on_stored(r)

    async def settle(self, count: int) -> None:
        with trio.fail_after(10):
            while len(self.store.notices(limit=1000)) < count:
                await trio.sleep(0.01)


async def test_a_want_meets_an_offer_in_either_order_and_watchers_hear_it():
    for want_first in (True, False):
        with Store.open(":memory:") as store:
            h = Harness(store)
            want = signed(rec.WantBody(title="Bread maker", kind="lend"), ALICE, 1)
            offer = signed(rec.OfferBody(title="Panasonic bread maker", kind="lend"), BOB, 1)
            async with trio.open_nursery() as nursery:
                await nursery.start(h.feed.run)
                async with h.feed.watch() as heard:
                    h.add(*((want, offer) if want_first else (offer, want)))
                    await h.settle(1)
                    with trio.fail_after(5):
                        told = await heard.receive()
                nursery.cancel_scope.cancel()
            [kept] = store.notices()
            assert (kept.notice.kind, kept.notice.record, kept.notice.about) == ("match", offer.id, want.id)
            assert told == kept


async def test_the_feed_tells_proposals_moves_vouches_and_trusted_offers():
    with Store.open(":memory:") as store:
        h = Harness(store)
        h.scores.levels[BOB.verify_key.encode()] = 0.9
        drill = signed(rec.OfferBody(title="Drill", kind="give"), ALICE, 1)
        proposal = signed(rec.ProposalBody(to=ME, take=(drill.id,), note="please"), BOB, 1)
        accept = signed(rec.ReplyBody(proposal=proposal.id, action="accept", prev=proposal.id), ALICE, 2)
        complete = signed(rec.ReplyBody(proposal=proposal.id, action="complete", prev=accept.id), BOB, 2)
        vouch = signed(rec.AttestBody(subject=ME, level=700), BOB, 3)
        tent = signed(rec.OfferBody(title="Tent", kind="lend"), BOB, 4)
        async with trio.open_nursery() as nursery:
            await nursery.start(h.feed.run)
            h.add(drill, proposal)
            await h.settle(1)
            h.add(accept, complete, vouch, tent)
            await h.settle(4)
            nursery.cancel_scope.cancel()
        kinds = [(s.notice.kind, s.notice.record) for s in store.notices()]
        assert kinds == [
            ("proposal", proposal.id),
            ("move", complete.id),
            ("vouch", vouch.id),
            ("offer", tent.id),
        ]


async def test_a_watcher_that_falls_behind_is_dropped_and_the_others_are_not(monkeypatch):
    from meshnode.api import feed as feed_module

    monkeypatch.setattr(feed_module, "WATCH_BUFFER", 2)
    with Store.open(":memory:") as store:
        h = Harness(store)
        h.scores.levels[BOB.verify_key.encode()] = 0.9
        async with trio.open_nursery() as nursery:
            await nursery.start(h.feed.run)
            async with h.feed.watch() as slow, h.feed.watch() as fast:
                got = []
                for i in range(4):
                    h.add(signed(rec.OfferBody(title=f"Thing {i}", kind="give"), BOB, i + 1))
                    await h.settle(i + 1)
                    with trio.fail_after(5):
                        got.append(await fast.receive())
                assert len(got) == 4
                received = [slow.receive_nowait(), slow.receive_nowait()]
                assert [s.seq for s in received] == [got[0].seq, got[1].seq]
                with trio.fail_after(5):
                    try:
                        await slow.receive()
                        raise AssertionError("the slow watcher should have been dropped")
                    except trio.EndOfChannel:
                        pass
            nursery.cancel_scope.cancel()


def test_own_items_hand_only_candidates_sharing_a_word_or_tag_to_the_matcher():
    with Store.open(":memory:") as store:
        want = signed(rec.WantBody(title="Bread maker", kind="lend", tags=("kitchen",)), ALICE, 1)
        other = signed(rec.WantBody(title="Kayak", kind="lend"), ALICE, 2)
        store.add_records([want, other], now_ms=NOW)
        own = OwnItems(store.items("want", author=ME, now_ms=NOW))
        from meshnode.matching import Item

        def arriving(title: str, tags: tuple[str, ...] = ()) -> Item:
            return Item(b"x" * 32, "offer", "give", title, "", tags, BOB.verify_key.encode(), SWARM)

        assert [it.id for it in own.candidates(arriving("Panasonic bread maker"))] == [want.id]
        assert [it.id for it in own.candidates(arriving("Blender", ("kitchen",)))] == [want.id]
        assert own.candidates(arriving("Ladder")) == []


def test_a_sync_of_strangers_offers_is_not_matched_pair_by_pair(monkeypatch):
    """2,000 offers against 10 own wants: the matcher runs only for the offers sharing a word."""
    from meshnode.api import feed as feed_module

    calls = []
    real = feed_module.matching.match

    def counted(want, offer):
        calls.append((want.id, offer.id))
        return real(want, offer)

    monkeypatch.setattr(feed_module.matching, "match", counted)
    with Store.open(":memory:") as store:
        h = Harness(store)
        wants = [signed(rec.WantBody(title=f"Sprocket{i}", kind="lend"), ALICE, i + 1) for i in range(10)]
        store.add_records(wants, now_ms=NOW)
        offers = [
            signed(rec.OfferBody(title=f"Cordless gadget {i}", kind="give", desc="in good order"), BOB, i + 1)
            for i in range(2_000)
        ]
        offers.append(signed(rec.OfferBody(title="Sprocket3 spare", kind="give"), BOB, 5_000))
        store.add_records(offers, now_ms=NOW)
        found = h.feed._keep(offers, lambda key: 0.0)
        assert [(s.notice.kind, s.notice.about) for s in found] == [("match", wants[3].id)]
        assert {w for w, _ in calls} <= {w.id for w in wants[:10]}
        assert len(calls) <= 10  # the one sharing offer against the wants sharing its words, not 20,010 pairs
