"""The swarm's offers: search by words, kind, tag and distance, each with its author's trust and state.

The model for the other pages: handlers take ``(ctx, request, session)``,
call the same :class:`~meshnode.api.service.ApiService` methods as the API,
and render a template; an htmx request gets only the part it swaps.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from meshnode import records as rec
from meshnode.errors import BadValue
from meshnode.web.app import WebContext, page
from meshnode.web.auth import Session

#: How many offers a search shows at most.
LIMIT = 100


async def offers(ctx: WebContext, request: Request, session: Session) -> Response:
    q = request.query_params
    words = q.get("q", "").strip() or None
    kind = q.get("kind") or None
    tag = q.get("tag", "").strip() or None
    near = q.get("near", "").strip().lower() or None
    km_text = q.get("km", "").strip()
    try:
        km = float(km_text) if km_text else None
    except ValueError:
        raise BadValue(ctx.text("offers.bad_km", value=km_text)) from None
    found = await ctx.service.items(
        "offer",
        kind=kind,
        tag=tag,
        query=words,
        limit=LIMIT,
        near=near,
        km=km if near else None,
        all_=q.get("all") == "1",
    )
    values: dict[str, Any] = {
        "offers": found,
        "kinds": rec.ITEM_KINDS,
        "query": {"q": words or "", "kind": kind or "", "tag": tag or "", "near": near or "", "km": km_text},
        "show_all": q.get("all") == "1",
    }
    if request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == "results":
        return ctx.render(request, "offers_results.html", session=session, **values)
    return ctx.render(request, "offers.html", session=session, **values)


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [Route("/offers", page(ctx, offers), methods=["GET"])]
