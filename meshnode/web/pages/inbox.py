"""The inbox: the owner's notices, newest first, live while the page is open.

``GET /inbox`` shows the notices (:meth:`meshnode.api.service.InboxView.
inbox`, as ``meshnode inbox --all`` does: reading marks them seen), each
with a link to its trade when it is about one. The list sits in a region
with ``data-live="/events"`` and ``data-refresh="/inbox/list"``: app.js
listens to the event stream and reloads the region (``GET /inbox/list``,
the list alone) on each event.

``GET /events`` is the page's event stream: the API's (:func:`meshnode.api.
http.get_events`, over :meth:`meshnode.api.feed.InboxFeed.watch`) behind the
page's session, each event only ``event: notice`` with its number (the page
reloads what it shows, so no notice text travels twice). It says something
every :data:`KEEPALIVE_S` (so a closed tab is noticed: the server stops
when the client has gone), ends when the session does (looked at with each
keepalive), ends after :data:`STREAM_S` (EventSource then
reconnects with ``Last-Event-ID``, through the session check again), and at
most :data:`MAX_STREAMS` are open at once.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from meshnode.errors import BadValue
from meshnode.web.app import WebContext, page
from meshnode.web.auth import Session

#: How many notices the inbox shows (the newest).
LIMIT = 100
#: The notice kinds that are about a trade (their ``about`` is its proposal).
TRADE_KINDS = frozenset({"proposal", "move", "due", "overdue", "topay"})
#: The event stream says something at least this often (s): a comment line.
KEEPALIVE_S = 15.0
#: One event stream lasts at most this long (s); the browser reconnects from the last event it got.
STREAM_S = 600.0
#: How long the browser waits before it reconnects (ms).
RETRY_MS = 5000
#: At most this many event streams are open at once (more: 503).
MAX_STREAMS = 8


#: The record ids the service's sentences carry for the CLI ("(proposal 1a2b3c4d5e6f)").
_IDS = re.compile(
    r"\s*\((?:proposal|transfer|transfers|ring|pool) [0-9a-f]{12}(?: and [0-9a-f]{12})?(?:;[^)]*)?\)"
)
_NAMED = re.compile(r"\b(proposal|ring|pool) [0-9a-f]{12}\b")
_THE = {"proposal": "the trade", "ring": "the ring", "pool": "the pool"}


def plain(text: str) -> str:
    """A notice's sentence without the record ids the CLI needs (the page links to the trade instead)."""
    return _NAMED.sub(lambda m: _THE[m.group(1)], _IDS.sub("", text))


async def _notices(ctx: WebContext) -> list[dict[str, Any]]:
    shown = await ctx.service.inbox.inbox(all_=True, limit=LIMIT)
    out = []
    for n in reversed(shown["notices"]):  # newest first
        trade = n["about"] if n["kind"] in TRADE_KINDS and n.get("about") else None
        out.append(n | {"trade": trade, "text": plain(n["text"])})
    return out


async def inbox(ctx: WebContext, request: Request, session: Session) -> Response:
    return ctx.render(request, "inbox.html", session=session, notices=await _notices(ctx))


async def inbox_list(ctx: WebContext, request: Request, session: Session) -> Response:
    return ctx.render(request, "inbox_list.html", session=session, notices=await _notices(ctx))


def _since(request: Request) -> int | None:
    raw = request.query_params.get("since") or request.headers.get("last-event-id")
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadValue("since: expected the number of a notice (0 or more)")
    return int(raw)


def routes(ctx: WebContext) -> list[BaseRoute]:
    open_streams = 0

    async def events(ctx: WebContext, request: Request, session: Session) -> Response:
        nonlocal open_streams
        since = _since(request)
        if open_streams >= MAX_STREAMS:
            message = ctx.text("inbox.too_many_streams")
            return ctx.render(request, "error.html", session=session, status=503, message=message)
        service = ctx.service
        if since is None:
            since = await service.inbox.last_seq()

        async def stream() -> AsyncIterator[str]:
            nonlocal open_streams
            open_streams += 1
            try:
                last = since
                ends = trio.current_time() + STREAM_S
                async with service.feed.watch() as arrivals:  # before the catch-up: nothing falls between
                    # the id sets where a reconnect resumes from, even before any event
                    yield f": meshnode notices\nretry: {RETRY_MS}\nid: {last}\n\n"
                    for data in await service.inbox.since(last):
                        last = data["seq"]
                        yield _event(last)
                    while (left := ends - trio.current_time()) > 0:
                        got = None
                        with trio.move_on_after(min(KEEPALIVE_S, left)):  # no yield inside a cancel scope
                            try:
                                got = await arrivals.receive()
                            except trio.EndOfChannel:
                                return  # fell behind: the browser reconnects with Last-Event-ID
                        if got is None:
                            if not ctx.auth.is_open(session.id, ctx.now()):
                                return  # logged out (or the session ended): so does the stream
                            yield ": keepalive\n\n"
                        elif got.seq > last:
                            last = got.seq
                            yield _event(last)
            finally:
                open_streams -= 1

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    return [
        Route("/inbox", page(ctx, inbox), methods=["GET"]),
        Route("/inbox/list", page(ctx, inbox_list), methods=["GET"]),
        Route("/events", page(ctx, events), methods=["GET"]),
    ]


def _event(seq: int) -> str:
    return f"id: {seq}\nevent: notice\ndata: {seq}\n\n"
