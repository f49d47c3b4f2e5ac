"""The node: host(s), gossip, ingest and discovery under one trio nursery.

A node joins swarms. Open swarms share one libp2p host; each private swarm
gets a host of its own, because a libp2p private network (pnet) key applies
to a whole host: a peer without the key cannot even finish the handshake.
Every host has the node's one identity, so the peer id is the same on all.

The node owns start-up and shutdown (``host.close()`` always, pitfall 4),
the per-author sequence numbers of its own records, and reconnection with
back-off to the swarm peers it has known.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.peerinfo import PeerInfo

from meshnode import records as rec
from meshnode.errors import BadValue, NetworkError, NotFound
from meshnode.identity import Identity
from meshnode.ingest import Ingest, wall_clock_ms
from meshnode.protocols.gossip import PeerPenalties, RecordGossip
from meshnode.protocols.host import build_host, dial, listen_addrs, parse_listen, peer_info_of
from meshnode.protocols.sync import SessionReport, SyncLimits, SyncService, stats_dict
from meshnode.swarm import Invite, Swarm, decode_invite, encode_invite
from meshnode.syncindex import SyncIndex

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0
LAN_DIAL_DEFER = 2.0  # s; on the LAN the peer with the larger id lets the other dial first


@dataclass
class NodeConfig:
    """How a node runs; the daemon fills it from config.toml and flags."""

    listen: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"])
    bootstrap: list[str] = field(default_factory=list)
    max_connections: int = 64
    min_peers: int = 8  # below this, libp2p dials known peers every 30 s; 0: never
    dial_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    reconnect_interval: float = 5.0
    reconnect_max_backoff: float = 120.0
    penalty_limit: int = 20
    mdns: bool = False  # advertise and browse on the LAN (open network only)
    sync_interval: float = 60.0  # seconds between syncs with one random peer; 0: never
    sync_on_connect: bool = True  # sync when a peer connects (smaller peer id starts)
    sync_limits: SyncLimits = field(default_factory=SyncLimits)
    prune_interval: float = 3600.0  # seconds between prunes of expired records; 0: never


@dataclass
class _Network:
    """One libp2p host with its gossip, for the swarms that share its pnet key."""

    psk: str | None
    host: IHost
    gossip: RecordGossip
    sync: SyncService | None = None
    swarms: dict[bytes, Swarm] = field(default_factory=dict)
    known_peers: dict[str, str] = field(default_factory=dict)  # peer id -> dial address
    backoff: dict[str, tuple[float, float]] = field(default_factory=dict)  # peer -> (next try, delay)
    started: trio.Event = field(default_factory=trio.Event)
    stop: trio.CancelScope = field(default_factory=trio.CancelScope)


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
        self._init_sync()

    # --- lifecycle -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled; ``started`` once the open network listens."""
        try:
            async with trio.open_nursery() as nursery:
                await self._start(nursery, task_status)
        finally:
            self.ingest.close()
            self._close_sync()

    async def _start(self, nursery: trio.Nursery, task_status: trio.TaskStatus[None]) -> None:
        self._nursery = nursery
        await nursery.start(self.ingest.run)
        await self._network(None)
        nursery.start_soon(self._reconnect_loop)
        for addr in self.config.bootstrap:
            nursery.start_soon(self._dial_quietly, self._networks[None], addr)
        if self.config.mdns:
            nursery.start_soon(self._lan_discovery, self._networks[None])
        if self.config.prune_interval > 0:
            nursery.start_soon(self._prune_loop)
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

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def addrs(self, swarm: Swarm | None = None) -> list[str]:
        """Dialable addresses of this node (for ``swarm``'s network if given)."""
        net = self._networks.get(swarm.psk_hex if swarm else None)
        return listen_addrs(net.host) if net else []

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
        await net.gossip.join(swarm)
        if net.sync is not None:
            net.sync.sync_joined(swarm)

    async def leave_swarm(self, swarm: Swarm) -> None:
        net = self._networks.get(swarm.psk_hex)
        if net is None or swarm.id not in net.swarms:
            raise NotFound(f"this node is not in swarm {swarm.name!r}")
        await net.gossip.leave(swarm)
        del net.swarms[swarm.id]
        self._sync_indexes.pop(swarm.id, None)
        if net.psk is not None and not net.swarms:
            net.stop.cancel()
            del self._networks[net.psk]

    def invite(self, swarm: Swarm) -> str:
        """An invite code for ``swarm`` naming this node's addresses on its network."""
        return encode_invite(Invite(swarm=swarm, addrs=tuple(self.addrs(swarm))))

    async def join_invite(self, code: str) -> Swarm:
        """Join the swarm of an invite code and connect to the inviter."""
        invite = decode_invite(code)
        await self.join_swarm(invite.swarm)
        net = self._networks[invite.swarm.psk_hex]
        errors = []
        for addr in invite.addrs:
            try:
                await self.connect(addr, swarm=invite.swarm)
                return invite.swarm
            except NetworkError as exc:
                errors.append(str(exc))
        for addr in invite.addrs:  # keep trying in the background
            net.known_peers[peer_info_of(addr).peer_id.to_base58()] = addr
        raise NetworkError(
            f"joined swarm {invite.swarm.name!r} but could not reach the inviter yet"
            f" ({'; '.join(errors)}); will keep trying"
        )

    async def connect(self, addr: str, *, swarm: Swarm | None = None) -> str:
        """Dial a ``…/p2p/<peer id>`` multiaddr; remember it for reconnects."""
        info = peer_info_of(addr)
        net = self._networks.get(swarm.psk_hex if swarm else None)
        if net is None:
            raise NotFound("that swarm's network is not running")
        await dial(net.host, info, timeout=self.config.dial_timeout)
        pid = info.peer_id.to_base58()
        net.known_peers[pid] = addr
        net.backoff.pop(pid, None)
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

    # --- networks ----------------------------------------------------------------

    async def _network(self, psk: str | None) -> _Network:
        net = self._networks.get(psk)
        if net is not None:
            await net.started.wait()
            return net
        if self._nursery is None:
            raise RuntimeError("the node is not running: start Node.run() first")
        host = build_host(
            self.identity,
            psk=psk,
            max_connections=self.config.max_connections,
            min_peers=self.config.min_peers,
            dial_timeout=self.config.dial_timeout,
        )
        gossip = RecordGossip(
            host,
            self.ingest.judge,
            heartbeat_interval=self.config.heartbeat_interval,
            penalties=PeerPenalties(limit=self.config.penalty_limit),
        )
        net = _Network(psk=psk, host=host, gossip=gossip)
        net.sync = self._make_sync(net)
        self._networks[psk] = net
        await self._nursery.start(self._run_network, net)
        return net

    async def _run_network(self, net: _Network, *, task_status: trio.TaskStatus[None]) -> None:
        listen = parse_listen(self.config.listen)
        try:
            with net.stop:
                async with net.host.run(listen), trio.open_nursery() as nursery:
                    await nursery.start(net.gossip.run)
                    if net.sync is not None:
                        await nursery.start(net.sync.run)
                    net.started.set()
                    task_status.started()
                    await trio.sleep_forever()
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
            net.known_peers[info.peer_id.to_base58()] = addr
        except Exception as exc:
            log.info("could not dial %s: %s", addr, exc)

    async def _lan_discovery(self, net: _Network) -> None:
        """Dial peers found by mDNS on the LAN (a claim until Noise proves the id)."""
        from meshnode.protocols.mdns import LanDiscovery  # zeroconf only when asked for

        send, recv = trio.open_memory_channel[object](32)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._dial_discovered, net, recv)
            try:
                await nursery.start(LanDiscovery(net.host, send).run)
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
            net.known_peers[pid] = f"{addrs[0]}/p2p/{pid}"
            log.info("connected to %s found on the LAN", pid)
        except Exception as exc:
            log.info("could not dial LAN peer %s: %s", pid, exc)
        finally:
            dialing.discard(pid)

    async def _reconnect_loop(self) -> None:
        """Redial known swarm peers that dropped, with exponential back-off per peer."""
        while True:
            await trio.sleep(self.config.reconnect_interval)
            now = time.monotonic()
            for net in list(self._networks.values()):
                connected = {p.to_base58() for p in net.host.get_connected_peers()}
                for pid, addr in list(net.known_peers.items()):
                    if pid in connected or pid in net.gossip.penalties.banned:
                        net.backoff.pop(pid, None)
                        continue
                    next_try, delay = net.backoff.get(pid, (0.0, self.config.reconnect_interval))
                    if now < next_try:
                        continue
                    try:
                        await dial(net.host, peer_info_of(addr), timeout=self.config.dial_timeout)
                        net.backoff.pop(pid, None)
                        log.info("reconnected to %s", pid)
                    except Exception:
                        delay = min(delay * 2, self.config.reconnect_max_backoff)
                        net.backoff[pid] = (now + delay * random.uniform(0.8, 1.2), delay)

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
