"""The swarms this node is in: create one, join one with an invite code (pasted or scanned), invite someone.

An invite page shows the code as text (in a ``<pre>``: the accessible form,
and the one to copy) and as a QR code, an inline SVG made by segno (imported
only when an invite is shown). Joining takes the code from a textarea; on the
swarms page ``static/scan.js`` reads a QR code from a photo with the vendored
``static/jsQR.js`` (Apache-2.0) and fills that textarea. Without JavaScript
the code is pasted.
"""

from __future__ import annotations

import io
from typing import Any

from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from meshnode.api.ledgerservice import LedgerService
from meshnode.web.app import WebContext, form, page
from meshnode.web.auth import Session


async def swarms(ctx: WebContext, request: Request, session: Session) -> Response:
    joined = await ctx.service.swarms()
    currencies = {c["swarm"]: c for c in await LedgerService(ctx.service).show_currency()}
    q = request.query_params
    values: dict[str, Any] = {
        "swarms": joined,
        "currencies": currencies,
        "done": q.get("done") == "1",
        "unreached": q.get("unreached") == "1",
    }
    return ctx.render(request, "swarms.html", session=session, **values)


async def create(ctx: WebContext, request: Request, session: Session) -> Response:
    fields = await form(request)
    await ctx.service.swarm_create(fields.get("name", "").strip(), fields.get("private") == "1")
    return RedirectResponse("/swarms?done=1", status_code=303)


async def join(ctx: WebContext, request: Request, session: Session) -> Response:
    fields = await form(request)
    joined = await ctx.service.swarm_join(fields.get("code", ""))
    where = "/swarms?done=1" if joined.get("connected", True) else "/swarms?done=1&unreached=1"
    return RedirectResponse(where, status_code=303)


async def leave(ctx: WebContext, request: Request, session: Session) -> Response:
    """Leave a swarm (``meshnode swarm leave``): its records are kept, hidden, until it is joined again."""
    await ctx.service.swarm_leave(request.path_params["name"])
    return RedirectResponse("/swarms?done=1", status_code=303)


async def invite(ctx: WebContext, request: Request, session: Session) -> Response:
    name = request.path_params["name"]
    code = (await ctx.service.swarm_invite(name))["code"]
    swarm = ctx.service.node.swarm(name)
    label = ctx.text("swarms.qr_label", name=swarm.name)
    return ctx.render(
        request, "invite.html", session=session, name=swarm.name, code=code, qr=qr_svg(code, label)
    )


def qr_svg(code: str, label: str) -> Markup:
    """``code`` as a QR code: an inline SVG (black on white, sized by its viewBox) named ``label``."""
    import segno  # only an invite page needs it

    out = io.BytesIO()
    segno.make(code, error="m").save(
        out, kind="svg", xmldecl=False, svgns=True, omitsize=True, light="#fff", dark="#000", nl=False
    )
    svg = out.getvalue().decode("ascii")
    head = '<svg xmlns="http://www.w3.org/2000/svg"'
    if not svg.startswith(head):  # segno's layout changed: better no picture than a broken one
        raise RuntimeError("segno made an unexpected SVG")
    named = f'{head} role="img" aria-label="{escape(label)}" shape-rendering="crispEdges"' + svg[len(head) :]
    return Markup(named)  # segno's own markup (path data only) and an escaped label


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [
        Route("/swarms", page(ctx, swarms), methods=["GET"]),
        Route("/swarms/create", page(ctx, create), methods=["POST"]),
        Route("/swarms/join", page(ctx, join), methods=["POST"]),
        Route("/swarms/{name}/invite", page(ctx, invite), methods=["GET"]),
        Route("/swarms/{name}/leave", page(ctx, leave), methods=["POST"]),
    ]
