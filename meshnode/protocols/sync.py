"""The sync protocol ``/meshnode/sync/1``: catch up on a swarm's records with one peer.

Gossip carries only what is published while a node listens (and py-libp2p
drops messages under load, pitfall 7); a newcomer, a node back from offline
or the two halves of a healed partition converge through this protocol.
The wire format, the flow, the limits and what happens on misbehaviour are
specified in ``docs/sync-protocol.md``; in short:

1. the initiator opens a stream and sends ``HELLO`` (version, swarm id, its
   first reconciliation message); the responder refuses swarms it has not
   joined (``REFUSE``);
2. both run range-based set reconciliation (:mod:`meshnode.reconcile`) over
   their :class:`~meshnode.syncindex.SyncIndex` of the swarm until both know
   the exact difference (each side learns what it *has* that the peer lacks
   and what it *needs*);
3. each side sends ``NOTWANT``: the ids of its need that it would refuse
   (pruned here), then *pushes* the rest of what the peer lacks in
   ``RECORDS`` frames and ends with ``END``. Pushing instead of requesting
   saves the 32 bytes per id a request would cost: reconciliation already
   told the receiver exactly which ids to expect, so a record whose id it
   does not expect is refused just as an unrequested one would be;
4. received records go through :meth:`Ingest.ingest_many` (decode, checks,
   signature, store), in batches while the next frames arrive.

Every frame is a 4-byte big-endian length and a canonical CBOR payload of at
most 1 MiB, read with a read-exactly loop (never libp2p's varint reader,
pitfall 12) under a timeout (pitfall 23). A peer that breaks the protocol
(bad frames, bad reconciliation messages, records it was not asked for,
records that fail validation, exceeded limits) or stops answering is cut
off: the stream is reset and the peer penalised through the same
bookkeeping as gossip (banned and disconnected at the limit). The stream
handler never raises into libp2p (pitfall 5).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from meshnode import wire
from meshnode.errors import (
    MeshError,
    PeerGone,
    StoreError,
    SyncTimeout,
    SyncViolation,
)
from meshnode.protocols.notifee import Notifee
from meshnode.ratelimit import KeyedRateLimit
from meshnode.reconcile import MAX_MESSAGE_BYTES as MAX_RECONCILE_MESSAGE
from meshnode.reconcile import Reconciler
from meshnode.records import MAX_RECORD_SIZE
from meshnode.swarm import Swarm
from meshnode.syncindex import SyncIndex

log = logging.getLogger(__name__)

PROTOCOL_ID = TProtocol("/meshnode/sync/1")
#: The message-layout version inside ``/meshnode/sync/1`` (sent in HELLO).
VERSION = 1
#: Largest frame payload either side sends or accepts.
MAX_FRAME = 1 << 20
HEADER_SIZE = 4
ID_SIZE = 32
_DEPTH = 3  # [kind, [items ...]]

# Message kinds: the first element of every message array.
HELLO, REFUSE, RECONCILE, NOTWANT, RECORDS, END = range(6)
_KIND_NAMES = ("HELLO", "REFUSE", "RECONCILE", "NOTWANT", "RECORDS", "END")

# REFUSE codes.
REFUSE_NOT_JOINED = 1
REFUSE_BUSY = 2
REFUSE_VERSION = 3
MAX_REFUSE_TEXT = 200

#: Penalty weights (PeerPenalties counts; the default limit is 20 in 60 s):
#: two protocol violations in a minute ban a peer, five timeouts do.
VIOLATION_WEIGHT = 10
TIMEOUT_WEIGHT = 4


def penalty_weight(exc: BaseException) -> int:
    """What aborting a session with ``exc`` costs the peer (0: not its fault)."""
    if isinstance(exc, SyncViolation):
        return VIOLATION_WEIGHT
    if isinstance(exc, SyncTimeout):
        return TIMEOUT_WEIGHT
    return 0


_RECORDS_OVERHEAD = 16  # array heads of [4, [...]] (<= 1 + 1 + 5 bytes), kept generous
_ITEM_HEAD = 3  # CBOR head of a byte string of 24 .. 65535 bytes


@dataclass
class SyncLimits:
    """Timeouts and bounds of one session (and of inbound sessions per host)."""

    read_timeout: float = 20.0  # per frame
    write_timeout: float = 20.0  # per frame
    connect_timeout: float = 10.0  # opening the stream (protocol negotiation)
    session_timeout: float = 600.0  # a whole session
    max_rounds: int = 1024  # reconciliation messages received
    max_reconcile_bytes: int = 32 << 20  # reconciliation bytes received (~1M ids)
    max_notwant: int = 16_384  # ids in one NOTWANT (~560 KB)
    max_inbound: int = 8  # concurrent inbound sessions on one host
    inbound_rate: float = 0.2  # inbound sessions per second per peer ...
    inbound_burst: float = 10.0  # ... in bursts of this many (a session per swarm on connect)
    ingest_workers: int = 2  # concurrent ingest_many batches per session
    read_chunk: int = 2048  # ids per store read when pushing


@dataclass
class SyncStats:
    """Counters over every session of one host (the node sums its hosts)."""

    sessions_initiated: int = 0
    sessions_accepted: int = 0
    sessions_completed: int = 0
    sessions_refused: int = 0
    sessions_aborted: int = 0
    records_received: int = 0
    records_fetched: int = 0  # received and newly stored
    records_sent: int = 0
    records_missing: int = 0  # expected but never sent (the peer no longer had them)
    bytes_in: int = 0
    bytes_out: int = 0
    reconcile_bytes_in: int = 0
    reconcile_bytes_out: int = 0
    rounds: int = 0
    penalties: int = 0


@dataclass
class SessionReport:
    """What one session did (returned by :meth:`SyncService.sync_with`)."""

    peer: str
    swarm: bytes
    role: str
    outcome: str = "ok"  # ok | refused | aborted
    error: str = ""
    rounds: int = 0
    have: int = 0  # ids we held that the peer lacked
    need: int = 0  # ids the peer held that we lacked
    records_sent: int = 0
    records_received: int = 0
    records_stored: int = 0
    records_refused: int = 0
    records_missing: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    reconcile_bytes_in: int = 0
    reconcile_bytes_out: int = 0
    reconcile_seconds: float = 0.0  # from the start until both knew the difference
    seconds: float = 0.0


# --- errors --------------------------------------------------------------------


class Refused(Exception):
    """The responder said REFUSE (not penalised)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"refused ({code}): {text}")
        self.code = code


# --- messages (pure) -------------------------------------------------------------


def encode_message(kind: int, *fields: Any) -> bytes:
    """The canonical CBOR payload of one message ``[kind, *fields]``."""
    return wire.encode([kind, *fields])


def _ids(value: Any, what: str, limit: int) -> list[bytes]:
    if not isinstance(value, list) or len(value) > limit:
        raise SyncViolation(f"{what}: expected an array of at most {limit} ids")
    prev = b""
    for item in value:
        if not isinstance(item, bytes) or len(item) != ID_SIZE or item <= prev:
            raise SyncViolation(f"{what}: expected 32-byte ids in strictly ascending order")
        prev = item
    return value


def decode_message(payload: bytes, *, max_notwant: int = SyncLimits.max_notwant) -> list[Any]:
    """Decode and check one message; :class:`SyncViolation` if it is malformed."""
    try:
        value = wire.decode(payload, max_size=MAX_FRAME, max_depth=_DEPTH)
    except MeshError as exc:
        raise SyncViolation(f"malformed frame: {exc}") from None
    if not isinstance(value, list) or not value or type(value[0]) is not int:
        raise SyncViolation("expected a message [kind, ...]")
    kind, n = value[0], len(value)
    if kind == HELLO:
        if n != 4 or type(value[1]) is not int or value[1] < 0:
            raise SyncViolation("HELLO: expected [0, version, swarm id, reconcile message]")
        if not isinstance(value[2], bytes) or len(value[2]) != ID_SIZE:
            raise SyncViolation("HELLO: expected a 32-byte swarm id")
        if not isinstance(value[3], bytes) or len(value[3]) > MAX_RECONCILE_MESSAGE:
            raise SyncViolation("HELLO: expected a reconcile message of at most 64 KiB")
    elif kind == REFUSE:
        if n != 3 or type(value[1]) is not int or not isinstance(value[2], str):
            raise SyncViolation("REFUSE: expected [1, code, text]")
        if len(value[2]) > MAX_REFUSE_TEXT:
            raise SyncViolation(f"REFUSE: expected a text of at most {MAX_REFUSE_TEXT} characters")
    elif kind == RECONCILE:
        if n != 2 or not isinstance(value[1], bytes) or len(value[1]) > MAX_RECONCILE_MESSAGE:
            raise SyncViolation("RECONCILE: expected [2, message of at most 64 KiB]")
    elif kind == NOTWANT:
        if n != 2:
            raise SyncViolation("NOTWANT: expected [3, ids]")
        _ids(value[1], "NOTWANT", max_notwant)
    elif kind == RECORDS:
        if n != 2 or not isinstance(value[1], list) or not value[1]:
            raise SyncViolation("RECORDS: expected [4, records] with at least one record")
        for data in value[1]:
            if not isinstance(data, bytes) or not 0 < len(data) <= MAX_RECORD_SIZE:
                raise SyncViolation(f"RECORDS: expected records of 1..{MAX_RECORD_SIZE} bytes")
    elif kind == END:
        if n != 2 or type(value[1]) is not int or value[1] < 0:
            raise SyncViolation("END: expected [5, count]")
    else:
        raise SyncViolation(f"unknown message kind {kind}")
    return value


def frame(payload: bytes) -> bytes:
    """Length-prefix a payload (4 bytes, big-endian)."""
    if not 0 < len(payload) <= MAX_FRAME:
        raise ValueError(f"frame payload of {len(payload)} bytes is out of 1..{MAX_FRAME}")
    return len(payload).to_bytes(HEADER_SIZE, "big") + payload


def record_frames(datas: Iterable[bytes], budget: int = MAX_FRAME) -> Iterable[list[bytes]]:
    """Group encoded records into RECORDS batches whose payload fits ``budget``."""
    batch: list[bytes] = []
    size = _RECORDS_OVERHEAD
    for data in datas:
        cost = len(data) + _ITEM_HEAD
        if batch and size + cost > budget:
            yield batch
            batch, size = [], _RECORDS_OVERHEAD
        batch.append(data)
        size += cost
    if batch:
        yield batch


def _record_id(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=ID_SIZE).digest()


# --- one stream --------------------------------------------------------------------


class _Channel:
    """Frames over one libp2p stream: read-exactly, bounded, every I/O under a timeout."""

    def __init__(self, stream: INetStream, limits: SyncLimits, report: SessionReport) -> None:
        self.stream = stream
        self.limits = limits
        self.report = report

    async def send(self, payload: bytes) -> None:
        data = frame(payload)
        try:
            with trio.fail_after(self.limits.write_timeout):
                await self.stream.write(data)
        except trio.TooSlowError:
            raise SyncTimeout(f"the peer took no frame within {self.limits.write_timeout:.0f} s") from None
        except (trio.Cancelled, SyncViolation):
            raise
        except Exception as exc:
            raise PeerGone(f"writing failed: {type(exc).__name__} {exc}") from None
        self.report.bytes_out += len(data)

    async def recv(self) -> list[Any]:
        try:
            with trio.fail_after(self.limits.read_timeout):
                header = await self._read_exactly(HEADER_SIZE)
                size = int.from_bytes(header, "big")
                if not 0 < size <= MAX_FRAME:
                    raise SyncViolation(f"frame length {size} is out of 1..{MAX_FRAME}")
                payload = await self._read_exactly(size)
        except trio.TooSlowError:
            raise SyncTimeout(f"no frame from the peer within {self.limits.read_timeout:.0f} s") from None
        self.report.bytes_in += HEADER_SIZE + size
        return decode_message(payload, max_notwant=self.limits.max_notwant)

    async def _read_exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = await self.stream.read(n - len(buf))
            except (trio.Cancelled, trio.TooSlowError):
                raise
            except Exception as exc:
                raise PeerGone(f"the stream ended: {type(exc).__name__} {exc}") from None
            if not chunk:
                raise PeerGone("the stream ended")
            buf += chunk
        return bytes(buf)


def _leaf_exceptions(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in exc.exceptions:
            out.extend(_leaf_exceptions(e))
        return out
    return [exc]


def _is_cancel(exc: BaseException) -> bool:
    """A trio cancellation, alone or as a group of nothing else."""
    return all(isinstance(e, trio.Cancelled) for e in _leaf_exceptions(exc))


def _most_relevant(group: BaseExceptionGroup) -> BaseException:
    """The one error of a nursery's group worth reporting (a violation first)."""
    leaves = [e for e in _leaf_exceptions(group) if not isinstance(e, trio.Cancelled)]
    if not leaves:
        return group
    for kind in (SyncViolation, SyncTimeout, PeerGone):
        for e in leaves:
            if isinstance(e, kind):
                return e
    return leaves[0]


# --- the service -------------------------------------------------------------------


class _ConnectNotifee(Notifee):
    """Hands every new connection's peer id to the service (never blocks libp2p)."""

    def __init__(self, send: trio.MemorySendChannel[ID]) -> None:
        self._send = send

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        try:
            self._send.send_nowait(conn.muxed_conn.peer_id)
        except Exception:  # full (the periodic sync covers it) or closed
            pass


class SyncService:
    """Sync on one libp2p host: the stream handler, sessions, and when to run them.

    * ``index_of(swarm_id)``: the swarm's :class:`SyncIndex`, or None if not joined.
    * ``swarms()``: the swarms joined on this host, by id.
    * ``store``: read access for pushing records and checking pruned ids (a
      read-only connection, so reads never wait behind the ingest writer).
    * ``penalise(peer, weight)`` / ``is_banned(peer)``: the gossip penalty
      bookkeeping of the same host.
    * ``interval``: seconds between periodic sessions with one random
      connected peer (0: none); ``on_connect``: sync when a peer connects
      (the side with the smaller peer id initiates).
    """

    def __init__(
        self,
        host: IHost,
        *,
        ingest: Any,
        store: Any,
        index_of: Callable[[bytes], SyncIndex | None],
        swarms: Callable[[], Mapping[bytes, Swarm]],
        penalise: Callable[[str, int], object],
        is_banned: Callable[[str], bool],
        limits: SyncLimits | None = None,
        interval: float = 60.0,
        on_connect: bool = True,
    ) -> None:
        self.host = host
        self.ingest = ingest
        self.store = store
        self.index_of = index_of
        self.swarms = swarms
        self._penalise = penalise
        self._is_banned = is_banned
        self.limits = limits or SyncLimits()
        self.interval = interval
        self.on_connect = on_connect
        self.stats = SyncStats()
        self.reports: list[SessionReport] = []  # the most recent sessions, newest last
        self._my_id = host.get_id()
        self._outbound: set[str] = set()
        self._inbound: set[str] = set()
        self._inbound_limit = KeyedRateLimit(rate=self.limits.inbound_rate, burst=self.limits.inbound_burst)
        self._nursery: trio.Nursery | None = None
        self._connects_send, self._connects_recv = trio.open_memory_channel[ID](256)
        self._notifee = _ConnectNotifee(self._connects_send)
        host.set_stream_handler(PROTOCOL_ID, self._handle)
        host.get_network().register_notifee(self._notifee)

    # --- lifecycle -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the connect-triggered and periodic syncs until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._connect_loop)
                nursery.start_soon(self._periodic_loop)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            try:
                self.host.get_network().remove_notifee(self._notifee)
            except Exception:
                pass

    def busy_with(self, peer: str) -> bool:
        return peer in self._outbound or peer in self._inbound

    # --- when to sync ------------------------------------------------------------

    def sync_soon(self, peer: str, swarms: list[Swarm] | None = None) -> None:
        """Start a background sync with ``peer`` (all swarms of this host by default)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._sync_quietly, peer, swarms)

    def sync_joined(self, swarm: Swarm, peers: int = 3) -> None:
        """A swarm was just joined: sync it with a few connected peers."""
        connected = self._candidates()
        for peer in random.sample(connected, min(peers, len(connected))):
            self.sync_soon(peer, [swarm])

    def _candidates(self) -> list[str]:
        out = []
        for pid in self.host.get_connected_peers():
            peer = pid.to_base58()
            if not self._is_banned(peer) and not self.busy_with(peer):
                out.append(peer)
        return out

    async def _connect_loop(self) -> None:
        mine = self._my_id.to_bytes()
        async for pid in self._connects_recv:
            if not self.on_connect or pid == self._my_id:
                continue
            # One side starts, so that both do not open duplicate sessions.
            if mine < pid.to_bytes():
                self.sync_soon(pid.to_base58())

    async def _periodic_loop(self) -> None:
        if self.interval <= 0:
            return
        while True:
            await trio.sleep(self.interval * random.uniform(0.8, 1.2))
            peers = self._candidates()
            if peers and self.swarms():
                self.sync_soon(random.choice(peers))

    async def _sync_quietly(self, peer: str, swarms: list[Swarm] | None) -> None:
        try:
            await self.sync_peer(peer, swarms)
        except Exception as exc:  # pragma: no cover - sync_peer reports, never raises
            log.warning("sync with %s failed: %r", peer, exc)

    # --- initiating ----------------------------------------------------------------

    async def sync_peer(self, peer: str, swarms: list[Swarm] | None = None) -> list[SessionReport]:
        """Sync each swarm (default: all of this host's) with ``peer``, one after another.

        Returns nothing when a session with this peer is already running.
        """
        if self.busy_with(peer) or self._is_banned(peer):
            return []
        self._outbound.add(peer)
        try:
            reports = []
            for swarm in swarms if swarms is not None else list(self.swarms().values()):
                if swarm.id not in self.swarms():
                    continue
                report = await self._initiate(peer, swarm)
                reports.append(report)
                if report.outcome == "aborted" or report.error.startswith(f"refused ({REFUSE_BUSY})"):
                    break
            return reports
        finally:
            self._outbound.discard(peer)

    async def sync_with(self, peer: str, swarm: Swarm) -> SessionReport:
        """Run one session now as initiator (refused locally if one with ``peer`` runs)."""
        if self.busy_with(peer):
            return SessionReport(peer, swarm.id, "initiator", "refused", "a session with this peer runs")
        reports = await self.sync_peer(peer, [swarm])
        if not reports:
            return SessionReport(peer, swarm.id, "initiator", "refused", "peer is banned or not in the swarm")
        return reports[0]

    async def _initiate(self, peer: str, swarm: Swarm) -> SessionReport:
        report = SessionReport(peer, swarm.id, "initiator")
        self.stats.sessions_initiated += 1
        index = self.index_of(swarm.id)
        if index is None:
            report.outcome, report.error = "refused", "this node has no index of that swarm"
            return report
        start = time.monotonic()
        stream: INetStream | None = None
        try:
            try:
                with trio.fail_after(self.limits.connect_timeout):
                    stream = await self.host.new_stream(ID.from_base58(peer), [PROTOCOL_ID])
            except trio.TooSlowError:  # negotiation is libp2p's: not held against the peer
                raise PeerGone("opening a sync stream timed out") from None
            except Exception as exc:
                raise Refused(0, f"cannot open a sync stream: {type(exc).__name__} {exc}") from None
            await self._session(stream, report, index, swarm, None)
        except BaseException as exc:
            await self._finish(stream, report, exc)
            if _is_cancel(exc):
                raise
        else:
            await self._finish(stream, report, None)
        finally:
            report.seconds = time.monotonic() - start
        return report

    # --- responding ------------------------------------------------------------------

    async def _handle(self, stream: INetStream) -> None:
        """The libp2p stream handler: must never raise (pitfall 5)."""
        try:
            peer = stream.muxed_conn.peer_id.to_base58()
        except Exception:
            await _reset(stream)
            return
        try:
            if self._is_banned(peer):
                await _reset(stream)
                return
            busy = (
                peer in self._inbound
                or len(self._inbound) >= self.limits.max_inbound
                # both sides started at once: the smaller peer id's session goes on
                or (peer in self._outbound and self._my_id.to_bytes() < ID.from_base58(peer).to_bytes())
                or not self._inbound_limit.allow(peer, time.monotonic())
            )
            if not busy:
                self._inbound.add(peer)
            try:
                await self._respond(stream, peer, busy)
            finally:
                if not busy:
                    self._inbound.discard(peer)
        except BaseException as exc:  # never into libp2p; let a shutdown's Cancelled through
            if _is_cancel(exc):
                await _reset(stream)
                raise
            log.warning("sync handler failed: %r", exc)
            await _reset(stream)

    async def _respond(self, stream: INetStream, peer: str, busy: bool) -> None:
        report = SessionReport(peer, b"", "responder")
        self.stats.sessions_accepted += 0 if busy else 1
        start = time.monotonic()
        try:
            await self._session(stream, report, None, None, busy)
        except BaseException as exc:
            await self._finish(stream, report, exc)
            if _is_cancel(exc):
                raise
        else:
            await self._finish(stream, report, None)
        finally:
            report.seconds = time.monotonic() - start

    # --- a session -----------------------------------------------------------------

    async def _session(
        self,
        stream: INetStream,
        report: SessionReport,
        index: SyncIndex | None,
        swarm: Swarm | None,
        busy: bool | None,
    ) -> None:
        """Both roles: the initiator passes its index and swarm, the responder ``busy``."""
        ch = _Channel(stream, self.limits, report)
        began = trio.current_time()
        with trio.move_on_after(self.limits.session_timeout) as scope:
            if swarm is not None and index is not None:  # initiator
                rec = Reconciler(index, role="initiator", max_rounds=self.limits.max_rounds)
                first = rec.initiate()
                report.reconcile_bytes_out += len(first)
                await ch.send(encode_message(HELLO, VERSION, swarm.id, first))
                msg = await ch.recv()
                if msg[0] == REFUSE:
                    raise Refused(msg[1], msg[2])
                pending = self._reconcile_step(rec, msg, report)
            else:  # responder
                msg = await ch.recv()
                if msg[0] != HELLO:
                    raise SyncViolation(f"expected HELLO, found {_KIND_NAMES[msg[0]]}")
                _, version, swarm_id, first = msg
                report.swarm = swarm_id
                if version != VERSION:
                    await self._refuse(ch, REFUSE_VERSION, f"this node speaks sync version {VERSION}")
                    return
                swarm = self.swarms().get(swarm_id)
                index = self.index_of(swarm_id)
                if swarm is None or index is None:
                    await self._refuse(ch, REFUSE_NOT_JOINED, "this node has not joined that swarm")
                    return
                if busy:
                    await self._refuse(ch, REFUSE_BUSY, "busy: try again later")
                    return
                rec = Reconciler(index, role="responder", max_rounds=self.limits.max_rounds)
                pending = self._reconcile_step(rec, [RECONCILE, first], report)
            while pending is not None:
                report.reconcile_bytes_out += len(pending)
                await ch.send(encode_message(RECONCILE, pending))
                if rec.done:
                    break
                pending = self._reconcile_step(rec, await ch.recv(), report)
            report.rounds = rec.rounds
            report.have, report.need = len(rec.have), len(rec.need)
            report.reconcile_seconds = trio.current_time() - began
            await self._transfer(ch, rec, index, swarm, report)
        if scope.cancelled_caught:
            raise PeerGone(f"the session took longer than {self.limits.session_timeout:.0f} s")

    def _reconcile_step(self, rec: Reconciler, msg: list[Any], report: SessionReport) -> bytes | None:
        if msg[0] != RECONCILE:
            raise SyncViolation(f"expected RECONCILE, found {_KIND_NAMES[msg[0]]}")
        data = msg[1]
        report.reconcile_bytes_in += len(data)
        if report.reconcile_bytes_in > self.limits.max_reconcile_bytes:
            raise SyncViolation(f"more than {self.limits.max_reconcile_bytes} bytes of reconciliation")
        try:
            return rec.receive(data)
        except MeshError as exc:  # ReconcileError, DecodeError
            raise SyncViolation(f"bad reconciliation message: {exc}") from None

    async def _refuse(self, ch: _Channel, code: int, text: str) -> None:
        await ch.send(encode_message(REFUSE, code, text))
        raise Refused(code, text)

    async def _transfer(
        self, ch: _Channel, rec: Reconciler, index: SyncIndex, swarm: Swarm, report: SessionReport
    ) -> None:
        """Exchange NOTWANT, push what the peer lacks, take what we lack; both ways at once."""
        limits = self.limits
        have, need = rec.have, rec.need
        skip: list[bytes] = []
        if need:
            pruned = await trio.to_thread.run_sync(self.store.pruned_among, list(need))
            skip = sorted(pruned)[: limits.max_notwant]
        expect = need.difference(skip)
        peer_skip: set[bytes] = set()
        peer_skip_known = trio.Event()
        batches_send, batches_recv = trio.open_memory_channel[list[bytes]](2)

        async def writer() -> None:
            await ch.send(encode_message(NOTWANT, skip))
            await peer_skip_known.wait()
            todo = sorted(have - peer_skip)  # any order: the store takes records in any order
            sent = 0
            step = limits.read_chunk
            for start in range(0, len(todo), step):
                chunk = todo[start : start + step]
                raws = await trio.to_thread.run_sync(self.store.raw_records, chunk)
                datas = []
                for item_id in chunk:
                    data = raws.get(item_id)
                    if data is None:  # pruned or evicted since it was indexed
                        index.remove(item_id)
                    else:
                        datas.append(data)
                for batch in record_frames(datas, MAX_FRAME):
                    await ch.send(encode_message(RECORDS, batch))
                    sent += len(batch)
                    report.records_sent = sent
            await ch.send(encode_message(END, sent))

        async def reader() -> None:
            msg = await ch.recv()
            if msg[0] != NOTWANT:
                raise SyncViolation(f"expected NOTWANT, found {_KIND_NAMES[msg[0]]}")
            if not have.issuperset(msg[1]):
                raise SyncViolation("NOTWANT names ids that the reconciliation did not find missing")
            peer_skip.update(msg[1])
            peer_skip_known.set()
            received = 0
            async with batches_send:
                while True:
                    msg = await ch.recv()
                    if msg[0] == RECORDS:
                        for data in msg[1]:
                            rid = _record_id(data)
                            if rid not in expect:
                                raise SyncViolation(f"record {rid.hex()[:16]}… was not expected")
                            expect.discard(rid)
                        received += len(msg[1])
                        report.records_received = received
                        await batches_send.send(msg[1])
                    elif msg[0] == END:
                        if msg[1] != received:
                            raise SyncViolation(f"END counts {msg[1]} records, {received} arrived")
                        break
                    else:
                        raise SyncViolation(f"expected RECORDS or END, found {_KIND_NAMES[msg[0]]}")
            report.records_missing = len(expect)

        async def ingester(batches: trio.MemoryReceiveChannel[list[bytes]]) -> None:
            async with batches:
                async for batch in batches:
                    result = await self.ingest.ingest_many(batch, swarm_ids={swarm.id})
                    report.records_stored += result.stored
                    report.records_refused += result.refused
                    if result.invalid:
                        raise SyncViolation(f"{result.invalid} records fail validation")

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                nursery.start_soon(reader)
                async with batches_recv:
                    for _ in range(max(limits.ingest_workers, 1)):
                        nursery.start_soon(ingester, batches_recv.clone())
        except BaseExceptionGroup as group:
            raise _most_relevant(group) from None

    # --- the end of a session ---------------------------------------------------------

    async def _finish(
        self, stream: INetStream | None, report: SessionReport, exc: BaseException | None
    ) -> None:
        """Record the outcome, penalise if deserved, close or reset the stream."""
        if isinstance(exc, BaseExceptionGroup):
            exc = _most_relevant(exc)
        stats = self.stats
        if exc is None:
            report.outcome = "ok"
            stats.sessions_completed += 1
        elif isinstance(exc, Refused):
            report.outcome, report.error = "refused", str(exc)
            stats.sessions_refused += 1
        else:
            report.outcome = "aborted"
            report.error = f"{type(exc).__name__}: {exc}"
            stats.sessions_aborted += 1
            weight = penalty_weight(exc)
            if weight:
                stats.penalties += 1
                log.info("sync with %s aborted, penalised %d: %s", report.peer, weight, exc)
                try:
                    self._penalise(report.peer, weight)
                except Exception as e:  # pragma: no cover - penalise never raises
                    log.debug("penalise failed: %r", e)
            elif not (_is_cancel(exc) or isinstance(exc, PeerGone | StoreError)):
                log.warning("sync with %s failed: %r", report.peer, exc)
        stats.records_received += report.records_received
        stats.records_fetched += report.records_stored
        stats.records_sent += report.records_sent
        stats.records_missing += report.records_missing
        stats.bytes_in += report.bytes_in
        stats.bytes_out += report.bytes_out
        stats.reconcile_bytes_in += report.reconcile_bytes_in
        stats.reconcile_bytes_out += report.reconcile_bytes_out
        stats.rounds += report.rounds
        self.reports.append(report)
        del self.reports[:-64]
        if stream is None:
            return
        if exc is None or isinstance(exc, Refused):
            with trio.CancelScope(shield=True), trio.move_on_after(self.limits.write_timeout):
                try:
                    await stream.close()
                    return
                except Exception:
                    pass
        await _reset(stream)


async def _reset(stream: INetStream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        try:
            await stream.reset()
        except Exception:
            pass


def stats_dict(stats: Iterable[SyncStats]) -> dict[str, int]:
    """Sum several hosts' :class:`SyncStats` into one dict."""
    total = {f.name: 0 for f in fields(SyncStats)}
    for s in stats:
        for name in total:
            total[name] += getattr(s, name)
    return total


__all__ = [
    "MAX_FRAME",
    "PROTOCOL_ID",
    "VERSION",
    "PeerGone",
    "Refused",
    "SessionReport",
    "SyncLimits",
    "SyncService",
    "SyncStats",
    "SyncTimeout",
    "SyncViolation",
    "decode_message",
    "encode_message",
    "frame",
    "record_frames",
    "stats_dict",
]
