"""Neighbours: whom this node trusts, the profiles it knows; one neighbour's page with vouch, warn, name.

The lists come from :meth:`ApiService.trusted` and the profiles the node
holds; a neighbour's page from :meth:`ApiService.profile`,
:meth:`ApiService.trust` and :meth:`LedgerService.balance`. The forms call
:meth:`ApiService.vouch` (a warning is a vouch with a negative level) and
:meth:`ApiService.name_peer`.
"""

from __future__ import annotations

from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from meshnode.api.ledgerservice import LedgerService
from meshnode.api.service import DEFAULT_VOUCH
from meshnode.errors import BadValue
from meshnode.identity import peer_id_of
from meshnode.web.app import WebContext, form, page
from meshnode.web.auth import Session

#: How many trusted people the page lists at most.
LIMIT = 100
#: The level of a warning ("What happened"): as strong a distrust as a vouch can say.
WARN_LEVEL = -1.0


async def neighbours(ctx: WebContext, request: Request, session: Session) -> Response:
    api = ctx.service
    trusted = await api.trusted(LIMIT)
    listed = {row["peer"] for row in trusted}
    profiles = await trio.to_thread.run_sync(lambda: list(api.people.profiles))
    known = [
        {"peer": peer_id_of(p.author), "peer_name": api.name_of(p.author), "bio": p.bio}
        for p in profiles
        if p.author != api.me and peer_id_of(p.author) not in listed
    ]
    known.sort(key=lambda row: row["peer_name"].casefold())
    return ctx.render(request, "neighbours.html", session=session, trusted=trusted, known=known)


async def neighbour(ctx: WebContext, request: Request, session: Session) -> Response:
    api = ctx.service
    peer = request.path_params["peer"]
    profile = await api.profile(peer)
    values: dict[str, Any] = {
        "profile": profile,
        "trust": await api.trust(profile["peer"]),
        "balances": await LedgerService(api).balance(profile["peer"]),
        "done": request.query_params.get("done") == "1",
    }
    return ctx.render(request, "neighbour.html", session=session, **values)


def _level(ctx: WebContext, text: str) -> float:
    if not text.strip():
        return DEFAULT_VOUCH
    try:
        return float(text)
    except ValueError:
        raise BadValue(ctx.text("neighbours.bad_level", value=text)) from None


async def vouch(ctx: WebContext, request: Request, session: Session) -> Response:
    f = await form(request)
    peer = request.path_params["peer"]
    await ctx.service.vouch(peer, _level(ctx, f.get("level", "")), f.get("note", ""))
    return RedirectResponse(f"/neighbours/{peer}?done=1", status_code=303)


async def warn(ctx: WebContext, request: Request, session: Session) -> Response:
    f = await form(request)
    peer = request.path_params["peer"]
    note = f.get("note", "").strip()
    if not note:
        raise BadValue(ctx.text("neighbours.warn_needs_note"))
    await ctx.service.vouch(peer, WARN_LEVEL, note)
    return RedirectResponse(f"/neighbours/{peer}?done=1", status_code=303)


async def name(ctx: WebContext, request: Request, session: Session) -> Response:
    f = await form(request)
    peer = request.path_params["peer"]
    await ctx.service.name_peer(peer, f.get("name", "").strip())
    return RedirectResponse(f"/neighbours/{peer}?done=1", status_code=303)


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [
        Route("/neighbours", page(ctx, neighbours), methods=["GET"]),
        Route("/neighbours/{peer}", page(ctx, neighbour), methods=["GET"]),
        Route("/neighbours/{peer}/vouch", page(ctx, vouch), methods=["POST"]),
        Route("/neighbours/{peer}/warn", page(ctx, warn), methods=["POST"]),
        Route("/neighbours/{peer}/name", page(ctx, name), methods=["POST"]),
    ]
