"""Building and dialling a libp2p host the way meshnode needs it.

* The node's Ed25519 key is the libp2p identity (same seed, same peer id).
* Noise is the ONLY security transport: py-libp2p's default list also admits
  plaintext peers (PY-LIBP2P-NOTES pitfall 1).
* Yamux, TCP, one connection per peer (pitfall 2: otherwise ~250 ms a dial).
* An optional pre-shared key makes a private network (pnet): peers without
  the key cannot complete a connection.
* Every dial has a timeout (pitfall 14: a wrong pnet key hangs ~21 s) and
  clears libp2p's 60 s negative dial cache first (pitfall 3).
* What the host advertises comes from an :class:`Advertiser` (identify's
  ``addrs_factory``, and ``host.get_addrs`` itself, whose own suffix handling
  mangles circuit addresses): never ``0.0.0.0`` (pitfall 27), see
  :mod:`meshnode.addrs`.
* Dialling a peer with several addresses tries them one by one, best first:
  libp2p would try only the first address per transport (pitfall 30).
* A listen port is checked free before the host binds it: libp2p sets
  SO_REUSEPORT, so a second host on a busy port silently shares it (pitfall 26).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

import libp2p
import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from meshnode import addrs as addrlib
from meshnode.errors import BadValue, NetworkError, PortInUse
from meshnode.identity import Identity

log = logging.getLogger(__name__)

DEFAULT_DIAL_TIMEOUT = 10.0
LOCAL_DIAL_TIMEOUT = 2.0  # a private or loopback address: answered at once on the same network
DEFAULT_MAX_CONNECTIONS = 64


def build_host(
    identity: Identity,
    *,
    psk: str | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    min_peers: int = 8,
    dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
    advertiser: Advertiser | None = None,
) -> IHost:
    """A libp2p host for ``identity``: Noise only, Yamux, TCP, optional pnet key.

    ``min_peers`` is libp2p's low watermark: below it, the host dials peers it
    knows from its peerstore every 30 s (pitfall 17). 0 turns that off: the
    auto-connector is disabled outright, since libp2p aims at the midpoint of
    the low and high watermarks (32 here) even with a low watermark of 0, and
    its dials hold the swarm's per-peer dial slot that :func:`dial` waits on
    (:func:`disable_auto_connector`).
    ``advertiser`` decides the addresses the host advertises (default: a plain
    :class:`Advertiser`, which already expands wildcards).
    """
    advertiser = advertiser or Advertiser()
    key_pair = create_new_key_pair(seed=identity.seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    config = ConnectionConfig(
        max_connections_per_peer=1,
        max_connections=max_connections,
        high_watermark=max_connections,
        low_watermark=min(min_peers, max_connections),
        min_connections=0,
        dial_timeout=dial_timeout,
    )
    host = libp2p.new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        connection_config=config,
        psk=psk,
        addrs_factory=advertiser,
    )
    advertiser.host = host
    if min_peers <= 0:
        disable_auto_connector(host)
    # libp2p's get_addrs() strips "/p2p/<first id>" and everything after it from
    # each address before appending ours, which turns a circuit address
    # (.../p2p/<relay>/p2p-circuit) into the relay's own address with our id.
    # identify and the signed peer record call host.get_addrs(): answer it here.
    pid = host.get_id().to_base58()

    def get_addrs() -> list[multiaddr.Multiaddr]:
        out = []
        for text in advertiser.addrs():
            try:
                out.append(multiaddr.Multiaddr(addrlib.with_peer(text, pid)))
            except Exception:
                log.debug("not advertising unparsable %r", text)
        return out

    host.get_addrs = get_addrs  # type: ignore[method-assign]
    return host


def disable_auto_connector(host: IHost) -> None:
    """Stop libp2p's auto-connector from dialling anyone (pitfall 17); the address book redials.

    With ``low_watermark=0`` libp2p 0.8.1 still aims at (low + high) / 2
    connections, dials every peer in the peerstore every 30 s and right after
    each disconnect, each for up to ``dial_timeout`` (10 s), at whatever
    address the peerstore holds then (a stale public one while the peer is
    down, or a LAN one of another home: both black holes). The swarm lets one
    dial per peer run at a time (``Swarm._ongoing_dials``), so the node's own
    dial waits behind it and gives up after its shorter share. Measured: a
    restarted UPnP home was not redialled for 150 s, every redial of the
    address book landing 0.34 s after one of these (their periods are
    multiples of 5 s).
    """
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is None:
        return

    async def never() -> None:
        return None

    connector.maybe_connect = never


# --- addresses -------------------------------------------------------------------


def interface_ips() -> list[str]:
    """This machine's interface addresses (IPv4 and IPv6, no zone ids); [] if unknown."""
    try:
        import ifaddr  # a zeroconf dependency

        out: list[str] = []
        for adapter in ifaddr.get_adapters():
            for entry in adapter.ips:
                text = entry.ip if isinstance(entry.ip, str) else entry.ip[0]
                text = text.split("%")[0]
                if text not in out:
                    out.append(text)
        return out
    except Exception:
        log.warning("cannot list interface addresses", exc_info=True)
        return []


class Advertiser:
    """What a host advertises: its listen addresses made dialable, plus what others found.

    An ``addrs_factory`` for libp2p (called for identify, ``get_addrs``, …).
    The node sets ``announce`` (from config.toml), ``mapped`` (UPnP),
    ``observed`` (AutoNAT-confirmed) and ``relayed`` (circuit addresses) as it
    learns them; ordering and filtering is :func:`meshnode.addrs.advertised`.
    Interface addresses are re-read at most every ``refresh`` seconds.
    """

    def __init__(
        self,
        *,
        announce: Sequence[str] = (),
        interfaces: Callable[[], list[str]] = interface_ips,
        refresh: float = 30.0,
    ) -> None:
        self.host: IHost | None = None
        self.announce: list[str] = list(announce)
        self.mapped: list[str] = []
        self.observed: list[str] = []
        self.relayed: list[str] = []
        self._interfaces = interfaces
        self._refresh = refresh
        self._cache: tuple[float, list[str]] = (-1e9, [])

    def interfaces(self) -> list[str]:
        at, ips = self._cache
        now = time.monotonic()
        if now - at > self._refresh:
            ips = self._interfaces()
            self._cache = (now, ips)
        return ips

    def addrs(self) -> list[str]:
        """The advertised addresses, best first, without ``/p2p/<self>``."""
        listen = [str(a) for a in self.host.get_transport_addrs()] if self.host is not None else []
        return addrlib.advertised(
            listen=listen,
            interfaces=self.interfaces(),
            announce=self.announce,
            mapped=self.mapped,
            observed=self.observed,
            relayed=self.relayed,
        )

    def __call__(self, candidates: Sequence[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        out = []
        try:
            for text in self.addrs():
                try:
                    out.append(multiaddr.Multiaddr(text))
                except Exception:
                    log.debug("not advertising unparsable %r", text)
        except Exception:  # called inside libp2p: never raise
            log.warning("computing advertised addresses failed", exc_info=True)
        return out


def check_port_free(addr: multiaddr.Multiaddr) -> None:
    """Raise :class:`PortInUse` if ``addr``'s TCP port cannot be bound without SO_REUSEPORT.

    libp2p binds with SO_REUSEPORT, so without this check a second host (or a
    second daemon) on a busy port would start fine and silently receive part of
    its connections (pitfall 26). Port 0 is always free.
    """
    split = addrlib.split_tcp(str(addr))
    if split is None or split[2] == 0:
        return
    _family, ip, port, _rest = split
    if not _bindable(ip, port):
        raise PortInUse(
            f"TCP port {port} on {ip} is already in use (another meshnode daemon, or another"
            " program): stop it, or choose another port with 'listen' in config.toml"
            " or --listen"
        )


def free_port(ip: str) -> int:
    """A TCP port that is free on ``ip`` now (bound and released without SO_REUSEPORT)."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def port_is_free(ip: str, port: int) -> bool:
    return _bindable(ipaddress.ip_address(ip), port)


def _bindable(ip: addrlib.IP, port: int) -> bool:
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
        if ip.version == 6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((str(ip), port))
            sock.listen(1)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def parse_multiaddr(text: str) -> multiaddr.Multiaddr:
    """Parse a multiaddr, or raise :class:`BadValue` with an example of a good one."""
    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:
        raise BadValue(
            f"not a multiaddr: {text!r} ({exc}); expected e.g. /ip4/192.0.2.7/tcp/4001/p2p/12D3KooW…"
        ) from None


def peer_info_of(text: str) -> PeerInfo:
    """The peer id and address in a ``…/p2p/<peer id>`` multiaddr."""
    addr = parse_multiaddr(text)
    try:
        return info_from_p2p_addr(addr)
    except Exception:
        raise BadValue(f"multiaddr {text!r} must end in /p2p/<peer id> to be dialled") from None


RelayedDialer = Callable[[ID, str, float], Awaitable[None]]


async def dial_addrs(
    host: IHost,
    peer: ID,
    addrs: Sequence[str],
    *,
    timeout: float = DEFAULT_DIAL_TIMEOUT,
    dial_relayed: RelayedDialer | None = None,
) -> str | None:
    """Connect to ``peer`` trying ``addrs`` one by one, in the order given; the address that worked.

    Returns None if the peer was connected already. Each address gets its own
    share of ``timeout`` (at least 3 s; private and loopback addresses at most
    :data:`LOCAL_DIAL_TIMEOUT`, since from another home they are a black
    hole and on the same network they answer at once); the peer's stored addresses are
    cleared before each direct attempt so libp2p dials exactly that one
    (pitfall 30). ``/p2p-circuit`` addresses go to ``dial_relayed(peer, addr,
    seconds)`` (skipped without one). Raises :class:`NetworkError` naming
    every failure.
    """
    if peer == host.get_id():
        raise BadValue("that address is this node itself")
    if peer in host.get_connected_peers():
        return None
    usable = [a for a in addrs if "/p2p-circuit" not in a or dial_relayed is not None]
    if not usable:
        raise NetworkError(f"no address to dial {peer} ({len(addrs)} known, none usable here)")
    deadline = trio.current_time() + timeout
    errors = []
    for i, addr in enumerate(usable):
        left = deadline - trio.current_time()
        if left <= 0:
            errors.append(f"{addr}: no time left")
            break
        share = max(min(left, 3.0), left / (len(usable) - i))
        if addrlib.rank(addr)[0] >= 2:
            share = min(share, LOCAL_DIAL_TIMEOUT)  # a LAN peer answers at once; elsewhere it is a black hole
        if "/p2p-circuit" in addr and dial_relayed is not None:
            try:
                await dial_relayed(peer, addrlib.with_peer(addr, peer.to_base58()), share)
                return addr
            except NetworkError as exc:
                errors.append(f"{addrlib.strip_peer(addr)}: {exc}")
            except Exception as exc:
                errors.append(f"{addrlib.strip_peer(addr)}: {type(exc).__name__} {exc}")
            continue
        try:
            ma = multiaddr.Multiaddr(addrlib.strip_peer(addr))
        except Exception:
            errors.append(f"{addr}: not a multiaddr")
            continue
        try:
            host.get_peerstore().clear_addrs(peer)
        except Exception:
            pass
        try:
            await dial(host, PeerInfo(peer, [ma]), timeout=share)
            return addr
        except NetworkError as exc:
            errors.append(f"{addrlib.strip_peer(addr)}: {exc}")
    raise NetworkError(f"could not reach {peer}: " + "; ".join(errors))


async def dial(host: IHost, info: PeerInfo, *, timeout: float = DEFAULT_DIAL_TIMEOUT) -> None:
    """Connect to ``info`` within ``timeout`` seconds, or raise :class:`NetworkError`."""
    if info.peer_id == host.get_id():
        raise BadValue("that address is this node itself")
    network = host.get_network()
    unblock = getattr(network, "unblock_peer", None)
    if unblock is not None:
        try:
            unblock(info.peer_id)
        except Exception:  # not blocked: nothing to clear
            pass
    try:
        with trio.fail_after(timeout):
            await host.connect(info)
    except trio.TooSlowError:
        raise NetworkError(
            f"could not reach {info.peer_id} within {timeout:.0f} s"
            " (is it running, and do you hold the swarm key if the swarm is private?)"
        ) from None
    except Exception as exc:
        raise NetworkError(f"could not connect to {info.peer_id}: {exc}") from None


async def close_stream(stream: INetStream, *, reset: bool = False, timeout: float = 2.0) -> None:
    """Close (or reset) ``stream``, best effort: shielded from cancellation, bounded, never raises.

    For the end of a protocol exchange and its error paths, where the stream
    may already be gone and nothing more can be done about it.
    """
    with trio.CancelScope(shield=True), trio.move_on_after(timeout):
        try:
            await (stream.reset() if reset else stream.close())
        except Exception as exc:  # the stream or its connection is gone: nothing left to do
            log.debug("closing a stream: %r", exc)


async def close_connections(host: IHost) -> None:
    """Close every connection of ``host``, each socket for real; never raises.

    ``SwarmConn.close()`` returns early when the connection was already marked
    closed (e.g. by a cancelled task) and then leaves the socket open, so the
    remote peer believes it is still connected; the secured connection under
    it is closed here as well (closing twice is harmless).
    """
    network = host.get_network()
    for peer in list(host.get_connected_peers()):
        for conn in list(network.get_connections(peer)):
            for close in (conn.close, getattr(getattr(conn.muxed_conn, "secured_conn", None), "close", None)):
                if close is None:
                    continue
                try:
                    await close()
                except Exception as exc:
                    log.debug("closing a connection to %s: %r", peer, exc)


def listen_addrs(host: IHost) -> list[str]:
    """The host's advertised addresses (best first), each ending in /p2p/<peer id>."""
    pid = host.get_id().to_base58()
    return [addrlib.with_peer(str(addr), pid) for addr in host.get_addrs()]


def parse_listen(addrs: Sequence[str]) -> list[multiaddr.Multiaddr]:
    return [parse_multiaddr(a) for a in addrs]


__all__ = [
    "ID",
    "Advertiser",
    "build_host",
    "check_port_free",
    "close_connections",
    "dial",
    "dial_addrs",
    "free_port",
    "interface_ips",
    "listen_addrs",
    "parse_listen",
    "parse_multiaddr",
    "peer_info_of",
]
