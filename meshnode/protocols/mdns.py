"""LAN peer discovery over mDNS (DNS-SD), handed to trio through a bounded channel.

What it does
    * Advertises this host on the local link: one DNS-SD service whose TXT
      record carries the host's real listen addresses in the libp2p mDNS
      format (one ``dnsaddr=/ip4/…/tcp/…/p2p/<peer id>`` string per address).
      Unspecified listen addresses (``0.0.0.0``, ``::``) are expanded to the
      machine's interface addresses; loopback and unspecified addresses are
      never advertised.
    * Browses for the same service type and, for every peer found (or whose
      record changes), delivers a :class:`DiscoveredPeer` ``(peer_id, addrs)``
      into trio through a bounded :class:`trio.MemorySendChannel`. When the
      channel is full the result is dropped (counted in :attr:`LanDiscovery.stats`);
      zeroconf's threads never block on trio and never see an exception from us.
    * It never connects: the node decides whom to dial (only peers of its swarms).
      mDNS is unauthenticated - anyone on the link can announce any peer id and
      any address; only the Noise handshake on dial proves the peer id.

Private swarms
    A private swarm's host advertises its own service instance (its own port)
    with one more TXT string, ``mtag=<hex>``: a random 8-byte nonce and
    ``BLAKE2b-128(key=swarm key, "meshnode/lan/v1" || nonce || peer id)``. Only
    a holder of the swarm key can tell which swarm a tag belongs to; the nonce
    changes every ``rotate`` seconds (and at every start), so outsiders cannot
    even tell that two advertisements are of the same swarm. A discovery
    started with ``swarm_key`` delivers only peers whose tag verifies under it;
    one without delivers only untagged peers (the open host must not dial a
    private host: a pnet handshake with the wrong key hangs ~21 s).

Service type
    ``_meshnode._udp.local.`` by default, not libp2p's ``_p2p._udp.local.``: on
    a LAN the generic type also finds every IPFS/libp2p node around, none of
    which can be a meshnode swarm peer, so they would only cost resolutions and
    failed dials. The TXT format is libp2p's, so passing
    ``service_type=LIBP2P_SERVICE_TYPE`` interoperates with other libp2p mDNS
    peers.

Why zeroconf directly rather than ``libp2p.discovery.mdns.MDNSDiscovery`` (0.8.1)
    * its only discovery callback is the process-global ``peerDiscovery``
      singleton: every instance in a process receives every other's peers;
    * it binds zeroconf on *all* interfaces and fills the A record with the
      address of the default route (found by "connecting" to 8.8.8.8), not with
      the addresses the host listens on;
    * ``start()`` must run on the trio thread (it spawns a system task) but
      blocks it for the whole mDNS probe/announce (~1-2 s);
    * its browser thread resolves each service with up to three blocking 5 s
      requests and ``time.sleep`` back-offs, so one unresolvable service stalls
      discovery of all others; an updated record is not re-emitted;
    * it reads TXT through zeroconf's dict, so of a spec-compliant peer's
      repeated ``dnsaddr=`` strings it sees only the first.

Threads: zeroconf runs an asyncio loop in its own thread plus one
ServiceBrowser thread. Browser callbacks only schedule a resolution on
zeroconf's loop (never block); a resolution (cache first, then a bounded
query) ends in :meth:`LanDiscovery._deliver`, which hands the result to trio
with ``TrioToken.run_sync_soon``. Everything is closed and both threads are
joined when :meth:`LanDiscovery.run` is cancelled.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import trio
from libp2p.peer.id import ID
from multiaddr import Multiaddr
from zeroconf import ServiceListener, Zeroconf  # libp2p imports zeroconf anyway

from meshnode import addrs as addrlib
from meshnode.protocols.host import interface_ips

log = logging.getLogger(__name__)

SERVICE_TYPE = "_meshnode._udp.local."
LIBP2P_SERVICE_TYPE = "_p2p._udp.local."

DEFAULT_RESOLVE_TIMEOUT = 3.0  # s, one resolution of a discovered service
DEFAULT_MAX_PENDING = 32  # concurrent resolutions; more are dropped
MAX_ADDRS = 8  # addresses advertised, and accepted per peer
_TXT_KEY = b"dnsaddr"
_TAG_KEY = b"mtag"
_TAG_NONCE = 8
_TAG_MAC = 16
DEFAULT_ROTATE = 3600.0  # s between fresh nonces of a private swarm's tag


class DiscoveredPeer(NamedTuple):
    """A peer seen on the LAN: its claimed id and its dialable addresses (no /p2p suffix)."""

    peer_id: ID
    addrs: list[Multiaddr]


# --------------------------------------------------------------------------- addresses


def _lan_tcp(addr: str) -> tuple[str, addrlib.IP, int] | None:
    """``/ip4|ip6/<ip>/tcp/<port>[/p2p/…]`` with a LAN-usable ip -> (family, ip, port), else None.

    Usable: public or private scope (:func:`meshnode.addrs.scope_of`): not
    loopback, unspecified, multicast or IPv6 link-local; relays, websockets
    and the like are not for the LAN.
    """
    split = addrlib.split_tcp(addr)
    if split is None:
        return None
    family, ip, port, rest = split
    if rest and not (rest.startswith("/p2p/") and rest.count("/") == 2):
        return None
    if port == 0 or "%" in addr or addrlib.scope_of(ip) > addrlib.Scope.PRIVATE:
        return None
    return family, ip, port


def advertisable_addrs(addrs: Sequence[Multiaddr | str]) -> list[str]:
    """The TCP listen addresses worth announcing on the LAN, as ``/ipX/<ip>/tcp/<port>`` strings.

    Unspecified addresses expand to the interface addresses; loopback,
    multicast and non-TCP addresses are dropped; at most :data:`MAX_ADDRS`.
    """
    out: list[str] = []
    for addr in addrlib.expand_listen([str(a) for a in addrs], interface_ips()):
        lan = _lan_tcp(addr)
        if lan is not None:
            _family, ip, port = lan
            text = addrlib.tcp_addr(ip, port)
            if text not in out:
                out.append(text)
    return out[:MAX_ADDRS]


# --------------------------------------------------------------------------- TXT record


def build_txt(addrs: Sequence[str], peer_id: ID, tag: bytes | None = None) -> bytes:
    """Raw TXT rdata: one ``dnsaddr=<addr>/p2p/<id>`` string per address (libp2p mDNS spec).

    ``tag`` (a private swarm's, see :func:`swarm_tag`) adds ``mtag=<hex>``.
    """
    out = bytearray()
    for addr in addrs:
        entry = _TXT_KEY + b"=" + f"{addr}/p2p/{peer_id.to_base58()}".encode()
        if len(entry) <= 255:
            out += bytes([len(entry)]) + entry
    if tag is not None:
        entry = _TAG_KEY + b"=" + tag.hex().encode()
        out += bytes([len(entry)]) + entry
    return bytes(out)


def swarm_tag(key: bytes, peer_id: ID, nonce: bytes | None = None) -> bytes:
    """A private swarm's LAN tag for ``peer_id``: nonce || MAC (see the module docstring)."""
    nonce = secrets.token_bytes(_TAG_NONCE) if nonce is None else nonce
    mac = hashlib.blake2b(
        b"meshnode/lan/v1" + nonce + peer_id.to_bytes(), key=key, digest_size=_TAG_MAC
    ).digest()
    return nonce + mac


def parse_tag(text: bytes) -> bytes | None:
    """The ``mtag`` of a TXT record (nonce || MAC), or None. Never raises."""
    try:
        for entry in _txt_strings(bytes(text)):
            key, sep, value = entry.partition(b"=")
            if sep and key == _TAG_KEY:
                raw = bytes.fromhex(value.decode("ascii"))
                return raw if len(raw) == _TAG_NONCE + _TAG_MAC else None
    except Exception:
        return None
    return None


def tag_matches(tag: bytes | None, key: bytes | None, peer_id: ID) -> bool:
    """Whether an advertisement with ``tag`` belongs to the network of ``key`` (None: open)."""
    if key is None:
        return tag is None
    if tag is None or len(tag) != _TAG_NONCE + _TAG_MAC:
        return False
    return hmac.compare_digest(swarm_tag(key, peer_id, tag[:_TAG_NONCE]), tag)


def _txt_strings(text: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(text):
        n = text[i]
        out.append(text[i + 1 : i + 1 + n])
        i += 1 + n
    return out


def parse_txt(text: bytes) -> DiscoveredPeer | None:
    """The peer in a TXT record, or None. Never raises.

    Accepts repeated ``dnsaddr=`` strings (spec) and py-libp2p's
    ``dnsaddr2=``, ``dnsaddr3=``…; the peer id is the first one seen, entries
    naming another id are ignored; only usable ``/ip4|ip6/…/tcp/…`` addresses
    are kept.
    """
    try:
        peer_text: str | None = None
        addrs: list[Multiaddr] = []
        for entry in _txt_strings(bytes(text)):
            key, sep, value = entry.partition(b"=")
            if (
                not sep
                or not key.startswith(_TXT_KEY)
                or not (key[len(_TXT_KEY) :].isdigit() or key == _TXT_KEY)
            ):
                continue
            addr, p2p, pid_text = value.decode("ascii").rpartition("/p2p/")
            if not p2p or not pid_text:
                continue
            if peer_text is None:
                peer_text = pid_text
            elif pid_text != peer_text:
                continue
            if _lan_tcp(addr) is None or len(addrs) >= MAX_ADDRS:
                continue
            ma = Multiaddr(addr)
            if ma not in addrs:
                addrs.append(ma)
        if peer_text is None or not addrs:
            return None
        pid = ID.from_base58(peer_text)
        raw = pid.to_bytes()
        # a peer id is a multihash: identity (inlined key, e.g. Ed25519) or sha2-256
        if not ((raw[:1] == b"\x00" and len(raw) >= 3 and raw[1] == len(raw) - 2) or raw[:2] == b"\x12\x20"):
            return None
        if len(raw) > 2 + 127 or (raw[:2] == b"\x12\x20" and len(raw) != 34):
            return None
        return DiscoveredPeer(pid, addrs)
    except Exception:
        return None


# --------------------------------------------------------------------------- discovery


class _Listener(ServiceListener):
    """Runs on the ServiceBrowser thread; must never raise or block."""

    def __init__(self, owner: LanDiscovery) -> None:
        self._owner = owner

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self._owner._on_service(zc, type_, name)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self._owner._on_service(zc, type_, name)

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        # Nothing to do: the node keeps or drops its connections on its own.
        pass


class LanDiscovery:
    """mDNS advertise + browse for one libp2p host; results go to ``send_channel``.

    Use in a nursery after the host listens::

        send, recv = trio.open_memory_channel(16)
        await nursery.start(LanDiscovery(host, send).run)
        async for peer_id, addrs in recv: ...

    ``run`` signals started once the announcement is out (~1.5 s; peers found
    meanwhile are already delivered) and returns only by cancellation; it
    owns ``send_channel`` and closes it on exit. ``advertise`` overrides the
    addresses announced (default: the host's transport addresses); with none
    usable (loopback only) it does nothing at all unless ``interfaces`` names
    where to browse. ``interfaces`` overrides the IPs zeroconf binds to
    (default: the advertised IPs). ``run``
    raises (e.g. OSError) if zeroconf cannot open its sockets; the node may
    catch that and carry on without LAN discovery.
    """

    def __init__(
        self,
        host: Any,
        send_channel: trio.MemorySendChannel[DiscoveredPeer],
        *,
        service_type: str = SERVICE_TYPE,
        advertise: Sequence[Multiaddr | str] | None = None,
        interfaces: Sequence[str] | None = None,
        resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT,
        max_pending: int = DEFAULT_MAX_PENDING,
        swarm_key: bytes | None = None,
        rotate: float = DEFAULT_ROTATE,
    ) -> None:
        self._host = host
        self._send = send_channel
        self.service_type = service_type
        self._advertise_override = advertise
        self._interfaces_override = list(interfaces) if interfaces is not None else None
        self._resolve_timeout_ms = resolve_timeout * 1000
        self._max_pending = max_pending
        self._own_id: ID = host.get_id()
        self._instance = secrets.token_hex(16)
        self.service_name = f"{self._instance}.{service_type}"
        self._listener = _Listener(self)
        self._token: trio.lowlevel.TrioToken | None = None
        self._zc: Any = None
        self._browser: Any = None
        self._info: Any = None
        self._pending: dict[str, asyncio.Task[None]] = {}  # touched on zeroconf's loop only
        self._closed = False
        self._started = False
        self._lock = threading.Lock()
        self.advertised: list[str] = []
        self._swarm_key = swarm_key
        self._rotate = rotate
        self.stats = {
            "delivered": 0,
            "dropped": 0,
            "unresolved": 0,
            "invalid": 0,
            "errors": 0,
            "other_network": 0,
        }

    # ----------------------------------------------------------------- trio side

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._started:
            raise RuntimeError("LanDiscovery.run() can be called once")
        self._started = True
        self._token = trio.lowlevel.current_trio_token()
        async with self._send:
            try:
                raw = self._advertise_override
                if raw is None:
                    raw = self._host.get_transport_addrs()
                self.advertised = advertisable_addrs(raw)
                if not self.advertised and self._interfaces_override is None:
                    # Listening on loopback only: there is no LAN to talk to, and
                    # browsing would multicast on every interface. Stay silent.
                    log.info("mdns: off (no LAN address to advertise: listening on loopback only)")
                    task_status.started()
                    await trio.sleep_forever()
                await trio.to_thread.run_sync(self._start_sync)
                task_status.started()
                if self._swarm_key is None or not self.advertised:
                    await trio.sleep_forever()
                while True:  # a fresh nonce now and then: tags cannot be linked over time
                    await trio.sleep(self._rotate)
                    await trio.to_thread.run_sync(self._retag_sync)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._stop_sync)

    def _push(self, peer: DiscoveredPeer) -> None:
        """Runs on the trio thread (``run_sync_soon``): must never raise, never block."""
        try:
            self._send.send_nowait(peer)
            self._count("delivered")
        except trio.WouldBlock:
            self._count("dropped")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._count("dropped")
        except Exception:
            self._count("errors")

    # ----------------------------------------------------------------- any thread

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _deliver(self, peer: DiscoveredPeer) -> None:
        """Hand ``peer`` to trio from any thread; never raises, never blocks."""
        try:
            if self._closed or self._token is None:
                return
            self._token.run_sync_soon(self._push, peer)
        except trio.RunFinishedError:
            pass
        except Exception:
            self._count("errors")

    # ----------------------------------------------------------------- zeroconf threads

    def _on_service(self, zc: Any, type_: str, name: str) -> None:
        """ServiceBrowser thread: schedule a resolution on zeroconf's loop."""
        try:
            if self._closed or name == self.service_name:
                return
            log.debug("mdns: service %r seen", name)
            zc.loop.call_soon_threadsafe(self._schedule_resolve, zc, type_, name)
        except Exception:
            self._count("errors")
            log.debug("mdns: cannot schedule resolution of %r", name, exc_info=True)

    def _schedule_resolve(self, zc: Any, type_: str, name: str) -> None:
        """zeroconf's loop: one bounded resolution per service name at a time."""
        try:
            if self._closed or name in self._pending:
                return
            if len(self._pending) >= self._max_pending:
                self._count("dropped")
                return
            task = asyncio.get_running_loop().create_task(self._resolve(zc, type_, name))
            self._pending[name] = task
            task.add_done_callback(lambda _t: self._pending.pop(name, None))
        except Exception:
            self._count("errors")

    async def _resolve(self, zc: Any, type_: str, name: str) -> None:
        try:
            from zeroconf.asyncio import AsyncServiceInfo

            info = AsyncServiceInfo(type_, name)
            if not await info.async_request(zc, self._resolve_timeout_ms):
                self._count("unresolved")
                return
            peer = parse_txt(info.text or b"")
            if peer is None:
                self._count("invalid")
                return
            if peer.peer_id == self._own_id:
                return
            if not tag_matches(parse_tag(info.text or b""), self._swarm_key, peer.peer_id):
                self._count("other_network")
                return
            log.debug("mdns: %s resolved at %s", peer.peer_id, [str(a) for a in peer.addrs])
            self._deliver(peer)
        except Exception:
            self._count("errors")
            log.debug("mdns: resolving %r failed", name, exc_info=True)

    # ----------------------------------------------------------------- start / stop (worker thread)

    def _start_sync(self) -> None:
        from zeroconf import InterfaceChoice, ServiceBrowser, ServiceInfo

        if self._interfaces_override is not None:
            interfaces: Any = self._interfaces_override
        else:
            ips = []
            for addr in self.advertised:
                ip = addr.split("/")[2]
                if ip not in ips:
                    ips.append(ip)
            interfaces = ips or InterfaceChoice.All  # only reached with addresses to advertise
        self._zc = Zeroconf(interfaces=interfaces)
        try:
            self._browser = ServiceBrowser(self._zc, self.service_type, listener=self._listener)
            if self.advertised:
                port = int(self.advertised[0].split("/")[4])
                self._info = ServiceInfo(
                    self.service_type,
                    self.service_name,
                    port=port,
                    properties=self._txt(),
                    server=f"{self._instance}.local.",
                    parsed_addresses=[a.split("/")[2] for a in self.advertised],
                )
                self._zc.register_service(self._info, allow_name_change=True)
        except BaseException:
            self._stop_sync()
            raise

    def _txt(self) -> bytes:
        tag = swarm_tag(self._swarm_key, self._own_id) if self._swarm_key is not None else None
        return build_txt(self.advertised, self._own_id, tag)

    def _retag_sync(self) -> None:
        if self._zc is None or self._info is None:
            return
        try:
            from zeroconf import ServiceInfo

            old = self._info
            info = ServiceInfo(
                old.type,
                old.name,
                port=old.port,
                properties=self._txt(),
                server=old.server,
                parsed_addresses=old.parsed_addresses(),
            )
            self._zc.update_service(info)
            self._info = info
        except Exception:
            log.debug("mdns: re-tagging failed", exc_info=True)

    def _stop_sync(self) -> None:
        self._closed = True
        zc, self._zc = self._zc, None
        browser, self._browser = self._browser, None
        if browser is not None:
            try:
                browser.cancel()  # joins the browser thread
            except Exception:
                log.debug("mdns: browser cancel failed", exc_info=True)
        if zc is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._cancel_pending(), zc.loop).result(5)
        except Exception:
            log.debug("mdns: cancelling resolutions failed", exc_info=True)
        try:
            zc.close()  # sends goodbyes, joins the loop thread
        except Exception:
            log.warning("mdns: zeroconf close failed", exc_info=True)

    async def _cancel_pending(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


__all__ = [
    "LIBP2P_SERVICE_TYPE",
    "SERVICE_TYPE",
    "DiscoveredPeer",
    "LanDiscovery",
    "advertisable_addrs",
    "build_txt",
    "parse_tag",
    "parse_txt",
    "swarm_tag",
    "tag_matches",
]
