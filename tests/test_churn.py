"""Churn: nodes leave and come back while the others publish; afterwards everyone holds the same set."""

from __future__ import annotations

import random

import pytest
import trio

from meshnode import records as rec
from meshnode.identity import Identity
from meshnode.node import Node, NodeConfig
from meshnode.store import Store
from meshnode.swarm import Swarm
from tests.netutil import wait_until

pytestmark = pytest.mark.timeout(120)


async def _run(
    node: Node, scope: trio.CancelScope, stopped: trio.Event, *, task_status: trio.TaskStatus[None]
) -> None:
    try:
        with scope:
            await node.run(task_status=task_status)
    finally:
        stopped.set()


def ids_of(node: Node, swarm: Swarm) -> set[bytes]:
    return {i for _, i in node.store.ids_in_range(swarm.id, None, None, 10**9)}


async def test_nodes_that_leave_and_return_converge(tmp_path):
    swarm = Swarm.create("Churn Lane")
    n = 5
    rng = random.Random(5)
    identities = [Identity.generate() for _ in range(n)]
    stores = [Store.open(tmp_path / f"n{i}.db") for i in range(n)]
    nodes: list[Node | None] = [None] * n
    scopes: list[trio.CancelScope | None] = [None] * n
    stopped: list[trio.Event] = [trio.Event() for _ in range(n)]
    published = 0
    try:
        async with trio.open_nursery() as nursery:
            ports = ["0"] * n

            async def start(i: int) -> Node:
                # A node comes back on its port (as a daemon does, from its config),
                # so the peers that knew it can redial it.
                node = Node(
                    identities[i],
                    stores[i],
                    NodeConfig(
                        listen=[f"/ip4/127.0.0.1/tcp/{ports[i]}"],
                        min_peers=0,
                        sync_interval=0.5,
                        reconnect_interval=0.5,
                    ),
                )
                scopes[i] = trio.CancelScope()
                stopped[i] = trio.Event()
                await nursery.start(_run, node, scopes[i], stopped[i])
                await node.join_swarm(swarm)
                ports[i] = node.addrs()[0].split("/")[4]
                nodes[i] = node
                return node

            for i in range(n):
                await start(i)
            for i in range(n):  # a ring
                await nodes[i].connect(nodes[(i + 1) % n].addrs()[0])

            for round_ in range(4):
                # One or two nodes leave.
                gone = rng.sample(range(n), k=1 + round_ % 2)
                for i in gone:
                    scopes[i].cancel()
                    nodes[i] = None
                for i in gone:  # stopped for good (its port free again) before it comes back on it
                    await stopped[i].wait()
                live = [node for node in nodes if node is not None]
                # The others keep publishing while they are away.
                for node in live:
                    for k in range(5):
                        await node.publish(
                            rec.OfferBody(title=f"round {round_} item {k}", kind="give"), swarm
                        )
                        published += 1
                # They come back (same key, same store, a new port) and dial one live peer.
                for i in gone:
                    back = await start(i)
                    await back.connect(rng.choice(live).addrs()[0])

            def converged() -> bool:
                sets = [ids_of(node, swarm) for node in nodes]
                return all(len(s) == published for s in sets) and all(s == sets[0] for s in sets)

            try:
                took = await wait_until(converged, timeout=40, interval=0.2)
            except trio.TooSlowError:
                for i, node in enumerate(nodes):
                    print(i, len(ids_of(node, swarm)), node.connected_peers(), node.sync_stats())
                raise
            print(f"{published} records, 4 rounds of churn: all 5 equal {took:.2f} s after the last return")
            # Each index follows its store once the writer has reported the batch
            # (on_stored runs after the transaction commits, so it may lag the store
            # by a moment): wait for that, it must come.
            await wait_until(
                lambda: all(len(node.sync_index(swarm.id)) == published for node in nodes), timeout=10
            )
            nursery.cancel_scope.cancel()
    finally:
        for store in stores:
            store.close()
