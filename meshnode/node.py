"""The node: host(s), gossip, ingest and discovery under one trio nursery.

A node joins swarms. Open swarms share one libp2p host; each private swarm
gets a host of its own, because a libp2p private network (pnet) key applies
to a whole host: a peer without the key cannot even finish the handshake.
Every host has the node's one identity, so the peer id is the same on all,
and each has its own TCP port, kept across restarts (:mod:`meshnode.netstate`).

The node owns start-up and shutdown (``host.close()`` always, pitfall 4),
the per-author sequence numbers of its own records, and staying in its
swarms: every peer met goes into the address book (:mod:`meshnode.addrbook`),
members exchange what they know (:mod:`meshnode.protocols.px`), and whenever
a swarm has fewer than ``target_peers`` members connected (at start, after a
restart, when peers leave) the node redials from the book, most recently good
first, with back-off.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetwork
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from meshnode import addrs as addrlib
from meshnode import records as rec
from meshnode.addrbook import AddressBook
from meshnode.errors import BadValue, NetworkError, NotFound
from meshnode.identity import Identity
from meshnode.ingest import Ingest, wall_clock_ms
from meshnode.netstate import NetState, load_state, network_tag, save_state
from meshnode.protocols.connmgr import ConnectionManager, ConnLimits
from meshnode.protocols.connmgr import install as install_connmgr
from meshnode.protocols.gossip import RecordGossip
from meshnode.protocols.host import (
    Advertiser,
    build_host,
    check_port_free,
    close_connections,
    dial,
    dial_addrs,
    free_port,
    listen_addrs,
    parse_listen,
    peer_info_of,
    port_is_free,
)
from meshnode.protocols.notifee import Notifee
from meshnode.protocols.px import PeerExchange, PeerHint
from meshnode.protocols.reachability import NetworkReach, ReachConfig
from meshnode.protocols.sync import SessionReport, SyncLimits, SyncService, stats_dict
from meshnode.reach import Reachability, assess
from meshnode.swarm import Invite, Swarm, decode_invite, encode_invite
from meshnode.syncindex import SyncIndex
from meshnode.verdicts import PeerPenalties

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0
LAN_DIAL_DEFER = 2.0  # s; on the LAN the peer with the larger id lets the other dial first
MAX_CONCURRENT_DIALS = 4  # per network, from the address book
MAX_CONCURRENT_PX = 2  # per network
PX_WHILE_SHORT = 5.0  # s between peer exchanges with a member while a swarm has too few peers


@dataclass
class NodeConfig:
    """How a node runs; the daemon fills it from config.toml and flags."""

    listen: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"])
    bootstrap: list[str] = field(default_factory=list)
    swarm_bootstrap: dict[str, list[str]] = field(default_factory=dict)  # swarm name -> addrs
    announce: list[str] = field(default_factory=list)  # addresses of the open host's port, by hand
    max_connections: int = 64
    conn_grace: float = 15.0  # s a new connection may stay before it can be trimmed
    min_peers: int = 0  # libp2p's own redials of its peerstore (pitfall 17); 0: off, the address book redials
    dial_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    reconnect_interval: float = 5.0  # s between looks at each swarm's peers (and the first back-off)
    reconnect_max_backoff: float = 120.0
    target_peers: int = 4  # per swarm: below this many members connected, dial from the book; 0: never
    px_interval: float = 120.0  # s between peer exchanges with one member
    penalty_limit: int = 20
    mdns: bool = False  # advertise and browse on the LAN (private swarms with a keyed tag)
    sync_interval: float = 60.0  # seconds between syncs with one random peer; 0: never
    sync_on_connect: bool = True  # sync when a peer connects (smaller peer id starts)
    sync_limits: SyncLimits = field(default_factory=SyncLimits)
    prune_interval: float = 3600.0  # seconds between prunes of expired records; 0: never
    state_path: Path | None = None  # ports and address book kept here (network.cbor); None: memory
    state_save_interval: float = 30.0
    upnp: bool = False  # ask the home router to map each port (the daemon's default: on)
    relay: bool = True  # relay for members when public; hold relay slots when not
    reach_unknown_interval: float = 5.0  # s between reachability checks while unknown


@dataclass
class ConnInfo:
    """One connection as ``meshnode peers`` shows it."""

    direction: str  # "inbound" | "outbound"
    addr: str
    since: float  # wall clock, seconds


@dataclass
class _Network:
    """One libp2p host with its gossip, for the swarms that share its pnet key."""

    psk: str | None
    host: IHost
    gossip: RecordGossip
    advertiser: Advertiser
    connmgr: ConnectionManager | None = None
    reach: NetworkReach | None = None
    px: PeerExchange | None = None
    sync: SyncService | None = None
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
        return network_tag(self.psk)


class _ConnTracker(Notifee):
    """Remembers each peer's connection (direction, address, since) for ``meshnode peers``."""

    def __init__(self, net: _Network) -> None:
        self._net = net

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        try:
            peer = conn.muxed_conn.peer_id.to_base58()
            self._net.conns[peer] = ConnInfo(
                direction=_direction(conn), addr=_remote_addr(conn), since=time.time()
            )
        except Exception as exc:  # never raise into libp2p
            log.debug("conn tracker: %r", exc)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        try:
            peer = conn.muxed_conn.peer_id
            if not network.get_connections(peer):
                self._net.conns.pop(peer.to_base58(), None)
        except Exception as exc:
            log.debug("conn tracker: %r", exc)


def _listen_port(host: IHost) -> int | None:
    for addr in host.get_transport_addrs():
        split = addrlib.split_tcp(str(addr))
        if split is not None:
            return split[2]
    return None


def _direction(conn: Any) -> str:
    value = str(getattr(conn, "direction", "")).lower()
    return "inbound" if "inbound" in value else "outbound" if "outbound" in value else "unknown"


def _remote_addr(conn: Any) -> str:
    """The remote socket address of a connection as a multiaddr text ('' if unknown)."""
    try:
        raw = conn.muxed_conn.secured_conn.conn if hasattr(conn.muxed_conn, "secured_conn") else None
        stream = getattr(raw, "stream", None)
        get = getattr(stream, "get_remote_address", None) or getattr(raw, "get_remote_address", None)
        if get is not None:
            ip, port = get()[:2]
            return addrlib.tcp_addr(ip, port)
    except Exception:
        pass
    try:
        addrs = conn.get_transport_addresses()
        return str(addrs[0]) if addrs else ""
    except Exception:
        return ""


class Node:
    """A meshnode peer. Use :meth:`run` in a nursery (``await nursery.start(node.run)``)."""

    def __init__(
        self,
        identity: Identity,
        store: object,
        config: NodeConfig | None = None,
        *,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.identity = identity
        self.store = store
        self.config = config or NodeConfig()
        self.clock = clock
        self.ingest = Ingest(store, swarm_ids=self.swarm_ids, clock=clock)
        self._networks: dict[str | None, _Network] = {}
        self._nursery: trio.Nursery | None = None
        self._seq_lock = trio.Lock()
        self._last_seq: int | None = None  # this node's latest seq, read once from the store
        self._state: NetState = load_state(
            self.config.state_path,
            base_backoff_ms=int(self.config.reconnect_interval * 1000),
            max_backoff_ms=int(self.config.reconnect_max_backoff * 1000),
        )
        self._ports_changed = False
        self._init_sync()

    @property
    def book(self) -> AddressBook:
        """The address book (peers met per swarm)."""
        return self._state.book

    # --- lifecycle -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled; ``started`` once the open network listens."""
        try:
            async with trio.open_nursery() as nursery:
                await self._start(nursery, task_status)
        finally:
            self._save_state_now()
            self.ingest.close()
            self._close_sync()

    async def _start(self, nursery: trio.Nursery, task_status: trio.TaskStatus[None]) -> None:
        self._nursery = nursery
        await nursery.start(self.ingest.run)
        await self._network(None)
        nursery.start_soon(self._maintain_loop)
        for addr in self.config.bootstrap:
            nursery.start_soon(self._dial_quietly, self._networks[None], addr)
        if self.config.prune_interval > 0:
            nursery.start_soon(self._prune_loop)
        if self.config.state_path is not None:
            nursery.start_soon(self._state_loop)
        task_status.started()

    async def _prune_loop(self) -> None:
        """Drop expired records now and then (they are remembered, so not synced back)."""
        while True:
            try:
                pruned = await self.prune_expired()
                if pruned:
                    log.info("pruned %d expired records", pruned)
            except Exception as exc:  # keep the node running; try again next time
                log.warning("pruning failed: %s", exc)
            await trio.sleep(self.config.prune_interval)

    async def _state_loop(self) -> None:
        """Keep the ports and the address book on disk (every ``state_save_interval`` when changed)."""
        while True:
            await trio.sleep(self.config.state_save_interval)
            self.book.expire(self.clock())
            if self.book.changed or self._ports_changed:
                try:
                    await trio.to_thread.run_sync(self._save_state_now)
                except Exception as exc:
                    log.warning("saving the address book failed: %s", exc)

    def _save_state_now(self) -> None:
        path = self.config.state_path
        if path is None or not (self.book.changed or self._ports_changed):
            return
        try:
            self.book.changed = False
            self._ports_changed = False
            save_state(path, self._state)
        except OSError as exc:
            self.book.changed = True
            log.warning("cannot save %s: %s", path, exc.strerror)

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def addrs(self, swarm: Swarm | None = None) -> list[str]:
        """Advertised addresses of this node, best first (for ``swarm``'s network if given)."""
        net = self._networks.get(swarm.psk_hex if swarm else None)
        return listen_addrs(net.host) if net else []

    def port(self, swarm: Swarm | None = None) -> int | None:
        """The TCP port of ``swarm``'s network (the open one if None)."""
        net = self._networks.get(swarm.psk_hex if swarm else None)
        return self._state.ports.get(net.tag) if net else None

    def swarm_ids(self) -> set[bytes]:
        return {sid for net in self._networks.values() for sid in net.swarms}

    def swarms(self) -> list[Swarm]:
        return [s for net in self._networks.values() for s in net.swarms.values()]

    def swarm(self, name_or_id: str | bytes) -> Swarm:
        for s in self.swarms():
            if s.name == name_or_id or s.id == name_or_id:
                return s
        raise NotFound(f"no swarm named {name_or_id!r} on this node: see 'meshnode swarm list'")

    def connected_peers(self) -> list[str]:
        peers: set[str] = set()
        for net in self._networks.values():
            peers.update(p.to_base58() for p in net.host.get_connected_peers())
        return sorted(peers)

    def swarm_peers(self, swarm: Swarm) -> list[str]:
        """Connected peers that are members of ``swarm`` as far as this node can tell."""
        net = self._networks.get(swarm.psk_hex)
        if net is None:
            return []
        return sorted(
            p.to_base58()
            for p in net.host.get_connected_peers()
            if swarm.id in self._member_swarms(net, p.to_base58())
        )

    def network_status(self) -> list[dict[str, Any]]:
        """Each network (host): which swarms, its port, addresses, reachability, peers."""
        out = []
        for net in self._networks.values():
            out.append(
                {
                    "network": "open" if net.psk is None else "private",
                    "swarms": sorted(s.name for s in net.swarms.values()),
                    "port": _listen_port(net.host),
                    "addrs": listen_addrs(net.host),
                    "reachability": self._reachability(net).as_dict()
                    | (net.reach.details() if net.reach is not None else {}),
                    "peers": len(net.host.get_connected_peers()),
                    "connections": dataclasses.asdict(net.connmgr.stats()) if net.connmgr else {},
                    "swarm_peers": {s.name: len(self.swarm_peers(s)) for s in net.swarms.values()},
                }
            )
        return out

    def reachability(self) -> dict[str, str]:
        """How others can reach this node (see :mod:`meshnode.reach`).

        The verdict of the first network that carries swarms (the open one
        first); the open network's when there are none. ``status`` also lists
        every network's own.
        """
        nets = [n for n in self._networks.values() if n.swarms] or [
            n for n in self._networks.values() if n.psk is None
        ]
        if not nets:
            return {"state": "unknown", "reason": "not running"}
        out = self._reachability(nets[0]).as_dict()
        if nets[0].psk is not None:
            out["reason"] = f"{out['reason']} (swarm {', '.join(s.name for s in nets[0].swarms.values())})"
        return out

    def _reachability(self, net: _Network) -> Reachability:
        if net.reach is not None:
            return net.reach.verdict()
        adv = net.advertiser
        return assess(
            listen=[str(a) for a in net.host.get_transport_addrs()],
            advertised=adv.addrs(),
            announce=adv.announce,
            relayed=adv.relayed,
        )

    def known_peers(self) -> list[dict[str, Any]]:
        """The address book, swarm by swarm: who, where, when last connected, failed dials."""
        out = []
        for swarm in self.swarms():
            for pid in self.book.peers(swarm.id):
                entry = self.book.entry(swarm.id, pid)
                if entry is None:
                    continue
                out.append(
                    {
                        "swarm": swarm.name,
                        "peer_id": pid,
                        "addrs": list(entry.addrs),
                        "last_seen": entry.last_seen,
                        "failures": entry.failures,
                        "next_try": entry.next_try,
                    }
                )
        return out

    def peer_details(self) -> list[dict[str, Any]]:
        """Every connection: peer, swarms shared, address, direction, direct or relayed, since."""
        out = []
        for net in self._networks.values():
            for pid in net.host.get_connected_peers():
                peer = pid.to_base58()
                info = net.conns.get(peer)
                addr = info.addr if info else ""
                out.append(
                    {
                        "peer_id": peer,
                        "swarms": sorted(
                            s.name for sid, s in net.swarms.items() if sid in self._member_swarms(net, peer)
                        ),
                        "network": "open" if net.psk is None else "private",
                        "addr": addr,
                        "direction": info.direction if info else "unknown",
                        "relayed": (net.reach.path(pid) == "relayed")
                        if net.reach is not None
                        else "/p2p-circuit" in addr,
                        "since": info.since if info else None,
                    }
                )
        out.sort(key=lambda row: (row["peer_id"], row["network"]))
        return out

    # --- swarms ----------------------------------------------------------------

    async def join_swarm(self, swarm: Swarm) -> None:
        """Join ``swarm``: start its network if needed and subscribe to its topic."""
        for existing in self.swarms():
            if existing.id == swarm.id:
                return
            if existing.name == swarm.name:
                raise BadValue(f"this node already has a swarm named {swarm.name!r}")
        net = await self._network(swarm.psk_hex)
        await self._build_sync_index(swarm)
        net.swarms[swarm.id] = swarm
        now = self.clock()
        for addr in self.config.swarm_bootstrap.get(swarm.name, []):
            try:
                peer = peer_info_of(addr).peer_id.to_base58()
            except BadValue as exc:
                log.warning("bootstrap of swarm %r: %s", swarm.name, exc)
                continue
            self.book.learn(swarm.id, peer, [addr], "bootstrap", now)  # dialled by the maintenance loop
        await net.gossip.join(swarm)
        if net.sync is not None:
            net.sync.sync_joined(swarm)
        try:  # redial the swarm's peers from the book now (after a restart), not at the next look
            self._maintain(net)
        except Exception as exc:
            log.debug("maintenance after joining failed: %r", exc)

    async def leave_swarm(self, swarm: Swarm) -> None:
        net = self._networks.get(swarm.psk_hex)
        if net is None or swarm.id not in net.swarms:
            raise NotFound(f"this node is not in swarm {swarm.name!r}")
        await net.gossip.leave(swarm)
        del net.swarms[swarm.id]
        self._sync_indexes.pop(swarm.id, None)
        self.book.forget_swarm(swarm.id)
        if net.psk is not None and not net.swarms:
            net.stop.cancel()
            del self._networks[net.psk]
            if self._state.ports.pop(net.tag, None) is not None:
                self._ports_changed = True

    def invite(self, swarm: Swarm) -> str:
        """An invite code for ``swarm`` naming this node's addresses on its network."""
        return encode_invite(Invite(swarm=swarm, addrs=tuple(self.addrs(swarm))))

    async def join_invite(self, code: str) -> Swarm:
        """Join the swarm of an invite code and connect to the inviter.

        The inviter's addresses go into the address book first, so if it cannot
        be reached now the node keeps trying (with back-off) in the background.
        """
        invite = decode_invite(code)
        await self.join_swarm(invite.swarm)
        net = self._networks[invite.swarm.psk_hex]
        by_peer: dict[str, list[str]] = {}
        for addr in invite.addrs:
            peer = peer_info_of(addr).peer_id.to_base58()
            if peer != self.peer_id:
                by_peer.setdefault(peer, []).append(addr)
        now = self.clock()
        for peer, addrs in by_peer.items():
            self.book.learn(invite.swarm.id, peer, addrs, "invite", now)
        errors = []
        for peer in by_peer:
            try:
                await self._dial_member(net, invite.swarm.id, peer)
                return invite.swarm
            except NetworkError as exc:
                errors.append(str(exc))
        raise NetworkError(
            f"joined swarm {invite.swarm.name!r} but could not reach the inviter yet"
            f" ({'; '.join(errors) or 'no address'}); will keep trying"
        )

    async def connect(self, addr: str, *, swarm: Swarm | None = None) -> str:
        """Dial a ``…/p2p/<peer id>`` multiaddr on ``swarm``'s network (the open one if None)."""
        info = peer_info_of(addr)
        net = self._networks.get(swarm.psk_hex if swarm else None)
        if net is None:
            raise NotFound("that swarm's network is not running")
        await dial(net.host, info, timeout=self.config.dial_timeout)
        pid = info.peer_id.to_base58()
        net.dialled[pid] = addr
        now = self.clock()
        for sid in [swarm.id] if swarm is not None else list(net.swarms):
            # Remembered for redials; it counts as a member once it shows it is one.
            self.book.learn(sid, pid, [addr], "connect", now)
        return pid

    # --- records ---------------------------------------------------------------

    async def publish(self, body: object, swarm: Swarm) -> rec.Record:
        """Sign ``body`` as this node's next record in ``swarm``, store it, gossip it."""
        if swarm.id not in self.swarm_ids():
            raise NotFound(f"this node is not in swarm {swarm.name!r}")
        async with self._seq_lock:
            if self._last_seq is None:
                author = self.identity.public_key
                self._last_seq = await trio.to_thread.run_sync(self.store.latest_seq, author)
            record = rec.new_record(
                body,
                swarm=swarm.id,
                seq=self._last_seq + 1,
                ts=self.clock(),
                signing_key=self.identity.signing_key,
            )
            await self.ingest.submit(record)
            self._last_seq = record.seq
        await self._networks[swarm.psk_hex].gossip.publish(swarm, record.encoded)
        return record

    async def publish_raw(self, data: bytes, swarm: Swarm) -> None:
        """Gossip already-stored record bytes (e.g. re-announcing)."""
        await self._networks[swarm.psk_hex].gossip.publish(swarm, data)

    def gossip_stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for net in self._networks.values():
            for k, v in vars(net.gossip.stats).items():
                total[k] = total.get(k, 0) + v
        return total

    def px_stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for net in self._networks.values():
            if net.px is not None:
                for k, v in vars(net.px.stats).items():
                    total[k] = total.get(k, 0) + v
        return total

    # --- networks ----------------------------------------------------------------

    async def _network(self, psk: str | None) -> _Network:
        net = self._networks.get(psk)
        if net is not None:
            await net.started.wait()
            return net
        if self._nursery is None:
            raise RuntimeError("the node is not running: start Node.run() first")
        listen = self._listen_for(psk)
        advertiser = Advertiser(announce=self.config.announce if psk is None else ())
        host = build_host(
            self.identity,
            psk=psk,
            max_connections=self.config.max_connections,
            min_peers=self.config.min_peers,
            dial_timeout=self.config.dial_timeout,
            advertiser=advertiser,
        )
        gossip = RecordGossip(
            host,
            self.ingest.judge,
            heartbeat_interval=self.config.heartbeat_interval,
            penalties=PeerPenalties(limit=self.config.penalty_limit),
        )
        net = _Network(psk=psk, host=host, gossip=gossip, advertiser=advertiser)
        # Inbound slots come back when a connection ends (pitfall 25); limits per
        # IP and subnet; members of our swarms are never trimmed.
        net.connmgr = install_connmgr(
            host,
            is_protected=lambda pid: bool(self._member_swarms(net, pid.to_base58())),
            limits=ConnLimits.for_max(self.config.max_connections, grace=self.config.conn_grace),
        )
        gossip.on_accept = net.connmgr.note_useful
        net.sync = self._make_sync(net)
        net.reach = NetworkReach(
            host,
            advertiser,
            gossip.pubsub,
            is_member=lambda pid: bool(self._member_swarms(net, pid.to_base58())),
            config=ReachConfig(
                upnp=self.config.upnp,
                relay=self.config.relay,
                unknown_interval=self.config.reach_unknown_interval,
            ),
        )
        net.px = PeerExchange(
            host,
            member_swarms=lambda peer: self._member_swarms(net, peer),
            hints_for=lambda sid, asker: self._hints_for(sid, asker),
        )
        self._networks[psk] = net
        try:
            await self._nursery.start(self._run_network, net, listen)
        except BaseException:
            self._networks.pop(psk, None)
            raise
        return net

    def _listen_for(self, psk: str | None) -> list[multiaddr.Multiaddr]:
        """The addresses a network listens on: its own TCP port, kept across restarts.

        The open network uses the configured port when one is given (a busy one
        is an error: pitfall 26 would share it silently). Every other case (port
        0, and every private swarm) reuses the port of the last run, or picks a
        free one, which is then remembered in the home.
        """
        tag = network_tag(psk)
        stored = self._state.ports.get(tag)
        taken = {p for t, p in self._state.ports.items() if t != tag}
        chosen: int | None = None
        out = []
        for ma in parse_listen(self.config.listen):
            split = addrlib.split_tcp(str(ma))
            if split is None:
                out.append(ma)
                continue
            _family, ip, port, rest = split
            if psk is None and port != 0:
                check_port_free(ma)
                out.append(ma)
                continue
            if chosen is None:
                if stored and stored not in taken and port_is_free(str(ip), stored):
                    chosen = stored
                else:
                    if stored:
                        log.warning(
                            "port %d (kept from the last run) is taken now: listening on a new port;"
                            " peers learn it from this node when it dials them",
                            stored,
                        )
                    chosen = free_port(str(ip))
                    while chosen in taken:
                        chosen = free_port(str(ip))
            out.append(multiaddr.Multiaddr(addrlib.tcp_addr(ip, chosen) + rest))
        if chosen is not None and stored != chosen:
            self._state.ports[tag] = chosen
            self._ports_changed = True
        return out

    async def _run_network(
        self, net: _Network, listen: list[multiaddr.Multiaddr], *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            with net.stop:
                async with net.host.run(listen):
                    try:
                        async with trio.open_nursery() as nursery:
                            if not net.host.get_transport_addrs():
                                raise NetworkError(
                                    f"could not listen on {', '.join(map(str, listen))}:"
                                    " check 'listen' in config.toml"
                                )
                            net.host.get_network().register_notifee(_ConnTracker(net))
                            if net.connmgr is not None:
                                await nursery.start(net.connmgr.run)
                            await nursery.start(net.gossip.run)
                            if net.sync is not None:
                                await nursery.start(net.sync.run)
                            if net.px is not None:
                                net.px.install()
                            if net.reach is not None:
                                await nursery.start(net.reach.run)
                            if self.config.mdns:
                                nursery.start_soon(self._lan_discovery, net)
                            net.started.set()
                            task_status.started()
                            await trio.sleep_forever()
                    finally:
                        # Before host.run() cancels the connections' tasks: a connection
                        # cancelled there leaves its socket open, and the peer goes on
                        # believing it is connected.
                        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                            await close_connections(net.host)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                try:
                    await net.host.close()
                except Exception as exc:
                    log.debug("host close: %r", exc)

    async def _dial_quietly(self, net: _Network, addr: str) -> None:
        try:
            await net.started.wait()
            info = peer_info_of(addr)
            await dial(net.host, info, timeout=self.config.dial_timeout)
            net.dialled[info.peer_id.to_base58()] = addr
        except Exception as exc:
            log.info("could not dial %s: %s", addr, exc)

    # --- staying in the swarms -----------------------------------------------------

    def _member_swarms(self, net: _Network, peer: str) -> set[bytes]:
        """The swarms of ``net`` that ``peer`` is in, as far as this node can tell.

        On a private swarm's host every peer holds the key, so it is a member of
        all of them; on the open host, a peer is a member of the swarms whose
        topic it subscribes to (only someone who knows the swarm id can).
        """
        if peer in net.gossip.penalties.banned:
            return set()
        if net.psk is not None:
            return set(net.swarms)
        try:
            pid = ID.from_base58(peer)
        except Exception:
            return set()
        topics = net.gossip.pubsub.peer_topics
        return {sid for sid, s in net.swarms.items() if pid in topics.get(s.topic, ())}

    def _hints_for(self, swarm: bytes, asker: str) -> list[PeerHint]:
        entries = self.book.shareable(swarm, self.clock(), exclude={asker})
        return [PeerHint(swarm=swarm, peer=e.peer, addrs=e.addrs) for e in entries]

    async def _maintain_loop(self) -> None:
        """Every ``reconnect_interval``: note members in the book, exchange peers, redial."""
        while True:
            for net in list(self._networks.values()):
                try:
                    self._maintain(net)
                except Exception as exc:  # keep the node running
                    log.warning("swarm maintenance failed: %r", exc)
            await trio.sleep(self.config.reconnect_interval)

    def _maintain(self, net: _Network, *, exchange: bool = True) -> None:
        if not net.started.is_set() or self._nursery is None:
            return
        now_ms = self.clock()
        now = time.monotonic()
        connected = {p.to_base58() for p in net.host.get_connected_peers()}
        members: dict[bytes, set[str]] = {sid: set() for sid in net.swarms}
        shared_with: dict[str, set[bytes]] = {}
        for peer in connected:
            shared = shared_with[peer] = self._member_swarms(net, peer)
            for sid in shared:
                members[sid].add(peer)
                self.book.connected(sid, peer, now_ms, addr=net.dialled.get(peer))
                entry = self.book.entry(sid, peer)
                known = set(entry.addrs) if entry is not None else set()
                fresh = [a for a in self._identify_addrs(net, peer) if addrlib.strip_peer(a) not in known]
                if fresh:  # what it advertises now (e.g. a new relay address)
                    self.book.learn(sid, peer, fresh, "identify", now_ms)
        for peer, shared in shared_with.items():
            # Ask members what they know every px_interval, and more often while
            # a swarm has too few peers (addresses appear as others find relays).
            short = any(len(members[sid]) < self.config.target_peers for sid in shared)
            interval = min(self.config.px_interval, PX_WHILE_SHORT) if short else self.config.px_interval
            if exchange and shared and now - net.px_asked.get(peer, -1e9) >= interval:
                net.px_asked[peer] = now
                self._nursery.start_soon(self._exchange, net, peer, shared)
        for peer in list(net.px_asked):
            if peer not in connected and now - net.px_asked[peer] >= self.config.px_interval:
                del net.px_asked[peer]
        banned = set(net.gossip.penalties.banned)
        for sid in net.swarms:
            want = self.config.target_peers - len(members[sid])
            if want <= 0:
                continue
            skip = connected | banned | net.dialing | {self.peer_id}
            for entry in self.book.due(sid, now_ms, exclude=skip)[:want]:
                net.dialing.add(entry.peer)
                self._nursery.start_soon(self._dial_from_book, net, sid, entry.peer)

    def _identify_addrs(self, net: _Network, peer: str) -> list[str]:
        """What ``peer`` advertised in identify (its listen addresses, if it is a meshnode)."""
        try:
            return [str(a) for a in net.host.get_peerstore().addrs(ID.from_base58(peer))]
        except Exception:
            return []

    async def _exchange(self, net: _Network, peer: str, swarms: set[bytes]) -> None:
        if net.px is None:
            return
        try:
            async with net.px_limiter:
                hints = await net.px.ask(ID.from_base58(peer), swarms)
        except NetworkError as exc:
            log.debug("%s", exc)
            return
        now = self.clock()
        learned = False
        for hint in hints:
            if hint.swarm in net.swarms and hint.peer != self.peer_id:
                before = self.book.entry(hint.swarm, hint.peer)
                self.book.learn(hint.swarm, hint.peer, hint.addrs, "px", now)
                learned |= before is None or self.book.entry(hint.swarm, hint.peer) != before
        if learned:  # dial the newcomers now rather than at the next look
            try:
                self._maintain(net, exchange=False)
            except Exception as exc:
                log.debug("maintenance after peer exchange failed: %r", exc)

    async def _dial_member(self, net: _Network, sid: bytes, peer: str) -> str | None:
        """Dial ``peer`` at its addresses in the book; note the outcome there."""
        entry = self.book.entry(sid, peer)
        addrs = list(entry.addrs) if entry else []
        try:
            async with net.dial_limiter:
                addr = await dial_addrs(
                    net.host,
                    ID.from_base58(peer),
                    addrs,
                    timeout=self.config.dial_timeout,
                    dial_relayed=self._relayed_dialer(net),
                )
        except NetworkError:
            self.book.dial_failed(sid, peer, self.clock())
            raise
        if addr is not None:
            net.dialled[peer] = addr
        self.book.connected(sid, peer, self.clock(), addr=addr)
        return addr

    def _relayed_dialer(self, net: _Network) -> Callable[[ID, str, float], Any] | None:
        reach = net.reach
        if reach is None:
            return None

        async def dial_relayed(peer: ID, addr: str, timeout: float) -> None:
            await reach.dial_relayed(peer, addr, timeout=timeout)

        return dial_relayed

    async def _dial_from_book(self, net: _Network, sid: bytes, peer: str) -> None:
        try:
            await self._dial_member(net, sid, peer)
            log.info("connected to swarm peer %s", peer)
        except NetworkError as exc:
            log.info("%s", exc)
        except Exception as exc:
            log.warning("dialling %s failed: %r", peer, exc)
        finally:
            net.dialing.discard(peer)

    # --- the LAN ---------------------------------------------------------------------

    async def _lan_discovery(self, net: _Network) -> None:
        """Dial peers found by mDNS on the LAN (a claim until Noise proves the id)."""
        from meshnode.protocols.mdns import LanDiscovery  # zeroconf only when asked for

        send, recv = trio.open_memory_channel[object](32)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._dial_discovered, net, recv)
            try:
                key = bytes.fromhex(net.psk) if net.psk is not None else None
                await nursery.start(LanDiscovery(net.host, send, swarm_key=key).run)
            except OSError as exc:
                log.warning("LAN discovery is off: %s", exc)
                nursery.cancel_scope.cancel()

    async def _dial_discovered(self, net: _Network, recv: trio.MemoryReceiveChannel[object]) -> None:
        """Dial LAN peers concurrently (a few at a time), each once while in flight."""
        dialing: set[str] = set()
        limiter = trio.CapacityLimiter(4)
        async with recv, trio.open_nursery() as nursery:
            async for peer_id, addrs in recv:  # type: ignore[misc]
                pid = peer_id.to_base58()
                if pid in dialing or pid in net.gossip.penalties.banned or not addrs:
                    continue
                dialing.add(pid)
                nursery.start_soon(self._dial_lan_peer, net, peer_id, list(addrs), dialing, limiter)

    async def _dial_lan_peer(
        self, net: _Network, peer_id: Any, addrs: list[Any], dialing: set[str], limiter: trio.CapacityLimiter
    ) -> None:
        pid = peer_id.to_base58()
        try:
            if net.host.get_id().to_bytes() > peer_id.to_bytes():
                # Both sides discover each other at once: the larger id lets the
                # other dial first, so the two do not end up with two connections.
                await trio.sleep(LAN_DIAL_DEFER)
            if peer_id in net.host.get_connected_peers():
                return
            async with limiter:
                await dial(net.host, PeerInfo(peer_id, addrs), timeout=self.config.dial_timeout)
            net.dialled[pid] = f"{addrs[0]}/p2p/{pid}"
            log.info("connected to %s found on the LAN", pid)
        except Exception as exc:
            log.info("could not dial LAN peer %s: %s", pid, exc)
        finally:
            dialing.discard(pid)

    # === sync (issue 4) =========================================================
    #
    # One SyncIndex per joined swarm, built from the store when the swarm is
    # joined and kept current by Ingest.on_stored; one SyncService per network
    # (host) that runs sessions on connect, periodically and on join. Records
    # pruned from the store leave the indexes through prune_expired() below;
    # records evicted by the store leave an index when a push finds them gone.

    def _init_sync(self) -> None:
        self._sync_indexes: dict[bytes, SyncIndex] = {}
        # swarm id -> index ops that arrived while its index was being built
        self._sync_building: dict[bytes, list[tuple[int, bytes]]] = {}
        path = getattr(self.store, "path", ":memory:")
        self._sync_reader = self.store.reader() if path != ":memory:" else self.store
        self.ingest.on_stored.append(self._sync_on_stored)

    def _close_sync(self) -> None:
        if self._sync_reader is not self.store:
            self._sync_reader.close()

    def _sync_on_stored(self, record: rec.Record) -> None:
        index = self._sync_indexes.get(record.swarm)
        if index is not None:
            index.insert(record.ts, record.id)
        building = self._sync_building.get(record.swarm)
        if building is not None:
            building.append((record.ts, record.id))

    def sync_index(self, swarm_id: bytes) -> SyncIndex | None:
        """The reconciliation index of a joined swarm (None until it is built)."""
        return self._sync_indexes.get(swarm_id)

    async def _build_sync_index(self, swarm: Swarm, *, rebuild: bool = False) -> None:
        """Build ``swarm``'s index with one scan of the store, missing no record stored meanwhile.

        With ``rebuild`` the current index stays in use until the new one replaces it.
        """
        if swarm.id in self._sync_building or (swarm.id in self._sync_indexes and not rebuild):
            return
        self._sync_building[swarm.id] = []
        try:
            items = await trio.to_thread.run_sync(self._sync_reader.ids_in_range, swarm.id, None, None, 2**62)
            index = SyncIndex(items)
            index.insert_many(self._sync_building[swarm.id])
            self._sync_indexes[swarm.id] = index
        finally:
            del self._sync_building[swarm.id]

    def _make_sync(self, net: _Network) -> SyncService:
        return SyncService(
            net.host,
            ingest=self.ingest,
            store=self._sync_reader,
            index_of=lambda sid: self._sync_indexes.get(sid) if sid in net.swarms else None,
            swarms=lambda: net.swarms,
            penalise=net.gossip.penalise,
            is_banned=lambda peer: peer in net.gossip.penalties.banned,
            limits=self.config.sync_limits,
            interval=self.config.sync_interval,
            on_connect=self.config.sync_on_connect,
        )

    async def sync_with(self, peer_id: str, swarm: Swarm) -> SessionReport:
        """Run one sync session of ``swarm`` with a connected peer now (we initiate)."""
        net = self._networks.get(swarm.psk_hex)
        if net is None or net.sync is None or swarm.id not in net.swarms:
            raise NotFound(f"this node is not in swarm {swarm.name!r}")
        return await net.sync.sync_with(peer_id, swarm)

    def sync_stats(self) -> dict[str, int]:
        """Sync counters summed over this node's networks (sessions, records, bytes)."""
        return stats_dict(net.sync.stats for net in self._networks.values() if net.sync is not None)

    def sync_reports(self) -> list[SessionReport]:
        """The most recent sync sessions of every network, oldest first."""
        reports = [r for net in self._networks.values() if net.sync is not None for r in net.sync.reports]
        return reports

    async def prune_expired(self) -> int:
        """Prune expired records from the store, then rebuild the sync indexes; how many went."""
        now = self.clock()
        pruned = await trio.to_thread.run_sync(self.store.prune_expired, now)
        if pruned:
            for swarm in self.swarms():
                await self._build_sync_index(swarm, rebuild=True)
        return pruned
