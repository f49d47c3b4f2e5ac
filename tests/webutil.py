"""Driving the web page without a daemon or a browser: the real app over a fake node, logged in.

``async with web_page(tmp_path, me) as page:`` builds an
:class:`~meshnode.api.service.ApiService` over :class:`FakeNode` (a real
in-memory store, a key, a clock, one swarm; ``publish`` signs and stores as
the node would, without a network), the web app over it
(:func:`meshnode.web.app.build_web_app`), and an httpx client that talks to
the app in process and has logged in with a one-time link. ``page.csrf`` is
the session's CSRF token; ``page.post(url, data)`` adds it to a form.
Subclass :class:`FakeNode` in a test file for what a page needs beyond it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from meshnode import records as r
from meshnode.api.service import ApiService
from meshnode.errors import NotFound
from meshnode.home import Home
from meshnode.identity import Identity
from meshnode.store import Store
from meshnode.web.app import WebContext, build_web_app
from meshnode.web.auth import WebAuth
from meshnode.web.text import Text
from tests.conftest import NOW, SWARM, Author

ELM = SimpleNamespace(id=SWARM, name="Elm Street", private=True, key=None)
BASE = "http://127.0.0.1:8790"


class FakeNode:
    """What the pages use of a node: store, key, clock, one swarm, publish (sign and store), no network."""

    def __init__(self, store: Store, me: Author) -> None:
        self.store = store
        self.me = me
        self.identity = Identity(bytes(me.key))  # a real one: sealing private details needs the key
        self.now = NOW + 60_000
        self.ingest = SimpleNamespace(on_stored=[])
        self.on_removed: list = []
        self.peer_id = "12D3KooWFakeNode"

    def clock(self) -> int:
        return self.now

    def connected_peers(self) -> list[str]:
        return []

    def swarms(self) -> list:
        return [ELM]

    def swarm_ids(self) -> set[bytes]:
        return {SWARM}

    def swarm(self, name: Any) -> Any:
        if name in ("Elm Street", SWARM):
            return ELM
        raise NotFound(f"no swarm named {name!r} on this node: see 'meshnode swarm list'")

    def swarm_peers(self, swarm: Any) -> list[str]:
        return []

    async def sync_with(self, peer: str, swarm: Any) -> None:
        return None

    def addrs(self, swarm: Any = None) -> list[str]:
        return []

    def stored(self, *records: r.Record) -> None:
        """Store ``records`` as ingest does, then tell every on_stored listener."""
        result = self.store.add_records(records, now_ms=self.now)
        assert not result.refused, result.refused
        for record in records:
            if record.id in result.added:
                for callback in self.ingest.on_stored:
                    callback(record)

    async def publish(self, body: Any, swarm: Any) -> r.Record:
        record = self.me.sign(body, ts=self.now)
        self.stored(record)
        return record


class StatusNode(FakeNode):
    """A fake node that can also answer ``/node``: nothing connected, behind a router, no network figures."""

    def __init__(self, store: Store, me: Author) -> None:
        super().__init__(store, me)
        self.ingest = SimpleNamespace(on_stored=[], stats=SimpleNamespace(accepted=0))

    def reachability(self) -> dict[str, str]:
        return {"state": "private", "reason": "behind a router"}

    def network_status(self) -> list[dict[str, Any]]:
        return []

    def storage(self) -> dict[str, Any]:
        return {}

    def gossip_stats(self) -> dict[str, int]:
        return {}

    def sync_stats(self) -> dict[str, int]:
        return {}

    def px_stats(self) -> dict[str, int]:
        return {}

    def peer_details(self) -> list[dict[str, Any]]:
        return []

    def known_peers(self) -> list[dict[str, Any]]:
        return []


@dataclass
class WebPage:
    """A logged-in client of the web app, and what is behind it."""

    client: httpx.AsyncClient
    node: FakeNode
    api: ApiService
    ctx: WebContext
    csrf: str

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        return await self.client.get(url, **kw)

    async def post(self, url: str, data: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        """POST a form with the session's CSRF token and this page's Origin."""
        headers = {"origin": BASE, **kw.pop("headers", {})}
        return await self.client.post(url, data={"csrf": self.csrf, **(data or {})}, headers=headers, **kw)


@asynccontextmanager
async def web_page(
    tmp_path: Path, me: Author, *, node_class: type[FakeNode] = FakeNode
) -> AsyncIterator[WebPage]:
    """The web app over a fake node of ``me``, and a client logged in to it (see the module docstring)."""
    with Store.open(":memory:") as store:
        node = node_class(store, me)
        (tmp_path / "home").mkdir(parents=True, exist_ok=True)
        api = ApiService(node, Home(tmp_path / "home"), request_stop=lambda: None)  # type: ignore[arg-type]
        try:
            ctx = WebContext(service=api, auth=WebAuth(), text=Text("en"), host="127.0.0.1", port=8790)
            transport = httpx.ASGITransport(app=build_web_app(ctx))
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                token = ctx.auth.new_login(node.clock())
                response = await client.get(f"/login?token={token}")
                assert response.status_code == 303, response.text
                page = await client.get("/offers")
                found = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text)
                assert found is not None, page.text
                yield WebPage(client, node, api, ctx, found.group(1))
        finally:
            api.close()
