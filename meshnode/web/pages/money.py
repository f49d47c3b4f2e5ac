"""Money: my balance in each swarm, my credit limit and where it comes from, my transfers, and paying.

``GET /money`` shows :meth:`~meshnode.api.ledgerservice.LedgerService.balance`
(the owner's, each swarm: balance, limit, what can be spent, the base and
the neighbours whose trust extends it) and
:meth:`~meshnode.api.ledgerservice.LedgerService.ledger` (the owner's
transfers, newest first, and whether each counts). ``POST /money/pay`` is
:meth:`~meshnode.api.ledgerservice.LedgerService.pay`: to a neighbour
picked from those this node trusts (:meth:`~meshnode.api.service.ApiService.
trusted`), an amount, what for; every rule (the limit, the chain) is the
service's.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from meshnode.api.ledgerservice import LedgerService
from meshnode.web.app import WebContext, form, page
from meshnode.web.auth import Session

#: How many neighbours the "Who" list offers at most (the most trusted).
NEIGHBOURS = 200


async def money(ctx: WebContext, request: Request, session: Session) -> Response:
    ledger = LedgerService(ctx.service)
    balances = await ledger.balance()
    transfers = {s["swarm"]: s["transfers"] for s in await ledger.ledger()}
    swarms = [b | {"transfers": transfers.get(b["swarm"], [])} for b in balances]
    values: dict[str, Any] = {
        "swarms": swarms,
        "neighbours": await ctx.service.trusted(NEIGHBOURS),
        "done": request.query_params.get("done") == "1",
    }
    return ctx.render(request, "money.html", session=session, **values)


async def pay(ctx: WebContext, request: Request, session: Session) -> Response:
    fields = await form(request)
    await LedgerService(ctx.service).pay(
        fields.get("peer", ""), fields.get("amount", ""), fields.get("memo", ""), None, fields.get("swarm")
    )
    return RedirectResponse("/money?done=1", status_code=303)


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [
        Route("/money", page(ctx, money), methods=["GET"]),
        Route("/money/pay", page(ctx, pay), methods=["POST"]),
    ]
