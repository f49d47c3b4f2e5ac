"""Circuit relay v2 and DCUtR for a meshnode host: reach nodes behind NAT.

Roles (run exactly ONE of :class:`RelayService` / :class:`RelayClient` per host:
both own the circuit STOP handler; stop one before starting the other)
    * :class:`RelayService` - a reachable node. Serves the relay "hop"
      protocol with small limits, and only to peers the node accepts
      (``may_reserve(peer_id)``: the node answers "is a member of one of my
      swarms"). Also accepts relayed connections ("stop") and dials through
      other relays (:meth:`RelayService.dial_via_relay`).
    * :class:`RelayClient` - a node behind NAT. Holds a reservation on each
      relay added with :meth:`RelayClient.add_relay`, refreshes it before it
      expires, re-reserves whenever the connection to the relay comes back
      (it redials the relay itself when given the relay's addresses), and
      reports the node's circuit addresses through ``on_change`` so the node
      can advertise them. With no relay added it is the plain dialler role.
    * :class:`DirectUpgrade` - DCUtR as a service (both ends of a relayed
      connection run it) so a relayed connection becomes a direct one.
    * :class:`ResubscribeNotifee` / :func:`resend_subscriptions` - keeps
      GossipSub talking both ways when one of a peer's connections closes.
    * :func:`peer_path` - "direct" / "relayed" for ``meshnode peers``.

Dialling only through a relay uses ``RelayConfig(roles=RelayRole.STOP)``: the
default CLIENT role makes libp2p's transport take a reservation slot on the
relay before every dial (PY-LIBP2P-NOTES "Relay v2"). Reservations are made by
:class:`RelayClient` itself, never by the transport.

Relay limits (:class:`RelayLimitsConfig`, defaults): at most 8 reservations,
each valid 15 min (refreshed by the client at half-life) and only while its
holder stays connected; at most 4 circuits per reservation; a circuit lasts
at most 5 min and carries at most 16 MiB (both directions together), then
both ends are reset - the node re-dials through the relay if DCUtR has not
given it a direct connection by then. A peer may ask for a reservation 5
times in a burst, then once per 20 s; open circuits 10 in a burst, then one
per 2 s. libp2p's own defaults are 1 h and 1 GiB per circuit, 4 reservations
held by anyone, and HopConfig's per-IP and rate limits are used nowhere.

What was broken in py-libp2p 0.8.1 and what this module does about it
(paths under ``libp2p/relay/circuit_v2/``):

1. The hop handler reserves for whatever peer id the RESERVE message names
   (``protocol.py:553-556``): any connected peer can take or refresh a slot
   in another peer's name. We clear that field, so the reservation is always
   for the authenticated remote peer, and refuse peers ``may_reserve``
   rejects with RESERVATION_REFUSED.
2. A reservation keeps its slot after its holder disconnects, until its TTL
   ends (``resources.py`` ``can_accept_reservation`` counts it), so peers
   that come and go fill the relay for an hour. Before each RESERVE we drop
   the reservations of peers no longer connected (the spec says a
   reservation only lives while connected).
3. The reservation error path calls ``stream.is_open()``, which NetStream
   does not have (``protocol.py:614``): the AttributeError replaced the
   CONNECTION_FAILED answer. We hand the handler a stream proxy with
   ``is_open()``.
4. The circuit duration limit is checked only when data moves
   (``protocol.py:847``): an idle circuit outlives it forever. Our data pump
   runs under a cancel scope with the circuit's deadline.
5. Two circuits to the same destination share one ``_active_relays`` entry
   (keyed by peer, ``protocol.py:722``), and the first circuit to end closes
   the streams of the second (``protocol.py:928-932``). Our pump closes only
   its own two streams.
6. The relayed connection's address names the LOCAL host as the relay
   (``protocol.py:470``; the listener at ``transport.py:1039`` has the same
   bug but is never started here). Our STOP handler names the peer that
   opened the STOP stream - the relay - and accepts STOP only from relays
   the node holds a reservation with (RelayClient).
7. Every normal end of a hop stream or circuit logs an ERROR on the relay
   (``protocol.py:291, 350, 924``), and the first circuit dial of a peer a
   WARNING (``transport.py:311``). A filter demotes those records to DEBUG.
8. ``host.connect`` refuses ``/p2p-circuit`` addresses and ``get_addrs()``
   never lists them, a reservation is never re-made after a reconnect and
   ``RelayDiscovery.make_reservation`` never refreshes (pitfall 33):
   :class:`RelayClient` does all of that.
9. DCUtR gives up for good after 3 attempts (``dcutr.py:60, 533``) unless
   the peer disconnects: :class:`DirectUpgrade` clears the attempt budget of
   peers still reached only through a relay every ``retry_interval``, a
   bounded number of rounds.
10. GossipSub goes silent one way when a relayed connection closes while a
    direct one stays (pitfall 34, ``pubsub/pubsub.py:1129-1133``):
    :class:`ResubscribeNotifee` re-sends our subscriptions ~1 s later.
11. On a private-network (pnet) host the listening side of a relayed
    connection applies the pnet key (``network/swarm.py:2101``) and the
    dialling side does not (``upgrade_outbound_raw_conn``; the key is applied
    only on the TCP dial path, ``swarm.py:1458``): every circuit dial in a
    private swarm hung. The dialler here applies it too.
12. DCUtR offers the NAT address it predicts from identify's observed-address
    manager only (``dcutr.py`` ``_get_observed_addrs``); on a private
    network's host that manager recorded nothing, so DCUtR offered the LAN
    address and no punch worked. :class:`DirectUpgrade` takes the node's own
    public addresses (from the AutoNAT answers) and offers those first.
13. On a pnet host, ``Swarm.dial_addr_as_responder`` (DCUtR's simultaneous
    open) applies the pnet layer twice (``network/swarm.py:1458`` and again
    in ``upgrade_inbound_raw_conn``, ``swarm.py:2101``): the punched TCP
    connection came up and its handshake always failed. DirectUpgrade makes
    that host's inbound upgrade apply it once.

Remaining quirks left alone: after a successful circuit dial libp2p stores
``<relay addr>/p2p-circuit/p2p/<peer>`` in the peer's peerstore entry for
good (``transport.py:_store_multiaddrs``) and tries those first on the next
circuit dial; :meth:`dial_via_relay` is bounded by its timeout either way.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork
from libp2p.connection_types import ConnectionType
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.dcutr import MAX_HOLE_PUNCH_ATTEMPTS, DCUtRProtocol
from libp2p.relay.circuit_v2.dcutr import MAX_OBSERVED_ADDRS as MAX_OBSERVED
from libp2p.relay.circuit_v2.exceptions import RelayConnectionError
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, StopMessage
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID, CircuitV2Protocol
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode, to_proto_status
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
from libp2p.security.pnet.protector import new_protected_conn
from libp2p.tools.anyio_service import background_trio_service
from libp2p.tools.constants import MAX_READ_LEN
from multiaddr import Multiaddr

from meshnode.addrs import rank as addrs_rank
from meshnode.errors import BadValue, NetworkError
from meshnode.protocols.host import close_stream, dial_addrs
from meshnode.protocols.host import dial as dial_peer
from meshnode.protocols.notifee import Notifee
from meshnode.ratelimit import KeyedRateLimit

log = logging.getLogger(__name__)

__all__ = [
    "HOP_PROTOCOL_ID",
    "STOP_PROTOCOL_ID",
    "DirectUpgrade",
    "RelayClient",
    "RelayLimitsConfig",
    "RelayService",
    "RelayStats",
    "ReservationStatus",
    "ResubscribeNotifee",
    "circuit_addr",
    "peer_path",
    "resend_subscriptions",
]

DEFAULT_DIAL_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 2.0
_STOP_READ_TIMEOUT = 10.0


# --- limits and counters -------------------------------------------------------


@dataclass(frozen=True)
class RelayLimitsConfig:
    """What a :class:`RelayService` grants (see the module docstring for the why)."""

    max_reservations: int = 8
    reservation_ttl: int = 900  # seconds; a reservation also ends when its holder disconnects
    max_circuits_per_reservation: int = 4
    circuit_duration: int = 300  # seconds per circuit, idle or not; 0 = unlimited
    circuit_bytes: int = 16 * 1024 * 1024  # both directions together; 0 = unlimited
    reserve_rate: float = 1 / 20  # RESERVE requests per second per peer ...
    reserve_burst: float = 5.0  # ... in bursts of this many
    connect_rate: float = 0.5  # CONNECT requests per second per dialling peer ...
    connect_burst: float = 10.0

    def to_libp2p(self) -> RelayLimits:
        return RelayLimits(
            duration=self.circuit_duration,
            data=self.circuit_bytes,
            max_circuit_conns=self.max_circuits_per_reservation,
            max_reservations=self.max_reservations,
            reservation_ttl=self.reservation_ttl,
        )


@dataclass
class RelayStats:
    """Counters of one host's relay activity."""

    reservations_granted: int = 0  # new or refreshed
    reservations_refused: int = 0  # may_reserve said no, rate limit, or full
    reservations_dropped: int = 0  # holder had disconnected: slot freed early
    circuits_requested: int = 0  # CONNECT requests received as a relay
    circuits_refused: int = 0  # refused by may_connect or the rate limit
    circuits_cut: int = 0  # ended by the duration or byte limit
    bytes_relayed: int = 0
    stop_accepted: int = 0  # relayed connections accepted (we are the target)
    stop_refused: int = 0


# --- log noise (bug 7) -------------------------------------------------------------

_NOISE = (
    "Error reading from hop stream",
    "Timeout reading from hop stream",
    "Unexpected error reading from stream",
    "Unexpected error handling hop stream",
    "Error relaying data",
    "Error sending status message",
    "Failed to send error response",
    "Source stream closed",
    "Failed to fetch stored addresses",  # transport.py:311, every first dial of a peer
)


class _DemoteRelayNoise(logging.Filter):
    """Turns libp2p's ERROR on every normal end of a hop stream into DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and str(record.msg).startswith(_NOISE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


for _name in ("libp2p.relay.circuit_v2.protocol", "libp2p.relay.circuit_v2.transport"):
    _noisy = logging.getLogger(_name)
    if not any(isinstance(f, _DemoteRelayNoise) for f in _noisy.filters):
        _noisy.addFilter(_DemoteRelayNoise())


# --- addresses -----------------------------------------------------------------------


def circuit_addr(relay: ID, target: ID, relay_addr: Multiaddr | None = None) -> Multiaddr:
    """``[<relay addr>]/p2p/<relay>/p2p-circuit/p2p/<target>``."""
    base = f"/p2p/{relay.to_base58()}"
    if relay_addr is not None:
        text = str(_strip_p2p(relay_addr))
        base = f"{text}{base}" if text not in ("", "/") else base
    return Multiaddr(f"{base}/p2p-circuit/p2p/{target.to_base58()}")


def _strip_p2p(addr: Multiaddr) -> Multiaddr:
    """``addr`` without any ``/p2p/<id>`` part."""
    parts = [p for p in str(addr).split("/p2p/")]
    head = parts[0]
    # "/ip4/1.2.3.4/tcp/1/p2p/X" -> "/ip4/1.2.3.4/tcp/1"; "/p2p/X" -> ""
    return Multiaddr(head) if head not in ("", "/") else Multiaddr("/")


def _parse_circuit(addr: Multiaddr | str, expected_peer: ID | None) -> tuple[ID, Multiaddr | None, ID]:
    """(relay id, relay transport address or None, target id) of a circuit address."""
    text = str(addr)
    if "/p2p-circuit" not in text:
        raise BadValue(f"not a circuit address: {text!r}; expected …/p2p/<relay>/p2p-circuit/p2p/<peer>")
    relay_part, _, target_part = text.partition("/p2p-circuit")
    try:
        target = ID.from_base58(target_part.removeprefix("/p2p/").strip("/"))
        relay_text, sep, relay_id_text = relay_part.rpartition("/p2p/")
        if not sep:
            raise ValueError("no relay peer id")
        relay = ID.from_base58(relay_id_text)
        transport = Multiaddr(relay_text) if relay_text else None
    except Exception:
        raise BadValue(
            f"not a circuit address: {text!r}; expected [/ip4/…/tcp/…]/p2p/<relay>/p2p-circuit/p2p/<peer>"
        ) from None
    if expected_peer is not None and target != expected_peer:
        raise BadValue(f"circuit address {text!r} leads to {target}, not to {expected_peer}")
    return relay, transport, target


def _is_relayed(conn: INetConn) -> bool:
    try:
        if conn.get_connection_type() == ConnectionType.RELAYED:
            return True
    except Exception:
        pass
    actual = getattr(conn, "_actual_transport_addresses", None) or []
    return any("/p2p-circuit" in str(a) for a in actual)


def peer_path(host: IHost, peer_id: ID) -> str | None:
    """How we reach ``peer_id`` now: "direct", "relayed", or None when not connected.

    "direct" as soon as one connection to the peer is not relayed.
    """
    try:
        conns = host.get_network().get_connections(peer_id)
    except Exception:
        return None
    if not conns:
        return None
    return "relayed" if all(_is_relayed(c) for c in conns) else "direct"


def _relay_of(conn: INetConn) -> ID | None:
    """The relay a relayed connection runs through (from its circuit address)."""
    for addr in getattr(conn, "_actual_transport_addresses", None) or []:
        try:
            return _parse_circuit(addr, None)[0]
        except BadValue:
            continue
    return None


# --- the circuit protocol, fixed ----------------------------------------------------


class _StreamWithIsOpen:
    """A stream proxy adding the ``is_open()`` libp2p's reserve handler calls (bug 3)."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream

    def is_open(self) -> bool:
        try:
            return not self._stream.is_closed()  # type: ignore[attr-defined]
        except Exception:
            return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Circuit(CircuitV2Protocol):
    """libp2p's CircuitV2Protocol with meshnode's gates and the fixes in the module docstring."""

    def __init__(
        self,
        host: IHost,
        *,
        hop: bool,
        limits: RelayLimitsConfig,
        stats: RelayStats,
        may_reserve: Callable[[ID], bool] | None = None,
        may_connect: Callable[[ID, ID], bool] | None = None,
        accept_stop_from: Callable[[ID], bool] | None = None,
    ) -> None:
        super().__init__(host, limits=limits.to_libp2p(), allow_hop=hop)
        self._config = limits
        self.stats = stats
        self._may_reserve = may_reserve
        self._may_connect = may_connect
        self._accept_stop_from = accept_stop_from
        self._reserve_rate = KeyedRateLimit(rate=limits.reserve_rate, burst=limits.reserve_burst)
        self._connect_rate = KeyedRateLimit(rate=limits.connect_rate, burst=limits.connect_burst)
        self._cut: set[frozenset[int]] = set()

    # hop: RESERVE ------------------------------------------------------------

    async def _handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        peer = stream.muxed_conn.peer_id
        if not self._reserve_allowed(peer):
            self.stats.reservations_refused += 1
            await self._answer(stream, StatusCode.RESERVATION_REFUSED)
            return
        self._drop_disconnected_reservations()
        msg.ClearField("peer")  # bug 1: reserve for the authenticated peer only
        await super()._handle_reserve(_StreamWithIsOpen(stream), msg)  # type: ignore[arg-type]
        if self.resource_manager.get_reservation(peer) is not None:
            self.stats.reservations_granted += 1
        else:
            self.stats.reservations_refused += 1

    def _reserve_allowed(self, peer: ID) -> bool:
        try:
            if self._may_reserve is None or not self._may_reserve(peer):
                return False
        except Exception as exc:  # the node's callback must not break the handler
            log.debug("may_reserve(%s) raised %r", peer, exc)
            return False
        return self._reserve_rate.allow(peer, time.monotonic())

    def _drop_disconnected_reservations(self) -> None:
        """Bug 2: free the slots of reservation holders that are gone."""
        try:
            table = self.resource_manager._reservations
            network = self.host.get_network()
            for peer in list(table):
                if not network.get_connections(peer):
                    del table[peer]
                    self.stats.reservations_dropped += 1
        except Exception as exc:
            log.debug("dropping stale reservations failed: %r", exc)

    # hop: CONNECT ------------------------------------------------------------

    async def _handle_connect(self, stream: INetStream, msg: HopMessage) -> None:
        self.stats.circuits_requested += 1
        source = stream.muxed_conn.peer_id
        try:
            target = ID(msg.peer.id)
        except Exception:
            self.stats.circuits_refused += 1
            await self._answer(stream, StatusCode.MALFORMED_MESSAGE, reset=True)
            return
        allowed = True
        try:
            if self._may_connect is not None and not self._may_connect(source, target):
                allowed = False
        except Exception as exc:
            log.debug("may_connect raised %r", exc)
            allowed = False
        if not allowed:
            self.stats.circuits_refused += 1
            await self._answer(stream, StatusCode.PERMISSION_DENIED, reset=True)
            return
        if not self._connect_rate.allow(source, time.monotonic()):
            self.stats.circuits_refused += 1
            await self._answer(stream, StatusCode.RESOURCE_LIMIT_EXCEEDED, reset=True)
            return
        await super()._handle_connect(stream, msg)

    async def _relay_data(
        self,
        src_stream: INetStream,
        dst_stream: INetStream,
        peer_id: ID,
        deadline: float | None = None,
        circuit_data_limit: list[int] | None = None,
    ) -> None:
        """One direction of a circuit (bugs 4 and 5): bounded in time and bytes."""
        remaining = math.inf if deadline is None else max(0.0, deadline - time.monotonic())
        cut = False
        half_close = False
        with trio.move_on_after(remaining) as scope:
            while True:
                try:
                    data = await src_stream.read(MAX_READ_LEN)
                except Exception:
                    break
                if not data:
                    half_close = True
                    break
                if circuit_data_limit is not None:
                    if len(data) > circuit_data_limit[0]:
                        cut = True
                        break
                    circuit_data_limit[0] -= len(data)
                try:
                    with trio.fail_after(self.write_timeout):
                        await dst_stream.write(data)
                except Exception:
                    break
                self.stats.bytes_relayed += len(data)
        cut = cut or scope.cancelled_caught
        if cut:  # both directions see a deadline: count the circuit once
            key = frozenset((id(src_stream), id(dst_stream)))
            if key in self._cut:
                self._cut.discard(key)
            else:
                if len(self._cut) > 1024:
                    self._cut.clear()
                self._cut.add(key)
                self.stats.circuits_cut += 1
                log.info("relay: circuit to %s cut at its limit", peer_id)
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
            if half_close:
                try:
                    await dst_stream.close()  # pass the EOF on; the other direction ends by itself
                except Exception:
                    pass
            else:
                for s in (src_stream, dst_stream):
                    try:
                        await s.reset()
                    except Exception:
                        pass
        for k, pair in list(self._active_relays.items()):
            if src_stream in pair or dst_stream in pair:
                self._active_relays.pop(k, None)

    async def _answer(self, stream: INetStream, code: StatusCode, *, reset: bool = False) -> None:
        """Send a hop STATUS (bounded, never raises), optionally reset the stream after."""
        try:
            with trio.move_on_after(_CLOSE_TIMEOUT):
                await write_delimited_msg(
                    stream, HopMessage(type=HopMessage.STATUS, status=to_proto_status(code))
                )
                if reset:
                    await trio.sleep(0.2)  # let the peer read the STATUS before the reset
            if reset:
                await stream.reset()
        except Exception:
            pass

    # stop ----------------------------------------------------------------------

    async def _handle_stop_stream(self, stream: INetStream) -> None:
        """A relay connects a peer to us (bug 6: name the real relay). Never raises."""
        try:
            relay = stream.muxed_conn.peer_id
            with trio.fail_after(_STOP_READ_TIMEOUT):
                stop_msg = await read_delimited_msg(stream, StopMessage)
            allowed = True
            if self._accept_stop_from is not None:
                try:
                    allowed = bool(self._accept_stop_from(relay))
                except Exception:
                    allowed = False
            if stop_msg.type != StopMessage.CONNECT or not allowed:
                self.stats.stop_refused += 1
                code = StatusCode.PERMISSION_DENIED if allowed is False else StatusCode.UNEXPECTED_MESSAGE
                with trio.move_on_after(_CLOSE_TIMEOUT):
                    await write_delimited_msg(
                        stream, StopMessage(type=StopMessage.STATUS, status=to_proto_status(code))
                    )
                await stream.reset()
                return
            source = ID(stop_msg.peer.id)
            with trio.fail_after(_STOP_READ_TIMEOUT):
                await write_delimited_msg(
                    stream, StopMessage(type=StopMessage.STATUS, status=to_proto_status(StatusCode.OK))
                )
            addr = circuit_addr(relay, source)
            raw = RawConnection(
                stream=stream, initiator=False, connection_type=ConnectionType.RELAYED, addresses=[addr]
            )
            with trio.fail_after(_STOP_READ_TIMEOUT):
                muxed = await self.host.upgrade_inbound_connection(raw, addr)
            for conn in self.host.get_network().get_connections(source):
                if getattr(conn, "muxed_conn", None) is muxed:
                    conn.set_transport_info([addr], ConnectionType.RELAYED)  # type: ignore[attr-defined]
            self.stats.stop_accepted += 1
        except Exception as exc:
            self.stats.stop_refused += 1
            log.debug("relayed connection refused: %r", exc)
            try:
                with trio.move_on_after(_CLOSE_TIMEOUT):
                    await stream.reset()
            except Exception:
                pass

    # service ---------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            if self.allow_hop:
                self.host.set_stream_handler(HOP_PROTOCOL_ID, self._handle_hop_stream)
            self.host.set_stream_handler(STOP_PROTOCOL_ID, self._handle_stop_stream)
            self.event_started.set()
            task_status.started()
            await self.manager.wait_finished()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
                for src, dst in list(self._active_relays.values()):
                    for s in (src, dst):
                        if s is not None:
                            try:
                                await s.reset()
                            except Exception:
                                pass
            self._active_relays.clear()
            for pid in (HOP_PROTOCOL_ID, STOP_PROTOCOL_ID) if self.allow_hop else (STOP_PROTOCOL_ID,):
                try:
                    self.host.remove_stream_handler(pid)
                except Exception:
                    pass


# --- dialling through a relay ------------------------------------------------------------


class _CircuitDialer:
    """Dials ``…/p2p/<relay>/p2p-circuit/p2p/<peer>`` with the transport in STOP role (no reservation)."""

    def __init__(self, host: IHost, protocol: CircuitV2Protocol) -> None:
        self._host = host
        self._transport = CircuitV2Transport(host, protocol, RelayConfig(roles=RelayRole.STOP))

    async def dial(self, peer_id: ID, addr: Multiaddr | str, timeout: float) -> INetConn:
        relay, relay_transport, _ = _parse_circuit(addr, peer_id)
        if relay == self._host.get_id():
            raise BadValue("that circuit runs through this node itself")
        if peer_id == self._host.get_id():
            raise BadValue("that address is this node itself")
        existing = self._host.get_network().get_connections(peer_id)
        if existing:
            return existing[0]
        deadline = trio.current_time() + timeout
        network = self._host.get_network()
        if not network.get_connections(relay):
            if relay_transport is None:
                raise NetworkError(
                    f"cannot reach {peer_id} through relay {relay}: not connected to the relay and the"
                    " address gives no way to reach it (use <relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>)"
                )
            await dial_peer(self._host, PeerInfo(relay, [relay_transport]), timeout=timeout)
        target = circuit_addr(relay, peer_id, relay_transport)
        try:
            with trio.fail_after(max(0.1, deadline - trio.current_time())):
                return await self._dial_circuit(target, relay, peer_id)
        except trio.TooSlowError:
            raise NetworkError(
                f"could not reach {peer_id} through relay {relay} within {timeout:.0f} s"
            ) from None
        except RelayConnectionError as exc:
            raise NetworkError(
                f"relay {relay} would not connect us to {peer_id}: {_status_text(exc)}"
            ) from None
        except Exception as exc:
            cause = exc.__cause__ or exc.__context__
            detail = _status_text(cause) if isinstance(cause, RelayConnectionError) else str(exc)
            raise NetworkError(f"could not reach {peer_id} through relay {relay}: {detail}") from None

    async def _dial_circuit(self, target: Multiaddr, relay: ID, peer_id: ID) -> INetConn:
        """``CircuitV2Transport.dial``, plus the private-network layer on a pnet host.

        libp2p applies the pnet key to a relayed connection on the listening
        side (``upgrade_inbound_raw_conn``) but not on the dialling side
        (``upgrade_outbound_raw_conn`` leaves it to the TCP dial path), so in a
        private swarm every circuit dial hung until its timeout (bug 11).
        """
        relay_maddr, _dest = self._transport.parse_circuit_ma(target)
        raw = await self._transport.dial_peer_info(
            dest_info=PeerInfo(peer_id, [target]),
            relay_info=PeerInfo(relay, [relay_maddr] if relay_maddr is not None else []),
        )
        psk = getattr(self._host.get_network(), "psk", None)
        if psk is not None:
            raw = new_protected_conn(raw, psk)
        conn = await self._host.upgrade_outbound_connection(raw, peer_id)
        try:  # so peer_path() and `meshnode peers` see it as relayed, as on the listening side
            conn.set_transport_info([target], ConnectionType.RELAYED)  # type: ignore[attr-defined]
        except Exception:
            pass
        return conn


_STATUS_TEXT = {
    StatusCode.NO_RESERVATION: "it holds no reservation there",
    StatusCode.PERMISSION_DENIED: "the relay refused us",
    StatusCode.RESOURCE_LIMIT_EXCEEDED: "the relay is at its limits",
    StatusCode.RESERVATION_REFUSED: "the relay refused the reservation",
    StatusCode.CONNECTION_FAILED: "the relay could not reach it",
    StatusCode.MALFORMED_MESSAGE: "the relay did not understand the request",
}


def _status_text(exc: BaseException) -> str:
    code = getattr(exc, "status_code", None)
    if not isinstance(code, int):
        return str(exc)
    try:
        return f"{_STATUS_TEXT.get(StatusCode(code), 'refused')} ({StatusCode(code).name})"
    except Exception:
        return str(exc)


# --- the reachable node: RelayService ----------------------------------------------------


class RelayService:
    """Relay (hop) for members, plus relayed connections in (stop) and dialling through relays.

    ``may_reserve(peer_id)`` decides who gets a reservation (the node answers
    "is a member of one of my swarms"); ``may_connect(source, target)``, when
    given, who may open a circuit (default: anyone, to a peer holding a
    reservation). Both are called on libp2p's handler path: keep them quick;
    an exception counts as "no".
    """

    def __init__(
        self,
        host: IHost,
        may_reserve: Callable[[ID], bool],
        *,
        limits: RelayLimitsConfig | None = None,
        may_connect: Callable[[ID, ID], bool] | None = None,
    ) -> None:
        self.host = host
        self.limits = limits or RelayLimitsConfig()
        self.stats = RelayStats()
        self._protocol = _Circuit(
            host,
            hop=True,
            limits=self.limits,
            stats=self.stats,
            may_reserve=may_reserve,
            may_connect=may_connect,
        )
        self._dialer = _CircuitDialer(host, self._protocol)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve hop and stop until cancelled."""
        async with background_trio_service(self._protocol):
            await self._protocol.event_started.wait()
            task_status.started()
            await trio.sleep_forever()

    def reservation_holders(self) -> list[ID]:
        """Peers holding a live reservation on this relay (connected, not expired)."""
        rm = self._protocol.resource_manager
        return [p for p in list(rm._reservations) if rm.get_reservation(p) is not None]

    async def dial_via_relay(
        self, peer_id: ID, circuit_addr: Multiaddr | str, *, timeout: float = DEFAULT_DIAL_TIMEOUT
    ) -> INetConn:
        """See :meth:`RelayClient.dial_via_relay`."""
        return await self._dialer.dial(peer_id, circuit_addr, timeout)


# --- the node behind NAT: RelayClient -----------------------------------------------------


@dataclass(frozen=True)
class ReservationStatus:
    """One relay as seen by a :class:`RelayClient`."""

    relay: str  # peer id
    state: str  # "connecting" | "reserving" | "active" | "refused" | "waiting"
    expires_at: float | None = None  # wall clock (relay's answer), while active
    reservations: int = 0  # successful RESERVE exchanges (first one and refreshes)
    losses: int = 0  # times an active reservation was lost (relay disconnected)
    reason: str = ""
    circuit_addrs: tuple[str, ...] = ()


@dataclass
class _Relay:
    peer: ID
    addrs: tuple[Multiaddr, ...]
    scope: trio.CancelScope
    status: ReservationStatus


class _ConnectionWatch(Notifee):
    """Wakes the keepers on every connect/disconnect (a fresh event per change)."""

    def __init__(self) -> None:
        self.changed = trio.Event()

    def _poke(self) -> None:
        old, self.changed = self.changed, trio.Event()
        old.set()

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._poke()
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._poke()
        await trio.lowlevel.checkpoint()


class RelayClient:
    """Reservations on relays for a node behind NAT; relayed connections in; dialling out.

    ``on_change(addrs)`` is called (synchronously, on the trio thread) with the
    full list of :meth:`circuit_addrs` whenever it changes: put them in the
    host's ``addrs_factory`` so identify advertises them (``get_addrs()``
    never includes them). Exceptions from it are logged, not raised.

    Refresh: at ``refresh_fraction`` of the reservation's remaining life (half
    by default). After a refused or failed RESERVE, or while the relay is
    unreachable, it retries after ``retry_interval`` doubling up to
    ``max_retry_interval``; a (re)connection to the relay retries at once.
    """

    def __init__(
        self,
        host: IHost,
        *,
        on_change: Callable[[list[Multiaddr]], None] | None = None,
        reserve_timeout: float = 10.0,
        dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
        refresh_fraction: float = 0.5,
        retry_interval: float = 5.0,
        max_retry_interval: float = 120.0,
    ) -> None:
        self.host = host
        self.stats = RelayStats()
        self._on_change = on_change
        self._reserve_timeout = reserve_timeout
        self._dial_timeout = dial_timeout
        self._refresh_fraction = min(max(refresh_fraction, 0.1), 0.9)
        self._retry_interval = retry_interval
        self._max_retry_interval = max_retry_interval
        self._relays: dict[ID, _Relay] = {}
        self._published: list[Multiaddr] = []
        self._watch = _ConnectionWatch()
        self._nursery: trio.Nursery | None = None
        self._protocol = _Circuit(
            host,
            hop=False,
            limits=RelayLimitsConfig(),
            stats=self.stats,
            accept_stop_from=lambda relay: relay in self._relays,
        )
        self._dialer = _CircuitDialer(host, self._protocol)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept relayed connections and keep reservations until cancelled."""
        network = self.host.get_network()
        network.register_notifee(self._watch)
        try:
            async with background_trio_service(self._protocol), trio.open_nursery() as nursery:
                await self._protocol.event_started.wait()
                self._nursery = nursery
                for relay in list(self._relays.values()):
                    self._start_keeper(relay)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            try:
                network.remove_notifee(self._watch)  # type: ignore[attr-defined]
            except Exception:
                pass

    # relays ------------------------------------------------------------------------

    def add_relay(self, relay: ID, addrs: Sequence[Multiaddr] = ()) -> None:
        """Keep a reservation on ``relay``; idempotent (new ``addrs`` replace the old).

        With ``addrs`` the client redials the relay itself whenever the
        connection drops; without, it waits for the node to connect it.
        """
        if relay == self.host.get_id():
            raise BadValue("a node cannot be its own relay")
        known = self._relays.get(relay)
        if known is not None:
            known.addrs = tuple(addrs) or known.addrs
            return
        entry = _Relay(
            relay, tuple(addrs), trio.CancelScope(), ReservationStatus(relay.to_base58(), "connecting")
        )
        self._relays[relay] = entry
        if self._nursery is not None:
            self._start_keeper(entry)

    def remove_relay(self, relay: ID) -> None:
        """Stop keeping a reservation on ``relay`` (it expires on the relay by itself)."""
        entry = self._relays.pop(relay, None)
        if entry is not None:
            entry.scope.cancel()
            self._publish()

    def reservations(self) -> list[ReservationStatus]:
        return [r.status for r in self._relays.values()]

    def circuit_addrs(self) -> list[Multiaddr]:
        """This node's circuit addresses through every relay holding an active reservation.

        For each relay: ``/p2p/<relay>/p2p-circuit/p2p/<self>`` and, for each
        address the relay reported, ``<relay addr>/p2p/<relay>/p2p-circuit/p2p/<self>``.
        """
        out: list[Multiaddr] = []
        for entry in self._relays.values():
            if entry.status.state == "active":
                out.extend(Multiaddr(a) for a in entry.status.circuit_addrs)
        return out

    async def dial_via_relay(
        self, peer_id: ID, circuit_addr: Multiaddr | str, *, timeout: float = DEFAULT_DIAL_TIMEOUT
    ) -> INetConn:
        """Connect to ``peer_id`` through the relay named in ``circuit_addr``.

        ``circuit_addr`` is ``[<relay addr>]/p2p/<relay>/p2p-circuit/p2p/<peer>``;
        the relay is dialled first when not connected (which needs the relay
        address part). Returns the existing connection when already connected
        to the peer. Raises :class:`NetworkError` (unreachable, refused, no
        reservation, ``timeout`` seconds passed) or :class:`BadValue`.
        """
        return await self._dialer.dial(peer_id, circuit_addr, timeout)

    # keeper --------------------------------------------------------------------------

    def _start_keeper(self, entry: _Relay) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._keep, entry)

    def _set(self, entry: _Relay, **changes: Any) -> None:
        entry.status = replace(entry.status, **changes)
        self._publish()

    def _publish(self) -> None:
        addrs = self.circuit_addrs()
        if [str(a) for a in addrs] == [str(a) for a in self._published]:
            return
        self._published = addrs
        if self._on_change is not None:
            try:
                self._on_change(list(addrs))
            except Exception as exc:
                log.warning("relay on_change callback failed: %r", exc)

    def _connected(self, relay: ID) -> bool:
        return any(not _is_relayed(c) for c in self.host.get_network().get_connections(relay))

    async def _wait(self, seconds: float, until: Callable[[], bool]) -> None:
        """Sleep ``seconds`` or until a connection change makes ``until()`` true."""
        with trio.move_on_after(max(0.0, seconds)):
            while True:
                event = self._watch.changed
                if until():
                    return
                await event.wait()

    async def _keep(self, entry: _Relay) -> None:
        relay = entry.peer
        backoff = self._retry_interval
        with entry.scope:
            while True:
                if not self._connected(relay):
                    lost = entry.status.state == "active"
                    self._set(
                        entry,
                        state="connecting",
                        expires_at=None,
                        circuit_addrs=(),
                        losses=entry.status.losses + (1 if lost else 0),
                        reason="not connected to the relay",
                    )
                    if entry.addrs:
                        try:
                            # One address at a time, public first, each with its own share: libp2p
                            # would dial only the first TCP address of its peerstore (pitfall 30),
                            # which another dialler may have left on a LAN address of another home,
                            # and hold the swarm's one dial slot for this peer (which the address
                            # book's redial waits on) for the whole timeout.
                            ranked = sorted((str(a) for a in entry.addrs), key=addrs_rank)
                            await dial_addrs(self.host, relay, ranked, timeout=self._dial_timeout)
                        except Exception as exc:
                            self._set(entry, reason=f"relay unreachable: {exc}")
                    if not self._connected(relay):
                        await self._wait(backoff, lambda: self._connected(relay))
                        backoff = min(backoff * 2, self._max_retry_interval)
                        continue
                if entry.status.state != "active":
                    self._set(entry, state="reserving")
                try:
                    expires, relay_addrs = await self._reserve_once(relay)
                except _Refused as exc:
                    self._set(entry, state="refused", expires_at=None, circuit_addrs=(), reason=str(exc))
                    await self._wait(backoff, lambda: not self._connected(relay))
                    backoff = min(backoff * 2, self._max_retry_interval)
                    continue
                backoff = self._retry_interval
                me = self.host.get_id()
                addrs = [str(circuit_addr(relay, me))]
                addrs += [str(circuit_addr(relay, me, a)) for a in relay_addrs]
                self._set(
                    entry,
                    state="active",
                    expires_at=expires,
                    reservations=entry.status.reservations + 1,
                    reason="",
                    circuit_addrs=tuple(dict.fromkeys(addrs)),
                )
                life = max(0.0, expires - time.time())
                await self._wait(max(0.5, life * self._refresh_fraction), lambda: not self._connected(relay))

    async def _reserve_once(self, relay: ID) -> tuple[float, list[Multiaddr]]:
        """One RESERVE exchange: (expiry, relay addresses), or raise :class:`_Refused`."""
        stream: INetStream | None = None
        try:
            with trio.fail_after(self._reserve_timeout):
                stream = await self.host.new_stream(relay, [HOP_PROTOCOL_ID])
                await write_delimited_msg(stream, HopMessage(type=HopMessage.RESERVE))
                resp = await read_delimited_msg(stream, HopMessage)
        except trio.TooSlowError:
            raise _Refused(f"no answer from the relay within {self._reserve_timeout:.0f} s") from None
        except Exception as exc:
            raise _Refused(f"reservation failed: {exc or type(exc).__name__}") from None
        finally:
            if stream is not None:
                await close_stream(stream, timeout=_CLOSE_TIMEOUT)
        code = StatusCode(resp.status) if resp.HasField("status") else StatusCode.UNUSED
        if resp.type != HopMessage.STATUS or code != StatusCode.OK:
            text = _STATUS_TEXT.get(code, "refused") if code != StatusCode.OK else "unexpected answer"
            raise _Refused(f"relay refused the reservation: {text} ({code.name})")
        expires = float(resp.reservation.expire) if resp.HasField("reservation") else 0.0
        if expires <= time.time():
            expires = time.time() + 2 * self._retry_interval  # no usable expiry: refresh soon
        addrs: list[Multiaddr] = []
        for raw in list(resp.reservation.addrs)[:8]:
            try:
                addr = Multiaddr(bytes(raw))
                if "/p2p-circuit" not in str(addr):
                    addrs.append(_strip_p2p(addr))
            except Exception:
                continue
        return expires, addrs


class _Refused(Exception):
    pass


# --- DCUtR ------------------------------------------------------------------------------


class DirectUpgrade:
    """DCUtR as a service: relayed connections become direct where NATs allow it.

    Run it on both ends (every node). libp2p's DCUtR (``DCUtRProtocol``) drives
    a hole punch for any peer reached only through a relay, but stops for good
    after 3 attempts (bug 9). Every ``retry_interval`` seconds this service
    clears the attempt budget of peers still reached only through a relay,
    at most ``max_rounds`` times per peer (reset when the peer disconnects
    completely), so a peer behind a NAT that was busy gets another chance
    without punching forever.

    ``dial_timeout`` bounds each of DCUtR's dials (libp2p's default is 10 s).
    It matters: DCUtR first tries a plain dial of the peer's known addresses
    (its "unilateral upgrade"), and a home peer's LAN address behind a router
    that silently drops the SYN costs the whole timeout before the hole punch
    starts. Measured in the NAT lab (tests/netlab.py, routers that drop):
    relayed -> direct in 11.4 s with 10 s, 6.5 s with 5 s, 4.5 s with 3 s
    (the default here; ~2 s of it is DCUtR's auto-drive tick).
    """

    def __init__(
        self,
        host: IHost,
        *,
        retry_interval: float = 120.0,
        max_rounds: int = 5,
        dial_timeout: int = 3,
        public_addrs: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self.host = host
        self.retry_interval = retry_interval
        self.max_rounds = max_rounds
        self.dcutr = DCUtRProtocol(host, dial_timeout=dial_timeout)
        self.retries = 0
        self._rounds: dict[ID, int] = {}
        if public_addrs is not None:
            self._use_public_addrs(public_addrs)
        _pnet_once_on_responder_dials(host)

    def _use_public_addrs(self, public_addrs: Callable[[], Sequence[str]]) -> None:
        """Offer ``public_addrs()`` (e.g. our router's address at our listen port) in DCUtR's CONNECT.

        DCUtR predicts our NAT address only from identify's observed-address
        manager (``dcutr.py`` ``_get_observed_addrs``), which on a private
        network's host recorded nothing, so it offered our LAN address and the
        punch never worked (bug 12). The node knows the public IP its peers see
        (the AutoNAT dial-back answers): those addresses go first.
        """
        original = self.dcutr._get_observed_addrs

        async def observed_addrs() -> list[bytes]:
            out: list[bytes] = []
            try:
                for text in public_addrs():
                    addr = Multiaddr(text)
                    if addr.to_bytes() not in out:
                        out.append(addr.to_bytes())
            except Exception as exc:
                log.debug("dcutr: public addresses unavailable: %r", exc)
            if not out:
                return await original()
            return out[:MAX_OBSERVED]

        self.dcutr._get_observed_addrs = observed_addrs  # type: ignore[method-assign]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with background_trio_service(self.dcutr):
            await self.dcutr.event_started.wait()
            task_status.started()
            while True:
                await trio.sleep(self.retry_interval)
                self.retry_round()

    def retry_round(self) -> list[ID]:
        """Give exhausted peers still only relayed another DCUtR budget; return them."""
        attempts = self.dcutr._hole_punch_attempts
        retried = []
        for peer in list(self._rounds):
            if peer_path(self.host, peer) is None:
                del self._rounds[peer]
        for peer, count in list(attempts.items()):
            if count < MAX_HOLE_PUNCH_ATTEMPTS or peer_path(self.host, peer) != "relayed":
                continue
            if self._rounds.get(peer, 0) >= self.max_rounds:
                continue
            self._rounds[peer] = self._rounds.get(peer, 0) + 1
            attempts.pop(peer, None)
            retried.append(peer)
            self.retries += 1
        return retried


def _pnet_once_on_responder_dials(host: IHost) -> None:
    """Bug 13: on a pnet host, a hole-punch dial made as responder gets the pnet layer twice.

    ``Swarm.dial_addr_as_responder`` wraps the raw connection in the pnet
    layer (``network/swarm.py:1458``) and then upgrades it with
    ``upgrade_inbound_raw_conn``, which wraps it again (``swarm.py:2101``): the
    punched TCP connection was established and then every handshake on it
    failed. On this host's swarm only, an inbound upgrade of a connection
    that is already wrapped (and has not been used yet) unwraps it first, so
    the layer is applied exactly once. Installed only on pnet hosts.
    """
    from libp2p.security.pnet.psk_conn import PskConn

    swarm = host.get_network()
    if getattr(swarm, "psk", None) is None or getattr(swarm, "_meshnode_pnet_once", False):
        return
    original = swarm.upgrade_inbound_raw_conn

    async def upgrade_inbound_raw_conn(raw_conn: Any, maddr: Multiaddr) -> Any:
        if isinstance(raw_conn, PskConn) and getattr(raw_conn, "read_cipher", None) is None:
            inner = getattr(raw_conn, "_conn", None)
            if inner is not None and getattr(raw_conn, "write_cipher", None) is None:
                raw_conn = inner
        return await original(raw_conn, maddr)

    swarm.upgrade_inbound_raw_conn = upgrade_inbound_raw_conn  # type: ignore[method-assign]
    swarm._meshnode_pnet_once = True  # type: ignore[attr-defined]


# --- GossipSub after a connection switch (pitfall 34) --------------------------------------


def resend_subscriptions(pubsub: Any, peer: ID) -> bool:
    """Push our subscriptions to ``peer`` again, ahead of other traffic.

    Returns False when pubsub has no outbound queue for the peer (yet) or the
    queue is full. Never raises.
    """
    try:
        queue = pubsub.peer_queues.get(peer)
        if queue is None:
            return False
        return bool(queue.push(pubsub.get_hello_packet(), priority=True))
    except Exception as exc:
        log.debug("resending subscriptions to %s failed: %r", peer, exc)
        return False


class ResubscribeNotifee(Notifee):
    """When one of a peer's connections closes and another remains, resend our subscriptions.

    Works around pitfall 34: libp2p pubsub forgets a peer's subscriptions when
    the stream on the closed connection dies, possibly after the peer's new
    announcement arrived on the remaining connection, and the peer is then
    silent to us one way. Both ends running this notifee re-announce after
    ``delay`` seconds (retrying up to ``attempts`` times while pubsub has not
    re-registered the peer). Install with::

        notifee = ResubscribeNotifee(gossip.pubsub, nursery)
        host.get_network().register_notifee(notifee)
    """

    def __init__(self, pubsub: Any, nursery: trio.Nursery, *, delay: float = 1.0, attempts: int = 5) -> None:
        self.pubsub = pubsub
        self._nursery = nursery
        self.delay = delay
        self.attempts = attempts
        self.resent = 0
        self._pending: set[ID] = set()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        try:
            peer = conn.muxed_conn.peer_id
            if network.get_connections(peer) and peer not in self._pending:
                self._pending.add(peer)
                self._nursery.start_soon(self._resend, network, peer)
        except Exception as exc:  # a notifee must never raise into libp2p
            log.debug("resubscribe notifee: %r", exc)
        await trio.lowlevel.checkpoint()

    async def _resend(self, network: INetwork, peer: ID) -> None:
        try:
            for _ in range(self.attempts):
                await trio.sleep(self.delay)
                if not network.get_connections(peer):
                    return
                if resend_subscriptions(self.pubsub, peer):
                    self.resent += 1
                    return
        finally:
            self._pending.discard(peer)
