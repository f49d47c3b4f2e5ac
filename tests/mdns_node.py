"""One meshnode mDNS test node; tests/test_mdns.py runs it inside a network namespace.

Starts a libp2p host (Noise only, Yamux) on ``--addr``, runs LanDiscovery, and
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

import libp2p
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from multiaddr import Multiaddr

from meshnode.protocols.mdns import LanDiscovery


def emit(**fields) -> None:
    print(json.dumps({**fields, "wall": time.time()}), flush=True)


def zeroconf_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "zeroconf" in t.name or "_run_loop" in t.name]


async def wait_stdin_closed() -> None:
    await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


async def main(args: argparse.Namespace) -> None:
    kp = create_new_key_pair(seed=bytes.fromhex(args.seed))
    host = libp2p.new_host(
        key_pair=kp,
        sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)},
        muxer_opt={YAMUX_PROTOCOL_ID: Yamux},
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        psk=None,
    )
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
