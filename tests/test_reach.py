"""Staying reachable on 127.0.0.1: own kept ports, the address book, redial after restart, peer exchange.

Real nodes in one trio run. Namespace tests of the same behaviour across NAT
routers are in test_homes.py.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from meshnode import records as rec
from meshnode.errors import NetworkError, PortInUse
from meshnode.identity import Identity
from meshnode.node import Node, NodeConfig
from meshnode.store import Store
from meshnode.swarm import Swarm
from tests.netutil import serving, wait_until

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


class Member:
    """One node that can be stopped and started again on the same home (key, store, network.cbor)."""

    def __init__(self, tmp: Path, name: str, **config: object) -> None:
        self.identity = Identity.generate()
        self.dir = tmp / name
        self.dir.mkdir()
        self.config = dict(config)
        self.node: Node | None = None
        self._scope: trio.CancelScope | None = None
        self._done: trio.Event | None = None

    def make(self) -> Node:
        store = Store.open(self.dir / "db")
        cfg = {"listen": [LOOPBACK], "min_peers": 0, "reconnect_interval": 0.3, "state_save_interval": 0.5}
        cfg.update(self.config)
        node = Node(self.identity, store, NodeConfig(state_path=self.dir / "network.cbor", **cfg))  # type: ignore[arg-type]
        node._test_store = store  # type: ignore[attr-defined]
        return node

    async def start(self, nursery: trio.Nursery, swarms: list[Swarm] = ()) -> Node:
        node = self.make()
        scope = trio.CancelScope()
        done = trio.Event()

        async def run(task_status: trio.TaskStatus[None]) -> None:
            try:
                with scope:
                    await node.run(task_status=task_status)
            finally:
                node._test_store.close()  # type: ignore[attr-defined]
                done.set()

        await nursery.start(run)
        for s in swarms:
            await node.join_swarm(s)
        self.node, self._scope, self._done = node, scope, done
        return node

    async def stop(self) -> None:
        assert self._scope is not None and self._done is not None
        self._scope.cancel()
        await self._done.wait()
        self.node = None


@contextlib.asynccontextmanager
async def nursery_for_test() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- ports


@pytest.mark.timeout(60)
async def test_port_is_kept_across_restarts_and_private_swarms_get_their_own(tmp_path: Path) -> None:
    m = Member(tmp_path, "a")
    private = Swarm.create("Hidden", private=True)
    async with nursery_for_test() as nursery:
        node = await m.start(nursery, [private, Swarm.create("Open")])
        open_port, private_port = node.port(), node.port(private)
        assert open_port and private_port and open_port != private_port
        assert node.addrs()[0].split("/")[4] == str(open_port)
        assert node.addrs(private)[0].split("/")[4] == str(private_port)
        await m.stop()
        node = await m.start(nursery)
        await node.join_swarm(private)
        assert (node.port(), node.port(private)) == (open_port, private_port)


@pytest.mark.timeout(60)
async def test_a_busy_configured_port_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as other:  # someone else holds the port (with SO_REUSEPORT, like libp2p)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        m = Member(tmp_path, "a", listen=[f"/ip4/127.0.0.1/tcp/{port}"])
        with pytest.raises(BaseExceptionGroup) as info, trio.fail_after(30):
            async with nursery_for_test() as nursery:
                await m.start(nursery)
        leaves = [e for e in _leaves(info.value) if isinstance(e, PortInUse)]
        assert leaves and f"TCP port {port}" in str(leaves[0])


@pytest.mark.timeout(60)
async def test_a_kept_port_taken_meanwhile_moves_to_a_free_one(tmp_path: Path) -> None:
    m = Member(tmp_path, "a")
    async with nursery_for_test() as nursery:
        node = await m.start(nursery)
        port = node.port()
        await m.stop()
        with socket.socket() as other:
            other.bind(("127.0.0.1", port))
            other.listen(1)
            node = await m.start(nursery)
            assert node.port() not in (None, port)


def _leaves(exc: BaseException):
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            yield from _leaves(e)
    else:
        yield exc


# --------------------------------------------------------------------------- address book


@pytest.mark.timeout(90)
async def test_a_restarted_node_rejoins_and_catches_up_with_no_command(tmp_path: Path) -> None:
    swarm = Swarm.create("Elm Street")
    a, b = Member(tmp_path, "a"), Member(tmp_path, "b")
    async with nursery_for_test() as nursery:
        na = await a.start(nursery, [swarm])
        nb = await b.start(nursery)
        await nb.join_invite(await na.invite(swarm))
        await wait_until(lambda: na.swarm_peers(swarm) == [nb.peer_id], timeout=15)
        await wait_until(lambda: nb.book.entry(swarm.id, na.peer_id) is not None, timeout=5)

        # B goes away; A publishes meanwhile; B comes back and finds A by itself.
        await b.stop()
        await wait_until(lambda: na.connected_peers() == [], timeout=10)
        missed = await na.publish(rec.OfferBody(title="Published while B was away", kind="give"), swarm)
        nb = await b.start(nursery, [swarm])
        took = await wait_until(lambda: na.peer_id in nb.connected_peers(), timeout=20)
        print(f"\nB redialled A {took:.2f} s after its restart")
        await wait_until(lambda: nb.store.has(missed.id), timeout=20)

        # Now A restarts: it redials B from its own book (B is in it as a member).
        await a.stop()
        na = await a.start(nursery, [swarm])
        took = await wait_until(lambda: nb.peer_id in na.connected_peers(), timeout=20)
        print(f"A redialled B {took:.2f} s after its restart")


@pytest.mark.timeout(120)
async def test_members_who_joined_through_one_inviter_find_each_other(tmp_path: Path) -> None:
    """Peer exchange: B, C, D join through A only; they connect to each other and survive A leaving."""
    swarm = Swarm.create("Elm Street", private=True)
    members = [Member(tmp_path, name) for name in "abcd"]
    async with nursery_for_test() as nursery:
        na = await members[0].start(nursery, [swarm])
        others = []
        for m in members[1:]:
            n = await m.start(nursery)
            await n.join_invite(await na.invite(swarm))
            others.append(n)
        ids = {n.peer_id for n in others}

        def everyone_meets_everyone() -> bool:
            return all(ids - {n.peer_id} <= set(n.swarm_peers(swarm)) for n in others)

        took = await wait_until(everyone_meets_everyone, timeout=60)
        print(f"\n3 members who only knew the inviter are all connected {took:.2f} s later")
        await members[0].stop()
        nb, nc = others[0], others[1]
        await wait_until(lambda: nc.peer_id in nb.network(swarm).gossip.mesh_peers(swarm), timeout=20)
        record = await nb.publish(rec.OfferBody(title="After the inviter left", kind="lend"), swarm)
        await wait_until(lambda: nc.store.has(record.id) and others[2].store.has(record.id), timeout=20)


@pytest.mark.timeout(60)
async def test_an_unreachable_inviter_is_kept_and_redialled(tmp_path: Path) -> None:
    swarm = Swarm.create("Elm Street")
    a, b = Member(tmp_path, "a"), Member(tmp_path, "b")
    async with nursery_for_test() as nursery:
        na = await a.start(nursery, [swarm])
        code = await na.invite(swarm)
        await a.stop()
        nb = await b.start(nursery)
        with pytest.raises(NetworkError, match="will keep trying"):
            await nb.join_invite(code)
        assert nb.book.entry(swarm.id, na.peer_id) is not None
        na = await a.start(nursery, [swarm])  # the inviter comes back on its kept port
        await wait_until(lambda: na.peer_id in nb.connected_peers(), timeout=30)


async def test_peer_exchange_tells_strangers_nothing(tmp_path: Path) -> None:
    """A peer on the open host that is not in the swarm gets no hints about it."""
    swarm = Swarm.create("Elm Street")
    a, b, c = Member(tmp_path, "a"), Member(tmp_path, "b"), Member(tmp_path, "c")
    async with nursery_for_test() as nursery:
        na = await a.start(nursery, [swarm])
        nb = await b.start(nursery)
        await nb.join_invite(await na.invite(swarm))
        await wait_until(lambda: na.swarm_peers(swarm) == [nb.peer_id], timeout=15)
        await wait_until(lambda: bool(na.book.shareable(swarm.id, na.clock())), timeout=10)
        stranger = await c.start(nursery)
        await stranger.connect(na.addrs()[0])
        px = stranger.network().px
        assert px is not None
        from libp2p.peer.id import ID

        with trio.fail_after(10):
            hints = await px.ask(ID.from_base58(na.peer_id), [swarm.id])
        assert hints == []
        assert na.px_stats()["refused"] >= 1
        member_px = nb.network().px
        assert member_px is not None
        with trio.fail_after(10):
            assert await member_px.ask(ID.from_base58(na.peer_id), [swarm.id]) == []  # only B itself is known


@pytest.mark.timeout(90)
async def test_idle_strangers_cannot_cut_a_node_off_its_swarm(tmp_path: Path) -> None:
    """Fresh keys fill every inbound slot and sit idle: members stay, the node still dials, strangers go."""
    from meshnode.protocols.host import build_host, dial, peer_info_of

    swarm = Swarm.create("Elm Street")
    a = Member(tmp_path, "a", max_connections=8, conn_grace=2.0)
    b, c, d = Member(tmp_path, "b"), Member(tmp_path, "c"), Member(tmp_path, "d")
    async with nursery_for_test() as nursery:
        na = await a.start(nursery, [swarm])
        nb = await b.start(nursery)
        await nb.join_invite(await na.invite(swarm))
        await wait_until(lambda: na.swarm_peers(swarm) == [nb.peer_id], timeout=15)

        strangers = [build_host(Identity.generate(), min_peers=0) for _ in range(10)]
        held = 0
        async with trio.open_nursery() as idle:
            for host in strangers:
                await idle.start(_sit_idle, host)
                try:
                    await dial(host, peer_info_of(na.addrs()[0]), timeout=5)
                    held += 1
                except NetworkError:
                    pass
            stats = na.network_status()[0]["connections"]
            print(f"\n{held} of 10 idle strangers got in; node: {stats}")
            assert held >= 5 and stats["slots_in_use"] >= held
            assert nb.peer_id in na.connected_peers()  # the member is not pushed out

            # The node's own dial still finds a slot (the outbound reserve).
            nc = await c.start(nursery, [swarm])
            await na.connect(nc.addrs()[0], swarm=swarm)
            await wait_until(lambda: nc.peer_id in na.swarm_peers(swarm), timeout=10)

            # After the grace period strangers are trimmed down to the low watermark
            # (half the cap); the members stay.
            members = {nb.peer_id, nc.peer_id}
            await wait_until(
                lambda: members <= set(na.connected_peers()) and len(na.connected_peers()) <= 4, timeout=30
            )
            assert na.network_status()[0]["connections"]["trimmed"] >= held - 2
            # And a newcomer can join through an invite again.
            nd = await d.start(nursery)
            await nd.join_invite(await na.invite(swarm))
            await wait_until(lambda: nd.peer_id in na.swarm_peers(swarm), timeout=15)
            idle.cancel_scope.cancel()


async def _sit_idle(host, *, task_status: trio.TaskStatus[None]) -> None:
    async with serving(host, listen=False):
        task_status.started()
        await trio.sleep_forever()


@pytest.mark.timeout(90)
async def test_private_swarms_connect_and_bootstrap_on_their_own_host(tmp_path: Path) -> None:
    """``connect --swarm`` dials a private swarm's host; its ``bootstrap`` entries are dialled on join."""
    swarm = Swarm.create("Hidden", private=True)
    a, b = Member(tmp_path, "a"), Member(tmp_path, "b")
    async with nursery_for_test() as nursery:
        na = await a.start(nursery, [swarm])
        private_addr = na.addrs(swarm)[0]
        c = Member(tmp_path, "c", swarm_bootstrap={"Hidden": [private_addr]})
        nb = await b.start(nursery, [swarm])
        with pytest.raises(NetworkError):  # the open host has no key: it cannot reach a private host
            await nb.connect(private_addr)
        assert await nb.connect(private_addr, swarm=swarm) == na.peer_id
        await wait_until(lambda: nb.peer_id in na.swarm_peers(swarm), timeout=15)
        nc = await c.start(nursery, [swarm])  # told nobody's address but the bootstrap entry
        took = await wait_until(lambda: na.peer_id in nc.swarm_peers(swarm), timeout=20)
        print(f"\nbootstrap peer of a private swarm dialled {took:.2f} s after joining")
