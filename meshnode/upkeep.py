"""Staying in the swarms: the address book, peer exchange, redials, and the LAN.

Every ``reconnect_interval`` :class:`SwarmUpkeep` looks at each network:

- every connected member is noted in the address book (with the address the
  node dialled, and what the peer advertises in identify, e.g. a new relay
  address);
- members are asked what they know (:mod:`meshnode.protocols.px`) every
  ``px_interval``, and every :data:`PX_WHILE_SHORT` seconds while one of
  their swarms has fewer than ``target_peers`` members connected;
- a swarm with fewer than ``target_peers`` members connected gets dials from
  the book, most recently good first, with back-off (:mod:`meshnode.addrbook`),
  at most :data:`~meshnode.network.MAX_CONCURRENT_DIALS` at a time; banned
  peers and peers already being dialled are skipped.

:func:`dial_lan_peers` dials the peers mDNS finds on the LAN (a claim until
Noise proves the peer id).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from meshnode import addrs as addrlib
from meshnode.addrbook import AddressBook
from meshnode.errors import MeshError, NetworkError
from meshnode.network import Network
from meshnode.protocols.host import dial, dial_addrs
from meshnode.protocols.px import PeerHint

log = logging.getLogger(__name__)

LAN_DIAL_DEFER = 2.0  # s; on the LAN the peer with the larger id lets the other dial first
MAX_CONCURRENT_LAN_DIALS = 4
PX_WHILE_SHORT = 5.0  # s between peer exchanges with a member while a swarm has too few peers


@dataclass(frozen=True)
class UpkeepConfig:
    """The parts of :class:`meshnode.node.NodeConfig` that upkeep uses."""

    interval: float  # s between looks at each network (and the first back-off)
    target_peers: int  # per swarm: below this many members connected, dial from the book; 0: never
    px_interval: float  # s between peer exchanges with one member
    dial_timeout: float


class SwarmUpkeep:
    """Keeps each network's swarms connected. Run :meth:`run` in the node's nursery."""

    def __init__(
        self,
        book: AddressBook,
        config: UpkeepConfig,
        *,
        own_peer: str,
        clock: Callable[[], int],
    ) -> None:
        self.book = book
        self.config = config
        self._own_peer = own_peer
        self._clock = clock
        self._nursery: trio.Nursery | None = None

    async def run(
        self,
        networks: Callable[[], Iterable[Network]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Look at every network now and every ``interval``, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    for net in list(networks()):
                        try:
                            self.maintain(net)
                        except Exception:  # a bug: say so in full, keep the node running
                            log.exception("swarm maintenance failed")
                    await trio.sleep(self.config.interval)
            finally:
                self._nursery = None

    def hints_for(self, swarm: bytes, asker: str) -> list[PeerHint]:
        """What this node tells a member of ``swarm`` who asks whom it knows."""
        entries = self.book.shareable(swarm, self._clock(), exclude={asker})
        return [PeerHint(swarm=swarm, peer=e.peer, addrs=e.addrs) for e in entries]

    def maintain(self, net: Network, *, exchange: bool = True) -> None:
        """One look at ``net``: note members, start exchanges and dials (does not wait for them)."""
        nursery = self._nursery
        if nursery is None or not net.started.is_set():
            return
        now_ms = self._clock()
        now = time.monotonic()
        connected = net.connected()
        members: dict[bytes, set[str]] = {sid: set() for sid in net.swarms}
        shared_with: dict[str, set[bytes]] = {}
        for peer in connected:
            shared = shared_with[peer] = net.member_swarms(peer)
            for sid in shared:
                members[sid].add(peer)
                self._note_member(net, sid, peer, now_ms)
        for peer, shared in shared_with.items():
            # Ask members what they know every px_interval, and more often while
            # a swarm has too few peers (addresses appear as others find relays).
            short = any(len(members[sid]) < self.config.target_peers for sid in shared)
            interval = min(self.config.px_interval, PX_WHILE_SHORT) if short else self.config.px_interval
            if exchange and shared and now - net.px_asked.get(peer, -1e9) >= interval:
                net.px_asked[peer] = now
                nursery.start_soon(self._exchange, net, peer, shared)
        for peer in list(net.px_asked):
            if peer not in connected and now - net.px_asked[peer] >= self.config.px_interval:
                del net.px_asked[peer]
        banned = set(net.gossip.bans.banned_peers())  # the node's shared ban book, with expiry
        for sid in net.swarms:
            want = self.config.target_peers - len(members[sid])
            if want <= 0:
                continue
            skip = connected | banned | net.dialing | {self._own_peer}
            for entry in self.book.due(sid, now_ms, exclude=skip)[:want]:
                net.dialing.add(entry.peer)
                nursery.start_soon(self._dial_from_book, net, sid, entry.peer)

    def _note_member(self, net: Network, sid: bytes, peer: str, now_ms: int) -> None:
        self.book.connected(sid, peer, now_ms, addr=net.dialled.get(peer))
        entry = self.book.entry(sid, peer)
        known = set(entry.addrs) if entry is not None else set()
        fresh = [a for a in net.advertised_addrs(peer) if addrlib.strip_peer(a) not in known]
        if fresh:  # what it advertises now (e.g. a new relay address)
            self.book.learn(sid, peer, fresh, "identify", now_ms)

    async def dial_member(self, net: Network, sid: bytes, peer: str) -> str | None:
        """Dial ``peer`` at its addresses in the book; note the outcome there.

        Returns the address that worked (None if the peer was connected
        already); raises :class:`NetworkError` when none did.
        """
        entry = self.book.entry(sid, peer)
        addrs = list(entry.addrs) if entry else []
        try:
            async with net.dial_limiter:
                addr = await dial_addrs(
                    net.host,
                    ID.from_base58(peer),
                    addrs,
                    timeout=self.config.dial_timeout,
                    dial_relayed=_relayed_dialer(net),
                )
        except NetworkError:
            self.book.dial_failed(sid, peer, self._clock())
            raise
        if addr is not None:
            net.dialled[peer] = addr
        self.book.connected(sid, peer, self._clock(), addr=addr)
        return addr

    async def _exchange(self, net: Network, peer: str, swarms: set[bytes]) -> None:
        try:
            async with net.px_limiter:
                hints = await net.px.ask(ID.from_base58(peer), swarms)
        except NetworkError as exc:
            log.debug("%s", exc)
            return
        now = self._clock()
        learned = False
        for hint in hints:
            if hint.swarm in net.swarms and hint.peer != self._own_peer:
                before = self.book.entry(hint.swarm, hint.peer)
                self.book.learn(hint.swarm, hint.peer, hint.addrs, "px", now)
                learned |= before is None or self.book.entry(hint.swarm, hint.peer) != before
        if learned:  # dial the newcomers now rather than at the next look
            self.maintain(net, exchange=False)

    async def _dial_from_book(self, net: Network, sid: bytes, peer: str) -> None:
        try:
            await self.dial_member(net, sid, peer)
            log.info("connected to swarm peer %s", peer)
        except MeshError as exc:  # unreachable (noted in the book), or not a dialable peer
            log.info("%s", exc)
        except Exception:  # a bug: say so in full, keep the node running
            log.exception("dialling swarm peer %s failed", peer)
        finally:
            net.dialing.discard(peer)


def _relayed_dialer(net: Network) -> Callable[[ID, str, float], Awaitable[None]]:
    reach = net.reach

    async def dial_relayed(peer: ID, addr: str, timeout: float) -> None:
        await reach.dial_relayed(peer, addr, timeout=timeout)

    return dial_relayed


# --- the LAN ---------------------------------------------------------------------


async def dial_lan_peers(net: Network, *, dial_timeout: float) -> None:
    """Browse the LAN with mDNS and dial the peers found, until cancelled."""
    from meshnode.protocols.mdns import LanDiscovery  # zeroconf only when asked for

    send, recv = trio.open_memory_channel[tuple[ID, list[object]]](32)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_dial_discovered, net, recv, dial_timeout)
        try:
            key = bytes.fromhex(net.psk) if net.psk is not None else None
            await nursery.start(LanDiscovery(net.host, send, swarm_key=key).run)
        except OSError as exc:
            log.warning("LAN discovery is off: %s", exc)
            nursery.cancel_scope.cancel()


async def _dial_discovered(
    net: Network, recv: trio.MemoryReceiveChannel[tuple[ID, list[object]]], dial_timeout: float
) -> None:
    """Dial LAN peers concurrently (a few at a time), each once while in flight."""
    dialing: set[str] = set()
    limiter = trio.CapacityLimiter(MAX_CONCURRENT_LAN_DIALS)
    async with recv, trio.open_nursery() as nursery:
        async for peer_id, addrs in recv:
            pid = peer_id.to_base58()
            if pid in dialing or net.is_banned(pid) or not addrs:
                continue
            dialing.add(pid)
            nursery.start_soon(_dial_lan_peer, net, peer_id, list(addrs), dialing, limiter, dial_timeout)


async def _dial_lan_peer(
    net: Network,
    peer_id: ID,
    addrs: list[object],
    dialing: set[str],
    limiter: trio.CapacityLimiter,
    dial_timeout: float,
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
            await dial(net.host, PeerInfo(peer_id, addrs), timeout=dial_timeout)  # type: ignore[arg-type]
        net.dialled[pid] = f"{addrs[0]}/p2p/{pid}"
        log.info("connected to %s found on the LAN", pid)
    except MeshError as exc:
        log.info("could not dial LAN peer %s: %s", pid, exc)
    except Exception:  # a bug: say so in full, keep the node running
        log.exception("dialling LAN peer %s failed", pid)
    finally:
        dialing.discard(pid)
