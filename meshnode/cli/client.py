"""The CLI's client for the daemon's local API (HTTP over the home's Unix socket, with httpx)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from meshnode.errors import ERRORS_BY_CODE, BadValue, DaemonNotRunning, MeshError, NotAllowed
from meshnode.home import Home

TIMEOUT = httpx.Timeout(30.0, connect=2.0)
STARTUP_WAIT = 15.0  # s a command waits for a daemon that is still starting


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
        content = request_body(json)
        transport = httpx.HTTPTransport(uds=str(self.home.socket))
        try:
            with httpx.Client(transport=transport, base_url="http://meshnode", timeout=TIMEOUT) as client:
                response = client.request(
                    method,
                    f"/v1{path}",
                    content=content,
                    headers={"content-type": "application/json"} if content is not None else None,
                    params=params,
                )
        except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError):
            raise self._not_running() from None
        except PermissionError:
            raise NotAllowed(f"not allowed to use {self.home.socket}: it belongs to another user") from None
        except httpx.TimeoutException:
            raise MeshError("the daemon did not answer in time; see its log") from None
        except httpx.HTTPError as exc:
            raise MeshError(f"talking to the daemon failed: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            raise MeshError(f"the daemon sent a malformed answer (HTTP {response.status_code})") from None
        if response.status_code >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            cls = ERRORS_BY_CODE.get(error.get("code", ""), MeshError)
            raise cls(str(error.get("message", f"HTTP {response.status_code}")))
        return data

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call("POST", path, json=body or {})

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)


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
