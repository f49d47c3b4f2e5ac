"""The ``meshnode`` command line.

Every failure prints one line on stderr and exits with the error's exit code
(:mod:`meshnode.errors`); nothing is half done.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from meshnode.errors import MeshError

app = typer.Typer(
    name="meshnode",
    help="Share things with your neighbours, peer to peer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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
    """Turn a MeshError into one line on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MeshError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@mesh_errors
def init(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Create this node's key and config (safe to run again)."""
    from meshnode.home import ensure_home, resolve_home
    from meshnode.keyfile import create_identity

    h = resolve_home(home)
    ensure_home(h)
    identity, created = create_identity(h.root)
    if json_out:
        typer.echo(json.dumps({"peer_id": identity.peer_id, "home": str(h.root), "created": created}))
        return
    typer.echo(f"{'Created' if created else 'Found'} node {identity.peer_id}")
    typer.echo(f"home: {h.root}")
    typer.echo("next: run 'meshnode daemon' to start it")


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
) -> None:
    """Run the node until Ctrl-C (SIGINT), SIGTERM or 'meshnode stop'."""
    from meshnode.home import ensure_home, resolve_home
    from meshnode.lock import DaemonLock

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        fail(f"--log-level: expected debug, info, warning or error, found {log_level!r}", 64)
    h = resolve_home(home)
    if detach:
        _detach(h, listen or [], log_level)
        return
    ensure_home(h)
    lock = DaemonLock(h.lock)
    lock.acquire()  # before the slow imports, so 'meshnode' commands see a daemon starting
    try:
        _run_daemon(h, listen or [], level, lock)
    finally:
        lock.release()


def _run_daemon(h: Any, listen: list[str], level: int, lock: Any) -> None:
    import trio

    from meshnode.daemon import run_daemon
    from meshnode.protocols.host import parse_multiaddr

    for addr in listen:
        parse_multiaddr(addr)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def announce(line: str) -> None:
        print(line, flush=True)

    try:
        trio.run(functools.partial(run_daemon, h, listen=listen, announce=announce, lock=lock))
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        mesh = [e for e in leaves if isinstance(e, MeshError)]
        if mesh:
            raise mesh[0] from None
        logging.getLogger("meshnode").error("daemon crashed", exc_info=group)
        fail(f"the daemon stopped on an internal error: {leaves[0]!r} (details in the log above)")


def _detach(h: Any, listen: list[str], log_level: str, timeout: float = 60.0) -> None:
    """Start the daemon as a background process logging to the home; wait for 'ready'."""
    import subprocess
    import time

    from meshnode.home import ensure_home

    ensure_home(h)
    args = [
        sys.executable,
        "-m",
        "meshnode.cli.main",
        "daemon",
        "--home",
        str(h.root),
        "--log-level",
        log_level,
    ]
    for addr in listen:
        args += ["--listen", addr]
    with open(h.log, "ab") as log_file:
        start = log_file.tell()
        proc = subprocess.Popen(
            args, stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(h.log, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
        for line in text.splitlines():
            if line.startswith("ready "):
                typer.echo(f"{line} pid={proc.pid} log={h.log}")
                return
        if proc.poll() is not None:
            errors = [ln for ln in text.splitlines() if ln.startswith("error: ")]
            message = errors[-1][len("error: ") :] if errors else f"the daemon exited; see {h.log}"
            fail(message, proc.returncode or 1)
        time.sleep(0.1)
    fail(f"the daemon did not get ready within {timeout:.0f} s; see {h.log}")


def _leaves(exc: BaseException) -> Any:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def client(home: str | None) -> Any:
    from meshnode.cli.client import ApiClient
    from meshnode.home import resolve_home

    return ApiClient(resolve_home(home))


def show_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], *, empty: str) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        typer.echo(empty)
        return
    t = Table(show_edge=False, header_style="bold")
    for key, title in columns:
        # ids and peer ids are copied into other commands: never cut them
        whole = key in ("id", "author", "from", "to", "peer_id")
        t.add_column(title, no_wrap=whole, min_width=None, overflow="fold" if whole else "ellipsis")
    for row in rows:
        t.add_row(*(_cell(row.get(key)) for key, _ in columns))
    import shutil

    Console(width=max(shutil.get_terminal_size((200, 24)).columns, 200)).print(t)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_short(v) for v in value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return _short(value) if isinstance(value, str) else str(value)


def _short(value: str) -> str:
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    return value  # peer ids stay whole: people copy them into 'vouch' and 'trust'


# --- node ---------------------------------------------------------------------


@app.command("id")
@mesh_errors
def id_(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """This node's peer id and addresses."""
    data = client(home).get("/id")
    if json_out:
        show_json(data)
        return
    typer.echo(data["peer_id"])
    for addr in data["addrs"]:
        typer.echo(f"  {addr}")


@app.command()
@mesh_errors
def status(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """What the daemon is doing."""
    data = client(home).get("/status")
    if json_out:
        show_json(data)
        return
    reach = data.get("reachability", {})
    typer.echo(f"peer id:  {data['peer_id']}")
    typer.echo(f"reach:    {reach.get('state', '?')}: {reach.get('reason', '')}")
    typer.echo(f"swarms:   {', '.join(data['swarms']) or '-'}")
    typer.echo(f"peers:    {data['peers']}")
    typer.echo(f"records:  {data['records']}")
    for net in data.get("networks", []):
        members = ", ".join(f"{name} {n}" for name, n in sorted(net["swarm_peers"].items())) or "no swarm"
        typer.echo(
            f"network:  {net['network']} port {net['port'] or '-'}, {net['peers']} peers"
            f" ({members} connected); {net['reachability']['state']}"
        )
        for addr in net["addrs"]:
            typer.echo(f"            {addr}")


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
        rows = client(home).get("/peers/known")
        if json_out:
            show_json(rows)
            return
        for row in rows:
            row["addr"] = row["addrs"][0] if row["addrs"] else None
            row["more"] = len(row["addrs"]) - 1 if row["addrs"] else 0
        table(
            rows,
            [
                ("swarm", "swarm"),
                ("peer_id", "peer"),
                ("addr", "best address"),
                ("more", "more"),
                ("last_seen", "last connected"),
                ("failures", "failed dials"),
            ],
            empty="the address book is empty",
        )
        return
    data = client(home).get("/peers")
    if json_out:
        show_json(data)
        return
    for row in data:
        row["route"] = "relayed" if row.get("relayed") else "direct"
    table(
        data,
        [
            ("peer_id", "peer"),
            ("swarms", "swarms"),
            ("addr", "address"),
            ("direction", "direction"),
            ("route", "route"),
            ("since", "since"),
        ],
        empty="no peers connected",
    )


@app.command()
@mesh_errors
def connect(
    multiaddr: str,
    swarm: Annotated[
        str | None, typer.Option("--swarm", help="Connect on this swarm's network (private swarms).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Connect to a peer: /ip4/…/tcp/…/p2p/<peer id> (remembered, and redialled when it drops)."""
    body: dict[str, Any] = {"addr": multiaddr}
    if swarm is not None:
        body["swarm"] = swarm
    data = client(home).post("/connect", body)
    typer.echo(f"connected to {data['peer_id']}")


@app.command()
@mesh_errors
def stop(home: HomeOption = None) -> None:
    """Stop the daemon of this home."""
    client(home).post("/stop")
    typer.echo("daemon stopping")


# --- swarms -------------------------------------------------------------------

swarm_app = typer.Typer(help="Create, join and leave neighbourhood swarms.", no_args_is_help=True)
app.add_typer(swarm_app, name="swarm")


@swarm_app.command("create")
@mesh_errors
def swarm_create(
    name: str,
    private: Annotated[
        bool, typer.Option("--private", help="Only holders of the invite can connect.")
    ] = False,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a swarm and join it."""
    data = client(home).post("/swarms", {"name": name, "private": private})
    if json_out:
        show_json(data)
        return
    typer.echo(f"created {'private ' if data['private'] else ''}swarm {data['name']!r}")
    typer.echo(f"invite neighbours with: meshnode swarm invite {shlex_quote(data['name'])}")


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


@swarm_app.command("invite")
@mesh_errors
def swarm_invite(name: str, home: HomeOption = None) -> None:
    """Print an invite code for a swarm (alone on stdout)."""
    typer.echo(client(home).get(f"/swarms/{quote(name)}/invite")["code"])


def quote(text: str) -> str:
    from urllib.parse import quote as q

    return q(text, safe="")


@swarm_app.command("join")
@mesh_errors
def swarm_join(code: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Join a swarm with an invite code."""
    data = client(home).post("/swarms/join", {"code": code})
    if json_out:
        show_json(data)
        return
    typer.echo(f"joined swarm {data['name']!r}")
    if data.get("warning"):
        typer.echo(f"warning: {data['warning']}", err=True)


@swarm_app.command("list")
@mesh_errors
def swarm_list(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """The swarms this node is in."""
    data = client(home).get("/swarms")
    if json_out:
        show_json(data)
        return
    table(data, [("name", "name"), ("private", "private"), ("id", "id")], empty="no swarms yet")


@swarm_app.command("leave")
@mesh_errors
def swarm_leave(name: str, home: HomeOption = None) -> None:
    """Leave a swarm."""
    client(home).delete(f"/swarms/{quote(name)}")
    typer.echo(f"left swarm {name!r}")


# --- offers and wants ---------------------------------------------------------

ITEM_COLUMNS = [
    ("id", "id"),
    ("title", "title"),
    ("kind", "kind"),
    ("tags", "tags"),
    ("author", "author"),
    ("trust", "trust"),
    ("expires", "expires"),
]


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
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        body = {"title": title, "kind": kind, "tags": tag or [], "desc": desc, "where": where}
        if expires is not None:
            body["expires_days"] = expires
        if swarm:
            body["swarm"] = swarm
        data = client(home).post(f"/{plural}", body)
        typer.echo(json.dumps(data) if json_out else data["id"])

    add.__doc__ = f"Publish {what}; prints its id."

    @sub.command("list")
    @mesh_errors
    def listing(
        mine: Annotated[bool, typer.Option("--mine", help="Only your own.")] = False,
        kind: Annotated[str | None, typer.Option("--kind")] = None,
        tag: Annotated[str | None, typer.Option("--tag")] = None,
        query: Annotated[str | None, typer.Option("--query", help="Full-text search.")] = None,
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        params: dict[str, Any] = {"kind": kind, "tag": tag, "query": query}
        if mine:
            params["mine"] = "true"
        data = client(home).get(f"/{plural}", **params)
        if json_out:
            show_json(data)
            return
        table(data, ITEM_COLUMNS, empty=f"no {plural} found")

    listing.__doc__ = f"List live {plural}, most trusted authors first."

    @sub.command("show")
    @mesh_errors
    def show(item_id: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
        data = client(home).get(f"/{plural}/{quote(item_id)}")
        if json_out:
            show_json(data)
            return
        for key in (
            "id",
            "title",
            "kind",
            "tags",
            "desc",
            "where",
            "author",
            "trust",
            "created",
            "expires",
            "withdrawn",
        ):
            value = data.get(key)
            typer.echo(f"{key + ':':10} {', '.join(value) if isinstance(value, list) else value}")

    show.__doc__ = f"Show one {type_}."

    @sub.command("withdraw")
    @mesh_errors
    def withdraw(item_id: str, home: HomeOption = None) -> None:
        data = client(home).delete(f"/{plural}/{quote(item_id)}")
        typer.echo(f"withdrew {data['withdrawn'][:12]}")

    withdraw.__doc__ = f"Withdraw one of your {plural}."
    return sub


app.add_typer(item_app("offer", "offers", "an offer (something you lend, give, swap or do)"), name="offer")
app.add_typer(item_app("want", "wants", "a want (something you look for)"), name="want")


# --- barter -------------------------------------------------------------------

TRADE_COLUMNS = [
    ("id", "id"),
    ("state", "state"),
    ("from", "from"),
    ("to", "to"),
    ("give", "give"),
    ("take", "take"),
]


@app.command()
@mesh_errors
def propose(
    offer_id: str,
    give: Annotated[list[str] | None, typer.Option("--give", help="One of your offers (repeatable).")] = None,
    note: Annotated[str, typer.Option("--note")] = "",
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Propose a trade for a neighbour's offer; prints the proposal id."""
    data = client(home).post("/proposals", {"offer": offer_id, "give": give or [], "note": note})
    typer.echo(json.dumps(data) if json_out else data["id"])


@app.command()
@mesh_errors
def proposals(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Your trades, newest first."""
    data = client(home).get("/proposals")
    if json_out:
        show_json(data)
        return
    table(data, TRADE_COLUMNS, empty="no proposals")


def _reply(
    action: str, proposal_id: str, home: str | None, json_out: bool, body: dict[str, Any] | None = None
) -> None:
    data = client(home).post(f"/proposals/{quote(proposal_id)}/{action}", body or {})
    if json_out:
        show_json(data)
        return
    note = ""
    if action == "complete" and data["state"] == "accepted":
        note = " (done on your side; completed once the other side runs 'meshnode complete' too)"
    typer.echo(f"{data['id'][:12]} is now {data['state']}{note}")


@app.command()
@mesh_errors
def accept(proposal_id: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Accept a proposal (reserves the offers in it)."""
    _reply("accept", proposal_id, home, json_out)


@app.command()
@mesh_errors
def decline(proposal_id: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Decline a proposal."""
    _reply("decline", proposal_id, home, json_out)


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
def counter(
    proposal_id: str,
    give: Annotated[list[str] | None, typer.Option("--give", help="An offer of yours you give.")] = None,
    take: Annotated[list[str] | None, typer.Option("--take", help="An offer of theirs you take.")] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Answer a proposal with other terms."""
    _reply("counter", proposal_id, home, json_out, {"give": give or [], "take": take or []})


# --- trust --------------------------------------------------------------------


@app.command()
@mesh_errors
def vouch(
    peer_id: str,
    level: Annotated[float, typer.Option("--level", help="From -1 (distrust) to 1.")] = 0.8,
    note: Annotated[str, typer.Option("--note")] = "",
    swarm: Annotated[str | None, typer.Option("--swarm")] = None,
    home: HomeOption = None,
    json_out: JsonOption = False,
) -> None:
    """Vouch for (or, with a negative level, warn about) a neighbour."""
    body: dict[str, Any] = {"peer": peer_id, "level": level, "note": note}
    if swarm:
        body["swarm"] = swarm
    data = client(home).post("/vouch", body)
    typer.echo(json.dumps(data) if json_out else f"vouched for {peer_id} at {level:+.2f}")


@app.command()
@mesh_errors
def trust(peer_id: str, home: HomeOption = None, json_out: JsonOption = False) -> None:
    """How much you trust a peer, and through whom."""
    data = client(home).get(f"/trust/{quote(peer_id)}")
    if json_out:
        show_json(data)
        return
    typer.echo(f"{data['peer']}: {data['score']:.2f}")
    for path in data["paths"]:
        typer.echo("  " + " → ".join(_short(k) for k in path["keys"]) + f"  ({path['strength']:.2f})")


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
