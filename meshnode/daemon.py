"""The daemon: one node in the foreground until SIGINT/SIGTERM.

Start-up order: home and config, the key, the lock (one daemon per home),
the store, the node, the swarms saved in the home; then one ``ready`` line
on stdout with the peer id and listen addresses. Shutdown cancels the
nursery; every host is closed and the store is closed last.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import stat
from collections.abc import Callable

import trio

from meshnode.errors import ConfigError
from meshnode.home import Home, ensure_home, load_config, load_swarms
from meshnode.keyfile import create_identity
from meshnode.lock import DaemonLock
from meshnode.node import Node, NodeConfig
from meshnode.store import Store

log = logging.getLogger(__name__)


async def run_daemon(
    home: Home,
    *,
    listen: list[str] | None = None,
    announce: Callable[[str], None] = print,
    lock: DaemonLock | None = None,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node and its local API for ``home`` until SIGINT, SIGTERM or ``meshnode stop``."""
    from meshnode.api.http import serve_api
    from meshnode.api.service import ApiService

    ensure_home(home)
    config = load_config(home)
    identity, _ = create_identity(home.root)
    own_lock = lock is None
    if lock is None:
        lock = DaemonLock(home.lock)
        lock.acquire()
    try:
        store = Store.open(home.database)
        try:
            node = Node(
                identity,
                store,
                NodeConfig(
                    listen=listen or config.listen,
                    bootstrap=config.bootstrap,
                    announce=config.announce,
                    mdns=config.mdns,
                    upnp=config.upnp,
                    relay=config.relay,
                    swarm_bootstrap=config.swarm_bootstrap,
                    max_connections=config.max_connections,
                    sync_interval=config.sync_interval,
                    state_path=home.network,
                ),
            )
            stop = trio.Event()
            service = ApiService(node, home, request_stop=stop.set)
            try:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(node.run)
                        for swarm in load_swarms(home):
                            await node.join_swarm(swarm)
                        await nursery.start(functools.partial(serve_api, service, home.socket, shutdown=stop))
                        check_socket(home)
                        nursery.start_soon(_wait_for_signal, signals, stop)
                        announce(f"ready peer_id={node.peer_id} addrs={','.join(node.addrs())}")
                        task_status.started(node)
                        await stop.wait()
                        await trio.sleep(0.1)  # let the API answer the stop request
                        nursery.cancel_scope.cancel()
            finally:
                service.close()
        finally:
            store.close()
    finally:
        if own_lock:
            lock.release()


async def _wait_for_signal(signals: object, stop: trio.Event) -> None:
    async for signum in signals:  # type: ignore[attr-defined]
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()
        return


def check_socket(home: Home) -> None:
    """Refuse to serve an API socket that others could reach."""
    mode = stat.S_IMODE(os.stat(home.socket).st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"API socket {home.socket} has mode {mode:04o}; refusing to serve it (expected 0600)"
        )
