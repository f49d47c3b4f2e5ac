"""GossipSub for meshnode: one topic per swarm, records validated before relay.

What this adapter takes care of, each a measured py-libp2p 0.8.1 pitfall
(see PY-LIBP2P-NOTES.md):

* The pubsub message id is the record id: BLAKE2b-256 of ``msg.data``, which
  for a valid record *is* its id and never raises on garbage.
* The topic validator asks the node's ``judge`` for a :class:`Verdict` and
  can never raise (pitfall 5): every exception is caught, counted and turned
  into a rejection.
* Publishing is paced by one task reading a bounded channel (pitfall 7: no
  publish back-pressure in libp2p); callers block when it is full instead of
  losing records silently.
* Every subscription is drained by its own task (pitfall 8); records reach
  the node through the validator, so the drained copies are dropped.
* A peer whose messages keep failing validation is penalised, then banned
  (pitfall 18: nobody else will) in the node's one ban book
  (:class:`~meshnode.sharedbans.SharedBans`), which every host of the node
  enforces: blacklisted in pubsub, disconnected, and refused when it
  connects again, until the ban ends. A peer on probation (banned before,
  see :mod:`meshnode.bans`) is banned again at its first new offence.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import trio
from libp2p.abc import IHost, INetConn, INetwork
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams
from libp2p.tools.anyio_service import Service, background_trio_service

from meshnode.bans import BanBook
from meshnode.protocols.notifee import Notifee
from meshnode.records import record_id
from meshnode.sharedbans import SharedBans
from meshnode.swarm import Swarm
from meshnode.verdicts import PeerPenalties, Verdict

log = logging.getLogger(__name__)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


#: Largest pubsub RPC frame accepted (a record is at most 16 KiB; leave room for
#: the pubsub envelope and a few messages per frame). Refuse big frames early.
MAX_RPC_SIZE = 256 * 1024


def score_params() -> ScoreParams:
    """GossipSub peer scoring driven by our own verdicts.

    Only the behaviour penalty (P5) is used: py-libp2p's P4 "invalid
    messages" counter also counts messages our validator merely *ignores*
    (duplicates, rate limits), which would punish honest relays. Each
    rejected record adds 1 to the forwarder's penalty; the score is
    ``-(penalty) * weight`` (the weight must be positive: pitfall 10), decaying
    1 % per heartbeat. Below ``publish_threshold`` a peer's messages are
    dropped before validation; below ``graylist_threshold`` it is ignored.
    """
    return ScoreParams(
        p5_behavior_penalty_weight=1.0,
        p5_behavior_penalty_decay=0.99,
        p5_behavior_penalty_threshold=0.0,
        gossip_threshold=-10.0,
        publish_threshold=-20.0,
        graylist_threshold=-40.0,
        accept_px_threshold=0.0,
    )


def new_router(
    *,
    heartbeat_interval: float = 1.0,
    degree: int = 6,
    degree_low: int = 4,
    degree_high: int = 12,
    scoring: ScoreParams | None = None,
) -> GossipSub:
    """A GossipSub router with meshnode's settings (also the benchmarks' raw baseline).

    Heartbeat 1 s (py-libp2p's default is 120 s: pitfall 6) and py-libp2p's
    built-in spam limit off (it also counted our own publishes; our per-peer
    and per-author limits run before validation instead).
    """
    return GossipSub(
        protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=degree,
        degree_low=degree_low,
        degree_high=degree_high,
        heartbeat_interval=heartbeat_interval,  # type: ignore[arg-type]
        spam_protection_enabled=False,
        score_params=scoring,
    )


Judge = Callable[[bytes, str, Swarm], Awaitable[Verdict]]


def message_id(msg: object) -> bytes:
    """The pubsub message id: the record id of the payload (BLAKE2b-256)."""
    return record_id(getattr(msg, "data", b"") or b"")


@contextlib.asynccontextmanager
async def running_pubsub(pubsub: Pubsub) -> AsyncIterator[Pubsub]:
    """Run ``pubsub`` and its router as services until the block ends; ready on entry."""
    router = pubsub.router
    if not isinstance(router, Service):
        raise TypeError(f"{type(router).__name__} is not a libp2p Service (GossipSub is)")
    async with background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        yield pubsub


def plain_pubsub(host: IHost, *, record_ids: bool = False) -> Pubsub:
    """GossipSub on ``host`` with meshnode's router settings but no validator and no scoring.

    What the benchmarks measure against and what the tests' raw (and hostile)
    peers speak. ``record_ids``: message id = record id, as meshnode nodes
    use; otherwise libp2p's default (sender and sequence number).
    """
    if record_ids:
        return Pubsub(host, new_router(), msg_id_constructor=message_id)
    return Pubsub(host, new_router())


@dataclass
class GossipStats:
    published: int = 0
    accepted: int = 0
    ignored: int = 0
    rejected: int = 0
    validator_errors: int = 0
    banned_peers: int = 0
    refused_connections: int = 0


class _BannedPeerGate(Notifee):
    """Closes any new connection from a banned peer as soon as it is secured.

    An address cannot tell peers apart behind it (or on loopback); a ban is
    by peer id, so it is enforced once the Noise handshake has proved who is
    calling. (Refused addresses are closed earlier, unread, by the
    connection manager.)
    """

    def __init__(self, gossip: RecordGossip) -> None:
        self._gossip = gossip

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        try:
            peer = conn.muxed_conn.peer_id
            if self._gossip.bans.is_banned(peer.to_base58()) and self._gossip._nursery is not None:
                self._gossip.stats.refused_connections += 1
                self._gossip._nursery.start_soon(self._gossip._disconnect, peer)
        except Exception as exc:  # a notifee must never raise into libp2p
            log.debug("banned-peer gate: %r", exc)
        await trio.lowlevel.checkpoint()


class RecordGossip:
    """GossipSub on one libp2p host, carrying the records of the swarms joined."""

    def __init__(
        self,
        host: IHost,
        judge: Judge,
        *,
        heartbeat_interval: float = 1.0,
        degree: int = 6,
        degree_low: int = 4,
        degree_high: int = 12,
        publish_queue: int = 256,
        publish_interval: float = 0.0,
        penalties: PeerPenalties | None = None,
        bans: SharedBans | None = None,
    ) -> None:
        self.host = host
        self._judge = judge
        self.router = new_router(
            heartbeat_interval=heartbeat_interval,
            degree=degree,
            degree_low=degree_low,
            degree_high=degree_high,
            scoring=score_params(),
        )
        self.pubsub = Pubsub(
            host,
            self.router,
            msg_id_constructor=message_id,
            max_inbound_rpc_size=MAX_RPC_SIZE,
        )
        self.stats = GossipStats()
        self.penalties = penalties or PeerPenalties()
        self.bans = bans if bans is not None else SharedBans(BanBook(), clock=_wall_clock_ms)
        # The IP a peer is directly connected from (None: unknown or relayed),
        # counted against its address when it is banned; the node sets it.
        self.ip_of: Callable[[str], str | None] = lambda peer: None
        self._swarms: dict[str, Swarm] = {}
        self._publish_send, self._publish_recv = trio.open_memory_channel[tuple[str, bytes]](publish_queue)
        self._publish_interval = publish_interval
        self._nursery: trio.Nursery | None = None
        self._drainers: dict[str, trio.CancelScope] = {}
        self.on_accept: Callable[[ID], None] | None = None  # a forwarder delivered a valid new record

    # --- lifecycle -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run pubsub, the router and the publisher until cancelled."""
        async with running_pubsub(self.pubsub):
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._publisher)
                self.host.get_network().register_notifee(_BannedPeerGate(self))
                self.bans.register(self)
                try:
                    task_status.started()
                    await trio.sleep_forever()
                finally:
                    self.bans.unregister(self)

    # --- swarms ----------------------------------------------------------------

    async def join(self, swarm: Swarm) -> None:
        """Subscribe to ``swarm``'s topic with a validator; idempotent."""
        if self._nursery is None:
            raise RuntimeError("RecordGossip.join() before run() started")
        topic = swarm.topic
        if topic in self._swarms:
            return
        self._swarms[topic] = swarm
        self.pubsub.set_topic_validator(topic, self._validator, True)
        subscription = await self.pubsub.subscribe(topic)
        scope = trio.CancelScope()
        self._drainers[topic] = scope
        self._nursery.start_soon(self._drain, subscription, scope)

    async def leave(self, swarm: Swarm) -> None:
        topic = swarm.topic
        if self._swarms.pop(topic, None) is None:
            return
        scope = self._drainers.pop(topic, None)
        if scope is not None:
            scope.cancel()
        try:
            await self.pubsub.unsubscribe(topic)
        finally:
            self.pubsub.remove_topic_validator(topic)

    def joined(self) -> list[Swarm]:
        return list(self._swarms.values())

    async def publish(self, swarm: Swarm, data: bytes) -> None:
        """Queue ``data`` for publishing on ``swarm``; waits while the queue is full."""
        await self._publish_send.send((swarm.topic, data))

    def peer_score(self, peer: str, swarm: Swarm) -> float:
        """GossipSub's score of ``peer`` on ``swarm``'s topic (0 when unscored)."""
        scorer = getattr(self.router, "scorer", None)
        if scorer is None:
            return 0.0
        return float(scorer.score(ID.from_base58(peer), [swarm.topic]))

    def mesh_peers(self, swarm: Swarm) -> list[str]:
        return [p.to_base58() for p in self.pubsub.peer_topics.get(swarm.topic, set())]

    # --- internals -------------------------------------------------------------

    async def _publisher(self) -> None:
        async for topic, data in self._publish_recv:
            if topic not in self._swarms:
                continue
            try:
                await self.pubsub.publish(topic, data)
                self.stats.published += 1
            except Exception as exc:  # a failing publish must not stop the publisher
                log.warning("publish on %s failed: %s", topic[:40], exc)
            if self._publish_interval:
                await trio.sleep(self._publish_interval)
            else:
                await trio.lowlevel.checkpoint()

    async def _drain(self, subscription: object, scope: trio.CancelScope) -> None:
        with scope:
            get = subscription.get  # type: ignore[attr-defined]
            while True:
                try:
                    await get()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return

    async def _validator(self, forwarder: ID, msg: object) -> bool:
        """The topic validator: never raises (a raising validator kills the host)."""
        try:
            topics = list(getattr(msg, "topicIDs", []))
            swarm = self._swarms.get(topics[0]) if len(topics) == 1 else None
            if swarm is None:
                verdict = Verdict.REJECT
            else:
                peer = forwarder.to_base58()
                if peer == self.host.get_id().to_base58():
                    peer = "local"
                verdict = await self._judge(bytes(msg.data), peer, swarm)  # type: ignore[attr-defined]
        except trio.Cancelled:
            raise
        except Exception as exc:
            self.stats.validator_errors += 1
            log.debug("validator error: %r", exc)
            verdict = Verdict.REJECT
        if verdict is Verdict.ACCEPT:
            self.stats.accepted += 1
            if self.on_accept is not None:
                try:
                    self.on_accept(forwarder)
                except Exception as exc:  # never raise out of the validator
                    log.debug("on_accept failed: %r", exc)
            return True
        if verdict is Verdict.IGNORE:
            self.stats.ignored += 1
            return False
        self.stats.rejected += 1
        try:
            if forwarder != self.host.get_id():
                scorer = getattr(self.router, "scorer", None)
                if scorer is not None:
                    scorer.penalize_behavior(forwarder, 1.0)
                self._count_offences(forwarder, 1)
        except Exception as exc:  # never raise out of the validator
            log.debug("penalty bookkeeping failed: %r", exc)
        return False

    def penalise(self, peer: str, weight: int = 1) -> bool:
        """Count ``weight`` offences of ``peer`` seen outside gossip (e.g. by sync).

        The same bookkeeping as an invalid gossiped record, ``weight`` times: the
        peer's gossip score drops and at the limit it is banned (blacklisted and
        disconnected). Returns True when this call banned it. Never raises.
        """
        try:
            pid = ID.from_base58(peer)
            if pid == self.host.get_id():
                return False
            scorer = getattr(self.router, "scorer", None)
            if scorer is not None:
                scorer.penalize_behavior(pid, float(weight))
            return self._count_offences(pid, weight)
        except Exception as exc:
            log.debug("penalising %s failed: %r", peer, exc)
        return False

    def _count_offences(self, peer: ID, weight: int) -> bool:
        """Count ``weight`` offences of ``peer``; ban it at the limit or on probation. True if banned now.

        ``self.penalties`` counts offences per peer in a sliding window and
        says once when a peer reaches its limit; a peer it named before whose
        ban has ended, or that the ban book has on probation, is banned again
        at once. A peer banned already (on any host) is not banned again.
        """
        text = peer.to_base58()
        now = time.monotonic()
        limit_reached = False
        for _ in range(max(weight, 1)):
            limit_reached = self.penalties.record(text, now) or limit_reached
        if self.bans.is_banned(text):
            return False
        if limit_reached or text in self.penalties.banned or self.bans.on_probation(text):
            return self._ban(peer)
        return False

    def _ban(self, peer: ID) -> bool:
        """Ban ``peer`` in the shared book, which has every host enforce it; True if it was not banned."""
        text = peer.to_base58()
        outcome = self.bans.ban(text, self.ip_of(text))
        if outcome.banned:
            self.stats.banned_peers += 1
        return outcome.banned

    # --- Enforcer (the shared ban book calls these) -------------------------------

    def enforce_ban(self, peer: str) -> None:
        """Blacklist ``peer`` in pubsub and close its connections to this host."""
        pid = ID.from_base58(peer)
        # Into the blacklist set only: add_to_blacklist() also starts a teardown
        # task that races the connection closing below and then kills pubsub,
        # and the host with it (pitfall 38). Closing the connection makes
        # pubsub forget the peer properly (streams, queues, router, topics).
        self.pubsub.blacklisted_peers.add(pid)
        if self._nursery is not None and pid in self.host.get_connected_peers():
            self._nursery.start_soon(self._disconnect, pid)

    def lift_bans(self, still_banned: Callable[[str], bool]) -> None:
        """Take the peers whose bans ended out of the pubsub blacklist."""
        for pid in list(self.pubsub.blacklisted_peers):
            if not still_banned(pid.to_base58()):
                self.pubsub.blacklisted_peers.discard(pid)

    async def _disconnect(self, peer: ID) -> None:
        try:
            with trio.move_on_after(5):
                await self.host.disconnect(peer)
        except Exception as exc:
            log.debug("disconnect of %s failed: %r", peer, exc)
