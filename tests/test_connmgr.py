"""Connection management: inbound slots that come back (pitfall 25), limits per address, trimming.

The policy is tested as pure functions; the rest on real hosts on 127.0.0.1
built by ``build_host``, each test bounded, waiting on observable state.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

import multiaddr
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from meshnode.errors import BadValue, NetworkError
from meshnode.identity import Identity
from meshnode.protocols import connmgr
from meshnode.protocols.connmgr import (
    AddressCounter,
    Admission,
    ConnLimits,
    ConnView,
    Libp2pMismatch,
    choose_trims,
    subnet_of,
)
from meshnode.protocols.gossip import RecordGossip
from meshnode.protocols.host import build_host, dial
from meshnode.verdicts import Verdict
from tests.netutil import serving

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")

# --- the pure policy -----------------------------------------------------------------


def limits(**kw: object) -> ConnLimits:
    base: dict[str, object] = {
        "max_connections": 16,
        "outbound_reserve": 2,
        "high_water": 6,
        "low_water": 3,
        "max_per_ip": 2,
        "max_per_subnet": 3,
        "grace": 10.0,
    }
    base.update(kw)
    return ConnLimits(**base)  # type: ignore[arg-type]


def view(key: int, *, opened: float = 0.0, useful: float | None = None, outbound: bool = False) -> ConnView:
    return ConnView(key=key, peer=f"p{key}", opened_at=opened, last_useful=useful, outbound=outbound)


def nobody(_: str) -> bool:
    return False


def test_nothing_trimmed_at_or_below_high_water():
    conns = [view(i) for i in range(6)]
    assert choose_trims(conns, now=100, limits=limits(), is_protected=nobody) == []


def test_strangers_first_inbound_first_longest_idle_first():
    conns = [
        view(1, opened=5, useful=50),  # useful, idle since 50
        view(2, opened=9),  # stranger, inbound, newer
        view(3, opened=1, outbound=True),  # stranger, our own dial
        view(4, opened=4),  # stranger, inbound, older
        view(5, opened=2, useful=20),  # useful, idle since 20
        view(6, opened=3, useful=90),
        view(7, opened=8, useful=80),
    ]
    picked = choose_trims(conns, now=100, limits=limits(low_water=0, high_water=6), is_protected=nobody)
    assert [c.key for c in picked] == [4, 2, 3, 5, 1, 7, 6]
    picked = choose_trims(conns, now=100, limits=limits(low_water=4, high_water=6), is_protected=nobody)
    assert [c.key for c in picked] == [4, 2, 3]  # down to the low watermark


def test_protected_and_fresh_connections_are_never_trimmed():
    conns = [view(i, opened=0) for i in range(8)] + [view(8, opened=95), view(9, opened=95)]
    picked = choose_trims(
        conns, now=100, limits=limits(low_water=0, grace=10), is_protected=lambda p: p in {"p0", "p1"}
    )
    assert {c.key for c in picked} == {2, 3, 4, 5, 6, 7}  # not protected 0, 1 nor the fresh 8, 9
    later = choose_trims(
        conns, now=105, limits=limits(low_water=0, grace=10), is_protected=lambda p: p in {"p0", "p1"}
    )
    assert {c.key for c in later} == {2, 3, 4, 5, 6, 7, 8, 9}  # grace over


@given(
    n=st.integers(0, 40),
    data=st.data(),
    high=st.integers(0, 20),
    low=st.integers(0, 20),
    grace=st.floats(0, 30),
)
def test_trim_properties(n: int, data: st.DataObject, high: int, low: int, grace: float):
    low = min(low, high)
    lim = ConnLimits(max_connections=30, outbound_reserve=2, high_water=high, low_water=low, grace=grace)
    conns = [
        ConnView(
            key=i,
            peer=f"p{i % 25}",
            opened_at=data.draw(st.floats(0, 100)),
            last_useful=data.draw(st.none() | st.floats(0, 100)),
            outbound=data.draw(st.booleans()),
        )
        for i in range(n)
    ]
    protected = data.draw(st.sets(st.sampled_from([f"p{i}" for i in range(25)])))
    now = 100.0
    picked = choose_trims(conns, now=now, limits=lim, is_protected=lambda p: p in protected)
    keys = [c.key for c in picked]
    assert len(keys) == len(set(keys))
    assert all(c.peer not in protected for c in picked)  # protected peers are never chosen
    assert all(now - c.opened_at >= grace for c in picked)  # nor anything in its grace period
    left = n - len(picked)
    if n <= high:
        assert picked == []
    else:
        eligible = [c for c in conns if c.peer not in protected and now - c.opened_at >= grace]
        assert left >= low  # never below the low watermark
        assert left == low or len(picked) == len(eligible)  # down to it, unless too few may go
        if len(eligible) >= n - low:
            assert left <= high  # the count never exceeds the cap after a trim
        # a stranger is never kept while a peer that was useful is closed
        if any(c.last_useful is not None for c in picked):
            assert all(c in picked for c in eligible if c.last_useful is None)


def test_limits_validation_and_defaults():
    d = ConnLimits.for_max(64)
    assert (d.inbound_cap, d.high_water, d.low_water, d.max_per_ip, d.max_per_subnet) == (56, 48, 32, 8, 16)
    small = ConnLimits.for_max(8)
    assert small.inbound_cap == 7 and small.high_water < small.inbound_cap
    with pytest.raises(BadValue):
        ConnLimits(max_connections=16, outbound_reserve=2, high_water=14, low_water=3)  # high == inbound cap
    with pytest.raises(BadValue):
        ConnLimits(max_connections=16, outbound_reserve=0)
    with pytest.raises(BadValue):
        ConnLimits(max_connections=16, outbound_reserve=2, high_water=6, low_water=7)
    with pytest.raises(BadValue):
        ConnLimits(max_per_ip=5, max_per_subnet=4)


def test_subnets():
    assert subnet_of("203.0.113.77") == "203.0.113.0/24"
    assert subnet_of("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert subnet_of("::ffff:203.0.113.9") == "203.0.113.0/24"
    with pytest.raises(BadValue):
        subnet_of("not-an-ip")


def test_address_counter_per_ip_and_per_subnet():
    c = AddressCounter(limits(max_per_ip=2, max_per_subnet=3))
    assert c.admit("203.0.113.1") is Admission.ADMIT
    assert c.admit("203.0.113.1") is Admission.ADMIT
    assert c.admit("203.0.113.1") is Admission.REFUSE_IP
    assert c.admit("203.0.113.2") is Admission.ADMIT
    assert c.admit("203.0.113.3") is Admission.REFUSE_SUBNET
    assert c.admit("203.0.114.3") is Admission.ADMIT  # another /24
    assert c.admit("2001:db8::1") is Admission.ADMIT
    assert c.admit("2001:db8::2") is Admission.ADMIT
    assert c.admit("2001:db8::3") is Admission.ADMIT
    assert c.admit("2001:db8::4") is Admission.REFUSE_SUBNET  # same /64
    assert c.admit("::ffff:203.0.113.2") is Admission.REFUSE_SUBNET  # v4-mapped counts as v4
    c.release("203.0.113.1")
    assert c.admit("203.0.113.3") is Admission.ADMIT
    for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.114.3", "2001:db8::1", "2001:db8::2"):
        c.release(ip)
    c.release("2001:db8::3")
    assert not c.per_ip and not c.per_subnet


def test_address_counter_exemptions():
    c = AddressCounter(limits(max_per_ip=1, max_per_subnet=1))
    assert all(c.admit("127.0.0.1") is Admission.ADMIT for _ in range(10))  # loopback exempt
    assert all(c.admit(None) is Admission.ADMIT for _ in range(3))  # not an IP transport
    assert c.admit("192.168.1.10") is Admission.ADMIT
    assert c.admit("192.168.1.11") is Admission.ADMIT  # a LAN: no subnet limit
    assert c.admit("192.168.1.11") is Admission.REFUSE_IP  # but still per IP
    strict = AddressCounter(
        limits(max_per_ip=1, max_per_subnet=1, limit_loopback=True, limit_private_subnets=True)
    )
    assert strict.admit("127.0.0.1") is Admission.ADMIT
    assert strict.admit("127.0.0.1") is Admission.REFUSE_IP
    assert strict.admit("127.0.0.2") is Admission.REFUSE_SUBNET
    assert strict.admit("192.168.1.10") is Admission.ADMIT
    assert strict.admit("192.168.1.11") is Admission.REFUSE_SUBNET


@given(
    st.lists(
        st.tuples(
            st.booleans(), st.sampled_from(["198.51.100.1", "198.51.100.2", "198.51.100.3", "2001:db8::9"])
        )
    )
)
def test_address_counter_never_exceeds_limits(ops: list[tuple[bool, str]]):
    lim = limits(max_per_ip=2, max_per_subnet=3)
    c = AddressCounter(lim)
    held: list[str] = []
    for admit, ip in ops:
        if admit:
            if c.admit(ip) is Admission.ADMIT:
                held.append(ip)
        elif ip in held:
            held.remove(ip)
            c.release(ip)
        assert all(v <= lim.max_per_ip for v in c.per_ip.values())
        assert all(v <= lim.max_per_subnet for v in c.per_subnet.values())
    for ip in held:
        c.release(ip)
    assert not c.per_ip and not c.per_subnet


def test_install_fails_loudly_when_libp2p_internals_are_missing():
    class NotASwarm:
        connections: dict[object, object] = {}

    with pytest.raises(Libp2pMismatch, match="_do_handle_inbound_connection"):
        connmgr.install_inbound_slot_release(NotASwarm())


# --- real hosts ----------------------------------------------------------------------


def new_host(max_connections: int = 8, psk: str | None = None) -> IHost:
    return build_host(Identity.generate(), max_connections=max_connections, min_peers=0, psk=psk)


def info_of(host: IHost) -> PeerInfo:
    return PeerInfo(host.get_id(), host.get_addrs())


def port_of(host: IHost) -> int:
    return int(host.get_addrs()[0].value_for_protocol("tcp"))


async def wait_until(predicate: Callable[[], bool], *, timeout: float) -> float:
    """Poll ``predicate`` until true; the seconds it took, or fail after ``timeout``."""
    start = trio.current_time()
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
    return trio.current_time() - start


def has_conns(host: IHost, peer: ID | None = None) -> bool:
    return bool(host.get_network().get_connections(peer))


async def connect_and_leave(
    target: IHost, *, psk: str | None = None, timeout: float = 5.0, closers: trio.Nursery | None = None
) -> bool:
    """A fresh identity connects to ``target`` and leaves; True if the connection worked.

    Returns once ``target`` no longer lists a connection to it, so cycles are
    sequential as ``target`` sees them. With ``closers``, the leaving host's own
    teardown (~0.2 s in libp2p) finishes there in the background.
    """
    peer = new_host(psk=psk)
    outcome: list[bool] = []
    leaving = trio.Event()

    async def life() -> None:
        async with serving(peer, listen=False):
            try:
                await dial(peer, info_of(target), timeout=timeout)
                outcome.append(True)
            except NetworkError:
                outcome.append(False)
            leaving.set()  # serving() now closes the host: that is the leave

    if closers is None:
        await life()
    else:
        closers.start_soon(life)
        await leaving.wait()
    await wait_until(lambda: not has_conns(target, peer.get_id()), timeout=10)
    return outcome[0]


def inbound_limiter(host: IHost) -> trio.CapacityLimiter:
    return host.get_network()._inbound_limiter  # type: ignore[attr-defined,no-any-return]


@pytest.mark.timeout(60)
async def test_unpatched_libp2p_leaks_inbound_slots():
    """Pitfall 25 as shipped: after max_connections connect-and-leave cycles, inbound is refused.

    If this starts failing, libp2p fixed the leak and the adapter can go.
    """
    target = new_host(max_connections=8)
    async with serving(target):
        with trio.fail_after(40):
            for _ in range(8):
                assert await connect_and_leave(target)
            assert inbound_limiter(target).borrowed_tokens == 8  # nobody connected, all slots held
            assert not await connect_and_leave(target, timeout=3)  # a fresh peer is refused


async def _cycles(n: int) -> tuple[float, connmgr.ConnStats, bool]:
    target = new_host(max_connections=8)
    manager = connmgr.install(target)
    async with serving(target), trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        start = time.monotonic()
        async with trio.open_nursery() as closers:
            for i in range(n):
                assert await connect_and_leave(target, closers=closers), f"cycle {i} refused"
        elapsed = time.monotonic() - start
        await wait_until(lambda: manager.stats().slots_in_use == 0, timeout=5)
        fresh_ok = await connect_and_leave(target)
        stats = manager.stats()
        nursery.cancel_scope.cancel()
    return elapsed, stats, fresh_ok


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_inbound_slots_come_back_after_200_cycles():
    with trio.fail_after(100):
        elapsed, stats, fresh_ok = await _cycles(200)
    assert fresh_ok
    assert stats.accepted == 201 and stats.slots_in_use == 0 and stats.connections == 0
    assert stats.inbound_cap == 7  # 8 minus the outbound reserve
    print(f"200 cycles: {elapsed:.1f} s, {stats}")


@pytest.mark.timeout(60)
async def test_banned_peer_redialling_holds_no_slot():
    """A peer banned by gossip is disconnected by its _BannedPeerGate each time; it keeps redialling."""
    target = new_host(max_connections=8)
    manager = connmgr.install(target)
    attacker = new_host()

    async def judge(data: bytes, peer: str, swarm: object) -> Verdict:
        return Verdict.ACCEPT

    gossip = RecordGossip(target, judge)
    async with serving(target), serving(attacker, listen=False), trio.open_nursery() as nursery:
        await nursery.start(gossip.run)
        assert gossip.penalise(attacker.get_id().to_base58(), weight=gossip.penalties.limit)
        with trio.fail_after(50):
            for _ in range(30):
                await wait_until(lambda: not has_conns(attacker, target.get_id()), timeout=10)
                with contextlib.suppress(NetworkError):
                    await dial(attacker, info_of(target), timeout=5)
            await wait_until(lambda: not has_conns(target) and manager.stats().slots_in_use == 0, timeout=10)
            assert gossip.stats.refused_connections >= 20  # it got through the handshake, again and again
            assert manager.stats().accepted == gossip.stats.refused_connections
            assert await connect_and_leave(target)
            await wait_until(lambda: manager.stats().slots_in_use == 0, timeout=5)
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(60)
async def test_failed_handshakes_and_wrong_pnet_key_hold_no_slot():
    key, wrong = "11" * 32, "22" * 32
    target = new_host(max_connections=8, psk=key)
    manager = connmgr.install(target)
    async with serving(target):
        with trio.fail_after(50):
            for _ in range(12):  # garbage instead of a handshake
                stream = await trio.open_tcp_stream("127.0.0.1", port_of(target))
                await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")
                await stream.aclose()
            await wait_until(lambda: manager.stats().failed_upgrades == 12, timeout=10)
            for _ in range(10):  # the wrong swarm key: the dial hangs (pitfall 14) until we give up
                assert not await connect_and_leave(target, psk=wrong, timeout=0.5)
            await wait_until(lambda: manager.stats().slots_in_use == 0, timeout=15)
            assert manager.stats().failed_upgrades >= 22  # the dialler may retry within its timeout
            assert await connect_and_leave(target, psk=key)  # the right key still gets in


async def _raw_from(source_ip: str, port: int) -> trio.SocketStream:
    sock = trio.socket.socket()
    await sock.bind((source_ip, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


@pytest.mark.timeout(60)
async def test_per_ip_and_per_subnet_limits_on_loopback():
    """With the loopback knob on, 127.0.0.2 and 127.0.0.3 share a /24: 2 per IP, 3 per subnet."""
    target = new_host(max_connections=16)
    lim = ConnLimits.for_max(16, max_per_ip=2, max_per_subnet=3, limit_loopback=True)
    manager = connmgr.install(target, limits=lim)
    async with serving(target), contextlib.AsyncExitStack() as held:
        with trio.fail_after(8):  # well inside libp2p's 10 s handshake timeout of the held sockets
            port = port_of(target)
            for _ in range(2):
                held.push_async_callback((await _raw_from("127.0.0.2", port)).aclose)
            await wait_until(lambda: manager.stats().slots_in_use == 2, timeout=5)
            refused = await _raw_from("127.0.0.2", port)
            await wait_until(lambda: manager.stats().refused_per_ip == 1, timeout=5)
            assert await refused.receive_some(100) == b""  # closed unread
            await refused.aclose()
            held.push_async_callback((await _raw_from("127.0.0.3", port)).aclose)
            await wait_until(lambda: manager.stats().slots_in_use == 3, timeout=5)
            refused = await _raw_from("127.0.0.3", port)
            await wait_until(lambda: manager.stats().refused_per_subnet == 1, timeout=5)
            await refused.aclose()
            assert not await connect_and_leave(target, timeout=3)  # 127.0.0.1 is in the same /24
            assert manager.stats().refused_per_subnet >= 2
            await held.aclose()  # the held sockets leave
            await wait_until(lambda: manager.stats().slots_in_use == 0, timeout=5)
            assert await connect_and_leave(target)
            await wait_until(lambda: manager.stats().slots_in_use == 0, timeout=5)


@pytest.mark.timeout(60)
async def test_refused_addresses_are_closed_unread_before_the_limits():
    """``is_refused_ip`` (the ban book's address limits) closes sockets unread; a raising one refuses none."""
    refused_ips = {"127.0.0.2"}
    target = new_host(max_connections=8)
    manager = connmgr.install(target, is_refused_ip=lambda ip: ip in refused_ips)
    async with serving(target):
        with trio.fail_after(20):
            refused = await _raw_from("127.0.0.2", port_of(target))
            await wait_until(lambda: manager.stats().refused_banned_ip == 1, timeout=5)
            assert await refused.receive_some(100) == b""  # closed unread
            await refused.aclose()
            assert manager.stats().slots_in_use == 0 and manager.stats().refused_per_ip == 0
            assert await connect_and_leave(target)  # 127.0.0.1 is not refused
            assert manager.stats().refused_banned_ip == 1

    def broken(ip: str | None) -> bool:
        raise RuntimeError("bug")

    target = new_host(max_connections=8)
    manager = connmgr.install(target, is_refused_ip=broken)
    async with serving(target):
        with trio.fail_after(20):
            assert await connect_and_leave(target)
            assert manager.stats().refused_banned_ip == 0


@contextlib.asynccontextmanager
async def idle_peers(target: IHost, n: int) -> AsyncIterator[list[IHost]]:
    """``n`` fresh identities connected to ``target`` and sitting idle."""
    peers = [new_host() for _ in range(n)]

    async def sit(peer: IHost, *, task_status: trio.TaskStatus[None]) -> None:
        async with serving(peer, listen=False):
            await dial(peer, info_of(target), timeout=5)
            task_status.started()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        for peer in peers:
            await nursery.start(sit, peer)
        yield peers
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(90)
async def test_flood_of_idle_strangers_members_and_own_dials_still_get_through():
    target = new_host(max_connections=16)
    members: set[ID] = set()
    lim = ConnLimits.for_max(16, grace=2.0, trim_interval=0.2, high_water=2, low_water=2)
    manager = connmgr.install(target, limits=lim, is_protected=lambda pid: pid in members)
    assert lim.inbound_cap == 14
    friend, member = new_host(), new_host()
    members.update({friend.get_id(), member.get_id()})
    async with serving(target), serving(friend), serving(member), trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        with trio.fail_after(60):
            flood_started = trio.current_time()
            async with idle_peers(target, 14) as strangers:
                assert manager.stats().slots_in_use == 14  # every inbound slot taken by a stranger
                assert not await connect_and_leave(target, timeout=3)  # inbound is full, for now
                await dial(target, info_of(friend), timeout=5)  # the outbound reserve: our own dial works
                assert has_conns(target, friend.get_id())
                # strangers are closed once their grace is over; the member then gets in and stays
                await wait_until(lambda: manager.stats().slots_in_use < lim.inbound_cap, timeout=10)
                assert trio.current_time() - flood_started >= lim.grace
                await dial(member, info_of(target), timeout=5)
                await wait_until(lambda: not any(has_conns(s) for s in strangers), timeout=10)
                assert manager.stats().trimmed == 14
                await wait_until(lambda: manager.stats().connections == 2, timeout=5)
                assert await manager.trim_once() == 0  # members are kept
                assert has_conns(target, member.get_id()) and has_conns(target, friend.get_id())
                assert manager.stats().trimmed == 14
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(30)
async def test_install_is_per_instance_idempotent_and_before_run():
    a, b = new_host(), new_host()
    manager = connmgr.install(a)
    manager.install()  # again: nothing changes
    assert "_do_handle_inbound_connection" in vars(a.get_network())
    assert "_do_handle_inbound_connection" not in vars(b.get_network())  # the class is untouched
    with pytest.raises(RuntimeError, match="another"):
        connmgr.install_inbound_slot_release(a.get_network())
    async with serving(a), serving(b):
        with pytest.raises(RuntimeError, match="before the host listens"):
            connmgr.install(b)
