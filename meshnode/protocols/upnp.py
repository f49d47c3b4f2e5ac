"""UPnP IGD port mapping for one listening port, with a lease, as a trio task.

What it does
    :class:`PortMapper` keeps one port mapping (TCP by default) on the home
    router for the lifetime of :meth:`PortMapper.run`:

    1. Discovers an Internet Gateway Device (UPnP IGD, SSDP multicast) with the
       ``miniupnpc`` binding in a worker thread, bounded by
       ``discovery_timeout`` (miniupnpc needs ~1 s when a router answers and
       ~4 s when none does), and reads the router's external IPv4 address.
    2. Maps external port = internal port when it is free (or already ours),
       otherwise tries ``alt_ports`` random ports in 1024-65535. The mapping
       points at the LAN address the router was reached from (miniupnpc's
       ``lanaddr``) unless ``internal_ip`` is given.
    3. Keeps it: every ``check_interval`` seconds (default 60) it asks the
       router for the mapping and the external address (two SOAP calls),
       re-adds a mapping the router forgot (reboot, another client deleted
       it) and reports a changed external address; it renews the lease.
    4. When no gateway answers, the router refuses, or it stops answering
       (a check, renewal or call fails or times out after ``call_timeout``),
       the status says so at once and it starts again at step 1 after an
       exponential back-off (``retry_min`` 5 s doubling to ``retry_max``
       600 s, +-10 % jitter; reset after a mapping was held), preferring
       the external port it had, so the advertised address stays the same.

Lease policy
    Every AddPortMapping carries a lease of ``lease`` seconds (default 3600;
    libp2p's ``UpnpManager`` sends none, so routers keep its mappings for
    days or forever). The mapping is renewed (added again, same ports) at half
    the lease, so a node that dies without cleaning up (SIGKILL, power loss)
    leaves a mapping for at most one lease. If the router reports a shorter
    remaining lease than asked for, renewal follows the router's. A router
    that answers OnlyPermanentLeasesSupported (725) gets a permanent mapping
    instead, which is then only removed on stop. ``lease=0`` asks for a
    permanent mapping.

On stop
    When ``run()`` ends (cancellation, or the rare internal error turned into
    status), the mapping it made is deleted in a ``finally`` under
    ``trio.CancelScope(shield=True)``, bounded by ``remove_timeout`` seconds;
    the status then becomes ``unknown`` with reason "stopped" (and whether the
    removal worked). ``run()`` never raises except for cancellation: every
    failure becomes :attr:`PortMapper.status`. The daemon must turn SIGTERM
    into a cancellation for this to run; after SIGKILL the lease expires.

Status
    :class:`MappingStatus` (frozen): ``state`` (unknown / no-gateway / mapped
    / failed; ``unknown`` with reason "discovering" before the first
    answer), a human ``reason`` ("no UPnP gateway answered", "router
    refused mapping: <error>", ...), external IP and port, internal IP and
    port, lease expiry (``time.time()`` seconds, None when permanent) and
    ``public``. An external address that is not globally routable (private,
    shared/CGNAT, loopback, unspecified, reserved: the router is itself behind
    a NAT) is reported as ``mapped`` with ``public=False`` and
    :attr:`MappingStatus.advertisable_addr` None, so the node does not
    advertise an address nobody outside can use. ``on_change(status)`` is
    called (synchronously, in the trio thread; exceptions are logged and
    swallowed) whenever the status changes, including lease renewals.

Threads: each blocking miniupnpc call runs in ``trio.to_thread.run_sync(...,
abandon_on_cancel=True)`` under a timeout; calls on one gateway object are
serialised by a lock in :class:`MiniupnpcGateway`, so a call abandoned after
its timeout never runs concurrently with the next one. NAT-PMP / PCP are not
implemented (no well-kept Python package is installed; miniupnpc speaks
UPnP only).
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol, TypeVar

import trio
from multiaddr import Multiaddr

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_LEASE = 3600  # s, asked for on every AddPortMapping
DEFAULT_DISCOVERY_TIMEOUT = 8.0  # s; miniupnpc: ~1 s with an IGD, ~4 s without
DEFAULT_CALL_TIMEOUT = 10.0  # s, one SOAP call to the router
DEFAULT_REMOVE_TIMEOUT = 3.0  # s, the removal on stop
DEFAULT_CHECK_INTERVAL = 60.0  # s, between checks that the mapping still exists
DEFAULT_RETRY_MIN = 5.0  # s, first back-off
DEFAULT_RETRY_MAX = 600.0  # s, longest back-off
DEFAULT_ALT_PORTS = 4  # random external ports tried when the internal one is taken

_CONFLICT_ERRORS = ("ConflictInMappingEntry", "ConflictWithOtherMechanisms", "718", "729")
_PERMANENT_ONLY_ERRORS = ("OnlyPermanentLeasesSupported", "725")


class MappingState(enum.StrEnum):
    UNKNOWN = "unknown"  # not tried yet, discovering, or stopped
    NO_GATEWAY = "no-gateway"  # no UPnP internet gateway answered
    MAPPED = "mapped"  # the router forwards external_ip:external_port to us
    FAILED = "failed"  # a gateway exists but mapping failed / it stopped answering


@dataclass(frozen=True)
class MappingStatus:
    state: MappingState = MappingState.UNKNOWN
    reason: str = "not started"
    internal_port: int = 0
    protocol: str = "TCP"
    internal_ip: str | None = None
    external_ip: str | None = None
    external_port: int | None = None
    lease_seconds: int | None = None  # granted: 0 = permanent
    lease_expires: float | None = None  # time.time() of expiry; None when permanent / not mapped
    public: bool = False  # external_ip is globally routable
    gateway: str | None = None  # the IGD's control URL

    @property
    def external_addr(self) -> Multiaddr | None:
        """``/ip4/<external ip>/tcp/<external port>`` while mapped (public or not)."""
        if self.state is not MappingState.MAPPED or not self.external_ip or not self.external_port:
            return None
        return Multiaddr(f"/ip4/{self.external_ip}/{self.protocol.lower()}/{self.external_port}")

    @property
    def advertisable_addr(self) -> Multiaddr | None:
        """The external address only when it is public: what a node may advertise."""
        return self.external_addr if self.public else None


def is_public_ipv4(ip: str | None) -> bool:
    """True for a globally routable IPv4 address (not private, CGNAT, loopback, reserved...)."""
    try:
        addr = ipaddress.ip_address(ip or "")
    except ValueError:
        return False
    return (
        addr.version == 4
        and addr.is_global
        and not (addr.is_multicast or addr.is_reserved or addr.is_unspecified or addr.is_loopback)
    )


class Entry(NamedTuple):
    """A port mapping as the router reports it."""

    internal_ip: str
    internal_port: int
    lease_left: int = 0  # s; 0 = permanent or not reported


class GatewayError(Exception):
    """The router answered a call with an error (or the call failed)."""


class Gateway(Protocol):
    """What PortMapper needs from a router. Methods block; they run in a worker thread."""

    lan_addr: str  # our address as the router sees it
    url: str  # control URL, for status only

    def external_ip(self) -> str: ...

    def add_mapping(
        self, ext_port: int, protocol: str, int_ip: str, int_port: int, desc: str, lease: int
    ) -> None: ...

    def get_mapping(self, ext_port: int, protocol: str) -> Entry | None:
        """The mapping on ``ext_port``, or None (none, or the router did not answer)."""
        ...

    def delete_mapping(self, ext_port: int, protocol: str) -> None: ...


class NoGateway(Exception):
    """Discovery found no usable internet gateway; the message says why."""


class MiniupnpcGateway:
    """A :class:`Gateway` over one ``miniupnpc.UPnP`` object (calls serialised by a lock)."""

    def __init__(self, upnp: Any) -> None:
        self._u = upnp
        self._lock = threading.Lock()
        self.lan_addr: str = upnp.lanaddr
        self.url: str = ""

    @classmethod
    def discover(cls, delay_ms: int = 1000, multicastif: str | None = None) -> MiniupnpcGateway:
        """Find and select an IGD; raise :class:`NoGateway` when there is none. Blocks 1-4 s.
        ``multicastif``: the local address (or interface) to send SSDP from."""
        import miniupnpc

        u = miniupnpc.UPnP(multicastif=multicastif) if multicastif else miniupnpc.UPnP()
        u.discoverdelay = delay_ms
        try:
            found = u.discover()
        except Exception as exc:
            # miniupnpc raises Exception("Success") (errno 0) when no device answered at all
            if str(exc) in ("Success", ""):
                raise NoGateway("no UPnP gateway answered") from None
            raise NoGateway(f"UPnP discovery failed: {exc}") from None
        if not found:
            raise NoGateway("no UPnP gateway answered")
        try:
            url = u.selectigd()
        except Exception as exc:
            raise NoGateway(f"UPnP devices answered, but none is a usable internet gateway: {exc}") from None
        gw = cls(u)
        gw.url = str(url)
        return gw

    def _do(self, what: str, fn: Callable[[], T]) -> T:
        with self._lock:
            try:
                return fn()
            except Exception as exc:
                raise GatewayError(f"{what}: {exc}") from None

    def external_ip(self) -> str:
        return str(self._do("GetExternalIPAddress", self._u.externalipaddress) or "")

    def add_mapping(
        self, ext_port: int, protocol: str, int_ip: str, int_port: int, desc: str, lease: int
    ) -> None:
        def add() -> None:
            if not self._u.addportmapping(ext_port, protocol, int_ip, int_port, desc, "", lease):
                raise RuntimeError("refused")

        self._do("AddPortMapping", add)

    def get_mapping(self, ext_port: int, protocol: str) -> Entry | None:
        # miniupnpc returns None for "no such entry" and for a failed call alike
        got = self._do(
            "GetSpecificPortMappingEntry", lambda: self._u.getspecificportmapping(ext_port, protocol)
        )
        if not got:
            return None
        # (internal client, internal port, description, enabled, lease duration)
        return Entry(str(got[0]), int(got[1]), int(got[4]) if len(got) > 4 and got[4] else 0)

    def delete_mapping(self, ext_port: int, protocol: str) -> None:
        def delete() -> None:
            if not self._u.deleteportmapping(ext_port, protocol):
                raise RuntimeError("refused")

        self._do("DeletePortMapping", delete)


class _Retry(Exception):
    """Internal: give up this attempt; status already says why."""


class PortMapper:
    """Keeps ``internal_port`` mapped on the UPnP router while :meth:`run` runs. See the module doc."""

    def __init__(
        self,
        internal_port: int,
        *,
        protocol: str = "TCP",
        internal_ip: str | None = None,
        lease: int = DEFAULT_LEASE,
        description: str = "meshnode",
        on_change: Callable[[MappingStatus], None] | None = None,
        discovery_timeout: float = DEFAULT_DISCOVERY_TIMEOUT,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        remove_timeout: float = DEFAULT_REMOVE_TIMEOUT,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        retry_min: float = DEFAULT_RETRY_MIN,
        retry_max: float = DEFAULT_RETRY_MAX,
        alt_ports: int = DEFAULT_ALT_PORTS,
        discover: Callable[[], Gateway] | None = None,
        in_thread: bool = True,
    ) -> None:
        """``discover`` (blocking; returns a :class:`Gateway` or raises :class:`NoGateway`) defaults
        to miniupnpc. ``in_thread=False`` calls the gateway inline (tests with fake gateways)."""
        if not 0 < internal_port < 65536:
            raise ValueError(f"bad port {internal_port}")
        if protocol.upper() not in ("TCP", "UDP"):
            raise ValueError(f"bad protocol {protocol!r}")
        if lease < 0:
            raise ValueError("lease must be >= 0 (0 = permanent)")
        self.internal_port = internal_port
        self.protocol = protocol.upper()
        self.internal_ip = internal_ip
        self.lease = int(lease)
        self.description = f"{description} {self.protocol.lower()}/{internal_port}"[:64]
        self.on_change = on_change
        self.discovery_timeout = discovery_timeout
        self.call_timeout = call_timeout
        self.remove_timeout = remove_timeout
        self.check_interval = check_interval
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.alt_ports = alt_ports
        self._discover = discover or functools.partial(MiniupnpcGateway.discover, multicastif=internal_ip)
        self._in_thread = in_thread
        self._status = MappingStatus(internal_port=internal_port, protocol=self.protocol)
        self._held: tuple[Gateway, int] | None = None  # the mapping we made and have not removed
        self._granted_lease = self.lease
        self._rng = random.Random()
        self.stats = {"discoveries": 0, "mapped": 0, "renewals": 0, "remaps": 0, "retries": 0}

    # ------------------------------------------------------------------ status

    @property
    def status(self) -> MappingStatus:
        return self._status

    def _set(self, **changes: Any) -> None:
        new = replace(self._status, **changes)
        if new == self._status:
            return
        self._status = new
        log.debug("upnp %s/%d: %s (%s)", self.protocol, self.internal_port, new.state.value, new.reason)
        if self.on_change is not None:
            try:
                self.on_change(new)
            except Exception:
                log.exception("upnp on_change callback raised (ignored)")

    def _set_unmapped(self, state: MappingState, reason: str, **extra: Any) -> None:
        self._set(
            state=state,
            reason=reason,
            external_port=None,
            lease_seconds=None,
            lease_expires=None,
            public=False,
            **extra,
        )

    # ------------------------------------------------------------------ blocking calls

    async def _call(self, fn: Callable[[], T], timeout: float) -> T:
        if not self._in_thread:
            return fn()
        with trio.fail_after(timeout):
            return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)

    async def _gw(self, what: str, fn: Callable[[], T]) -> T:
        """A gateway call; every failure (timeout included) becomes GatewayError."""
        try:
            return await self._call(fn, self.call_timeout)
        except trio.TooSlowError:
            raise GatewayError(f"{what}: no answer within {self.call_timeout:g} s") from None
        except GatewayError:
            raise
        except Exception as exc:
            raise GatewayError(f"{what}: {exc}") from None

    # ------------------------------------------------------------------ run

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Map, keep, retry until cancelled; then remove the mapping. Started at once."""
        task_status.started()
        backoff = self.retry_min
        try:
            while True:
                try:
                    held = await self._attempt()
                except Exception as exc:  # a bug of ours or of a gateway object: still only status
                    log.exception("upnp mapper: unexpected error")
                    self._set_unmapped(MappingState.FAILED, f"internal error: {exc!r}")
                    held = False
                self.stats["retries"] += 1
                if held:
                    backoff = self.retry_min
                delay = backoff * (0.9 + 0.2 * self._rng.random())
                backoff = min(backoff * 2, self.retry_max)
                await trio.sleep(delay)
        finally:
            with trio.CancelScope(shield=True):
                removed = await self._remove_held(self.remove_timeout)
            self._set(
                state=MappingState.UNKNOWN,
                reason="stopped" + removed,
                external_port=None,
                lease_seconds=None,
                lease_expires=None,
                public=False,
            )

    async def _remove_held(self, timeout: float) -> str:
        if self._held is None:
            return ""
        gw, port = self._held
        self._held = None
        try:
            with trio.fail_after(timeout):
                await self._call(lambda: gw.delete_mapping(port, self.protocol), timeout)
        except trio.TooSlowError:
            log.warning("upnp: removing mapping %d timed out", port)
            return f"; removing the mapping of port {port} timed out"
        except Exception as exc:
            log.warning("upnp: removing mapping %d failed: %s", port, exc)
            return f"; removing the mapping of port {port} failed: {exc}"
        return f"; mapping of port {port} removed"

    async def _attempt(self) -> bool:
        """Discover, map, keep. Returns (for a back-off) once something fails: True if it had mapped."""
        if self._status.state is MappingState.UNKNOWN:
            self._set(reason="discovering")
        self.stats["discoveries"] += 1
        try:
            gw = await self._call(self._discover, self.discovery_timeout)
        except trio.TooSlowError:
            self._set_unmapped(
                MappingState.NO_GATEWAY, f"no UPnP gateway answered within {self.discovery_timeout:g} s"
            )
            return False
        except NoGateway as exc:
            self._set_unmapped(MappingState.NO_GATEWAY, str(exc) or "no UPnP gateway answered")
            return False
        except Exception as exc:
            self._set_unmapped(MappingState.NO_GATEWAY, f"UPnP discovery failed: {exc}")
            return False
        gateway_url = getattr(gw, "url", None) or None
        try:
            external_ip = await self._gw("GetExternalIPAddress", gw.external_ip)
        except GatewayError as exc:
            self._set_unmapped(MappingState.FAILED, f"gateway did not tell its external address: {exc}")
            return False
        internal_ip = self.internal_ip or gw.lan_addr
        try:
            await self._map(gw, internal_ip, external_ip, gateway_url)
        except _Retry:
            return False
        try:
            await self._keep(gw, internal_ip)
        except _Retry:
            pass
        return True

    def _candidates(self) -> list[int]:
        ports = [self.internal_port]
        if self._held is not None and self._held[1] not in ports:
            ports.insert(0, self._held[1])  # the port we had: keep the advertised address stable
        while len(ports) < 1 + self.alt_ports + (self._held is not None):
            p = self._rng.randrange(1024, 65536)
            if p not in ports:
                ports.append(p)
        return ports

    async def _map(self, gw: Gateway, internal_ip: str, external_ip: str, gateway_url: str | None) -> None:
        """Add the mapping on the first free candidate port; set status; raise _Retry on failure."""
        mine = (internal_ip, self.internal_port)
        taken: list[int] = []
        lease = self.lease
        for port in self._candidates():
            try:
                current = await self._gw(
                    "GetSpecificPortMappingEntry", functools.partial(gw.get_mapping, port, self.protocol)
                )
            except GatewayError:
                current = None  # some routers fail this call for a free port: just try to add
            if current is not None and current[:2] != mine:
                taken.append(port)
                continue
            try:
                await self._add(gw, port, internal_ip, lease)
            except GatewayError as exc:
                text = str(exc)
                if lease and any(e in text for e in _PERMANENT_ONLY_ERRORS):
                    lease = 0  # the router insists: permanent mapping, removed on stop only
                    try:
                        await self._add(gw, port, internal_ip, lease)
                    except GatewayError as exc2:
                        exc, text = exc2, str(exc2)
                    else:
                        await self._mapped(gw, port, internal_ip, external_ip, gateway_url, lease)
                        return
                if any(e in text for e in _CONFLICT_ERRORS):
                    taken.append(port)
                    continue
                self._set_unmapped(
                    MappingState.FAILED,
                    f"router refused mapping: {exc}",
                    external_ip=external_ip or None,
                    gateway=gateway_url,
                )
                raise _Retry from None
            await self._mapped(gw, port, internal_ip, external_ip, gateway_url, lease)
            return
        self._set_unmapped(
            MappingState.FAILED,
            f"router refused mapping: external ports {', '.join(map(str, taken))} are all taken",
        )
        raise _Retry

    async def _add(self, gw: Gateway, port: int, internal_ip: str, lease: int) -> None:
        await self._gw(
            "AddPortMapping",
            lambda: gw.add_mapping(
                port, self.protocol, internal_ip, self.internal_port, self.description, lease
            ),
        )

    async def _mapped(
        self,
        gw: Gateway,
        port: int,
        internal_ip: str,
        external_ip: str,
        gateway_url: str | None,
        lease: int,
    ) -> None:
        old = self._held
        self._held = (gw, port)
        if old is not None and old[1] != port:
            log.info("upnp: external port moved from %d to %d", old[1], port)
        self.stats["mapped"] += 1
        self._granted_lease = await self._granted(gw, port, lease)
        lease = self._granted_lease
        self._update_mapped(external_ip, port, internal_ip, gateway_url, lease)

    async def _granted(self, gw: Gateway, port: int, lease: int) -> int:
        """The lease to renew by: the one asked for, or less if the router reports it cut it."""
        if not lease:
            return 0
        try:
            entry = await self._gw("GetSpecificPortMappingEntry", lambda: gw.get_mapping(port, self.protocol))
        except GatewayError:
            return lease
        if entry is not None and 0 < entry.lease_left < lease * 0.9:  # (a second may have passed)
            log.info("upnp: router granted a %d s lease instead of %d s", entry.lease_left, lease)
            return max(2, entry.lease_left)
        return lease

    def _update_mapped(
        self, external_ip: str, port: int, internal_ip: str, gateway_url: str | None, lease: int
    ) -> None:
        public = is_public_ipv4(external_ip)
        if public:
            reason = f"mapped {external_ip}:{port} to {internal_ip}:{self.internal_port}"
        else:
            reason = (
                f"mapped port {port}, but the router's external address {external_ip or '(none)'} is not "
                "public (double NAT?): not advertisable"
            )
        self._set(
            state=MappingState.MAPPED,
            reason=reason,
            internal_ip=internal_ip,
            external_ip=external_ip or None,
            external_port=port,
            lease_seconds=lease,
            lease_expires=(time.time() + lease) if lease else None,
            public=public,
            gateway=gateway_url,
        )

    async def _keep(self, gw: Gateway, internal_ip: str) -> None:
        """Renew at half the lease, check every ``check_interval``; raise _Retry when it breaks."""
        assert self._held is not None
        lease = self._granted_lease
        renew_at = trio.current_time() + lease / 2 if lease else math.inf
        while True:
            now = trio.current_time()
            await trio.sleep(max(0.0, min(renew_at, now + self.check_interval) - now))
            port = self._held[1]
            st = self._status
            if trio.current_time() >= renew_at:
                asked = self.lease if lease else 0
                try:
                    await self._add(gw, port, internal_ip, asked)
                except GatewayError as exc:
                    self._set_unmapped(MappingState.FAILED, f"renewing the mapping failed: {exc}")
                    raise _Retry from None
                self.stats["renewals"] += 1
                lease = self._granted_lease = await self._granted(gw, port, asked)
                renew_at = trio.current_time() + lease / 2
                external_ip = await self._external_ip_or_retry(gw)
                self._update_mapped(external_ip, port, internal_ip, st.gateway, lease)
                continue
            external_ip = await self._external_ip_or_retry(gw)
            try:
                current = await self._gw(
                    "GetSpecificPortMappingEntry", functools.partial(gw.get_mapping, port, self.protocol)
                )
            except GatewayError:
                current = None
            if current is not None and current[:2] == (internal_ip, self.internal_port):
                if external_ip != st.external_ip:
                    self._update_mapped(external_ip, port, internal_ip, st.gateway, lease)
                continue
            # gone (router rebooted / forgot it) or someone else's now: map again
            self.stats["remaps"] += 1
            log.info("upnp: mapping of port %d vanished from the router; mapping again", port)
            await self._map(gw, internal_ip, external_ip, st.gateway)
            lease = self._granted_lease
            renew_at = trio.current_time() + lease / 2 if lease else math.inf

    async def _external_ip_or_retry(self, gw: Gateway) -> str:
        try:
            return await self._gw("GetExternalIPAddress", gw.external_ip)
        except GatewayError as exc:
            self._set_unmapped(MappingState.FAILED, f"gateway stopped answering: {exc}")
            raise _Retry from None
