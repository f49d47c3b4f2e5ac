"""Circuit relay v2 between real hosts on 127.0.0.1: reserve, dial through, refresh, recover.

A is the relay (RelayService), C the node "behind NAT" (RelayClient with a
reservation on A), B a dialler (RelayClient without relays). DCUtR cannot
punch on loopback (no NAT); the loopback test of DirectUpgrade shows the
relayed connection replaced by a direct one through DCUtR's unilateral step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from meshnode.errors import BadValue, NetworkError
from meshnode.protocols.gossip import plain_pubsub, running_pubsub
from meshnode.protocols.host import dial
from meshnode.protocols.relay import (
    DirectUpgrade,
    RelayClient,
    RelayLimitsConfig,
    RelayService,
    ResubscribeNotifee,
    circuit_addr,
    peer_path,
    resend_subscriptions,
)
from tests.netutil import running_hosts, wait_until

pytestmark = pytest.mark.timeout(90)

ECHO = TProtocol("/test/echo/1")


async def echo_handler(stream) -> None:
    """Echo until EOF (bounded: 10 s in all)."""
    try:
        with trio.move_on_after(10):
            while data := await stream.read(1024):
                await stream.write(data)
            await stream.close()
    except Exception:
        pass


async def read_n(stream, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = await stream.read(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


async def echo(host, peer: ID, payload: bytes = b"x" * 32) -> bytes:
    with trio.fail_after(10):
        stream = await host.new_stream(peer, [ECHO])
        await stream.write(payload)
        got = await read_n(stream, len(payload))
        await stream.close()
        return got


def full_addr(client: RelayClient) -> str:
    """The circuit address that names the relay's transport address too."""
    return next(str(x) for x in client.circuit_addrs() if str(x).startswith("/ip4/"))


def info(host) -> PeerInfo:
    return PeerInfo(host.get_id(), list(host.get_addrs()))


@contextlib.asynccontextmanager
async def relay_setup(limits: RelayLimitsConfig | None = None, members=None) -> AsyncIterator[dict]:
    """A relays for C (a member); B dials; C reserves on A and reports its circuit addresses."""
    async with running_hosts(3) as (a, b, c), trio.open_nursery() as nursery:
        allowed = members if members is not None else {c.get_id()}
        service = RelayService(a, lambda peer: peer in allowed, limits=limits or RelayLimitsConfig())
        await nursery.start(service.run)
        changes: list[list[str]] = []
        client_c = RelayClient(c, on_change=lambda addrs: changes.append([str(x) for x in addrs]))
        await nursery.start(client_c.run)
        client_b = RelayClient(b)
        await nursery.start(client_b.run)
        c.set_stream_handler(ECHO, echo_handler)
        yield {
            "a": a,
            "b": b,
            "c": c,
            "service": service,
            "client_c": client_c,
            "client_b": client_b,
            "changes": changes,
            "nursery": nursery,
        }
        nursery.cancel_scope.cancel()


async def test_reserve_then_dial_through_the_relay_and_echo():
    async with relay_setup() as s:
        a, b, c, client_c, client_b = s["a"], s["b"], s["c"], s["client_c"], s["client_b"]
        start = time.monotonic()
        client_c.add_relay(a.get_id(), list(a.get_addrs()))
        await wait_until(lambda: client_c.circuit_addrs(), timeout=10)
        reserve_ms = (time.monotonic() - start) * 1000
        short = circuit_addr(a.get_id(), c.get_id())
        addrs = [str(x) for x in client_c.circuit_addrs()]
        assert str(short) in addrs
        assert any(x.startswith("/ip4/127.0.0.1/tcp/") for x in addrs)  # relay address included
        assert s["changes"] and s["changes"][-1] == addrs  # on_change reported them
        assert client_c.reservations()[0].state == "active"
        assert s["service"].reservation_holders() == [c.get_id()]

        full = next(x for x in addrs if x.startswith("/ip4/"))
        start = time.monotonic()
        conn = await client_b.dial_via_relay(c.get_id(), full, timeout=10)
        dial_ms = (time.monotonic() - start) * 1000
        assert conn is not None
        assert peer_path(b, c.get_id()) == "relayed"
        await wait_until(lambda: peer_path(c, b.get_id()) == "relayed", timeout=5)
        # C's side names A (the real relay) in the connection's address, not C itself.
        (c_conn,) = c.get_network().get_connections(b.get_id())
        assert [str(x) for x in c_conn.get_transport_addresses()] == [
            str(circuit_addr(a.get_id(), b.get_id()))
        ]
        # The dialler did not take a reservation slot (STOP role only).
        assert s["service"].reservation_holders() == [c.get_id()]

        start = time.monotonic()
        assert await echo(b, c.get_id()) == b"x" * 32
        first_ms = (time.monotonic() - start) * 1000  # includes opening the stream
        times = []
        with trio.fail_after(10):
            stream = await b.new_stream(c.get_id(), [ECHO])
            for i in range(10):
                t0 = time.monotonic()
                await stream.write(bytes([i]) * 32)
                assert await read_n(stream, 32) == bytes([i]) * 32
                times.append((time.monotonic() - t0) * 1000)
            await stream.close()
        echo_ms = f"{sorted(times)[len(times) // 2]:.1f} ms median, {first_ms:.0f} ms with a new stream"
        print(f"reserve {reserve_ms:.0f} ms, circuit dial {dial_ms:.0f} ms, 32 B echo {echo_ms}")
        assert s["service"].stats.bytes_relayed > 0


async def test_a_non_member_is_refused_a_reservation_and_cannot_be_dialled():
    async with running_hosts(1) as (d,), relay_setup() as s:
        a, b = s["a"], s["b"]
        client_d = RelayClient(d, retry_interval=30)
        s["nursery"].start_soon(client_d.run)
        client_d.add_relay(a.get_id(), list(a.get_addrs()))
        await wait_until(lambda: client_d.reservations()[0].state == "refused", timeout=10)
        status = client_d.reservations()[0]
        assert "RESERVATION_REFUSED" in status.reason
        assert client_d.circuit_addrs() == []
        assert s["service"].stats.reservations_refused >= 1
        assert d.get_id() not in s["service"].reservation_holders()
        # B was not connected to A: the short form gives no way to reach the relay.
        with pytest.raises(NetworkError, match="not connected to the relay"):
            await s["client_b"].dial_via_relay(d.get_id(), circuit_addr(a.get_id(), d.get_id()), timeout=10)
        with pytest.raises(NetworkError, match="no reservation"):
            await s["client_b"].dial_via_relay(
                d.get_id(), circuit_addr(a.get_id(), d.get_id(), a.get_addrs()[0]), timeout=10
            )
        # Bad input is a BadValue, not a hang.
        with pytest.raises(BadValue):
            await s["client_b"].dial_via_relay(d.get_id(), "/ip4/127.0.0.1/tcp/1", timeout=1)
        with pytest.raises(BadValue):
            await s["client_b"].dial_via_relay(b.get_id(), circuit_addr(a.get_id(), d.get_id()), timeout=1)


async def test_reservation_is_refreshed_and_redone_after_the_relay_connection_comes_back():
    limits = RelayLimitsConfig(reservation_ttl=2)
    async with relay_setup(limits) as s:
        a, c, client_c, changes = s["a"], s["c"], s["client_c"], s["changes"]
        client_c.add_relay(a.get_id(), list(a.get_addrs()))
        await wait_until(lambda: client_c.circuit_addrs(), timeout=10)
        first = client_c.reservations()[0]
        # Refreshed before expiry (TTL 2 s, refreshed at half-life): the expiry moves on.
        await wait_until(lambda: client_c.reservations()[0].reservations >= 3, timeout=10)
        later = client_c.reservations()[0]
        assert later.expires_at is not None and first.expires_at is not None
        assert later.expires_at > first.expires_at
        assert later.state == "active" and later.losses == 0
        reported = len(changes)

        # The relay drops C: the circuit addresses are withdrawn, then C redials and re-reserves.
        await a.disconnect(c.get_id())
        await wait_until(lambda: client_c.reservations()[0].losses == 1, timeout=10)
        assert [] in changes[reported:]  # the addresses were reported gone
        await wait_until(lambda: client_c.reservations()[0].state == "active", timeout=15)
        assert client_c.circuit_addrs()
        assert changes[-1] == [str(x) for x in client_c.circuit_addrs()]
        # And the new reservation works end to end.
        await s["client_b"].dial_via_relay(c.get_id(), full_addr(client_c), timeout=10)
        assert await echo(s["b"], c.get_id()) == b"x" * 32


async def test_without_relay_addresses_the_client_waits_for_the_node_to_reconnect():
    async with relay_setup() as s:
        a, c, client_c = s["a"], s["c"], s["client_c"]
        await dial(c, info(a))
        client_c.add_relay(a.get_id())  # no addresses: the node owns the connection
        await wait_until(lambda: client_c.circuit_addrs(), timeout=10)
        await c.disconnect(a.get_id())
        await wait_until(lambda: client_c.reservations()[0].state == "connecting", timeout=10)
        assert client_c.circuit_addrs() == []
        await dial(c, info(a))
        await wait_until(lambda: client_c.reservations()[0].state == "active", timeout=10)
        client_c.remove_relay(a.get_id())
        assert client_c.circuit_addrs() == [] and client_c.reservations() == []
        assert s["changes"][-1] == []


async def test_an_idle_circuit_is_cut_at_its_duration_limit():
    limits = RelayLimitsConfig(circuit_duration=1)
    async with relay_setup(limits) as s:
        a, b, c = s["a"], s["b"], s["c"]
        s["client_c"].add_relay(a.get_id(), list(a.get_addrs()))
        await wait_until(lambda: s["client_c"].circuit_addrs(), timeout=10)
        await s["client_b"].dial_via_relay(c.get_id(), full_addr(s["client_c"]), timeout=10)
        assert peer_path(b, c.get_id()) == "relayed"
        took = await wait_until(lambda: peer_path(b, c.get_id()) is None, timeout=10)
        assert s["service"].stats.circuits_cut == 1
        print(f"idle circuit cut {took:.2f} s after the dial (limit 1 s)")


async def test_gossipsub_delivers_over_a_circuit():
    topic = "meshnode/test/relay"
    async with relay_setup() as s:
        a, b, c = s["a"], s["b"], s["c"]
        s["client_c"].add_relay(a.get_id(), list(a.get_addrs()))
        await wait_until(lambda: s["client_c"].circuit_addrs(), timeout=10)
        pubsubs = {h: plain_pubsub(h) for h in (b, c)}
        async with (
            running_pubsub(pubsubs[b]),
            running_pubsub(pubsubs[c]),
        ):
            sub_b = await pubsubs[b].subscribe(topic)
            sub_c = await pubsubs[c].subscribe(topic)
            start = time.monotonic()
            await s["client_b"].dial_via_relay(c.get_id(), full_addr(s["client_c"]), timeout=10)
            await pubsubs[b].wait_for_mesh(c.get_id(), topic, timeout=10)
            await pubsubs[c].wait_for_mesh(b.get_id(), topic, timeout=10)
            mesh_s = time.monotonic() - start
            assert peer_path(b, c.get_id()) == "relayed"
            await pubsubs[b].publish(topic, b"hello through the relay")
            await pubsubs[c].publish(topic, b"and back")
            with trio.fail_after(10):
                got_c = {(await sub_c.get()).data for _ in range(2)}
                got_b = {(await sub_b.get()).data for _ in range(2)}
            assert b"hello through the relay" in got_c and b"and back" in got_c
            assert b"hello through the relay" in got_b and b"and back" in got_b
            print(f"GossipSub mesh over the circuit in {mesh_s:.2f} s")


async def test_direct_upgrade_replaces_the_relayed_connection_and_gossip_survives():
    """Loopback has no NAT: DCUtR upgrades through its unilateral direct dial.

    Then the relayed connection is closed while the direct one stays (the case of
    pitfall 34), and the resubscribe notifee keeps gossip flowing both ways.
    """
    topic = "meshnode/test/upgrade"
    async with relay_setup() as s:
        a, b, c, nursery = s["a"], s["b"], s["c"], s["nursery"]
        s["client_c"].add_relay(a.get_id(), list(a.get_addrs()))
        await wait_until(lambda: s["client_c"].circuit_addrs(), timeout=10)
        pubsubs = {h: plain_pubsub(h) for h in (b, c)}
        notifees = {h: ResubscribeNotifee(pubsubs[h], nursery) for h in (b, c)}
        for h, notifee in notifees.items():
            h.get_network().register_notifee(notifee)
        async with (
            running_pubsub(pubsubs[b]),
            running_pubsub(pubsubs[c]),
        ):
            subs = {h: await pubsubs[h].subscribe(topic) for h in (b, c)}
            await s["client_b"].dial_via_relay(c.get_id(), full_addr(s["client_c"]), timeout=10)
            await pubsubs[b].wait_for_mesh(c.get_id(), topic, timeout=10)
            upgrades = [DirectUpgrade(h, retry_interval=3600) for h in (b, c)]
            start = time.monotonic()
            for up in upgrades:
                await nursery.start(up.run)
            await wait_until(lambda: peer_path(b, c.get_id()) == "direct", timeout=20)
            print(f"relayed -> direct in {time.monotonic() - start:.2f} s (unilateral, loopback)")
            # Close the relayed leg by hand (DCUtR waits 60 s); the direct one stays.
            for conn in list(b.get_network().get_connections(c.get_id())):
                if peer_path(b, c.get_id()) == "direct" and conn.get_connection_type().value == "relayed":
                    await conn.close()
            await wait_until(
                lambda: all(
                    x.get_connection_type().value != "relayed"
                    for x in b.get_network().get_connections(c.get_id())
                ),
                timeout=10,
            )
            await wait_until(lambda: notifees[b].resent >= 1 or notifees[c].resent >= 1, timeout=10)
            await pubsubs[c].wait_for_subscription(b.get_id(), topic, timeout=10)
            await pubsubs[b].wait_for_subscription(c.get_id(), topic, timeout=10)
            # Each back in the other's mesh (a heartbeat after the resubscription; on a
            # loaded machine that can take a while): only then is delivery owed.
            await pubsubs[b].wait_for_mesh(c.get_id(), topic, timeout=20)
            await pubsubs[c].wait_for_mesh(b.get_id(), topic, timeout=20)
            for i in range(3):
                await pubsubs[b].publish(topic, f"b{i}".encode())
                await pubsubs[c].publish(topic, f"c{i}".encode())
            want = {f"{p}{i}".encode() for p in "bc" for i in range(3)}
            for h in (b, c):
                got: set[bytes] = set()
                with trio.fail_after(10):
                    while got != want:
                        got.add((await subs[h].get()).data)
        for h, notifee in notifees.items():
            h.get_network().remove_notifee(notifee)


async def test_dcutr_retry_round_gives_exhausted_relayed_peers_another_budget():
    async with relay_setup() as s:
        a, b, c = s["a"], s["b"], s["c"]
        s["client_c"].add_relay(a.get_id(), list(a.get_addrs()))
        await wait_until(lambda: s["client_c"].circuit_addrs(), timeout=10)
        await s["client_b"].dial_via_relay(c.get_id(), full_addr(s["client_c"]), timeout=10)
        up = DirectUpgrade(b, max_rounds=2)  # not run: only its bookkeeping is exercised
        attempts = up.dcutr._hole_punch_attempts
        attempts[c.get_id()] = 3  # exhausted, and C is still only relayed
        attempts[a.get_id()] = 3  # exhausted but direct: left alone
        assert up.retry_round() == [c.get_id()]
        assert c.get_id() not in attempts and a.get_id() in attempts
        attempts[c.get_id()] = 3
        assert up.retry_round() == [c.get_id()]
        attempts[c.get_id()] = 3
        assert up.retry_round() == []  # max_rounds reached
        assert up.retries == 2


async def test_resend_subscriptions_without_a_pubsub_peer_is_a_no_op():
    class FakePubsub:
        peer_queues: dict = {}

    assert resend_subscriptions(FakePubsub(), ID(b"\x00\x01x")) is False


# --- behind real NAT routers (network namespaces, tests/netlab.py) ---------------------------

NAT_NODE_SRC = r"""
import json, sys, time
import trio
from multiaddr import Multiaddr
from libp2p.peer.id import ID
from meshnode.identity import Identity
from meshnode.protocols.host import build_host
from meshnode.protocols.relay import DirectUpgrade, RelayClient, RelayService, peer_path

role, listen, relay_addr, target = sys.argv[1:5]
DIAL_TIMEOUT = int(sys.argv[5]) if len(sys.argv) > 5 else 3


def emit(event, **kw):
    print(json.dumps({"event": event, "t": time.monotonic(), **kw}), flush=True)


async def watch(host):
    seen = {}
    while True:
        for peer, conns in list(host.get_network().get_connections_map().items()):
            path = peer_path(host, peer)
            if seen.get(peer) != path:
                seen[peer] = path
                addrs = [str(a) for c in conns for a in (c._actual_transport_addresses or [])]
                emit("path", peer=peer.to_base58(), path=path, addrs=addrs)
        await trio.sleep(0.05)


async def main():
    host = build_host(Identity.generate(), min_peers=0)
    try:
        async with host.run([Multiaddr(listen)]), trio.open_nursery() as nursery:
            if role == "relay":
                await nursery.start(RelayService(host, lambda peer: True).run)
            else:
                client = RelayClient(host, on_change=lambda a: emit("addrs", addrs=[str(x) for x in a]))
                await nursery.start(client.run)
                await nursery.start(DirectUpgrade(host, retry_interval=30, dial_timeout=DIAL_TIMEOUT).run)
                transport, _, relay_id = relay_addr.rpartition("/p2p/")
                client.add_relay(ID.from_base58(relay_id), [Multiaddr(transport)])
            nursery.start_soon(watch, host)
            emit("ready", peer=host.get_id().to_base58(), addrs=[str(a) for a in host.get_addrs()])
            if target != "-":
                with trio.fail_after(20):
                    while not client.circuit_addrs():
                        await trio.sleep(0.05)
                t0 = time.monotonic()
                try:
                    peer = ID.from_base58(target.rpartition("/p2p/")[2])
                    await client.dial_via_relay(peer, target, timeout=15)
                    emit("dialled", ms=round((time.monotonic() - t0) * 1000, 1))
                except Exception as exc:
                    emit("dial_failed", error=str(exc))
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await host.close()


trio.run(main)
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_homes_behind_nat_meet_through_a_relay_and_dcutr_makes_it_direct():
    """Homes behind NAT routers that drop unsolicited inbound (no UPnP), a public relay."""
    from tests import netlab

    lab = netlab.open_lab()
    try:
        pub, home_a, home_b = lab.public_host("relay"), lab.home("a"), lab.home("b")
        # Sanity: neither home can be dialled from outside.
        assert not lab.tcp_probe(pub, home_a.router.ip, 4001, timeout=0.5).connected
        relay = lab.python(pub, NAT_NODE_SRC, "relay", f"/ip4/{pub.ip}/tcp/4001", "-", "-")
        ready = relay.wait_for("ready", 20)
        relay_addr = f"/ip4/{pub.ip}/tcp/4001/p2p/{ready['peer']}"

        a = lab.python(home_a.host, NAT_NODE_SRC, "home", f"/ip4/{home_a.host.ip}/tcp/4001", relay_addr, "-")
        a_id = a.wait_for("ready", 20)["peer"]
        circuit = a.wait_for(lambda e: e.get("event") == "addrs" and e["addrs"], 20, "circuit addresses")
        target = next(x for x in circuit["addrs"] if x.startswith(f"/ip4/{pub.ip}/"))
        assert target.endswith(f"/p2p-circuit/p2p/{a_id}")

        b = lab.python(
            home_b.host, NAT_NODE_SRC, "home", f"/ip4/{home_b.host.ip}/tcp/4001", relay_addr, target
        )
        b_id = b.wait_for("ready", 20)["peer"]
        dialled = b.wait_for(lambda e: e.get("event") in ("dialled", "dial_failed"), 30, "the circuit dial")
        assert dialled["event"] == "dialled", dialled
        b.wait_for(lambda e: e.get("event") == "path" and e["peer"] == a_id and e["path"] == "relayed", 10)
        relayed_at = b.events[-1]["t"]
        # DCUtR: a direct connection on both sides, to the other home's router (not the relay).
        direct_b = b.wait_for(
            lambda e: e.get("event") == "path" and e["peer"] == a_id and e["path"] == "direct", 60
        )
        direct_a = a.wait_for(
            lambda e: e.get("event") == "path" and e["peer"] == b_id and e["path"] == "direct", 20
        )
        assert any(home_a.router.ip in x for x in direct_b["addrs"]), direct_b
        assert any(home_b.router.ip in x for x in direct_a["addrs"]), direct_a
        print(f"circuit dial {dialled['ms']} ms; relayed -> direct in {direct_b['t'] - relayed_at:.2f} s")
        for proc in (a, b, relay):
            proc.close_stdin()
    finally:
        lab.close()
