"""One offer: what it is, its author's profile and trust, and (for a neighbour's offer) the propose form.

``GET /offers/{id}`` shows the offer as :meth:`ApiService.item_show` sees
it, with :meth:`ApiService.profile` and :meth:`ApiService.trust` of its
author; ``POST /offers/{id}/propose`` calls :meth:`ApiService.propose` and
redirects to the new trade (``/trades/{pid}``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from meshnode.web.app import WebContext, form, page
from meshnode.web.auth import Session


async def offer(ctx: WebContext, request: Request, session: Session) -> Response:
    item_id = request.path_params["id"]
    api = ctx.service
    item = await api.item_show(item_id)
    profile = await api.profile(item["author"])
    trust = None if item["mine"] else await api.trust(item["author"])
    give: list[dict[str, Any]] = []
    if not item["mine"] and item["state"] == "available" and item["type"] == "offer":
        mine = await api.items("offer", mine=True, limit=1000)
        give = [o for o in mine if o["swarm"] == item["swarm"] and o["id"] != item["id"]]
    values: dict[str, Any] = {
        "item": item,
        "profile": profile,
        "trust": trust,
        "give": give,
        "can_propose": not item["mine"] and item["state"] == "available" and item["type"] == "offer",
    }
    return ctx.render(request, "offer.html", session=session, **values)


async def propose(ctx: WebContext, request: Request, session: Session) -> Response:
    fields = await form(request)
    give = fields.get("give", "").strip()
    made = await ctx.service.propose(
        request.path_params["id"],
        [give] if give else [],
        note=fields.get("note", ""),
        private=fields.get("private", ""),
    )
    return RedirectResponse(f"/trades/{made['id']}", status_code=303)


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [
        Route("/offers/{id}", page(ctx, offer), methods=["GET"]),
        Route("/offers/{id}/propose", page(ctx, propose), methods=["POST"]),
    ]
