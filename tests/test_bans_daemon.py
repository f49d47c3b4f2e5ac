"""A real daemon keeps its bans in its home: a peer banned before a restart is refused after it."""

from __future__ import annotations

import contextlib
import os
import stat
import time

import cbor2
import nacl.signing
import pytest
import trio

from meshnode import records as rec
from meshnode.protocols.host import dial, peer_info_of
from meshnode.swarm import decode_invite
from tests.daemonutil import Daemon, stopped_at_exit
from tests.test_hostile import raw_peer

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


async def status(d: Daemon) -> dict:
    return await trio.to_thread.run_sync(d.json, "status")


async def test_a_ban_survives_a_restart_of_the_daemon(tmp_path):
    home = tmp_path / "alice"
    with stopped_at_exit() as started:
        alice = await trio.to_thread.run_sync(lambda: Daemon(home).start())
        started.append(alice)
        await trio.to_thread.run_sync(lambda: alice.cli("swarm", "create", "Square", "--open"))
        code = (await trio.to_thread.run_sync(lambda: alice.cli("swarm", "invite", "Square"))).stdout
        swarm = decode_invite(code.strip()).swarm
        template = rec._record_map(
            rec.new_record(
                rec.OfferBody(title="Free money", kind="give"),
                swarm=swarm.id,
                seq=1,
                ts=int(time.time() * 1000),
                signing_key=nacl.signing.SigningKey.generate(),
            ),
            with_sig=True,
        )

        async with raw_peer() as (host, pubsub):  # the same key before and after the restart
            hostile = host.get_id().to_base58()
            await pubsub.subscribe(swarm.topic)
            await dial(host, peer_info_of(alice.addrs[0]), timeout=10)
            with trio.fail_after(90):  # forged signatures until Alice bans the sender
                n = 0
                while (await status(alice))["gossip"]["bans"] == 0:
                    for _ in range(10):
                        n += 1
                        bad = dict(
                            template, sig=os.urandom(64), body={**template["body"], "title": f"Fake {n}"}
                        )
                        with contextlib.suppress(Exception):
                            await pubsub.publish(swarm.topic, cbor2.dumps(bad, canonical=True))
                    await trio.sleep(0.2)

            await trio.to_thread.run_sync(alice.stop)
            bans = home / "bans.cbor"
            assert bans.exists() and stat.S_IMODE(bans.stat().st_mode) == 0o600

            again = await trio.to_thread.run_sync(lambda: Daemon(home).start())
            started.append(again)
            assert again.addrs[0] == alice.addrs[0]  # the open host keeps its port
            assert (await status(again))["gossip"]["bans"] == 1

            # The banned key comes back: closed as soon as its handshake is done.
            with trio.fail_after(60):
                while (await status(again))["gossip"]["refused_connections"] == 0:
                    with contextlib.suppress(Exception):
                        await dial(host, peer_info_of(again.addrs[0]), timeout=5)
                    await trio.sleep(0.5)
            assert hostile not in {p["peer_id"] for p in await trio.to_thread.run_sync(again.json, "peers")}
