"""The valid-but-hostile flood of issue 12, against a real daemon.

A member of Alice's swarm holds 30,000 valid records signed by 1,000 fresh
keys (offers, vouches for random keys, proposals naming random ids,
withdraws of ids nobody has) and pushes them through sync, then a fresh
batch through gossip. Alice's store stays within her quotas, her own and
her vouched-for neighbour's records are all kept and listed first, and
``offer list`` answers in under half a second.
"""

from __future__ import annotations

import time

import pytest
import trio

from meshnode.cli.client import ApiClient
from meshnode.home import Home
from meshnode.identity import Identity
from meshnode.node import Node, NodeConfig
from meshnode.store import Store
from meshnode.swarm import decode_invite
from tests.daemonutil import Daemon, stopped_at_exit
from tests.floodgen import flood_records
from tests.netutil import wait_until

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

SWARM_QUOTA = 1_000  # Alice's [store] max_records_per_swarm: small, so the flood must evict
AUTHOR_QUOTA = 1_000


async def cli(d: Daemon, *args: str):
    return await trio.to_thread.run_sync(lambda: d.cli(*args))


async def as_json(d: Daemon, *args: str):
    return await trio.to_thread.run_sync(lambda: d.json(*args))


def usage(path) -> tuple[int, int, int]:
    """(records in the swarm table, the most by one author, the most in one swarm) of a store file."""
    with Store.open(path, readonly=True) as store:
        conn = store._conn
        total = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        by_author = conn.execute("SELECT coalesce(max(records), 0) FROM usage").fetchone()[0]
        by_swarm = conn.execute(
            "SELECT coalesce(max(n), 0) FROM (SELECT sum(records) AS n FROM usage GROUP BY swarm)"
        ).fetchone()[0]
    return total, by_author, by_swarm


async def test_a_flood_through_sync_and_gossip_stays_within_the_quotas(tmp_path):
    with stopped_at_exit() as started:
        alice_home = tmp_path / "alice"
        alice_home.mkdir(mode=0o700)
        (alice_home / "config.toml").write_text(f"[store]\nmax_records_per_swarm = {SWARM_QUOTA}\n")
        alice = await trio.to_thread.run_sync(lambda: Daemon(alice_home).start())
        started.append(alice)
        bob = await trio.to_thread.run_sync(lambda: Daemon(tmp_path / "bob").start())
        started.append(bob)
        await cli(alice, "swarm", "create", "Elm Street")
        code = (await cli(alice, "swarm", "invite", "Elm Street")).stdout.strip()
        await cli(bob, "swarm", "join", code)
        mine = [(await as_json(alice, "offer", "add", f"Alice's thing {i}"))["id"] for i in range(3)]
        bobs = [(await as_json(bob, "offer", "add", f"Bob's thing {i}"))["id"] for i in range(2)]
        await cli(alice, "vouch", bob.peer_id)
        await trio.to_thread.run_sync(
            lambda: wait_until_sync(lambda: set(bobs) <= {o["id"] for o in alice.json("offer", "list")})
        )

        swarm = decode_invite(code).swarm
        now = int(time.time() * 1000)
        flood = await trio.to_thread.run_sync(
            lambda: flood_records(30_000, 1_000, swarm=swarm.id, now_ms=now, seed=12)
        )
        gossiped = await trio.to_thread.run_sync(
            lambda: flood_records(3_000, 300, swarm=swarm.id, now_ms=now, seed=13)
        )
        store = Store.open(tmp_path / "mallory.db")
        mallory = Node(
            Identity.generate(),
            store,
            NodeConfig(listen=["/ip4/127.0.0.1/tcp/0"], quotas=None, sync_interval=0, min_peers=0),
        )
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(mallory.run)
                await mallory.join_swarm(swarm)
                report = await mallory.ingest.ingest_many(r.encoded for r in flood)
                assert report.stored == 30_000
                # Through sync: Mallory joins by the invite (a member) and the
                # connection starts a session; Alice takes what her budgets allow.
                await mallory.join_invite(code)
                await wait_until(lambda: mallory.sync_reports(), timeout=120)
                for _ in range(3):  # and Mallory insists: more sessions
                    await mallory.sync_with(alice.peer_id, swarm)
                # Through gossip: 3,000 more from 300 other fresh keys.
                for r in gossiped:
                    await mallory.publish_raw(r.encoded, swarm)
                nursery.cancel_scope.cancel()
        finally:
            store.close()

        status = await as_json(alice, "status")
        stored = status["storage"]["records"]
        print(
            f"alice stores {stored} records after the flood; ingest {status['ingest']}; sync {status['sync']}"
        )
        total, by_author, by_swarm = await trio.to_thread.run_sync(lambda: usage(Home(alice_home).database))
        print(f"records in the file {total}, most by one author {by_author}, most in one swarm {by_swarm}")
        assert by_swarm <= SWARM_QUOTA and by_author <= AUTHOR_QUOTA

        client = ApiClient(Home(alice_home))
        timings = []
        for _ in range(5):
            started_at = time.perf_counter()
            listed = await trio.to_thread.run_sync(lambda: client.get("/offers"))
            timings.append(time.perf_counter() - started_at)
        timings.sort()
        print(
            f"offer list after the flood: median {timings[2] * 1000:.0f} ms, max {timings[-1] * 1000:.0f} ms"
        )
        assert timings[2] < 0.5
        ids = [o["id"] for o in listed]
        assert set(ids[:5]) == set(mine) | set(bobs)  # the honest first: own, then the vouched-for


def wait_until_sync(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)
