"""The daemon: start one node, in the foreground or detached, and run it until it is stopped.

Three ways in, one per job:

* :func:`run_foreground` (``meshnode daemon``): takes the home's lock (one
  daemon per home), checks the ``--listen`` addresses, logs to stderr at the
  given level and runs :func:`run_daemon` under trio. A :class:`MeshError`
  from inside the node comes out as itself (the first one, if several); any
  other failure is logged with its traceback and comes out as one
  :class:`MeshError` ("the daemon stopped on an internal error").
* :func:`start_detached` (``meshnode daemon --detach``): runs ``meshnode
  daemon`` in the foreground as a background process (a session of its own,
  stdin closed, stdout and stderr appended to the home's ``daemon.log``) and
  returns once it printed its ``ready`` line. If it exits first, its last
  ``error:`` line and its exit code become this process's error; if it is not
  ready within the timeout, that is a :class:`MeshError`.
* :func:`run_daemon` (async): the node's life. Start-up order: home and
  config, the key, the lock, the store, the node, the swarms saved in the
  home, the API socket (refused unless 0600); then one ``ready`` line with the
  peer id and listen addresses. It stops on SIGINT, SIGTERM or ``meshnode
  stop``: the nursery is cancelled, every host is closed and the store is
  closed last.

Every ``meshnode daemon`` imports this module before it takes the lock, so at
module level it imports only the home, the lock and the errors; trio,
libp2p, the node and the store are imported once the lock is held. A second
daemon is thus refused at once, and CLI commands see a starting daemon at once
(and wait for its API socket).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from meshnode.errors import ConfigError, MeshError
from meshnode.home import Home, ensure_home, load_config, load_swarms
from meshnode.lock import DaemonLock

if TYPE_CHECKING:
    import trio

    from meshnode.api.service import ApiService
    from meshnode.node import Node

log = logging.getLogger(__name__)

READY = "ready "
"""How the line that says the daemon is up begins (``ready peer_id=… addrs=…``)."""

DETACH_TIMEOUT = 60.0
"""Seconds ``--detach`` waits for the ``ready`` line."""

FOREGROUND_COMMAND = [sys.executable, "-m", "meshnode.cli.main", "daemon"]
"""What ``--detach`` runs in the background: the same command, in the foreground."""

CHILD_ERROR = "error: "
#: Shifts the daemon's clock by this many milliseconds (a whole number, may be
#: negative). For trying what time does (loan reminders, expiry) and for tests;
#: records the node signs carry the shifted time, so never set it on a node
#: whose neighbours run at the real time.
ENV_CLOCK_OFFSET = "MESHNODE_CLOCK_OFFSET_MS"
"""How the foreground command's one error line begins (``meshnode.cli.main.fail``)."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class Detached:
    """A daemon started in the background that said it is ready."""

    ready_line: str
    pid: int
    log: Path


# --- meshnode daemon --------------------------------------------------------------


def run_foreground(home: Home, listen: list[str], level: int, web: str | None = None) -> None:
    """Run the daemon of ``home`` in this process until it stops (see the module docstring)."""
    ensure_home(home)
    lock = DaemonLock(home.lock)
    lock.acquire()  # before the slow imports, so 'meshnode' commands see a daemon starting
    try:
        _run_locked(home, listen, level, lock, web)
    finally:
        lock.release()


def _run_locked(home: Home, listen: list[str], level: int, lock: DaemonLock, web: str | None) -> None:
    import trio

    from meshnode.protocols.host import parse_multiaddr
    from meshnode.web.auth import parse_web_address

    for addr in listen:
        parse_multiaddr(addr)
    if web is not None:
        parse_web_address(web, "--web")
    configure_logging(level)

    def announce(line: str) -> None:
        print(line, flush=True)

    try:
        trio.run(functools.partial(run_daemon, home, listen=listen, web=web, announce=announce, lock=lock))
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        mesh = [e for e in leaves if isinstance(e, MeshError)]
        if mesh:
            raise mesh[0] from None
        logging.getLogger("meshnode").error("daemon crashed", exc_info=group)
        raise MeshError(
            f"the daemon stopped on an internal error: {leaves[0]!r} (details in the log above)"
        ) from None


def configure_logging(level: int) -> None:
    """The daemon's log: ours at ``level`` on stderr, libp2p's routed in but kept to warnings.

    Imports libp2p first: ``import libp2p`` sets its logger to
    ``propagate=False`` with no handler (pitfall 11), which would hide its errors.
    """
    from meshnode.protocols.autonat import quiet_dial_back_noise  # imports libp2p

    logging.basicConfig(level=level, stream=sys.stderr, format=LOG_FORMAT)
    libp2p_log = logging.getLogger("libp2p")
    libp2p_log.propagate = True
    libp2p_log.setLevel(logging.WARNING)
    # The auto-connector forces its own logger to INFO and reports every 30 s cycle.
    logging.getLogger("libp2p.network.auto_connector").setLevel(logging.WARNING)
    quiet_dial_back_noise()


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


# --- meshnode daemon --detach --------------------------------------------------------


def start_detached(
    home: Home, listen: list[str], log_level: str, *, web: str | None = None, timeout: float = DETACH_TIMEOUT
) -> Detached:
    """Start the daemon of ``home`` in the background, logging to the home; wait for ``ready``."""
    ensure_home(home)
    args = [*FOREGROUND_COMMAND, "--home", str(home.root), "--log-level", log_level]
    for addr in listen:
        args += ["--listen", addr]
    if web is not None:
        args += ["--web", web]
    # The log names peers, addresses and swarms: for the owner only (0600, also when it exists).
    fd = os.open(home.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as log_file:
        start = log_file.tell()
        proc = subprocess.Popen(
            args, stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(home.log, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
        for line in text.splitlines():
            if line.startswith(READY):
                return Detached(ready_line=line, pid=proc.pid, log=home.log)
        if proc.poll() is not None:
            errors = [ln for ln in text.splitlines() if ln.startswith(CHILD_ERROR)]
            message = errors[-1][len(CHILD_ERROR) :] if errors else f"the daemon exited; see {home.log}"
            raise _failed_as(message, proc.returncode or 1)
        time.sleep(0.1)
    raise MeshError(f"the daemon did not get ready within {timeout:.0f} s; see {home.log}")


def _failed_as(message: str, exit_code: int) -> MeshError:
    """The background daemon's failure as ours: its one-line message and its exit code."""
    error = MeshError(message)
    error.exit_code = exit_code  # the daemon's own (75 running, 78 config, …), whatever its class was
    return error


# --- the node's life ----------------------------------------------------------------


async def run_daemon(
    home: Home,
    *,
    listen: list[str] | None = None,
    web: str | None = None,
    announce: Callable[[str], None] = print,
    lock: DaemonLock | None = None,
    task_status: trio.TaskStatus[Node] | None = None,
) -> None:
    """Run a node and its local API for ``home`` until SIGINT, SIGTERM or ``meshnode stop``.

    Takes the home's lock unless it is given one. With ``nursery.start`` it
    reports the running node once it announced ``ready``.
    """
    import trio

    from meshnode.api.http import serve_api
    from meshnode.api.service import ApiService
    from meshnode.keyfile import create_identity
    from meshnode.node import Node, NodeConfig
    from meshnode.store import Quotas, Store

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
                clock=clock_from_env(),
                config=NodeConfig(
                    listen=listen or config.listen,
                    bootstrap=config.bootstrap,
                    announce=config.announce,
                    mdns=config.mdns,
                    upnp=config.upnp,
                    relay=config.relay,
                    swarm_bootstrap=config.swarm_bootstrap,
                    max_connections=config.max_connections,
                    sync_interval=config.sync_interval,
                    quotas=Quotas(
                        swarm_records=config.store.max_records_per_swarm,
                        swarm_bytes=config.store.max_mb_per_swarm << 20,
                        author_records=config.store.max_records_per_author,
                        disk_floor_bytes=config.store.min_free_disk_mb << 20,
                    ),
                    state_path=home.network,
                    bans_path=home.bans,
                ),
            )
            stop = trio.Event()
            service = ApiService(node, home, request_stop=stop.set, rules=config.rules)
            try:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(node.run)
                        await nursery.start(service.run)
                        for swarm in load_swarms(home):
                            await node.join_swarm(swarm)
                        await _publish_profile(service)  # e.g. set by 'init --nickname' before any swarm
                        await nursery.start(functools.partial(serve_api, service, home.socket, shutdown=stop))
                        check_socket(home)
                        web_url = await _serve_web(nursery, service, web or config.web, stop)
                        nursery.start_soon(_wait_for_signal, signals, stop)
                        shown = f" web={web_url}" if web_url else ""
                        announce(f"{READY}peer_id={node.peer_id} addrs={','.join(node.addrs())}{shown}")
                        if task_status is not None:
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


async def _serve_web(
    nursery: trio.Nursery, service: ApiService, address: str, stop: trio.Event
) -> str | None:
    """Start the web page on ``address`` (``"off"``: none); its URL, or None if it is not served."""
    from meshnode.web.auth import parse_web_address
    from meshnode.web.server import WebServer

    parsed = parse_web_address(address)
    if parsed is None:
        return None
    server = WebServer(service, *parsed)
    url: str | None = await nursery.start(functools.partial(server.run, shutdown=stop))
    if url is not None:
        service.web = server
    return url


async def _publish_profile(service: ApiService) -> None:
    """Publish the own profile where this node's latest differs; a failure is logged, not fatal."""
    try:
        await service.publish_own_profile()
    except MeshError as exc:  # the daemon runs anyway; 'meshnode profile set' tries again
        log.warning("could not publish your profile: %s", exc)


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


def clock_from_env() -> Callable[[], int]:
    """The node's clock (ms): the wall clock, shifted by :data:`ENV_CLOCK_OFFSET` if it is set."""
    from meshnode.ingest import wall_clock_ms

    text = os.environ.get(ENV_CLOCK_OFFSET, "").strip()
    if not text:
        return wall_clock_ms
    try:
        offset = int(text)
    except ValueError:
        raise ConfigError(
            f"{ENV_CLOCK_OFFSET}: expected a whole number of milliseconds, found {text!r}"
        ) from None
    return lambda: wall_clock_ms() + offset
