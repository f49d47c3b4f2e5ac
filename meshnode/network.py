"""One libp2p host and what runs on it, for the swarms that share its pnet key.

A node has one :class:`Network` for its open swarms and one per private
swarm key (a pnet key applies to a whole host). The network holds the
host's services (gossip, connection manager, reachability, peer exchange,
sync), the swarms on it, and what the node has seen of its connections;
:class:`meshnode.node.Node` builds and runs it, :mod:`meshnode.upkeep`
keeps its swarms connected. Tests and benchmarks reach a network through
``Node.network(swarm)``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from libp2p.abc import IHost, INetConn, INetwork
from libp2p.peer.id import ID

from meshnode import addrs as addrlib
from meshnode.netstate import network_tag
from meshnode.protocols.connmgr import ConnectionManager
from meshnode.protocols.gossip import RecordGossip
from meshnode.protocols.host import Advertiser
from meshnode.protocols.notifee import Notifee
from meshnode.protocols.px import PeerExchange
from meshnode.protocols.reachability import NetworkReach
from meshnode.swarm import Swarm

if TYPE_CHECKING:
    from meshnode.protocols.sync.service import SyncService

log = logging.getLogger(__name__)

MAX_CONCURRENT_DIALS = 4  # per network, from the address book
MAX_CONCURRENT_PX = 2  # per network


@dataclass
class ConnInfo:
    """One connection as ``meshnode peers`` shows it."""

    direction: str  # "inbound" | "outbound"
    addr: str
    since: float  # wall clock, seconds


@dataclass
class Network:
    """One libp2p host with its services, for the swarms that share its pnet key."""

    psk: str | None
    host: IHost
    gossip: RecordGossip
    advertiser: Advertiser
    connmgr: ConnectionManager
    reach: NetworkReach
    px: PeerExchange
    sync: SyncService
    swarms: dict[bytes, Swarm] = field(default_factory=dict)
    dialled: dict[str, str] = field(default_factory=dict)  # peer -> the address our dial used
    conns: dict[str, ConnInfo] = field(default_factory=dict)  # peer -> its connection
    dialing: set[str] = field(default_factory=set)
    px_asked: dict[str, float] = field(default_factory=dict)  # peer -> monotonic time asked
    px_limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(MAX_CONCURRENT_PX))
    dial_limiter: trio.CapacityLimiter = field(
        default_factory=lambda: trio.CapacityLimiter(MAX_CONCURRENT_DIALS)
    )
    started: trio.Event = field(default_factory=trio.Event)
    stop: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def tag(self) -> str:
        """The network's key in the ports table (never the swarm key itself)."""
        return network_tag(self.psk)

    @property
    def kind(self) -> str:
        """``"open"`` or ``"private"``, as ``status`` and ``peers`` show it."""
        return "open" if self.psk is None else "private"

    def connected(self) -> set[str]:
        """The peers connected to this host, as base58 peer ids."""
        return {p.to_base58() for p in self.host.get_connected_peers()}

    def is_banned(self, peer: str) -> bool:
        """``peer`` is banned now (by any of the node's networks: the ban book is shared)."""
        return self.gossip.bans.is_banned(peer)

    def peer_ip(self, peer: str) -> str | None:
        """The IP ``peer`` is directly connected from; None when not connected or only relayed.

        A relayed connection's socket is the relay's: blaming that address
        for the peer would refuse an honest relay.
        """
        info = self.conns.get(peer)
        if info is None or "/p2p-circuit" in info.addr:
            return None
        try:
            if self.reach.path(ID.from_base58(peer)) != "direct":
                return None
        except ValueError:
            return None
        split = addrlib.split_tcp(info.addr)
        return str(split[1]) if split is not None else None

    def member_swarms(self, peer: str) -> set[bytes]:
        """The swarms of this network that ``peer`` is in, as far as this node can tell.

        On a private swarm's host every peer holds the key, so it is a member of
        all of them; on the open host, a peer is a member of the swarms whose
        topic it subscribes to (only someone who knows the swarm id can). A
        banned peer is a member of none.
        """
        if self.is_banned(peer):
            return set()
        if self.psk is not None:
            return set(self.swarms)
        try:
            pid = ID.from_base58(peer)
        except ValueError:
            return set()
        topics = self.gossip.pubsub.peer_topics
        return {sid for sid, s in self.swarms.items() if pid in topics.get(s.topic, ())}

    def swarm_peers(self, swarm: Swarm) -> list[str]:
        """Connected peers that are members of ``swarm`` as far as this node can tell."""
        return sorted(p for p in self.connected() if swarm.id in self.member_swarms(p))

    def listen_port(self) -> int | None:
        """The TCP port this host listens on (None before it listens)."""
        for addr in self.host.get_transport_addrs():
            split = addrlib.split_tcp(str(addr))
            if split is not None:
                return split[2]
        return None

    def advertised_addrs(self, peer: str) -> list[str]:
        """What ``peer`` advertised in identify (its listen addresses, if it is a meshnode)."""
        try:
            return [str(a) for a in self.host.get_peerstore().addrs(ID.from_base58(peer))]
        except (ValueError, KeyError):
            return []


class ConnTracker(Notifee):
    """Remembers each peer's connection (direction, address, since) for ``meshnode peers``."""

    def __init__(self, net: Network) -> None:
        self._net = net

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        try:
            peer = conn.muxed_conn.peer_id.to_base58()
            self._net.conns[peer] = ConnInfo(
                direction=_direction(conn), addr=remote_addr(conn), since=time.time()
            )
        except Exception as exc:  # a notifee must never raise into libp2p
            log.debug("conn tracker: %r", exc)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        try:
            peer = conn.muxed_conn.peer_id
            if not network.get_connections(peer):
                self._net.conns.pop(peer.to_base58(), None)
        except Exception as exc:  # a notifee must never raise into libp2p
            log.debug("conn tracker: %r", exc)


def _direction(conn: Any) -> str:
    value = str(getattr(conn, "direction", "")).lower()
    return "inbound" if "inbound" in value else "outbound" if "outbound" in value else "unknown"


def remote_addr(conn: Any) -> str:
    """The remote socket address of a connection as a multiaddr text ('' if unknown).

    libp2p 0.8.1 keeps the socket several wrappers deep (muxer, secure
    session, raw connection), and which wrapper offers ``get_remote_address``
    depends on the transport; the transport addresses are the fallback.
    """
    try:
        raw = conn.muxed_conn.secured_conn.conn if hasattr(conn.muxed_conn, "secured_conn") else None
        stream = getattr(raw, "stream", None)
        get = getattr(stream, "get_remote_address", None) or getattr(raw, "get_remote_address", None)
        if get is not None:
            ip, port = get()[:2]
            return addrlib.tcp_addr(ip, port)
    except (AttributeError, OSError, TypeError, ValueError):
        pass
    try:
        addrs = conn.get_transport_addresses()
        return str(addrs[0]) if addrs else ""
    except (AttributeError, OSError):
        return ""
