"""LAN discovery (meshnode.protocols.mdns).

Unit tests run without sockets. The integration test runs two real nodes, each
in its own network namespace created here and joined by a veth pair; mDNS
never touches the machine's real interfaces or the root namespace (the veth is
created inside the first namespace). It skips where namespaces cannot be made.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trio
import trio.testing
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from meshnode.protocols import mdns
from meshnode.protocols.mdns import SERVICE_TYPE, DiscoveredPeer, LanDiscovery
from meshnode.swarm import Swarm

NODE_SCRIPT = Path(__file__).with_name("mdns_node.py")
MESHNODE_SCRIPT = Path(__file__).with_name("mdns_meshnode.py")


def peer_id(seed_byte: int) -> ID:
    return ID.from_pubkey(create_new_key_pair(seed=bytes([seed_byte]) * 32).public_key)


class FakeHost:
    def __init__(self, seed_byte: int = 1, addrs: list[str] | None = None) -> None:
        self._id = peer_id(seed_byte)
        self._addrs = [Multiaddr(a) for a in addrs or []]

    def get_id(self) -> ID:
        return self._id

    def get_transport_addrs(self) -> list[Multiaddr]:
        return self._addrs


def a_peer(seed_byte: int = 2) -> DiscoveredPeer:
    return DiscoveredPeer(peer_id(seed_byte), [Multiaddr("/ip4/10.213.0.2/tcp/4001")])


# --------------------------------------------------------------------------- TXT and addresses


def test_txt_round_trip() -> None:
    pid = peer_id(3)
    addrs = ["/ip4/10.213.0.2/tcp/4001", "/ip6/2001:db8::2/tcp/4001"]
    got = mdns.parse_txt(mdns.build_txt(addrs, pid))
    assert got == DiscoveredPeer(pid, [Multiaddr(a) for a in addrs])


def txt(*entries: bytes) -> bytes:
    return b"".join(bytes([len(e)]) + e for e in entries)


def test_parse_txt_filters_and_never_raises() -> None:
    a, b = peer_id(4).to_base58(), peer_id(5).to_base58()
    record = txt(
        f"dnsaddr=/ip4/10.0.0.1/tcp/1/p2p/{a}".encode(),
        f"dnsaddr2=/ip4/10.0.0.2/tcp/2/p2p/{a}".encode(),  # py-libp2p's numbered keys
        f"dnsaddr=/ip4/10.0.0.3/tcp/3/p2p/{b}".encode(),  # another id: ignored
        f"dnsaddr=/ip4/0.0.0.0/tcp/4/p2p/{a}".encode(),  # unspecified
        f"dnsaddr=/ip4/127.0.0.1/tcp/5/p2p/{a}".encode(),  # loopback
        f"dnsaddr=/ip4/10.0.0.6/udp/6/quic-v1/p2p/{a}".encode(),  # not TCP
        f"dnsaddrx=/ip4/10.0.0.7/tcp/7/p2p/{a}".encode(),  # other key
        b"garbage",
    )
    got = mdns.parse_txt(record)
    assert got is not None
    assert got.peer_id.to_base58() == a
    assert [str(m) for m in got.addrs] == ["/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/2"]
    for bad in [
        b"",
        b"\xff" * 40,
        txt(b"dnsaddr=/ip4/10.0.0.1/tcp/1/p2p/notapeerid"),
        txt(b"dnsaddr=\xff\xfe"),
    ]:
        assert mdns.parse_txt(bad) is None
    rnd = secrets.SystemRandom()
    for _ in range(300):
        assert mdns.parse_txt(rnd.randbytes(rnd.randrange(0, 300))) is None


def test_private_swarm_tags() -> None:
    """A tag verifies only under its swarm key, reveals nothing else, and changes with its nonce."""
    pid, other = peer_id(3), peer_id(4)
    key, wrong = bytes(range(32)), bytes(32)
    tag = mdns.swarm_tag(key, pid)
    assert mdns.tag_matches(tag, key, pid)
    assert not mdns.tag_matches(tag, wrong, pid)
    assert not mdns.tag_matches(tag, key, other)  # bound to the advertised peer id
    assert not mdns.tag_matches(tag, None, pid)  # the open host ignores private advertisements
    assert mdns.tag_matches(None, None, pid)
    assert not mdns.tag_matches(None, key, pid)  # and a private host ignores open ones
    assert mdns.swarm_tag(key, pid) != tag  # a fresh nonce every time
    assert key.hex() not in tag.hex()
    record = mdns.build_txt(["/ip4/10.213.0.2/tcp/4001"], pid, tag)
    assert mdns.parse_tag(record) == tag
    assert mdns.parse_txt(record) == DiscoveredPeer(pid, [Multiaddr("/ip4/10.213.0.2/tcp/4001")])
    assert mdns.parse_tag(mdns.build_txt(["/ip4/10.213.0.2/tcp/4001"], pid)) is None
    for bad in [b"", txt(b"mtag=zz"), txt(b"mtag=00"), b"\xff" * 30]:
        assert mdns.parse_tag(bad) is None


def test_advertised_addresses_are_real() -> None:
    got = mdns.advertisable_addrs(
        [
            "/ip4/0.0.0.0/tcp/4001",
            "/ip4/127.0.0.1/tcp/4002",
            "/ip4/10.213.0.1/tcp/4003/p2p/" + peer_id(1).to_base58(),
            "/ip4/10.213.0.1/udp/4004/quic-v1",
        ]
    )
    assert "/ip4/10.213.0.1/tcp/4003" in got
    assert all(not a.startswith(("/ip4/0.0.0.0", "/ip4/127.")) for a in got)
    assert all("/tcp/" in a and "/p2p/" not in a for a in got)


# --------------------------------------------------------------------------- callback path


async def test_delivery_from_foreign_thread_drops_when_full() -> None:
    send, recv = trio.open_memory_channel[DiscoveredPeer](2)
    disc = LanDiscovery(FakeHost(), send)
    disc._token = trio.lowlevel.current_trio_token()
    peers = [a_peer(10 + i) for i in range(5)]

    def zeroconf_thread() -> None:
        for p in peers:
            disc._deliver(p)  # must return at once, never block on a full channel

    t = threading.Thread(target=zeroconf_thread)
    start = time.monotonic()
    t.start()
    await trio.to_thread.run_sync(t.join)
    assert time.monotonic() - start < 2
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(0.05)
    assert [recv.receive_nowait(), recv.receive_nowait()] == peers[:2]
    with pytest.raises(trio.WouldBlock):
        recv.receive_nowait()
    assert disc.stats["delivered"] == 2
    assert disc.stats["dropped"] == 3
    assert disc.stats["errors"] == 0

    await recv.aclose()  # receiver gone: still no exception anywhere
    disc._deliver(a_peer(20))
    await trio.sleep(0.05)
    assert disc.stats["dropped"] == 4


def test_callbacks_never_raise_into_zeroconf_threads() -> None:
    async def token_of_a_finished_run() -> trio.lowlevel.TrioToken:
        return trio.lowlevel.current_trio_token()

    send, _recv = trio.open_memory_channel[DiscoveredPeer](1)
    disc = LanDiscovery(FakeHost(), send)
    disc._deliver(a_peer())  # no token yet
    disc._token = trio.run(token_of_a_finished_run)
    disc._deliver(a_peer())  # trio run finished: RunFinishedError swallowed

    class ClosedLoop:
        def call_soon_threadsafe(self, *args: object) -> None:
            raise RuntimeError("Event loop is closed")

    class BrokenZc:
        loop = ClosedLoop()

    name = f"someone.{SERVICE_TYPE}"
    for zc in (None, object(), BrokenZc()):
        disc._listener.add_service(zc, SERVICE_TYPE, name)
        disc._listener.update_service(zc, SERVICE_TYPE, name)
        disc._listener.remove_service(zc, SERVICE_TYPE, name)
    disc._schedule_resolve(None, SERVICE_TYPE, name)  # not on a loop
    assert disc.stats["errors"] >= 7

    import asyncio

    before = disc.stats["errors"]
    asyncio.run(disc._resolve(object(), SERVICE_TYPE, name))  # resolution against a broken zeroconf
    assert disc.stats["errors"] == before + 1


# --------------------------------------------------------------------------- two namespaces


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class NodeProc:
    """A test script run inside namespace ``ns``; its JSON lines are collected as events."""

    def __init__(self, ns: str, script: Path, *args: str) -> None:
        self.lines: queue.Queue[dict] = queue.Queue()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        self.events: list[dict] = []
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self.stderr.append(line)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def wait_for(self, event: str, deadline: float) -> dict:
        """The first ``event`` line this node printed, waiting until ``deadline`` for it."""
        while True:
            for msg in self.events:
                if msg["event"] == "error":
                    raise AssertionError(f"node error: {msg}")
                if msg["event"] == event:
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event!r} in time; stderr: {''.join(self.stderr)[-2000:]}")
            try:
                self.events.append(self.lines.get(timeout=left))
            except queue.Empty:
                pass

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def bare_node(ns: str, addr: str, seed_byte: int, expect: ID) -> NodeProc:
    """tests/mdns_node.py: a bare host with LanDiscovery that dials ``expect`` when found."""
    return NodeProc(
        ns,
        NODE_SCRIPT,
        *("--addr", addr, "--seed", (bytes([seed_byte]) * 32).hex()),
        *("--expect", expect.to_base58(), "--run-for", "50"),
    )


@pytest.fixture
def two_namespaces():
    """Two namespaces joined by a veth pair; 10.213.<n>.1/.2 exist only inside them."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 'ip' not found")
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    names = [f"mn-test-{tag}-a", f"mn-test-{tag}-b"]
    veths = [f"mv{tag}a", f"mv{tag}b"]  # <= 15 chars
    net = 1 + secrets.randbelow(254)
    addrs = [f"10.213.{net}.1", f"10.213.{net}.2"]
    created: list[str] = []
    try:
        for ns in names:
            try:
                _ip("netns", "add", ns)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"ip netns add failed: {exc.stderr.strip()}")
            created.append(ns)
        # created inside the first namespace, its peer end moved straight into the second
        _ip(
            "-n",
            names[0],
            "link",
            "add",
            veths[0],
            "type",
            "veth",
            "peer",
            "name",
            veths[1],
            "netns",
            names[1],
        )
        for ns, dev, addr in zip(names, veths, addrs, strict=True):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", "dev", dev, "multicast", "on", "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
        yield list(zip(names, addrs, strict=True))
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_two_nodes_discover_and_connect(two_namespaces, record_property) -> None:
    (ns_a, addr_a), (ns_b, addr_b) = two_namespaces
    id_a, id_b = peer_id(0xA1), peer_id(0xB2)
    nodes: list[NodeProc] = []
    try:
        a = bare_node(ns_a, addr_a, 0xA1, expect=id_b)
        nodes.append(a)
        ready_a = a.wait_for("ready", time.monotonic() + 20)
        assert ready_a["peer_id"] == id_a.to_base58()
        assert [x.split("/")[2] for x in ready_a["advertised"]] == [addr_a]  # never 0.0.0.0

        # B joins a running LAN: A learns of B from B's announcement, B of A by querying.
        b = bare_node(ns_b, addr_b, 0xB2, expect=id_a)
        nodes.append(b)
        deadline = time.monotonic() + 20
        found = {"a": a.wait_for("discovered", deadline), "b": b.wait_for("discovered", deadline)}
        assert found["a"]["peer"] == id_b.to_base58()
        assert found["b"]["peer"] == id_a.to_base58()
        assert [x.split("/")[2] for x in found["a"]["addrs"]] == [addr_b]
        assert [x.split("/")[2] for x in found["b"]["addrs"]] == [addr_a]
        a.wait_for("connected", deadline)
        b.wait_for("connected", deadline)
        # Discovery latency, both counted from B's start (same clock: one machine).
        b_start = b.wait_for("starting", deadline)["wall"]
        b_found_a = found["b"]["wall"] - b_start  # B queries and A answers
        a_found_b = found["a"]["wall"] - b_start  # A hears B's announcement
        record_property("mdns_b_found_a_seconds", round(b_found_a, 3))
        record_property("mdns_a_found_b_seconds", round(a_found_b, 3))
        print(
            f"\nmDNS discovery after B starts: B found A in {b_found_a:.3f} s, A found B in {a_found_b:.3f} s"
        )
        assert b_found_a < 20 and a_found_b < 20

        for n in nodes:
            n.stop()
        for n in nodes:
            stopped = n.wait_for("stopped", time.monotonic() + 15)
            assert stopped["threads"] == [], "zeroconf threads left running"
            assert stopped["stats"]["errors"] == 0
            assert n.proc.wait(timeout=10) == 0
    finally:
        for n in nodes:
            n.stop()
            n.kill()


def meshnode_node(ns: str, addr: str, db: Path, swarm: Swarm, *, publish: str = "") -> NodeProc:
    """tests/mdns_meshnode.py: a real meshnode Node (mdns=True) in ``swarm``, told no peer address."""
    args = ["--addr", addr, "--db", str(db), "--swarm-name", swarm.name, "--swarm-id", swarm.id.hex()]
    if swarm.key is not None:
        args += ["--swarm-key", swarm.key.hex()]
    if publish:
        args += ["--publish", publish]
    return NodeProc(ns, MESHNODE_SCRIPT, *args, "--run-for", "80")


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("private", [False, True], ids=["open", "private"])
def test_two_meshnodes_find_each_other_and_gossip_an_offer(
    two_namespaces, tmp_path: Path, record_property, private: bool
) -> None:
    """Two real Nodes in one swarm, each told nobody's address: mDNS, dial, mesh, offer stored.

    In a private swarm each finds the other's private host by its keyed tag.
    """
    (ns_a, addr_a), (ns_b, addr_b) = two_namespaces
    swarm = Swarm.create("LAN test", private=private)
    title = "Drill on the LAN"
    nodes: list[NodeProc] = []
    try:
        start = time.time()
        deadline = time.monotonic() + 30
        a = meshnode_node(ns_a, addr_a, tmp_path / "a.db", swarm, publish=title)
        nodes.append(a)
        b = meshnode_node(ns_b, addr_b, tmp_path / "b.db", swarm)
        nodes.append(b)
        ready_a, ready_b = a.wait_for("ready", deadline), b.wait_for("ready", deadline)
        assert ready_a["peer_id"] != ready_b["peer_id"]
        assert [x.split("/")[2] for x in ready_a["addrs"]] == [addr_a]
        assert [x.split("/")[2] for x in ready_b["addrs"]] == [addr_b]

        found_a, found_b = a.wait_for("discovered", deadline), b.wait_for("discovered", deadline)
        assert found_a["peer"] == ready_b["peer_id"]
        assert found_b["peer"] == ready_a["peer_id"]
        assert [x.split("/")[2] for x in found_a["addrs"]] == [addr_b]
        assert [x.split("/")[2] for x in found_b["addrs"]] == [addr_a]
        conn_a, conn_b = a.wait_for("connected", deadline), b.wait_for("connected", deadline)
        assert conn_a["peer"] == ready_b["peer_id"]
        assert conn_b["peer"] == ready_a["peer_id"]

        mesh_a = a.wait_for("mesh", deadline)
        assert ready_b["peer_id"] in mesh_a["peers"]
        published = a.wait_for("published", deadline)
        stored = b.wait_for("stored", deadline)
        assert stored["id"] == published["id"]
        assert stored["title"] == title
        assert stored["author"] == ready_a["author"]

        def since_start(event: dict) -> float:
            return round(event["wall"] - start, 3)

        timings = {
            "a_ready": since_start(ready_a),
            "b_ready": since_start(ready_b),
            "a_found_b": since_start(found_a),
            "b_found_a": since_start(found_b),
            "a_connected": since_start(conn_a),
            "b_connected": since_start(conn_b),
            "a_mesh": since_start(mesh_a),
            "a_published": since_start(published),
            "b_stored": since_start(stored),
        }
        first_found = min(found_a["wall"], found_b["wall"])
        first_connected = min(conn_a["wall"], conn_b["wall"])
        timings["found_to_connected"] = round(first_connected - first_found, 3)
        timings["connected_to_stored"] = round(stored["wall"] - first_connected, 3)
        timings["published_to_stored"] = round(stored["wall"] - published["wall"], 3)
        for key, value in timings.items():
            record_property(f"mdns_meshnode_{key}_seconds", value)
        print(
            "\nmeshnode over mDNS, seconds after both processes were started: "
            + ", ".join(f"{k}={v:.3f}" for k, v in timings.items())
        )
        assert timings["b_stored"] < 30

        for n in nodes:
            n.stop()
        for n in nodes:
            stopped = n.wait_for("stopped", time.monotonic() + 15)
            assert stopped["threads"] == [], "zeroconf threads left running"
            assert n.proc.wait(timeout=10) == 0

        # Every line is read now. Both nodes dial whom they discover: when they do so at the
        # same moment libp2p keeps both connections (max_connections_per_peer=1 spares new
        # ones from trimming). Reported, not asserted.
        dialers = [
            name for name, n in (("a", a), ("b", b)) if any(e["event"] == "lan_dialed" for e in n.events)
        ]
        counts = [e["per_peer"] for n in nodes for e in n.events if e["event"] == "connections"]
        most_conns = max((max(c.values(), default=0) for c in counts), default=0)
        record_property("mdns_meshnode_dialed_by", ",".join(dialers))
        record_property("mdns_meshnode_max_connections_per_peer", most_conns)
        print(f"LAN dial succeeded on: {dialers}; most connections to one peer: {most_conns}")
    finally:
        for n in nodes:
            n.stop()
            n.kill()
