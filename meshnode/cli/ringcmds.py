"""The trade-ring commands of the ``meshnode`` CLI, and how their answers print.

:func:`register` adds them to the app (``meshnode.cli.main`` calls it once):

* ``meshnode rings [--mine] [--limit N] [--swarm NAME]``: rings that include
  you, suggested from the live offers and wants of your swarms, each with
  its suggestion id; with ``--mine``, the rings you are a party to.
* ``meshnode propose-ring ID`` (a suggestion) or ``meshnode propose-ring
  OFFER OFFER OFFER...`` (3 to 5 offers in giving order: each one's author
  gives it to the next one's author, the last to the first's).
* ``meshnode ring ID``: a ring's state, who gives what to whom, who has
  accepted or completed; ``meshnode ring accept|decline|complete ID
  [--note TEXT]``: your move on it.

This module imports only typer and the renderer at start (every command is
a new process); the command functions are built inside :func:`register`,
with the helpers of :mod:`meshnode.cli.main`. It does not use postponed
annotations: typer reads the annotations of those nested functions.
"""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from meshnode.cli.render import lines, printable, short_id

RING_ACTIONS = ("accept", "decline", "complete")


def register(app: typer.Typer) -> None:
    """Add ``rings``, ``propose-ring`` and ``ring`` to ``app``."""
    from meshnode.cli.main import HomeOption, JsonOption, client, finite, mesh_errors, segment, show
    from meshnode.cli.render import pretty_json

    @app.command("rings")
    @mesh_errors
    def rings_cmd(
        mine: Annotated[bool, typer.Option("--mine", help="The rings you are a party to instead.")] = False,
        limit: Annotated[int, typer.Option("--limit", help="At most this many suggestions.")] = 10,
        swarm: Annotated[str | None, typer.Option("--swarm", help="Only this swarm's.")] = None,
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Trade rings that include you (3 to 5 neighbours, each giving the next what they want)."""
        if mine:
            data = client(home).get("/rings")
            show(pretty_json(data) if json_out else ring_list(data))
            return
        data = client(home).get("/rings/suggested", limit=limit, swarm=swarm)
        show(pretty_json(data) if json_out else suggestions(data))

    @app.command("propose-ring")
    @mesh_errors
    def propose_ring(
        ids: Annotated[
            list[str],
            typer.Argument(
                help="A suggestion id from 'meshnode rings', or 3 to 5 offer ids in giving order."
            ),
        ],
        note: Annotated[str, typer.Option("--note", help="A word to the other parties.")] = "",
        expires: Annotated[
            float | None,
            typer.Option("--expires", help="Close the ring unless all accept within DAYS (default 14)."),
        ] = None,
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Propose a trade ring; prints its id."""
        body: dict[str, object] = {"note": note}
        if len(ids) == 1:
            body["suggestion"] = ids[0]
        else:
            body["offers"] = list(ids)
        if expires is not None:
            body["expires_days"] = finite(expires, "--expires")
        data = client(home).post("/rings", body)
        show(pretty_json(data) if json_out else data["id"])

    @app.command("ring")
    @mesh_errors
    def ring_cmd(
        words: Annotated[
            list[str], typer.Argument(help="ID to show the ring; accept|decline|complete ID to move on it.")
        ],
        note: Annotated[str, typer.Option("--note", help="A word to the other parties.")] = "",
        home: HomeOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Show a trade ring, or accept, decline or complete it."""
        if len(words) == 1:
            data = client(home).get(f"/rings/{segment(words[0])}")
        elif len(words) == 2 and words[0] in RING_ACTIONS:
            data = client(home).post(f"/rings/{segment(words[1])}/{words[0]}", {"note": note})
        else:
            from meshnode.errors import BadValue

            raise BadValue("expected 'meshnode ring ID' or 'meshnode ring accept|decline|complete ID'")
        show(pretty_json(data) if json_out else ring_text(data))


# --- rendering ---------------------------------------------------------------------


def suggestions(rows: Sequence[Mapping[str, Any]]) -> str:
    """``GET /rings/suggested``: each ring, who gives what to whom, and how to propose it."""
    if not rows:
        return "no rings found: a ring needs 3 to 5 neighbours whose offers meet each other's wants"
    out = []
    for row in rows:
        size = len(row["steps"])
        out.append(f"{row['suggestion']}  {printable(row['swarm'] or '-')}  {size} neighbours")
        out += [f"  {_gives_line(step)}" for step in row["steps"]]
        if row.get("proposed"):
            out.append(f"  already proposed: meshnode ring {short_id(row['proposed'])}")
        else:
            out.append(f"  propose it: meshnode propose-ring {row['suggestion']}")
    return lines(out)


def ring_list(rows: Sequence[Mapping[str, Any]]) -> str:
    """``GET /rings``: one line a ring, newest first."""
    if not rows:
        return "you are in no ring yet: see 'meshnode rings'"
    return lines(f"{short_id(r['id'])}  {_state(r)}  ({len(r['parties'])} neighbours)" for r in rows)


def ring_text(data: Mapping[str, Any]) -> str:
    """``GET /rings/{id}``: the ring, each party's offer and moves, and what you can do."""
    out = [f"ring {short_id(data['id'])}: {_state(data)}"]
    out.append(f"proposed by {printable(data['proposer_name'])} at {data['created']}")
    if data.get("note"):
        out.append(f'  "{printable(data["note"])}"')
    for party in data["parties"]:
        did = [word for word in ("accepted", "completed", "declined") if party[word]]
        out.append(f"  {_gives_line(party)}  [{', '.join(did) or 'no move yet'}]")
    if data["you_can"]:
        out.append(f"you can: {', '.join(data['you_can'])} (meshnode ring ACTION {short_id(data['id'])})")
    return lines(out)


def _state(data: Mapping[str, Any]) -> str:
    state = data["state"]
    if data.get("waiting_for"):
        verb = "accept" if state == "proposed" else "complete"
        who = ", ".join(printable(w) for w in data["waiting_for"])
        state += f", waiting for {who} to {verb}"
    if data.get("closed_because"):
        state += f" ({printable(data['closed_because'])})"
    elif data["state"] == "proposed" and data.get("expires"):
        state += f"; expires {data['expires']}"
    return state


def _gives_line(step: Mapping[str, Any]) -> str:
    who = step.get("author_name") or step.get("name") or "?"
    verb = "give" if who == "you" else "gives"
    to = step["to_name"]
    return f"{printable(who)} {verb} {printable(step['gives_title'])} to {printable(to)}"
