"""The group-buying commands of the ``meshnode`` CLI, and how their answers print.

:func:`register` adds them (``meshnode.cli.main`` calls it once):

* ``meshnode pool add TITLE --from SUPPLIER --unit-price 18 --min 10 --max 30
  --closes 2026-12-15 [--unit crate] [--swarm NAME]``: organise a pool.
* ``meshnode pool show POOL``: a pool, every share, what does not count.
* ``meshnode pool confirm|cancel|delivered POOL [--note TEXT]``: the
  organiser's moves.
* ``meshnode pledge POOL N``: pledge N units (0 withdraws your pledge).
* ``meshnode pools [--all]``: the pools of your swarms, most trusted
  organisers first.

Like :mod:`meshnode.cli.ringcmds`, the command functions are built inside
:func:`register` (every command is a new process: import little at start),
and this module does not use postponed annotations (typer reads them).
"""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from meshnode.cli.render import lines, printable, short_id

STATE_WORDS = {
    "open": "open: pledges welcome, the minimum is not reached yet",
    "reached": "reached its minimum: pledges may still change until it closes",
    "closed": "closed: waiting for the organiser to confirm the order",
    "failed": "closed without reaching its minimum: nothing is ordered",
    "cancelled": "cancelled by the organiser: nothing is ordered",
    "confirmed": "the order is confirmed",
    "delivered": "delivered",
}


def register(app: typer.Typer) -> None:
    """Add the ``pool`` group, ``pledge`` and ``pools`` to ``app``."""
    from meshnode.cli.main import HomeOption, JsonOption, client, mesh_errors, segment, show
    from meshnode.cli.render import pretty_json

    pool_app = typer.Typer(help="Organise and follow group purchases (pools).", no_args_is_help=True)
    app.add_typer(pool_app, name="pool")
    NoteOption = Annotated[str, typer.Option("--note", help="A word to the pledgers.")]
    PoolArg = Annotated[str, typer.Argument(help="The pool's id (or its first 12 digits).")]

    @pool_app.command("add")
    @mesh_errors
    def add_cmd(
        title: Annotated[str, typer.Argument(help="What is bought, e.g. 'Organic apples, 20 kg crates'.")],
        supplier: Annotated[str, typer.Option("--from", help="Who sells it (the supplier).")],
        unit_price: Annotated[
            str, typer.Option("--unit-price", help="The price of one unit, in the swarm's currency: 18, 2.5.")
        ],
        min_: Annotated[
            int, typer.Option("--min", help="The order is placed if this many units are pledged.")
        ],
        max_: Annotated[int, typer.Option("--max", help="At most this many units are bought.")],
        closes: Annotated[
            str,
            typer.Option(
                "--closes",
                help="When pledges close: a date (2026-12-15: the end of that day, 23:59:59 UTC)"
                " or a time with a timezone (2026-12-15T18:00:00Z).",
            ),
        ],
        unit: Annotated[str, typer.Option("--unit", help="What one unit is, e.g. 'crate'.")] = "",
        swarm: Annotated[
            str | None, typer.Option("--swarm", help="The swarm (when you are in several).")
        ] = None,
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Organise a group purchase; prints its id."""
        body: dict[str, object] = {
            "title": title,
            "from": supplier,
            "unit_price": unit_price,
            "min": min_,
            "max": max_,
            "closes": closes,
            "unit": unit,
        }
        if swarm is not None:
            body["swarm"] = swarm
        data = client(home).post("/pools", body)
        show(pretty_json(data) if json_out else data["id"])

    @pool_app.command("show")
    @mesh_errors
    def show_cmd(pool: PoolArg, home: HomeOption = None, json_out: JsonOption = False) -> None:
        """A pool: its state, every pledger's share, and what does not count."""
        data = client(home).get(f"/pools/{segment(pool)}")
        show(pretty_json(data) if json_out else pool_text(data))

    def mover(action: str, doc: str) -> None:
        @pool_app.command(action, help=doc)
        @mesh_errors
        def move_cmd(
            pool: PoolArg, note: NoteOption = "", home: HomeOption = None, json_out: JsonOption = False
        ) -> None:
            data = client(home).post(f"/pools/{segment(pool)}/{action}", {"note": note})
            show(pretty_json(data) if json_out else pool_text(data))

    mover("confirm", "Confirm the order of a pool you organise (once it closed with its minimum).")
    mover("cancel", "Cancel a pool you organise (before you confirm its order).")
    mover("delivered", "Mark the confirmed order of a pool you organise delivered.")

    @app.command("pledge")
    @mesh_errors
    def pledge_cmd(
        pool: PoolArg,
        quantity: Annotated[int, typer.Argument(help="How many units (0 withdraws your pledge).")],
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Pledge units to a pool, change your pledge, or withdraw it (0) until the pool closes."""
        data = client(home).post(f"/pools/{segment(pool)}/pledge", {"quantity": quantity})
        show(pretty_json(data) if json_out else pool_text(data))

    @app.command("pools")
    @mesh_errors
    def pools_cmd(
        all_: Annotated[
            bool, typer.Option("--all", help="Also the failed, cancelled and delivered ones.")
        ] = False,
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Group purchases in your swarms: yours first, then the most trusted organisers'."""
        data = client(home).get("/pools", all=str(all_).lower())
        show(pretty_json(data) if json_out else pool_list(data))


# --- rendering ---------------------------------------------------------------------


def pool_list(rows: Sequence[Mapping[str, Any]]) -> str:
    """``GET /pools``: two lines a pool."""
    if not rows:
        return "no pools open in your swarms: organise one with 'meshnode pool add'"
    out = []
    for row in rows:
        out.append(f"{short_id(row['id'])}  {_headline(row)}")
        mine = f"; you pledged {row['my_pledge']}" if row["my_pledge"] else ""
        out.append(f"  {_progress(row)}, {row['state']}, closes {row['closes']}{mine}")
    return lines(out)


def pool_text(data: Mapping[str, Any]) -> str:
    """``GET /pools/{id}``: the pool, its state, every share, what does not count, what you can do."""
    pid = short_id(data["id"])
    out = [f"pool {pid}: {_headline(data)}"]
    out.append(f"organised by {printable(data['organiser_name'])} in {printable(data['swarm'] or '-')}")
    out.append(f"state: {STATE_WORDS.get(data['state'], data['state'])}")
    out.append(f"{_progress(data)}; closes {data['closes']}")
    for share in data.get("shares", []):
        got = f"gets {share['quantity']}" + (" (partly)" if share["partly"] else "")
        paid = f", paid {share['paid_text']}" if share.get("paid_text", "0.00") != "0.00" else ""
        out.append(
            f"  {printable(share['member_name'])}: pledged {share['pledged']}, {got},"
            f" {share['cost_text']} {printable(data['currency'])}{paid}"
        )
    if data["my_pledge"]:
        out.append(
            f"you pledged {data['my_pledge']}: you get {data['my_quantity']}"
            f" for {data['my_cost_text']} {printable(data['currency'])}"
        )
    for refused in data.get("refused", []):
        out.append(
            f"  does not count: {refused['type']} by {printable(refused['by_name'])}:"
            f" {printable(refused['reason'])}"
        )
    if data["you_can"]:
        hints = {"pledge": f"meshnode pledge {pid} N"}
        out.append("you can: " + ", ".join(hints.get(a, f"meshnode pool {a} {pid}") for a in data["you_can"]))
    return lines(out)


def _headline(row: Mapping[str, Any]) -> str:
    unit = f" a {printable(row['unit'])}" if row["unit"] else " each"
    return (
        f"{printable(row['title'])} from {printable(row['supplier'])},"
        f" {row['unit_price_text']} {printable(row['currency'])}{unit}"
        f" (by {printable(row['organiser_name'])})"
    )


def _progress(row: Mapping[str, Any]) -> str:
    return f"{row['pledged']} pledged (min {row['min']}, max {row['max']})"
