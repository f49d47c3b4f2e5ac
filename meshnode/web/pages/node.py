"""This node: whether others can reach it, who is connected, what it knows and keeps, where the page is.

Reads :meth:`ApiService.status`, :meth:`ApiService.peers` and
:meth:`ApiService.known_peers`, as ``meshnode status`` and ``meshnode peers`` do.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from meshnode.web.app import WebContext, page
from meshnode.web.auth import Session

#: The reachability states the page has words for (meshnode.reach); any other reads as "unknown".
REACH = ("local", "public", "upnp", "relayed", "private", "unknown")


async def node(ctx: WebContext, request: Request, session: Session) -> Response:
    api = ctx.service
    status = await api.status()
    peers = await api.peers()
    known = await api.known_peers()
    reach = status.get("reachability", {})
    state = reach.get("state", "unknown")
    web = getattr(api.web, "url", None) or str(request.base_url).rstrip("/")
    return ctx.render(
        request,
        "node.html",
        session=session,
        node=status,
        reach_state=state if state in REACH else "unknown",
        reach_reason=reach.get("reason", ""),
        peers=sorted({row["name"] for row in peers}, key=str.casefold),
        known=len({row["peer_id"] for row in known}),
        web=web,
    )


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [Route("/node", page(ctx, node), methods=["GET"])]
