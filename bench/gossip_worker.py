"""One process of the multi-process gossip benchmark (see bench/gossip.py).

Runs either a real meshnode ``Node`` (``--mode meshnode``) or a bare
py-libp2p GossipSub node (``--mode raw``) on 127.0.0.1, reads JSON commands
on stdin, and prints JSON events on stdout:

    {"cmd": "connect", "addr": ...}          -> {"ev": "connected"}
    {"cmd": "publish", "payloads": [hex...], "rate": 20}
                                              -> {"ev": "published", "t": [...wall times]}
    {"cmd": "quit"}

and, for every record that becomes stored (meshnode) or delivered (raw):
    {"ev": "got", "id": <hex of BLAKE2b-256 of the bytes>, "t": <wall time>}
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import trio

from bench.common import sample_offer
from meshnode import records as rec
from meshnode.identity import Identity
from meshnode.swarm import Swarm

TOPIC_SWARM = Swarm(name="bench", id=bytes(32))


def emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def commands() -> trio.abc.ReceiveChannel[dict]:
    send, recv = trio.open_memory_channel[dict](100)

    def read() -> None:
        for line in sys.stdin:
            if line.strip():
                trio.from_thread.run(send.send, json.loads(line))
        trio.from_thread.run(send.aclose)

    trio.lowlevel.spawn_system_task(functools.partial(trio.to_thread.run_sync, read, abandon_on_cancel=True))
    return recv


async def run_meshnode(args: argparse.Namespace) -> None:
    from meshnode.node import Node, NodeConfig
    from meshnode.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        node = Node(
            Identity(seed=bytes.fromhex(args.seed)),
            store,
            # target_peers=0: no links of the node's own, only the bench's topology
            NodeConfig(listen=["/ip4/127.0.0.1/tcp/0"], min_peers=0, target_peers=0),
        )
        node.ingest.on_stored.append(lambda r: emit(ev="got", id=r.id.hex(), t=time.time()))
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                await node.join_swarm(TOPIC_SWARM)
                emit(ev="ready", addr=node.addrs()[0], peer=node.peer_id)
                async for cmd in await commands():
                    if cmd["cmd"] == "connect":
                        await node.connect(cmd["addr"])
                        emit(ev="connected")
                    elif cmd["cmd"] == "mesh":
                        emit(ev="mesh", peers=len(node.network().gossip.mesh_peers(TOPIC_SWARM)))
                    elif cmd["cmd"] == "publish":
                        times = []
                        for i in range(cmd["count"]):
                            t = time.time()
                            body = sample_offer(f"{i} {os.getpid()}")
                            r = await node.publish(body, TOPIC_SWARM)
                            times.append((r.id.hex(), t))
                            await trio.sleep(max(0.0, 1.0 / cmd["rate"] - (time.time() - t)))
                        emit(ev="published", items=times)
                    elif cmd["cmd"] == "quit":
                        break
                nursery.cancel_scope.cancel()
        finally:
            store.close()


async def run_raw(args: argparse.Namespace) -> None:
    from meshnode.protocols.gossip import plain_pubsub, running_pubsub
    from meshnode.protocols.host import build_host, dial, listen_addrs, parse_listen, peer_info_of

    ident = Identity(seed=bytes.fromhex(args.seed))
    host = build_host(ident, min_peers=0)
    topic = TOPIC_SWARM.topic
    try:
        async with (
            host.run(parse_listen(["/ip4/127.0.0.1/tcp/0"])),
            running_pubsub(plain_pubsub(host, record_ids=True)) as pubsub,
            trio.open_nursery() as nursery,
        ):

            async def accept(_peer: object, _msg: object) -> bool:
                return True

            pubsub.set_topic_validator(topic, accept, True)
            sub = await pubsub.subscribe(topic)

            async def drain() -> None:
                while True:
                    msg = await sub.get()
                    emit(ev="got", id=hashlib.blake2b(msg.data, digest_size=32).hexdigest(), t=time.time())

            nursery.start_soon(drain)
            emit(ev="ready", addr=listen_addrs(host)[0], peer=ident.peer_id)
            key = ident.signing_key
            seq = 0
            async for cmd in await commands():
                if cmd["cmd"] == "connect":
                    await dial(host, peer_info_of(cmd["addr"]))
                    emit(ev="connected")
                elif cmd["cmd"] == "mesh":
                    emit(ev="mesh", peers=len(pubsub.peer_topics.get(topic, set())))
                elif cmd["cmd"] == "publish":
                    times = []
                    for i in range(cmd["count"]):
                        t = time.time()
                        seq += 1
                        # The same work a publisher does in meshnode: build and sign a record.
                        body = sample_offer(f"{i} {os.getpid()}")
                        r = rec.new_record(
                            body, swarm=TOPIC_SWARM.id, seq=seq, ts=int(t * 1000), signing_key=key
                        )
                        await pubsub.publish(topic, r.encoded)
                        times.append((r.id.hex(), t))
                        await trio.sleep(max(0.0, 1.0 / cmd["rate"] - (time.time() - t)))
                    emit(ev="published", items=times)
                elif cmd["cmd"] == "quit":
                    break
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await host.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["meshnode", "raw"], required=True)
    parser.add_argument("--seed", required=True)
    args = parser.parse_args()
    trio.run(run_meshnode if args.mode == "meshnode" else run_raw, args)


if __name__ == "__main__":
    main()
