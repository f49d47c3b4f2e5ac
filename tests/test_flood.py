"""A hostile peer floods a real daemon for 30 s: it stays responsive and bounded, and the peer is cut off."""

from __future__ import annotations

import contextlib
import os

import cbor2
import psutil
import pytest
import trio

from meshnode.protocols.host import dial, peer_info_of
from meshnode.swarm import decode_invite
from tests.daemonutil import Daemon
from tests.test_hostile import raw_peer

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

FLOOD_SECONDS = 30.0


async def cli(d: Daemon, *args: str):
    return await trio.to_thread.run_sync(lambda: d.json(*args))


async def test_thirty_second_flood(tmp_path):
    a = await trio.to_thread.run_sync(lambda: Daemon(tmp_path / "alice").start())
    b = await trio.to_thread.run_sync(lambda: Daemon(tmp_path / "bob").start())
    try:
        await trio.to_thread.run_sync(lambda: a.cli("swarm", "create", "Elm Street", "--open"))
        code = (await trio.to_thread.run_sync(lambda: a.cli("swarm", "invite", "Elm Street"))).stdout.strip()
        await trio.to_thread.run_sync(lambda: b.cli("swarm", "join", code))
        swarm = decode_invite(code).swarm
        proc = psutil.Process(a.proc.pid)
        rss_start = proc.memory_info().rss

        async with raw_peer() as (h_host, h_pubsub):
            await h_pubsub.subscribe(swarm.topic)
            hostile = h_host.get_id().to_base58()
            honest: list[str] = []
            sent = 0
            status_times: list[float] = []
            redials = 0

            async def flood() -> None:
                nonlocal sent, redials
                i = 0
                while True:
                    if hostile and peer_info_of(a.addrs[0]).peer_id not in h_host.get_connected_peers():
                        with contextlib.suppress(Exception):
                            await dial(h_host, peer_info_of(a.addrs[0]), timeout=2)
                            redials += 1
                    i += 1
                    junk = [
                        os.urandom(64),
                        cbor2.dumps({"v": 1, "type": "offer", "n": i}),
                        b"\xa0" * 17_000,
                    ]
                    for data in junk:
                        with contextlib.suppress(Exception):
                            await h_pubsub.publish(swarm.topic, data)
                            sent += 1
                    await trio.sleep(0.002)

            async def honest_traffic() -> None:
                n = 0
                while True:
                    n += 1
                    rid = await trio.to_thread.run_sync(
                        lambda n=n: b.json("offer", "add", f"Honest thing {n}", "--kind", "give")["id"]
                    )
                    honest.append(rid)
                    start = trio.current_time()
                    await trio.to_thread.run_sync(lambda: a.json("status"))
                    status_times.append(trio.current_time() - start)
                    await trio.sleep(1.0)

            with trio.move_on_after(FLOOD_SECONDS):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flood)
                    nursery.start_soon(honest_traffic)

            rss_end = proc.memory_info().rss
            # Honest records kept flowing to A throughout.
            with trio.fail_after(15):
                while True:
                    have = {o["id"] for o in await cli(a, "offer", "list")}
                    if set(honest) <= have:
                        break
                    await trio.sleep(0.5)
            status = await cli(a, "status")
            peers = {p["peer_id"] for p in await cli(a, "peers")}

        print(
            f"flood: {sent} messages sent, {redials} redials; A stored {status['records']} records;"
            f" A's RSS {rss_start / 2**20:.0f} -> {rss_end / 2**20:.0f} MB;"
            f" 'status' answered in at most {max(status_times):.2f} s; gossip {status['gossip']}"
        )
        assert sent > 1000
        assert max(status_times) < 5.0  # the API answered throughout
        assert rss_end - rss_start < 64 * 2**20  # memory stayed bounded
        # Nothing of the flood was stored: A holds B's honest offers only.
        assert status["records"] == len(honest)
        # The hostile peer is penalised and cut off, and stays cut off.
        assert status["gossip"]["banned_peers"] >= 1
        assert hostile not in peers
    finally:
        for d in (a, b):
            await trio.to_thread.run_sync(d.stop)
