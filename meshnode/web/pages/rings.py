"""Trade rings: the rings this node could close with its neighbours (propose one), and the rings it is in.

A ring is three to five neighbours who each give the next one something
they want. The suggestions and the moves are :class:`RingService`'s (the
same as ``meshnode rings``, ``propose-ring``, ``ring accept|decline|complete``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from meshnode.api.ringservice import RingService
from meshnode.errors import BadValue
from meshnode.identity import peer_id_of
from meshnode.records import RING_ACTIONS
from meshnode.web.app import WebContext, form, page
from meshnode.web.auth import Session

#: How many suggestions the page shows at most.
SUGGESTIONS = 10


async def rings(ctx: WebContext, request: Request, session: Session) -> Response:
    service = RingService(ctx.service)
    suggested = await service.suggest(SUGGESTIONS)
    mine = await service.mine()
    done = request.query_params.get("done") == "1"
    return ctx.render(
        request,
        "rings.html",
        session=session,
        suggested=suggested,
        mine=mine,
        me=peer_id_of(ctx.service.me),
        actions=RING_ACTIONS,
        done=done,
    )


async def propose(ctx: WebContext, request: Request, session: Session) -> Response:
    fields = await form(request)
    suggestion = fields.get("suggestion", "").strip()
    if not suggestion:
        raise BadValue(ctx.text("rings.no_suggestion"))
    await RingService(ctx.service).propose(suggestion=suggestion, note=fields.get("note", ""))
    return RedirectResponse("/rings?done=1", status_code=303)


async def move(ctx: WebContext, request: Request, session: Session) -> Response:
    fields = await form(request)
    action = request.path_params["action"]
    await RingService(ctx.service).move(request.path_params["id"], action, fields.get("note", ""))
    return RedirectResponse("/rings?done=1", status_code=303)


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [
        Route("/rings", page(ctx, rings), methods=["GET"]),
        Route("/rings", page(ctx, propose), methods=["POST"]),
        Route("/rings/{id}/{action}", page(ctx, move), methods=["POST"]),
    ]
