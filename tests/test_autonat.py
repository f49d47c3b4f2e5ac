"""Reachability checks with real dial-backs on 127.0.0.1, and the pure decision core."""

from __future__ import annotations

import contextlib
import socket
import struct
import time

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from libp2p.peer.peerinfo import PeerInfo

from meshnode import wire
from meshnode.protocols.autonat import (
    PROTOCOL_ID,
    AutoNATLimits,
    AutoNATServer,
    Outcome,
    ProbeResult,
    Reachability,
    ReachabilityChecker,
    decide,
)
from meshnode.protocols.host import dial
from tests.netutil import running_hosts

pytestmark = pytest.mark.timeout(60)


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def server_and_client(n_servers: int = 1, limits: AutoNATLimits | None = None):
    async with running_hosts(n_servers + 1) as made, trio.open_nursery() as nursery:
        client, servers = made[0], made[1:]
        services = []
        for s in servers:
            service = AutoNATServer(s, limits=limits)
            await nursery.start(service.run)
            services.append(service)
            await dial(client, PeerInfo(s.get_id(), list(s.get_addrs())))
        yield client, servers, services
        nursery.cancel_scope.cancel()


# --- real dial-backs ---------------------------------------------------------------------


async def test_a_listening_client_is_dialled_back_and_found_public():
    async with server_and_client() as (client, (server,), (service,)):
        changes = []
        checker = ReachabilityChecker(client, on_change=changes.append)
        start = time.monotonic()
        status = await checker.check()
        took = (time.monotonic() - start) * 1000
        assert status.reachability is Reachability.PUBLIC, status.reason
        assert status.agreed == 1 and status.asked == 1 and status.answered == 1
        listen = str(client.get_addrs()[0]).split("/p2p/")[0]
        assert listen in status.reachable_addrs
        assert changes == [status]
        assert service.stats.dials_ok >= 1
        # The dial-back was a fresh connection, closed again: the client keeps one
        # connection to the server and no inbound slot is held (pitfall 25).
        assert len(client.get_network().get_connections(server.get_id())) == 1
        limiter = client.get_network()._inbound_limiter
        await _wait(lambda: limiter.borrowed_tokens == 0)
        # A second check with the same verdict does not call on_change again.
        assert (await checker.check()).reachability is Reachability.PUBLIC
        assert len(changes) == 1
        print(f"PUBLIC verdict from 1 server in {took:.0f} ms")


async def test_an_address_where_nothing_listens_is_private():
    port = closed_port()
    async with server_and_client() as (client, _servers, (service,)):
        checker = ReachabilityChecker(client, candidates=lambda: [f"/ip4/127.0.0.1/tcp/{port}"], ports=list)
        start = time.monotonic()
        status = await checker.check()
        took = (time.monotonic() - start) * 1000
        assert status.reachability is Reachability.PRIVATE, status.reason
        assert status.agreed == 1 and status.reachable_addrs == ()
        assert f"/ip4/127.0.0.1/tcp/{port}" in status.reason
        assert service.stats.dials == 1 and service.stats.dials_ok == 0
        print(f"PRIVATE verdict from 1 server in {took:.0f} ms")


async def test_the_server_never_dials_an_ip_other_than_the_requesters():
    async with server_and_client() as (client, _servers, (service,)):
        # A listener on 127.0.0.2 that must never see a connection.
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.2"))[0]
        port = listener.socket.getsockname()[1]
        accepted = []

        async def watch() -> None:
            while True:
                accepted.append(await listener.accept())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            checker = ReachabilityChecker(
                client, candidates=lambda: [f"/ip4/127.0.0.2/tcp/{port}"], ports=list
            )
            status = await checker.check()
            nursery.cancel_scope.cancel()
        await listener.aclose()
        assert status.reachability is Reachability.UNKNOWN
        assert "not_yours" in status.reason
        assert [r.detail for r in checker.last_results] == ["not_yours"]
        assert service.stats.dials == 0 and service.stats.not_yours == 1
        assert accepted == []


async def test_the_port_list_finds_the_address_the_server_sees():
    async with server_and_client() as (client, _servers, _services):
        port = int(client.get_addrs()[0].value_for_protocol("tcp"))
        checker = ReachabilityChecker(client, candidates=list, ports=lambda: [port])
        status = await checker.check()
        assert status.reachability is Reachability.PUBLIC
        assert status.reachable_addrs == (f"/ip4/127.0.0.1/tcp/{port}",)


async def test_two_confirmations_need_two_servers():
    async with server_and_client(n_servers=2) as (client, servers, _services):
        checker = ReachabilityChecker(client, confirmations=2)
        status = await checker.check()
        assert status.reachability is Reachability.PUBLIC and status.agreed == 2
        one = await ReachabilityChecker(client, confirmations=2).check(servers=[servers[0].get_id()])
        assert one.reachability is Reachability.UNKNOWN
        assert "need 2" in one.reason


async def test_requests_are_rate_limited_per_peer():
    limits = AutoNATLimits(peer_burst=2, peer_rate=1 / 3600)
    async with server_and_client(limits=limits) as (client, _servers, (service,)):
        checker = ReachabilityChecker(client)
        assert (await checker.check()).reachability is Reachability.PUBLIC
        assert (await checker.check()).reachability is Reachability.PUBLIC
        third = await checker.check()
        assert third.reachability is Reachability.UNKNOWN
        assert [r.detail for r in checker.last_results] == ["rate_limited"]
        assert service.stats.refused == 1


async def test_garbage_requests_do_not_hurt_the_server():
    limits = AutoNATLimits(peer_burst=10, ip_burst=10)  # garbage costs rate tokens too
    async with server_and_client(limits=limits) as (client, (server,), (service,)):
        # An oversize length prefix, a non-canonical map, a wrong version, then silence.
        for payload in (
            struct.pack(">I", 1 << 30),
            struct.pack(">I", 3) + b"\xa1\x61v",
            _frame({"v": 2, "addrs": []}),
            _frame({"v": 1, "addrs": ["x" * 300]}),
        ):
            stream = await client.new_stream(server.get_id(), [PROTOCOL_ID])
            await stream.write(payload)
            with trio.fail_after(10):
                await _drain(stream)
        # The host still serves honest requests.
        checker = ReachabilityChecker(client)
        assert (await checker.check()).reachability is Reachability.PUBLIC
        assert service.stats.errors >= 2 and service.stats.refused >= 2


async def test_a_peer_without_the_protocol_is_no_evidence():
    async with running_hosts(2) as (client, other):
        await dial(client, PeerInfo(other.get_id(), list(other.get_addrs())))
        status = await ReachabilityChecker(client).check()
        assert status.reachability is Reachability.UNKNOWN
        assert status.asked == 1 and status.answered == 0


async def _drain(stream) -> None:
    """Read until the server ends the stream (EOF or reset)."""
    try:
        while await stream.read(1024):
            pass
    except Exception:
        pass


def _frame(value) -> bytes:
    payload = wire.encode(value)
    return struct.pack(">I", len(payload)) + payload


async def _wait(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


# --- the pure decision core --------------------------------------------------------------


def r(server: str, addr: str, outcome: Outcome, detail: str = "") -> ProbeResult:
    return ProbeResult(server, addr, outcome, detail)


A1, A2 = "/ip4/198.51.100.7/tcp/4001", "/ip4/198.51.100.7/tcp/4002"


def test_decide_public_with_one_server():
    status = decide([r("s1", A1, Outcome.OK), r("s1", A2, Outcome.FAILED)])
    assert status.reachability is Reachability.PUBLIC
    assert status.agreed == 1 and status.reachable_addrs == (A1,)


def test_decide_private_needs_a_tested_failure_and_no_success():
    assert decide([r("s1", A1, Outcome.FAILED)]).reachability is Reachability.PRIVATE
    only_refused = decide([r("s1", A1, Outcome.REFUSED, "not_yours"), r("s2", "", Outcome.ERROR, "timeout")])
    assert only_refused.reachability is Reachability.UNKNOWN
    assert "not_yours" in only_refused.reason and "timeout" in only_refused.reason


def test_decide_success_outweighs_failures_elsewhere():
    results = [r("s1", A1, Outcome.OK)] + [r(f"f{i}", A1, Outcome.FAILED) for i in range(3)]
    status = decide(results)
    assert status.reachability is Reachability.PUBLIC
    assert status.answered == 4 and "3 could not" in status.reason


def test_decide_conflict_below_confirmations_is_unknown():
    status = decide([r("s1", A1, Outcome.OK), r("s2", A1, Outcome.FAILED), r("s3", A1, Outcome.FAILED)], 2)
    assert status.reachability is Reachability.UNKNOWN
    assert "conflicting" in status.reason


def test_decide_nothing_asked():
    status = decide([], asked=0)
    assert status.reachability is Reachability.UNKNOWN and status.reason == "no server to ask"


outcomes = st.sampled_from(list(Outcome))
results_strategy = st.lists(
    st.builds(
        ProbeResult, st.sampled_from(["s1", "s2", "s3", "s4"]), st.sampled_from([A1, A2, ""]), outcomes
    ),
    max_size=16,
)


@given(results_strategy, st.integers(min_value=1, max_value=4))
def test_decide_properties(results, confirmations):
    status = decide(results, confirmations)
    ok = {x.server for x in results if x.outcome is Outcome.OK}
    failed = {x.server for x in results if x.outcome is Outcome.FAILED} - ok
    if len(ok) >= confirmations:
        assert status.reachability is Reachability.PUBLIC and status.agreed == len(ok)
        assert set(status.reachable_addrs) == {x.addr for x in results if x.outcome is Outcome.OK}
    elif not ok and len(failed) >= confirmations:
        assert status.reachability is Reachability.PRIVATE and status.agreed == len(failed)
    else:
        assert status.reachability is Reachability.UNKNOWN and status.agreed == 0
    # Never PRIVATE when anyone reached us; never a verdict without enough servers.
    assert not (ok and status.reachability is Reachability.PRIVATE)
    if status.reachability is not Reachability.UNKNOWN:
        assert status.agreed >= confirmations
    assert status.answered == len(ok) + len(failed)
    assert status.reason
