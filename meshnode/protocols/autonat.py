"""Reachability check ``/meshnode/autonat/1``: peers really dial us back.

A node asks a few peers it is connected to ("servers") to dial it back at
its candidate addresses (observed public addresses, a UPnP mapping, its
listen addresses) and concludes PUBLIC / PRIVATE / UNKNOWN from what they
report (:func:`decide`, pure). A PUBLIC verdict names the addresses that
worked: those are the ones to advertise.

Why our own protocol rather than libp2p's ``AutoNATService`` (0.8.1,
``host/autonat/autonat.py``): its server "dials back" with ``host.connect``
(``autonat.py:396``), which returns at once because the client is already
connected, so every node looks PUBLIC - even at a closed port; its client
sends ``get_addrs()`` (0.0.0.0 or LAN addresses), so a refusal to dial those
counts as a failure and a public node on 0.0.0.0 comes out PRIVATE; and its
default 4 confirmations never settle with 1-2 servers (PY-LIBP2P-NOTES
pitfall 35). Fixing that needs new server, client and decision code anyway;
a small CBOR protocol of our own is the same size, bounded like meshnode's
other protocols, and testable. (A libp2p AutoNAT v1 peer of another
implementation cannot serve or use it; py's v1 gives wrong answers anyway.)

The dial-back, and why not ``swarm.dial_addr``
    The server opens a FRESH TCP connection to the address (never the
    existing connection), runs the Noise handshake (with the pnet key when
    the host has one) and checks that the key which answers is the
    requester's, then closes it - no muxer, nothing registered in the swarm.
    A full ``swarm.dial_addr`` would register a second connection to the
    peer on both sides: notifees and pubsub streams start on it, closing it
    triggers pitfall 34 (GossipSub forgets the peer's subscriptions), and on
    the client every accepted, fully upgraded connection keeps one of the
    swarm's inbound slots for good (pitfall 25). A handshake-only dial-back
    fails the client's muxer negotiation, which frees its inbound slot.

Wire format
    Each message is a 4-byte big-endian length and a canonical CBOR map
    (:mod:`meshnode.wire`) of at most 4 KiB; one request, one response, then
    the stream closes. Every read and write has a timeout.

    * request ``{"v": 1, "addrs": [multiaddr text, ...], "ports": [tcp port, ...]}``:
      dial me at each address, and at my observed IP on each port (for a node
      behind a port-forwarding or UPnP router that does not know its public IP).
    * response ``{"v": 1, "observed": ip text, "results": [{"addr": text, "result": code}, ...]}``
      with ``code`` one of ``ok`` (a fresh connection reached the requester's
      key), ``failed`` (refused, timed out, or another key answered),
      ``not_yours`` (not the requester's IP: never dialled), ``bad_addr``
      (not ``/ip4|ip6/…/tcp/…[/p2p/<requester>]``), ``skipped`` (over the
      per-request limit); or ``{"v": 1, "refused": reason}`` with reason
      ``relayed`` (no IP to check the request against), ``rate_limited``,
      ``busy``, ``malformed``, ``version``.

Server limits (:class:`AutoNATLimits`): dials only the IP the request came
from (anti-amplification: never a third party's address), at most 4 dials
per request (5 s each, concurrently), each peer 3 requests in a burst then 1
a minute, each IP 6 in a burst then 1 every 10 s, 4 requests at a time in
all. The handler never raises into libp2p (pitfall 5).
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import random
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.connection_types import ConnectionType
from libp2p.custom_types import TProtocol
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.security.pnet.protector import new_protected_conn
from multiaddr import Multiaddr

from meshnode import wire
from meshnode.errors import DecodeError
from meshnode.protocols.host import close_stream
from meshnode.ratelimit import KeyedRateLimit

log = logging.getLogger(__name__)

PROTOCOL_ID = TProtocol("/meshnode/autonat/1")
VERSION = 1
MAX_FRAME = 4096
MAX_ADDR_TEXT = 200
MAX_ADDRS = 8  # addresses + ports a request may name
_HEADER = 4

__all__ = [
    "PROTOCOL_ID",
    "AutoNATLimits",
    "AutoNATServer",
    "Outcome",
    "ProbeResult",
    "Reachability",
    "ReachabilityChecker",
    "ReachabilityStatus",
    "decide",
]


# --- the pure decision core ----------------------------------------------------------


class Reachability(enum.Enum):
    PUBLIC = "public"  # peers could open fresh connections to us
    PRIVATE = "private"  # peers tried and could not
    UNKNOWN = "unknown"  # not enough evidence either way


class Outcome(enum.Enum):
    OK = "ok"  # the server reached us at this address on a fresh connection
    FAILED = "failed"  # the server tried and could not
    REFUSED = "refused"  # the server would not try (not our IP, limits, relayed, ...)
    ERROR = "error"  # no usable answer (timeout, protocol unsupported, garbage)


@dataclass(frozen=True)
class ProbeResult:
    """One server's answer about one address ("" when about the whole request)."""

    server: str
    addr: str
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class ReachabilityStatus:
    """The node's reachability as last decided."""

    reachability: Reachability
    agreed: int  # servers supporting the verdict (0 for UNKNOWN)
    asked: int  # servers asked
    answered: int  # servers that tested at least one address
    reachable_addrs: tuple[str, ...]  # addresses some server reached (PUBLIC only)
    reason: str
    checked_at: float | None = None  # wall clock of the check


UNKNOWN_STATUS = ReachabilityStatus(Reachability.UNKNOWN, 0, 0, 0, (), "not checked yet")


def decide(
    results: Iterable[ProbeResult], confirmations: int = 1, *, asked: int | None = None
) -> ReachabilityStatus:
    """The verdict from a set of probe results.

    A server *reached* us when it reports OK for any address, and *failed*
    when it tested at least one address and none was OK. REFUSED and ERROR
    are no evidence. PUBLIC when at least ``confirmations`` servers reached
    us (a fresh connection that completed a handshake with our key is proof,
    so failures elsewhere do not outvote it); PRIVATE when at least
    ``confirmations`` servers failed and none reached us; UNKNOWN otherwise.
    """
    confirmations = max(1, confirmations)
    by_server: dict[str, set[Outcome]] = {}
    reached_addrs: set[str] = set()
    tried_addrs: set[str] = set()
    not_tested: dict[str, int] = {}
    for r in results:
        by_server.setdefault(r.server, set()).add(r.outcome)
        if r.outcome is Outcome.OK:
            reached_addrs.add(r.addr)
        if r.outcome in (Outcome.OK, Outcome.FAILED):
            tried_addrs.add(r.addr)
        else:
            key = r.detail or r.outcome.value
            not_tested[key] = not_tested.get(key, 0) + 1
    ok = [s for s, o in by_server.items() if Outcome.OK in o]
    failed = [s for s, o in by_server.items() if Outcome.FAILED in o and Outcome.OK not in o]
    answered = len(ok) + len(failed)
    n_asked = len(by_server) if asked is None else asked
    if len(ok) >= confirmations:
        reason = f"{len(ok)} of {answered} answering server(s) reached us on a fresh connection"
        if failed:
            reason += f"; {len(failed)} could not"
        return ReachabilityStatus(
            Reachability.PUBLIC, len(ok), n_asked, answered, tuple(sorted(reached_addrs)), reason
        )
    if len(failed) >= confirmations and not ok:
        reason = f"{len(failed)} server(s) tried and none reached us at {', '.join(sorted(tried_addrs))}"
        return ReachabilityStatus(Reachability.PRIVATE, len(failed), n_asked, answered, (), reason)
    if n_asked == 0:
        reason = "no server to ask"
    elif ok and failed:
        reason = f"conflicting: {len(ok)} server(s) reached us, {len(failed)} did not; need {confirmations}"
    elif answered:
        reason = f"only {answered} server(s) could test an address; need {confirmations}"
    else:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(not_tested.items())) or "no answer"
        reason = f"no server could test any address ({why})"
    return ReachabilityStatus(Reachability.UNKNOWN, 0, n_asked, answered, (), reason)


# --- log noise -----------------------------------------------------------------------------

#: Servers asked recently (peer id -> monotonic time): the handshake-only
#: dial-back makes the client's swarm log "fail to upgrade mux for peer <server>"
#: at ERROR (network/swarm.py:2185); for those peers that is expected.
_recent_servers: dict[ID, float] = {}
_RECENT = 60.0


class _DemoteDialBackNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if record.levelno > logging.DEBUG and str(record.msg).startswith("fail to upgrade mux for peer"):
                peer = record.args[0] if isinstance(record.args, tuple) and record.args else None
                asked = _recent_servers.get(peer) if isinstance(peer, ID) else None
                if asked is not None and time.monotonic() - asked < _RECENT:
                    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                    return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        except Exception:
            pass
        return True


def quiet_dial_back_noise() -> None:
    """Demote libp2p's 'fail to upgrade mux' errors about servers we just asked (idempotent)."""
    swarm_logger = logging.getLogger("libp2p.network.swarm")
    if not any(isinstance(f, _DemoteDialBackNoise) for f in swarm_logger.filters):
        swarm_logger.addFilter(_DemoteDialBackNoise())


def _note_server(server: ID) -> None:
    now = time.monotonic()
    if len(_recent_servers) > 256:
        for peer, t in list(_recent_servers.items()):
            if now - t >= _RECENT:
                del _recent_servers[peer]
    _recent_servers[server] = now


# --- framing -------------------------------------------------------------------------------


async def _write(stream: INetStream, value: Any, timeout: float) -> None:
    payload = wire.encode(value)
    with trio.fail_after(timeout):
        await stream.write(struct.pack(">I", len(payload)) + payload)


async def _read_exactly(stream: INetStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise DecodeError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


async def _read(stream: INetStream, timeout: float) -> Any:
    with trio.fail_after(timeout):
        (size,) = struct.unpack(">I", await _read_exactly(stream, _HEADER))
        if size > MAX_FRAME:
            raise DecodeError(f"expected a frame of at most {MAX_FRAME} bytes, found {size}")
        return wire.decode(await _read_exactly(stream, size), max_size=MAX_FRAME, max_depth=4)


# --- addresses -------------------------------------------------------------------------------


def _norm_ip(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def _tcp_target(text: str, requester: ID) -> tuple[str, int] | None:
    """(ip, port) of ``/ip4|ip6/<ip>/tcp/<port>[/p2p/<requester>]``, else None."""
    try:
        addr = Multiaddr(text)
        protos = [p.name for p in addr.protocols()]
        if protos not in (["ip4", "tcp"], ["ip6", "tcp"], ["ip4", "tcp", "p2p"], ["ip6", "tcp", "p2p"]):
            return None
        if protos[-1] == "p2p" and addr.value_for_protocol("p2p") != requester.to_base58():
            return None
        ip = _norm_ip(addr.value_for_protocol(protos[0]))
        port = int(addr.value_for_protocol("tcp"))
    except Exception:
        return None
    if ip is None or not 0 < port < 65536:
        return None
    return ip, port


def _tcp_addr(ip: str, port: int) -> str:
    proto = "ip6" if ":" in ip else "ip4"
    return f"/{proto}/{ip}/tcp/{port}"


def _stream_is_relayed(stream: INetStream) -> bool:
    muxed = getattr(stream, "muxed_conn", None)
    try:
        if muxed is not None and muxed.get_connection_type() == ConnectionType.RELAYED:
            return True
    except Exception:
        pass
    try:
        return any("/p2p-circuit" in str(a) for a in muxed.get_transport_addresses())  # type: ignore[union-attr]
    except Exception:
        return False


# --- server ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AutoNATLimits:
    """Bounds of the server side (see the module docstring)."""

    max_dials: int = 4  # per request
    dial_timeout: float = 5.0  # per dial-back (TCP connect + Noise handshake)
    read_timeout: float = 5.0
    write_timeout: float = 5.0
    max_concurrent: int = 4  # requests served at once by this host
    peer_rate: float = 1 / 60  # requests per second per peer ...
    peer_burst: float = 3.0
    ip_rate: float = 1 / 10  # ... and per requester IP
    ip_burst: float = 6.0


@dataclass
class AutoNATServerStats:
    requests: int = 0
    refused: int = 0
    dials: int = 0
    dials_ok: int = 0
    not_yours: int = 0  # addresses refused because they name another IP
    errors: int = 0  # malformed requests, timeouts


class AutoNATServer:
    """Answers ``/meshnode/autonat/1``: dial-backs on fresh connections, bounded.

    ``dial_back`` can be replaced (tests, or a node that wants to veto some
    addresses); it gets ``(ip, port, requester)`` and returns a result code.
    """

    def __init__(self, host: IHost, *, limits: AutoNATLimits | None = None) -> None:
        self.host = host
        self.limits = limits or AutoNATLimits()
        self.stats = AutoNATServerStats()
        self._peer_rate = KeyedRateLimit(rate=self.limits.peer_rate, burst=self.limits.peer_burst)
        self._ip_rate = KeyedRateLimit(rate=self.limits.ip_rate, burst=self.limits.ip_burst)
        self._active = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled."""
        self.host.set_stream_handler(PROTOCOL_ID, self.handle)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            try:
                self.host.remove_stream_handler(PROTOCOL_ID)
            except Exception:
                pass

    async def handle(self, stream: INetStream) -> None:
        """The stream handler: never raises."""
        self.stats.requests += 1
        if self._active >= self.limits.max_concurrent:
            await self._refuse(stream, "busy")
            return
        self._active += 1
        try:
            await self._serve(stream)
        except Exception as exc:
            self.stats.errors += 1
            log.debug("autonat request failed: %r", exc)
            await close_stream(stream, reset=True)
        finally:
            self._active -= 1

    async def _refuse(self, stream: INetStream, reason: str) -> None:
        self.stats.refused += 1
        try:
            await _write(stream, {"v": VERSION, "refused": reason}, self.limits.write_timeout)
        except Exception:
            pass
        await close_stream(stream)

    async def _serve(self, stream: INetStream) -> None:
        requester = stream.muxed_conn.peer_id
        remote = stream.get_remote_address()
        observed = _norm_ip(remote[0]) if remote else None
        if observed is None or _stream_is_relayed(stream):
            await self._refuse(stream, "relayed")
            return
        now = time.monotonic()
        if not self._peer_rate.allow(requester, now) or not self._ip_rate.allow(observed, now):
            await self._refuse(stream, "rate_limited")
            return
        try:
            request = await _read(stream, self.limits.read_timeout)
            addrs, ports = _parse_request(request)
        except trio.TooSlowError:
            self.stats.errors += 1
            await close_stream(stream, reset=True)
            return
        except (DecodeError, ValueError) as exc:
            self.stats.errors += 1
            reason = "version" if "version" in str(exc) else "malformed"
            await self._refuse(stream, reason)
            return
        # What to dial: every named address on the requester's IP, then its ports.
        plan: list[tuple[str, tuple[str, int] | None, str]] = []  # (addr text, target, code if not dialled)
        for text in addrs:
            target = _tcp_target(text, requester)
            if target is None:
                plan.append((text, None, "bad_addr"))
            elif target[0] != observed:
                self.stats.not_yours += 1
                plan.append((text, None, "not_yours"))
            else:
                plan.append((_tcp_addr(*target), target, ""))
        for port in ports:
            plan.append((_tcp_addr(observed, port), (observed, port), ""))
        results: dict[int, str] = {}
        seen: dict[tuple[str, int], int] = {}
        dials: list[tuple[int, tuple[str, int]]] = []
        for i, (_, target, code) in enumerate(plan):
            if target is None:
                results[i] = code
            elif target in seen:
                results[i] = "dup"
            elif len(dials) >= self.limits.max_dials:
                results[i] = "skipped"
            else:
                seen[target] = i
                dials.append((i, target))

        async def one(i: int, target: tuple[str, int]) -> None:
            results[i] = await self.dial_back(target[0], target[1], requester)

        async with trio.open_nursery() as nursery:
            for i, target in dials:
                nursery.start_soon(one, i, target)
        out = []
        for i, (text, target, _) in enumerate(plan):
            code = results[i]
            if code == "dup" and target is not None:
                code = results[seen[target]]
            out.append({"addr": text, "result": code})
        await _write(stream, {"v": VERSION, "observed": observed, "results": out}, self.limits.write_timeout)
        await close_stream(stream)

    async def dial_back(self, ip: str, port: int, requester: ID) -> str:
        """A fresh TCP connection to ``ip:port`` and a Noise handshake that must prove ``requester``."""
        self.stats.dials += 1
        network: Any = self.host.get_network()
        raw: Any = None
        secured: Any = None
        code = "failed"
        try:
            with trio.fail_after(self.limits.dial_timeout):
                tcp = await trio.open_tcp_stream(ip, port)
                raw = RawConnection(TrioTCPStream(tcp), True)
                if getattr(network, "psk", None) is not None:
                    raw = new_protected_conn(raw, network.psk)
                secured = await network.upgrader.upgrade_security(raw, True, requester)
            code = "ok"
            self.stats.dials_ok += 1
        except Exception as exc:  # refused, timed out, wrong key: all "failed"
            log.debug("autonat dial-back to %s:%s failed: %r", ip, port, exc)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                for conn in (secured, raw):
                    if conn is not None:
                        try:
                            await conn.close()
                        except Exception:
                            pass
        return code


def _parse_request(value: Any) -> tuple[list[str], list[int]]:
    if not isinstance(value, dict):
        raise ValueError("expected a map")
    if value.get("v") != VERSION:
        raise ValueError(f"unsupported version {value.get('v')!r}")
    addrs = value.get("addrs", [])
    ports = value.get("ports", [])
    if not isinstance(addrs, list) or not all(isinstance(a, str) and len(a) <= MAX_ADDR_TEXT for a in addrs):
        raise ValueError("addrs: expected a list of multiaddr texts")
    if not isinstance(ports, list) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
        raise ValueError("ports: expected a list of TCP ports")
    if len(addrs) + len(ports) > MAX_ADDRS:
        raise ValueError(f"expected at most {MAX_ADDRS} addresses and ports")
    return addrs, ports


# --- client -----------------------------------------------------------------------------------


_RESULT_OUTCOME = {
    "ok": Outcome.OK,
    "failed": Outcome.FAILED,
    "not_yours": Outcome.REFUSED,
    "bad_addr": Outcome.REFUSED,
    "skipped": Outcome.REFUSED,
}


class ReachabilityChecker:
    """The client side: asks servers, decides, keeps :attr:`status`, reports changes.

    ``candidates()`` gives the addresses to test (default: the host's concrete
    TCP listen addresses); ``ports()`` the TCP ports to test at whatever IP the
    server sees us from (default: the host's listen ports; this is what finds
    a port-forwarded or UPnP-mapped node's public address). ``servers()``
    gives the peers to ask (default: peers connected directly, in random
    order); at most ``max_servers`` are asked, concurrently.
    ``on_change(status)`` runs when the reachability or the reachable
    addresses change; exceptions from it are logged, not raised.
    """

    def __init__(
        self,
        host: IHost,
        *,
        candidates: Callable[[], Sequence[Multiaddr | str]] | None = None,
        ports: Callable[[], Sequence[int]] | None = None,
        servers: Callable[[], Sequence[ID]] | None = None,
        on_change: Callable[[ReachabilityStatus], None] | None = None,
        confirmations: int = 1,
        max_servers: int = 4,
        timeout: float = 12.0,
        interval: float = 900.0,
        unknown_interval: float = 60.0,
    ) -> None:
        self.host = host
        self._candidates = candidates or self._listen_addrs
        self._ports = ports or self._listen_ports
        self._servers = servers or self._connected_peers
        self._on_change = on_change
        self.confirmations = max(1, confirmations)
        self.max_servers = max_servers
        self.timeout = timeout
        self.interval = interval
        self.unknown_interval = unknown_interval
        self.status: ReachabilityStatus = UNKNOWN_STATUS
        self.last_results: tuple[ProbeResult, ...] = ()
        self._unsupported: set[ID] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check now, then every ``interval`` s (``unknown_interval`` s while UNKNOWN)."""
        task_status.started()
        while True:
            try:
                await self.check()
            except Exception as exc:  # a failing check must not end the loop
                log.warning("reachability check failed: %r", exc)
            known = self.status.reachability is not Reachability.UNKNOWN
            await trio.sleep(self.interval if known else self.unknown_interval)

    async def check(self, servers: Sequence[ID] | None = None) -> ReachabilityStatus:
        """Ask up to ``max_servers`` servers, decide, update :attr:`status`; return it."""
        chosen = [s for s in (servers if servers is not None else self._servers()) if s != self.host.get_id()]
        chosen = [s for s in chosen if s not in self._unsupported][: self.max_servers]
        addrs = list(dict.fromkeys(str(a) for a in self._candidates()))
        ports = list(dict.fromkeys(int(p) for p in self._ports()))
        room = MAX_ADDRS - len(addrs)
        addrs, ports = addrs[:MAX_ADDRS], ports[: max(0, room)]
        results: list[ProbeResult] = []

        async def ask(server: ID) -> None:
            results.extend(await self.probe(server, addrs, ports))

        if addrs or ports:
            async with trio.open_nursery() as nursery:
                for server in chosen:
                    nursery.start_soon(ask, server)
        status = decide(results, self.confirmations, asked=len(chosen))
        if not addrs and not ports:
            status = ReachabilityStatus(Reachability.UNKNOWN, 0, 0, 0, (), "no candidate address to test")
        status = ReachabilityStatus(**{**status.__dict__, "checked_at": time.time()})
        self.last_results = tuple(results)
        self._update(status)
        return status

    async def probe(self, server: ID, addrs: Sequence[str], ports: Sequence[int]) -> list[ProbeResult]:
        """One request to one server; never raises (errors become ERROR results)."""
        name = server.to_base58()
        stream: INetStream | None = None
        _note_server(server)
        try:
            with trio.fail_after(self.timeout):
                try:
                    stream = await self.host.new_stream(server, [PROTOCOL_ID])
                except Exception as exc:
                    if "protocol" in str(exc).lower() or "negotiat" in str(exc).lower():
                        self._unsupported.add(server)
                        return [ProbeResult(name, "", Outcome.ERROR, "unsupported")]
                    raise
                request = {"v": VERSION, "addrs": list(addrs), "ports": list(ports)}
                await _write(stream, request, self.timeout)
                response = await _read(stream, self.timeout)
        except trio.TooSlowError:
            return [ProbeResult(name, "", Outcome.ERROR, "timeout")]
        except Exception as exc:
            return [ProbeResult(name, "", Outcome.ERROR, f"error: {type(exc).__name__}")]
        finally:
            if stream is not None:
                await close_stream(stream)
        return _parse_response(name, response)

    def _update(self, status: ReachabilityStatus) -> None:
        old = self.status
        self.status = status
        changed = (old.reachability, old.reachable_addrs) != (status.reachability, status.reachable_addrs)
        if changed and self._on_change is not None:
            try:
                self._on_change(status)
            except Exception as exc:
                log.warning("reachability on_change callback failed: %r", exc)

    # defaults --------------------------------------------------------------------------

    def _listen_addrs(self) -> list[str]:
        out = []
        for addr in self.host.get_addrs():
            text = str(addr).split("/p2p/")[0]
            target = _tcp_target(text, self.host.get_id())
            if target is not None and target[0] not in ("0.0.0.0", "::"):
                out.append(text)
        return out

    def _listen_ports(self) -> list[int]:
        ports = []
        for addr in self.host.get_addrs():
            try:
                ports.append(int(addr.value_for_protocol("tcp")))
            except Exception:
                continue
        return ports

    def _connected_peers(self) -> list[ID]:
        network = self.host.get_network()
        peers = []
        for peer, conns in list(network.get_connections_map().items()):  # type: ignore[attr-defined]
            if any(c.get_connection_type() != ConnectionType.RELAYED for c in conns):
                peers.append(peer)
        random.shuffle(peers)
        return peers


def _parse_response(server: str, value: Any) -> list[ProbeResult]:
    if not isinstance(value, dict) or value.get("v") != VERSION:
        return [ProbeResult(server, "", Outcome.ERROR, "bad response")]
    refused = value.get("refused")
    if isinstance(refused, str):
        return [ProbeResult(server, "", Outcome.REFUSED, refused[:40])]
    items = value.get("results")
    if not isinstance(items, list) or len(items) > MAX_ADDRS:
        return [ProbeResult(server, "", Outcome.ERROR, "bad response")]
    out = []
    for item in items:
        if not isinstance(item, dict):
            return [ProbeResult(server, "", Outcome.ERROR, "bad response")]
        addr, code = item.get("addr"), item.get("result")
        if not isinstance(addr, str) or not isinstance(code, str):
            return [ProbeResult(server, "", Outcome.ERROR, "bad response")]
        out.append(
            ProbeResult(server, addr[:MAX_ADDR_TEXT], _RESULT_OUTCOME.get(code, Outcome.ERROR), code[:20])
        )
    return out
