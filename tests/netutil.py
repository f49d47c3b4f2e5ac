"""Helpers for integration tests that run several real nodes on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from meshnode.identity import Identity
from meshnode.node import Node, NodeConfig
from meshnode.protocols.host import build_host, close_connections, parse_listen
from meshnode.store import Store


@contextlib.asynccontextmanager
async def running_nodes(tmp_path: Path, n: int, **config: object) -> AsyncIterator[list[Node]]:
    """Start ``n`` nodes (each with its own store) and stop them all afterwards."""
    stores = [Store.open(tmp_path / f"node{i}.db") for i in range(n)]
    nodes = [
        Node(Identity.generate(), store, NodeConfig(listen=["/ip4/127.0.0.1/tcp/0"], **config))  # type: ignore[arg-type]
        for store in stores
    ]
    try:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run)
            yield nodes
            nursery.cancel_scope.cancel()
    finally:
        for store in stores:
            store.close()


@contextlib.asynccontextmanager
async def serving(host, *, listen: bool = True) -> AsyncIterator[object]:
    """Run a bare libp2p ``host`` (listening on 127.0.0.1 port 0 unless ``listen`` is False).

    It is closed *inside* ``run()``, connections first: a host closed only
    after ``run()`` has exited leaves its connections' sockets open, and the
    remote side never sees them end.
    """
    try:
        async with host.run(parse_listen(["/ip4/127.0.0.1/tcp/0"]) if listen else []):
            try:
                yield host
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await close_connections(host)
                    await host.close()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await host.close()


@contextlib.asynccontextmanager
async def running_hosts(n: int, **build: object) -> AsyncIterator[list]:
    """``n`` meshnode hosts (fresh identities) on 127.0.0.1, all closed afterwards."""
    made = [build_host(Identity.generate(), min_peers=0, **build) for _ in range(n)]  # type: ignore[arg-type]
    async with contextlib.AsyncExitStack() as stack:
        for host in made:
            await stack.enter_async_context(serving(host))
        yield made


async def wait_until(predicate, *, timeout: float, interval: float = 0.02) -> float:
    """Poll ``predicate`` until true; return the seconds it took, or fail after ``timeout``."""
    start = trio.current_time()
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(interval)
    return trio.current_time() - start


async def wait_for_mesh(nodes: list[Node], swarm, *, timeout: float = 10.0) -> None:
    """Wait until every node sees at least one gossip peer on ``swarm``'s topic."""

    def ready() -> bool:
        for node in nodes:
            net = node.network(swarm)
            if not net.gossip.mesh_peers(swarm):
                return False
        return True

    await wait_until(ready, timeout=timeout)
