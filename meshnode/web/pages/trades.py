"""My trades: the list, one trade with its history, and the moves its state allows.

``GET /trades`` lists :meth:`~meshnode.api.service.ApiService.proposals`;
``GET /trades/{pid}`` shows :meth:`~meshnode.api.service.ApiService.proposal`
(what each side gives, the state, every move in words, the private details
this node can read) and one form per move the trade's state allows the owner
(:meth:`meshnode.barter.Trade.allowed_actions`; ``received`` only to the
borrower of a loan, as :meth:`~meshnode.api.service.ApiService.loans` says).
Each form posts to ``/trades/{pid}/{action}``, which is
:meth:`~meshnode.api.service.ApiService.reply`: a move the trade does not
allow is refused there, in one line, and nothing is signed.

A done trade in which the owner received a priced offer and has not paid
(:meth:`meshnode.api.ledgerservice.LedgerService.to_pay`) also has a form
``POST /trades/{pid}/pay``: :meth:`~meshnode.api.ledgerservice.LedgerService.pay`
for that trade, the amount prefilled.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from meshnode import barter, money, views
from meshnode.api.ledgerservice import LedgerService, ToPay
from meshnode.errors import BadValue, NotAllowed, NotFound
from meshnode.identity import peer_id_of
from meshnode.web.app import WebContext, form, form_lists, page
from meshnode.web.auth import Session

#: The moves the trade page offers, in the order its forms appear.
ACTIONS = ("accept", "counter", "decline", "received", "extend", "returned", "complete", "cancel")
#: How many offers of each side a counter form lists at most.
COUNTER_CHOICES = 200


def trade_line(ctx: WebContext, row: dict[str, Any]) -> str:
    """What a trade is, from the owner's side ("Bob offers Ladder for your Cordless drill")."""
    t = ctx.text
    give, get, who = ", ".join(row["you_give"]), ", ".join(row["you_get"]), row["with_name"]
    if row["proposed_by"] == "you":
        if not get:
            return t("trades.you_give_to", give=give, name=who)
        if not give:
            return t("trades.you_ask", get=get, name=who)
        return t("trades.you_offer", give=give, get=get, name=who)
    if not give:
        return t("trades.they_give", get=get, name=who)
    if not get:
        return t("trades.they_ask", give=give, name=who)
    return t("trades.they_offer", give=give, get=get, name=who)


def state_words(ctx: WebContext, row: dict[str, Any]) -> str:
    """The state in words, with whose move it is while that matters."""
    state = ctx.text("trades.state_" + row["state"].replace(" ", "_"))
    waiting = row.get("waiting_for")
    if waiting == "you":
        return ctx.text("trades.state_your_move", state=state)
    if waiting == "them":
        return ctx.text("trades.state_their_move", state=state, name=row["with_name"])
    return state


async def trades(ctx: WebContext, request: Request, session: Session) -> Response:
    rows = [
        row | {"line": trade_line(ctx, row), "state_text": state_words(ctx, row)}
        for row in await ctx.service.proposals()
    ]
    return ctx.render(request, "trades.html", session=session, trades=rows)


async def _allowed(ctx: WebContext, pid: str) -> list[str]:
    """The moves the owner may make on trade ``pid`` now, by its state (the service checks the rest)."""
    api = ctx.service
    trade = views.find_trade(await api.views.book(), bytes.fromhex(pid))
    allowed = trade.allowed_actions(api.me)
    if barter.RECEIVED in allowed:
        borrowing = any(
            row["id"] == pid and row["role"] == "borrowed" and row["state"] == barter.ACCEPTED
            for row in await api.loans()
        )
        if not borrowing:
            allowed -= {barter.RECEIVED}
    return [a for a in ACTIONS if a in allowed]


async def _to_pay(ctx: WebContext, pid: str) -> ToPay | None:
    for due in await LedgerService(ctx.service).to_pay():
        if due.trade.proposal_id.hex() == pid:
            return due
    return None


async def trade(ctx: WebContext, request: Request, session: Session) -> Response:
    row = await ctx.service.proposal(request.path_params["pid"])
    pid = row["id"]
    due = await _to_pay(ctx, pid)
    me = peer_id_of(ctx.service.me)
    for m in (*row["moves"], *row["not_counted"]):
        who = "you" if m["who"] == me else "they"
        m["text"] = ctx.text(f"trades.{who}_{m['action']}", name=m["who_name"])
    actions = await _allowed(ctx, pid)
    values: dict[str, Any] = {
        "trade": row,
        "line": trade_line(ctx, row),
        "state_text": state_words(ctx, row),
        "actions": actions,
        "counter": await _counter_choices(ctx, row) if "counter" in actions else None,
        "to_pay": (
            {"amount": money.format_amount(due.amount), "name": ctx.service.name_of(due.payee)}
            if due is not None
            else None
        ),
        "done": request.query_params.get("done") == "1",
    }
    return ctx.render(request, "trade.html", session=session, **values)


async def _counter_choices(ctx: WebContext, row: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """What a counter may name: my and their available offers in the swarm, the current ones checked."""
    api = ctx.service
    trade = views.find_trade(await api.views.book(), bytes.fromhex(row["id"]))
    swarm = next((s.name for s in api.node.swarms() if s.id == trade.swarm), None)
    current = set(row["give"]) | set(row["take"])
    mine = await api.items("offer", mine=True, swarm=swarm, limit=COUNTER_CHOICES)
    everyone = await api.items("offer", swarm=swarm, limit=COUNTER_CHOICES * 5)
    theirs = [o for o in everyone if o["author"] == row["with"]][:COUNTER_CHOICES]

    def choice(o: dict[str, Any]) -> dict[str, Any]:
        return {"id": o["id"], "title": o["title"], "checked": o["id"] in current}

    return {"give": [choice(o) for o in mine], "take": [choice(o) for o in theirs]}


async def move(ctx: WebContext, request: Request, session: Session) -> Response:
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise NotFound(ctx.text("common.not_found"))
    fields = await form(request)
    if action == "counter":
        lists = await form_lists(request)
        countered = await ctx.service.reply(
            request.path_params["pid"],
            "counter",
            give=lists.get("give", []),
            take=lists.get("take", []),
            note=fields.get("note", ""),
            private=fields.get("private", ""),
        )
        return RedirectResponse(f"/trades/{countered['id']}?done=1", status_code=303)
    days: int | None = None
    if action == "extend":
        text = fields.get("days", "").strip()
        if not text.isdigit() or int(text) < 1:
            raise BadValue(ctx.text("trades.bad_days", value=text))
        days = int(text)
    after = await ctx.service.reply(
        request.path_params["pid"],
        action,
        note=fields.get("note", ""),
        private=fields.get("private", ""),
        days=days,
    )
    return RedirectResponse(f"/trades/{after['id']}?done=1", status_code=303)


async def pay(ctx: WebContext, request: Request, session: Session) -> Response:
    row = await ctx.service.proposal(request.path_params["pid"])
    pid = row["id"]
    due = await _to_pay(ctx, pid)
    if due is None:
        raise NotAllowed(ctx.text("trades.nothing_to_pay"))
    fields = await form(request)
    await LedgerService(ctx.service).pay(
        peer_id_of(due.payee), fields.get("amount", ""), fields.get("memo", ""), pid
    )
    return RedirectResponse(f"/trades/{pid}?done=1", status_code=303)


def routes(ctx: WebContext) -> list[BaseRoute]:
    return [
        Route("/trades", page(ctx, trades), methods=["GET"]),
        Route("/trades/{pid}", page(ctx, trade), methods=["GET"]),
        Route("/trades/{pid}/pay", page(ctx, pay), methods=["POST"]),
        Route("/trades/{pid}/{action}", page(ctx, move), methods=["POST"]),
    ]
