"""The ingest writer: a failing store or listener is reported and the writer keeps going."""

from __future__ import annotations

import logging

import nacl.signing
import trio

from meshnode import records as rec
from meshnode.errors import StoreError
from meshnode.ingest import Ingest
from meshnode.store import Store
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
            assert await ingest.judge(first.encoded, "peer-1", SWARM) is Verdict.ACCEPT
            await wait_until(lambda: ingest.stats.last_error != "", timeout=10)
        assert ingest.stats.last_error == "store failed: disk I/O error"
        assert not store.store.has(first.id)
        # The failed record is not stuck as 'pending': a later copy is taken.
        assert await ingest.judge(first.encoded, "peer-2", SWARM) is Verdict.ACCEPT
        assert await ingest.judge(second.encoded, "peer-2", SWARM) is Verdict.ACCEPT
        await wait_until(lambda: store.store.has(first.id) and store.store.has(second.id), timeout=10)

    await run_ingest(store, body)
    assert any("failed: disk I/O error" in r.getMessage() for r in caplog.records)


async def test_a_bug_in_the_store_is_logged_with_its_traceback_and_the_writer_goes_on(caplog):
    store = FailingStore(TypeError("unexpected argument"))
    first, second = offer("Drill"), offer("Ladder")

    async def body(ingest: Ingest) -> None:
        with caplog.at_level(logging.ERROR, logger="meshnode.ingest"):
            assert await ingest.judge(first.encoded, "peer-1", SWARM) is Verdict.ACCEPT
            await wait_until(lambda: ingest.stats.last_error != "", timeout=10)
        assert "TypeError" in ingest.stats.last_error
        assert await ingest.judge(second.encoded, "peer-1", SWARM) is Verdict.ACCEPT
        await wait_until(lambda: store.store.has(second.id), timeout=10)

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
    try:
        filler, record = offer("Filler"), offer("Drill")
        assert await ingest.judge(filler.encoded, "peer-1", SWARM) is Verdict.ACCEPT  # fills the queue
        with trio.move_on_after(0.1) as scope:  # the writer is not running: the queue stays full
            await ingest.judge(record.encoded, "peer-2", SWARM)
        assert scope.cancelled_caught
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(ingest.run)
                assert await ingest.judge(record.encoded, "peer-3", SWARM) is Verdict.ACCEPT
                await wait_until(lambda: store.has(record.id) and store.has(filler.id), timeout=10)
                nursery.cancel_scope.cancel()
    finally:
        ingest.close()
