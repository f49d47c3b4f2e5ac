"""Group buying: the open pools (pledge to one), one pool's shares, the organiser's moves.

Everything is :class:`PoolService`'s (the same as ``meshnode pools``,
``pool show``, ``pool pledge``, ``pool confirm|cancel|delivered``): the
page only reads the form's words and shows the answer.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from meshnode.api.poolservice import PoolService
from meshnode.errors import BadValue
from meshnode.records import POOL_ACTIONS
from meshnode.web.app import WebContext, form, page
from meshnode.web.auth import Session


async def pools(ctx: WebContext, request: Request, session: Session) -> Response:
    show_all = request.query_params.get("all") == "1"
    found = await PoolService(ctx.service).list_pools(show_all)
    return ctx.render(
        request, "pools.html", session=session, pools=found, show_all=show_all, actions=POOL_ACTIONS
    )


async def pool(ctx: WebContext, request: Request, session: Session) -> Response:
    shown = await PoolService(ctx.service).show(request.path_params["id"])
    done = request.query_params.get("done") == "1"
    return ctx.render(request, "pool.html", session=session, pool=shown, actions=POOL_ACTIONS, done=done)


async def pledge(ctx: WebContext, request: Request, session: Session) -> Response:
    text = (await form(request)).get("quantity", "").strip()
    try:
        quantity = int(text)
    except ValueError:
        raise BadValue(ctx.text("pools.bad_quantity", value=text)) from None
    after = await PoolService(ctx.service).pledge(request.path_params["id"], quantity)
    return RedirectResponse(f"/pools/{after['id']}?done=1", status_code=303)


async def start(ctx: WebContext, request: Request, session: Session) -> Response:
    """Organise a pool (``meshnode pool add``): the service checks every field before signing."""
    f = await form(request)
    counts = {}
    for name in ("min", "max"):
        text = f.get(name, "").strip()
        try:
            counts[name] = int(text)
        except ValueError:
            raise BadValue(ctx.text("pools.bad_quantity", value=text)) from None
    added = await PoolService(ctx.service).add(
        f.get("title", ""),
        f.get("supplier", ""),
        f.get("unit_price", "").strip(),
        counts["min"],
        counts["max"],
        f.get("closes", "").strip(),
        f.get("unit", ""),
    )
    return RedirectResponse(f"/pools/{added['id']}?done=1", status_code=303)


async def move(ctx: WebContext, request: Request, session: Session) -> Response:
    note = (await form(request)).get("note", "")
    after = await PoolService(ctx.service).move(
        request.path_params["id"], request.path_params["action"], note
    )
    return RedirectResponse(f"/pools/{after['id']}?done=1", status_code=303)


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [
        Route("/pools", page(ctx, pools), methods=["GET"]),
        Route("/pools/new", page(ctx, start), methods=["POST"]),
        Route("/pools/{id}", page(ctx, pool), methods=["GET"]),
        Route("/pools/{id}/pledge", page(ctx, pledge), methods=["POST"]),
        Route("/pools/{id}/{action}", page(ctx, move), methods=["POST"]),
    ]
