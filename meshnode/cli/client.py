"""The CLI's client for the daemon's local API (HTTP over the home's Unix socket).

One request a connection (``Connection: close``), written and read with the
standard library's sockets: an HTTP client library costs more to import
than a quick command takes (httpx pulls in httpcore, anyio and trio: ~200 ms).
The answer is read to the end and must be JSON; a chunked body is joined.
"""

from __future__ import annotations

import json
import socket
import time
from json import loads as parse_json  # call()'s 'json' argument hides the module
from typing import Any
from urllib.parse import quote, urlencode

from meshnode.errors import ERRORS_BY_CODE, BadValue, DaemonNotRunning, MeshError, NotAllowed
from meshnode.home import Home

CONNECT_TIMEOUT = 2.0  # s
READ_TIMEOUT = 30.0  # s between two reads of the answer
STARTUP_WAIT = 15.0  # s a command waits for a daemon that is still starting
MAX_ANSWER = 64 << 20  # bytes: more is not an answer of this API


class ApiClient:
    """Calls the daemon of one home; every failure is a :class:`MeshError`."""

    def __init__(self, home: Home) -> None:
        self.home = home

    def _not_running(self) -> DaemonNotRunning:
        return DaemonNotRunning(
            f"no meshnode daemon is running for {self.home.root}:"
            f" start it with 'meshnode daemon --home {self.home.root}'"
        )

    def _wait_for_starting_daemon(self, timeout: float = STARTUP_WAIT) -> bool:
        """A daemon that holds the lock but has no socket yet is starting: wait for it."""
        from meshnode.lock import running_pid

        deadline = time.monotonic() + timeout
        while running_pid(self.home) is not None:
            if self.home.socket.exists():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return False

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            if not self.home.socket.exists() and not self._wait_for_starting_daemon():
                raise self._not_running()
        except PermissionError:
            raise NotAllowed(
                f"not allowed to use the daemon of {self.home.root}: it belongs to another user"
            ) from None
        target = f"/v1{path}" + (f"?{query_string(params)}" if params else "")
        request = http_request(method, target, request_body(json))
        try:
            raw = self._exchange(request)
        except (FileNotFoundError, ConnectionRefusedError):
            raise self._not_running() from None
        except PermissionError:
            raise NotAllowed(f"not allowed to use {self.home.socket}: it belongs to another user") from None
        except TimeoutError:
            raise MeshError("the daemon did not answer in time; see its log") from None
        except OSError as exc:
            raise MeshError(f"talking to the daemon failed: {exc}") from None
        status, body = parse_response(raw)
        try:
            data = parse_json(body)
        except ValueError:
            raise MeshError(f"the daemon sent a malformed answer (HTTP {status})") from None
        if status >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            cls = ERRORS_BY_CODE.get(error.get("code", ""), MeshError)
            raise cls(str(error.get("message", f"HTTP {status}")))
        return data

    def _exchange(self, request: bytes) -> bytes:
        """Send ``request`` on a new connection to the home's socket; everything the daemon answers."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(str(self.home.socket))
            sock.settimeout(READ_TIMEOUT)
            sock.sendall(request)
            chunks: list[bytes] = []
            size = 0
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER:
                    raise MeshError("the daemon's answer is too large")
            return b"".join(chunks)

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call("POST", path, json=body or {})

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)


def query_string(params: dict[str, Any]) -> str:
    """``params`` as a URL query: a list repeats its key, booleans are ``true``/``false``."""
    pairs = []
    for key, value in params.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            pairs.append(
                (key, ("true" if v else "false") if isinstance(v, bool) else "" if v is None else str(v))
            )
    return urlencode(pairs, quote_via=quote)


def request_body(value: Any) -> bytes | None:
    """``value`` as a JSON request body, or a one-line :class:`BadValue` saying what cannot be sent."""
    if value is None:
        return None
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except ValueError as exc:
        if isinstance(exc, UnicodeEncodeError):
            raise BadValue(
                "the command line holds bytes that are not UTF-8 text: check the terminal's encoding"
            ) from None
        raise BadValue(f"a number on the command line is not finite ({exc})") from None


def http_request(method: str, target: str, body: bytes | None) -> bytes:
    """One HTTP/1.1 request that asks the daemon to close the connection after its answer."""
    head = [f"{method} {target} HTTP/1.1", "host: meshnode", "connection: close", "accept: application/json"]
    if body is not None:
        head += ["content-type: application/json", f"content-length: {len(body)}"]
    elif method in ("POST", "PUT", "PATCH"):
        head.append("content-length: 0")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + (body or b"")


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """The status and body of an HTTP/1.1 answer read to its end (a chunked body joined)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise MeshError("the daemon sent a malformed answer (not HTTP)")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        return status, _unchunk(body)
    length = headers.get(b"content-length")
    if length is not None and length.isdigit():
        if len(body) < int(length):
            raise MeshError("the daemon's answer was cut short")
        body = body[: int(length)]
    return status, body


def _unchunk(body: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise MeshError("the daemon's answer was cut short")
        try:
            size = int(body[pos:end].split(b";")[0], 16)
        except ValueError:
            raise MeshError("the daemon sent a malformed answer (bad chunk)") from None
        if size == 0:
            return b"".join(out)
        start = end + 2
        if len(body) < start + size:
            raise MeshError("the daemon's answer was cut short")
        out.append(body[start : start + size])
        pos = start + size + 2
