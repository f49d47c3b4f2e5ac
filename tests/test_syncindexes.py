"""SyncIndexes: built from the store, kept current, missing nothing stored while it is built."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import trio

from meshnode.syncindexes import SyncIndexes

SWARM = b"s" * 32


@dataclass(frozen=True)
class FakeRecord:
    swarm: bytes
    ts: int
    id: bytes


class FakeStore:
    """ids_in_range over a list; can hold the scan until the test lets it go."""

    def __init__(self, items: list[tuple[int, bytes]]) -> None:
        self.items = list(items)
        self.scanning = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def ids_in_range(self, swarm, lower, upper, limit):
        assert swarm == SWARM and lower is None and upper is None
        snapshot = sorted(self.items)[:limit]
        self.scanning.set()
        self.release.wait(10)
        return snapshot


def rid(n: int) -> bytes:
    return n.to_bytes(32, "big")


async def test_build_scans_the_store_once_and_on_stored_keeps_it_current():
    store = FakeStore([(1, rid(1)), (2, rid(2))])
    indexes = SyncIndexes(store)
    assert indexes.get(SWARM) is None
    indexes.on_stored(FakeRecord(SWARM, 3, rid(3)))  # before the build: nothing to update
    await indexes.build(SWARM)
    index = indexes.get(SWARM)
    assert index is not None and len(index) == 2
    indexes.on_stored(FakeRecord(SWARM, 4, rid(4)))
    indexes.on_stored(FakeRecord(b"o" * 32, 5, rid(5)))  # another swarm's record
    assert len(index) == 3
    await indexes.build(SWARM)  # already built: the same index stays
    assert indexes.get(SWARM) is index
    indexes.drop(SWARM)
    assert indexes.get(SWARM) is None


async def test_a_record_stored_during_the_scan_is_in_the_index():
    store = FakeStore([(1, rid(1))])
    store.release.clear()
    indexes = SyncIndexes(store)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(indexes.build, SWARM)
            await trio.to_thread.run_sync(store.scanning.wait)
            # Committed after the scan's snapshot, before the index exists.
            indexes.on_stored(FakeRecord(SWARM, 7, rid(7)))
            store.release.set()
    index = indexes.get(SWARM)
    assert index is not None
    assert len(index) == 2


async def test_rebuild_keeps_the_old_index_in_use_until_the_new_one_is_ready():
    store = FakeStore([(1, rid(1))])
    indexes = SyncIndexes(store)
    await indexes.build(SWARM)
    old = indexes.get(SWARM)
    store.items = [(9, rid(9)), (10, rid(10))]
    store.release.clear()
    store.scanning.clear()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: indexes.build(SWARM, rebuild=True))
            await trio.to_thread.run_sync(store.scanning.wait)
            assert indexes.get(SWARM) is old
            store.release.set()
    new = indexes.get(SWARM)
    assert new is not old and new is not None and len(new) == 2
