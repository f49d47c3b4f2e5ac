"""Store.items(swarms=...): only the joined swarms' items, filtered inside the query (before the limit)."""

from __future__ import annotations

from tests import test_store
from tests.test_store import HOUR, NOW, OTHER_SWARM, SWARM, offer

store = test_store.store  # fixture: an empty store


def test_only_the_joined_swarms_items_and_the_limit_still_holds(store):
    mine = [offer(title=f"Kept {i}", seq=i, ts=NOW - HOUR) for i in range(1, 4)]
    left = [offer(title=f"Left {i}", seq=10 + i, swarm=OTHER_SWARM) for i in range(1, 20)]  # newer
    store.add_records([*mine, *left], now_ms=NOW)
    page = store.items(swarms={SWARM}, now_ms=NOW, limit=3)
    assert sorted(i.title for i in page) == ["Kept 1", "Kept 2", "Kept 3"]
    assert all(i.swarm == SWARM for i in store.items(swarms=[SWARM], query="kept", now_ms=NOW))
    assert store.items(swarms=set(), now_ms=NOW) == []  # in no swarm: nothing shows
    assert len(store.items(swarms={SWARM, OTHER_SWARM}, now_ms=NOW)) == 22
    assert len(store.items(now_ms=NOW)) == 22  # no filter: every swarm, as before
