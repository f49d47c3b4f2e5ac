"""Connection management for one libp2p host: slots that come back, limits per address, trimming.

Two measured py-libp2p 0.8.1 problems (PY-LIBP2P-NOTES.md) and what this module does about them:

* **Inbound slots leak** (pitfall 25). ``Swarm._handle_inbound_connection``
  (libp2p/network/swarm.py:1947) takes a slot of ``Swarm._inbound_limiter`` for
  every accepted socket and releases it when ``_do_handle_inbound_connection``
  (swarm.py:2001) returns, but that ends with ``await self.manager.wait_finished()``
  (swarm.py:2044 and 2060): it returns only when the whole swarm stops. Each
  connect-and-leave therefore leaks a slot and a task, and after
  ``max_connections - min_connections`` of them every inbound connection is
  refused. :func:`install_inbound_slot_release` replaces that inner handler *on
  one swarm instance* (never on the class) with one that does the same work
  (connection gate, security and muxer upgrade, registration) and then waits
  for *that connection's* ``SwarmConn.event_closed``
  (network/connection/swarm_connection.py:61, set first thing in
  ``SwarmConn.close``, which runs on a local close, a remote close, a ban
  (``host.disconnect``) and swarm shutdown). Failed handshakes and pnet
  failures make the upgrade raise, so the handler returns at once, as before.
  It checks at install time that the internals it relies on are there and
  raises :class:`Libp2pMismatch` otherwise, so a libp2p upgrade fails a test
  instead of silently leaking again.

* **No limits per address** (pitfall 21). :class:`ConnectionManager` adds, for
  one host: limits on inbound connections per remote IP and per subnet (/24
  IPv4, /64 IPv6), checked on the raw socket before any handshake work, as is
  the node's ban book (``is_refused_ip``: an address whose peers were banned
  too often is closed unread, see :mod:`meshnode.bans`); an inbound cap
  below ``max_connections`` so the node's own dials always find a slot; and
  trimming above a high watermark that never touches protected peers (members
  of one of our swarms) nor connections younger than a grace period, and
  closes strangers that sent nothing useful first, longest idle first.
  The decisions are pure (:class:`AddressCounter`, :func:`choose_trims`) and
  tested without sockets.

What of libp2p's own connection management is used, and what is not:

* ``Swarm._inbound_limiter`` (swarm.py:341-353), a ``trio.CapacityLimiter``: used
  as *the* inbound cap once slots come back; its size is set to
  ``max_connections - outbound_reserve``.
* ``ConnectionGate`` (network/connection_gate.py): still consulted on every
  inbound connection (allow/deny lists), unchanged. It has no per-address
  counting and no release hook, so the per-IP/subnet limits live here.
* ``TagStore`` protection (network/tag_store.py, ``swarm.protect(peer, tag)``):
  honoured, a peer protected there is never trimmed, alongside ``is_protected``.
* ``ConnectionPruner`` (network/connection_pruner.py): not used. It skips
  every connection that has an open stream (connection_pruner.py:293-303), and
  any pubsub peer keeps one open for good, so an idle stranger running pubsub
  is never pruned; it knows nothing of swarm membership. ``build_host`` sets
  its high watermark to ``max_connections`` so it never runs.

Wiring (see :func:`install`): build the host, ``manager = install(host,
is_protected=...)`` before ``host.run()``, then ``nursery.start(manager.run)``
once the host runs; call ``manager.note_useful(peer)`` when a peer delivers
something valid; read ``manager.stats()`` for ``meshnode status``.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import time
import types
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from libp2p.abc import IHost, IMuxedConn, INetConn, INetwork
from libp2p.network.swarm import Swarm as LibSwarm
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from meshnode.bans import parse_ip
from meshnode.errors import BadValue, ConfigError
from meshnode.protocols.notifee import Notifee

log = logging.getLogger(__name__)

#: How long one close of a trimmed connection may take (libp2p's own close
#: sleeps 0.1 s in ``SwarmConn._cleanup``).
CLOSE_TIMEOUT = 5.0
#: Safety net: how often a held inbound slot re-checks that its connection is
#: still alive in case a close ever happens without ``event_closed`` being set.
SLOT_RECHECK_INTERVAL = 30.0

_INSTALLED_MARK = "_meshnode_inbound_slot_release"


class Libp2pMismatch(ConfigError):
    """The installed libp2p lacks an internal this module replaces or relies on."""


# --- limits and the pure policy --------------------------------------------------


@dataclass(frozen=True)
class ConnLimits:
    """Connection limits of one host; :meth:`for_max` derives sensible ones.

    ``max_connections`` is the host's hard cap (``ConnectionConfig``), both
    directions. Inbound connections (including those still in handshake) may
    take at most ``max_connections - outbound_reserve`` of it, so the node's
    own dials always find a slot. Above ``high_water`` connections, unprotected
    ones older than ``grace`` seconds are closed until ``low_water`` remain.
    ``high_water`` must be below the inbound cap, or a host full of idle
    inbound strangers would never trim. Per address, at most ``max_per_ip``
    inbound connections from one IP and ``max_per_subnet`` from one /24 (IPv4)
    or /64 (IPv6). Loopback is exempt unless ``limit_loopback`` (a test knob);
    private and link-local addresses are exempt from the subnet limit (a LAN
    is one /24) unless ``limit_private_subnets``. ``trim_interval`` is the
    period of the trim task, which also wakes when a connection arrives above
    the high watermark.
    """

    max_connections: int = 64
    outbound_reserve: int = 8
    high_water: int = 48
    low_water: int = 32
    max_per_ip: int = 8
    max_per_subnet: int = 16
    grace: float = 15.0
    trim_interval: float = 5.0
    limit_loopback: bool = False
    limit_private_subnets: bool = False

    def __post_init__(self) -> None:
        if self.max_connections < 2:
            raise BadValue(f"max_connections must be at least 2, got {self.max_connections}")
        if not 1 <= self.outbound_reserve < self.max_connections:
            raise BadValue(
                f"outbound_reserve must be in 1..{self.max_connections - 1}, got {self.outbound_reserve}"
            )
        if not 0 <= self.low_water <= self.high_water < self.inbound_cap:
            raise BadValue(
                "need 0 <= low_water <= high_water < max_connections - outbound_reserve"
                f" ({self.inbound_cap}), got low_water={self.low_water} high_water={self.high_water}"
            )
        if self.max_per_ip < 1 or self.max_per_subnet < self.max_per_ip:
            raise BadValue(
                f"need 1 <= max_per_ip <= max_per_subnet, got {self.max_per_ip} and {self.max_per_subnet}"
            )
        if self.grace < 0 or self.trim_interval <= 0:
            raise BadValue(
                f"grace must be >= 0 and trim_interval > 0, got {self.grace}, {self.trim_interval}"
            )

    @property
    def inbound_cap(self) -> int:
        return self.max_connections - self.outbound_reserve

    @classmethod
    def for_max(cls, max_connections: int, **overrides: Any) -> ConnLimits:
        """Limits for a host capped at ``max_connections``; keyword arguments override.

        Reserve 1/8 for outbound dials, trim from 1/8 below the inbound cap
        down to half; 8 per IP and 16 per subnet, never more than the inbound cap.
        """
        eighth = max(1, max_connections // 8)
        inbound_cap = max_connections - overrides.get("outbound_reserve", eighth)
        defaults: dict[str, Any] = {
            "max_connections": max_connections,
            "outbound_reserve": eighth,
            "high_water": max(0, inbound_cap - eighth),
            "low_water": max_connections // 2,
            "max_per_ip": min(8, inbound_cap),
            "max_per_subnet": min(16, inbound_cap),
        }
        defaults.update(overrides)
        if "low_water" not in overrides:
            defaults["low_water"] = min(defaults["low_water"], defaults["high_water"])
        return cls(**defaults)


class Admission(enum.Enum):
    """What :meth:`AddressCounter.admit` decided about one inbound connection."""

    ADMIT = "admit"
    REFUSE_IP = "refuse_ip"
    REFUSE_SUBNET = "refuse_subnet"


#: Private (RFC 1918, ULA) and link-local networks: a LAN is one subnet, so
#: these are exempt from the per-subnet limit by default.
_LAN_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7", "fe80::/10")
)


def subnet_of(ip: str) -> str:
    """The subnet counted for ``ip``: its /24 (IPv4) or /64 (IPv6), as text."""
    addr = parse_ip(ip)
    if addr is None:
        raise BadValue(f"not an IP address: {ip!r}")
    prefix = 24 if isinstance(addr, ipaddress.IPv4Address) else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@dataclass
class AddressCounter:
    """Inbound connections per remote IP and per subnet (pure bookkeeping).

    :meth:`admit` counts a connection when it admits it; every admitted
    connection must be given back once with :meth:`release`. Addresses that
    are not IPs (another transport) and exempt addresses are admitted
    uncounted, and their release is a no-op.
    """

    limits: ConnLimits

    def __post_init__(self) -> None:
        self.per_ip: Counter[str] = Counter()
        self.per_subnet: Counter[str] = Counter()

    def _keys(self, ip: str | None) -> tuple[str | None, str | None]:
        addr = parse_ip(ip)
        if addr is None or (addr.is_loopback and not self.limits.limit_loopback):
            return None, None
        subnet: str | None = subnet_of(str(addr))
        if not self.limits.limit_private_subnets and any(addr in net for net in _LAN_NETWORKS):
            subnet = None
        return str(addr), subnet

    def admit(self, ip: str | None) -> Admission:
        ip_key, subnet_key = self._keys(ip)
        if ip_key is None:
            return Admission.ADMIT
        if self.per_ip[ip_key] >= self.limits.max_per_ip:
            return Admission.REFUSE_IP
        if subnet_key is not None and self.per_subnet[subnet_key] >= self.limits.max_per_subnet:
            return Admission.REFUSE_SUBNET
        self.per_ip[ip_key] += 1
        if subnet_key is not None:
            self.per_subnet[subnet_key] += 1
        return Admission.ADMIT

    def release(self, ip: str | None) -> None:
        ip_key, subnet_key = self._keys(ip)
        for counter, key in ((self.per_ip, ip_key), (self.per_subnet, subnet_key)):
            if key is not None and counter[key] > 0:
                counter[key] -= 1
                if not counter[key]:
                    del counter[key]


@dataclass(frozen=True)
class ConnView:
    """What the trim policy knows of one open connection.

    ``key`` identifies the connection to the caller; times are on one
    monotonic clock; ``last_useful`` is when the peer last delivered something
    valid (``None``: never).
    """

    key: int
    peer: str
    opened_at: float
    last_useful: float | None = None
    outbound: bool = False


def choose_trims(
    conns: Sequence[ConnView],
    *,
    now: float,
    limits: ConnLimits,
    is_protected: Callable[[str], bool],
) -> list[ConnView]:
    """The connections to close now, first to close first (pure).

    Nothing while at most ``limits.high_water`` are open. Above it, enough to
    come down to ``limits.low_water``, chosen among connections that are
    neither protected nor younger than ``limits.grace``: first those whose peer
    never sent anything useful, then the rest; inbound before outbound; the
    longest idle first (idle since the last useful delivery, or since opening).
    Fewer are chosen when too few may be closed.
    """
    if len(conns) <= limits.high_water:
        return []
    excess = len(conns) - limits.low_water
    candidates = [c for c in conns if now - c.opened_at >= limits.grace and not is_protected(c.peer)]
    candidates.sort(
        key=lambda c: (
            c.last_useful is not None,
            c.outbound,
            c.last_useful if c.last_useful is not None else c.opened_at,
            c.key,
        )
    )
    return candidates[:excess]


@dataclass(frozen=True)
class ConnStats:
    """Counters of one host's connection manager (for ``meshnode status``).

    ``accepted``: inbound connections that completed the handshake;
    ``failed_upgrades``: inbound sockets whose handshake failed (wrong pnet
    key, not Noise, timeout); ``refused_per_ip`` / ``refused_per_subnet``:
    inbound sockets closed unread by the address limits; ``refused_banned_ip``:
    inbound sockets closed unread because their address is refused (the ban
    book's address limit); ``trimmed``:
    connections closed by the watermark trim; ``slots_in_use`` /
    ``inbound_cap``: inbound slots held now (handshakes and open connections)
    and their number; ``connections``: open connections, both directions.
    """

    accepted: int = 0
    failed_upgrades: int = 0
    refused_per_ip: int = 0
    refused_per_subnet: int = 0
    refused_banned_ip: int = 0
    trimmed: int = 0
    slots_in_use: int = 0
    inbound_cap: int = 0
    connections: int = 0


# --- the inbound handler that gives its slot back --------------------------------


class InboundHooks(Protocol):
    """What the replacement inbound handler reports to (all synchronous, never raising)."""

    def enter(self, ip: str | None) -> bool:
        """A socket from ``ip`` holds a slot: False closes it unread."""
        ...

    def leave(self, ip: str | None) -> None:
        """The connection admitted by :meth:`enter` is gone and its slot is free."""
        ...

    def upgraded(self) -> None: ...

    def failed(self) -> None: ...


class _NoHooks:
    def enter(self, ip: str | None) -> bool:
        return True

    def leave(self, ip: str | None) -> None:
        pass

    def upgraded(self) -> None:
        pass

    def failed(self) -> None:
        pass


def _code_names(code: types.CodeType) -> set[str]:
    """Every name used by ``code`` and by the functions nested in it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def check_libp2p_internals(swarm: object) -> None:
    """Raise :class:`Libp2pMismatch` unless ``swarm`` has what the slot fix needs.

    Checked: the listener's handler calls ``_handle_inbound_connection``, which
    takes a slot of ``_inbound_limiter``, calls ``_do_handle_inbound_connection``
    and releases the slot when it returns; the pieces the replacement calls
    (``connection_gate.is_allowed``, ``_build_remote_multiaddr``,
    ``upgrade_inbound_raw_conn``, ``add_conn``, ``connections``,
    ``RawConnection``) exist; ``SwarmConn`` has ``event_closed``.
    """
    problems: list[str] = []
    cls = type(swarm)
    outer = getattr(cls, "_handle_inbound_connection", None)
    inner = getattr(cls, "_do_handle_inbound_connection", None)
    listen = getattr(cls, "listen", None)
    if not callable(inner):
        problems.append("Swarm._do_handle_inbound_connection is gone")
    if outer is None or not hasattr(outer, "__code__"):
        problems.append("Swarm._handle_inbound_connection is gone")
    else:
        used = _code_names(outer.__code__)
        missing = {"_inbound_limiter", "acquire_nowait", "release", "_do_handle_inbound_connection"} - used
        if missing:
            problems.append(f"Swarm._handle_inbound_connection no longer uses {sorted(missing)}")
    if listen is None or "_handle_inbound_connection" not in _code_names(listen.__code__):
        problems.append("Swarm.listen no longer hands sockets to _handle_inbound_connection")
    if not isinstance(getattr(swarm, "_inbound_limiter", None), trio.CapacityLimiter):
        problems.append("Swarm._inbound_limiter is not a trio.CapacityLimiter")
    for name in ("upgrade_inbound_raw_conn", "add_conn", "_build_remote_multiaddr", "get_connections"):
        if not callable(getattr(swarm, name, None)):
            problems.append(f"Swarm.{name} is gone")
    if not isinstance(getattr(swarm, "connections", None), dict):
        problems.append("Swarm.connections is not a dict")
    if not callable(getattr(getattr(swarm, "connection_gate", None), "is_allowed", None)):
        problems.append("Swarm.connection_gate.is_allowed is gone")
    try:
        from libp2p.network.connection.raw_connection import RawConnection  # noqa: F401
        from libp2p.network.connection.swarm_connection import SwarmConn

        if "event_closed" not in _code_names(SwarmConn.close.__code__) or not isinstance(
            SwarmConn.__dict__.get("is_closed"), property
        ):
            problems.append("SwarmConn.close no longer sets event_closed")
    except ImportError as exc:
        problems.append(f"libp2p.network.connection moved: {exc}")
    if problems:
        raise Libp2pMismatch(
            "the installed libp2p does not match what meshnode's inbound-slot fix was written for"
            " (py-libp2p 0.8.1, PY-LIBP2P-NOTES pitfall 25): " + "; ".join(problems)
        )


def install_inbound_slot_release(swarm: Any, hooks: InboundHooks | None = None) -> None:
    """Make ``swarm`` give an inbound slot back when *that* connection ends.

    Replaces ``_do_handle_inbound_connection`` on this instance only. Call it
    before the host listens (``host.run()``): sockets accepted earlier keep the
    leaking handler. Idempotent for the same ``hooks``; raises
    :class:`Libp2pMismatch` when libp2p's internals changed and ``RuntimeError``
    when the swarm already listens or another set of hooks is installed.
    """
    check_libp2p_internals(swarm)
    hooks = hooks if hooks is not None else _NoHooks()
    installed = swarm.__dict__.get(_INSTALLED_MARK)
    if installed is not None:
        if installed is hooks or (isinstance(installed, _NoHooks) and isinstance(hooks, _NoHooks)):
            return
        raise RuntimeError("another inbound-slot handler is already installed on this swarm")
    if getattr(swarm, "listeners", None):
        raise RuntimeError("install the inbound-slot fix before the host listens (before host.run())")

    async def _do_handle_inbound_connection(
        read_write_closer: Any, maddr: Multiaddr, failure_event: Any = None
    ) -> None:
        await _serve_inbound(swarm, hooks, read_write_closer, maddr)

    swarm._do_handle_inbound_connection = _do_handle_inbound_connection
    swarm.__dict__[_INSTALLED_MARK] = hooks


async def _close_quietly(closer: Any) -> None:
    try:
        with trio.move_on_after(CLOSE_TIMEOUT):
            await closer.close()
    except Exception as exc:
        log.debug("close of an inbound socket failed: %r", exc)


def _remote_ip(read_write_closer: Any) -> str | None:
    try:
        remote = read_write_closer.get_remote_address()
    except Exception:
        return None
    if isinstance(remote, (tuple, list)) and remote:
        return str(remote[0])
    return None


async def _serve_inbound(swarm: Any, hooks: InboundHooks, read_write_closer: Any, maddr: Multiaddr) -> None:
    """One inbound socket: admit, gate, upgrade, register, then hold the slot until it closes."""
    from libp2p.network.connection.raw_connection import RawConnection

    ip = _remote_ip(read_write_closer)
    if not hooks.enter(ip):
        await _close_quietly(read_write_closer)
        return
    try:
        remote_maddr = swarm._build_remote_multiaddr(read_write_closer)
        if remote_maddr is not None and not await swarm.connection_gate.is_allowed(remote_maddr):
            log.debug("inbound connection from %s denied by the connection gate", remote_maddr)
            await _close_quietly(read_write_closer)
            return
        if isinstance(read_write_closer, IMuxedConn):  # QUIC-like: already secured and muxed
            muxed: Any = read_write_closer
            closer: Any = read_write_closer
            upgrade = swarm.add_conn(muxed, direction="inbound")
        else:
            closer = RawConnection(read_write_closer, False)
            upgrade = swarm.upgrade_inbound_raw_conn(closer, maddr)  # bounded by inbound_upgrade_timeout
        try:
            result = await upgrade
        except Exception as exc:
            hooks.failed()
            log.debug("inbound connection on %s failed its upgrade: %r", maddr, exc)
            await _close_quietly(closer)
            return
        if isinstance(read_write_closer, IMuxedConn):
            conn = result
        else:
            muxed = result
            conn = _find_conn(swarm, muxed)
        hooks.upgraded()
        await _hold_until_closed(swarm, conn, muxed)
    finally:
        hooks.leave(ip)


def _find_conn(swarm: Any, muxed: Any) -> INetConn | None:
    try:
        for conn in swarm.connections.get(muxed.peer_id, ()):
            if conn.muxed_conn is muxed:
                return conn  # type: ignore[no-any-return]
    except Exception as exc:
        log.debug("looking up an inbound connection failed: %r", exc)
    return None


async def _hold_until_closed(swarm: Any, conn: Any, muxed: Any) -> None:
    """Return when ``conn`` (the SwarmConn of ``muxed``) is closed.

    Waits on ``conn.event_closed``; every :data:`SLOT_RECHECK_INTERVAL` it also
    checks that the swarm still tracks the connection and its muxer is open,
    and closes what remains otherwise, so a slot can never be held by a
    connection libp2p has forgotten.
    """
    if conn is None:  # closed (and forgotten) before we got to look, e.g. a ban
        if not getattr(muxed, "is_closed", True):
            await _close_quietly(muxed)
        return
    while not conn.event_closed.is_set():
        with trio.move_on_after(SLOT_RECHECK_INTERVAL):
            await conn.event_closed.wait()
        if conn.event_closed.is_set():
            return
        tracked = _find_conn(swarm, muxed) is conn
        if not tracked or getattr(muxed, "is_closed", False):
            log.debug("inbound connection lost without a close event; closing it")
            await _close_quietly(conn)
            return


# --- the connection manager -------------------------------------------------------


class _Notifee(Notifee):
    """Records when connections open and wakes the trimmer above the high watermark."""

    def __init__(self, manager: ConnectionManager) -> None:
        self._manager = manager

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        try:
            self._manager._on_connected(conn)
        except Exception as exc:  # a notifee must never raise into libp2p
            log.debug("connmgr connected: %r", exc)
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        try:
            self._manager._on_disconnected(conn)
        except Exception as exc:
            log.debug("connmgr disconnected: %r", exc)
        await trio.lowlevel.checkpoint()


class ConnectionManager:
    """Connection limits and trimming for one libp2p host.

    ``is_protected(peer_id)`` answers whether a peer must be kept (for meshnode:
    it shares one of our swarms); it is asked only when trimming, must be
    quick, and a raising callback counts as "protected". Peers protected in
    libp2p's TagStore (``host.get_network().protect(peer, tag)``) are kept too.
    ``is_refused_ip(ip)`` answers whether inbound sockets from an address are
    refused (banned): asked for each inbound socket before the address limits,
    it must be quick; a raising callback refuses nothing.
    """

    def __init__(
        self,
        host: IHost,
        *,
        limits: ConnLimits | None = None,
        is_protected: Callable[[ID], bool] | None = None,
        is_refused_ip: Callable[[str | None], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        swarm = host.get_network()
        if not isinstance(swarm, LibSwarm):
            raise TypeError(f"connection management needs libp2p's Swarm, not {type(swarm).__name__}")
        self._swarm = swarm
        cap = int(swarm.connection_config.max_connections)
        self.limits = limits if limits is not None else ConnLimits.for_max(cap)
        if self.limits.max_connections != cap:
            raise BadValue(
                f"limits are for max_connections={self.limits.max_connections}"
                f" but the host is built with {cap}"
            )
        self._is_protected = is_protected
        self._is_refused_ip = is_refused_ip
        self._clock = clock
        self._addresses = AddressCounter(self.limits)
        self._opened: dict[int, tuple[INetConn, float]] = {}
        self._useful: dict[str, float] = {}
        self._wake = trio.Event()
        self._installed = False
        self._accepted = 0
        self._failed_upgrades = 0
        self._refused_ip = 0
        self._refused_subnet = 0
        self._refused_banned_ip = 0
        self._trimmed = 0

    # --- lifecycle ---------------------------------------------------------------

    def install(self) -> None:
        """Hook into the host; call once, before ``host.run()``.

        Installs the inbound handler that frees slots and applies the address
        limits, sets the inbound cap, and registers the notifee the trimmer
        uses. Raises :class:`Libp2pMismatch` if libp2p's internals changed.
        """
        if self._installed:
            return
        install_inbound_slot_release(self._swarm, self)
        self._swarm._inbound_limiter.total_tokens = self.limits.inbound_cap
        self._swarm.register_notifee(_Notifee(self))
        self._installed = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Trim every ``limits.trim_interval`` s, and when woken above the high watermark."""
        if not self._installed:
            raise RuntimeError("ConnectionManager.run() before install()")
        task_status.started()
        while True:
            with trio.move_on_after(self.limits.trim_interval):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.trim_once()
            except Exception as exc:  # trimming must never stop the node
                log.warning("connection trim failed: %r", exc)

    async def trim_once(self) -> int:
        """Close what :func:`choose_trims` picks now; the number closed."""
        now = self._clock()
        conns: dict[int, INetConn] = {}
        for conn in list(self._swarm.get_connections()):
            if not getattr(conn, "is_closed", False):  # not one already closing
                conns[id(conn)] = conn
        for key in [k for k in self._opened if k not in conns]:  # missed disconnects
            del self._opened[key]
        views = []
        for key, conn in conns.items():
            try:
                peer = conn.muxed_conn.peer_id.to_base58()
            except Exception:
                continue
            opened = self._opened.setdefault(key, (conn, now))[1]
            direction = getattr(getattr(conn, "direction", None), "name", "")
            views.append(
                ConnView(
                    key=key,
                    peer=peer,
                    opened_at=opened,
                    last_useful=self._useful.get(peer),
                    outbound=direction == "OUTBOUND",
                )
            )
        chosen = choose_trims(views, now=now, limits=self.limits, is_protected=self._protected)
        if not chosen:
            return 0
        log.info("trimming %d of %d connections", len(chosen), len(views))
        self._trimmed += len(chosen)
        async with trio.open_nursery() as nursery:
            for view in chosen:
                nursery.start_soon(self._close, conns[view.key])
        return len(chosen)

    # --- what the node tells us and asks -----------------------------------------

    def note_useful(self, peer: ID | str) -> None:
        """``peer`` delivered something valid (a record, a sync answer): trim it later."""
        key = peer if isinstance(peer, str) else peer.to_base58()
        if self._connected(key):
            self._useful[key] = self._clock()

    def stats(self) -> ConnStats:
        limiter = self._swarm._inbound_limiter
        return ConnStats(
            accepted=self._accepted,
            failed_upgrades=self._failed_upgrades,
            refused_per_ip=self._refused_ip,
            refused_per_subnet=self._refused_subnet,
            refused_banned_ip=self._refused_banned_ip,
            trimmed=self._trimmed,
            slots_in_use=int(limiter.borrowed_tokens),
            inbound_cap=int(limiter.total_tokens),
            connections=len(self._swarm.get_connections()),
        )

    # --- InboundHooks (called by the inbound handler) -----------------------------

    def enter(self, ip: str | None) -> bool:
        if self._refused_by_bans(ip):
            self._refused_banned_ip += 1
            log.debug("inbound connection from %s refused: the address is banned", ip)
            return False
        verdict = self._addresses.admit(ip)
        if verdict is Admission.REFUSE_IP:
            self._refused_ip += 1
        elif verdict is Admission.REFUSE_SUBNET:
            self._refused_subnet += 1
        if verdict is not Admission.ADMIT:
            log.debug("inbound connection from %s refused: %s", ip, verdict.value)
            return False
        return True

    def leave(self, ip: str | None) -> None:
        self._addresses.release(ip)

    def upgraded(self) -> None:
        self._accepted += 1

    def failed(self) -> None:
        self._failed_upgrades += 1

    # --- internals ----------------------------------------------------------------

    def _refused_by_bans(self, ip: str | None) -> bool:
        if self._is_refused_ip is None:
            return False
        try:
            return bool(self._is_refused_ip(ip))
        except Exception as exc:
            log.debug("is_refused_ip(%s) raised %r: not refusing", ip, exc)
            return False

    def _protected(self, peer: str) -> bool:
        try:
            pid = ID.from_base58(peer)
            if self._swarm.tag_store.is_protected(pid):
                return True
            return bool(self._is_protected(pid)) if self._is_protected is not None else False
        except Exception as exc:
            log.debug("is_protected(%s) raised %r: keeping the peer", peer, exc)
            return True

    def _connected(self, peer: str) -> bool:
        return any(self._peer_of(conn) == peer for conn, _ in self._opened.values())

    @staticmethod
    def _peer_of(conn: INetConn) -> str | None:
        try:
            return conn.muxed_conn.peer_id.to_base58()
        except Exception:
            return None

    def _on_connected(self, conn: INetConn) -> None:
        self._opened[id(conn)] = (conn, self._clock())
        if len(self._opened) > self.limits.high_water:
            self._wake.set()

    def _on_disconnected(self, conn: INetConn) -> None:
        self._opened.pop(id(conn), None)
        peer = self._peer_of(conn)
        if peer is not None and not self._connected(peer):
            self._useful.pop(peer, None)

    async def _close(self, conn: INetConn) -> None:
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await conn.close()
        except Exception as exc:
            log.debug("closing a trimmed connection failed: %r", exc)


def install(
    host: IHost,
    *,
    is_protected: Callable[[ID], bool] | None = None,
    is_refused_ip: Callable[[str | None], bool] | None = None,
    limits: ConnLimits | None = None,
) -> ConnectionManager:
    """A :class:`ConnectionManager` for ``host``, installed; call before ``host.run()``.

    Then run ``await nursery.start(manager.run)`` while the host runs.
    """
    manager = ConnectionManager(host, limits=limits, is_protected=is_protected, is_refused_ip=is_refused_ip)
    manager.install()
    return manager


__all__ = [
    "AddressCounter",
    "Admission",
    "ConnLimits",
    "ConnStats",
    "ConnView",
    "ConnectionManager",
    "InboundHooks",
    "Libp2pMismatch",
    "check_libp2p_internals",
    "choose_trims",
    "install",
    "install_inbound_slot_release",
    "subnet_of",
]
