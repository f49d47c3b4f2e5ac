"""Bans: the pure ban book, its file in the home, and one book shared by all of a node's hosts."""

from __future__ import annotations

import contextlib
import logging
import os
import stat

import cbor2
import pytest
import trio
import trio.lowlevel
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.peer.id import ID

from meshnode import wire
from meshnode.bans import DAY_MS, HOUR_MS, BanBook, BanPolicy, address_key
from meshnode.errors import BadValue, DecodeError, NetworkError
from meshnode.identity import Identity
from meshnode.node import Node, NodeConfig
from meshnode.protocols.host import build_host, dial, peer_info_of
from meshnode.sharedbans import SharedBans
from meshnode.store import Store
from meshnode.swarm import Swarm
from tests.netutil import running_nodes, serving, wait_until

T0 = 1_700_000_000_000
PEERS = [Identity.generate().peer_id for _ in range(8)]
P, Q, R, S = PEERS[:4]


# --- the pure book --------------------------------------------------------------------


def test_a_ban_lasts_an_hour_and_ends():
    book = BanBook()
    outcome = book.ban(P, "203.0.113.7", T0)
    assert outcome.banned and outcome.until == T0 + HOUR_MS
    assert book.is_banned(P, T0 + HOUR_MS - 1)
    assert not book.is_banned(P, T0 + HOUR_MS)
    assert not book.is_banned(Q, T0)
    assert book.counts(T0).peers == 1 and book.counts(T0 + HOUR_MS).peers == 0


def test_a_banned_peer_is_not_banned_twice_and_gains_no_strike():
    book = BanBook()
    book.ban(P, None, T0)
    again = book.ban(P, None, T0 + 10)
    assert not again.banned and again.until == T0 + HOUR_MS
    assert book.ban(P, None, T0 + HOUR_MS).until == T0 + HOUR_MS + 2 * HOUR_MS  # second strike, not third


def test_repeat_offenders_are_banned_longer_up_to_the_bound_then_forgotten():
    policy = BanPolicy()
    book = BanBook(policy)
    now, lengths = T0, []
    for _ in range(12):
        outcome = book.ban(P, None, now)
        lengths.append((outcome.until - now) // HOUR_MS)
        now = outcome.until
        assert book.on_probation(P, now) and not book.is_banned(P, now)
    assert lengths == [1, 2, 4, 8, 16, 32, 64, 128, 168, 168, 168, 168]
    # Forgotten memory_ms after the last ban ended: a first ban again.
    later = now + policy.memory_ms
    assert not book.on_probation(P, later)
    assert book.ban(P, None, later).until == later + HOUR_MS


def test_expire_forgets_ended_bans_after_the_memory():
    book = BanBook(BanPolicy(memory_ms=DAY_MS))
    book.ban(P, "203.0.113.7", T0)
    book.changed = False
    assert book.expire(T0 + HOUR_MS - 1) == 0 and len(book) == 2 and not book.changed
    assert book.expire(T0 + HOUR_MS) == 1 and len(book) == 1  # the address: its one ban left the window
    assert book.on_probation(P, T0 + HOUR_MS + DAY_MS - 1)
    assert book.expire(T0 + HOUR_MS + DAY_MS) == 1 and len(book) == 0 and book.changed


def test_three_bans_from_one_address_within_an_hour_refuse_it():
    book = BanBook()
    assert not book.ban(P, "203.0.113.7", T0).address
    assert not book.ban(Q, "203.0.113.7", T0 + 1000).address
    assert not book.ip_refused("203.0.113.7", T0 + 2000)
    third = book.ban(R, "203.0.113.7", T0 + 2000)
    assert third.address == "203.0.113.7" and not third.exempt
    assert book.ip_refused("203.0.113.7", T0 + 2000)
    assert book.ip_refused("::ffff:203.0.113.7", T0 + 2000)  # the same address, IPv4-mapped
    assert not book.ip_refused("203.0.113.8", T0 + 2000)
    assert book.counts(T0 + 2000).addresses == 1
    assert not book.ip_refused("203.0.113.7", T0 + 2000 + HOUR_MS)
    # Three more within an hour: refused again, twice as long.
    t = T0 + 3 * HOUR_MS
    for i, peer in enumerate((S, PEERS[4], PEERS[5])):
        outcome = book.ban(peer, "203.0.113.7", t + i)
    assert outcome.address and book.ip_refused("203.0.113.7", t + 2 + 2 * HOUR_MS - 1)


def test_bans_spread_over_more_than_the_window_do_not_refuse_the_address():
    book = BanBook()
    for i, peer in enumerate((P, Q, R, S)):
        assert book.ban(peer, "203.0.113.7", T0 + i * (HOUR_MS // 2 + 1)).address is None
    assert not book.ip_refused("203.0.113.7", T0 + 2 * HOUR_MS)


def test_ipv6_counts_per_64():
    book = BanBook()
    for peer, ip in ((P, "2001:db8:1:2::1"), (Q, "2001:db8:1:2::ffff"), (R, "2001:db8:1:2:abcd::9")):
        outcome = book.ban(peer, ip, T0)
    assert outcome.address == "2001:db8:1:2::/64"
    assert book.ip_refused("2001:db8:1:2::77", T0)
    assert not book.ip_refused("2001:db8:1:3::1", T0)


def test_loopback_is_counted_but_exempt_unless_limited_and_says_so():
    book = BanBook()
    outcomes = [book.ban(p, "127.0.0.1", T0) for p in (P, Q, R)]
    assert outcomes[-1].exempt and outcomes[-1].address is None
    assert not book.ip_refused("127.0.0.1", T0)
    limited = BanBook(BanPolicy(limit_loopback=True))
    outcomes = [limited.ban(p, "127.0.0.1", T0) for p in (P, Q, R)]
    assert outcomes[-1].address == "127.0.0.1" and not outcomes[-1].exempt
    assert limited.ip_refused("127.0.0.1", T0)


def test_unknown_addresses_count_nothing_and_bad_peer_ids_are_refused():
    book = BanBook()
    for ip in (None, "", "not an ip", "x" * 500):
        assert book.ban(PEERS[6], ip, T0).address is None
        assert not book.ip_refused(ip, T0)
        book = BanBook()
    assert address_key("fe80::1%eth0") == ("fe80::/64", False)
    for bad in ("", "0OIl", "x" * 65, "peer id"):
        with pytest.raises(BadValue):
            book.ban(bad, None, T0)
    assert len(book) == 0


def test_the_book_is_bounded_and_keeps_the_longest_bans():
    book = BanBook(BanPolicy(max_peers=3, max_addresses=2))
    for i, peer in enumerate(PEERS[:6]):
        book.ban(peer, f"203.0.113.{i}", T0 + i)
    assert sorted(book.banned_peers(T0 + 10)) == sorted(PEERS[3:6])
    assert len(book) == 5


@pytest.mark.parametrize(
    "policy",
    [
        {"first_ban_ms": 0},
        {"first_ban_ms": 2 * DAY_MS, "max_ban_ms": DAY_MS},
        {"ip_limit": 0},
        {"memory_ms": -1},
        {"max_peers": 0},
        {"ip_window_ms": True},
    ],
)
def test_bad_policies_are_refused(policy):
    with pytest.raises(BadValue):
        BanPolicy(**policy)


# --- serialisation ----------------------------------------------------------------------


def _full_book() -> BanBook:
    book = BanBook()
    book.ban(P, "203.0.113.7", T0)
    book.ban(Q, "203.0.113.7", T0 + 1)
    book.ban(R, "2001:db8::1", T0 + 2)
    return book


def test_the_book_round_trips_and_drops_what_expired():
    book = _full_book()
    again = BanBook.decode(book.encode(), now=T0 + 10)
    assert again.to_value() == book.to_value() and not again.changed
    assert again.is_banned(P, T0 + 10)
    later = BanBook.decode(book.encode(), now=T0 + HOUR_MS + 8 * DAY_MS)
    assert len(later) == 0


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        {"v": 2, "peers": [], "addresses": []},
        {"v": 1, "peers": []},
        {"v": 1, "peers": [], "addresses": [], "extra": 1},
        {"v": 1, "peers": {}, "addresses": []},
        {"v": 1, "peers": [[P, T0]], "addresses": []},
        {"v": 1, "peers": [["not a peer", T0, 1]], "addresses": []},
        {"v": 1, "peers": [[P, -1, 1]], "addresses": []},
        {"v": 1, "peers": [[P, 1 << 60, 1]], "addresses": []},
        {"v": 1, "peers": [[P, T0, 0]], "addresses": []},
        {"v": 1, "peers": [[P, T0, 65]], "addresses": []},
        {"v": 1, "peers": [[P, True, 1]], "addresses": []},
        {"v": 1, "peers": [], "addresses": [["203.0.113.300", T0, 1, []]]},
        {"v": 1, "peers": [], "addresses": [["::ffff:203.0.113.7", T0, 1, []]]},
        {"v": 1, "peers": [], "addresses": [["2001:db8::1", T0, 1, []]]},
        {"v": 1, "peers": [], "addresses": [["203.0.113.7", T0, 1, [T0] * 65]]},
        {"v": 1, "peers": [], "addresses": [["203.0.113.7", T0, 1, ["x"]]]},
        {"v": 1, "peers": [[P, T0, 1]] * 70_000, "addresses": []},
    ],
)
def test_decoding_refuses_what_is_not_a_ban_book(value):
    with pytest.raises(DecodeError):
        BanBook.from_value(value, now=T0)


def test_decoding_refuses_bytes_that_are_not_canonical_cbor():
    for data in (
        b"",
        b"\xff",
        cbor2.dumps({"v": 1.0}),
        wire.encode({"v": 1, "peers": [], "addresses": []}) + b"\0",
    ):
        with pytest.raises(DecodeError):
            BanBook.decode(data, now=T0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_decode_or_raise_decode_error(data):
    with contextlib.suppress(DecodeError):
        BanBook.decode(data, now=T0)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_ban_files_decode_or_raise_decode_error(data):
    encoded = bytearray(_full_book().encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        book = BanBook.decode(bytes(encoded), now=T0)
        assert len(book) <= 6


# --- the file in the home ------------------------------------------------------------------


def test_the_ban_file_is_written_atomically_0600_and_read_back(tmp_path):
    path = tmp_path / "bans.cbor"
    clock = [T0]
    bans = SharedBans.load(path, clock=lambda: clock[0])
    bans.save_now()
    assert not path.exists()  # nothing changed, nothing written
    bans.ban(P, "203.0.113.7")
    bans.save_now()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["bans.cbor"]  # no temp file left
    again = SharedBans.load(path, clock=lambda: clock[0])
    assert again.is_banned(P) and not again.is_banned(Q)
    clock[0] += HOUR_MS
    assert not again.is_banned(P) and again.on_probation(P)


@pytest.mark.parametrize("content", [b"", b"\xff\xfe garbage", wire.encode({"v": 9})])
def test_a_corrupt_ban_file_is_a_warning_and_an_empty_book(tmp_path, caplog, content):
    path = tmp_path / "bans.cbor"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="meshnode.sharedbans"):
        bans = SharedBans.load(path, clock=lambda: T0)
    assert len(bans.book) == 0
    assert "corrupt" in caplog.text and "starting with no bans" in caplog.text


def test_an_unreadable_ban_file_is_a_warning_and_an_empty_book(tmp_path, caplog):
    path = tmp_path / "bans.cbor"
    path.mkdir()  # reading a directory fails with an OSError
    with caplog.at_level(logging.WARNING, logger="meshnode.sharedbans"):
        bans = SharedBans.load(path, clock=lambda: T0)
    assert len(bans.book) == 0 and "cannot read" in caplog.text
    bans.ban(P, None)
    bans.save_now()  # cannot replace a directory: logged, kept for the next try
    assert bans.book.changed


def test_the_home_names_the_ban_file(tmp_path):
    from meshnode.home import Home

    assert Home(tmp_path).bans == tmp_path / "bans.cbor"


# --- one book for every host of a node, across restarts -----------------------------------


@contextlib.asynccontextmanager
async def one_node(tmp_path, identity, clock=None, **config):
    store = Store.open(tmp_path / f"{identity.peer_id[-8:]}.db")
    extra = {"clock": clock} if clock is not None else {}
    node = Node(identity, store, NodeConfig(listen=["/ip4/127.0.0.1/tcp/0"], **config), **extra)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            yield node
            nursery.cancel_scope.cancel()
    finally:
        store.close()


def _connected(a: Node, b: Node) -> bool:
    return b.peer_id in a.connected_peers()


@pytest.mark.timeout(90)
async def test_a_ban_on_a_private_network_refuses_the_peer_on_the_open_one_too(tmp_path):
    private = Swarm.create("Quiet Close", private=True)
    public = Swarm.create("Elm Street")
    async with running_nodes(tmp_path, 2, dial_timeout=3.0) as (a, b):
        for node in (a, b):
            await node.join_swarm(private)
            await node.join_swarm(public)
        await b.connect(a.addrs(private)[0], swarm=private)
        await b.connect(a.addrs(public)[0])
        priv, open_ = a.network(private), a.network(public)
        await wait_until(lambda: b.peer_id in priv.connected() and b.peer_id in open_.connected(), timeout=10)
        assert priv is not open_ and priv.gossip.bans is open_.gossip.bans is a.bans

        assert priv.gossip.penalise(b.peer_id, weight=priv.gossip.penalties.limit)
        assert open_.is_banned(b.peer_id) and a.gossip_stats()["bans"] == 1
        await wait_until(lambda: not _connected(a, b) and not _connected(b, a), timeout=10)
        pid = ID.from_base58(b.peer_id)
        assert pid in priv.gossip.pubsub.blacklisted_peers and pid in open_.gossip.pubsub.blacklisted_peers
        # It comes back on the open network: the gate closes it once the handshake names it.
        refused = open_.gossip.stats.refused_connections
        with contextlib.suppress(NetworkError):
            await b.connect(a.addrs(public)[0])
        await wait_until(lambda: open_.gossip.stats.refused_connections > refused, timeout=10)
        await wait_until(lambda: not _connected(a, b), timeout=10)
        assert a.gossip_stats()["banned_peers"] == 1  # one ban, enforced on both hosts


@pytest.mark.timeout(90)
async def test_a_ban_survives_a_restart_and_ends_when_it_expires(tmp_path):
    clock = [T0]
    identity = Identity.generate()
    bans_path = tmp_path / "bans.cbor"
    offender = Identity.generate().peer_id
    async with one_node(tmp_path, identity, lambda: clock[0], bans_path=bans_path) as node:
        assert node.network().gossip.penalise(offender, weight=node.config.penalty_limit)
    assert stat.S_IMODE(os.stat(bans_path).st_mode) == 0o600
    async with one_node(tmp_path, identity, lambda: clock[0], bans_path=bans_path) as node:
        net = node.network()
        pid = ID.from_base58(offender)
        assert net.is_banned(offender) and node.gossip_stats()["bans"] == 1
        assert pid in net.gossip.pubsub.blacklisted_peers
        clock[0] += HOUR_MS
        node.bans.sweep()
        assert not net.is_banned(offender) and node.gossip_stats()["bans"] == 0
        assert pid not in net.gossip.pubsub.blacklisted_peers
        # On probation: its next offence bans it again, for two hours.
        assert net.gossip.penalise(offender, weight=1)
        assert node.bans.book.banned_peers(clock[0] + 2 * HOUR_MS - 1) == [offender]
    assert BanBook.decode(bans_path.read_bytes(), now=clock[0]).is_banned(offender, clock[0])


async def _ban_fresh_keys(target: Node, n: int) -> None:
    """``n`` fresh keys connect to ``target`` from 127.0.0.1 and are banned there."""
    net = target.network()
    for _ in range(n):
        host = build_host(Identity.generate(), min_peers=0)
        async with serving(host, listen=False):
            await dial(host, peer_info_of(target.addrs()[0]), timeout=5)
            peer = host.get_id().to_base58()
            await wait_until(lambda p=peer: net.peer_ip(p) == "127.0.0.1", timeout=10)
            assert net.gossip.penalise(peer, weight=target.config.penalty_limit)


async def _fresh_key_gets_in(target: Node) -> bool:
    host = build_host(Identity.generate(), min_peers=0)
    async with serving(host, listen=False):
        try:
            await dial(host, peer_info_of(target.addrs()[0]), timeout=3)
        except NetworkError:
            return False
        await trio.lowlevel.checkpoint()
        return bool(host.get_connected_peers())


@pytest.mark.timeout(90)
async def test_an_address_whose_keys_were_banned_refuses_a_fresh_key(tmp_path):
    policy = BanPolicy(limit_loopback=True)  # every test peer is 127.0.0.1: count it as any address
    async with one_node(tmp_path, Identity.generate(), ban_policy=policy) as node:
        await _ban_fresh_keys(node, policy.ip_limit)
        assert node.bans.ip_refused("127.0.0.1") and node.gossip_stats()["banned_addresses"] == 1
        assert not await _fresh_key_gets_in(node)
        assert node.network().connmgr.stats().refused_banned_ip >= 1
        assert node.network_status()[0]["connections"]["refused_banned_ip"] >= 1


@pytest.mark.timeout(90)
async def test_by_default_loopback_is_exempt_from_address_limits_and_it_is_said(tmp_path, caplog):
    async with one_node(tmp_path, Identity.generate()) as node:
        with caplog.at_level(logging.WARNING, logger="meshnode.sharedbans"):
            await _ban_fresh_keys(node, node.config.ban_policy.ip_limit)
        assert not node.bans.ip_refused("127.0.0.1") and node.bans.exempt_limits == 1
        assert "loopback is exempt" in caplog.text
        assert await _fresh_key_gets_in(node)
