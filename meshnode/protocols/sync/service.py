"""Sync on one libp2p host: the stream handler, when sessions run, and the driver.

:class:`SyncService` runs :class:`~.session.SyncSession` machines over
:class:`~.channel.Channel` frames of libp2p streams negotiated with
``/meshnode/sync/1``. It decides *when* to sync (a peer connects: the side
with the smaller peer id starts; every ``interval`` with one random peer; a
swarm is joined: with a few peers), admits inbound sessions (one per peer, at
most ``max_inbound`` at once, a rate per peer; otherwise the session refuses
as busy), performs each session's actions (sends, the pruned look-up and the
record reads on the store's read-only connection, ``Ingest.ingest_many`` in
batches while the next frames arrive), and ends every session: outcome,
counters, penalties, stream closed or reset.

Work off the event loop: a frame larger than :data:`INLINE_DECODE` bytes is
decoded in a worker thread, and every reconciliation message is answered in
a worker thread while the swarm's index is held (:meth:`SyncIndex.hold`:
changes to it wait until the answer is made), so a hostile 64 KiB message or
a 1 MiB frame does not stall the loop. Record batches are opened and stored
by ``ingest_many`` in worker threads.

Budgets and progress (:mod:`.limits`): each session takes from its peer at
most an :class:`~.limits.Allowance` reserved from the peer's hourly
:class:`~.limits.PeerBudgets` (unused parts are given back at the end), and
passes ``ingest_many`` a :class:`~meshnode.ingest.NewAuthorBudget` for the
authors never seen here; a session that moves fewer bytes than the minimum
progress rate ends as a :class:`~meshnode.errors.SyncTimeout`.

Outcomes: ``ok``; ``refused`` (a REFUSE either way, a stream that could not
be opened: not penalised); ``aborted``: a :class:`~meshnode.errors.SyncViolation`
(weight :data:`VIOLATION_WEIGHT`) or :class:`~meshnode.errors.SyncTimeout`
(:data:`TIMEOUT_WEIGHT`) is held against the peer through the gossip penalty
bookkeeping (banned and disconnected at the limit); a stream that ended
(:class:`~meshnode.errors.PeerGone`), a store failure or the session timeout
are not; any other exception is a bug, logged as a warning. The stream
handler never raises into libp2p (pitfall 5), except a shutdown's
cancellation.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Protocol

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from meshnode.errors import PeerGone, StoreError, SyncTimeout, SyncViolation
from meshnode.ingest import NewAuthorBudget
from meshnode.protocols.notifee import Notifee
from meshnode.protocols.sync.channel import STREAM_ERRORS, Channel
from meshnode.protocols.sync.limits import PeerBudgets, SyncLimits
from meshnode.protocols.sync.messages import (
    MAX_FRAME,
    Hello,
    Message,
    Reconcile,
    RefuseCode,
    decode_message,
    record_frames,
)
from meshnode.protocols.sync.session import (
    Action,
    Finished,
    Ingest,
    LookUpPruned,
    Push,
    Refused,
    Send,
    SessionReport,
    SyncSession,
)
from meshnode.ratelimit import KeyedRateLimit
from meshnode.swarm import Swarm
from meshnode.syncindex import SyncIndex

log = logging.getLogger(__name__)

PROTOCOL_ID = TProtocol("/meshnode/sync/1")

#: Penalty weights (PeerPenalties counts; the default limit is 20 in 60 s):
#: two protocol violations in a minute ban a peer, five timeouts do.
VIOLATION_WEIGHT = 10
TIMEOUT_WEIGHT = 4

#: Frames up to this size are decoded on the event loop (a thread hop costs more).
INLINE_DECODE = 64 * 1024


def penalty_weight(exc: BaseException) -> int:
    """What aborting a session with ``exc`` costs the peer (0: not its fault)."""
    if isinstance(exc, SyncViolation):
        return VIOLATION_WEIGHT
    if isinstance(exc, SyncTimeout):
        return TIMEOUT_WEIGHT
    return 0


# --- what the service needs from the node ----------------------------------------------


class RecordReader(Protocol):
    """Read access to the store (a read-only connection, never behind the ingest writer)."""

    def pruned_among(self, ids: Iterable[bytes]) -> set[bytes]:
        """The ids of ``ids`` that pruning deleted here."""
        ...

    def raw_records(self, ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """The stored bytes of those of ``ids`` held here: id -> bytes."""
        ...


class BatchOutcome(Protocol):
    """What became of one batch of records (``ingest.BatchReport``)."""

    @property
    def stored(self) -> int: ...

    @property
    def refused(self) -> int: ...

    @property
    def invalid(self) -> int: ...

    @property
    def new_authors_refused(self) -> int: ...


class RecordIngest(Protocol):
    """The one way in for records (``ingest.Ingest``)."""

    def ingest_many(
        self,
        datas: Iterable[bytes],
        *,
        swarm_ids: set[bytes] | None = None,
        new_authors: NewAuthorBudget | None = None,
    ) -> Awaitable[BatchOutcome]:
        """Validate and store the records; wait until stored."""
        ...


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
    records_over_budget: int = 0  # received, not taken: the peer's session or hourly budget was reached
    new_authors_refused: int = 0  # refused: authors never seen here, over the peer's budget of them
    bytes_in: int = 0
    bytes_out: int = 0
    reconcile_bytes_in: int = 0
    reconcile_bytes_out: int = 0
    rounds: int = 0
    penalties: int = 0


def stats_dict(stats: Iterable[SyncStats]) -> dict[str, int]:
    """Sum several hosts' :class:`SyncStats` into one dict."""
    total = {f.name: 0 for f in fields(SyncStats)}
    for s in stats:
        for name in total:
            total[name] += getattr(s, name)
    return total


class SessionRefused(Exception):
    """The session ended refused (not penalised): a REFUSE either way, or no stream."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"refused ({int(code)}): {text}")
        self.code = code


# --- exception groups -------------------------------------------------------------------


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


# --- the service -------------------------------------------------------------------------


class _ConnectNotifee(Notifee):
    """Hands every new connection's peer id to the service (never blocks libp2p)."""

    def __init__(self, send: trio.MemorySendChannel[ID]) -> None:
        self._send = send

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        try:
            self._send.send_nowait(conn.muxed_conn.peer_id)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # full (the periodic sync covers it) or closed


class SyncService:
    """Sync on one libp2p host: the stream handler, sessions, and when to run them.

    * ``index_of(swarm_id)``: the swarm's :class:`SyncIndex`, or None if not joined.
    * ``swarms()``: the swarms joined on this host, by id.
    * ``store``: read access for pushing records and checking pruned ids (a
      read-only connection, so reads never wait behind the ingest writer).
    * ``ingest``: validates and stores what peers push.
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
        ingest: RecordIngest,
        store: RecordReader,
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
        self.budgets = PeerBudgets(self.limits)
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
            except (KeyError, ValueError):  # never registered, or removed already
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
                if report.outcome == "aborted" or report.refuse_code == RefuseCode.BUSY:
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
        self.stats.sessions_initiated += 1
        index = self.index_of(swarm.id)
        if index is None:
            return SessionReport(
                peer, swarm.id, "initiator", "refused", "this node has no index of that swarm"
            )
        allowance = self.budgets.reserve(peer, time.monotonic())
        session = SyncSession.initiator(peer, swarm.id, index, self.limits, allowance=allowance)
        return await self._run(session, None)

    async def _open_stream(self, peer: str) -> INetStream:
        try:
            with trio.fail_after(self.limits.connect_timeout):
                return await self.host.new_stream(ID.from_base58(peer), [PROTOCOL_ID])
        except trio.TooSlowError:  # negotiation is libp2p's: not held against the peer
            raise PeerGone("opening a sync stream timed out") from None
        except STREAM_ERRORS as exc:  # not connected, protocol not spoken, connection gone
            raise SessionRefused(0, f"cannot open a sync stream: {type(exc).__name__} {exc}") from None

    # --- responding ------------------------------------------------------------------

    async def _handle(self, stream: INetStream) -> None:
        """The libp2p stream handler: must never raise (pitfall 5)."""
        try:
            peer = stream.muxed_conn.peer_id.to_base58()
        except Exception:  # a stream without a usable connection: nothing to serve
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
                self.stats.sessions_accepted += 0 if busy else 1
                allowance = self.budgets.reserve(peer, time.monotonic())
                session = SyncSession.responder(
                    peer, self.limits, admit=self._admit, busy=busy, allowance=allowance
                )
                await self._run(session, stream)
            finally:
                if not busy:
                    self._inbound.discard(peer)
        except BaseException as exc:  # never into libp2p; let a shutdown's Cancelled through
            if _is_cancel(exc):
                await _reset(stream)
                raise
            log.warning("sync handler failed: %r", exc)
            await _reset(stream)

    def _admit(self, swarm_id: bytes) -> SyncIndex | None:
        """The index of a swarm joined on this host, else None."""
        return self.index_of(swarm_id) if swarm_id in self.swarms() else None

    # --- a session -----------------------------------------------------------------

    async def _run(self, session: SyncSession[SyncIndex], stream: INetStream | None) -> SessionReport:
        """Drive ``session`` over ``stream`` (opened here for an initiator); end it."""
        report = session.report
        start = time.monotonic()
        new_authors = NewAuthorBudget(session.allowance.new_authors)
        try:
            if stream is None:
                stream = await self._open_stream(report.peer)
            await self._drive(stream, session, new_authors)
        except BaseException as exc:
            await self._finish(stream, report, exc)
            if _is_cancel(exc):
                raise
        else:
            await self._finish(stream, report, None)
        finally:
            report.seconds = time.monotonic() - start
            used = (session.taken_records, session.taken_bytes, len(new_authors.admitted))
            self.budgets.settle(report.peer, time.monotonic(), session.allowance, used)
        return report

    async def _drive(
        self, stream: INetStream, session: SyncSession[SyncIndex], new_authors: NewAuthorBudget
    ) -> None:
        """Reconcile (one message at a time), then transfer (both ways at once)."""
        limits = self.limits
        report = session.report
        began = trio.current_time()
        progress = trio.CancelScope()  # its deadline moves on with every frame

        def moved() -> None:
            if limits.min_progress_rate > 0:
                total = ch.bytes_in + ch.bytes_out
                progress.deadline = began + limits.progress_grace + total / limits.min_progress_rate

        ch = Channel(
            stream, read_timeout=limits.read_timeout, write_timeout=limits.write_timeout, on_frame=moved
        )
        moved()
        try:
            with trio.move_on_after(limits.session_timeout) as scope:
                with progress:
                    actions = session.open()
                    while True:
                        lookup = await self._reconcile_actions(ch, actions)
                        if lookup is not None:
                            break
                        actions = await self._reconcile_step(session, await self._recv(ch))
                    report.reconcile_seconds = trio.current_time() - began
                    await self._transfer(ch, session, lookup, new_authors)
                if progress.cancelled_caught:
                    raise SyncTimeout(
                        f"the session moved {ch.bytes_in + ch.bytes_out} bytes in"
                        f" {trio.current_time() - began:.1f} s: less than the minimum progress of"
                        f" {limits.min_progress_rate:g} bytes/s (after {limits.progress_grace:g} s)"
                    )
            if scope.cancelled_caught:
                raise PeerGone(f"the session took longer than {limits.session_timeout:.0f} s")
        finally:
            report.bytes_in, report.bytes_out = ch.bytes_in, ch.bytes_out

    async def _recv(self, ch: Channel) -> Message:
        payload = await ch.recv()
        if len(payload) <= INLINE_DECODE:
            return decode_message(payload, self.limits)
        return await trio.to_thread.run_sync(decode_message, payload, self.limits)

    async def _reconcile_step(self, session: SyncSession[SyncIndex], msg: Message) -> list[Action]:
        """``session.receive(msg)`` while reconciling: in a worker thread, the index held meanwhile."""
        index = session.items
        if index is None and isinstance(msg, Hello):
            index = self._admit(msg.swarm)
        if index is None or not isinstance(msg, Hello | Reconcile):
            return session.receive(msg)  # no reconciliation to run: cheap
        index.hold()
        try:
            return await trio.to_thread.run_sync(session.receive, msg)
        finally:
            index.release()

    async def _reconcile_actions(self, ch: Channel, actions: list[Action]) -> LookUpPruned | None:
        """Perform the actions of the opening and reconciliation; the look-up that ends it, if any."""
        for action in actions:
            if isinstance(action, Send):
                await ch.send(action.message.to_wire())
            elif isinstance(action, Refused):
                raise SessionRefused(action.code, action.text)
            elif isinstance(action, LookUpPruned):
                return action
            else:
                raise RuntimeError(f"unexpected action while reconciling: {action!r}")
        return None

    async def _transfer(
        self,
        ch: Channel,
        session: SyncSession[SyncIndex],
        lookup: LookUpPruned,
        new_authors: NewAuthorBudget,
    ) -> None:
        """Exchange NOTWANT, push what the peer lacks, take what we lack; both ways at once."""
        limits = self.limits
        index = session.items
        assert index is not None  # known once reconciliation ran
        pruned: set[bytes] = set()
        if lookup.ids:
            pruned = await trio.to_thread.run_sync(self.store.pruned_among, list(lookup.ids))
        opening = session.notwant(pruned)  # before any transfer message is read
        push: list[tuple[bytes, ...]] = []
        push_known = trio.Event()
        batches_send, batches_recv = trio.open_memory_channel[tuple[bytes, ...]](2)

        async def perform(actions: list[Action]) -> None:
            for action in actions:
                if isinstance(action, Send):
                    await ch.send(action.message.to_wire())
                elif isinstance(action, Push):
                    push.append(action.ids)
                    push_known.set()
                elif isinstance(action, Ingest):
                    await batches_send.send(action.records)
                elif not isinstance(action, Finished):  # Finished: the tasks end with it
                    raise RuntimeError(f"unexpected action while transferring: {action!r}")

        async def writer() -> None:
            await perform(opening)  # our NOTWANT
            await push_known.wait()  # the peer's NOTWANT arrived
            todo = push[0]
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
                    await perform(session.records(batch))
            await perform(session.end())

        async def reader() -> None:
            async with batches_send:
                while not session.incoming_ended:
                    await perform(session.receive(await self._recv(ch)))

        async def ingester(batches: trio.MemoryReceiveChannel[tuple[bytes, ...]]) -> None:
            async with batches:
                async for batch in batches:
                    result = await self.ingest.ingest_many(
                        batch, swarm_ids={session.swarm}, new_authors=new_authors
                    )
                    await perform(
                        session.ingested(
                            result.stored,
                            result.refused,
                            result.invalid,
                            new_authors_refused=result.new_authors_refused,
                        )
                    )

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
        elif isinstance(exc, SessionRefused):
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
                except Exception as e:  # pragma: no cover - penalise never raises; a bug if it does
                    log.warning("penalising %s failed: %r", report.peer, e)
            elif not (_is_cancel(exc) or isinstance(exc, PeerGone | StoreError)):
                log.warning("sync with %s failed: %r", report.peer, exc)
        stats.records_received += report.records_received
        stats.records_fetched += report.records_stored
        stats.records_sent += report.records_sent
        stats.records_missing += report.records_missing
        stats.records_over_budget += report.records_over_budget
        stats.new_authors_refused += report.new_authors_refused
        if report.budget:
            log.info("sync with %s %s: %s", report.peer, report.outcome, report.budget)
        stats.bytes_in += report.bytes_in
        stats.bytes_out += report.bytes_out
        stats.reconcile_bytes_in += report.reconcile_bytes_in
        stats.reconcile_bytes_out += report.reconcile_bytes_out
        stats.rounds += report.rounds
        self.reports.append(report)
        del self.reports[:-64]
        if stream is None:
            return
        if exc is None or isinstance(exc, SessionRefused):
            with trio.CancelScope(shield=True), trio.move_on_after(self.limits.write_timeout):
                try:
                    await stream.close()
                    return
                except Exception:  # cleanup: whatever it was, reset below
                    pass
        await _reset(stream)


async def _reset(stream: INetStream) -> None:
    """Reset a stream, best effort: this runs on every error path, so it never raises."""
    with trio.CancelScope(shield=True), trio.move_on_after(5):
        try:
            await stream.reset()
        except Exception as exc:
            if not isinstance(exc, STREAM_ERRORS):
                log.warning("resetting a sync stream failed: %r", exc)


__all__ = [
    "PROTOCOL_ID",
    "SessionRefused",
    "SessionReport",
    "SyncLimits",
    "SyncService",
    "SyncStats",
    "penalty_weight",
    "stats_dict",
]
