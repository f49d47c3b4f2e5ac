"""The mutual-credit commands of the ``meshnode`` CLI, and how their answers print.

:func:`register` adds them (``meshnode.cli.main`` calls it once):

* ``meshnode pay PEER AMOUNT [--memo TEXT] [--for PROPOSAL|POOL] [--swarm NAME]``:
  pay a neighbour in the swarm's currency (``2``, ``1.5``).
* ``meshnode balance [PEER] [--swarm NAME]``: a balance, the credit limit
  and where it comes from, and a proof of double spending if there is one.
* ``meshnode ledger [--swarm NAME]``: your own transfers, in and out.
* ``meshnode swarm currency [NAME] [--unit UNIT] [--swarm NAME]``: show the
  swarm's currency, or name it.

Like :mod:`meshnode.cli.ringcmds`, the command functions are built inside
:func:`register` (every command is a new process: import little at start),
and this module does not use postponed annotations (typer reads them).
"""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from meshnode.cli.render import lines, printable, short_id


def register(app: typer.Typer, swarm_app: typer.Typer) -> None:
    """Add ``pay``, ``balance`` and ``ledger`` to ``app`` and ``currency`` to ``swarm_app``."""
    from meshnode.cli.main import HomeOption, JsonOption, client, mesh_errors, show
    from meshnode.cli.render import pretty_json

    SwarmOption = Annotated[str | None, typer.Option("--swarm", help="The swarm (when you are in several).")]

    @app.command("pay")
    @mesh_errors
    def pay_cmd(
        peer: Annotated[str, typer.Argument(help="Who you pay: a name, nickname or peer id.")],
        amount: Annotated[str, typer.Argument(help="How much, in the swarm's unit: 2, 1.5, 0.25.")],
        memo: Annotated[str, typer.Option("--memo", help="What it is for, in a few words.")] = "",
        for_: Annotated[
            str | None, typer.Option("--for", help="The proposal (or pool) this pays for.")
        ] = None,
        swarm: SwarmOption = None,
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Pay a neighbour in the swarm's currency (hours, by default)."""
        body: dict[str, object] = {"peer": peer, "amount": amount, "memo": memo}
        if for_ is not None:
            body["for"] = for_
        if swarm is not None:
            body["swarm"] = swarm
        data = client(home).post("/pay", body)
        show(pretty_json(data) if json_out else paid(data))

    @app.command("balance")
    @mesh_errors
    def balance_cmd(
        peer: Annotated[str | None, typer.Argument(help="Whose balance (default: yours).")] = None,
        swarm: SwarmOption = None,
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """A balance in each swarm, with the credit limit and where it comes from."""
        data = client(home).get("/balance", peer=peer, swarm=swarm)
        show(pretty_json(data) if json_out else balances(data))

    @app.command("ledger")
    @mesh_errors
    def ledger_cmd(
        swarm: SwarmOption = None,
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Your transfers, in and out, newest first, and whether each counts."""
        data = client(home).get("/ledger", swarm=swarm)
        show(pretty_json(data) if json_out else ledger_text(data))

    @swarm_app.command("currency")
    @mesh_errors
    def currency_cmd(
        name: Annotated[
            str | None, typer.Argument(help="Name the swarm's currency (omit it to show the current one).")
        ] = None,
        unit: Annotated[str | None, typer.Option("--unit", help="What one unit is (default: hours).")] = None,
        swarm: SwarmOption = None,
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Show the swarm's currency, or name it (and its unit)."""
        if name is None:
            if unit is not None:
                from meshnode.errors import BadValue

                raise BadValue("--unit goes with a name: meshnode swarm currency NAME --unit UNIT")
            data: Any = client(home).get("/currency", swarm=swarm)
            show(pretty_json(data) if json_out else currencies(data))
            return
        body: dict[str, object] = {"name": name}
        if unit is not None:
            body["unit"] = unit
        if swarm is not None:
            body["swarm"] = swarm
        data = client(home).post("/currency", body)
        show(pretty_json(data) if json_out else currencies([data]))


# --- rendering ---------------------------------------------------------------------


def paid(data: Mapping[str, Any]) -> str:
    """``POST /pay``: what was paid, and the payer's balance now."""
    memo = f' "{printable(data["memo"])}"' if data.get("memo") else ""
    what = f" for {short_id(data['for'])}" if data.get("for") else ""
    unit = printable(data["unit"])
    return lines(
        [
            f"paid {printable(data['to_name'])} {data['amount']} {unit}{memo}{what}"
            f" (transfer {short_id(data['id'])}, place {data['seq']} of your chain)",
            f"your balance: {data['balance']} {unit} (credit limit {data['limit']})",
        ]
    )


def balances(rows: Sequence[Mapping[str, Any]]) -> str:
    """``GET /balance``: one block per swarm."""
    out: list[str] = []
    for row in rows:
        unit = printable(row["unit"])
        who = "you" if row["mine"] else printable(row["peer_name"])
        currency = f" ({printable(row['currency'])})" if row["currency"] else ""
        out.append(f"{printable(row['swarm'])}{currency}: {who}: balance {row['balance']} {unit}")
        fork = row.get("fork")
        if fork is not None:
            out.append(f"  DOUBLE SPENDING: {_fork_line(fork, who)}")
            out.append("  credit limit 0: no later transfer of theirs counts")
        else:
            out.append(f"  credit limit {row['limit']} {unit}, can spend {row['can_spend']} {unit}")
            out += [f"    {line}" for line in _limit_lines(row["limit_from"], who, unit)]
        for w in row["waiting"]:
            out.append(
                f"  transfer {short_id(w['transfer'])} waits for transfer {short_id(w['waits_for'])}:"
                " asking peers for it"
            )
    return lines(out) if out else "no swarm"


def _limit_lines(src: Mapping[str, Any], who: str, unit: str) -> list[str]:
    if not src["trusted"]:
        return [f"no credit: your trust does not reach {who} (a vouch from you or your neighbours would)"]
    out = [f"base {src['base']} {unit}: {'you' if who == 'you' else 'your trust reaches ' + who}"]
    for line in src["extended"]:
        how = "vouches" if line["kind"] == "attest" else "traded"
        out.append(
            f"+ {line['amount']} {unit} from {printable(line['by_name'])}"
            f" ({how} {line['weight']:.2f}, trusted {line['trust']:.2f})"
        )
    if src["capped"]:
        out.append(f"(capped at {src['max']} {unit})")
    return out


def _fork_line(fork: Mapping[str, Any], who: str) -> str:
    a, b = fork["transfers"]
    return (
        f"{who} signed two transfers at place {fork['seq']} of one chain:"
        f" {a['amount']} to {printable(a['to_name'])} ({short_id(a['transfer'])}, {a['date']})"
        f" and {b['amount']} to {printable(b['to_name'])} ({short_id(b['transfer'])}, {b['date']})"
    )


def ledger_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``GET /ledger``: the owner's transfers per swarm, newest first."""
    out: list[str] = []
    for row in rows:
        unit = printable(row["unit"])
        out.append(
            f"{printable(row['swarm'])}: balance {row['balance']} {unit} (credit limit {row['limit']})"
        )
        if not row["transfers"]:
            out.append("  no transfers yet: 'meshnode pay PEER AMOUNT' pays a neighbour")
        for t in row["transfers"]:
            sign = "-" if t["direction"] == "out" else "+"
            way = "to" if t["direction"] == "out" else "from"
            memo = f' "{printable(t["memo"])}"' if t["memo"] else ""
            what = f" for {short_id(t['for'])}" if t.get("for") else ""
            status = "" if t["status"] == "counted" else f"  [{t['status']}: {printable(t['why'])}]"
            out.append(
                f"  {t['date'][:10]}  {sign}{t['amount']} {way} {printable(t['peer_name'])}"
                f"{memo}{what}  {short_id(t['id'])}{status}"
            )
    return lines(out) if out else "no swarm"


def currencies(rows: Sequence[Mapping[str, Any]]) -> str:
    """``GET /currency``: each swarm's currency and who named it."""
    out = []
    for row in rows:
        if row["name"]:
            by = (
                f", named by {printable(row['named_by_name'])} on {row['since'][:10]}"
                if row["named_by"]
                else ""
            )
            out.append(
                f"{printable(row['swarm'])}: {printable(row['name'])},"
                f" counted in {printable(row['unit'])}{by}"
            )
        else:
            out.append(
                f"{printable(row['swarm'])}: counted in {printable(row['unit'])} (no name yet:"
                " 'meshnode swarm currency NAME --unit UNIT')"
            )
    return lines(out)
