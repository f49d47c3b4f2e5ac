"""Serving the web page from the daemon: bind what the config names, and nothing else.

:func:`meshnode.web.auth.parse_web_address` reads ``web = "127.0.0.1:8790"`` (``[node]`` of
config.toml, or ``meshnode daemon --web``): ``HOST:PORT`` with an IP literal
or ``localhost``, or ``off``. :class:`WebServer` holds what the API needs to
hand out login links (:meth:`WebServer.login_url`), and :meth:`WebServer.run`
serves :func:`meshnode.web.app.build_web_app` with Hypercorn on trio until
the daemon stops. A port already in use is logged and the daemon runs on
without the page (its API and network do not depend on it).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

import trio

from meshnode.errors import ConfigError
from meshnode.web.auth import WebAuth, is_loopback
from meshnode.web.text import Text

if TYPE_CHECKING:
    from meshnode.api.service import ApiService

log = logging.getLogger(__name__)


class WebServer:
    """The daemon's web page: where it is served, its logins, and the server task."""

    def __init__(self, service: ApiService, host: str, port: int, lang: str = "en") -> None:
        from meshnode.web.app import WebContext

        self.auth = WebAuth()
        self.ctx = WebContext(service=service, auth=self.auth, text=Text(lang), host=host, port=port)
        self.url: str | None = None  # once bound

    @property
    def loopback(self) -> bool:
        return is_loopback(self.ctx.host)

    def login_url(self) -> str:
        """A one-time login link (see :mod:`meshnode.web.auth`)."""
        if self.url is None:
            raise ConfigError("the web page is not served: see the daemon's log")
        token = self.auth.new_login(self.ctx.now())
        return f"{self.url}/login?token={token}"

    async def run(
        self, *, shutdown: trio.Event, task_status: trio.TaskStatus[str | None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until ``shutdown``; reports the page's URL (None if the address could not be bound).

        The listening socket is made here (so a port in use is one clear
        log line, and port 0 gives the real port) and handed to Hypercorn.
        """
        from hypercorn.config import Config as HypercornConfig
        from hypercorn.trio import serve

        from meshnode.web.app import build_web_app

        host, port = self.ctx.host, self.ctx.port
        app = build_web_app(self.ctx)
        try:
            sock = _listen(host, port)
        except OSError as exc:
            log.warning(
                'the web page is not served: cannot listen on %s:%s (%s); set web = "HOST:PORT" or "off"'
                " in config.toml [node]",
                host,
                port,
                exc.strerror or exc,
            )
            task_status.started(None)
            return
        with sock:
            self.ctx.port = sock.getsockname()[1]
            shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "localhost": "127.0.0.1"}.get(host, host)
            self.url = (
                f"http://[{shown}]:{self.ctx.port}" if ":" in shown else f"http://{shown}:{self.ctx.port}"
            )
            config = HypercornConfig()
            config.bind = [f"fd://{os.dup(sock.fileno())}"]  # Hypercorn's socket owns the copy
            config.accesslog = None
            config.errorlog = logging.getLogger("meshnode.web.server")  # type: ignore[assignment]
            config.graceful_timeout = 2.0
            config.include_server_header = False
            log.info("web page at %s (run 'meshnode web' for a login link)", self.url)
            task_status.started(self.url)
            await serve(app, config, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``localhost`` is 127.0.0.1), nothing else."""
    address = "127.0.0.1" if host == "localhost" else host
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock
