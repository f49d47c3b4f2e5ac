"""Bounded storage: lifetimes, quotas and eviction, the free-disk floor, pruning by index, the file."""

from __future__ import annotations

import os
import sqlite3
import stat
import time

import nacl.signing
import pytest

from meshnode import lifetime
from meshnode.errors import ExpiredError, OverQuota, StorageFull, StoreError
from meshnode.records import AttestBody, new_record
from meshnode.store import SCHEMA_VERSION, QuotaPolicy, Quotas, Store, write
from meshnode.store.write import ORPHAN_GRACE_MS
from tests.test_store import ALICE, BOB, CAROL, NOW, SWARM, attest, offer, pub, update, withdraw

DAY = lifetime.DAY_MS


def keys(n: int) -> list[nacl.signing.SigningKey]:
    return [nacl.signing.SigningKey.generate() for _ in range(n)]


def stored_by(store: Store, key: nacl.signing.SigningKey) -> int:
    return sum(1 for _ in store._conn.execute("SELECT 1 FROM records WHERE author = ?", (pub(key),)))


def usage_agrees(store: Store) -> None:
    """The triggers' usage table equals a count of the records."""
    conn = store._conn
    counted = conn.execute(
        "SELECT swarm, author, count(*), sum(length(raw)) FROM records GROUP BY swarm, author ORDER BY 1, 2"
    ).fetchall()
    kept = conn.execute("SELECT swarm, author, records, bytes FROM usage ORDER BY 1, 2").fetchall()
    assert kept == counted


@pytest.fixture
def store():
    s = Store.open(":memory:")
    yield s
    s.close()


# --- lifetimes -------------------------------------------------------------------------


def test_every_item_and_vouch_expires_within_its_lifetime(store):
    plain = offer(ALICE, "Drill", seq=1)
    forever = offer(ALICE, "Ladder", seq=2, expires=2**63 - 1)
    vouch = attest(BOB, ALICE, seq=3)
    store.add_records([plain, forever, vouch], now_ms=NOW)
    assert store.item(plain.id).expires == NOW + lifetime.DEFAULT_MS["offer"]
    assert store.item(forever.id).expires == NOW + lifetime.MAX_MS["offer"]
    (row,) = store._conn.execute("SELECT expires FROM attestations").fetchall()
    assert row[0] == NOW + lifetime.DEFAULT_MS["attest"]
    # An update refreshes an item, but never past the maximum after the original was made.
    later = update(forever, ALICE, "Ladder, 3 m", seq=4, ts=NOW + 300 * DAY, expires=2**62)
    store.add_records([later], now_ms=NOW + 300 * DAY)
    assert store.item(forever.id).expires == NOW + lifetime.MAX_MS["offer"]
    # Everything is pruned once its lifetime is over.
    assert store.prune_expired(NOW + 3 * 365 * DAY) == 4
    assert store.count() == 0


def test_a_record_past_its_longest_lifetime_is_refused_not_blamed(store):
    old = offer(ALICE, "Sofa", ts=NOW - lifetime.MAX_MS["offer"])
    ancient_vouch = attest(BOB, ALICE, ts=1000)
    result = store.add_records([old, ancient_vouch], now_ms=NOW)
    assert result.added == []
    assert {rid for rid, _ in result.refused} == {old.id, ancient_vouch.id}
    assert all(isinstance(e, ExpiredError) for _, e in result.refused)
    assert store.count() == 0


# --- quotas --------------------------------------------------------------------------


def test_an_author_over_quota_loses_its_oldest_records_and_they_stay_out(store):
    store.set_quota_policy(QuotaPolicy(owner=pub(ALICE), quotas=Quotas(author_records=5)))
    mallory = keys(1)[0]
    records = [offer(mallory, f"Junk {i}", seq=i + 1, ts=NOW + i) for i in range(8)]
    for r in records:
        store.add_records([r], now_ms=NOW + 10)
    assert stored_by(store, mallory) == 5
    kept = {row[0] for row in store._conn.execute("SELECT id FROM records")}
    assert kept == {r.id for r in records[3:]}  # the oldest went first
    again = store.add_records(records[:3], now_ms=NOW + 10)  # a peer offers them again: refused
    assert again.added == [] and len(again.refused) == 3
    usage_agrees(store)


def test_own_and_trusted_authors_are_never_evicted(store):
    policy = QuotaPolicy(owner=pub(ALICE), scores={pub(BOB): 0.4}, quotas=Quotas(author_records=3))
    store.set_quota_policy(policy)
    for key in (ALICE, BOB):
        store.add_records([offer(key, f"Thing {i}", seq=i + 1, ts=NOW + i) for i in range(6)], now_ms=NOW)
        assert stored_by(store, key) == 6


def test_a_full_swarm_evicts_the_distrusted_then_strangers_oldest_first(store):
    dave = keys(1)[0]  # distrusted
    strangers = keys(10)
    policy = QuotaPolicy(
        owner=pub(ALICE), scores={pub(BOB): 0.5, pub(dave): -0.5}, quotas=Quotas(swarm_records=20)
    )
    store.set_quota_policy(policy)
    own = [offer(ALICE, f"Mine {i}", seq=i + 1, ts=NOW - 1000 + i) for i in range(5)]
    friend = [offer(BOB, f"Bob's {i}", seq=i + 1, ts=NOW - 1000 + i) for i in range(5)]
    distrusted = [offer(dave, f"Dave's {i}", seq=i + 1, ts=NOW + 500 + i) for i in range(3)]
    store.add_records(own + friend + distrusted, now_ms=NOW + 1000)
    flood = [
        offer(k, f"Junk {j}", seq=j + 1, ts=NOW + 10 * i + j)
        for i, k in enumerate(strangers)
        for j in range(3)
    ]
    for start in range(0, len(flood), 7):
        result = store.add_records(flood[start : start + 7], now_ms=NOW + 1000)
        assert all(isinstance(e, OverQuota) for _, e in result.refused)
    assert store.count(swarm=SWARM) == 20
    for key, n in ((ALICE, 5), (BOB, 5), (dave, 0)):
        assert stored_by(store, key) == n
    kept = {row[0] for row in store._conn.execute("SELECT id FROM records")}
    strangers_kept = [r for r in flood if r.id in kept]
    assert len(strangers_kept) == 10
    assert strangers_kept == sorted(flood, key=lambda r: r.ts)[-10:]  # the newest strangers stay
    usage_agrees(store)
    assert store.integrity_problems() == []


def test_eviction_takes_an_item_with_its_updates_and_an_attest_key_whole(store):
    mallory = keys(1)[0]
    item = offer(mallory, "Bike", seq=1, ts=NOW)
    store.add_records(
        [
            item,
            update(item, mallory, "Bike, red", seq=2, ts=NOW + 1),
            withdraw(item, mallory, seq=3, ts=NOW + 2),
            attest(BOB, mallory, seq=4, ts=NOW + 3),
            attest(BOB, mallory, seq=5, ts=NOW + 4, level=-200),
        ],
        now_ms=NOW + 10,
    )
    store.set_quota_policy(QuotaPolicy(owner=pub(ALICE), quotas=Quotas(swarm_records=3)))
    store.add_records([offer(ALICE, "Mine", ts=NOW + 5)], now_ms=NOW + 10)
    # Over by 3: the item goes with both its heads, then the attest key with both attests.
    assert store.count() == 1
    assert store.item(item.id) is None
    assert store.attestations(now_ms=NOW + 10) == []
    usage_agrees(store)
    assert store.integrity_problems() == []


def test_below_the_disk_floor_only_the_owners_records_are_stored(tmp_path):
    with Store.open(tmp_path / "store.db") as store:
        store.set_quota_policy(QuotaPolicy(owner=pub(ALICE), quotas=Quotas(disk_floor_bytes=1 << 62)))
        result = store.add_records([offer(ALICE, "Mine"), offer(BOB, "Theirs")], now_ms=NOW)
        assert result.added == [offer(ALICE, "Mine").id]
        ((_, error),) = result.refused
        assert isinstance(error, StorageFull) and "under its floor" in str(error)
        status = store.storage()
        assert status["storing_others"] is False and status["records"] == 1
        store.set_quota_policy(QuotaPolicy(owner=pub(ALICE)))
        assert store.add_records([offer(BOB, "Theirs")], now_ms=NOW).added
        assert store.storage()["storing_others"] is True


# --- pruning -------------------------------------------------------------------------


def test_two_thousand_expired_vouches_of_one_author_prune_in_under_a_second(store):
    subjects = [os.urandom(32) for _ in range(2000)]
    vouches = [
        new_record(
            AttestBody(subject=s, level=500, expires=NOW + 1000),
            swarm=SWARM,
            seq=i + 1,
            ts=NOW,
            signing_key=CAROL,
        )
        for i, s in enumerate(subjects)
    ]
    store.add_records(vouches, now_ms=NOW)
    started = time.perf_counter()
    assert store.prune_expired(NOW + 2000) == 2000
    took = time.perf_counter() - started
    assert took < 1.0, f"pruning took {took:.2f} s"
    assert store.count() == 0
    assert store.pruned_among(v.id for v in vouches) == {v.id for v in vouches}


def test_pruning_runs_in_bounded_steps(store, monkeypatch):
    monkeypatch.setattr(write, "PRUNE_BATCH", 7)
    steps = []
    real = write.prune_expired
    monkeypatch.setattr(write, "prune_expired", lambda conn, now: steps.append(1) or real(conn, now, 7))
    store.add_records([offer(ALICE, f"Old {i}", seq=i + 1, expires=NOW + 5) for i in range(30)], now_ms=NOW)
    assert store.prune_expired(NOW + 10) == 30
    assert len(steps) >= 5  # 30 items, 7 per step


def test_orphaned_withdraws_are_pruned_a_grace_period_after_they_were_made(store):
    ghost = offer(BOB, "Never sent")
    orphan = withdraw(ghost, BOB, ts=NOW)
    store.add_records([orphan], now_ms=NOW)
    assert store.prune_expired(NOW + ORPHAN_GRACE_MS - 1) == 0
    assert store.prune_expired(NOW + ORPHAN_GRACE_MS) == 1


# --- the file ------------------------------------------------------------------------


def test_the_database_and_its_wal_are_the_owners_only(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "store.db"
        path.touch(mode=0o644)
        os.chmod(path, 0o644)  # as the first release left it
        with Store.open(path) as store:
            store.add_records([offer()], now_ms=NOW)
            for p in (path, tmp_path / "store.db-wal", tmp_path / "store.db-shm"):
                assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
        fresh = tmp_path / "fresh.db"
        Store.open(fresh).close()
        assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_damaged_store_stops_the_start_with_what_to_do(tmp_path):
    path = tmp_path / "store.db"
    with Store.open(path) as store:
        store.add_records([offer(ALICE, f"Thing {i}", seq=i + 1) for i in range(300)], now_ms=NOW)
    data = bytearray(path.read_bytes())
    page = 4096
    for at in range(3 * page, len(data) - page, page):  # trash every page but the first three
        data[at + 100 : at + 200] = os.urandom(100)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"is damaged .*: move it away") as caught:
        Store.open(path)
    assert "\n" not in str(caught.value)


def test_upgrading_a_version_1_store_fills_usage_attest_keys_and_lifetimes(tmp_path):
    path = tmp_path / "store.db"
    with Store.open(path) as store:
        store.add_records([offer(ALICE, "Drill"), attest(BOB, ALICE, seq=2)], now_ms=NOW)
    conn = sqlite3.connect(path)  # back to version 1, as the first release left it
    conn.executescript(
        "ALTER TABLE items DROP COLUMN price;"  # version 4's
        " DROP TABLE inbox; DROP TABLE local_state;"  # version 3's
        " DROP TRIGGER usage_remove; DROP TABLE usage; DROP TABLE attest_keys;"
        " UPDATE items SET expires = NULL; UPDATE attestations SET expires = NULL;"
        " UPDATE records SET expires = NULL; PRAGMA user_version = 1;"
    )
    conn.close()
    with Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION  # through version 2, then on to the current one
        assert store.item(offer(ALICE, "Drill").id).expires == NOW + lifetime.DEFAULT_MS["offer"]
        usage_agrees(store)
        assert store._conn.execute("SELECT count(*) FROM attest_keys").fetchone()[0] == 1
        assert store.integrity_problems() == []
        assert store.prune_expired(NOW + 3 * 365 * DAY) == 2
