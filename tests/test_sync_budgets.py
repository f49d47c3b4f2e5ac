"""Budgets and minimum progress of sync sessions, between real nodes on 127.0.0.1.

A peer may make this node take only so many records, bytes and never-seen
authors per session and per hour (over budget: the session stops taking,
says why, and nobody is penalised); a peer too slow to make progress loses
its inbound slot. The pure parts (``PeerBudgets``, the session's counting)
are tested in ``test_sync_limits.py`` and ``test_sync_session.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import trio
from libp2p.peer.id import ID

from meshnode.node import Node
from meshnode.protocols.host import dial, peer_info_of
from meshnode.protocols.sync.limits import SyncLimits
from meshnode.protocols.sync.messages import VERSION, Hello, NotWant
from meshnode.protocols.sync.service import PROTOCOL_ID
from meshnode.reconcile import Reconciler, SortedItems
from meshnode.swarm import Swarm
from tests.netutil import running_nodes, wait_until
from tests.test_sync import join_all, penalty_total, raw_host, recv_msg, send_msg, signed

pytestmark = pytest.mark.timeout(90)


@contextlib.asynccontextmanager
async def plain_and_limited(tmp_path, limits: SyncLimits) -> AsyncIterator[tuple[Node, Node]]:
    """Node A with the default limits, node B with ``limits``; no sync unless asked."""
    (tmp_path / "b").mkdir()
    config = dict(min_peers=0, sync_interval=0, sync_on_connect=False)
    async with running_nodes(tmp_path, 1, **config) as (a,):
        async with running_nodes(tmp_path / "b", 1, **config, sync_limits=limits) as (b,):
            yield a, b


async def test_a_peer_over_its_budgets_is_cut_short_and_told_why_not_penalised(tmp_path):
    swarm = Swarm.create("Elm Street")
    limits = SyncLimits(session_records=100, hour_records=150, session_bytes=1 << 30, hour_bytes=1 << 30)
    async with plain_and_limited(tmp_path, limits) as (a, b):
        await join_all([a, b], swarm)
        await a.ingest.ingest_many(signed(300, swarm.id))
        await b.connect(a.addrs()[0])

        first = await b.sync_with(a.peer_id, swarm)
        assert first.outcome == "ok", first
        assert (first.records_stored, first.records_over_budget) == (100, 200)
        assert first.budget == "reached the session's budget of 100 records"
        # the hour has 50 left
        second = await b.sync_with(a.peer_id, swarm)
        assert second.outcome == "ok" and second.records_stored == 50, second
        assert "hourly budget of 150 records (50 were left)" in second.budget
        third = await b.sync_with(a.peer_id, swarm)
        assert third.outcome == "ok" and third.records_stored == 0, third
        assert b.store.count() == 150
        assert b.sync_stats()["records_over_budget"] == 200 + 150 + 150
        assert penalty_total(a) == penalty_total(b) == 0
        assert a.peer_id in b.connected_peers()


async def test_authors_never_seen_have_their_own_budget_in_sync(tmp_path):
    swarm = Swarm.create("Elm Street")
    limits = SyncLimits(session_new_authors=4)
    async with plain_and_limited(tmp_path, limits) as (a, b):
        await join_all([a, b], swarm)
        await a.ingest.ingest_many(signed(200, swarm.id, authors=20))  # 10 records each
        await b.connect(a.addrs()[0])
        report = await b.sync_with(a.peer_id, swarm)
        assert report.outcome == "ok", report
        assert report.records_stored == 40 and report.new_authors_refused == 160, report
        assert report.budget == "reached the session's budget of 4 new authors"
        assert penalty_total(a) == penalty_total(b) == 0


async def test_a_slow_loris_loses_its_inbound_slot(tmp_path):
    """A peer that trickles bytes without finishing frames keeps no slot past the progress minimum.

    Before the minimum it kept the slot until the read timeout (here 20 s; 20 s per frame
    by default, 600 s for a session that sends one small frame every 19 s).
    """
    swarm = Swarm.create("Elm Street")
    limits = SyncLimits(
        read_timeout=20.0, write_timeout=20.0, max_inbound=1, min_progress_rate=2000.0, progress_grace=0.5
    )
    config = dict(min_peers=0, sync_interval=0, sync_on_connect=False, sync_limits=limits)
    async with running_nodes(tmp_path, 2, **config) as (a, b):
        await join_all([a, b], swarm)
        await b.ingest.ingest_many(signed(20, swarm.id))
        service = a.network().sync
        started = trio.Event()

        async with raw_host() as h:
            loris = h.get_id().to_base58()
            await dial(h, peer_info_of(a.addrs()[0]))
            stream = await h.new_stream(ID.from_base58(a.peer_id), [PROTOCOL_ID])

            async def trickle() -> None:
                with contextlib.suppress(Exception):
                    await send_msg(
                        stream,
                        Hello(VERSION, swarm.id, Reconciler(SortedItems(), role="initiator").initiate()),
                    )
                    await recv_msg(stream)
                    started.set()
                    frame = NotWant(()).to_wire()
                    data = len(frame).to_bytes(4, "big") + frame
                    for byte in data[:-1]:  # never the last byte: no frame completes
                        await stream.write(bytes([byte]))
                        await trio.sleep(0.5)
                    await trio.sleep_forever()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle)
                await started.wait()
                assert loris in service._inbound  # it holds the only slot
                took = await wait_until(lambda: loris not in service._inbound, timeout=10)
                nursery.cancel_scope.cancel()
        report = next(r for r in reversed(a.sync_reports()) if r.peer == loris)
        assert report.outcome == "aborted" and "minimum progress" in report.error, report
        print(f"slow loris lost its slot after {took:.2f} s: {report.error}")
        # the slot is free: an honest peer syncs
        await b.connect(a.addrs()[0])
        honest = await b.sync_with(a.peer_id, swarm)
        assert honest.outcome == "ok", honest
        await wait_until(lambda: a.store.count() == 20, timeout=10)  # A stores what B pushed
