"""Sync (/meshnode/sync/1) between real nodes on 127.0.0.1: newcomers, restarts,
healed partitions, and peers that lie.

Every rule of the session (message order, expected ids, END counts, limits)
is tested as transcripts in ``test_sync_session.py``, framing in
``test_sync_channel.py``, the messages in ``test_sync_messages.py``; the
lying peers here are the ones that need the whole node: the cut-off, the
penalty and ban, ingest refusing forged records, and both roles' timeouts.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator

import nacl.signing
import pytest
import trio
from libp2p.peer.id import ID

from meshnode import records as rec
from meshnode import wire
from meshnode.identity import Identity
from meshnode.node import Node, NodeConfig
from meshnode.protocols.host import build_host, dial, parse_listen, peer_info_of
from meshnode.protocols.sync.channel import Channel, frame
from meshnode.protocols.sync.limits import SyncLimits
from meshnode.protocols.sync.messages import (
    VERSION,
    End,
    Hello,
    Message,
    NotWant,
    Reconcile,
    Records,
    Refuse,
    RefuseCode,
    decode_message,
)
from meshnode.protocols.sync.service import PROTOCOL_ID
from meshnode.reconcile import Reconciler, SortedItems
from meshnode.store import Store
from meshnode.swarm import Swarm
from tests.netutil import running_nodes, wait_until

pytestmark = pytest.mark.timeout(60)

FAST = SyncLimits(read_timeout=1.0, write_timeout=1.0, connect_timeout=2.0, max_rounds=64)


def signed(n: int, swarm: bytes, *, authors: int = 10, title: str = "Thing") -> list[bytes]:
    """``n`` valid offer records by ``authors`` fresh keys, timestamps in the last minutes."""
    keys = [nacl.signing.SigningKey.generate() for _ in range(authors)]
    now = int(time.time() * 1000)
    return [
        rec.new_record(
            rec.OfferBody(title=f"{title} {i}", kind="give"),
            swarm=swarm,
            seq=i // authors + 1,
            ts=now - 300_000 + i * 7,
            signing_key=keys[i % authors],
        ).encoded
        for i in range(n)
    ]


def ids_of(node: Node, swarm: Swarm) -> set[bytes]:
    return {i for _, i in node.store.ids_in_range(swarm.id, None, None, 10**9)}


async def join_all(nodes: list[Node], swarm: Swarm) -> None:
    for node in nodes:
        await node.join_swarm(swarm)


# --- honest nodes --------------------------------------------------------------------


async def test_a_newcomer_gets_all_2000_earlier_records(tmp_path):
    swarm = Swarm.create("Elm Street")
    async with running_nodes(tmp_path, 2, min_peers=0, sync_interval=0) as (a, b):
        await a.join_swarm(swarm)
        report = await a.ingest.ingest_many(signed(2000, swarm.id))
        assert report.stored == 2000 and len(a.sync_index(swarm.id)) == 2000
        await b.join_swarm(swarm)
        await b.connect(a.addrs()[0])  # the connect itself starts the sync
        took = await wait_until(lambda: len(b.sync_index(swarm.id)) == 2000, timeout=20)
        assert ids_of(b, swarm) == ids_of(a, swarm)  # the index follows the store (on_stored)
        # Each side counts its session when its own end is done: wait for both.
        await wait_until(
            lambda: a.sync_stats()["sessions_completed"] == b.sync_stats()["sessions_completed"] == 1,
            timeout=5,
        )
        sa, sb = a.sync_stats(), b.sync_stats()
        assert sa["records_sent"] + sb["records_sent"] == 2000
        assert sa["records_fetched"] + sb["records_fetched"] == 2000
        assert sa["sessions_aborted"] == sb["sessions_aborted"] == 0
        assert sa["bytes_out"] + sb["bytes_out"] > sum(map(len, (r for r in signed(1, swarm.id))))
        print(f"2,000 records synced in {took:.2f} s")


async def test_a_restarted_node_catches_up_on_what_it_missed(tmp_path):
    swarm = Swarm.create("Oak Lane")
    ident = Identity.generate()
    path = tmp_path / "b.db"

    def node_b() -> Node:
        return Node(ident, Store.open(path), NodeConfig(min_peers=0, sync_interval=0.5))

    async with running_nodes(tmp_path, 2, min_peers=0, sync_interval=0.5) as (a, c):
        await join_all([a, c], swarm)
        await c.connect(a.addrs()[0])
        await a.ingest.ingest_many(signed(100, swarm.id, title="Before"))
        b = node_b()
        async with trio.open_nursery() as nursery:
            await nursery.start(b.run)
            await b.join_swarm(swarm)
            await b.connect(a.addrs()[0])
            await wait_until(lambda: b.store.count() == 100, timeout=15)
            nursery.cancel_scope.cancel()
        b.store.close()
        # B is down: A and C publish 500 records (most straight into their stores,
        # a few through gossip); A and C sync between themselves.
        await a.ingest.ingest_many(signed(240, swarm.id, title="From A"))
        await c.ingest.ingest_many(signed(250, swarm.id, title="From C"))
        for i in range(5):
            await a.publish(rec.OfferBody(title=f"Gossiped {i}", kind="lend"), swarm)
            await c.publish(rec.WantBody(title=f"Wanted {i}", kind="lend"), swarm)
        await wait_until(lambda: a.store.count() == c.store.count() == 600, timeout=20)
        # B comes back with the same identity and store, and talks to C only.
        b = node_b()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(b.run)
                await b.join_swarm(swarm)
                assert len(b.sync_index(swarm.id)) == 100  # rebuilt from its store
                await b.connect(c.addrs()[0])
                took = await wait_until(lambda: b.store.count() == 600, timeout=20)
                assert ids_of(b, swarm) == ids_of(a, swarm) == ids_of(c, swarm)
                print(f"caught up on 500 records in {took:.2f} s")
                nursery.cancel_scope.cancel()
        finally:
            b.store.close()


async def test_two_halves_of_a_partition_converge_when_reconnected(tmp_path):
    swarm = Swarm.create("Split Close")
    async with running_nodes(tmp_path, 6, min_peers=0, sync_interval=0.5) as nodes:
        await join_all(nodes, swarm)
        left, right = nodes[:3], nodes[3:]
        for group in (left, right):
            for i in range(3):
                for j in range(i + 1, 3):
                    await group[i].connect(group[j].addrs()[0])
        # Each side publishes while apart: bulk into one node, some gossip from the others.
        await left[0].ingest.ingest_many(signed(300, swarm.id, title="West"))
        await right[0].ingest.ingest_many(signed(300, swarm.id, title="East"))
        for i in range(3):
            await left[1].publish(rec.OfferBody(title=f"West gossip {i}", kind="give"), swarm)
            await right[2].publish(rec.OfferBody(title=f"East gossip {i}", kind="give"), swarm)
        await wait_until(lambda: all(n.store.count() == 303 for n in nodes), timeout=20)
        assert ids_of(left[0], swarm).isdisjoint(ids_of(right[0], swarm))
        assert all(p not in nodes[0].connected_peers() for p in (n.peer_id for n in right))
        # Heal the partition with two links.
        await left[2].connect(right[0].addrs()[0])
        await right[2].connect(left[0].addrs()[0])
        took = await wait_until(
            lambda: all(n.store.count() == len(n.sync_index(swarm.id)) == 606 for n in nodes), timeout=30
        )
        expected = ids_of(nodes[0], swarm)
        assert len(expected) == 606
        assert all(ids_of(n, swarm) == expected for n in nodes)
        assert all(len(n.sync_index(swarm.id)) == 606 for n in nodes)
        assert sum(n.sync_stats()["sessions_aborted"] for n in nodes) == 0
        print(f"6 nodes converged {took:.2f} s after the partition healed")


# --- lying peers -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_host(handler=None) -> AsyncIterator:
    """A bare libp2p host (Noise, Yamux) that speaks /meshnode/sync/1 however we like."""
    host = build_host(Identity.generate(), min_peers=0)
    if handler is not None:
        host.set_stream_handler(PROTOCOL_ID, handler)
    try:
        async with host.run(parse_listen(["/ip4/127.0.0.1/tcp/0"])):
            yield host
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await host.close()


async def send_raw(stream, data: bytes) -> None:
    await stream.write(data)


async def send_msg(stream, msg: Message) -> None:
    await stream.write(frame(msg.to_wire()))


async def recv_msg(stream) -> Message:
    return decode_message(await Channel(stream, read_timeout=5, write_timeout=5).recv())


async def cut_off_after(stream, limit: float) -> float:
    """Read until the honest node ends the stream; how long that took (fails after ``limit``)."""
    start = trio.current_time()
    with trio.fail_after(limit):
        try:
            while await stream.read(65536):
                pass
        except Exception:
            pass
    return trio.current_time() - start


async def honest_until_push(stream, swarm: Swarm, items: SortedItems) -> Reconciler:
    """Play a correct initiator through reconciliation and NOTWANT; return the reconciler."""
    r = Reconciler(items, role="initiator")
    await send_msg(stream, Hello(VERSION, swarm.id, r.initiate()))
    while True:
        msg = await recv_msg(stream)
        assert isinstance(msg, Reconcile), msg
        out = r.receive(msg.message)
        if out is None:
            break
        await send_msg(stream, Reconcile(out))
        if r.done:
            break
    await send_msg(stream, NotWant(()))
    return r


def forged(honest: bytes) -> bytes:
    """The same record with a signature that does not verify."""
    m = rec._record_map(rec.decode_record(honest), with_sig=True)
    return wire.encode(dict(m, sig=bytes(64)))


def penalty_total(node: Node) -> int:
    return node.network().gossip.penalties.invalid_total


async def test_lying_peers_are_cut_off_penalised_and_the_node_keeps_working(tmp_path):
    """Over real hosts: each kind of lie ends the stream, costs its weight, and is reported.

    Moved to transcripts (test_sync_session.py): a malformed fingerprint, a
    diff for no idlist, an END with a wrong count (and every other order
    violation); to test_sync_channel.py: a 1 MiB + 1 frame, a peer that stops
    answering mid-session.
    """
    swarm = Swarm.create("Elm Street")
    config = dict(min_peers=0, sync_interval=0, sync_on_connect=False, sync_limits=FAST)
    async with running_nodes(tmp_path, 2, **config) as (a, b):
        await join_all([a, b], swarm)
        mine = signed(50, swarm.id)
        await a.ingest.ingest_many(mine)
        items_a = SortedItems((rec.decode_record(d).ts, rec.record_id(d)) for d in mine)
        a_id = ID.from_base58(a.peer_id)
        stray = signed(1, swarm.id, title="Stray")[0]
        bad = forged(signed(1, swarm.id, title="Forged")[0])

        async def attack(name: str, play, weight: int, why: str, limit: float = 3.0) -> None:
            """A fresh hostile identity opens a sync stream to A and plays ``play``."""
            before, aborted = penalty_total(a), a.sync_stats()["sessions_aborted"]
            async with raw_host() as h:
                await dial(h, peer_info_of(a.addrs()[0]))
                stream = await h.new_stream(a_id, [PROTOCOL_ID])
                await play(stream)
                took = await cut_off_after(stream, limit)
                await wait_until(lambda: penalty_total(a) >= before + weight, timeout=limit)
            assert penalty_total(a) == before + weight, name
            assert a.sync_stats()["sessions_aborted"] == aborted + 1, name
            error = a.sync_reports()[-1].error
            assert why in error, (name, error)
            print(f"{name}: cut off after {took:.2f} s, penalised {weight} ({error})")

        async def garbage(stream):
            await send_raw(stream, frame(b"\xff\x00 not cbor at all"))

        async def huge_prefix(stream):
            await send_raw(stream, (2**32 - 1).to_bytes(4, "big") + b"x" * 1000)

        async def wrong_first_message(stream):
            await send_msg(stream, Records((stray,)))

        async def endless_fingerprints(stream):  # well-formed, never converges
            r = Reconciler(SortedItems(), role="initiator")
            await send_msg(stream, Hello(VERSION, swarm.id, r.initiate()))
            with contextlib.suppress(Exception):
                for _ in range(200):
                    await recv_msg(stream)
                    await send_msg(stream, Reconcile(wire.encode([1, [[None, 1, os.urandom(16)]]])))

        async def silent(stream):
            pass  # never says HELLO

        async def forged_record(stream):  # claims to hold it, reconciles honestly, pushes it
            items = SortedItems([*items_a, (rec.decode_record(bad).ts, rec.record_id(bad))])
            await honest_until_push(stream, swarm, items)
            await send_msg(stream, Records((bad,)))
            await send_msg(stream, End(1))

        async def unrequested_record(stream):  # reconciles as if it held A's set, pushes more
            await honest_until_push(stream, swarm, items_a)
            await send_msg(stream, Records((stray,)))

        async def lying_end(stream):
            await honest_until_push(stream, swarm, items_a)
            await send_msg(stream, End(5))

        for name, play, weight, why in [
            ("garbage frame", garbage, 10, "malformed frame"),
            ("2**32-1 length prefix", huge_prefix, 10, "frame length 4294967295"),
            ("RECORDS before HELLO", wrong_first_message, 10, "expected HELLO"),
            ("forged record", forged_record, 10, "fail validation"),
            ("record it was not asked for", unrequested_record, 10, "was not expected"),
            ("END with a wrong count", lying_end, 10, "END counts 5"),
            ("endless random fingerprints", endless_fingerprints, 10, "at most 64 messages"),
            ("never says HELLO", silent, 4, "SyncTimeout"),
        ]:
            await attack(name, play, weight, why)

        # A as initiator against a responder that never answers, or answers garbage.
        async def mute(stream):
            await trio.sleep(30)

        async def babble(stream):
            with contextlib.suppress(Exception):
                await recv_msg(stream)
                await send_msg(stream, Refuse(2, "x" * 5000))
                await trio.sleep(30)

        for name, handler, weight in [("mute responder", mute, 4), ("babbling responder", babble, 10)]:
            async with raw_host(handler) as h:
                await dial(h, peer_info_of(a.addrs()[0]))
                before = penalty_total(a)
                start = trio.current_time()
                report = await a.sync_with(h.get_id().to_base58(), swarm)
                took = trio.current_time() - start
                assert report.outcome == "aborted", report
                assert took < 3.0
                assert penalty_total(a) == before + weight, name
                print(f"{name}: A gave up after {took:.2f} s ({report.error})")

        # Two violations from one identity within a minute: banned and disconnected.
        gossip_a = a.network().gossip
        async with raw_host() as h:
            hostile = h.get_id().to_base58()
            await dial(h, peer_info_of(a.addrs()[0]))
            for _ in range(2):
                with contextlib.suppress(Exception):
                    stream = await h.new_stream(a_id, [PROTOCOL_ID])
                    await garbage(stream)
                    await cut_off_after(stream, 3.0)
            await wait_until(lambda: hostile in gossip_a.penalties.banned, timeout=5)
            await wait_until(lambda: hostile not in a.connected_peers(), timeout=5)
            # a banned peer's next session is refused outright
            with contextlib.suppress(Exception):
                await dial(h, peer_info_of(a.addrs()[0]))
                stream = await h.new_stream(a_id, [PROTOCOL_ID])
                await send_msg(
                    stream, Hello(VERSION, swarm.id, Reconciler(SortedItems(), role="initiator").initiate())
                )
                await cut_off_after(stream, 3.0)

        # None of it was stored, and A still syncs with an honest peer.
        assert a.store.count() == 50
        assert not a.store.has(rec.record_id(bad)) and not a.store.has(rec.record_id(stray))
        await b.connect(a.addrs()[0])
        report = await b.sync_with(a.peer_id, swarm)
        assert report.outcome == "ok" and report.records_stored == 50, report
        assert ids_of(b, swarm) == ids_of(a, swarm)
        assert penalty_total(b) == 0


async def test_a_busy_responder_refuses_and_the_initiator_stops_there(tmp_path):
    """REFUSE code BUSY ends the initiator's run over its swarms (it used to match a string prefix)."""
    swarms = [Swarm.create("Elm Street"), Swarm.create("Oak Lane")]
    config = dict(min_peers=0, sync_interval=0, sync_on_connect=False, sync_limits=FAST)
    async with running_nodes(tmp_path, 1, **config) as (a,):
        for swarm in swarms:
            await a.join_swarm(swarm)
        refusals = 0

        async def busy(stream):
            nonlocal refusals
            with contextlib.suppress(Exception):
                await recv_msg(stream)
                await send_msg(stream, Refuse(RefuseCode.BUSY, "busy: try again later"))
                refusals += 1
                await stream.close()

        async with raw_host(busy) as h:
            await dial(h, peer_info_of(a.addrs()[0]))
            peer = h.get_id().to_base58()
            reports = await a.network().sync.sync_peer(peer, swarms)
        assert [r.outcome for r in reports] == ["refused"], reports
        assert reports[0].refuse_code == RefuseCode.BUSY and refusals == 1
        assert reports[0].error == "refused (2): busy: try again later"
        assert a.sync_stats()["sessions_refused"] == 1 and penalty_total(a) == 0
