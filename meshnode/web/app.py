"""The web page's ASGI app: the guard, the login, the frame every page is rendered in.

:func:`build_web_app` makes a Starlette app over the daemon's
:class:`~meshnode.api.service.ApiService`: every page calls the same service
methods as the Unix-socket API (no rule is implemented twice), and renders
server-side HTML with Jinja2 (autoescaped) from ``meshnode/web/templates``,
with the words of :mod:`meshnode.web.text`. htmx (shipped in
``meshnode/web/static``) swaps parts of a page; every page works without it.

Every request goes through :class:`HostGuard` (a ``Host`` the page does not
answer to: 403; security headers on every answer, a strict
Content-Security-Policy among them). Every page but the login and the static
files needs a session (else: a redirect to ``/login``); every POST needs an
``Origin`` of this page (when the browser sends one) and the session's CSRF
token (a ``csrf`` form field or an ``X-CSRF-Token`` header), else 403
(:func:`page`). See :mod:`meshnode.web.auth`.

Pages live in ``meshnode/web/pages/``: each module has ``routes(ctx)``
returning its Starlette routes, its handlers wrapped by :func:`page`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meshnode.api.http import status_of
from meshnode.errors import BadValue, MeshError
from meshnode.web import auth
from meshnode.web.auth import COOKIE, Session, WebAuth
from meshnode.web.text import Text

if TYPE_CHECKING:
    from meshnode.api.service import ApiService

log = logging.getLogger(__name__)

#: The largest form body a page accepts (bytes).
MAX_FORM = 64 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
#: The pages in the navigation, in order: (path, text key).
NAV = [
    ("/offers", "common.nav_offers"),
    ("/mine", "common.nav_mine"),
    ("/inbox", "common.nav_inbox"),
    ("/trades", "common.nav_trades"),
    ("/money", "money.nav"),
    ("/rings", "rings.nav"),
    ("/pools", "pools.nav"),
    ("/neighbours", "common.nav_neighbours"),
    ("/swarms", "common.nav_swarms"),
    ("/node", "common.nav_node"),
]


@dataclass
class WebContext:
    """What every page handler gets: the service, the auth, the words, the templates, where it is served."""

    service: ApiService
    auth: WebAuth
    text: Text
    host: str  # the configured host (what the server was told to bind)
    port: int = 0  # the bound port (known once bound)
    templates: jinja2.Environment = field(init=False)

    def __post_init__(self) -> None:
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("meshnode.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def now(self) -> int:
        return self.service.node.clock()

    def render(
        self, request: Request, template: str, *, session: Session | None, status: int = 200, **values: Any
    ) -> HTMLResponse:
        """``template`` rendered in the frame: words, CSRF token, navigation, whether htmx asked."""
        frame = {
            "t": self.text,
            "lang": self.text.lang,
            "csrf": self.auth.csrf(session) if session is not None else "",
            "logged_in": session is not None,
            "nav": NAV,
            "path": request.url.path,
            "htmx": request.headers.get("hx-request") == "true",
        }
        html = self.templates.get_template(template).render(**frame, **values)
        return HTMLResponse(html, status_code=status)


PageHandler = Callable[[WebContext, Request, Session], Awaitable[Response]]


def page(ctx: WebContext, handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a page handler: a session or a redirect to the login; on POST, Origin and CSRF checked.

    A :class:`MeshError` the service raises is shown on the page in one
    line, with the status the API would give it.
    """

    async def endpoint(request: Request) -> Response:
        session = ctx.auth.session(request.cookies.get(COOKIE), ctx.now())
        if session is None:
            if request.headers.get("hx-request") == "true":
                return Response(status_code=401, headers={"HX-Redirect": "/login"})
            return RedirectResponse("/login", status_code=303)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin is not None and not _same_origin(origin, ctx):
                return forbidden(ctx, request, session)
            token = request.headers.get("x-csrf-token")
            if token is None:
                token = (await form(request)).get("csrf")
            if not ctx.auth.check_csrf(session, token):
                return forbidden(ctx, request, session)
        try:
            return await handler(ctx, request, session)
        except MeshError as exc:
            return ctx.render(request, "error.html", session=session, status=status_of(exc), message=str(exc))

    return endpoint


def forbidden(ctx: WebContext, request: Request, session: Session | None) -> HTMLResponse:
    message = ctx.text("common.forbidden")
    return ctx.render(request, "error.html", session=session, status=403, message=message)


async def form(request: Request) -> dict[str, str]:
    """The fields of an urlencoded form body (the last value of each), at most :data:`MAX_FORM` bytes.

    Read once per request (starlette keeps the body), so the CSRF check and the handler share it.
    """
    return {k: v[-1] for k, v in (await form_lists(request)).items()}


async def form_lists(request: Request) -> dict[str, list[str]]:
    """Every value of each field of the form body (checkboxes sharing a name), read as :func:`form` does."""
    cached = request.scope.get("meshnode.form")
    if cached is not None:
        return {k: list(v) for k, v in cached.items()}
    body = await request.body()
    if len(body) > MAX_FORM:
        raise BadValue(f"the form is too large: at most {MAX_FORM // 1024} KiB")
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    fields: dict[str, list[str]] = {}
    if kind == "application/x-www-form-urlencoded" and body:
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise BadValue("the form is not UTF-8 text") from None
    request.scope["meshnode.form"] = fields
    return {k: list(v) for k, v in fields.items()}


def _same_origin(origin: str, ctx: WebContext) -> bool:
    scheme, sep, host = origin.partition("://")
    return sep == "://" and scheme == "http" and auth.host_allowed(host, ctx.host, ctx.port)


class HostGuard:
    """ASGI middleware: refuse a ``Host`` the page does not answer to; add the security headers."""

    def __init__(self, app: ASGIApp, ctx: WebContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
        if not auth.host_allowed(host, self.ctx.host, self.ctx.port):
            response = Response("this page answers only to the names it is served at\n", status_code=403)
            await self._with_headers(response)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        accept = dict(scope.get("headers", [])).get(b"accept-language", b"").decode("latin-1")
        with self.ctx.text.use(self.ctx.text.choose(accept)):
            await self.app(scope, receive, send_with_headers)

    def _with_headers(self, response: Response) -> Response:
        for name, value in SECURITY_HEADERS:
            response.headers[name.decode()] = value.decode()
        return response


# --- the login ---------------------------------------------------------------------


def login_routes(ctx: WebContext) -> list[BaseRoute]:
    async def login(request: Request) -> Response:
        token = request.query_params.get("token")
        if token is None:
            session = ctx.auth.session(request.cookies.get(COOKIE), ctx.now())
            if session is not None:
                return RedirectResponse("/offers", status_code=303)
            return ctx.render(request, "login.html", session=None, failed=False)
        session = ctx.auth.redeem(token, ctx.now())
        if session is None:
            return ctx.render(request, "login.html", session=None, status=403, failed=True)
        response = RedirectResponse("/offers", status_code=303)
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", path="/")
        return response

    async def logout(ctx_: WebContext, request: Request, session: Session) -> Response:
        ctx_.auth.end(session.id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def home(ctx_: WebContext, request: Request, session: Session) -> Response:
        return RedirectResponse("/offers", status_code=303)

    return [
        Route("/login", login, methods=["GET"]),
        Route("/logout", page(ctx, logout), methods=["POST"]),
        Route("/", page(ctx, home), methods=["GET"]),
    ]


def build_web_app(ctx: WebContext) -> ASGIApp:
    """The web page's app for ``ctx`` (its port is read per request: set it once bound)."""
    from meshnode.web.pages import all_routes

    routes: list[BaseRoute] = [
        *login_routes(ctx),
        *all_routes(ctx),
        Mount("/static", app=StaticFiles(packages=[("meshnode.web", "static")]), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        session = ctx.auth.session(request.cookies.get(COOKIE), ctx.now())
        code = getattr(exc, "status_code", 404)
        return ctx.render(
            request, "error.html", session=session, status=code, message=ctx.text("common.not_found")
        )

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    return HostGuard(app, ctx)
