"""The node: host(s), gossip, ingest and discovery under one trio nursery.

A node joins swarms. Open swarms share one libp2p host; each private swarm
gets a host of its own, because a libp2p private network (pnet) key applies
to a whole host: a peer without the key cannot even finish the handshake.
Every host has the node's one identity, so the peer id is the same on all,
and each has its own TCP port, kept across restarts (:mod:`meshnode.netstate`).

The node owns start-up and shutdown (``host.close()`` always, pitfall 4),
the per-author sequence numbers of its own records, and what the API shows
of it (status, peers, reachability). The parts it runs live beside it:
:mod:`meshnode.network` (one host and its services), :mod:`meshnode.upkeep`
(staying in the swarms: address book, peer exchange, redials with back-off,
LAN dialling) and :mod:`meshnode.syncindexes` (the reconciliation indexes).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.peer.id import ID

from meshnode import addrs as addrlib
from meshnode import records as rec
from meshnode import views
from meshnode.addrbook import AddressBook
from meshnode.bans import BanPolicy
from meshnode.errors import BadValue, MeshError, NetworkError, NotFound
from meshnode.identity import Identity
from meshnode.ingest import Ingest, wall_clock_ms
from meshnode.netstate import NetState, load_state, network_tag, save_state
from meshnode.network import ConnTracker, Network
from meshnode.protocols.connmgr import ConnLimits
from meshnode.protocols.connmgr import install as install_connmgr
from meshnode.protocols.gossip import RecordGossip
from meshnode.protocols.host import (
    Advertiser,
    build_host,
    check_port_free,
    close_connections,
    dial,
    free_port,
    listen_addrs,
    parse_listen,
    peer_info_of,
    port_is_free,
)
from meshnode.protocols.px import PeerExchange
from meshnode.protocols.reachability import NetworkReach, ReachConfig
from meshnode.protocols.sync.service import SessionReport, SyncLimits, SyncService, stats_dict
from meshnode.sharedbans import SharedBans
from meshnode.store import QuotaPolicy, Quotas, Store
from meshnode.store.write import ORPHAN_GRACE_MS
from meshnode.swarm import Invite, Swarm, decode_invite, encode_invite
from meshnode.syncindex import SyncIndex
from meshnode.syncindexes import SyncIndexes
from meshnode.upkeep import SwarmUpkeep, UpkeepConfig, dial_lan_peers
from meshnode.verdicts import PeerPenalties

log = logging.getLogger(__name__)

#: How long an invite waits for a new swarm network's first UPnP answer (see :meth:`Node.invite`).
INVITE_WAIT = 5.0

CLOSE_TIMEOUT = 5.0


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
    bans_path: Path | None = None  # the ban book kept here (bans.cbor); None: memory only
    ban_policy: BanPolicy = field(default_factory=BanPolicy)  # ban lengths, per-address limits
    mdns: bool = False  # advertise and browse on the LAN (private swarms with a keyed tag)
    sync_interval: float = 60.0  # seconds between syncs with one random peer; 0: never
    sync_on_connect: bool = True  # sync when a peer connects (smaller peer id starts)
    sync_limits: SyncLimits = field(default_factory=SyncLimits)
    prune_interval: float = 3600.0  # seconds between prunes of expired records; 0: never
    quotas: Quotas | None = field(default_factory=Quotas)  # what the store keeps; None: unbounded
    trust_refresh_interval: float = 60.0  # s between updates of whom the quotas protect
    state_path: Path | None = None  # ports and address book kept here (network.cbor); None: memory
    state_save_interval: float = 30.0
    upnp: bool = False  # ask the home router to map each port (the daemon's default: on)
    relay: bool = True  # relay for members when public; hold relay slots when not
    reach_unknown_interval: float = 5.0  # s between reachability checks while unknown


class Node:
    """A meshnode peer. Use :meth:`run` in a nursery (``await nursery.start(node.run)``)."""

    def __init__(
        self,
        identity: Identity,
        store: Store,
        config: NodeConfig | None = None,
        *,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.identity = identity
        self.store = store
        self.config = config or NodeConfig()
        self.clock = clock
        self.ingest = Ingest(store, swarm_ids=self.swarm_ids, clock=clock)
        self._networks: dict[str | None, Network] = {}
        self._nursery: trio.Nursery | None = None
        self._seq_lock = trio.Lock()
        self._last_seq: int | None = None  # this node's latest seq, read once from the store
        self._state: NetState = load_state(
            self.config.state_path,
            base_backoff_ms=int(self.config.reconnect_interval * 1000),
            max_backoff_ms=int(self.config.reconnect_max_backoff * 1000),
        )
        self._ports_changed = False
        # One ban book for every network of the node, kept in the home.
        self.bans = SharedBans.load(self.config.bans_path, clock=clock, policy=self.config.ban_policy)
        self.upkeep = SwarmUpkeep(
            self._state.book,
            UpkeepConfig(
                interval=self.config.reconnect_interval,
                target_peers=self.config.target_peers,
                px_interval=self.config.px_interval,
                dial_timeout=self.config.dial_timeout,
            ),
            own_peer=identity.peer_id,
            clock=clock,
        )
        # Sync reads on a second, read-only connection, beside the ingest writer.
        self._sync_reader = self.store.open_reader()
        self.sync_indexes = SyncIndexes(self._sync_reader)
        self.ingest.on_stored.append(self.sync_indexes.on_stored)
        #: Called after records left the store other than one by one through ingest
        #: (pruning, and the evictions of a stored batch: its quotas, invalid waiting updates).
        self.on_removed: list[Callable[[], None]] = []
        self.ingest.on_evicted.append(lambda ids: self._removed())

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
            self.bans.save_now()
            self.ingest.close()
            self._sync_reader.close()

    async def _start(self, nursery: trio.Nursery, task_status: trio.TaskStatus[None]) -> None:
        self._nursery = nursery
        await nursery.start(self.ingest.run)
        await nursery.start(self.bans.run)
        await self._network(None)
        await nursery.start(self.upkeep.run, self._networks.values)
        for addr in self.config.bootstrap:
            nursery.start_soon(self._dial_quietly, self._networks[None], addr)
        if self.config.quotas is not None:
            await self.refresh_quota_policy()
            nursery.start_soon(self._quota_loop)
        if self.config.prune_interval > 0:
            nursery.start_soon(self._prune_loop)
        if self.config.state_path is not None:
            nursery.start_soon(self._state_loop)
        task_status.started()

    async def refresh_quota_policy(self) -> None:
        """Tell the store whom its quotas protect: this node, and everyone it trusts (> 0).

        The scores also order evictions (the distrusted first). See
        :mod:`meshnode.store.quota`.
        """
        quotas = self.config.quotas
        if quotas is None:
            return
        me, now = self.identity.public_key, self.clock()

        def refresh() -> None:
            scores = views.trust_view(self._sync_reader, me, now).scores
            self.store.set_quota_policy(QuotaPolicy(owner=me, scores=dict(scores), quotas=quotas))

        await trio.to_thread.run_sync(refresh)

    async def _quota_loop(self) -> None:
        while True:
            await trio.sleep(self.config.trust_refresh_interval)
            try:
                await self.refresh_quota_policy()
            except Exception as exc:  # keep the node running; the last policy stays in force
                log.warning("updating whom the quotas protect failed: %s", exc)

    def storage(self) -> dict[str, Any]:
        """The store's use, quotas and free-disk floor (blocking: call in a thread)."""
        return self.store.storage()

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

    def network(self, swarm: Swarm | None = None) -> Network:
        """The network (host and services) that carries ``swarm`` (the open one if None)."""
        net = self._networks.get(swarm.psk_hex if swarm else None)
        if net is None:
            raise NotFound("that swarm's network is not running")
        return net

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
        return net.swarm_peers(swarm) if net is not None else []

    def network_status(self) -> list[dict[str, Any]]:
        """Each network (host): which swarms, its port, addresses, reachability, peers."""
        out = []
        for net in self._networks.values():
            out.append(
                {
                    "network": net.kind,
                    "swarms": sorted(s.name for s in net.swarms.values()),
                    "port": net.listen_port(),
                    "addrs": listen_addrs(net.host),
                    "reachability": net.reach.verdict().as_dict() | net.reach.details(),
                    "peers": len(net.host.get_connected_peers()),
                    "connections": dataclasses.asdict(net.connmgr.stats()),
                    "swarm_peers": {s.name: len(net.swarm_peers(s)) for s in net.swarms.values()},
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
        out = nets[0].reach.verdict().as_dict()
        if nets[0].psk is not None:
            out["reason"] = f"{out['reason']} (swarm {', '.join(s.name for s in nets[0].swarms.values())})"
        return out

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
                            s.name for sid, s in net.swarms.items() if sid in net.member_swarms(peer)
                        ),
                        "network": net.kind,
                        "addr": addr,
                        "direction": info.direction if info else "unknown",
                        "relayed": net.reach.path(pid) == "relayed",
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
        await self.sync_indexes.build(swarm.id)
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
        net.sync.sync_joined(swarm)
        self.upkeep.maintain(
            net
        )  # redial its peers from the book now (after a restart), not at the next look

    async def leave_swarm(self, swarm: Swarm) -> None:
        net = self._networks.get(swarm.psk_hex)
        if net is None or swarm.id not in net.swarms:
            raise NotFound(f"this node is not in swarm {swarm.name!r}")
        await net.gossip.leave(swarm)
        del net.swarms[swarm.id]
        self.sync_indexes.drop(swarm.id)
        self.book.forget_swarm(swarm.id)
        if net.psk is not None and not net.swarms:
            net.stop.cancel()
            del self._networks[net.psk]
            if self._state.ports.pop(net.tag, None) is not None:
                self._ports_changed = True

    async def invite(self, swarm: Swarm, *, wait: float = INVITE_WAIT) -> str:
        """An invite code for ``swarm`` naming this node's addresses on its network.

        A swarm's network that has just started (``swarm create``) asks the
        router for a port mapping; an invite made before the answer would
        carry only LAN addresses. So wait up to ``wait`` s for that answer.
        """
        net = self._networks.get(swarm.psk_hex)
        if net is not None and net.reach is not None:
            await net.reach.mapping_known(wait)
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
                await self.upkeep.dial_member(net, invite.swarm.id, peer)
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
        net = self.network(swarm)
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
        """Gossip counters summed over the networks, and the bans in force (shared by all)."""
        total: dict[str, int] = {}
        for net in self._networks.values():
            for k, v in vars(net.gossip.stats).items():
                total[k] = total.get(k, 0) + v
        counts = self.bans.counts()
        total["bans"] = counts.peers
        total["banned_addresses"] = counts.addresses
        return total

    def px_stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for net in self._networks.values():
            for k, v in vars(net.px.stats).items():
                total[k] = total.get(k, 0) + v
        return total

    # --- networks ----------------------------------------------------------------

    async def _network(self, psk: str | None) -> Network:
        existing = self._networks.get(psk)
        if existing is not None:
            await existing.started.wait()
            return existing
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
            bans=self.bans,
        )
        # The services ask the network who is a member; ``net`` is bound below,
        # before any of them runs.
        net: Network

        def is_member(pid: ID) -> bool:
            return bool(net.member_swarms(pid.to_base58()))

        # Inbound slots come back when a connection ends (pitfall 25); limits per
        # IP and subnet; members of our swarms are never trimmed.
        connmgr = install_connmgr(
            host,
            is_protected=is_member,
            is_refused_ip=self.bans.ip_refused,
            limits=ConnLimits.for_max(self.config.max_connections, grace=self.config.conn_grace),
        )
        gossip.on_accept = connmgr.note_useful
        gossip.ip_of = lambda peer: net.peer_ip(peer)
        net = Network(
            psk=psk,
            host=host,
            gossip=gossip,
            advertiser=advertiser,
            connmgr=connmgr,
            reach=NetworkReach(
                host,
                advertiser,
                gossip.pubsub,
                is_member=is_member,
                config=ReachConfig(
                    upnp=self.config.upnp,
                    relay=self.config.relay,
                    unknown_interval=self.config.reach_unknown_interval,
                ),
            ),
            px=PeerExchange(
                host,
                member_swarms=lambda peer: net.member_swarms(peer),
                hints_for=self.upkeep.hints_for,
            ),
            sync=SyncService(
                host,
                ingest=self.ingest,
                store=self._sync_reader,
                index_of=lambda sid: self.sync_indexes.get(sid) if sid in net.swarms else None,
                swarms=lambda: net.swarms,
                penalise=gossip.penalise,
                is_banned=lambda peer: net.is_banned(peer),
                limits=self.config.sync_limits,
                interval=self.config.sync_interval,
                on_connect=self.config.sync_on_connect,
            ),
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
        self, net: Network, listen: list[multiaddr.Multiaddr], *, task_status: trio.TaskStatus[None]
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
                            net.host.get_network().register_notifee(ConnTracker(net))
                            await nursery.start(net.connmgr.run)
                            await nursery.start(net.gossip.run)
                            await nursery.start(net.sync.run)
                            net.px.install()
                            await nursery.start(net.reach.run)
                            if self.config.mdns:
                                nursery.start_soon(
                                    partial(dial_lan_peers, net, dial_timeout=self.config.dial_timeout)
                                )
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

    async def _dial_quietly(self, net: Network, addr: str) -> None:
        """Dial a bootstrap address once; a failure is logged (the book redials members)."""
        await net.started.wait()
        try:
            info = peer_info_of(addr)
            await dial(net.host, info, timeout=self.config.dial_timeout)
            net.dialled[info.peer_id.to_base58()] = addr
        except MeshError as exc:
            log.info("could not dial %s: %s", addr, exc)

    # --- sync ----------------------------------------------------------------------
    #
    # One SyncService per network (host) runs sessions on connect, periodically
    # and on join, over the indexes of self.sync_indexes. Records pruned from
    # the store leave the indexes through prune_expired() below.

    def sync_index(self, swarm_id: bytes) -> SyncIndex | None:
        """The reconciliation index of a joined swarm (None until it is built)."""
        return self.sync_indexes.get(swarm_id)

    async def sync_with(self, peer_id: str, swarm: Swarm) -> SessionReport:
        """Run one sync session of ``swarm`` with a connected peer now (we initiate)."""
        net = self._networks.get(swarm.psk_hex)
        if net is None or swarm.id not in net.swarms:
            raise NotFound(f"this node is not in swarm {swarm.name!r}")
        return await net.sync.sync_with(peer_id, swarm)

    def sync_stats(self) -> dict[str, int]:
        """Sync counters summed over this node's networks (sessions, records, bytes)."""
        return stats_dict(net.sync.stats for net in self._networks.values())

    def sync_reports(self) -> list[SessionReport]:
        """The most recent sync sessions of every network, oldest first."""
        return [r for net in self._networks.values() for r in net.sync.reports]

    def _removed(self) -> None:
        """Tell the ``on_removed`` listeners that records left the store."""
        for callback in self.on_removed:
            try:
                callback()
            except Exception:  # a bug in a listener must not stop pruning or the writer
                log.exception("on_removed callback %r failed", callback)

    async def prune_expired(self) -> int:
        """Prune expired records from the store, then rebuild the sync indexes; how many went."""
        now = self.clock()
        pruned = await trio.to_thread.run_sync(self.store.prune_expired, now)
        # Pruned ids are refused while they could still come back; after that nothing needs them.
        await trio.to_thread.run_sync(self.store.forget_pruned, now - ORPHAN_GRACE_MS)
        if pruned:
            self._removed()
            for swarm in self.swarms():
                await self.sync_indexes.build(swarm.id, rebuild=True)
        return pruned
