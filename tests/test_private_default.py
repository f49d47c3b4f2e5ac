"""Swarms are private unless asked otherwise: an outsider who connects learns and stores nothing.

py-libp2p tells every new peer the topics it subscribes to, and a topic holds
the swarm id, so an open swarm is readable by anyone who can connect. A
default ``swarm create`` must therefore make a private swarm (its own host,
behind the swarm's pre-shared key). The control in each test is an open swarm
on the same daemon: the outsider does learn that one, which shows it looked.
"""

from __future__ import annotations

import contextlib
import time

import nacl.signing
import pytest
import trio

from meshnode import records as rec
from meshnode.errors import NetworkError
from meshnode.protocols.host import dial, peer_info_of
from meshnode.swarm import decode_invite
from tests.daemonutil import Daemon, stopped_at_exit
from tests.test_hostile import raw_peer

pytestmark = pytest.mark.timeout(120)


async def cli(d: Daemon, *args: str):
    return await trio.to_thread.run_sync(lambda: d.cli(*args))


async def test_default_swarm_is_private_and_an_outsider_learns_and_stores_nothing(tmp_path):
    with stopped_at_exit() as started:
        alice = await trio.to_thread.run_sync(lambda: Daemon(tmp_path / "alice").start())
        started.append(alice)
        created = await cli(alice, "swarm", "create", "Elm Street")
        assert created.stdout.startswith("created private swarm 'Elm Street'")
        opened = await cli(alice, "swarm", "create", "Town Square", "--open")
        assert opened.stdout.startswith("created OPEN swarm 'Town Square'")
        assert "anyone who can connect" in opened.stderr and "--open" in opened.stderr
        listed = (await cli(alice, "swarm", "list")).stdout
        assert "private: invitees only" in listed and "OPEN: anyone who connects" in listed
        await cli(alice, "offer", "add", "Cordless drill", "--swarm", "Elm Street")
        elm = decode_invite((await cli(alice, "swarm", "invite", "Elm Street")).stdout.strip())
        square = decode_invite((await cli(alice, "swarm", "invite", "Town Square")).stdout.strip())
        assert elm.swarm.private and not square.swarm.private
        private_addrs = set(elm.addrs) - set(square.addrs)
        assert private_addrs, "a private swarm listens on its own host"

        # Without the swarm's key the private host does not even finish a handshake
        # (a fresh outsider: one already connected to the node's peer id would not dial).
        for addr in private_addrs:
            async with raw_peer() as (host, _):
                with pytest.raises(NetworkError):
                    await dial(host, peer_info_of(addr), timeout=5)
                assert not host.get_connected_peers()

        async with raw_peer() as (host, pubsub):
            # The outsider connects to Alice's open host, the one mDNS would show it.
            info = peer_info_of(alice.addrs[0])
            await dial(host, info, timeout=10)
            with trio.fail_after(30):  # control: the open swarm's topic is told to every peer
                while square.swarm.topic not in pubsub.peer_topics:
                    await trio.sleep(0.05)
            told = set(pubsub.peer_topics)
            assert elm.swarm.topic not in told
            assert not any(elm.swarm.id.hex() in topic for topic in told)

            # Even knowing the swarm id, what the outsider posts is not stored.
            key = nacl.signing.SigningKey.generate()
            now = int(time.time() * 1000)

            def offer(title: str, swarm_id: bytes, seq: int) -> rec.Record:
                body = rec.OfferBody(title=title, kind="give")
                return rec.new_record(body, swarm=swarm_id, seq=seq, ts=now, signing_key=key)

            intruder = offer("Free money", elm.swarm.id, 1)
            control = offer("Garden chairs", square.swarm.id, 2)
            await pubsub.subscribe(elm.swarm.topic)
            await pubsub.subscribe(square.swarm.topic)
            with trio.fail_after(30):  # control: a post in the open swarm arrives
                while True:
                    with contextlib.suppress(Exception):
                        await pubsub.publish(elm.swarm.topic, intruder.encoded)
                        await pubsub.publish(square.swarm.topic, control.encoded)
                    titles = {o["title"] for o in await trio.to_thread.run_sync(alice.json, "offer", "list")}
                    if "Garden chairs" in titles:
                        break
                    await trio.sleep(0.2)
            assert titles == {"Cordless drill", "Garden chairs"}
