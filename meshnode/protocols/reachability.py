"""Making one host reachable from other homes: UPnP, AutoNAT, relay and DCUtR, composed.

What runs for each host (network) of a node, in one nursery:

1. **UPnP** (:class:`~meshnode.protocols.upnp.PortMapper`, when enabled and
   the host listens on a non-loopback address): asks the home router to map
   the listen port; a mapping on a public address is advertised (``mapped``).
2. **AutoNAT** (:mod:`meshnode.protocols.autonat`): every host serves
   dial-backs; the checker asks connected peers to dial back our candidate
   addresses (advertised direct addresses, the UPnP mapping, our listen port
   at whatever IP they see) - at once, every ``unknown_interval`` s while the
   answer is unknown, every ``interval`` s once known, and again when the UPnP
   mapping changes. PUBLIC advertises the confirmed addresses (``observed``).
3. **Relay**: a host confirmed PUBLIC serves circuit relay v2 to members of
   its swarms (:class:`~meshnode.protocols.relay.RelayService`); any other
   host runs a :class:`~meshnode.protocols.relay.RelayClient` and, unless it
   is PUBLIC, keeps reservations on up to ``max_relays`` connected members
   that serve relaying, advertising its ``/p2p-circuit`` addresses
   (``relayed``). Exactly one of the two runs at a time (both own the stop
   handler); a change of verdict swaps them.
4. **DCUtR** (:class:`~meshnode.protocols.relay.DirectUpgrade`) on every host,
   so a relayed connection becomes direct where the NATs allow it, and the
   GossipSub resubscribe fix for the moment the relayed connection closes.

Whenever the advertised addresses change, identify is pushed to every
connected peer, so their address books (and through peer exchange, everyone
else's) learn them. The order of addresses, and so the order in which others
try them, is :func:`meshnode.addrs.advertised`: by hand, UPnP, AutoNAT-
confirmed, public listen, relayed, private.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from meshnode import addrs as addrlib
from meshnode.errors import NetworkError
from meshnode.protocols.autonat import (
    AutoNATServer,
    Reachability,
    ReachabilityChecker,
    ReachabilityStatus,
)
from meshnode.protocols.host import Advertiser
from meshnode.protocols.relay import (
    HOP_PROTOCOL_ID,
    DirectUpgrade,
    RelayClient,
    RelayService,
    ResubscribeNotifee,
    peer_path,
)
from meshnode.reach import Reachability as Verdict
from meshnode.reach import assess

log = logging.getLogger(__name__)


@dataclass
class ReachConfig:
    upnp: bool = True
    relay: bool = True  # serve relaying when public, use relays when not
    max_relays: int = 2
    check_interval: float = 600.0
    unknown_interval: float = 5.0
    relay_look_interval: float = 2.0
    dcutr_retry_interval: float = 60.0


class NetworkReach:
    """UPnP, AutoNAT, relay and DCUtR for one host; see the module docstring.

    ``is_member(peer)``: whether ``peer`` shares a swarm with us on this host
    (only members get relay reservations, and only members serve as ours).
    """

    def __init__(
        self,
        host: IHost,
        advertiser: Advertiser,
        pubsub: Any,
        *,
        is_member: Callable[[ID], bool],
        config: ReachConfig | None = None,
    ) -> None:
        self.host = host
        self.advertiser = advertiser
        self.pubsub = pubsub
        self.is_member = is_member
        self.config = config or ReachConfig()
        self.checker = ReachabilityChecker(
            host,
            candidates=self._candidates,
            ports=self._ports,
            on_change=self._on_verdict,
            interval=self.config.check_interval,
            unknown_interval=self.config.unknown_interval,
        )
        self.mapper: Any = None
        self.relay: RelayService | RelayClient | None = None
        self.upgrade = DirectUpgrade(
            host, retry_interval=self.config.dcutr_retry_interval, public_addrs=self._public_addrs
        )
        self._mode_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        # Set once the router has answered the first UPnP attempt (mapped, no gateway or failed),
        # or at once when UPnP is not tried: what an invite made now can carry is then known.
        self._mapping_known = trio.Event()

    # --- reading ---------------------------------------------------------------------

    @property
    def status(self) -> ReachabilityStatus:
        return self.checker.status

    @property
    def mode(self) -> str:
        return "service" if isinstance(self.relay, RelayService) else "client"

    def verdict(self) -> Verdict:
        mapping = self.mapper.status if self.mapper is not None else None
        return assess(
            listen=[str(a) for a in self.host.get_transport_addrs()],
            advertised=self.advertiser.addrs(),
            announce=self.advertiser.announce,
            upnp_state=str(mapping.state) if mapping is not None else None,
            upnp_addr=str(mapping.advertisable_addr) if mapping and mapping.advertisable_addr else None,
            upnp_reason=mapping.reason if mapping is not None else "",
            autonat_state=self.status.reachability.value,
            autonat_reason=self.status.reason,
            relayed=self.advertiser.relayed,
        )

    def details(self) -> dict[str, Any]:
        """For ``meshnode status --json``: each mechanism's own state."""
        mapping = self.mapper.status if self.mapper is not None else None
        out: dict[str, Any] = {
            "autonat": {
                "state": self.status.reachability.value,
                "reason": self.status.reason,
                "agreed": self.status.agreed,
                "asked": self.status.asked,
            },
            "relay_mode": self.mode,
        }
        if mapping is not None:
            out["upnp"] = {
                "state": str(mapping.state),
                "reason": mapping.reason,
                "external": str(mapping.external_addr) if mapping.external_addr else None,
                "public": mapping.public,
            }
        if isinstance(self.relay, RelayClient):
            out["relays"] = [
                {"relay": r.relay, "state": r.state, "reason": r.reason} for r in self.relay.reservations()
            ]
        elif isinstance(self.relay, RelayService):
            out["reservations"] = [p.to_base58() for p in self.relay.reservation_holders()]
        return out

    def path(self, peer: ID) -> str | None:
        return peer_path(self.host, peer)

    # --- running ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        network = self.host.get_network()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            notifee = ResubscribeNotifee(self.pubsub, nursery)
            network.register_notifee(notifee)
            try:
                await nursery.start(AutoNATServer(self.host).run)
                await nursery.start(self.upgrade.run)
                if self.config.relay:
                    await nursery.start(self._relay_roles)
                else:
                    self.relay = RelayClient(self.host)
                    await nursery.start(self.relay.run)
                if self.config.upnp:
                    self._start_upnp(nursery)
                if self.mapper is None:
                    self._mapping_known.set()
                await nursery.start(self.checker.run)
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None
                try:
                    network.remove_notifee(notifee)  # type: ignore[attr-defined]
                except Exception:
                    pass

    async def dial_relayed(self, peer: ID, addr: str, *, timeout: float) -> None:
        """Connect to ``peer`` through the relay named in the circuit address ``addr``."""
        relay = self.relay
        if relay is None:
            raise NetworkError("relaying is not running on this network")
        await relay.dial_via_relay(peer, addr, timeout=timeout)

    def check_soon(self) -> None:
        """Re-check reachability now (e.g. the UPnP mapping changed)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._check)

    async def _check(self) -> None:
        try:
            with trio.move_on_after(60):
                await self.checker.check()
        except Exception as exc:
            log.debug("reachability check failed: %r", exc)

    # --- UPnP ------------------------------------------------------------------------

    def _start_upnp(self, nursery: trio.Nursery) -> None:
        listen = [addrlib.split_tcp(str(a)) for a in self.host.get_transport_addrs()]
        ipv4 = [s for s in listen if s is not None and s[1].version == 4]
        if not ipv4 or all(addrlib.scope_of(s[1]) is addrlib.Scope.LOOPBACK for s in ipv4):
            return  # nothing a router could forward to
        from meshnode.protocols.upnp import PortMapper  # miniupnpc only when used

        internal_ip = None if ipv4[0][1].is_unspecified else str(ipv4[0][1])
        self.mapper = PortMapper(ipv4[0][2], internal_ip=internal_ip, on_change=self._on_mapping)
        nursery.start_soon(self.mapper.run)

    async def mapping_known(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until the first UPnP attempt has an answer; whether it has."""
        with trio.move_on_after(timeout):
            await self._mapping_known.wait()
        return self._mapping_known.is_set()

    def _on_mapping(self, status: Any) -> None:
        if str(status.state) != "unknown":
            self._mapping_known.set()
        addr = status.advertisable_addr
        mapped = [str(addr)] if addr is not None else []
        if mapped != self.advertiser.mapped:
            self.advertiser.mapped = mapped
            self._addrs_changed()
            self.check_soon()

    # --- AutoNAT -----------------------------------------------------------------------

    def _candidates(self) -> list[str]:
        direct = [a for a in self.advertiser.addrs() if "/p2p-circuit" not in a]
        return list(dict.fromkeys([*self.advertiser.mapped, *direct]))

    def _ports(self) -> list[int]:
        ports = []
        for addr in self.host.get_transport_addrs():
            split = addrlib.split_tcp(str(addr))
            if split is not None:
                ports.append(split[2])
        for addr in self.advertiser.mapped:
            split = addrlib.split_tcp(addr)
            if split is not None:
                ports.append(split[2])
        return list(dict.fromkeys(ports))

    def _public_addrs(self) -> list[str]:
        """Our addresses as the internet sees them, dialable or not yet (for hole punching).

        The UPnP mapping and confirmed addresses, then each public address a
        dial-back was tried at (our router's IP at our listen port: a hole
        punch opens exactly that).
        """
        out = [*self.advertiser.mapped, *self.advertiser.observed]
        for result in self.checker.last_results:
            split = addrlib.split_tcp(result.addr)
            if split is not None and addrlib.scope_of(split[1]) is addrlib.Scope.PUBLIC:
                out.append(addrlib.tcp_addr(split[1], split[2]))
        return list(dict.fromkeys(out))

    def _on_verdict(self, status: ReachabilityStatus) -> None:
        log.info("reachability: %s (%s)", status.reachability.value, status.reason)
        observed = []
        if status.reachability is Reachability.PUBLIC:
            observed = [
                a
                for a in status.reachable_addrs
                if (s := addrlib.split_tcp(a)) is not None and addrlib.scope_of(s[1]) is addrlib.Scope.PUBLIC
            ]
        if observed != self.advertiser.observed:
            self.advertiser.observed = observed
            self._addrs_changed()
        self._mode_changed.set()

    # --- relay roles -------------------------------------------------------------------

    def _wanted_mode(self) -> str:
        return "service" if self.status.reachability is Reachability.PUBLIC else "client"

    async def _relay_roles(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the relay role the verdict calls for; swap when it changes."""
        first = True
        while True:
            mode = self._wanted_mode()
            self._mode_changed = trio.Event()
            if mode == "service":
                relay: RelayService | RelayClient = RelayService(self.host, may_reserve=self.is_member)
            else:
                relay = RelayClient(self.host, on_change=self._on_circuits)
            async with trio.open_nursery() as nursery:
                await nursery.start(relay.run)
                self.relay = relay
                if isinstance(relay, RelayClient):
                    nursery.start_soon(self._keep_relays, relay)
                if first:
                    task_status.started()
                    first = False
                while self._wanted_mode() == mode:
                    await self._mode_changed.wait()
                    self._mode_changed = trio.Event()
                nursery.cancel_scope.cancel()
            log.info("relay role: %s -> %s", mode, self._wanted_mode())
            if self.advertiser.relayed:
                self.advertiser.relayed = []
                self._addrs_changed()

    async def _keep_relays(self, client: RelayClient) -> None:
        """Hold reservations on up to ``max_relays`` member relays while not public."""
        while True:
            if self.status.reachability is not Reachability.PUBLIC:
                held = {ID.from_base58(r.relay) for r in client.reservations()}
                for peer, addrs in self._relay_candidates():
                    if len(held) >= self.config.max_relays:
                        break
                    if peer not in held:
                        log.info("reserving a relay slot on %s", peer.to_base58())
                        client.add_relay(peer, addrs)
                        held.add(peer)
            await trio.sleep(self.config.relay_look_interval)

    def _relay_candidates(self) -> list[tuple[ID, list[Multiaddr]]]:
        """Connected members (directly) that serve relaying, with their direct addresses."""
        out = []
        store = self.host.get_peerstore()
        for peer in self.host.get_connected_peers():
            try:
                if peer_path(self.host, peer) != "direct" or not self.is_member(peer):
                    continue
                if HOP_PROTOCOL_ID not in [str(p) for p in store.get_protocols(peer)]:
                    continue
                addrs = [a for a in store.addrs(peer) if "/p2p-circuit" not in str(a)]
                out.append((peer, addrs))
            except Exception:
                continue
        return out

    def _on_circuits(self, addrs: list[Multiaddr]) -> None:
        full = [addrlib.strip_peer(str(a)) for a in addrs if str(a).startswith(("/ip4/", "/ip6/"))]
        if full != self.advertiser.relayed:
            self.advertiser.relayed = full
            self._addrs_changed()

    # --- telling others ----------------------------------------------------------------

    def _addrs_changed(self) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._push_identify)

    async def _push_identify(self) -> None:
        push = getattr(self.host, "_push_identify_to_all_peers", None)
        if push is None:
            return
        try:
            with trio.move_on_after(10):
                await push()
        except Exception as exc:
            log.debug("identify push failed: %r", exc)
