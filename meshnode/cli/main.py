"""The ``meshnode`` command line: one typer command per thing a neighbour does.

A command parses its arguments, asks the daemon's local API
(:mod:`meshnode.cli.client`) and prints the answer: as
:mod:`meshnode.cli.render` shows it, or with ``--json`` the answer itself.
``meshnode daemon`` hands over to :mod:`meshnode.daemon`.

Every failure prints one line on stderr and exits with the error's exit code
(:mod:`meshnode.errors`); nothing is half done.

Every command is a new process, so at start this module imports no trio,
libp2p, httpx or rich: each command imports what it uses.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import quote

import typer

from meshnode.cli import ledgercmds, poolcmds, quicktyper, render, ringcmds
from meshnode.errors import BadValue, MeshError

if TYPE_CHECKING:
    from meshnode.cli.client import ApiClient
    from meshnode.cli.render import Shown

quicktyper.install()  # no pydantic for plain options; each signature read once

app = typer.Typer(
    name="meshnode",
    help="Share things with your neighbours, peer to peer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from meshnode import __version__

        typer.echo(f"meshnode {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Share things with your neighbours, peer to peer."""


HomeOption = Annotated[
    str | None,
    typer.Option(
        "--home", help="The node's home directory (default: $MESHNODE_HOME or the platform data dir)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def mesh_errors(func: F) -> F:
    """Turn a MeshError into one line on stderr and its exit code.

    With ``--json`` the line is a JSON object, ``{"error": {"code", "message"}}``.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MeshError as exc:
            if kwargs.get("json_out"):
                typer.echo(render.error_json(exc.code, str(exc)), err=True)
                raise typer.Exit(exc.exit_code) from None
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def client(home: str | None) -> ApiClient:
    from meshnode.cli.client import ApiClient
    from meshnode.home import resolve_home

    return ApiClient(resolve_home(home))


def show(shown: Shown) -> None:
    """Print text as it is, a table as wide as the terminal (to a pipe: :data:`render.TABLE_MIN_WIDTH`)."""
    if isinstance(shown, str):
        typer.echo(shown)
        return
    from rich.console import Console

    Console(width=terminal_width()).print(shown)


def terminal_width() -> int:
    """The terminal's width (``COLUMNS`` if set), or :data:`render.TABLE_MIN_WIDTH` for a pipe."""
    import shutil

    return shutil.get_terminal_size((render.TABLE_MIN_WIDTH, 24)).columns


def segment(text: str) -> str:
    """``text`` (an id) as one path segment of an API URL."""
    if not text.strip():
        raise BadValue("expected an id, found an empty string")
    return quote(text.encode("utf-8", "surrogateescape"), safe="")


def finite(value: float, option: str) -> float:
    """``value`` if it is a finite number (click accepts ``nan`` and ``inf`` as floats)."""
    if not math.isfinite(value):
        raise BadValue(f"{option}: expected a number, found {value}")
    return value


# --- node ---------------------------------------------------------------------


@app.command()
@mesh_errors
def init(
    home: HomeOption = None,
    json_out: JsonOption = False,
    nickname: Annotated[
        str | None,
        typer.Option("--nickname", help="What neighbours see you as (published when the daemon runs)."),
    ] = None,
) -> None:
    """Create this node's key and config (safe to run again); --nickname sets your profile's nickname."""
    from meshnode.home import ensure_home, resolve_home
    from meshnode.keyfile import create_identity

    h = resolve_home(home)
    if nickname is not None:
        from meshnode.people import check_nickname

        check_nickname(nickname)  # before anything is created
    ensure_home(h)
    identity, created = create_identity(h.root)
    if nickname is not None:
        from meshnode.petnames import set_profile

        set_profile(h.people, nickname=nickname)
    if json_out:
        data = {"peer_id": identity.peer_id, "home": str(h.root), "created": created}
        show(render.compact_json(data | ({"nickname": nickname.strip()} if nickname is not None else {})))
    else:
        show(render.initialised(identity.peer_id, str(h.root), created))


@app.command()
@mesh_errors
def daemon(
    home: HomeOption = None,
    listen: Annotated[
        list[str] | None, typer.Option("--listen", help="Listen multiaddr (repeatable); overrides config.")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "warning",
    detach: Annotated[
        bool, typer.Option("--detach", help="Run in the background; return once it is ready.")
    ] = False,
    web: Annotated[
        str | None,
        typer.Option("--web", help='Serve the web page on HOST:PORT, or "off"; overrides config.'),
    ] = None,
) -> None:
    """Run the node until Ctrl-C (SIGINT), SIGTERM or 'meshnode stop'."""
    import logging

    from meshnode.daemon import run_foreground, start_detached
    from meshnode.home import resolve_home

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise BadValue(f"--log-level: expected debug, info, warning or error, found {log_level!r}")
    h = resolve_home(home)
    if detach:
        started = start_detached(h, listen or [], log_level, web=web)
        show(render.detached(started.ready_line, started.pid, str(started.log)))
    else:
        run_foreground(h, listen or [], level, web)


@app.command("web")
@mesh_errors
def web_cmd(
    no_open: Annotated[bool, typer.Option("--no-open", help="Only print the link; open no browser.")] = False,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Open the web page: prints a login link that works once, and opens it in your browser."""
    data = client(home).post("/web/login")
    if json_out:
        show(render.pretty_json(data))
        return
    show(render.web_login(data))
    if not no_open and _has_desktop():
        import webbrowser

        try:
            webbrowser.open(data["url"])
        except webbrowser.Error:
            pass


def _has_desktop() -> bool:
    """Whether a graphical browser can open here: without one, Python's webbrowser would start a text
    browser (lynx, w3m) in this terminal, so the link is only printed (open it on this machine)."""
    import os
    import sys

    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


@app.command("id")
@mesh_errors
def id_(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """This node's peer id and addresses."""
    data = client(home).get("/id")
    show(render.pretty_json(data) if json_out else render.identity(data))


@app.command()
@mesh_errors
def status(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """What the daemon is doing."""
    data = client(home).get("/status")
    show(render.pretty_json(data) if json_out else render.status(data))


@app.command()
@mesh_errors
def peers(
    home: HomeOption = None,
    json_out: JsonOption = False,
    known: Annotated[
        bool, typer.Option("--known", help="The address book: every peer met, per swarm, and where.")
    ] = False,
) -> None:
    """Peers this node is connected to: swarms, address, direction, route, since."""
    if known:
        data = client(home).get("/peers/known")
        show(render.pretty_json(data) if json_out else render.known_peers(data))
    else:
        data = client(home).get("/peers")
        show(render.pretty_json(data) if json_out else render.peers(data))


@app.command()
@mesh_errors
def connect(
    multiaddr: str,
    swarm: Annotated[
        str | None, typer.Option("--swarm", help="Connect on this swarm's network (private swarms).")
    ] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Connect to a peer: /ip4/…/tcp/…/p2p/<peer id> (remembered, and redialled when it drops)."""
    body: dict[str, Any] = {"addr": multiaddr}
    if swarm is not None:
        body["swarm"] = swarm
    data = client(home).post("/connect", body)
    show(render.compact_json(data) if json_out else render.connected(data))


@app.command()
@mesh_errors
def stop(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Stop the daemon of this home."""
    data = client(home).post("/stop")
    show(render.compact_json(data) if json_out else render.STOPPING)


# --- swarms -------------------------------------------------------------------

swarm_app = typer.Typer(help="Create, join and leave neighbourhood swarms.", no_args_is_help=True)
app.add_typer(swarm_app, name="swarm")


@swarm_app.command("create")
@mesh_errors
def swarm_create(
    name: str,
    private: Annotated[
        bool,
        typer.Option(
            "--private/--open",
            help="Private (the default): only holders of an invite can connect, read or post."
            " Open: anyone who can connect (mDNS finds them on the LAN) can read and post.",
        ),
    ] = True,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a swarm and join it: private unless --open."""
    data = client(home).post("/swarms", {"name": name, "private": private})
    if not data["private"]:
        typer.echo(render.warning(render.OPEN_SWARM_WARNING.format(name=data["name"])), err=True)
    show(render.pretty_json(data) if json_out else render.swarm_created(data))


@swarm_app.command("invite")
@mesh_errors
def swarm_invite(name: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Print an invite code for a swarm (alone on stdout)."""
    data = client(home).get(f"/swarms/{segment(name)}/invite")
    show(render.compact_json(data) if json_out else data["code"])


@swarm_app.command("join")
@mesh_errors
def swarm_join(code: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Join a swarm with an invite code."""
    data = client(home).post("/swarms/join", {"code": code})
    if json_out:
        show(render.pretty_json(data))
        return
    show(render.joined(data))
    if data.get("warning"):
        typer.echo(render.warning(data["warning"]), err=True)


@swarm_app.command("list")
@mesh_errors
def swarm_list(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """The swarms this node is in."""
    data = client(home).get("/swarms")
    show(render.pretty_json(data) if json_out else render.swarms(data))


@swarm_app.command("leave")
@mesh_errors
def swarm_leave(name: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Leave a swarm."""
    data = client(home).delete(f"/swarms/{segment(name)}")
    show(render.compact_json(data) if json_out else render.left(name))


# --- offers and wants ---------------------------------------------------------


def item_app(type_: str, plural: str, what: str) -> typer.Typer:
    sub = typer.Typer(help=f"Publish and browse {plural}.", no_args_is_help=True)

    @sub.command("add")
    @mesh_errors
    def add(
        title: str,
        kind: Annotated[str, typer.Option("--kind", help="lend, give, swap or service.")] = "give",
        tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeatable).")] = None,
        desc: Annotated[str, typer.Option("--desc", help="A longer description.")] = "",
        expires: Annotated[float | None, typer.Option("--expires", help="Expire after DAYS.")] = None,
        where: Annotated[str, typer.Option("--where", help="Coarse location: a geohash of up to 6.")] = "",
        swarm: Annotated[str | None, typer.Option("--swarm", help="Which swarm (if in several).")] = None,
        max_days: Annotated[
            int | None, typer.Option("--max-days", help="Lend for at most DAYS (--kind lend; default 14).")
        ] = None,
        deposit: Annotated[
            str, typer.Option("--deposit", help='A deposit you ask for, in words: "20 EUR" (--kind lend).')
        ] = "",
        price: Annotated[
            str | None,
            typer.Option("--price", help="A price in the swarm's currency: 2, 1.5 (--kind service or lend)."),
        ] = None,
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        body: dict[str, object] = {
            "title": title,
            "kind": kind,
            "tags": tag or [],
            "desc": desc,
            "where": where,
        }
        if max_days is not None:
            body["max_days"] = max_days
        if deposit:
            body["deposit"] = deposit
        if price is not None:
            body["price"] = price
        if expires is not None:
            body["expires_days"] = finite(expires, "--expires")
        if swarm:
            body["swarm"] = swarm
        data = client(home).post(f"/{plural}", body)
        show(render.compact_json(data) if json_out else data["id"])

    add.__doc__ = f"Publish {what}; prints its id."

    @sub.command("list")
    @mesh_errors
    def listing(
        mine: Annotated[bool, typer.Option("--mine", help="Only your own.")] = False,
        kind: Annotated[str | None, typer.Option("--kind")] = None,
        tag: Annotated[str | None, typer.Option("--tag")] = None,
        query: Annotated[
            str | None,
            typer.Option("--query", help='Words (all), a OR b (either), "a phrase", prefix*.'),
        ] = None,
        near: Annotated[
            str | None, typer.Option("--near", help="Only near this place (a geohash, e.g. u4pruy).")
        ] = None,
        km: Annotated[float | None, typer.Option("--km", help="How near, in km (default 1).")] = None,
        swarm: Annotated[str | None, typer.Option("--swarm", help="Only this swarm's.")] = None,
        all_: Annotated[
            bool, typer.Option("--all", help="Also those reserved, given away or withdrawn.")
        ] = False,
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        params: dict[str, Any] = {"kind": kind, "tag": tag, "query": query, "near": near, "swarm": swarm}
        if km is not None:
            params["km"] = repr(finite(km, "--km"))
        if mine:
            params["mine"] = "true"
        if all_:
            params["all"] = "true"
        data = client(home).get(f"/{plural}", **params)
        show(render.pretty_json(data) if json_out else render.items(data, plural))

    listing.__doc__ = f"List {plural} you can have now (--all: every live one), most trusted authors first."

    @sub.command("show")
    @mesh_errors
    def show_item(item_id: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
        data = client(home).get(f"/{plural}/{segment(item_id)}")
        show(render.pretty_json(data) if json_out else render.item(data))

    show_item.__doc__ = f"Show one {type_}."

    @sub.command("withdraw")
    @mesh_errors
    def withdraw(item_id: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
        data = client(home).delete(f"/{plural}/{segment(item_id)}")
        show(render.compact_json(data) if json_out else render.withdrawn(data))

    withdraw.__doc__ = f"Withdraw one of your {plural}."

    @sub.command("edit")
    @mesh_errors
    def edit(
        item_id: str,
        title: Annotated[str | None, typer.Option("--title")] = None,
        desc: Annotated[str | None, typer.Option("--desc")] = None,
        tags: Annotated[str | None, typer.Option("--tags", help="Comma-separated; replaces all.")] = None,
        kind: Annotated[str | None, typer.Option("--kind", help="lend, give, swap or service.")] = None,
        where: Annotated[str | None, typer.Option("--where", help="A geohash of up to 6.")] = None,
        expires: Annotated[float | None, typer.Option("--expires", help="Expire DAYS from now.")] = None,
        price: Annotated[
            str | None, typer.Option("--price", help="A new price (service or lend; 0 removes it).")
        ] = None,
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        body: dict[str, object] = {"title": title, "desc": desc, "kind": kind, "where": where, "price": price}
        if tags is not None:
            body["tags"] = [t for t in (part.strip() for part in tags.split(",")) if t]
        if expires is not None:
            body["expires_days"] = finite(expires, "--expires")
        data = client(home).post(f"/{plural}/{segment(item_id)}/edit", body)
        show(render.compact_json(data) if json_out else render.edited(data))

    edit.__doc__ = f"Change one of your live {plural}: publishes an update with the fields given."
    return sub


app.add_typer(item_app("offer", "offers", "an offer (something you lend, give, swap or do)"), name="offer")
app.add_typer(item_app("want", "wants", "a want (something you look for)"), name="want")


# --- barter -------------------------------------------------------------------


PrivateOption = Annotated[
    str,
    typer.Option(
        "--private",
        help="Text only you and the other party can read (an address, a phone number); others carry it"
        " sealed.",
    ),
]


@app.command()
@mesh_errors
def propose(
    offer_id: str,
    give: Annotated[list[str] | None, typer.Option("--give", help="One of your offers (repeatable).")] = None,
    note: Annotated[str, typer.Option("--note")] = "",
    expires: Annotated[
        float | None,
        typer.Option("--expires", help="Close the proposal if nobody accepts it within DAYS (default 14)."),
    ] = None,
    private: PrivateOption = "",
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Propose a trade for a neighbour's offer; prints the proposal id."""
    body: dict[str, object] = {"offer": offer_id, "give": give or [], "note": note, "private": private}
    if expires is not None:
        body["expires_days"] = finite(expires, "--expires")
    data = client(home).post("/proposals", body)
    show(render.compact_json(data) if json_out else data["id"])


@app.command()
@mesh_errors
def proposals(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Your trades, newest first."""
    data = client(home).get("/proposals")
    show(render.pretty_json(data) if json_out else render.trades(data, terminal_width()))


@app.command()
@mesh_errors
def proposal(proposal_id: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """One of your trades: every move in order with its note, the state and whose move it is."""
    data = client(home).get(f"/proposals/{segment(proposal_id)}")
    show(render.pretty_json(data) if json_out else render.trade_history(data))


NoteOption = Annotated[str, typer.Option("--note", help="A word to the other party (shown in its history).")]


def _reply(
    action: str, proposal_id: str, home: str | None, json_out: bool, body: dict[str, Any] | None = None
) -> None:
    data = client(home).post(f"/proposals/{segment(proposal_id)}/{action}", body or {})
    show(render.pretty_json(data) if json_out else render.replied(action, data))


@app.command()
@mesh_errors
def accept(
    proposal_id: str,
    note: NoteOption = "",
    private: PrivateOption = "",
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Accept a proposal (reserves the offers in it)."""
    _reply("accept", proposal_id, home, json_out, {"note": note, "private": private})


@app.command()
@mesh_errors
def decline(
    proposal_id: str, note: NoteOption = "", home: HomeOption = None, json_out: JsonOption = False
) -> None:
    """Decline a proposal."""
    _reply("decline", proposal_id, home, json_out, {"note": note})


@app.command()
@mesh_errors
def cancel(proposal_id: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Cancel your proposal, or an accepted trade nobody has completed yet."""
    _reply("cancel", proposal_id, home, json_out)


@app.command()
@mesh_errors
def complete(proposal_id: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Mark an accepted trade done on your side (completed once both have)."""
    _reply("complete", proposal_id, home, json_out)


@app.command()
@mesh_errors
def received(
    proposal_id: str,
    note: Annotated[
        str, typer.Option("--note", help="In what condition it came (shown to the lender).")
    ] = "",
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Say you have what you borrowed: the loan is handed over and its due date starts."""
    _reply("received", proposal_id, home, json_out, {"note": note})


@app.command()
@mesh_errors
def extend(
    proposal_id: str,
    days: Annotated[float, typer.Option("--days", help="Days to add to the due date.")],
    note: NoteOption = "",
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Give the borrower more time: move the due date of something you lent."""
    _reply("extend", proposal_id, home, json_out, {"days": finite(days, "--days"), "note": note})


@app.command()
@mesh_errors
def returned(
    proposal_id: str, note: NoteOption = "", home: HomeOption = None, json_out: JsonOption = False
) -> None:
    """Say you have back what you lent: the loan ends (and counts as a trade for trust)."""
    _reply("returned", proposal_id, home, json_out, {"note": note})


@app.command()
@mesh_errors
def loans(
    all_: Annotated[bool, typer.Option("--all", help="Also the loans already returned.")] = False,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """What you lent and borrowed, soonest due first, with due dates."""
    data = client(home).get("/loans", all=str(all_).lower())
    show(render.pretty_json(data) if json_out else render.loans(data, terminal_width()))


@app.command()
@mesh_errors
def counter(
    proposal_id: str,
    give: Annotated[list[str] | None, typer.Option("--give", help="An offer of yours you give.")] = None,
    take: Annotated[list[str] | None, typer.Option("--take", help="An offer of theirs you take.")] = None,
    note: NoteOption = "",
    private: PrivateOption = "",
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Answer a proposal with other terms."""
    body = {"give": give or [], "take": take or [], "note": note, "private": private}
    _reply("counter", proposal_id, home, json_out, body)


# --- trust --------------------------------------------------------------------


class ServiceVouchLevel:
    """``vouch --level``'s default: the API's own, :data:`meshnode.api.service.DEFAULT_VOUCH`.

    A callable, so click asks for the value only when ``--level`` is left out
    or its help is shown: the service imports libp2p (~0.8 s), which no other
    command should pay. ``str()`` is the ``[default: …]`` of the help.
    """

    def __call__(self) -> float:
        from meshnode.api.service import DEFAULT_VOUCH

        return DEFAULT_VOUCH

    def __str__(self) -> str:
        return str(self())


@app.command()
@mesh_errors
def vouch(
    peer_id: str,
    level: Annotated[
        float,
        typer.Option("--level", help="From -1 (distrust) to 1.", default_factory=ServiceVouchLevel()),
    ],
    note: Annotated[str, typer.Option("--note")] = "",
    swarm: Annotated[str | None, typer.Option("--swarm")] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Vouch for (or, with a negative level, warn about) a neighbour."""
    body: dict[str, Any] = {"peer": peer_id, "level": finite(level, "--level"), "note": note}
    if swarm:
        body["swarm"] = swarm
    data = client(home).post("/vouch", body)
    show(render.compact_json(data) if json_out else render.vouched(peer_id, level, data.get("replaces")))


@app.command()
@mesh_errors
def trust(peer_id: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """How much you trust a peer: each path, each step (a vouch and its note, or a trade), and warnings."""
    data = client(home).get(f"/trust/{segment(peer_id)}")
    show(render.pretty_json(data) if json_out else render.trust(data))


@app.command()
@mesh_errors
def profile(
    peer: Annotated[
        str | None,
        typer.Argument(
            help="Whose profile (peer id, nickname, petname or short id; default yours), or 'set'."
        ),
    ] = None,
    nickname: Annotated[str | None, typer.Option("--nickname", help="With 'set': your new nickname.")] = None,
    bio: Annotated[str | None, typer.Option("--bio", help="With 'set': a line or two about you.")] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show a profile (yours by default); 'profile set --nickname N --bio B' changes and publishes yours."""
    if peer == "set":
        body = {k: v for k, v in (("nickname", nickname), ("bio", bio)) if v is not None}
        data = client(home).post("/profile", body)
    elif nickname is not None or bio is not None:
        raise BadValue("--nickname and --bio change your own profile: 'meshnode profile set --nickname NAME'")
    else:
        data = client(home).get("/profile", **({"peer": peer} if peer is not None else {}))
    show(render.compact_json(data) if json_out else render.profile(data))


@app.command()
@mesh_errors
def name(
    peer: Annotated[str, typer.Argument(help="Peer id, nickname, petname or short id.")],
    petname: Annotated[
        str, typer.Argument(help='Your name for them, e.g. "Bob from no. 12" ("" removes it).')
    ],
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Give a neighbour a petname that only you see; it overrides the nickname they claim."""
    data = client(home).post("/names", {"peer": peer, "name": petname})
    show(render.compact_json(data) if json_out else render.profile(data))


@app.command()
@mesh_errors
def trusted(
    limit: Annotated[int, typer.Option("--limit", help="How many peers (1-1000).")] = 20,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """The peers you trust most, and how: your own vouch or trade, or via whom."""
    data = client(home).get("/trusted", limit=str(limit))
    show(render.pretty_json(data) if json_out else render.trusted(data))


@app.command()
@mesh_errors
def inbox(
    all_: Annotated[bool, typer.Option("--all", help="The latest notices, read or not.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="How many at most (1-1000).")] = 100,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """What happened since you last looked: matches, proposals, moves in your trades, vouches, offers."""
    data = client(home).get("/inbox", all=str(all_).lower(), limit=str(limit))
    show(render.pretty_json(data) if json_out else render.inbox(data, all_))


@app.command()
@mesh_errors
def rules(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """The rules that answer trades while you are away (config.toml [rules])."""
    data = client(home).get("/rules")
    show(render.pretty_json(data) if json_out else render.rules(data))


@app.command()
@mesh_errors
def watch(
    since: Annotated[
        int | None, typer.Option("--since", help="Start after notice number SEQ (default: from now on).")
    ] = None,
    home: HomeOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print each new notice as it happens (what 'inbox' lists), until Ctrl-C."""
    from meshnode.cli.events import notices

    if since is not None and since < 0:
        raise BadValue(f"--since: expected the number of a notice (0 or more), found {since}")
    try:
        for notice in notices(client(home), since):
            typer.echo(render.compact_json(notice) if json_out else render.notice_line(notice))
    except KeyboardInterrupt:
        return


ringcmds.register(app)  # rings, propose-ring, ring
ledgercmds.register(app, swarm_app)  # pay, balance, ledger, swarm currency
poolcmds.register(app)  # pool add|show|confirm|cancel|delivered, pledge, pools


def main() -> None:  # pragma: no cover - console script entry
    import sys

    quicktyper.only_the_command(app, sys.argv[1:])()  # typer builds only the parser it needs


if __name__ == "__main__":  # pragma: no cover
    main()
