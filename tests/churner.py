"""Peers that come and go, and one that misbehaves: run against a daemon by tests/test_homes.py.

Usage: ``python tests/churner.py TARGET_MULTIADDR INVITE_CODE --cycles N --parallel P --redials R``

1. ``N`` connect-and-leave cycles, each by a fresh identity (``P`` at a
   time): connect (Noise handshake), then close the host at once.
2. A hostile peer (one more fresh identity) subscribes to the swarm's topic
   and publishes malformed records until the target cuts it off (it is
   banned), then redials ``R`` times; each redial must not keep a
   connection (refused, or closed right after the handshake).

Prints one JSON line per phase: ``{"event": "cycles", "ok": n, "failed": n,
"seconds": s}``, ``{"event": "banned", "sent": n, "seconds": s}``,
``{"event": "redials", "attempts": n, "kept": n}``; ``{"event": "error", ...}``
on failure. Only the target given is ever dialled.
"""

from __future__ import annotations

import argparse
import json
import time

import trio

from meshnode.errors import NetworkError
from meshnode.identity import Identity
from meshnode.protocols.gossip import plain_pubsub, running_pubsub
from meshnode.protocols.host import build_host, dial, peer_info_of
from meshnode.swarm import decode_invite


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def one_cycle(target: str) -> bool:
    host = build_host(Identity.generate(), min_peers=0)
    try:
        async with host.run([]):
            try:
                await dial(host, peer_info_of(target), timeout=10)
                return True
            except NetworkError:
                return False
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await host.close()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await host.close()


async def cycles(target: str, n: int, parallel: int) -> None:
    done = {"ok": 0, "failed": 0}
    start = time.monotonic()

    async def worker(count: int) -> None:
        for _ in range(count):
            done["ok" if await one_cycle(target) else "failed"] += 1

    async with trio.open_nursery() as nursery:
        for i in range(parallel):
            nursery.start_soon(worker, n // parallel + (1 if i < n % parallel else 0))
    emit(event="cycles", **done, seconds=round(time.monotonic() - start, 2))


async def hostile(target: str, code: str, redials: int) -> None:
    swarm = decode_invite(code).swarm
    info = peer_info_of(target)
    host = build_host(Identity.generate(), min_peers=0)
    try:
        async with host.run([]), running_pubsub(plain_pubsub(host)) as pubsub:
            await pubsub.subscribe(swarm.topic)
            await dial(host, info, timeout=10)
            start = time.monotonic()
            sent = 0
            with trio.fail_after(60):
                while info.peer_id in host.get_connected_peers():
                    await pubsub.publish(swarm.topic, b"\xa1\x61x" + sent.to_bytes(4, "big"))
                    sent += 1
                    await trio.sleep(0.05)
            emit(event="banned", sent=sent, seconds=round(time.monotonic() - start, 2))
            kept = 0
            for _ in range(redials):
                try:
                    await dial(host, info, timeout=10)
                except NetworkError:
                    continue
                await trio.sleep(0.5)
                if info.peer_id in host.get_connected_peers():
                    kept += 1
                    await host.disconnect(info.peer_id)
            emit(event="redials", attempts=redials, kept=kept)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await host.close()


async def main(args: argparse.Namespace) -> None:
    try:
        await cycles(args.target, args.cycles, args.parallel)
        await hostile(args.target, args.invite, args.redials)
    except Exception as exc:
        emit(event="error", error=repr(exc))
        raise


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("invite")
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--redials", type=int, default=30)
    trio.run(main, parser.parse_args())
