"""Who may use the web page: one-time login links, sessions, CSRF tokens, allowed Host and Origin.

No I/O and no clock of its own (time is a parameter; randomness is
``os.urandom`` unless another source is given), so it is tested without a
server.

* **Login links.** Only the owner can ask the daemon for one: ``meshnode web``
  calls the API over the 0600 Unix socket, :meth:`WebAuth.new_login` makes a
  random token, and the link ``/login?token=…`` works **once**, within
  :data:`LOGIN_TTL_MS`. Only a hash of each token is kept.
* **Sessions.** Redeeming a link opens a session: a random id sent as a
  cookie (``HttpOnly; SameSite=Strict; Path=/``), valid for
  :data:`SESSION_IDLE_MS` after its last use and never longer than
  :data:`SESSION_MAX_MS`. At most :data:`MAX_SESSIONS` are kept (the oldest
  goes first). They live in memory: a restarted daemon forgets them.
* **CSRF.** Every form and every htmx request carries the session's token
  (an HMAC of the session id under a per-daemon secret);
  :meth:`WebAuth.check_csrf` compares in constant time.
* **Host and Origin.** :func:`host_allowed` says which ``Host`` values the
  page answers to: the loopback names of the bound port, and the configured
  address itself when the owner set one. A request naming another host is
  refused (DNS rebinding); a state-changing request whose ``Origin`` is not
  ``http://`` + an allowed host is refused (cross-site requests).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass

from meshnode.errors import ConfigError

#: A login link works once, within this long (ms).
LOGIN_TTL_MS = 10 * 60 * 1000
#: A session ends this long after its last use (ms) ...
SESSION_IDLE_MS = 12 * 3600 * 1000
#: ... and never lasts longer than this (ms).
SESSION_MAX_MS = 7 * 24 * 3600 * 1000
#: The most sessions kept at once (the least recently used goes first).
MAX_SESSIONS = 32
#: The most unused login links kept at once (the oldest goes first).
MAX_LOGINS = 16
TOKEN_BYTES = 32
COOKIE = "meshnode_session"
#: Where the daemon serves the page unless config.toml says otherwise.
DEFAULT_WEB = "127.0.0.1:8790"


@dataclass
class Session:
    """An open session: its id (the cookie), when it began and was last used (ms)."""

    id: str
    started: int
    used: int


class WebAuth:
    """The login links, sessions and CSRF tokens of one daemon (see the module docstring)."""

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random_bytes
        self._secret = random_bytes(TOKEN_BYTES)
        self._logins: dict[bytes, int] = {}  # hash of token -> expiry (ms)
        self._sessions: dict[str, Session] = {}

    def new_login(self, now_ms: int) -> str:
        """A fresh one-time login token, valid for :data:`LOGIN_TTL_MS`."""
        self._logins = {h: exp for h, exp in self._logins.items() if exp > now_ms}
        while len(self._logins) >= MAX_LOGINS:
            del self._logins[min(self._logins, key=self._logins.__getitem__)]
        token = self._random(TOKEN_BYTES).hex()
        self._logins[_digest(token)] = now_ms + LOGIN_TTL_MS
        return token

    def redeem(self, token: str, now_ms: int) -> Session | None:
        """Open a session for a login token, which is then used up; None if it is unknown, used or late."""
        expiry = self._logins.pop(_digest(token), None)
        if expiry is None or expiry <= now_ms:
            return None
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.used)
            del self._sessions[oldest.id]
        session = Session(id=self._random(TOKEN_BYTES).hex(), started=now_ms, used=now_ms)
        self._sessions[session.id] = session
        return session

    def session(self, session_id: str | None, now_ms: int) -> Session | None:
        """The open session with this id (its last use becomes ``now_ms``); None if none or it ended."""
        if not session_id:
            return None
        s = self._sessions.get(session_id)
        if s is None:
            return None
        if now_ms - s.used > SESSION_IDLE_MS or now_ms - s.started > SESSION_MAX_MS:
            del self._sessions[session_id]
            return None
        s.used = now_ms
        return s

    def is_open(self, session_id: str, now_ms: int) -> bool:
        """Whether the session is still open, without counting this as a use (a stream's keepalive)."""
        s = self._sessions.get(session_id)
        return s is not None and now_ms - s.used <= SESSION_IDLE_MS and now_ms - s.started <= SESSION_MAX_MS

    def end(self, session_id: str | None) -> None:
        """Log out: forget the session."""
        if session_id:
            self._sessions.pop(session_id, None)

    def csrf(self, session: Session) -> str:
        """The CSRF token of ``session``: every form and htmx request of the page carries it."""
        return hmac.new(self._secret, b"csrf\x00" + session.id.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf(session), token)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP literal or ``localhost``) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str | None, configured_host: str, port: int) -> bool:
    """Whether the page answers a request with ``Host: host_header`` (serving on ``configured_host:port``).

    The port must be the bound one. The loopback names (``127.0.0.1``,
    ``localhost``, ``[::1]``) are always allowed; the configured host too
    when the owner set another address. Bound to an unspecified address
    (``0.0.0.0``, ``::``: the home network), any IP literal is allowed, and
    still no other name: DNS rebinding needs a name that resolves to this
    machine, and an IP literal is not one.
    """
    if not host_header:
        return False
    host, sep, port_text = host_header.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) != port:
        return False
    host = host.lower()
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare != host and ":" not in bare:
        return False  # brackets are for IPv6 literals only
    if is_loopback(bare):
        return True
    configured = configured_host.strip("[]").lower()
    if configured in ("0.0.0.0", "::"):
        return _is_ip(bare)
    return bare == configured


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_web_address(text: object, where: str = "web") -> tuple[str, int] | None:
    """``(host, port)`` from ``"127.0.0.1:8790"``, ``"[::1]:8790"``, ``"localhost:8790"``; None: ``"off"``."""
    if not isinstance(text, str):
        raise ConfigError(f'{where}: expected "HOST:PORT" (like "127.0.0.1:8790") or "off", found {text!r}')
    if text.strip().lower() == "off":
        return None
    host, sep, port_text = text.strip().rpartition(":")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f'{where}: expected "HOST:PORT" (like "127.0.0.1:8790") or "off", found {text!r}')
    if bare != "localhost":
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            raise ConfigError(
                f"{where}: the host must be an IP address (127.0.0.1, 192.168.1.20, 0.0.0.0) or localhost,"
                f" found {host!r}"
            ) from None
    return bare, int(port_text)
