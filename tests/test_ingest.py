"""The ingest writer: a failing store or listener is reported and the writer keeps going."""

from __future__ import annotations

import logging

import nacl.signing
import trio

from meshnode import records as rec
from meshnode.errors import StoreError, ValidationError
from meshnode.ingest import Ingest, NewAuthorBudget
from meshnode.store import AddResult, QuotaPolicy, Quotas, Store
from meshnode.swarm import Swarm
from meshnode.verdicts import Verdict
from tests.netutil import wait_until

SWARM = Swarm.create("Elm Street")
NOW = 1_700_000_000_000


def offer(title: str, seq: int = 1) -> rec.Record:
    key = nacl.signing.SigningKey.generate()
    body = rec.OfferBody(title=title, kind="lend")
    return rec.new_record(body, swarm=SWARM.id, seq=seq, ts=NOW, signing_key=key)


class FailingStore:
    """A real in-memory store whose next ``add_records`` calls raise ``failures`` in turn."""

    def __init__(self, *failures: BaseException) -> None:
        self.store = Store.open(":memory:")
        self.failures = list(failures)

    def add_records(self, records, *, now_ms):
        if self.failures:
            raise self.failures.pop(0)
        return self.store.add_records(records, now_ms=now_ms)

    def open_reader(self):
        return self.store.open_reader()


async def run_ingest(store, body) -> None:
    ingest = Ingest(store, swarm_ids=lambda: {SWARM.id}, clock=lambda: NOW)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(ingest.run)
                await body(ingest)
                nursery.cancel_scope.cancel()
    finally:
        ingest.close()


async def test_a_store_failure_is_reported_and_the_writer_goes_on(caplog):
    store = FailingStore(StoreError("disk I/O error"))
    first, second = offer("Drill"), offer("Ladder")

    async def body(ingest: Ingest) -> None:
        with caplog.at_level(logging.ERROR, logger="meshnode.ingest"):
            # The write failed: not accepted, so not relayed (it was ACCEPT before the write).
            assert await ingest.judge(first.encoded, "peer-1", SWARM) is Verdict.IGNORE
        assert ingest.stats.last_error == "store failed: disk I/O error"
        assert ingest.stats.not_stored == 1
        assert not store.store.has(first.id)
        # The failed record is not stuck as 'pending': a later copy is taken.
        assert await ingest.judge(first.encoded, "peer-2", SWARM) is Verdict.ACCEPT
        assert await ingest.judge(second.encoded, "peer-2", SWARM) is Verdict.ACCEPT
        assert store.store.has(first.id) and store.store.has(second.id)

    await run_ingest(store, body)
    assert any("failed: disk I/O error" in r.getMessage() for r in caplog.records)


async def test_a_bug_in_the_store_is_logged_with_its_traceback_and_the_writer_goes_on(caplog):
    store = FailingStore(TypeError("unexpected argument"))
    first, second = offer("Drill"), offer("Ladder")

    async def body(ingest: Ingest) -> None:
        with caplog.at_level(logging.ERROR, logger="meshnode.ingest"):
            assert await ingest.judge(first.encoded, "peer-1", SWARM) is Verdict.IGNORE
        assert "TypeError" in ingest.stats.last_error
        assert await ingest.judge(second.encoded, "peer-1", SWARM) is Verdict.ACCEPT
        assert store.store.has(second.id)

    await run_ingest(store, body)
    bug = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], TypeError)]
    assert len(bug) == 1  # with its traceback, not a one-line 'store failed'


async def test_a_failing_listener_is_logged_and_the_others_still_hear(caplog):
    store = Store.open(":memory:")
    heard: list[bytes] = []

    def broken(record: rec.Record) -> None:
        raise KeyError("bug in a listener")

    async def body(ingest: Ingest) -> None:
        ingest.on_stored.extend([broken, lambda r: heard.append(r.id)])
        with caplog.at_level(logging.ERROR, logger="meshnode.ingest"):
            for title in ("Drill", "Ladder"):
                record = offer(title)
                assert await ingest.judge(record.encoded, "peer-1", SWARM) is Verdict.ACCEPT
                await wait_until(lambda r=record: r.id in heard, timeout=10)

    await run_ingest(store, body)
    failures = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], KeyError)]
    assert len(failures) == 2 and len(heard) == 2


def offer_at(title: str, ts: int) -> rec.Record:
    key = nacl.signing.SigningKey.generate()
    return rec.new_record(
        rec.OfferBody(title=title, kind="lend"), swarm=SWARM.id, seq=1, ts=ts, signing_key=key
    )


async def test_a_record_too_new_for_our_clock_is_ignored_and_blames_nobody():
    """An honest relay whose clock runs ahead forwards such records: IGNORE, never REJECT."""
    store = Store.open(":memory:")

    async def body(ingest: Ingest) -> None:
        ahead = offer_at("From a fast clock", NOW + rec.MAX_CLOCK_SKEW_MS + 60_000)
        assert await ingest.judge(ahead.encoded, "peer-1", SWARM) is Verdict.IGNORE
        assert ingest.stats.too_new == 1 and ingest.stats.invalid == 0
        assert not store.has(ahead.id)
        # Within the allowed skew it is taken; a malformed record is still REJECT.
        near = offer_at("From a slightly fast clock", NOW + rec.MAX_CLOCK_SKEW_MS - 60_000)
        assert await ingest.judge(near.encoded, "peer-1", SWARM) is Verdict.ACCEPT
        assert await ingest.judge(b"\xff garbage", "peer-1", SWARM) is Verdict.REJECT
        assert ingest.stats.invalid == 1

    await run_ingest(store, body)


async def test_our_store_failing_a_look_up_blames_nobody():
    class BrokenReader:
        def has(self, record_id: bytes) -> bool:
            raise StoreError("database disk image is malformed")

        def close(self) -> None:
            pass

    class Store_:
        def __init__(self) -> None:
            self.store = Store.open(":memory:")

        def add_records(self, records, *, now_ms):
            return self.store.add_records(records, now_ms=now_ms)

        def open_reader(self):
            return BrokenReader()

    async def body(ingest: Ingest) -> None:
        record = offer("Drill")
        assert await ingest.judge(record.encoded, "peer-1", SWARM) is Verdict.IGNORE
        assert ingest.stats.invalid == 0
        assert "malformed" in ingest.stats.last_error

    await run_ingest(Store_(), body)


async def test_a_validation_cancelled_on_a_full_queue_leaves_nothing_pending():
    """Later copies of the record must still be taken (they were ignored until restart)."""
    store = Store.open(":memory:")
    ingest = Ingest(store, swarm_ids=lambda: {SWARM.id}, clock=lambda: NOW, queue_size=1)
    verdicts: list[Verdict] = []
    try:
        filler, record = offer("Filler"), offer("Drill")
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:

                async def judge_filler() -> None:
                    verdicts.append(await ingest.judge(filler.encoded, "peer-1", SWARM))

                nursery.start_soon(judge_filler)  # fills the queue, waits for the writer
                await wait_until(lambda: ingest._send.statistics().current_buffer_used == 1, timeout=10)
                with trio.move_on_after(0.1) as scope:  # the writer is not running: the queue stays full
                    await ingest.judge(record.encoded, "peer-2", SWARM)
                assert scope.cancelled_caught
                await nursery.start(ingest.run)
                assert await ingest.judge(record.encoded, "peer-3", SWARM) is Verdict.ACCEPT
                assert store.has(record.id)
                await wait_until(lambda: verdicts == [Verdict.ACCEPT], timeout=10)
                assert store.has(filler.id)
                nursery.cancel_scope.cancel()
    finally:
        ingest.close()


# --- ACCEPT means stored -----------------------------------------------------------------


class RefusingStore(FailingStore):
    """A real store that refuses every record (as a full store, or its rules, would)."""

    def add_records(self, records, *, now_ms):
        result = AddResult()
        result.refused.extend((r.id, ValidationError("refused by the store's rules")) for r in records)
        return result


async def test_accept_comes_only_once_the_record_is_stored():
    store = Store.open(":memory:")
    written: list[int] = []

    class CountingStore(FailingStore):
        def add_records(self, records, *, now_ms):
            written.append(len(records))
            return super().add_records(records, now_ms=now_ms)

    counting = CountingStore()
    counting.store = store

    async def body(ingest: Ingest) -> None:
        records = [offer(f"Item {i}") for i in range(40)]
        verdicts: list[Verdict] = []

        async def one(r: rec.Record) -> None:
            verdict = await ingest.judge(r.encoded, "peer-1", SWARM)
            if verdict is Verdict.ACCEPT:
                assert store.has(r.id)  # stored before it may be relayed
            verdicts.append(verdict)

        async with trio.open_nursery() as nursery:
            for r in records:
                nursery.start_soon(one, r)
        assert verdicts == [Verdict.ACCEPT] * 40
        assert sum(written) == 40 and len(written) < 40  # still written in batches

    await run_ingest(counting, body)


async def test_a_record_the_store_refuses_is_not_relayed():
    async def body(ingest: Ingest) -> None:
        record = offer("Drill")
        assert await ingest.judge(record.encoded, "peer-1", SWARM) is Verdict.IGNORE
        assert ingest.stats.refused_by_store == 1 and ingest.stats.invalid == 0

    await run_ingest(RefusingStore(), body)


# --- authors never seen here --------------------------------------------------------------


def by(key: nacl.signing.SigningKey, title: str, seq: int = 1) -> rec.Record:
    return rec.new_record(
        rec.OfferBody(title=title, kind="lend"), swarm=SWARM.id, seq=seq, ts=NOW, signing_key=key
    )


def store_knowing_a_friend() -> tuple[Store, nacl.signing.SigningKey]:
    """An in-memory store that holds one record of ``friend``: a known author."""
    store = Store.open(":memory:")
    friend = nacl.signing.SigningKey.generate()
    store.add_records([by(friend, "Known")], now_ms=NOW)
    return store, friend


async def test_fresh_keys_on_gossip_get_a_small_budget_and_known_authors_are_not_crowded_out():
    store, friend = store_knowing_a_friend()
    ingest = Ingest(
        store, swarm_ids=lambda: {SWARM.id}, clock=lambda: NOW, new_author_rate=0.0, new_author_burst=3.0
    )
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(ingest.run)
                fresh = [offer(f"Flood {i}") for i in range(10)]
                verdicts = [await ingest.judge(r.encoded, "peer-1", SWARM) for r in fresh]
                assert verdicts == [Verdict.ACCEPT] * 3 + [Verdict.IGNORE] * 7
                assert ingest.stats.new_author_limited == 7 and ingest.stats.invalid == 0
                # the known author's records still go through
                for seq in range(2, 6):
                    assert await ingest.judge(by(friend, f"Known {seq}", seq).encoded, "peer-1", SWARM) is (
                        Verdict.ACCEPT
                    )
                nursery.cancel_scope.cancel()
    finally:
        ingest.close()


async def test_fresh_keys_in_gossip_cannot_fill_the_queue():
    """At most new_author_queue records of never-seen authors wait for the writer at once."""
    store, friend = store_knowing_a_friend()
    ingest = Ingest(store, swarm_ids=lambda: {SWARM.id}, clock=lambda: NOW, new_author_queue=2)
    verdicts: list[Verdict] = []
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:

                async def judge(r: rec.Record) -> None:
                    verdicts.append(await ingest.judge(r.encoded, "peer-1", SWARM))

                for i in range(2):  # the writer is not running: these two wait
                    nursery.start_soon(judge, offer(f"Waiting {i}"))
                await wait_until(lambda: ingest._send.statistics().current_buffer_used == 2, timeout=10)
                assert await ingest.judge(offer("Third").encoded, "peer-1", SWARM) is Verdict.IGNORE
                nursery.start_soon(judge, by(friend, "Known 2", 2))  # a known author still queues
                await wait_until(lambda: ingest._send.statistics().current_buffer_used == 3, timeout=10)
                await nursery.start(ingest.run)
                await wait_until(lambda: len(verdicts) == 3, timeout=10)
                assert verdicts == [Verdict.ACCEPT] * 3
                nursery.cancel_scope.cancel()
    finally:
        ingest.close()


async def test_ingest_many_refuses_authors_over_the_new_author_budget():
    store, friend = store_knowing_a_friend()
    keys = [nacl.signing.SigningKey.generate() for _ in range(5)]
    datas = [by(k, f"Fresh {i} {j}", j + 1).encoded for i, k in enumerate(keys) for j in range(3)]
    datas += [by(friend, f"Known {seq}", seq).encoded for seq in range(2, 12)]
    ingest = Ingest(store, swarm_ids=lambda: {SWARM.id}, clock=lambda: NOW, open_chunk=4)
    try:
        budget = NewAuthorBudget(2)
        report = await ingest.ingest_many(datas, new_authors=budget)
        assert report.stored == 2 * 3 + 10  # two fresh authors, all of the friend's
        assert report.refused == report.new_authors_refused == 3 * 3 and report.invalid == 0
        assert len(budget.admitted) == 2 and budget.refused == 9
        assert store.count() == 1 + 16
    finally:
        ingest.close()


async def test_ingest_many_stores_every_record_of_a_big_batch_and_reports_the_bad():
    store = Store.open(":memory:")
    good = [offer(f"Item {i}").encoded for i in range(1200)]
    ingest = Ingest(store, swarm_ids=lambda: {SWARM.id}, clock=lambda: NOW, open_chunk=100, batch_size=300)
    try:
        report = await ingest.ingest_many([*good, b"\xff garbage", good[0]])
        assert (report.stored, report.duplicates, report.invalid) == (1200, 1, 1)
        assert store.count() == 1200
    finally:
        ingest.close()


async def test_what_a_batch_evicts_is_told_to_the_listeners_on_every_path():
    """Quota evictions leave the store inside add_records: listeners (the view cache) must hear."""
    store = Store.open(":memory:")
    store.set_quota_policy(QuotaPolicy(quotas=Quotas(author_records=10)))
    key = nacl.signing.SigningKey.generate()
    records = [
        rec.new_record(
            rec.OfferBody(title=f"Thing {i}", kind="give"),
            swarm=SWARM.id,
            seq=i + 1,
            ts=NOW - 100 + i,
            signing_key=key,
        )
        for i in range(14)
    ]
    heard: list[list[bytes]] = []

    async def body(ingest: Ingest) -> None:
        ingest.on_evicted.append(heard.append)
        await ingest.ingest_many([r.encoded for r in records[:10]])  # at the quota: nothing goes
        assert heard == []
        assert await ingest.judge(records[10].encoded, "peer-1", SWARM) is Verdict.ACCEPT  # gossip
        await ingest.submit(records[11])  # our own API (not protected here: the policy names no owner)
        await ingest.ingest_many([records[12].encoded])  # sync
        assert [len(ids) for ids in heard] == [1, 1, 1]
        assert {i for ids in heard for i in ids} == {r.id for r in records[:3]}  # the oldest went
        assert store.count() == 10

    await run_ingest(store, body)
