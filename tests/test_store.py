"""The SQLite store: idempotent ingest, derived state, search, expiry, schema, crashes."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.errors import ClockSkewError, ExpiredError, NotAllowed, StoreError
from meshnode.records import (
    MAX_CLOCK_SKEW_MS,
    AttestBody,
    ItemBody,
    LendTerms,
    OfferBody,
    ProposalBody,
    ReplyBody,
    UpdateBody,
    WantBody,
    WithdrawBody,
    new_record,
)
from meshnode.store import SCHEMA_VERSION, Store, fts_query, schema
from meshnode.store import write as store_write

NOW = 1_700_000_000_000
SWARM = hashlib.blake2b(b"test swarm", digest_size=32).digest()
OTHER_SWARM = hashlib.blake2b(b"other swarm", digest_size=32).digest()
HOUR = 3_600_000


def _key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.blake2b(name.encode(), digest_size=32).digest())


ALICE = _key("alice")
BOB = _key("bob")
CAROL = _key("carol")


def pub(key: nacl.signing.SigningKey) -> bytes:
    return bytes(key.verify_key)


def offer(key=ALICE, title="Cordless drill", *, seq=1, ts=NOW, swarm=SWARM, cls=OfferBody, **kw):
    return new_record(cls(title=title, **kw), swarm=swarm, seq=seq, ts=ts, signing_key=key)


def want(key=ALICE, title="Ladder", **kw):
    return offer(key, title, cls=WantBody, **kw)


def update(target, key=ALICE, title="Updated", *, seq=2, ts=NOW + 1, swarm=SWARM, **kw):
    body = UpdateBody(target=target.id, item=ItemBody(title=title, **kw))
    return new_record(body, swarm=swarm, seq=seq, ts=ts, signing_key=key)


def withdraw(target, key=ALICE, *, seq=3, ts=NOW + 2, swarm=SWARM):
    return new_record(WithdrawBody(target=target.id), swarm=swarm, seq=seq, ts=ts, signing_key=key)


def attest(subject, key=ALICE, level=500, *, seq=1, ts=NOW, context="", expires=None):
    body = AttestBody(subject=pub(subject), level=level, context=context, expires=expires)
    return new_record(body, swarm=SWARM, seq=seq, ts=ts, signing_key=key)


@pytest.fixture
def store():
    with Store.open(":memory:") as s:
        yield s


def titles(store, **kw):
    kw.setdefault("now_ms", NOW)
    return [i.title for i in store.items(**kw)]


# --- basic ingest ----------------------------------------------------------------


def test_add_is_idempotent(store):
    o = offer()
    first = store.add_records([o], now_ms=NOW)
    assert first.added == [o.id] and not first.duplicates and not first.refused
    again = store.add_records([o, o], now_ms=NOW)
    assert again.added == [] and again.duplicates == [o.id, o.id]
    assert store.count() == 1
    assert store.add_record(o, now_ms=NOW) is False
    assert store.integrity_check()


def test_get_has_missing_count(store):
    o, w = offer(), want(seq=2)
    store.add_records([o, w], now_ms=NOW)
    assert store.get(o.id) == o
    assert store.get(o.id).encoded == o.encoded
    assert store.get(b"\0" * 32) is None
    assert store.has(w.id) and not store.has(b"\1" * 32)
    assert store.missing([b"\1" * 32, o.id, b"\2" * 32, b"\1" * 32]) == [b"\1" * 32, b"\2" * 32]
    assert store.count() == 2
    assert store.count(type="offer") == 1
    assert store.count(swarm=SWARM, type="want") == 1
    assert store.count(swarm=OTHER_SWARM) == 0


def test_refused_record_does_not_abort_the_batch(store):
    o = offer()
    store.add_record(o, now_ms=NOW)
    bad = update(o, key=BOB)
    good = offer(title="Bike", seq=5)
    result = store.add_records([bad, good], now_ms=NOW)
    assert result.added == [good.id]
    assert [(rid, type(err)) for rid, err in result.refused] == [(bad.id, NotAllowed)]
    assert not store.has(bad.id)


def test_failed_batch_stores_nothing(store, monkeypatch):
    def boom(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    monkeypatch.setattr(store_write, "update_items", boom)
    with pytest.raises(StoreError, match="simulated"):
        store.add_records([offer(), offer(title="Bike", seq=2)], now_ms=NOW)
    monkeypatch.undo()
    assert store.count() == 0
    assert store.latest_seq(pub(ALICE)) == 0
    assert store.integrity_check()


def test_clock_skew_refused(store):
    future = offer(ts=NOW + MAX_CLOCK_SKEW_MS + 1)
    with pytest.raises(ClockSkewError):
        store.add_record(future, now_ms=NOW)
    assert store.add_record(offer(ts=NOW + MAX_CLOCK_SKEW_MS), now_ms=NOW)


# --- derived state of items --------------------------------------------------------


def test_offer_appears_as_item(store):
    terms = LendTerms(max_days=7, deposit="20 EUR")
    o = offer(desc="18 V", tags=("diy", "tools"), where="u4pru", quantity=2, kind="lend", terms=terms)
    store.add_record(o, now_ms=NOW)
    [item] = store.items(now_ms=NOW)
    assert item.id == o.id and item.current_record_id == o.id
    assert (item.type, item.author, item.swarm) == ("offer", pub(ALICE), SWARM)
    assert (item.title, item.kind, item.desc) == ("Cordless drill", "lend", "18 V")
    assert (item.tags, item.where, item.quantity, item.terms) == (("diy", "tools"), "u4pru", 2, terms)
    assert (item.created_ts, item.updated_ts, item.withdrawn) == (NOW, NOW, False)
    assert store.item(o.id) == item
    assert store.items("want", now_ms=NOW) == []


def test_update_applies(store):
    o = offer()
    u = update(o, title="Drill with two batteries", tags=("diy",))
    store.add_records([o], now_ms=NOW)
    store.add_records([u], now_ms=NOW)
    item = store.item(o.id)
    assert item.title == "Drill with two batteries" and item.tags == ("diy",)
    assert item.current_record_id == u.id
    assert (item.created_ts, item.updated_ts) == (o.ts, u.ts)
    assert store.integrity_check()


def test_update_by_other_author_refused_when_target_known(store):
    o = offer()
    store.add_record(o, now_ms=NOW)
    with pytest.raises(NotAllowed, match="other than its author"):
        store.add_record(update(o, key=BOB), now_ms=NOW)
    with pytest.raises(NotAllowed):
        store.add_record(withdraw(o, key=BOB), now_ms=NOW)
    assert store.item(o.id).title == "Cordless drill"
    assert not store.item(o.id).withdrawn
    assert store.count() == 1


def test_update_from_another_swarm_refused(store):
    o = offer()
    store.add_record(o, now_ms=NOW)
    with pytest.raises(NotAllowed, match="swarm"):
        store.add_record(update(o, swarm=OTHER_SWARM), now_ms=NOW)


def test_update_of_a_non_item_refused(store):
    a = attest(BOB)
    store.add_record(a, now_ms=NOW)
    body = UpdateBody(target=a.id, item=ItemBody(title="x"))
    u = new_record(body, swarm=SWARM, seq=9, ts=NOW + 1, signing_key=ALICE)
    with pytest.raises(NotAllowed, match="not an offer or want"):
        store.add_record(u, now_ms=NOW)
    w = new_record(WithdrawBody(target=a.id), swarm=SWARM, seq=9, ts=NOW + 1, signing_key=ALICE)
    with pytest.raises(NotAllowed):
        store.add_record(w, now_ms=NOW)


@pytest.mark.parametrize("same_batch", [False, True])
def test_update_before_target_applies_when_target_arrives(store, same_batch):
    o = offer()
    u = update(o, title="Drill, updated")
    if same_batch:
        result = store.add_records([u, o], now_ms=NOW)
        assert set(result.added) == {u.id, o.id}
    else:
        assert store.add_record(u, now_ms=NOW)
        assert store.item(o.id) is None and store.items(now_ms=NOW) == []
        assert store.add_record(o, now_ms=NOW)
    assert store.item(o.id).title == "Drill, updated"
    assert store.item(o.id).current_record_id == u.id
    assert store.integrity_check()


def test_update_before_target_by_other_author_is_evicted(store):
    o = offer()
    bad = update(o, key=BOB, title="Hijacked")
    assert store.add_record(bad, now_ms=NOW)  # target unknown: cannot judge yet
    result = store.add_records([o], now_ms=NOW)
    assert result.added == [o.id] and result.evicted == [bad.id]
    assert store.item(o.id).title == "Cordless drill"
    assert not store.has(bad.id)
    with pytest.raises(NotAllowed):  # offered again later: refused like any other
        store.add_record(bad, now_ms=NOW)
    assert store.integrity_check()


def test_pending_update_of_a_non_item_is_evicted(store):
    a = attest(BOB)
    u = new_record(
        UpdateBody(target=a.id, item=ItemBody(title="x")), swarm=SWARM, seq=9, ts=NOW + 1, signing_key=ALICE
    )
    store.add_record(u, now_ms=NOW)
    result = store.add_records([a], now_ms=NOW)
    assert result.evicted == [u.id]
    assert store.integrity_check()


def test_withdraw_hides(store):
    o, other = offer(), offer(title="Bike", seq=5)
    store.add_records([o, other], now_ms=NOW)
    w = withdraw(o)
    store.add_record(w, now_ms=NOW)
    assert titles(store) == ["Bike"]
    item = store.item(o.id)
    assert item.withdrawn and item.withdrawn_ts == w.ts
    assert {i.title for i in store.items(now_ms=NOW, include_withdrawn=True)} == {"Cordless drill", "Bike"}
    assert store.withdrawals() == {o.id: w.ts}
    assert titles(store, query="drill") == []
    assert titles(store, query="drill", include_withdrawn=True) == ["Cordless drill"]


def test_withdraw_before_target(store):
    o = offer()
    store.add_record(withdraw(o), now_ms=NOW)
    store.add_record(o, now_ms=NOW)
    assert store.item(o.id).withdrawn
    assert store.items(now_ms=NOW) == []
    assert store.integrity_check()


def test_update_after_withdraw_does_not_revive(store):
    o = offer()
    store.add_records([o, withdraw(o, ts=NOW + 5)], now_ms=NOW)
    store.add_record(update(o, title="Back again", ts=NOW + 10, seq=9), now_ms=NOW)
    item = store.item(o.id)
    assert item.withdrawn and item.title == "Back again"
    assert store.items(now_ms=NOW) == []


def test_newest_update_wins_regardless_of_order(store):
    o = offer()
    u1 = update(o, title="first", ts=NOW + 10, seq=2)
    u2 = update(o, title="second", ts=NOW + 20, seq=3)
    u3 = update(o, title="tie, higher seq", ts=NOW + 20, seq=4)
    for order in ([o, u1, u2, u3], [u3, u2, u1, o], [u2, o, u3, u1]):
        with Store.open(":memory:") as s:
            for r in order:
                s.add_record(r, now_ms=NOW)
            assert s.item(o.id).title == "tie, higher seq"
            assert s.integrity_check()
    # Equal (ts, seq): the larger id wins.
    a = update(o, title="same ts a", ts=NOW + 30, seq=7)
    b = update(o, title="same ts b", ts=NOW + 30, seq=7)
    winner = max([a, b], key=lambda r: r.id)
    store.add_records([b, o, a], now_ms=NOW)
    assert store.item(o.id).title == winner.body.item.title


def test_earliest_valid_withdrawal_counts(store):
    o = offer()
    store.add_records([withdraw(o, ts=NOW + 50, seq=4), o, withdraw(o, ts=NOW + 20, seq=3)], now_ms=NOW)
    assert store.withdrawals() == {o.id: NOW + 20}


# --- full-text search --------------------------------------------------------------


@pytest.fixture
def catalogue(store):
    records = [
        offer(title="Cordless drill", desc="Bosch, two batteries", tags=("diy", "power-tools"), seq=1),
        offer(title="Children's bike", desc="Blue, 16 inch wheels", tags=("kids",), seq=2),
        offer(title="Café table", desc="Solid oak", tags=("furniture",), seq=3),
        offer(title="Lawn mower", desc="Petrol; needs a drill-like pull", tags=("garden",), seq=4),
    ]
    store.add_records(records, now_ms=NOW)
    return store


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("drill", {"Cordless drill", "Lawn mower"}),  # title, and description
        ("batteries", {"Cordless drill"}),  # description
        ("battery", {"Cordless drill"}),  # stemmed
        ("power-tools", {"Cordless drill"}),  # tag with a dash
        ("kids", {"Children's bike"}),  # tag
        ("cafe", {"Café table"}),  # diacritics folded
        ("CAFÉ OAK", {"Café table"}),  # every word required, case folded
        ("oak bike", set()),
        ("bik*", {"Children's bike"}),  # prefix
    ],
)
def test_fts_search(catalogue, query, expected):
    assert set(titles(catalogue, query=query)) == expected


def test_fts_ranks_title_above_description(catalogue):
    assert titles(catalogue, query="drill") == ["Cordless drill", "Lawn mower"]


@pytest.mark.parametrize(
    "query",
    [
        "",
        " ",
        '"',
        '""',
        "'",
        "*",
        "**",
        "-",
        "--",
        "+",
        "^",
        ":",
        "OR",
        "AND",
        "NOT",
        "drill OR",
        "NEAR(",
        "NEAR(drill bike, 2)",
        "title:drill",
        "{title}: drill",
        "drill)",
        "(drill",
        "drill*bike",
        "-drill",
        "drill -bike",
        'dri"ll',
        "drill\x00",
        "\ud800",
        "🚲 🔨",
        "漢字",
        "ﬁ",  # a ligature that NFKC turns into "fi"
        "e\u0301",  # decomposed é
        "a" * 5000,
        "word " * 200,
        "_",
        "%",
        "\\",
        ";DROP TABLE items;--",
    ],
)
def test_fts_hostile_queries_never_raise(catalogue, query):
    result = catalogue.items(query=query, now_ms=NOW)
    assert isinstance(result, list)


@pytest.mark.parametrize("query", ["", "*", '"', "-", "(", "()", ")*:^", "🚲"])
def test_fts_punctuation_only_matches_nothing(catalogue, query):
    assert catalogue.items(query=query, now_ms=NOW) == []
    assert fts_query(query) is None


def test_fts_operators_are_plain_words(catalogue):
    assert titles(catalogue, query="drill or bike") == []  # lower case "or" is just a (missing) word
    assert set(titles(catalogue, query="drill NOT")) == set()
    assert titles(catalogue, query="drill -cordless") == ["Cordless drill"]  # '-' is not NOT


def test_fts_follows_updates(store):
    o = offer(title="Cordless drill")
    store.add_record(o, now_ms=NOW)
    store.add_record(update(o, title="Hammer"), now_ms=NOW)
    assert titles(store, query="drill") == []
    assert titles(store, query="hammer") == ["Hammer"]
    assert store.integrity_check()


# --- filters -----------------------------------------------------------------------


def test_filters(store):
    records = [
        offer(ALICE, "Drill", kind="lend", tags=("diy", "tools"), seq=1, ts=NOW - 5),
        offer(ALICE, "Jam", kind="give", tags=("food",), seq=2, ts=NOW - 4),
        offer(BOB, "Sander", kind="lend", tags=("tools",), seq=1, ts=NOW - 3),
        offer(BOB, "Tutoring", kind="service", seq=2, ts=NOW - 2),
        want(BOB, "Ladder", kind="lend", tags=("tools",), seq=3, ts=NOW - 1),
        offer(CAROL, "Saw", kind="lend", tags=("tools",), seq=1, ts=NOW, swarm=OTHER_SWARM),
    ]
    store.add_records(records, now_ms=NOW)
    assert titles(store) == ["Saw", "Tutoring", "Sander", "Jam", "Drill"]  # newest first
    assert titles(store, kind="lend") == ["Saw", "Sander", "Drill"]
    assert titles(store, tag="tools") == ["Saw", "Sander", "Drill"]
    assert titles(store, tag=" TOOLS ") == ["Saw", "Sander", "Drill"]
    assert titles(store, tag="tool") == []  # whole tags only
    assert titles(store, tag="not a tag!") == []
    assert titles(store, author=pub(BOB)) == ["Tutoring", "Sander"]
    assert titles(store, swarm=SWARM, kind="lend", tag="tools", author=pub(ALICE)) == ["Drill"]
    assert titles(store, swarm=OTHER_SWARM) == ["Saw"]
    assert titles(store, query="sander saw") == []  # every word required
    assert titles(store, query="sander", author=pub(ALICE)) == []
    assert titles(store, limit=2) == ["Saw", "Tutoring"]
    assert titles(store, limit=0) == []
    assert titles(store, type="want", tag="tools") == ["Ladder"]
    with pytest.raises(Exception, match="kind"):
        store.items(kind="steal", now_ms=NOW)
    with pytest.raises(Exception, match="type"):
        store.items("attest", now_ms=NOW)


# --- expiry and pruning ---------------------------------------------------------------


def test_expiry_hides_and_prune_removes(store):
    short = offer(title="Soup", expires=NOW + HOUR, seq=1)
    long = offer(title="Bike", seq=2)
    u = update(short, title="Soup, still warm", expires=NOW + HOUR, seq=3)
    store.add_records([short, long, u], now_ms=NOW)
    assert set(titles(store)) == {"Soup, still warm", "Bike"}
    later = NOW + HOUR
    assert titles(store, now_ms=later) == ["Bike"]
    assert store.item(short.id).expires == NOW + HOUR  # still there, flagged by its expiry
    assert titles(store, now_ms=later, query="soup") == []
    assert store.prune_expired(later) == 2
    assert store.item(short.id) is None and not store.has(short.id) and not store.has(u.id)
    assert store.is_pruned(short.id) and store.is_pruned(u.id)
    assert store.count() == 1
    result = store.add_records([short, u], now_ms=NOW)
    assert [type(e) for _, e in result.refused] == [ExpiredError, ExpiredError]
    late = withdraw(short, seq=7)
    with pytest.raises(ExpiredError, match="pruned"):
        store.add_record(late, now_ms=NOW)
    assert store.prune_expired(later) == 0
    assert store.integrity_check()
    assert store.forget_pruned(NOW + HOUR + 1) == 2
    assert not store.is_pruned(short.id)


def test_update_extends_expiry(store):
    o = offer(expires=NOW + HOUR)
    store.add_records([o, update(o, title="Still here", expires=NOW + 3 * HOUR)], now_ms=NOW)
    assert titles(store, now_ms=NOW + 2 * HOUR) == ["Still here"]
    assert store.prune_expired(NOW + 2 * HOUR) == 0
    assert store.has(o.id)


def test_waiting_update_that_expired(store):
    o = offer()
    u = update(o, expires=NOW + HOUR)
    store.add_record(u, now_ms=NOW)
    assert store.prune_expired(NOW + HOUR) == 0  # its target may still come: then both go
    store.add_record(o, now_ms=NOW)
    assert store.items(now_ms=NOW + HOUR) == []
    assert store.prune_expired(NOW + HOUR) == 2


def test_waiting_update_pruned_long_after_it_expired(store):
    o = offer()
    u = update(o, expires=NOW + HOUR)
    store.add_record(u, now_ms=NOW)
    assert store.prune_expired(NOW + HOUR + store_write.ORPHAN_GRACE_MS) == 1
    assert not store.has(u.id) and store.is_pruned(u.id)
    store.add_record(o, now_ms=NOW)  # the target itself is not refused
    assert store.item(o.id).title == "Cordless drill"


# --- attestations and sequence numbers ---------------------------------------------------


def test_attestations_latest_wins(store):
    old = attest(BOB, level=900, ts=NOW, seq=1)
    new = attest(BOB, level=-200, ts=NOW + 10, seq=2)
    other_context = attest(BOB, level=300, ts=NOW + 5, seq=3, context="tools")
    about_carol = attest(CAROL, level=100, ts=NOW, seq=4)
    by_bob = attest(CAROL, key=BOB, level=700, ts=NOW, seq=1)
    store.add_records([new, about_carol, other_context], now_ms=NOW)
    store.add_records([old, by_bob], now_ms=NOW)  # older arrives later: stored, superseded
    got = store.attestations(now_ms=NOW)
    assert {r.id for r in got} == {new.id, other_context.id, about_carol.id, by_bob.id}
    assert store.attestations(swarm=OTHER_SWARM, now_ms=NOW) == []
    assert store.integrity_check()


def test_attestation_expiry_and_tombstone(store):
    older = attest(BOB, level=900, ts=NOW, seq=1)
    expiring = attest(BOB, level=-500, ts=NOW + 10, seq=2, expires=NOW + HOUR)
    store.add_records([older, expiring], now_ms=NOW)
    assert [r.id for r in store.attestations(now_ms=NOW)] == [expiring.id]
    # The latest has expired: nothing is current; the older one does not come back.
    assert store.attestations(now_ms=NOW + HOUR) == []
    assert store.prune_expired(NOW + HOUR) == 2
    assert store.attestations(now_ms=NOW + HOUR) == []
    even_older = attest(BOB, level=1000, ts=NOW - 10, seq=0)
    with pytest.raises(ExpiredError):
        store.add_record(even_older, now_ms=NOW)
    newer = attest(BOB, level=100, ts=NOW + 20, seq=3)
    store.add_record(newer, now_ms=NOW + HOUR)
    assert [r.id for r in store.attestations(now_ms=NOW + HOUR)] == [newer.id]
    assert store.integrity_check()


def test_latest_seq(store):
    assert store.latest_seq(pub(ALICE)) == 0
    store.add_records([offer(seq=5), offer(title="b", seq=3), attest(BOB, seq=7)], now_ms=NOW)
    assert store.latest_seq(pub(ALICE)) == 7
    assert store.latest_seq(pub(BOB)) == 0
    short = offer(title="brief", seq=9, expires=NOW + 1)
    store.add_record(short, now_ms=NOW)
    store.prune_expired(NOW + 1)
    assert store.latest_seq(pub(ALICE)) == 9  # pruning never lowers it


# --- other queries -------------------------------------------------------------------


def test_records_of_type(store):
    o = offer()
    p = new_record(ProposalBody(to=pub(ALICE), take=(o.id,)), swarm=SWARM, seq=1, ts=NOW + 1, signing_key=BOB)
    r = new_record(
        ReplyBody(proposal=p.id, action="accept"), swarm=SWARM, seq=2, ts=NOW + 2, signing_key=ALICE
    )
    store.add_records([r, p, o], now_ms=NOW)
    assert store.records_of_type("proposal") == [p]
    assert store.records_of_type("reply", swarm=SWARM) == [r]
    assert store.records_of_type("reply", swarm=OTHER_SWARM) == []


def test_ids_in_range(store):
    records = [offer(title=f"o{i}", seq=i, ts=NOW + i // 2) for i in range(10)]
    records.append(offer(title="elsewhere", swarm=OTHER_SWARM))
    store.add_records(records, now_ms=NOW)
    everything = sorted((r.ts, r.id) for r in records[:10])
    assert store.ids_in_range(SWARM, None, None, 100) == everything
    assert store.ids_in_range(SWARM, None, None, 3) == everything[:3]
    assert store.ids_in_range(SWARM, everything[2], everything[7], 100) == everything[2:7]
    assert store.ids_in_range(SWARM, (NOW + 2, b""), (NOW + 4, b""), 100) == everything[4:8]
    assert store.ids_in_range(OTHER_SWARM, None, None, 100) == [(NOW, records[10].id)]


def test_usable_from_another_thread(store):
    out = []
    t = threading.Thread(target=lambda: out.append(store.add_record(offer(), now_ms=NOW)))
    t.start()
    t.join(10)
    assert out == [True] and store.count() == 1


def test_integrity_check_notices_tampering(store):
    o = offer()
    store.add_records([o, update(o)], now_ms=NOW)
    assert store.integrity_check()
    store._conn.execute("UPDATE items SET quantity = 7")
    assert not store.integrity_check()
    assert any("differs" in p for p in store.integrity_problems())


def test_integrity_check_notices_a_stale_text_index(store):
    o = offer(desc="Bosch", tags=("diy",))
    store.add_record(o, now_ms=NOW)
    assert store.integrity_check()
    store._conn.execute(
        "INSERT INTO items_fts (items_fts, rowid, title, description, tags)"
        " SELECT 'delete', n, title, description, tags FROM items"
    )
    assert any("full-text" in p for p in store.integrity_problems())


def test_integrity_check_notices_a_missing_item(store):
    store.add_record(offer(), now_ms=NOW)
    store._conn.execute("PRAGMA foreign_keys = OFF")
    store._conn.execute("DELETE FROM items")
    assert any("no item row" in p for p in store.integrity_problems())


# --- order independence (property) ------------------------------------------------


def _pool():
    o1 = offer(ALICE, "one", seq=1, ts=NOW, tags=("a",))
    o2 = offer(ALICE, "two", seq=2, ts=NOW + 1, expires=NOW + HOUR)
    w1 = want(BOB, "three", seq=1, ts=NOW + 2)
    pool = [
        o1,
        o2,
        w1,
        update(o1, title="one v2", ts=NOW + 10, seq=3),
        update(o1, title="one v3", ts=NOW + 20, seq=4),
        update(o1, title="one v3 tie", ts=NOW + 20, seq=5),
        update(o1, key=BOB, title="one hijacked", ts=NOW + 99, seq=9),
        update(o1, title="one other swarm", ts=NOW + 98, seq=50, swarm=OTHER_SWARM),
        withdraw(o1, key=BOB, ts=NOW + 5, seq=10),
        withdraw(o2, ts=NOW + 30, seq=6),
        update(o2, title="two after withdraw", ts=NOW + 40, seq=7, expires=NOW + 2 * HOUR),
        withdraw(o2, ts=NOW + 35, seq=8),
        update(w1, key=BOB, title="three v2", ts=NOW + 3, seq=2),
        update(w1, key=ALICE, title="three hijacked", ts=NOW + 50, seq=11),
        withdraw(offer(CAROL, "never seen", seq=1), key=CAROL, seq=2),
    ]
    pool.append(update(pool[3], title="update of an update", ts=NOW + 60, seq=12))
    return pool


POOL = _pool()
ITEM_IDS = [POOL[0].id, POOL[1].id, POOL[2].id]


def _snapshot(s):
    return (
        [s.item(i) for i in ITEM_IDS],
        s.items("offer", now_ms=NOW, include_withdrawn=True),
        s.items("want", now_ms=NOW),
        s.items("offer", now_ms=NOW + HOUR + 50),
        s.items("offer", query="one", now_ms=NOW),
        s.withdrawals(),
    )


def _ingest(records, cuts):
    s = Store.open(":memory:")
    start = 0
    for cut in [*sorted(cuts), len(records)]:
        s.add_records(records[start:cut], now_ms=NOW)
        start = cut
    return s


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_items_do_not_depend_on_arrival_order(data):
    chosen = data.draw(st.sets(st.sampled_from(range(len(POOL)))), label="subset")
    records = [POOL[i] for i in sorted(chosen)]
    first = data.draw(st.permutations(records), label="first order")
    second = data.draw(st.permutations(records), label="second order")
    cuts1 = data.draw(st.lists(st.integers(0, len(records)), max_size=4), label="cuts1")
    cuts2 = data.draw(st.lists(st.integers(0, len(records)), max_size=4), label="cuts2")
    with _ingest(first, cuts1) as a, _ingest(second, cuts2) as b:
        assert _snapshot(a) == _snapshot(b)
        assert a.integrity_check() and b.integrity_check()


def test_full_pool_outcome():
    with _ingest(list(reversed(POOL)), [3, 7]) as s:
        one, two, three = (s.item(i) for i in ITEM_IDS)
        assert one.title == "one v3 tie" and not one.withdrawn
        assert two.title == "two after withdraw" and two.withdrawn and two.withdrawn_ts == NOW + 30
        assert three.title == "three v2"
        assert s.integrity_check()


# --- schema and files ----------------------------------------------------------------


def test_file_store_reopens_with_its_data(tmp_path):
    path = tmp_path / "store.db"
    o = offer()
    with Store.open(path) as s:
        s.add_records([o, update(o)], now_ms=NOW)
        assert s.schema_version == SCHEMA_VERSION
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Store.open(str(path)) as s:
        assert s.item(o.id).title == "Updated"
        assert s.integrity_check()
        with s.reader() as r:
            assert r.item(o.id).title == "Updated"
            assert r.integrity_check()
            with pytest.raises(StoreError, match="read-only"):
                r.add_record(offer(title="x", seq=8), now_ms=NOW)


def test_open_reader_gives_reads_beside_the_writer(tmp_path):
    """A file store: a second, read-only connection. In memory: the store's own, read-only, left open."""
    with Store.open(":memory:") as s:
        s.add_record(offer(), now_ms=NOW)
        view = s.open_reader()
        assert view.readonly and view.count() == 1
        with pytest.raises(StoreError, match="read-only"):
            view.add_record(offer(title="x", seq=8), now_ms=NOW)
        view.close()
        assert s.add_record(offer(title="y", seq=9), now_ms=NOW) and s.count() == 2
    path = tmp_path / "store.db"
    with Store.open(path) as s:
        reader = s.open_reader()
        assert reader is not s and reader.readonly and reader.path == str(path)
        s.add_record(offer(), now_ms=NOW)
        assert reader.count() == 1
        reader.close()
        with pytest.raises(StoreError):
            reader.count()  # its own connection is closed...
        assert s.add_record(offer(title="y", seq=9), now_ms=NOW) and s.count() == 2  # ...the writer's is not


def test_reader_is_not_blocked_by_a_write_batch(tmp_path, monkeypatch):
    path = tmp_path / "store.db"
    first, second = offer(title="first"), offer(title="second", seq=2)
    with Store.open(path) as s, s.reader() as r:
        s.add_record(first, now_ms=NOW)
        inside, release = threading.Event(), threading.Event()
        real = store_write.update_items

        def slow(*args):
            inside.set()
            assert release.wait(10)
            return real(*args)

        monkeypatch.setattr(store_write, "update_items", slow)
        writer = threading.Thread(target=lambda: s.add_record(second, now_ms=NOW))
        writer.start()
        try:
            assert inside.wait(10)
            started = time.monotonic()
            assert titles(r) == ["first"]  # the batch in flight is invisible...
            assert time.monotonic() - started < 1.0  # ...and does not make readers wait
        finally:
            release.set()
            writer.join(10)
        assert titles(r) == ["second", "first"]


def test_newer_schema_refused(tmp_path):
    path = tmp_path / "store.db"
    Store.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store.open(path)


@pytest.mark.parametrize(
    "content",
    [b"hello, this is not a database at all\n" * 200, b"SQLite format 3\x00" + b"\xff" * 2000],
)
def test_not_a_database_refused(tmp_path, content):
    path = tmp_path / "store.db"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a meshnode database"):
        Store.open(path)
    assert path.read_bytes() == content


def test_other_sqlite_database_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    with pytest.raises(StoreError, match="another application"):
        Store.open(path)


def test_unopenable_path(tmp_path):
    with pytest.raises(StoreError):
        Store.open(tmp_path / "no" / "such" / "dir" / "store.db")
    with pytest.raises(StoreError):
        Store.open(tmp_path / "absent.db", readonly=True)


def test_migrations_apply_in_order_once(tmp_path, monkeypatch):
    path = tmp_path / "store.db"
    Store.open(path).close()
    step = "CREATE TABLE extra (x INTEGER);\nINSERT INTO extra VALUES (42);\n"
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, step))
    for _ in range(2):
        with Store.open(path) as s:
            assert s.schema_version == SCHEMA_VERSION + 1
            assert s._conn.execute("SELECT x FROM extra").fetchall() == [(42,)]


def test_failed_migration_rolls_back(tmp_path, monkeypatch):
    path = tmp_path / "store.db"
    Store.open(path).close()
    step = "CREATE TABLE half (x INTEGER);\nINSERT INTO nowhere VALUES (1);\n"
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, step))
    with pytest.raises(StoreError, match=f"from schema version {SCHEMA_VERSION} to"):
        Store.open(path)
    monkeypatch.undo()
    with Store.open(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s._conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchall() == []


def test_reader_of_an_old_schema_refused(tmp_path, monkeypatch):
    path = tmp_path / "store.db"
    Store.open(path).close()
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, "CREATE TABLE extra (x);"))
    with pytest.raises(StoreError, match="read-write"):
        Store.open(path, readonly=True)


# --- crash consistency ---------------------------------------------------------------

WRITER = Path(__file__).with_name("store_crash_writer.py")


def _load_writer():
    spec = importlib.util.spec_from_file_location("store_crash_writer", WRITER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_writer_until_killed(db: Path, run: int, size: int, rng: random.Random) -> list[tuple[int, str]]:
    """Start a writer, SIGKILL it inside a batch after a few acknowledged ones; return every ack."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), str(run), str(size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    acks: list[tuple[int, str]] = []
    in_batch = threading.Event()
    want_acks = rng.randint(1, 3)

    def read() -> None:
        for line in proc.stdout:
            fields = line.split()
            if fields[0] == "A":
                acks.append((int(fields[1]), fields[2]))
            elif len(acks) >= want_acks:
                in_batch.set()  # "B n": the writer is handing batch n to the store now
        in_batch.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert in_batch.wait(30), "the writer made no progress in 30 s"
        time.sleep(rng.uniform(0.0, 0.025))  # somewhere inside add_records (or just after it)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        reader.join(10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, stderr
    return acks


def test_crash_consistency(tmp_path):
    writer = _load_writer()
    db = tmp_path / "crash.db"
    size = 400
    rng = random.Random(1234)
    runs = 5
    acked: dict[int, int] = {}
    for run in range(runs):
        acks = _run_writer_until_killed(db, run, size, rng)
        assert acks, "the writer was killed before its first batch"
        assert [b for b, _ in acks] == list(range(len(acks)))
        for batch, last in acks:
            assert last == writer.make_batch(run, batch, size)[-1].id.hex()
        acked[run] = len(acks)

    with Store.open(db) as s:
        assert s.integrity_check(), s.integrity_problems()
        for run, n in acked.items():
            for batch in range(n):
                ids = [r.id for r in writer.make_batch(run, batch, size)]
                assert s.missing(ids) == [], f"run {run}: acknowledged batch {batch} lost records"
            # The batch in flight when the writer died: all of it or none of it.
            in_flight = [r.id for r in writer.make_batch(run, n, size)]
            assert len(s.missing(in_flight)) in (0, len(in_flight))
            # Derived state of the acknowledged batches.
            prev = writer.originals(run, 0, size)
            if n >= 2:
                assert s.item(prev[10].id).title == f"updated {run}-0-10"
                assert s.item(prev[5].id).withdrawn
                assert s.item(writer.originals(run, 1, size)[0].id).title in (
                    f"early {run}-1-0",
                    f"updated {run}-1-0",
                )
        orphans = s._conn.execute(
            "SELECT count(*) FROM records r WHERE type IN ('offer', 'want')"
            " AND NOT EXISTS (SELECT 1 FROM items i WHERE i.n = r.n)"
        ).fetchone()[0]
        assert orphans == 0
        assert s.count(type="offer") + s.count(type="want") == len(
            s.items("offer", now_ms=writer.NOW, include_withdrawn=True, limit=10**6)
        ) + len(s.items("want", now_ms=writer.NOW, include_withdrawn=True, limit=10**6))


# --- ranking by trust, inside the query --------------------------------------------


def test_ranked_listing_puts_trusted_authors_first_before_the_limit(store):
    """150 strangers' offers dated 9 minutes ahead do not push a trusted author's offer off the page."""
    strangers = [_key(f"stranger {i}") for i in range(150)]
    store.add_records(
        [offer(k, f"Stranger thing {i}", ts=NOW + 9 * 60_000) for i, k in enumerate(strangers)], now_ms=NOW
    )
    store.add_record(offer(BOB, "Friend's ladder", ts=NOW - HOUR), now_ms=NOW)
    assert "Friend's ladder" not in titles(store, limit=100)  # newest first: the strangers fill the page
    ranked = titles(store, limit=100, trust={pub(ALICE): 1.0, pub(BOB): 0.8})
    assert ranked[0] == "Friend's ladder" and len(ranked) == 100
    # With a text query too: trust first, then relevance.
    store.add_record(offer(CAROL, "Ladder ladder ladder", ts=NOW), now_ms=NOW)
    assert titles(store, query="ladder", trust={pub(BOB): 0.8}) == ["Friend's ladder", "Ladder ladder ladder"]
    assert titles(store, query="ladder") == ["Ladder ladder ladder", "Friend's ladder"]


def test_ranked_listing_keeps_the_order_within_a_level_and_clamps_future_dates(store):
    store.add_records(
        [offer(ALICE, "old", ts=NOW - 2 * HOUR), offer(BOB, "older", ts=NOW - 3 * HOUR)], now_ms=NOW
    )
    tied = [
        offer(CAROL, "now", ts=NOW),
        offer(_key("dave"), "far future", ts=NOW + 9 * 60_000),
        offer(_key("erin"), "near future", ts=NOW + 60_000),
    ]
    store.add_records([*tied, offer(_key("frank"), "an hour ago", ts=NOW - HOUR)], now_ms=NOW)
    # A date after now counts as now: the three tie (broken by id, as any tie) above older items.
    at_now = [o.body.title for o in sorted(tied, key=lambda o: o.id, reverse=True)]
    assert titles(store) == [*at_now, "an hour ago", "old", "older"]
    # Within one trust level, the same order as without trust.
    assert titles(store, trust={pub(ALICE): 0.5, pub(BOB): 0.5}) == ["old", "older", *at_now, "an hour ago"]
    assert titles(store, trust={pub(BOB): 0.9, pub(ALICE): 0.5})[:2] == ["older", "old"]


def test_items_by_id_reads_offers_and_wants_in_one_batch(store):
    o, w = offer(), want(BOB, seq=1)
    store.add_records([o, w, attest(BOB, seq=2)], now_ms=NOW)
    found = store.items_by_id([o.id, w.id, b"\1" * 32, o.id])
    assert set(found) == {o.id, w.id}
    assert found[o.id] == store.item(o.id) and found[w.id].type == "want"


def test_excluded_items_are_left_out_before_the_limit(store):
    """An unavailable offer (reserved, given) never takes a place on the first page."""
    records = [offer(ALICE, f"Thing {i}", seq=i + 1, ts=NOW - 100 + i) for i in range(10)]
    store.add_records(records, now_ms=NOW)
    newest = [r.id for r in reversed(records)]
    assert [it.id for it in store.items(now_ms=NOW, limit=3)] == newest[:3]
    gone = set(newest[:2])
    assert [it.id for it in store.items(now_ms=NOW, limit=3, exclude=gone)] == newest[2:5]
    assert [it.id for it in store.items(now_ms=NOW, limit=3)] == newest[:3]  # nothing kept between calls
