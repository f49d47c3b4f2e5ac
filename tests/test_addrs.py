"""Advertised addresses (meshnode.addrs) and the address book (meshnode.addrbook): pure, no sockets."""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode import addrs as a
from meshnode.addrbook import EXPIRE_MS, MAX_ADDRS, MAX_PEERS, AddressBook, valid_addr
from meshnode.errors import DecodeError

PEER = "12D3KooWHT5sHybxFXhDkm2gPASTivnjHynJrkULd1JX7w18LBAP"
RELAY = "12D3KooWFMT6xP9C8dL6t52Qs6rh1PUnvjQb2tMPyWLWRNJpn5yk"
IFACES = ["127.0.0.1", "192.168.1.20", "::1", "fe80::1", "2001:4860::20", "81.2.69.160"]


# --------------------------------------------------------------------------- advertised


def test_wildcard_is_expanded_never_advertised() -> None:
    got = a.advertised(listen=["/ip4/0.0.0.0/tcp/4001"], interfaces=IFACES)
    assert "/ip4/0.0.0.0/tcp/4001" not in got
    assert got == ["/ip4/81.2.69.160/tcp/4001", "/ip4/192.168.1.20/tcp/4001"]  # public first, no loopback


def test_ipv6_wildcard_takes_global_and_private_not_link_local_or_loopback() -> None:
    got = a.advertised(listen=["/ip6/::/tcp/4001"], interfaces=IFACES)
    assert got == ["/ip6/2001:4860::20/tcp/4001"]


def test_loopback_only_when_listening_on_loopback_alone() -> None:
    assert a.advertised(listen=["/ip4/127.0.0.1/tcp/5000"], interfaces=IFACES) == ["/ip4/127.0.0.1/tcp/5000"]
    both = a.advertised(listen=["/ip4/127.0.0.1/tcp/5000", "/ip4/192.168.1.20/tcp/5000"], interfaces=IFACES)
    assert both == ["/ip4/192.168.1.20/tcp/5000"]


def test_order_announce_mapped_observed_public_relayed_private() -> None:
    got = a.advertised(
        listen=["/ip4/0.0.0.0/tcp/4001"],
        interfaces=["192.168.1.20"],
        announce=["/ip4/81.2.69.161/tcp/4001"],
        mapped=["/ip4/81.2.69.162/tcp/4001", "/ip4/10.0.0.1/tcp/4001"],  # double NAT: not advertised
        observed=["/ip4/81.2.69.163/tcp/4001"],
        relayed=[f"/ip4/81.2.69.1/tcp/4001/p2p/{RELAY}/p2p-circuit"],
    )
    assert got == [
        "/ip4/81.2.69.161/tcp/4001",
        "/ip4/81.2.69.162/tcp/4001",
        "/ip4/81.2.69.163/tcp/4001",
        f"/ip4/81.2.69.1/tcp/4001/p2p/{RELAY}/p2p-circuit",
        "/ip4/192.168.1.20/tcp/4001",
    ]


def test_at_most_eight_and_no_duplicates() -> None:
    ifaces = [f"192.168.1.{i}" for i in range(1, 20)] + ["192.168.1.1"]
    got = a.advertised(listen=["/ip4/0.0.0.0/tcp/1"], interfaces=ifaces, announce=["/ip4/192.168.1.1/tcp/1"])
    assert len(got) == a.MAX_ADVERTISED
    assert len(set(got)) == len(got)


@pytest.mark.parametrize(
    ("text", "scope"),
    [
        ("8.8.4.4", a.Scope.PUBLIC),
        ("10.1.2.3", a.Scope.PRIVATE),
        ("100.64.0.1", a.Scope.PRIVATE),
        ("172.16.0.1", a.Scope.PRIVATE),
        ("169.254.1.1", a.Scope.PRIVATE),
        ("127.0.0.1", a.Scope.LOOPBACK),
        ("0.0.0.0", a.Scope.UNUSABLE),
        ("224.0.0.251", a.Scope.UNUSABLE),
        ("::", a.Scope.UNUSABLE),
        ("::1", a.Scope.LOOPBACK),
        ("fd00::1", a.Scope.PRIVATE),
        ("fe80::1", a.Scope.UNUSABLE),
        ("2001:4860::1", a.Scope.PUBLIC),
        ("::ffff:10.0.0.1", a.Scope.PRIVATE),
    ],
)
def test_scopes(text: str, scope: a.Scope) -> None:
    assert a.scope_of(ipaddress.ip_address(text)) is scope


def test_strip_and_with_peer() -> None:
    assert a.strip_peer(f"/ip4/1.2.3.4/tcp/1/p2p/{PEER}") == "/ip4/1.2.3.4/tcp/1"
    circuit = f"/ip4/1.2.3.4/tcp/1/p2p/{RELAY}/p2p-circuit"
    assert a.strip_peer(f"{circuit}/p2p/{PEER}") == circuit
    assert a.strip_peer(circuit) == circuit
    assert a.with_peer(f"/ip4/1.2.3.4/tcp/1/p2p/{PEER}", PEER) == f"/ip4/1.2.3.4/tcp/1/p2p/{PEER}"


def test_dial_order_prefers_private_for_lan_peers() -> None:
    addrs = ["/ip4/192.168.1.5/tcp/1", "/ip4/127.0.0.1/tcp/1", "/ip4/81.2.69.160/tcp/1"]
    assert a.order_for_dial(addrs) == [
        "/ip4/81.2.69.160/tcp/1",
        "/ip4/192.168.1.5/tcp/1",
        "/ip4/127.0.0.1/tcp/1",
    ]
    assert a.order_for_dial(addrs, prefer_private=True)[0] == "/ip4/192.168.1.5/tcp/1"


@given(st.text(max_size=80))
def test_split_never_raises(text: str) -> None:
    a.split_tcp(text)
    a.strip_peer(text)
    valid_addr(text)


# --------------------------------------------------------------------------- address book

SW = bytes(32)
SW2 = bytes([1]) * 32


def peer(i: int) -> str:
    # base58 alphabet only (no 0, O, I, l)
    digits = "123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    out = ""
    n = i
    for _ in range(6):
        out += digits[n % len(digits)]
        n //= len(digits)
    return "12D3KooW" + out + "x" * 38


def test_learn_keeps_valid_addresses_only() -> None:
    book = AddressBook()
    ok = book.learn(
        SW,
        PEER,
        [
            "/ip4/192.168.1.5/tcp/4001",
            f"/ip4/192.168.1.6/tcp/4001/p2p/{PEER}",
            f"/ip4/192.168.1.7/tcp/4001/p2p/{RELAY}",  # names another peer
            "/ip4/0.0.0.0/tcp/4001",  # unspecified
            "/ip4/192.168.1.8/tcp/0",  # no port
            "/ip4/192.168.1.9/udp/4001/quic-v1",
            f"/ip4/81.2.69.1/tcp/4001/p2p/{RELAY}/p2p-circuit",
            "garbage",
            "/ip4/192.168.1.5/tcp/4001",  # duplicate
        ],
        "invite",
        1000,
    )
    assert ok
    entry = book.entry(SW, PEER)
    assert entry is not None
    assert set(entry.addrs) == {
        "/ip4/192.168.1.5/tcp/4001",
        "/ip4/192.168.1.6/tcp/4001",
        f"/ip4/81.2.69.1/tcp/4001/p2p/{RELAY}/p2p-circuit",
    }
    assert not book.learn(SW, PEER, ["nonsense"], "px", 1000)
    assert not book.learn(SW, "not a peer id!", ["/ip4/1.2.3.4/tcp/1"], "px", 1000)
    assert not book.learn(SW, PEER, ["/ip4/1.2.3.4/tcp/1"], "made-up-source", 1000)


def test_due_orders_recently_good_first_and_backs_off() -> None:
    book = AddressBook(base_backoff_ms=1000, max_backoff_ms=8000)
    for i in range(4):
        book.learn(SW, peer(i), [f"/ip4/10.0.0.{i + 1}/tcp/1"], "px", 100 + i)
    book.connected(SW, peer(1), 500, addr="/ip4/10.0.0.2/tcp/1")
    book.connected(SW, peer(2), 900)
    order = [e.peer for e in book.due(SW, 1000)]
    assert order == [peer(2), peer(1), peer(3), peer(0)]  # connected newest first, then newest learned
    assert next(e.peer for e in book.due(SW, 1000, exclude={peer(2)})) == peer(1)
    delays = [book.dial_failed(SW, peer(3), 1000) for _ in range(6)]
    assert delays == [1000, 2000, 4000, 8000, 8000, 8000]
    assert peer(3) not in [e.peer for e in book.due(SW, 1000 + 7999)]
    assert peer(3) in [e.peer for e in book.due(SW, 1000 + 8000)]
    book.connected(SW, peer(3), 20_000)
    assert book.entry(SW, peer(3)).failures == 0  # type: ignore[union-attr]


def test_addresses_that_worked_come_first() -> None:
    book = AddressBook()
    book.learn(SW, PEER, ["/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/1", "/ip4/10.0.0.3/tcp/1"], "invite", 1)
    book.connected(SW, PEER, 50, addr=f"/ip4/10.0.0.3/tcp/1/p2p/{PEER}")
    book.connected(SW, PEER, 60, addr="/ip4/10.0.0.2/tcp/1")
    assert book.entry(SW, PEER).addrs[:2] == ("/ip4/10.0.0.2/tcp/1", "/ip4/10.0.0.3/tcp/1")  # type: ignore[union-attr]


def test_per_peer_and_per_swarm_bounds_protect_good_peers() -> None:
    book = AddressBook()
    book.learn(SW, PEER, [f"/ip4/10.0.1.{i}/tcp/1" for i in range(1, 30)], "px", 1)
    assert len(book.entry(SW, PEER).addrs) == MAX_ADDRS  # type: ignore[union-attr]
    for i in range(MAX_PEERS):
        book.learn(SW, peer(i), ["/ip4/10.0.0.1/tcp/1"], "px", i)
        book.connected(SW, peer(i), 10_000 + i)
    book.forget(SW, PEER)
    assert len(book.peers(SW)) == MAX_PEERS - 1 or len(book.peers(SW)) == MAX_PEERS
    # The swarm is full of peers that worked: hearsay cannot push any of them out.
    for i in range(MAX_PEERS, MAX_PEERS + 50):
        book.learn(SW, peer(i), ["/ip4/10.0.0.1/tcp/1"], "px", 20_000)
    assert all(book.entry(SW, peer(i)) is not None for i in range(MAX_PEERS))
    assert len(book.peers(SW)) <= MAX_PEERS
    # A peer actually connected does make room (the longest unseen goes).
    book.connected(SW, peer(10_000), 30_000)
    assert book.entry(SW, peer(10_000)) is not None
    assert len(book.peers(SW)) <= MAX_PEERS


def test_expiry() -> None:
    book = AddressBook()
    book.learn(SW, peer(1), ["/ip4/10.0.0.1/tcp/1"], "px", 0)
    book.learn(SW, peer(2), ["/ip4/10.0.0.2/tcp/1"], "px", 0)
    book.connected(SW, peer(2), EXPIRE_MS, addr="/ip4/10.0.0.2/tcp/1")
    assert book.expire(EXPIRE_MS + 1) == 1
    assert book.peers(SW) == [peer(2)]


def test_shareable_only_seen_peers_and_not_the_asker() -> None:
    book = AddressBook()
    book.learn(SW, peer(1), ["/ip4/10.0.0.1/tcp/1"], "px", 0)  # hearsay only
    book.learn(SW, peer(2), ["/ip4/10.0.0.2/tcp/1"], "invite", 0)
    book.connected(SW, peer(2), 10)
    book.learn(SW, peer(3), ["/ip4/10.0.0.3/tcp/1"], "invite", 0)
    book.connected(SW, peer(3), 20)
    assert [e.peer for e in book.shareable(SW, 30)] == [peer(3), peer(2)]
    assert [e.peer for e in book.shareable(SW, 30, exclude={peer(3)})] == [peer(2)]
    assert book.shareable(SW2, 30) == []


def test_swarms_are_separate_and_forgotten_on_leave() -> None:
    book = AddressBook()
    book.learn(SW, PEER, ["/ip4/10.0.0.1/tcp/1"], "invite", 0)
    assert book.entry(SW2, PEER) is None
    book.forget_swarm(SW)
    assert book.entry(SW, PEER) is None


def test_round_trip_and_corrupt_values() -> None:
    book = AddressBook()
    book.learn(
        SW, PEER, ["/ip4/10.0.0.1/tcp/1", f"/ip4/81.2.69.1/tcp/4001/p2p/{RELAY}/p2p-circuit"], "invite", 5
    )
    book.connected(SW, PEER, 9, addr="/ip4/10.0.0.1/tcp/1")
    book.learn(SW2, RELAY, ["/ip6/2001:4860::1/tcp/9"], "px", 7)
    book.dial_failed(SW2, RELAY, 8)
    again = AddressBook.from_value(book.to_value())
    assert again.to_value() == book.to_value()
    assert again.entry(SW, PEER) == book.entry(SW, PEER)
    for bad in [
        None,
        {},
        {"v": 2},
        {"v": 1},
        {"v": 1, "swarms": [{"s": b"x", "peers": []}]},
        {"v": 1, "swarms": 5},
    ]:
        with pytest.raises(DecodeError):
            AddressBook.from_value(bad)


events = st.lists(
    st.tuples(
        st.sampled_from(["learn", "connected", "failed", "expire", "forget"]),
        st.integers(0, 40),
        st.integers(0, 5),
        st.integers(0, 10**12),
    ),
    max_size=120,
)


@given(events)
def test_book_invariants(evts) -> None:
    """Bounds hold, due() never returns backed-off peers, and the book survives a round trip."""
    book = AddressBook()
    for kind, p, addr_i, now in evts:
        who = peer(p)
        if kind == "learn":
            book.learn(SW, who, [f"/ip4/10.0.0.{addr_i + 1}/tcp/1"], "px", now)
        elif kind == "connected":
            book.connected(SW, who, now, addr=f"/ip4/10.0.0.{addr_i + 1}/tcp/1")
        elif kind == "failed":
            book.dial_failed(SW, who, now)
        elif kind == "expire":
            book.expire(now)
        else:
            book.forget(SW, who)
        assert len(book.peers(SW)) <= MAX_PEERS
        for e in book.due(SW, now):
            assert e.next_try <= now and 0 < len(e.addrs) <= MAX_ADDRS
    assert AddressBook.from_value(book.to_value()).to_value() == book.to_value()


def test_netstate_round_trip_and_corrupt_file(tmp_path) -> None:
    from meshnode.netstate import NetState, load_state, network_tag, save_state

    path = tmp_path / "network.cbor"
    assert load_state(path).ports == {}
    state = NetState(ports={"open": 4001, network_tag("ab" * 32): 40123})
    state.book.learn(SW, PEER, ["/ip4/10.0.0.1/tcp/1"], "invite", 1)
    save_state(path, state)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    again = load_state(path)
    assert again.ports == state.ports
    assert again.book.to_value() == state.book.to_value()
    assert network_tag("ab" * 32) != network_tag("cd" * 32) and "ab" * 8 not in network_tag("ab" * 32)
    path.write_bytes(b"\xa1garbage")
    assert load_state(path).ports == {}  # a cache: a corrupt file costs the memory, not the start


def test_circuits_through_a_relays_lan_address_rank_with_lan_addresses() -> None:
    public = f"/ip4/81.2.69.1/tcp/4001/p2p/{RELAY}/p2p-circuit"
    lan = f"/ip4/192.168.1.10/tcp/4001/p2p/{RELAY}/p2p-circuit"
    got = a.advertised(listen=["/ip4/192.168.2.10/tcp/1"], relayed=[lan, public])
    assert got == [public, "/ip4/192.168.2.10/tcp/1", lan]


# --------------------------------------------------------------------------- reachability verdicts


def test_reachability_verdicts() -> None:
    from meshnode.reach import assess

    lan = ["/ip4/192.168.1.10/tcp/4001"]
    assert assess(listen=["/ip4/127.0.0.1/tcp/1"], advertised=[]).state == "local"
    public = assess(listen=lan, advertised=lan, autonat_state="public", autonat_reason="2 of 2 reached us")
    assert public.state == "public" and "2 of 2" in public.reason
    upnp = assess(listen=lan, advertised=lan, upnp_state="mapped", upnp_addr="/ip4/81.2.69.1/tcp/4001")
    assert upnp.state == "upnp" and "81.2.69.1" in upnp.reason
    double_nat = assess(listen=lan, advertised=lan, upnp_state="mapped", upnp_addr="/ip4/10.0.0.2/tcp/4001")
    assert double_nat.state == "unknown"
    relayed = assess(
        listen=lan,
        advertised=lan,
        autonat_state="private",
        autonat_reason="1 server could not reach us",
        relayed=[f"/ip4/81.2.69.1/tcp/4001/p2p/{RELAY}/p2p-circuit"],
    )
    assert relayed.state == "relayed" and RELAY in relayed.reason and "could not reach" in relayed.reason
    private = assess(listen=lan, advertised=lan, autonat_state="private", autonat_reason="none reached us")
    assert private.state == "private" and "nobody can dial in" in private.reason
    by_hand = assess(listen=lan, advertised=lan, announce=["/ip4/81.2.69.9/tcp/4001"])
    assert by_hand.state == "unknown" and "81.2.69.9" in by_hand.reason
    nothing = assess(listen=lan, advertised=lan, upnp_reason="no UPnP gateway answered")
    assert nothing.state == "unknown" and "no UPnP gateway answered" in nothing.reason


def test_a_new_address_makes_a_backed_off_peer_due_again() -> None:
    book = AddressBook(base_backoff_ms=1000, max_backoff_ms=60_000)
    book.learn(SW, PEER, ["/ip4/192.168.2.10/tcp/1"], "px", 0)
    for _ in range(4):
        book.dial_failed(SW, PEER, 100)
    assert book.due(SW, 200) == []
    book.learn(SW, PEER, ["/ip4/192.168.2.10/tcp/1"], "px", 200)  # nothing new: still waiting
    assert book.due(SW, 200) == []
    book.learn(SW, PEER, [f"/ip4/81.2.69.1/tcp/4001/p2p/{RELAY}/p2p-circuit"], "px", 300)
    (entry,) = book.due(SW, 300)
    assert entry.addrs[0].endswith("/p2p-circuit") and entry.failures == 4
