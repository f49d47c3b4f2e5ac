"""Publish -> stored-on-all latency: meshnode nodes vs raw py-libp2p GossipSub.

Both run in this one process, on 127.0.0.1, in the same sparse topology (a
ring of N nodes, diameter N/2) with the same payload size (a real encoded
offer record). The raw baseline is py-libp2p's own Pubsub + GossipSub with
the same host settings, a pass-through validator and delivery = "message
reached every subscription"; meshnode's figure is "record is in every
node's SQLite store", i.e. after decode, checks, signature and the write.

    .venv/bin/python bench/gossip_latency.py [--nodes 8] [--messages 40]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import trio

from bench.common import sample_offer
from meshnode import records as rec
from meshnode.identity import Identity
from meshnode.protocols.gossip import plain_pubsub, running_pubsub
from meshnode.protocols.host import build_host, dial, listen_addrs, parse_listen, peer_info_of
from meshnode.swarm import Swarm
from tests.netutil import running_nodes, wait_for_mesh


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def raw_gossip(n: int, messages: int, payloads: list[bytes]) -> list[float]:
    topic = "bench"
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for _ in range(n):
            host = build_host(Identity.generate(), min_peers=0)
            await stack.enter_async_context(host.run(parse_listen(["/ip4/127.0.0.1/tcp/0"])))
            stack.push_async_callback(host.close)
            pubsub = await stack.enter_async_context(running_pubsub(plain_pubsub(host, record_ids=True)))

            async def accept(_peer, _msg) -> bool:
                return True

            pubsub.set_topic_validator(topic, accept, True)
            nodes.append((host, pubsub, await pubsub.subscribe(topic)))
        for i in range(n):
            await dial(nodes[i][0], peer_info_of(listen_addrs(nodes[(i + 1) % n][0])[0]))
        await trio.sleep(2.5)  # let meshes form (heartbeat 1 s)
        latencies = []
        for i in range(messages):
            origin = nodes[(i * 3) % n][1]
            start = time.perf_counter()
            await origin.publish(topic, payloads[i])
            with trio.fail_after(10):
                for _, _, sub in nodes:
                    await sub.get()
            latencies.append(time.perf_counter() - start)
        return latencies


async def meshnode_gossip(n: int, messages: int) -> tuple[list[float], int]:
    swarm = Swarm.create("bench")
    with tempfile.TemporaryDirectory() as tmp:
        # target_peers=0: the node adds no links of its own, so both sides keep the same ring
        async with running_nodes(Path(tmp), n, min_peers=0, target_peers=0) as nodes:
            for node in nodes:
                await node.join_swarm(swarm)
            for i in range(n):
                await nodes[i].connect(nodes[(i + 1) % n].addrs()[0])
            await wait_for_mesh(nodes, swarm)
            await trio.sleep(2.5)
            readers = [node.store.reader() for node in nodes]
            latencies = []
            size = 0
            try:
                for i in range(messages):
                    origin = nodes[(i * 3) % n]
                    start = time.perf_counter()
                    record = await origin.publish(sample_offer(i), swarm)
                    size = len(record.encoded)
                    with trio.fail_after(10):
                        while not all(r.has(record.id) for r in readers):
                            await trio.sleep(0.001)
                    latencies.append(time.perf_counter() - start)
            finally:
                for r in readers:
                    r.close()
            return latencies, size


async def main(n: int, messages: int) -> None:
    ident = Identity.generate()
    payloads = [
        rec.new_record(
            sample_offer(i), swarm=bytes(32), seq=i + 1, ts=1, signing_key=ident.signing_key
        ).encoded
        for i in range(messages)
    ]
    raw = await raw_gossip(n, messages, payloads)
    ours, size = await meshnode_gossip(n, messages)
    print(
        f"{n} nodes in a ring on 127.0.0.1, {messages} messages, payload {len(payloads[0])} B (ours {size} B)"
    )
    print(f"{'':28}{'median':>10}{'p95':>10}")
    for name, values in (("raw py-libp2p gossip", raw), ("meshnode (stored on all)", ours)):
        print(f"{name:28}{statistics.median(values) * 1000:>8.1f}ms{pct(values, 0.95) * 1000:>8.1f}ms")
    print(
        f"ratio meshnode/raw: median {statistics.median(ours) / statistics.median(raw):.2f},"
        f" p95 {pct(ours, 0.95) / pct(raw, 0.95):.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--messages", type=int, default=40)
    args = parser.parse_args()
    trio.run(main, args.nodes, args.messages)
