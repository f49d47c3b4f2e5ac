"""A hostile peer on the gossip topic cannot get anything stored or crash a node."""

from __future__ import annotations

import contextlib
import dataclasses

import cbor2
import nacl.signing
import pytest
import trio

from meshnode import records as rec
from meshnode.identity import Identity
from meshnode.protocols.gossip import plain_pubsub, running_pubsub
from meshnode.protocols.host import build_host, dial, parse_listen, peer_info_of
from meshnode.swarm import Swarm
from tests.netutil import running_nodes, wait_for_mesh, wait_until

pytestmark = pytest.mark.timeout(90)


@contextlib.asynccontextmanager
async def raw_peer():
    """A bare py-libp2p node with GossipSub and no validation at all."""
    host = build_host(Identity.generate(), min_peers=0)
    try:
        async with (
            host.run(parse_listen(["/ip4/127.0.0.1/tcp/0"])),
            running_pubsub(plain_pubsub(host)) as pubsub,
        ):
            yield host, pubsub
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await host.close()


def _forge_variants(honest: rec.Record, swarm: Swarm, now: int) -> list[bytes]:
    """Every kind of bad record a hostile peer might try.

    All are refused; all but the one from the future count against the sender
    (that one is ignored: an honest relay with a fast clock sends those too).
    """
    key = nacl.signing.SigningKey.generate()
    m = rec._record_map(honest, with_sig=True)
    bad_sig = dict(m, sig=bytes(64))
    other_author = dict(m, author=bytes(key.verify_key))  # signature no longer matches
    tampered = dict(m, body={**m["body"], "title": "Free money"})
    other_swarm = rec.new_record(
        rec.OfferBody(title="elsewhere", kind="give"), swarm=bytes(32), seq=1, ts=now, signing_key=key
    )
    future = rec.new_record(
        rec.OfferBody(title="from the future", kind="give"),
        swarm=swarm.id,
        seq=1,
        ts=now + 3_600_000,
        signing_key=key,
    )
    return [
        b"\xff\x00garbage",
        b"",
        cbor2.dumps({"v": 1}),
        b"\x81" * 5000,
        b"\x5b" + (2**62).to_bytes(8, "big") + b"xx",  # huge length prefix
        b"\xa0" * 20_000,  # oversize record
        cbor2.dumps(bad_sig, canonical=True),
        cbor2.dumps(other_author, canonical=True),
        cbor2.dumps(tampered, canonical=True),
        other_swarm.encoded,
        future.encoded,
    ]


async def test_hostile_peer_is_refused_penalised_and_cut_off(tmp_path):
    swarm = Swarm.create("Elm Street")
    async with running_nodes(tmp_path, 2, min_peers=0, penalty_limit=20) as (a, b):
        await a.join_swarm(swarm)
        await b.join_swarm(swarm)
        await b.connect(a.addrs()[0])
        async with raw_peer() as (h_host, h_pubsub):
            await h_pubsub.subscribe(swarm.topic)
            await dial(h_host, peer_info_of(a.addrs()[0]))
            await wait_for_mesh([a, b], swarm)
            hostile = h_host.get_id().to_base58()
            gossip_a = a.network().gossip
            await wait_until(lambda: hostile in gossip_a.mesh_peers(swarm), timeout=10)
            honest = await b.publish(rec.OfferBody(title="Honest ladder", kind="lend"), swarm)
            await wait_until(lambda: a.store.has(honest.id), timeout=10)
            now = a.clock()
            bad = _forge_variants(honest, swarm, now)
            # Flood until cut off: every variant with a suffix unique to the round,
            # plus replays of the honest record, while B keeps publishing. Like a
            # flooder that wants its messages through, it paces itself on what A
            # judged (the raw peer's 32-message queue drops the rest, pitfall 7:
            # on a loaded machine an unpaced burst reaches A only in part).
            sent = 0
            flowing = []
            flood_start = trio.current_time()
            banned = gossip_a.penalties.banned
            # GossipSub's score of the hostile peer, sampled until it is banned
            # (py-libp2p forgets a peer's score as it disconnects).
            samples: list[tuple[int, float, float]] = []  # (A's rejections, score, when)

            async def sample_score() -> None:
                while hostile not in banned:
                    if hostile in a.connected_peers():
                        score = gossip_a.peer_score(hostile, swarm)
                        samples.append((gossip_a.stats.rejected, score, trio.current_time()))
                    await trio.sleep(0.01)

            async with trio.open_nursery() as sampling:
                sampling.start_soon(sample_score)
                with trio.fail_after(60):
                    while hostile not in banned:
                        judged = a.ingest.stats.invalid
                        for data in bad:
                            with contextlib.suppress(Exception):
                                await h_pubsub.publish(swarm.topic, data + bytes([len(flowing) % 256]))
                                sent += 1
                            with contextlib.suppress(Exception):
                                await h_pubsub.publish(swarm.topic, honest.encoded)  # replay
                        title = f"Still here {len(flowing)}"
                        flowing.append(await b.publish(rec.OfferBody(title=title, kind="give"), swarm))
                        with trio.move_on_after(5):
                            await wait_until(
                                lambda j=judged: a.ingest.stats.invalid > j or hostile in banned, timeout=5
                            )
                await wait_until(lambda: hostile not in a.connected_peers(), timeout=10)
                sampling.cancel_scope.cancel()
            # Honest records keep flowing to A.
            await wait_until(lambda: all(a.store.has(r.id) for r in flowing), timeout=10)
            # Every rejection was fed to GossipSub's score (which decays 1 % per
            # heartbeat): at the last sample before the ban the score was at most
            # minus the rejections so far, less what the heartbeats since the flood
            # began took back. The ban comes at 20 rejections, the publish
            # threshold is -20.
            rejected, score, when = samples[-1]
            assert rejected > 0
            heartbeats = int((when - flood_start) / a.config.heartbeat_interval) + 1
            assert score <= -rejected * 0.99**heartbeats
            assert gossip_a.peer_score(b.peer_id, swarm) == 0
            assert hostile not in a.connected_peers()  # disconnected, and it stays so
            # Nothing of it was stored: A holds exactly B's records.
            assert a.store.count() == 1 + len(flowing)
            assert b.store.count() == 1 + len(flowing)
            stats = a.ingest.stats
            assert stats.invalid >= 20
            assert sent >= 20
            # And A still works: it publishes and B receives.
            after = await a.publish(rec.WantBody(title="Wheelbarrow", kind="lend"), swarm)
            await wait_until(lambda: b.store.has(after.id), timeout=10)


async def test_replayed_record_is_stored_once(tmp_path):
    swarm = Swarm.create("Elm Street")
    async with running_nodes(tmp_path, 2, min_peers=0) as (a, b):
        await a.join_swarm(swarm)
        await b.join_swarm(swarm)
        await b.connect(a.addrs()[0])
        await wait_for_mesh([a, b], swarm)
        record = await a.publish(rec.OfferBody(title="Drill", kind="lend"), swarm)
        await wait_until(lambda: b.store.has(record.id), timeout=10)
        for _ in range(5):
            await a.publish_raw(record.encoded, swarm)
        # A record published after the replays travels behind them (one paced
        # queue, one stream): once B has it, B has judged the replays too.
        marker = await a.publish(rec.OfferBody(title="Ladder", kind="lend"), swarm)
        await wait_until(lambda: b.ingest.stats.stored >= 2 and b.store.has(marker.id), timeout=10)
        assert b.store.count() == 2
        assert dataclasses.asdict(b.ingest.stats)["stored"] == 2
