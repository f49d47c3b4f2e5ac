"""The local HTTP+JSON API (starlette), served by hypercorn on trio.

It listens on a Unix socket in the node's home, created mode 0600 (and the
home itself is 0700), so only the node's owner can use it. Errors come back
as ``{"error": {"code": <stable code>, "message": <one line>}}`` with an HTTP
status that fits the error class.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from meshnode.api.ledgerservice import LedgerService
from meshnode.api.poolservice import PoolService
from meshnode.api.ringservice import DEFAULT_SUGGESTIONS, RingService
from meshnode.api.service import DEFAULT_INBOX, DEFAULT_TRUSTED, DEFAULT_VOUCH, ApiService
from meshnode.errors import (
    BadValue,
    DaemonAlreadyRunning,
    MeshError,
    NetworkError,
    NotAllowed,
    NotFound,
    ValidationError,
)

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
API_PREFIX = "/v1"


def status_of(exc: MeshError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, NotAllowed):
        return 403
    if isinstance(exc, BadValue | ValidationError):
        return 400
    if isinstance(exc, DaemonAlreadyRunning):
        return 409
    if isinstance(exc, NetworkError):
        return 502
    return 500


def error_response(exc: MeshError) -> JSONResponse:
    return JSONResponse({"error": {"code": exc.code, "message": str(exc)}}, status_code=status_of(exc))


Handler = Callable[[Request, ApiService], Awaitable[Any]]


def endpoint(handler: Handler, service: ApiService) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def run(request: Request) -> JSONResponse:
        try:
            return JSONResponse(await handler(request, service))
        except MeshError as exc:
            return error_response(exc)
        except trio.Cancelled:
            raise
        except Exception:
            log.exception("API %s %s failed", request.method, request.url.path)
            return JSONResponse(
                {"error": {"code": "internal", "message": "internal error: see the daemon's log"}},
                status_code=500,
            )

    return run


async def body(request: Request, allowed: set[str]) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadValue(f"request body too large: at most {MAX_BODY} bytes")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadValue("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadValue("request body must be a JSON object")
    extra = set(data) - allowed
    if extra:
        raise BadValue(f"unexpected fields {sorted(extra)}; allowed: {sorted(allowed)}")
    return data


def qbool(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise BadValue(f"{name}: expected true or false")
    return value in ("true", "1")


def qint(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise BadValue(f"{name}: expected an integer, found {value!r}") from None


# --- handlers ------------------------------------------------------------------


def calls(method: Callable[[ApiService], Awaitable[Any]]) -> Handler:
    """The handler of a route that takes nothing from the request: ``method(service)``."""

    async def handler(request: Request, s: ApiService) -> Any:
        return await method(s)

    return handler


def calls_with_path(method: Callable[[ApiService, str], Awaitable[Any]], name: str) -> Handler:
    """The handler of a route that takes one path parameter ``name``: ``method(service, value)``."""

    async def handler(request: Request, s: ApiService) -> Any:
        return await method(s, request.path_params[name])

    return handler


async def post_connect(request: Request, s: ApiService) -> Any:
    b = await body(request, {"addr", "swarm"})
    return await s.connect(b.get("addr"), b.get("swarm"))


async def post_swarms(request: Request, s: ApiService) -> Any:
    b = await body(request, {"name", "private"})
    private = b.get("private", True)  # private unless asked otherwise
    if not isinstance(private, bool):
        raise BadValue("private: expected true or false")
    return await s.swarm_create(b.get("name"), private)


async def post_join(request: Request, s: ApiService) -> Any:
    b = await body(request, {"code"})
    return await s.swarm_join(b.get("code"))


def item_routes(type_: str, plural: str) -> list[tuple[str, Handler, str]]:
    async def add(request: Request, s: ApiService) -> Any:
        allowed = {"title", "kind", "tags", "desc", "expires_days", "where", "swarm", "max_days", "deposit"}
        b = await body(request, allowed | {"price"})
        return await s.item_add(
            type_,
            title=b.get("title"),
            kind=b.get("kind", "give"),
            tags=b.get("tags", []),
            desc=b.get("desc", ""),
            expires_days=b.get("expires_days"),
            where=b.get("where", ""),
            swarm=b.get("swarm"),
            max_days=b.get("max_days"),
            deposit=b.get("deposit", ""),
            price=b.get("price"),
        )

    async def listing(request: Request, s: ApiService) -> Any:
        q = request.query_params
        km_text = q.get("km")
        try:
            km = None if km_text is None else float(km_text)
        except ValueError:
            raise BadValue(f"km: expected a number of km, found {km_text!r}") from None
        return await s.items(
            type_,
            mine=qbool(request, "mine"),
            kind=q.get("kind"),
            tag=q.get("tag"),
            query=q.get("query"),
            limit=qint(request, "limit", 100),
            swarm=q.get("swarm"),
            near=q.get("near"),
            km=km,
            all_=qbool(request, "all"),
        )

    async def edit(request: Request, s: ApiService) -> Any:
        fields = ("title", "kind", "tags", "desc", "where", "expires_days", "price")
        b = await body(request, set(fields))
        return await s.item_edit(type_, request.path_params["id"], **{f: b.get(f) for f in fields})

    return [
        (f"/{plural}", add, "POST"),
        (f"/{plural}", listing, "GET"),
        (f"/{plural}/{{id}}", calls_with_path(ApiService.item_show, "id"), "GET"),
        (f"/{plural}/{{id}}", calls_with_path(ApiService.item_withdraw, "id"), "DELETE"),
        (f"/{plural}/{{id}}/edit", edit, "POST"),
    ]


async def post_proposal(request: Request, s: ApiService) -> Any:
    b = await body(request, {"offer", "give", "note", "expires_days", "private"})
    return await s.propose(
        b.get("offer"), b.get("give", []), b.get("note", ""), b.get("expires_days"), b.get("private", "")
    )


async def post_reply(request: Request, s: ApiService) -> Any:
    b = await body(request, {"give", "take", "note", "private", "days"})
    return await s.reply(
        request.path_params["id"],
        request.path_params["action"],
        give=b.get("give", []),
        take=b.get("take", []),
        note=b.get("note", ""),
        private=b.get("private", ""),
        days=b.get("days"),
    )


async def get_loans(request: Request, s: ApiService) -> Any:
    return await s.loans(all_=qbool(request, "all"))


async def post_vouch(request: Request, s: ApiService) -> Any:
    b = await body(request, {"peer", "level", "note", "swarm"})
    return await s.vouch(b.get("peer"), b.get("level", DEFAULT_VOUCH), b.get("note", ""), b.get("swarm"))


async def get_profile(request: Request, s: ApiService) -> Any:
    return await s.profile(request.query_params.get("peer"))


async def post_profile(request: Request, s: ApiService) -> Any:
    b = await body(request, {"nickname", "bio"})
    return await s.profile_set(b.get("nickname"), b.get("bio"))


async def post_name(request: Request, s: ApiService) -> Any:
    b = await body(request, {"peer", "name"})
    return await s.name_peer(b.get("peer"), b.get("name", ""))


async def get_trusted(request: Request, s: ApiService) -> Any:
    return await s.trusted(qint(request, "limit", DEFAULT_TRUSTED))


async def get_inbox(request: Request, s: ApiService) -> Any:
    return await s.inbox.inbox(qbool(request, "all"), qint(request, "limit", DEFAULT_INBOX))


# Trade rings (meshnode.api.ringservice).


async def get_ring_suggestions(request: Request, s: ApiService) -> Any:
    limit = qint(request, "limit", DEFAULT_SUGGESTIONS)
    return await RingService(s).suggest(limit, request.query_params.get("swarm"))


async def post_ring(request: Request, s: ApiService) -> Any:
    b = await body(request, {"suggestion", "offers", "note", "expires_days"})
    return await RingService(s).propose(
        b.get("suggestion"), b.get("offers"), b.get("note", ""), b.get("expires_days")
    )


async def get_rings(request: Request, s: ApiService) -> Any:
    return await RingService(s).mine()


async def get_ring(request: Request, s: ApiService) -> Any:
    return await RingService(s).show(request.path_params["id"])


async def post_ring_move(request: Request, s: ApiService) -> Any:
    b = await body(request, {"note"})
    return await RingService(s).move(
        request.path_params["id"], request.path_params["action"], b.get("note", "")
    )


# Group buying (meshnode.api.poolservice).


async def post_pool(request: Request, s: ApiService) -> Any:
    b = await body(request, {"title", "from", "unit_price", "min", "max", "closes", "unit", "swarm"})
    return await PoolService(s).add(
        b.get("title"),
        b.get("from"),
        b.get("unit_price"),
        b.get("min"),
        b.get("max"),
        b.get("closes"),
        b.get("unit", ""),
        b.get("swarm"),
    )


async def get_pools(request: Request, s: ApiService) -> Any:
    return await PoolService(s).list_pools(qbool(request, "all"))


async def get_pool(request: Request, s: ApiService) -> Any:
    return await PoolService(s).show(request.path_params["id"])


async def post_pledge(request: Request, s: ApiService) -> Any:
    b = await body(request, {"quantity"})
    return await PoolService(s).pledge(request.path_params["id"], b.get("quantity"))


async def post_pool_move(request: Request, s: ApiService) -> Any:
    b = await body(request, {"note"})
    return await PoolService(s).move(
        request.path_params["id"], request.path_params["action"], b.get("note", "")
    )


# Mutual credit (meshnode.api.ledgerservice).


async def post_pay(request: Request, s: ApiService) -> Any:
    b = await body(request, {"peer", "amount", "memo", "for", "swarm"})
    return await LedgerService(s).pay(
        b.get("peer"), b.get("amount"), b.get("memo", ""), b.get("for"), b.get("swarm")
    )


async def get_balance(request: Request, s: ApiService) -> Any:
    q = request.query_params
    return await LedgerService(s).balance(q.get("peer"), q.get("swarm"))


async def get_ledger(request: Request, s: ApiService) -> Any:
    return await LedgerService(s).ledger(request.query_params.get("swarm"))


async def get_currency(request: Request, s: ApiService) -> Any:
    return await LedgerService(s).show_currency(request.query_params.get("swarm"))


async def post_currency(request: Request, s: ApiService) -> Any:
    b = await body(request, {"name", "unit", "swarm"})
    return await LedgerService(s).set_currency(b.get("name"), b.get("unit"), b.get("swarm"))


#: The event stream says something at least this often (a comment line), so a dead client is noticed.
KEEPALIVE_S = 15.0


async def get_events(request: Request, service: ApiService) -> Response:
    """``GET /events``: the owner's notices as server-sent events, live.

    Each event is ``id: SEQ``, ``event: notice`` and ``data:`` the notice's
    JSON (as in ``GET /inbox``). Starts after ``?since=SEQ`` or the
    ``Last-Event-ID`` header (what a reconnecting EventSource sends), else
    with the next new notice. A comment line every :data:`KEEPALIVE_S`.
    """
    try:
        raw = request.query_params.get("since") or request.headers.get("last-event-id")
        since = int(raw) if raw is not None else None
        if since is not None and since < 0:
            raise ValueError
    except ValueError:
        return error_response(BadValue("since: expected the number of a notice (0 or more)"))
    if since is None:
        since = await service.inbox.last_seq()

    async def stream() -> AsyncIterator[str]:
        last = since
        async with service.feed.watch() as arrivals:  # watching before the catch-up: nothing falls between
            yield ": meshnode notices\n\n"
            for data in await service.inbox.since(last):
                last = data["seq"]
                yield _event(data)
            while True:
                got = None
                with trio.move_on_after(KEEPALIVE_S):
                    try:
                        got = await arrivals.receive()
                    except trio.EndOfChannel:
                        return  # fell behind: the client reconnects with Last-Event-ID
                if got is None:
                    yield ": keepalive\n\n"
                    continue
                if got.seq <= last:
                    continue
                for data in await service.inbox.as_json([got]):
                    last = data["seq"]
                    yield _event(data)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


def _event(data: dict[str, Any]) -> str:
    return f"id: {data['seq']}\nevent: notice\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def build_app(service: ApiService) -> Starlette:
    async def events(request: Request) -> Response:
        return await get_events(request, service)

    def r(path: str, handler: Handler, method: str) -> Route:
        return Route(API_PREFIX + path, endpoint(handler, service), methods=[method])

    routes = [
        r("/id", calls(ApiService.identity), "GET"),
        r("/status", calls(ApiService.status), "GET"),
        r("/peers", calls(ApiService.peers), "GET"),
        r("/peers/known", calls(ApiService.known_peers), "GET"),
        r("/connect", post_connect, "POST"),
        r("/stop", calls(ApiService.stop), "POST"),
        r("/swarms", calls(ApiService.swarms), "GET"),
        r("/swarms", post_swarms, "POST"),
        r("/swarms/join", post_join, "POST"),
        r("/swarms/{name}/invite", calls_with_path(ApiService.swarm_invite, "name"), "GET"),
        r("/swarms/{name}", calls_with_path(ApiService.swarm_leave, "name"), "DELETE"),
        r("/proposals", post_proposal, "POST"),
        r("/proposals", calls(ApiService.proposals), "GET"),
        r("/proposals/{id}", calls_with_path(ApiService.proposal, "id"), "GET"),
        r("/proposals/{id}/{action}", post_reply, "POST"),
        r("/profile", get_profile, "GET"),
        r("/profile", post_profile, "POST"),
        r("/names", post_name, "POST"),
        r("/vouch", post_vouch, "POST"),
        r("/trust/{peer}", calls_with_path(ApiService.trust, "peer"), "GET"),
        r("/trusted", get_trusted, "GET"),
        r("/inbox", get_inbox, "GET"),
        r("/rings/suggested", get_ring_suggestions, "GET"),
        r("/rings", post_ring, "POST"),
        r("/rings", get_rings, "GET"),
        r("/rings/{id}", get_ring, "GET"),
        r("/rings/{id}/{action}", post_ring_move, "POST"),
        r("/pools", post_pool, "POST"),
        r("/pools", get_pools, "GET"),
        r("/pools/{id}", get_pool, "GET"),
        r("/pools/{id}/pledge", post_pledge, "POST"),
        r("/pools/{id}/{action}", post_pool_move, "POST"),
        r("/loans", get_loans, "GET"),
        r("/rules", calls(ApiService.rules), "GET"),
        r("/web/login", calls(ApiService.web_login), "POST"),
        r("/pay", post_pay, "POST"),
        r("/balance", get_balance, "GET"),
        r("/ledger", get_ledger, "GET"),
        r("/currency", get_currency, "GET"),
        r("/currency", post_currency, "POST"),
        Route(API_PREFIX + "/events", events, methods=["GET"]),
    ]
    for type_, plural in (("offer", "offers"), ("want", "wants")):
        routes += [r(path, handler, method) for path, handler, method in item_routes(type_, plural)]

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        code = getattr(exc, "status_code", 404)
        message = f"no such API route: {request.method} {request.url.path}"
        error_code = "not_found" if code == 404 else "bad_request"
        return JSONResponse({"error": {"code": error_code, "message": message}}, status_code=code)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


async def serve_api(
    service: ApiService,
    socket_path: os.PathLike[str] | str,
    *,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API on a 0600 Unix socket until ``shutdown`` is set."""
    config = HypercornConfig()
    config.bind = [f"unix:{socket_path}"]
    config.umask = 0o177  # the socket is created mode 0600
    config.accesslog = None
    config.errorlog = logging.getLogger("meshnode.api.server")  # type: ignore[assignment]
    config.graceful_timeout = 2.0
    try:
        await serve(build_app(service), config, shutdown_trigger=shutdown.wait, task_status=task_status)  # type: ignore[arg-type]
    finally:
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
