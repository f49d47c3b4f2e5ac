"""My offers and wants: the list, publishing a new one, editing and withdrawing.

The forms call :meth:`ApiService.item_add`, :meth:`ApiService.item_edit` and
:meth:`ApiService.item_withdraw` (which hold every rule: only the author may
edit or withdraw, which kinds take a price or lending terms); this module
only turns the form's text into their arguments.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from meshnode import records as rec
from meshnode.errors import BadValue, NotAllowed
from meshnode.web.app import WebContext, form, page
from meshnode.web.auth import Session

#: How many of my offers (and of my wants) the page lists at most.
LIMIT = 1000


def _tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _days(ctx: WebContext, text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise BadValue(ctx.text("mine.bad_days", value=text)) from None


async def mine(ctx: WebContext, request: Request, session: Session) -> Response:
    api = ctx.service
    offers = await api.items("offer", mine=True, all_=True, limit=LIMIT)
    wants = await api.items("want", mine=True, all_=True, limit=LIMIT)
    values: dict[str, Any] = {
        "offers": offers,
        "wants": wants,
        "kinds": rec.ITEM_KINDS,
        "done": request.query_params.get("done") == "1",
        "item": None,
    }
    return ctx.render(request, "mine.html", session=session, **values)


async def add(ctx: WebContext, request: Request, session: Session) -> Response:
    f = await form(request)
    type_ = f.get("type", "offer")
    if type_ not in ("offer", "want"):
        raise BadValue(ctx.text("mine.bad_type"))
    await ctx.service.item_add(
        type_,
        title=f.get("title", ""),
        kind=f.get("kind", "give"),
        tags=_tags(f.get("tags", "")),
        desc=f.get("desc", ""),
        max_days=_days(ctx, f.get("max_days", "")),
        deposit=f.get("deposit", "").strip(),
        price=f.get("price", "").strip() or None,
    )
    return RedirectResponse("/mine?done=1", status_code=303)


async def _own(ctx: WebContext, item_id: str) -> dict[str, Any]:
    item = await ctx.service.item_show(item_id)
    if not item["mine"]:
        raise NotAllowed(ctx.text("mine.not_yours"))
    return item


async def edit_form(ctx: WebContext, request: Request, session: Session) -> Response:
    item = await _own(ctx, request.path_params["id"])
    return ctx.render(request, "item_form.html", session=session, item=item, kinds=rec.ITEM_KINDS)


async def edit(ctx: WebContext, request: Request, session: Session) -> Response:
    f = await form(request)
    item = await _own(ctx, request.path_params["id"])
    kind = f.get("kind", item["kind"])
    price: str | None = f.get("price", "").strip()
    if not price:
        # An emptied price removes it (the service's "0"); none before and none now: no change.
        price = "0" if "price" in item and kind in rec.PRICED_KINDS else None
    await ctx.service.item_edit(
        item["type"],
        item["id"],
        title=f.get("title", ""),
        kind=kind,
        desc=f.get("desc", ""),
        tags=_tags(f.get("tags", "")),
        price=price,
    )
    return RedirectResponse("/mine?done=1", status_code=303)


async def withdraw(ctx: WebContext, request: Request, session: Session) -> Response:
    await ctx.service.item_withdraw(request.path_params["id"])
    return RedirectResponse("/mine?done=1", status_code=303)


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [
        Route("/mine", page(ctx, mine), methods=["GET"]),
        Route("/mine/add", page(ctx, add), methods=["POST"]),
        Route("/mine/{id}/edit", page(ctx, edit_form), methods=["GET"]),
        Route("/mine/{id}/edit", page(ctx, edit), methods=["POST"]),
        Route("/mine/{id}/withdraw", page(ctx, withdraw), methods=["POST"]),
    ]
