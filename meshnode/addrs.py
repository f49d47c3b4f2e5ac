"""Which addresses a node advertises, and in what order (pure: no I/O).

A node listens on a socket address such as ``/ip4/0.0.0.0/tcp/4001``; that is
not an address anybody can dial. What it *advertises* (identify, invites,
``meshnode id``, the ready line, peer exchange) is built here from what the
transports, the router and the relays told the node:

===========  =============================================================
``announce``  addresses given by hand in ``config.toml`` (a port forwarded
              on the router): the user knows best, so they come first
``mapped``    the router's public address and the port it maps to us (UPnP)
``observed``  public addresses that other peers confirmed by dialling back
              (AutoNAT)
``listen``    the real listen addresses, a wildcard expanded to the
              machine's interface addresses
``relayed``   ``…/p2p/<relay>/p2p-circuit`` addresses of our reservations
===========  =============================================================

Order is by how likely an address works from another home: by hand, mapped,
observed, any listen address on a public IP, relayed (through a public
relay), then private (LAN) addresses and circuits through a relay's LAN
address, which work only for neighbours on the same network. Unspecified
addresses are never advertised; loopback only when the node listens on
loopback alone (one-machine set-ups and tests), since it is useless elsewhere.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Sequence

#: Most addresses advertised (an invite carries at most this many too).
MAX_ADVERTISED = 8

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class Scope(enum.IntEnum):
    """Where an IP address can be reached from; lower is reachable more widely."""

    PUBLIC = 0
    PRIVATE = 1  # RFC 1918, shared address space (CGNAT), unique local, link-local
    LOOPBACK = 2
    UNUSABLE = 3  # unspecified, multicast, reserved, IPv6 link-local


def scope_of(ip: IP) -> Scope:
    """The scope of ``ip`` (IPv4-mapped IPv6 is judged as IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast or (ip.version == 4 and ip.is_reserved):
        return Scope.UNUSABLE
    if ip.version == 6 and ip.is_link_local:
        return Scope.UNUSABLE  # needs a zone id (fe80::1%eth0), which a multiaddr cannot carry
    if ip.is_loopback:
        return Scope.LOOPBACK
    if ip.is_private or ip.is_link_local or (ip.version == 4 and ip in _SHARED):
        return Scope.PRIVATE
    if ip.is_global:
        return Scope.PUBLIC
    return Scope.PRIVATE  # documentation ranges and the like: not on the internet


_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT


def split_tcp(addr: str) -> tuple[str, IP, int, str] | None:
    """``/ip4|ip6/<ip>/tcp/<port>[/…]`` as (family, ip, port, rest), else None. Never raises."""
    parts = addr.split("/")
    if len(parts) < 5 or parts[0] != "" or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp":
        return None
    try:
        ip = ipaddress.ip_address(parts[2].split("%")[0])
        port = int(parts[4])
    except ValueError:
        return None
    if not 0 <= port < 65536 or (parts[1] == "ip4") != (ip.version == 4):
        return None
    rest = "/" + "/".join(parts[5:]) if len(parts) > 5 else ""
    return parts[1], ip, port, rest


def tcp_addr(ip: IP | str, port: int) -> str:
    ip = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    return f"/ip{ip.version}/{ip}/tcp/{port}"


def strip_peer(addr: str) -> str:
    """``addr`` without a trailing ``/p2p/<peer id>`` (a circuit address keeps its relay's)."""
    parts = addr.split("/")
    if len(parts) >= 3 and parts[-2] == "p2p":
        return "/".join(parts[:-2])
    return addr


def with_peer(addr: str, peer_id: str) -> str:
    """``addr`` ending in ``/p2p/<peer_id>`` (added once)."""
    addr = strip_peer(addr)
    return f"{addr}/p2p/{peer_id}"


def expand_listen(listen: Iterable[str], interfaces: Sequence[str]) -> list[str]:
    """Listen addresses with each wildcard replaced by the interface addresses of its family.

    Unusable and, for a wildcard, loopback interface addresses are dropped.
    Non-TCP addresses pass through untouched.
    """
    out: list[str] = []
    for addr in listen:
        split = split_tcp(strip_peer(addr))
        if split is None:
            _add(out, strip_peer(addr))
            continue
        _family, ip, port, rest = split
        if not ip.is_unspecified:
            _add(out, tcp_addr(ip, port) + rest)
            continue
        for text in interfaces:
            try:
                iface = ipaddress.ip_address(text.split("%")[0])
            except ValueError:
                continue
            if iface.version == ip.version and scope_of(iface) <= Scope.PRIVATE:
                _add(out, tcp_addr(iface, port) + rest)
    return out


def rank(addr: str) -> tuple[int, int]:
    """Sort key of a listen/observed address: public IPs first, then private, then loopback."""
    if "/p2p-circuit" in addr:
        relay = split_tcp(addr.split("/p2p/")[0])  # through a relay on a LAN: as good as a LAN address
        return (1, 0) if relay is None or scope_of(relay[1]) is Scope.PUBLIC else (2, 2)
    split = split_tcp(addr)
    if split is None:
        return (3, 0)
    scope = scope_of(split[1])
    order = {Scope.PUBLIC: 0, Scope.PRIVATE: 2, Scope.LOOPBACK: 4, Scope.UNUSABLE: 9}[scope]
    return (order, 0 if split[1].version == 4 else 1)


def advertised(
    *,
    listen: Sequence[str],
    interfaces: Sequence[str] = (),
    announce: Sequence[str] = (),
    mapped: Sequence[str] = (),
    observed: Sequence[str] = (),
    relayed: Sequence[str] = (),
    limit: int = MAX_ADVERTISED,
) -> list[str]:
    """The addresses to advertise, best first, without ``/p2p/<self>`` (see the module docstring).

    ``mapped`` and ``observed`` addresses count only on public IPs: a mapping
    on a router that is itself behind another NAT is no use to anyone outside.
    """
    expanded = expand_listen(listen, interfaces)
    out: list[str] = []
    for addr in announce:
        _add(out, strip_peer(addr))
    for addr in [*mapped, *observed]:
        split = split_tcp(strip_peer(addr))
        if split is not None and scope_of(split[1]) is Scope.PUBLIC:
            _add(out, strip_peer(addr))
    candidates = [a for a in expanded if _usable(a)] + [strip_peer(a) for a in relayed]
    loopback_only = all(
        (s := split_tcp(a)) is not None and scope_of(s[1]) is Scope.LOOPBACK for a in expanded if _usable(a)
    )
    for addr in sorted(candidates, key=rank):
        split = split_tcp(addr)
        if split is not None and scope_of(split[1]) is Scope.LOOPBACK and not loopback_only:
            continue
        _add(out, addr)
    return out[:limit]


def _usable(addr: str) -> bool:
    split = split_tcp(addr)
    return split is None or scope_of(split[1]) is not Scope.UNUSABLE


def _add(out: list[str], addr: str) -> None:
    if addr and addr not in out:
        out.append(addr)


def order_for_dial(addrs: Sequence[str], *, prefer_private: bool = False) -> list[str]:
    """Addresses of a remote peer in the order to try them.

    A stable sort by :func:`rank`; with ``prefer_private`` (the peer was seen
    on our LAN) private addresses go first. Loopback stays last.
    """

    def key(addr: str) -> tuple[int, int]:
        r = rank(addr)
        if prefer_private and r[0] == 2:
            return (-1, r[1])
        return r

    return sorted(dict.fromkeys(addrs), key=key)
