"""Clock skew between honest nodes bans nobody.

A's clock runs 11 minutes ahead of B's (beyond the 10 minutes a record may
be dated in the future). What A publishes is, by B's clock, from the future:
B ignores it, through gossip and through sync, and counts it, but never
blames A. Once B's clock has caught up, B takes the same records by sync.
"""

from __future__ import annotations

import time

import pytest
import trio

from meshnode import records as rec
from meshnode.identity import Identity
from meshnode.node import Node, NodeConfig
from meshnode.store import Store
from meshnode.swarm import Swarm
from tests.netutil import wait_for_mesh, wait_until

pytestmark = pytest.mark.timeout(90)

AHEAD_MS = rec.MAX_CLOCK_SKEW_MS + 60_000


async def test_records_from_a_fast_clock_are_ignored_never_blamed_and_taken_later(tmp_path):
    swarm = Swarm.create("Elm Street")
    b_offset = [0]

    def a_clock() -> int:
        return int(time.time() * 1000) + AHEAD_MS

    def b_clock() -> int:
        return int(time.time() * 1000) + b_offset[0]

    config = {"listen": ["/ip4/127.0.0.1/tcp/0"], "min_peers": 0, "sync_interval": 0}
    stores = [Store.open(tmp_path / "a.db"), Store.open(tmp_path / "b.db")]
    a = Node(Identity.generate(), stores[0], NodeConfig(**config), clock=a_clock)  # type: ignore[arg-type]
    b = Node(Identity.generate(), stores[1], NodeConfig(**config), clock=b_clock)  # type: ignore[arg-type]
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            for node in (a, b):
                await node.join_swarm(swarm)
            await b.connect(a.addrs()[0])
            await wait_for_mesh([a, b], swarm, timeout=20)

            for i in range(30):  # gossip, paced by what B saw (a burst can overflow a send queue: pitfall 7)
                before = b.ingest.stats.too_new
                await a.publish(rec.OfferBody(title=f"Early bird {i}", kind="give"), swarm)
                with trio.move_on_after(2):
                    await wait_until(lambda before=before: b.ingest.stats.too_new > before, timeout=3)
            # Gossip is best effort (the first message may beat the mesh): most arrive.
            await wait_until(lambda: b.ingest.stats.too_new >= 25, timeout=20)
            report = await b.sync_with(a.peer_id, swarm)  # sync: the same records, refused again
            assert report.outcome == "ok", report
            assert report.records_received == 30 and report.records_refused == 30
            assert b.store.count() == 0
            assert a.peer_id in b.connected_peers()
            assert b.gossip_stats()["bans"] == 0
            assert b.ingest.stats.invalid == 0

            b_offset[0] = AHEAD_MS  # B's clock catches up: the same records are welcome now
            report = await b.sync_with(a.peer_id, swarm)
            assert report.outcome == "ok", report
            await wait_until(lambda: b.store.count() == 30, timeout=20)
            assert a.peer_id in b.connected_peers() and b.gossip_stats()["bans"] == 0
            nursery.cancel_scope.cancel()
    finally:
        for store in stores:
            store.close()
