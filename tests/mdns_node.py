"""One meshnode mDNS test node; tests/test_mdns.py runs it inside a network namespace.

Starts meshnode's libp2p host (``build_host``: Noise only, Yamux) on ``--addr``, runs LanDiscovery, and
dials the peer ``--expect`` when it is discovered. Prints JSON lines:
``ready``, ``discovered``, ``connected`` (or ``error``), and on exit
``stopped`` with the zeroconf threads still alive (should be none). Every
``seconds`` is counted from ``starting`` (LanDiscovery about to start); every
line carries ``wall`` (time.time()). Runs
until stdin is closed or ``--run-for`` seconds have passed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time

import trio
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from meshnode.identity import Identity
from meshnode.protocols.host import build_host
from meshnode.protocols.mdns import LanDiscovery


def emit(**fields) -> None:
    print(json.dumps({**fields, "wall": time.time()}), flush=True)


def zeroconf_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "zeroconf" in t.name or "_run_loop" in t.name]


async def wait_stdin_closed() -> None:
    await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


async def main(args: argparse.Namespace) -> None:
    host = build_host(Identity(seed=bytes.fromhex(args.seed)), min_peers=0)
    send, recv = trio.open_memory_channel(8)
    disc = LanDiscovery(host, send)
    try:
        async with host.run([Multiaddr(f"/ip4/{args.addr}/tcp/0")]), trio.open_nursery() as nursery:
            t0 = time.monotonic()
            emit(event="starting")

            async def dialer() -> None:
                done = False
                async for peer_id, addrs in recv:
                    emit(
                        event="discovered",
                        peer=peer_id.to_base58(),
                        addrs=[str(a) for a in addrs],
                        seconds=round(time.monotonic() - t0, 3),
                    )
                    if done or (args.expect and peer_id.to_base58() != args.expect):
                        continue
                    try:
                        host.get_network().unblock_peer(peer_id)
                    except Exception:
                        pass
                    try:
                        with trio.fail_after(10):
                            await host.connect(PeerInfo(peer_id, addrs))
                        done = True
                        emit(
                            event="connected",
                            peer=peer_id.to_base58(),
                            seconds=round(time.monotonic() - t0, 3),
                        )
                    except Exception as exc:
                        emit(event="error", peer=peer_id.to_base58(), error=repr(exc))

            nursery.start_soon(dialer)  # before run(): peers may arrive while we still announce
            await nursery.start(disc.run)
            emit(
                event="ready",
                peer_id=host.get_id().to_base58(),
                advertised=disc.advertised,
                start_seconds=round(time.monotonic() - t0, 3),
            )
            with trio.move_on_after(args.run_for):
                await wait_stdin_closed()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await host.close()
    emit(event="stopped", threads=zeroconf_threads(), stats=disc.stats)


if __name__ == "__main__":
    if os.environ.get("MDNS_NODE_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, format="%(relativeCreated)6.0f %(name)s %(message)s")
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True, help="IPv4 address to listen on")
    parser.add_argument("--seed", required=True, help="64 hex chars: the Ed25519 seed")
    parser.add_argument("--expect", default="", help="peer id to dial when discovered")
    parser.add_argument("--run-for", type=float, default=60.0)
    trio.run(main, parser.parse_args())
