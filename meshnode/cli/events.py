"""The CLI's reader of the daemon's event stream (``GET /v1/events``, server-sent events).

:func:`notices` yields each notice's JSON as it comes. When the stream ends
(the daemon dropped a watcher that fell behind) it reconnects from the last
notice it saw, so nothing is lost or shown twice; when the daemon stops it
raises :class:`~meshnode.errors.DaemonNotRunning`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from meshnode.cli.client import ApiClient
from meshnode.errors import ERRORS_BY_CODE, MeshError

#: The stream sends a keep-alive every 15 s; silence this long means the daemon is gone.
READ_TIMEOUT_S = 60.0


def notices(api: ApiClient, since: int | None = None) -> Iterator[dict[str, Any]]:
    """Each notice after ``since`` (default: from now on), live, until the daemon stops."""
    last = since
    api.call("GET", "/id")  # a clear error now if no daemon runs
    while True:
        for event in _stream(api, last):
            last = event["seq"]
            yield event


def _stream(api: ApiClient, since: int | None) -> Iterator[dict[str, Any]]:
    transport = httpx.HTTPTransport(uds=str(api.home.socket))
    params = {"since": since} if since is not None else {}
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=2.0)
    try:
        with (
            httpx.Client(transport=transport, base_url="http://meshnode", timeout=timeout) as client,
            client.stream("GET", "/v1/events", params=params) as response,
        ):
            if response.status_code >= 400:
                response.read()
                raise _refusal(response)
            data: list[str] = []
            for line in response.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    yield json.loads("\n".join(data))
                    data = []
    except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError, httpx.RemoteProtocolError):
        raise api._not_running() from None
    except httpx.ReadTimeout:
        raise MeshError("the daemon stopped sending events; see its log") from None
    except httpx.HTTPError as exc:
        raise MeshError(f"reading the daemon's events failed: {exc}") from None


def _refusal(response: httpx.Response) -> MeshError:
    """The daemon's error answer as the one-line error it names."""
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        error = {}
    cls = ERRORS_BY_CODE.get(error.get("code", ""), MeshError)
    return cls(str(error.get("message", f"HTTP {response.status_code}")))
