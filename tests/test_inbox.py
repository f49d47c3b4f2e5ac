"""The inbox: which records are notices (meshnode.inbox, pure) and how the store keeps them."""

from __future__ import annotations

import nacl.signing
from hypothesis import given
from hypothesis import strategies as st

from meshnode import records as rec
from meshnode.inbox import TRUSTED_OFFER_LEVEL, ItemMatch, Notice, notices_for
from meshnode.store import Store
from meshnode.store import inbox as store_inbox

SWARM = b"s" * 32
ALICE, BOB, CAROL = (nacl.signing.SigningKey(bytes([i]) * 32) for i in (1, 2, 3))
ME = ALICE.verify_key.encode()
BOB_KEY, CAROL_KEY = BOB.verify_key.encode(), CAROL.verify_key.encode()


def signed(body: object, key: nacl.signing.SigningKey, seq: int = 1) -> rec.Record:
    return rec.new_record(body, swarm=SWARM, seq=seq, ts=1_000 + seq, signing_key=key)


def offer(title: str, key: nacl.signing.SigningKey = BOB) -> rec.Record:
    return signed(rec.OfferBody(title=title, kind="give"), key)


def test_a_proposal_to_me_is_a_notice_and_one_to_someone_else_is_not():
    mine = offer("Drill", ALICE)
    to_me = signed(rec.ProposalBody(to=ME, take=(mine.id,), note="hi"), BOB)
    assert notices_for(to_me, me=ME) == [Notice("proposal", to_me.id, BOB_KEY, to_me.id)]
    to_carol = signed(rec.ProposalBody(to=CAROL_KEY, take=(mine.id,)), BOB)
    assert notices_for(to_carol, me=ME) == []


def test_a_move_is_a_notice_only_in_my_trades_and_only_by_the_other_party():
    reply = signed(rec.ReplyBody(proposal=b"p" * 32, action="accept", prev=b"p" * 32), BOB)
    assert notices_for(reply, me=ME, trade_parties=(ME, BOB_KEY)) == [
        Notice("move", reply.id, BOB_KEY, b"p" * 32)
    ]
    assert notices_for(reply, me=ME, trade_parties=(CAROL_KEY, BOB_KEY)) == []  # not my trade
    assert notices_for(reply, me=ME, trade_parties=None) == []  # proposal unknown here
    outsider = signed(rec.ReplyBody(proposal=b"p" * 32, action="accept", prev=b"p" * 32), CAROL)
    assert notices_for(outsider, me=ME, trade_parties=(ME, BOB_KEY)) == []
    own = signed(rec.ReplyBody(proposal=b"p" * 32, action="accept", prev=b"p" * 32), ALICE)
    assert notices_for(own, me=ME, trade_parties=(ME, BOB_KEY)) == []


def test_a_ring_i_am_in_and_the_other_parties_moves_in_it_are_notices():
    offers = tuple(offer(t, k).id for t, k in (("Drill", ALICE), ("Ladder", BOB), ("Sewing", CAROL)))
    parties = (ME, BOB_KEY, CAROL_KEY)
    ring = signed(rec.RingBody(parties=parties, offers=offers), BOB)
    assert notices_for(ring, me=ME) == [Notice("ring", ring.id, BOB_KEY, ring.id)]
    assert notices_for(ring, me=ME, trade_parties=parties) == [Notice("ring", ring.id, BOB_KEY, ring.id)]
    outside = signed(rec.RingBody(parties=(BOB_KEY, CAROL_KEY, b"\x07" * 32), offers=offers), BOB)
    assert notices_for(outside, me=ME) == []  # a ring without me
    own = signed(rec.RingBody(parties=parties, offers=offers), ALICE)
    assert notices_for(own, me=ME) == []
    move = signed(rec.RingMoveBody(ring=ring.id, action="accept"), CAROL)
    assert notices_for(move, me=ME, trade_parties=parties) == [
        Notice("ringmove", move.id, CAROL_KEY, ring.id)
    ]
    assert notices_for(move, me=ME, trade_parties=None) == []  # the ring is not known here
    assert notices_for(move, me=ME, trade_parties=(BOB_KEY, CAROL_KEY, b"\x07" * 32)) == []
    mine = signed(rec.RingMoveBody(ring=ring.id, action="accept"), ALICE)
    assert notices_for(mine, me=ME, trade_parties=parties) == []


def test_a_vouch_or_warning_about_me_is_a_notice():
    vouch = signed(rec.AttestBody(subject=ME, level=800, note="kind"), CAROL)
    assert notices_for(vouch, me=ME) == [Notice("vouch", vouch.id, CAROL_KEY)]
    warning = signed(rec.AttestBody(subject=ME, level=-500), CAROL)
    assert notices_for(warning, me=ME)[0].kind == "vouch"
    about_bob = signed(rec.AttestBody(subject=BOB_KEY, level=800), CAROL)
    assert notices_for(about_bob, me=ME) == []


def test_an_offer_from_someone_trusted_is_a_notice_unless_it_is_a_match():
    tent = offer("Tent")
    assert notices_for(tent, me=ME, author_trust=TRUSTED_OFFER_LEVEL) == [Notice("offer", tent.id, BOB_KEY)]
    assert notices_for(tent, me=ME, author_trust=TRUSTED_OFFER_LEVEL - 0.01) == []
    matched = notices_for(tent, me=ME, author_trust=0.9, matches=[ItemMatch(b"w" * 32, tent.id, BOB_KEY)])
    assert matched == [Notice("match", tent.id, BOB_KEY, b"w" * 32)]


def test_a_match_is_the_same_notice_from_either_side():
    """My want then their offer, or their offer then my want: one notice, (match, their item, my item)."""
    want = signed(rec.WantBody(title="Bread maker", kind="lend"), ALICE)
    bread = offer("Bread maker")
    arriving = notices_for(bread, me=ME, matches=[ItemMatch(want.id, bread.id, BOB_KEY)])
    mine_later = notices_for(want, me=ME, matches=[ItemMatch(want.id, bread.id, BOB_KEY)])
    assert arriving == mine_later == [Notice("match", bread.id, BOB_KEY, want.id)]
    # Matches that do not involve the record are ignored.
    assert notices_for(bread, me=ME, matches=[ItemMatch(want.id, b"x" * 32, BOB_KEY)]) == []


@given(
    st.sampled_from(["offer", "want", "proposal", "reply", "attest"]),
    st.floats(min_value=-1, max_value=1),
)
def test_nothing_i_sign_is_a_notice_except_through_a_match(kind, trust):
    bodies = {
        "offer": rec.OfferBody(title="x", kind="give"),
        "want": rec.WantBody(title="x", kind="give"),
        "proposal": rec.ProposalBody(to=BOB_KEY, take=(b"o" * 32,)),
        "reply": rec.ReplyBody(proposal=b"p" * 32, action="accept", prev=b"p" * 32),
        "attest": rec.AttestBody(subject=BOB_KEY, level=1000),
    }
    own = signed(bodies[kind], ALICE)
    found = notices_for(own, me=ME, trade_parties=(ME, BOB_KEY), author_trust=trust)
    assert found == []
    keys = [n.key for n in found]
    assert len(keys) == len(set(keys))


def test_the_store_keeps_each_notice_once_in_order_and_remembers_how_far_it_was_read():
    with Store.open(":memory:") as store:
        a, b = Notice("vouch", b"a" * 32, BOB_KEY), Notice("match", b"b" * 32, BOB_KEY, b"w" * 32)
        added = store.add_notices([a, b, a], at=5)
        assert [s.notice for s in added] == [a, b]
        assert store.add_notices([b], at=6) == []  # the same notice again
        assert store.inbox_marks() == (0, added[-1].seq)
        store.mark_inbox_seen(added[0].seq)
        store.mark_inbox_seen(0)  # never moves back
        assert store.inbox_marks() == (added[0].seq, added[-1].seq)
        assert [s.notice for s in store.notices(after=added[0].seq)] == [b]
        assert [s.notice for s in store.notices(newest_first=True, limit=1)] == [b]


def test_the_store_keeps_only_the_newest_notices(monkeypatch):
    monkeypatch.setattr(store_inbox, "MAX_NOTICES", 3)
    with Store.open(":memory:") as store:
        for i in range(5):
            store.add_notices([Notice("vouch", bytes([i]) * 32, BOB_KEY)], at=i)
        kept = store.notices()
        assert [s.notice.record[0] for s in kept] == [2, 3, 4]
        assert [s.at for s in kept] == [2, 3, 4]


def test_a_version_2_store_upgrades_to_an_empty_inbox_and_keeps_its_records(tmp_path):
    import sqlite3

    path = tmp_path / "store.db"
    drill = offer("Drill")
    with Store.open(path) as store:
        store.add_records([drill], now_ms=1_000)
    conn = sqlite3.connect(path)  # back to version 2, as issue 12 left it
    conn.executescript(
        "DROP TABLE inbox; DROP TABLE local_state; ALTER TABLE items DROP COLUMN price;"
        " PRAGMA user_version = 2;"
    )
    conn.close()
    with Store.open(path) as store:
        assert store.schema_version == 4 and store.has(drill.id)
        assert store.inbox_marks() == (0, 0) and store.notices() == []
        [added] = store.add_notices([Notice("offer", drill.id, BOB_KEY)], at=5)
        store.mark_inbox_seen(added.seq)
        assert store.inbox_marks() == (added.seq, added.seq)
