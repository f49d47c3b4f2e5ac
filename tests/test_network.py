"""Integration: real libp2p nodes on 127.0.0.1 gossip records across hops."""

from __future__ import annotations

import statistics

import pytest
import trio

from meshnode import records as rec
from meshnode.errors import NetworkError
from meshnode.swarm import Swarm
from tests.netutil import running_nodes, wait_for_mesh, wait_until

pytestmark = pytest.mark.timeout(90)


async def _ring(nodes, swarm):
    """Connect nodes in a ring: sparse, diameter n/2."""
    n = len(nodes)
    for i in range(n):
        await nodes[i].connect(nodes[(i + 1) % n].addrs(swarm)[0], swarm=swarm if swarm.private else None)


async def test_a_record_reaches_all_8_nodes_across_hops(tmp_path):
    swarm = Swarm.create("Elm Street")
    async with running_nodes(tmp_path, 8, min_peers=0) as nodes:
        for node in nodes:
            await node.join_swarm(swarm)
        await _ring(nodes, swarm)
        # Sparse: nobody is connected to everyone.
        assert all(len(node.connected_peers()) <= 3 for node in nodes)
        await wait_for_mesh(nodes, swarm)
        latencies = []
        for i in range(10):
            origin = nodes[(i * 3) % 8]
            record = await origin.publish(rec.OfferBody(title=f"Drill {i}", kind="lend"), swarm)
            took = await wait_until(lambda r=record: all(n.store.has(r.id) for n in nodes), timeout=10)
            latencies.append(took)
        assert all(n.store.count() == 10 for n in nodes)
        med, worst = statistics.median(latencies) * 1000, max(latencies) * 1000
        print(f"8 nodes, ring: median {med:.0f} ms, max {worst:.0f} ms")


async def test_invite_joins_the_swarm_and_connects_to_the_inviter(tmp_path):
    async with running_nodes(tmp_path, 2) as (a, b):
        swarm = Swarm.create("Oak Lane")
        await a.join_swarm(swarm)
        joined = await b.join_invite(await a.invite(swarm))
        assert joined == swarm
        assert a.peer_id in b.connected_peers()
        await wait_for_mesh([a, b], swarm)
        record = await b.publish(rec.WantBody(title="Ladder", kind="lend"), swarm)
        await wait_until(lambda: a.store.has(record.id), timeout=10)


async def test_private_swarm_admits_key_holders_and_refuses_others(tmp_path):
    async with running_nodes(tmp_path, 4, dial_timeout=3.0) as (a, b, c, d):
        swarm = Swarm.create("Quiet Close", private=True)
        await a.join_swarm(swarm)
        code = await a.invite(swarm)
        # B has the invite (and so the key): admitted.
        await b.join_invite(code)
        assert a.peer_id in b.connected_peers()
        await wait_for_mesh([a, b], swarm)
        record = await a.publish(rec.OfferBody(title="Secret drill", kind="lend"), swarm)
        await wait_until(lambda: b.store.has(record.id), timeout=10)
        # C knows the address but has no key: its open host cannot connect.
        with pytest.raises(NetworkError):
            await c.connect(a.addrs(swarm)[0])
        # D has the swarm id but a wrong key: the handshake cannot complete.
        forged = Swarm(name=swarm.name, id=swarm.id, key=bytes(32))
        await d.join_swarm(forged)
        with pytest.raises(NetworkError):
            await d.connect(a.addrs(swarm)[0], swarm=forged)
        assert c.peer_id not in a.connected_peers()
        assert d.peer_id not in a.connected_peers()
        # Once a later record has reached B, the first had every chance to leak.
        later = await a.publish(rec.OfferBody(title="Secret ladder", kind="lend"), swarm)
        await wait_until(lambda: b.store.has(later.id), timeout=10)
        for outsider in (c, d):
            assert not outsider.store.has(record.id) and not outsider.store.has(later.id)


async def test_a_dropped_peer_is_redialled_when_it_comes_back(tmp_path):
    from meshnode.identity import Identity
    from meshnode.node import Node, NodeConfig
    from meshnode.store import Store

    swarm = Swarm.create("Elm Street")
    async with running_nodes(tmp_path, 1, min_peers=0, reconnect_interval=0.3) as (a,):
        await a.join_swarm(swarm)
        ident = Identity.generate()
        store = Store.open(tmp_path / "b.db")
        try:
            port = None
            for attempt in range(2):  # run B, stop it, run it again on the same port
                listen = f"/ip4/127.0.0.1/tcp/{port or 0}"
                b = Node(ident, store, NodeConfig(listen=[listen], min_peers=0))
                async with trio.open_nursery() as nursery:
                    await nursery.start(b.run)
                    await b.join_swarm(swarm)
                    if attempt == 0:
                        port = b.addrs()[0].split("/")[4]
                        await a.connect(b.addrs()[0])
                        assert b.peer_id in a.connected_peers()
                    else:
                        # A notices B is back and redials it by itself (clearing
                        # libp2p's 60 s negative dial cache), with back-off.
                        took = await wait_until(lambda b=b: b.peer_id in a.connected_peers(), timeout=15)
                        print(f"redialled after {took:.1f} s")
                        await wait_for_mesh([a, b], swarm)
                        record = await a.publish(rec.OfferBody(title="Back again", kind="give"), swarm)
                        await wait_until(lambda r=record: store.has(r.id), timeout=10)
                    nursery.cancel_scope.cancel()
                if attempt == 0:
                    await wait_until(lambda b=b: b.peer_id not in a.connected_peers(), timeout=10)

                    def failed_redials(b=b) -> int:
                        entry = a.book.entry(swarm.id, b.peer_id)
                        return entry.failures if entry is not None else 0

                    await wait_until(lambda: failed_redials() >= 2, timeout=15)  # A tries while B is down
        finally:
            store.close()
