"""One real meshnode Node with LAN discovery; tests/test_mdns.py runs it inside a network namespace.

Runs ``meshnode.node.Node`` with ``NodeConfig(listen=[/ip4/--addr/tcp/0],
mdns=True, min_peers=0)``, a fresh identity and a store at ``--db``, and
joins the swarm ``--swarm-name`` / ``--swarm-id`` (private with ``--swarm-key``). Nobody tells it any
peer's address: the node finds them by mDNS and dials them itself.

With ``--publish TITLE`` it publishes one lend offer once it is connected to
a peer and that peer is on the swarm's gossip topic. Prints JSON lines, each
with ``wall`` (time.time()):

* ``starting`` - about to start the node;
* ``ready`` - the node runs and has joined the swarm (``peer_id``, ``addrs``, ``author``);
* ``discovered`` - mDNS resolved a peer (from the discovery module's debug log);
* ``lan_dialed`` / ``lan_dial_failed`` - the node's own dial of a LAN peer (its log);
* ``connected`` - a peer appeared in ``node.connected_peers()``;
* ``connections`` - the number of open connections per peer changed (``per_peer``);
* ``mesh`` - the swarm's gossip topic has peers (``mesh_peers`` non-empty);
* ``published`` - the offer is out (``id`` hex);
* ``stored`` - an offer of another author is in the store (``id``, ``title``, ``author``);
* ``error`` - something failed; ``stopped`` - on exit, with zeroconf threads still alive.

Runs until stdin is closed or ``--run-for`` seconds have passed.
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

from meshnode import records
from meshnode.identity import Identity
from meshnode.node import Node, NodeConfig
from meshnode.store import Store
from meshnode.swarm import Swarm

_print_lock = threading.Lock()


def emit(**fields) -> None:
    line = json.dumps({**fields, "wall": time.time()})
    with _print_lock:  # the discovery log line comes from a zeroconf thread
        print(line, flush=True)


def zeroconf_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "zeroconf" in t.name or "_run_loop" in t.name]


async def wait_stdin_closed() -> None:
    await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


class LogEvents(logging.Handler):
    """Turns the discovery and dial log lines of meshnode into JSON events."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.msg
            if record.name == "meshnode.protocols.mdns" and msg.startswith("mdns: %s resolved at"):
                emit(event="discovered", peer=str(record.args[0]), addrs=list(record.args[1]))
            elif record.name == "meshnode.node" and msg.startswith("connected to %s found on the LAN"):
                emit(event="lan_dialed", peer=str(record.args[0]))
            elif record.name == "meshnode.node" and msg.startswith("could not dial LAN peer"):
                emit(event="lan_dial_failed", peer=str(record.args[0]), error=str(record.args[1]))
            elif record.name == "meshnode.node" and msg.startswith("LAN discovery is off"):
                emit(event="error", error=record.getMessage())
        except Exception:
            self.handleError(record)


def install_log_events() -> None:
    handler = LogEvents(level=logging.DEBUG)
    for name, level in (("meshnode.protocols.mdns", logging.DEBUG), ("meshnode.node", logging.INFO)):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.addHandler(handler)


async def watch_peers(node: Node, swarm: Swarm) -> None:
    seen: set[str] = set()
    counts: dict[str, int] = {}
    meshed = False
    net = node.network(swarm)
    while True:
        for pid in node.connected_peers():
            if pid not in seen:
                seen.add(pid)
                emit(event="connected", peer=pid)
        conns = {str(p): len(c) for p, c in net.host.get_network().get_connections_map().items()}
        if conns != counts:
            counts = conns
            emit(event="connections", per_peer=conns)
        mesh = net.gossip.mesh_peers(swarm)
        if mesh and not meshed:
            meshed = True
            emit(event="mesh", peers=mesh)
        await trio.sleep(0.02)


async def publish_when_meshed(node: Node, swarm: Swarm, title: str) -> None:
    net = node.network(swarm)
    while not (node.connected_peers() and net.gossip.mesh_peers(swarm)):
        await trio.sleep(0.02)
    record = await node.publish(records.OfferBody(title=title, kind="lend"), swarm)
    emit(event="published", id=record.id.hex(), title=title)


async def watch_store(node: Node) -> None:
    store: Store = node.store  # type: ignore[assignment]
    own = node.identity.public_key
    seen: set[bytes] = set()
    count = 0
    while True:
        now = await trio.to_thread.run_sync(store.count)
        if now != count:
            count = now
            items = await trio.to_thread.run_sync(
                lambda: store.items("offer", now_ms=int(time.time() * 1000))
            )
            for item in items:
                if item.id not in seen and item.author != own:
                    seen.add(item.id)
                    emit(event="stored", id=item.id.hex(), title=item.title, author=item.author.hex())
        await trio.sleep(0.02)


async def main(args: argparse.Namespace) -> None:
    install_log_events()
    key = bytes.fromhex(args.swarm_key) if args.swarm_key else None
    swarm = Swarm(name=args.swarm_name, id=bytes.fromhex(args.swarm_id), key=key)
    store = Store.open(args.db)
    try:
        node = Node(
            Identity.generate(),
            store,
            NodeConfig(listen=[f"/ip4/{args.addr}/tcp/0"], mdns=True, min_peers=0),
        )
        emit(event="starting")
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await node.join_swarm(swarm)
            emit(
                event="ready",
                peer_id=node.peer_id,
                addrs=node.addrs(swarm),
                author=node.identity.public_key.hex(),
            )
            nursery.start_soon(watch_peers, node, swarm)
            nursery.start_soon(watch_store, node)
            if args.publish:
                nursery.start_soon(publish_when_meshed, node, swarm, args.publish)
            with trio.move_on_after(args.run_for):
                await wait_stdin_closed()
            nursery.cancel_scope.cancel()
    except Exception as exc:
        emit(event="error", error=repr(exc))
        raise
    finally:
        store.close()
    emit(event="stopped", threads=zeroconf_threads())


if __name__ == "__main__":
    if os.environ.get("MDNS_NODE_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, format="%(relativeCreated)6.0f %(name)s %(message)s")
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True, help="IPv4 address to listen on")
    parser.add_argument("--db", required=True, help="the store's file")
    parser.add_argument("--swarm-name", required=True)
    parser.add_argument("--swarm-id", required=True, help="64 hex chars")
    parser.add_argument("--swarm-key", default="", help="64 hex chars: a private swarm")
    parser.add_argument("--publish", default="", help="publish one lend offer with this title")
    parser.add_argument("--run-for", type=float, default=60.0)
    trio.run(main, parser.parse_args())
