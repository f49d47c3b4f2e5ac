"""What the CLI shows: the local API's JSON data as text or as a rich table.

Pure functions, no I/O: each takes the data an API route returned (the dicts
and lists of :mod:`meshnode.api.service`) and returns what to print (a
``Shown``): either text (lines joined by ``\\n``, no final newline) or a
:class:`rich.table.Table`. The commands in :mod:`meshnode.cli.main` print it.

Conventions every function keeps:

* A record id (64 lowercase hex digits) is shown by its first 12 digits
  (:func:`short_id`), in text as in tables; any unique prefix of at least 6
  digits names the record again. Peer ids are never shortened: people copy
  them into ``vouch`` and ``trust``.
* A table fits the terminal's width (80 columns and up; a pipe gets
  :data:`TABLE_MIN_WIDTH`), each row on one line (:class:`FittedTable`). Ids
  are never cut nor wrapped: record ids are short (12 digits); a person is
  shown whole while it fits, else by a short form the CLI accepts back (a
  peer id by its last 6 characters, a long ``"Nick (x7k2q9)"`` label by
  ``"Ni… (x7k2q9)"``). Titles, notes and other text end in an ellipsis,
  and the least needed columns (:attr:`Column.drop`) are left out first.
  A missing value is ``-``, a list is joined with ``, ``, a float has two
  decimals.
* An empty list is one line that says so, never an empty table.
* Text from the network (titles, descriptions, swarm names, notes) is shown
  as it is and never as markup: table cells are plain ``rich.text.Text``, and
  control, line-break and invisible format characters (direction overrides,
  zero-width spaces) are shown escaped (``\\n``, ``\\u202e``) by
  :func:`printable`, so no record can draw fake lines or reorder what is read.
* The input is never modified.
"""

from __future__ import annotations

import json
import shlex
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # rich is imported only to draw a table: 'offer list --json' starts faster
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.table import Table

    Shown = str | Table  # what a command prints: text, or a table


class Column(NamedTuple):
    """One column of a table: the key in each row, its title, and when it is left out."""

    key: str
    title: str
    drop: int = 0
    """0: always shown; otherwise left out when the table does not fit, highest first."""


Columns = Sequence[Column | tuple[str, str]]
"""A table's columns (a ``(key, title)`` pair is a column always shown)."""

TABLE_MIN_WIDTH = 200
"""The width of a table printed to a pipe (no terminal says how wide)."""

ID_KEYS = frozenset({"id"})
"""Columns of record ids (shown short): never cut."""
PERSON_KEYS = frozenset({"author", "from", "to", "peer_id", "with", "peer", "by", "via"})
"""Columns naming a person: never cut; shortened to a form the CLI accepts when space is short."""
WHOLE_KEYS = ID_KEYS | PERSON_KEYS
"""Columns copied into other commands."""
PERSON_WIDTH = 20
"""A person's label is shortened to this many columns when the table does not fit."""
SHORT_PEER = 6
"""A peer id's short form: its last characters (as meshnode.people.short_peer)."""
MIN_TEXT_WIDTH = 8
KEPT_TEXT_WIDTH = 24
"""A text column always shown (a title) keeps up to this many columns while optional columns can go."""
"""A text column (title, note) keeps at least this many columns (or its title's width) before others go."""

ITEM_COLUMNS: Columns = [
    Column("id", "id"),
    Column("title", "title"),
    Column("kind", "kind"),
    Column("state", "state"),
    Column("swarm", "swarm", drop=1),
    Column("tags", "tags", drop=2),
    Column("author", "author"),
    Column("trust", "trust"),
    Column("expires", "expires", drop=3),
]

ITEM_FIELDS = (
    "id",
    "title",
    "kind",
    "state",
    "swarm",
    "tags",
    "desc",
    "where",
    "author",
    "trust",
    "created",
    "expires",
    "withdrawn",
)
"""The lines of ``offer show`` / ``want show``, in order."""

PEER_COLUMNS: Columns = [
    Column("peer_id", "peer"),
    Column("swarms", "swarms", drop=1),
    Column("addr", "address"),
    Column("direction", "direction", drop=2),
    Column("route", "route"),
    Column("since", "since", drop=3),
]

KNOWN_PEER_COLUMNS: Columns = [
    Column("swarm", "swarm"),
    Column("peer_id", "peer"),
    Column("addr", "best address"),
    Column("more", "more", drop=1),
    Column("last_seen", "last connected", drop=2),
    Column("failures", "failed dials", drop=3),
]

SWARM_COLUMNS: Columns = [("name", "name"), ("access", "who can read and post"), ("id", "id")]

#: What ``swarm list`` says of a swarm, by its ``private`` flag.
SWARM_ACCESS = {True: "private: invitees only", False: "OPEN: anyone who connects"}

#: Printed (on stderr) by ``swarm create --open``.
OPEN_SWARM_WARNING = (
    "swarm {name!r} is open: anyone who can connect to this node (mDNS finds it on the LAN)"
    " can read and post in it; leave out --open to make an invite-only swarm"
)

_HEX_DIGITS = frozenset("0123456789abcdef")


# --- building blocks ---------------------------------------------------------


def short_id(value: str) -> str:
    """A record id's first 12 hex digits; any other string (a peer id, a name) whole."""
    if len(value) == 64 and _HEX_DIGITS.issuperset(value):
        return value[:12]
    return value


_KEPT_FORMAT = frozenset("\u200c\u200d")  # zero-width (non-)joiners: needed by scripts and emoji
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str) -> str:
    """``text`` with each control, line-break or invisible format character escaped (``\\n``, ``\\u202e``)."""
    if text.isprintable():
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in _ESCAPED_CATEGORIES and ch not in _KEPT_FORMAT
        else ch
        for ch in text
    )


def cell(value: Any) -> str:
    """A table cell: ``-`` for None, lists joined, floats to 2 decimals, record ids short, text printable."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return printable(short_id(value)) if isinstance(value, str) else str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Columns, *, empty: str) -> Shown:
    """``rows`` as a table with ``columns`` that fits where it is printed, or the line ``empty``."""
    if not rows:
        return empty
    cols = [c if isinstance(c, Column) else Column(*c) for c in columns]
    return fitted_table_class()(cols, [[cell(row.get(c.key)) for c in cols] for row in rows])


_PEER_ID_CHARS = frozenset("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


def short_person(text: str, width: int = PERSON_WIDTH) -> str:
    """A person's cell in at most ``width`` columns, in a form the CLI accepts back.

    A whole peer id becomes its last :data:`SHORT_PEER` characters; a label
    ``"Nick (x7k2q9)"`` keeps its short id and cuts the name (``"Ni… (x7k2q9)"``);
    other text (a petname) is cut with an ellipsis. Short text is unchanged.
    """
    from rich.cells import cell_len, set_cell_size

    if len(text) >= 46 and text.startswith(("12D3KooW", "Qm")) and _PEER_ID_CHARS.issuperset(text):
        return text[-SHORT_PEER:]
    if cell_len(text) <= width:
        return text
    name, sep, suffix = text.rpartition(" (")
    if sep and suffix.endswith(")") and _PEER_ID_CHARS.issuperset(suffix[:-1]) and len(suffix) < width - 2:
        keep = width - len(suffix) - 3
        return f"{set_cell_size(name, keep).rstrip()}… ({suffix}"
    return set_cell_size(text, width - 1).rstrip() + "…"


def fit_columns(
    cols: Sequence[Column], cells: Sequence[Sequence[str]], width: int
) -> tuple[list[int], list[list[str]], list[int]]:
    """Which columns (indexes) to show, the cells (persons shortened if needed) and each column's width.

    A table of ``n`` columns takes the sum of its widths plus ``3n - 1``
    (padding and separators). Ids keep their width; persons are shortened
    (:func:`short_person`) when the table does not fit even with its text
    columns at their least (:data:`MIN_TEXT_WIDTH`); then columns
    are left out by :attr:`Column.drop`; text columns share what is left,
    narrowest first, each up to its longest cell (so a long title gets the rest).
    """
    from rich.cells import cell_len

    rows = [list(r) for r in cells]
    shown = list(range(len(cols)))

    def natural(i: int) -> int:
        return max(cell_len(cols[i].title), *(cell_len(r[i]) for r in rows))

    def least(i: int) -> int:
        if cols[i].key in WHOLE_KEYS:
            return natural(i)
        return min(natural(i), max(cell_len(cols[i].title), MIN_TEXT_WIDTH))

    def kept(i: int) -> int:
        """As :func:`least`, but a column always shown keeps up to :data:`KEPT_TEXT_WIDTH` (a title)."""
        if cols[i].drop or cols[i].key in WHOLE_KEYS:
            return least(i)
        return min(natural(i), max(least(i), KEPT_TEXT_WIDTH))

    def needed(widths: Callable[[int], int]) -> int:
        return sum(widths(i) for i in shown) + 3 * len(shown) - 1

    if needed(least) > width:
        for i, col in enumerate(cols):
            if col.key in PERSON_KEYS:
                for r in rows:
                    r[i] = short_person(r[i])
    droppable = sorted((c.drop, i) for i, c in enumerate(cols) if c.drop)
    floor = least
    for floor in (kept, least):  # leave out the optional columns before cutting a title short
        while needed(floor) > width and droppable:
            shown.remove(droppable.pop()[1])
        if needed(floor) <= width:
            break
    widths = {i: floor(i) for i in shown}
    spare = width - needed(floor)
    # What is left goes to a title up to its kept width, then to the optional columns, then to the
    # columns always shown (each time the narrow ones whole first: the widest, a title, gets the rest).
    for upto in (kept, natural):
        for i in sorted(shown, key=natural):
            grow = min(max(spare, 0), upto(i) - widths[i])
            if grow > 0:
                widths[i] += grow
                spare -= grow
    return shown, rows, [widths[i] for i in shown]


def fitted_table_class() -> Callable[[Sequence[Column], Sequence[Sequence[str]]], Table]:
    """:class:`FittedTable` (defined on first use: rich is imported only to draw a table)."""
    global FittedTable
    if FittedTable is not None:
        return FittedTable
    from rich.table import Table
    from rich.text import Text

    class _FittedTable(Table):
        """A table laid out at the width it is printed in (see :func:`fit_columns`)."""

        def __init__(self, cols: Sequence[Column], cells: Sequence[Sequence[str]]) -> None:
            super().__init__(show_edge=False, header_style="bold")
            self.fit_cols, self.fit_cells = list(cols), [list(r) for r in cells]
            for col in cols:
                self.add_column(col.title)
            for row in cells:
                self.add_row(*(Text(c) for c in row))  # Text: never read as markup

        def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
            shown, rows, widths = fit_columns(self.fit_cols, self.fit_cells, options.max_width)
            t = Table(show_edge=False, header_style="bold")
            for i, w in zip(shown, widths, strict=True):
                t.add_column(self.fit_cols[i].title, width=w, no_wrap=True, overflow="ellipsis")
            for row in rows:
                t.add_row(*(Text(row[i]) for i in shown))
            yield t

    FittedTable = _FittedTable
    return FittedTable


FittedTable: Callable[[Sequence[Column], Sequence[Sequence[str]]], Table] | None = None
"""The table class :func:`table` returns, once a table was drawn."""


def lines(parts: Iterable[str]) -> str:
    return "\n".join(parts)


def pretty_json(data: Any) -> str:
    """``--json`` of the list and object commands: indented, non-ASCII kept."""
    return json.dumps(data, indent=2, ensure_ascii=False)


def error_json(code: str, message: str) -> str:
    """A refusal under ``--json``: one line, ``{"error": {"code": ..., "message": ...}}``."""
    return json.dumps({"error": {"code": code, "message": message}})


def compact_json(data: Any) -> str:
    """``--json`` of the commands that publish (``add``, ``propose``, ``vouch``): one line."""
    return json.dumps(data)


# --- node ----------------------------------------------------------------------


def initialised(peer_id: str, home: str, created: bool) -> str:
    """What ``meshnode init`` says about the node's key and home."""
    return lines(
        [
            f"{'Created' if created else 'Found'} node {peer_id}",
            f"home: {home}",
            "next: run 'meshnode daemon' to start it",
        ]
    )


def detached(ready_line: str, pid: int, log: str) -> str:
    """What ``meshnode daemon --detach`` prints once the daemon is ready."""
    return f"{ready_line} pid={pid} log={log}"


def connected(data: Mapping[str, Any]) -> str:
    return f"connected to {data['peer_id']}"


STOPPING = "daemon stopping"


def identity(data: Mapping[str, Any]) -> str:
    """``GET /id``: the peer id, then one indented line per address."""
    return lines([data["peer_id"], *(f"  {addr}" for addr in data["addrs"])])


def status(data: Mapping[str, Any]) -> str:
    """``GET /status``: the node, its reach verdict and counts, then each network."""
    reach = data.get("reachability", {})
    out = [
        f"peer id:  {data['peer_id']}",
        f"reach:    {reach.get('state', '?')}: {reach.get('reason', '')}",
        f"swarms:   {printable(', '.join(data['swarms'])) or '-'}",
        f"peers:    {data['peers']}",
        f"records:  {data['records']}",
    ]
    if "storage" in data:
        out.append(f"storage:  {storage(data['storage'])}")
    gossip = data.get("gossip", {})
    if "bans" in gossip:
        out.append(f"bans:     {gossip['bans']} peers, {gossip.get('banned_addresses', 0)} addresses")
    for net in data.get("networks", []):
        members = printable(", ".join(f"{name} {n}" for name, n in sorted(net["swarm_peers"].items())))
        members = members or "no swarm"
        out.append(
            f"network:  {net['network']} port {net['port'] or '-'}, {net['peers']} peers"
            f" ({members} connected); {net['reachability']['state']}"
        )
        out += [f"            {addr}" for addr in net["addrs"]]
    return lines(out)


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def storage(data: Mapping[str, Any]) -> str:
    """The ``storage`` part of ``GET /status``: use, free disk, and whether others' records are kept."""
    text = f"{data['records']} records, {mib(data['bytes'])}"
    free, floor = data.get("free_bytes"), data.get("disk_floor_bytes")
    if free is not None:
        text += f"; {mib(free)} free"
    if floor is not None:
        text += f" (floor {mib(floor)})"
    if data.get("storing_others") is False:
        text += ": DISK NEARLY FULL, storing only this node's own records until space is freed"
    elif "swarm_records" in data:
        text += f"; at most {data['swarm_records']} records, {mib(data['swarm_bytes'])} per swarm"
    return text


def peers(rows: Sequence[Mapping[str, Any]]) -> Shown:
    """``GET /peers``: one row per connection, its route ``relayed`` or ``direct``."""
    shown = [
        {
            **row,
            "peer_id": named(row, "name") or row["peer_id"],
            "route": "relayed" if row.get("relayed") else "direct",
        }
        for row in rows
    ]
    return table(shown, PEER_COLUMNS, empty="no peers connected")


def known_peers(rows: Sequence[Mapping[str, Any]]) -> Shown:
    """``GET /peers/known``: one row per peer and swarm, its best address and how many more."""
    shown = [
        {
            **row,
            "addr": row["addrs"][0] if row["addrs"] else None,
            "more": len(row["addrs"]) - 1 if row["addrs"] else 0,
        }
        for row in rows
    ]
    return table(shown, KNOWN_PEER_COLUMNS, empty="the address book is empty")


# --- swarms ----------------------------------------------------------------------


def swarm_created(data: Mapping[str, Any]) -> str:
    """``POST /swarms``: the new swarm, and the command that invites to it."""
    return lines(
        [
            f"created {'private' if data['private'] else 'OPEN'} swarm {data['name']!r}",
            f"invite neighbours with: meshnode swarm invite {shlex.quote(data['name'])}",
        ]
    )


def joined(data: Mapping[str, Any]) -> str:
    return f"joined swarm {data['name']!r}"


def warning(message: str) -> str:
    """A line for stderr that does not make the command fail."""
    return f"warning: {message}"


def left(name: str) -> str:
    return f"left swarm {name!r}"


def swarms(rows: Sequence[Mapping[str, Any]]) -> Shown:
    """``GET /swarms``: each swarm says who can read and post in it (open ones loudly)."""
    shown = [{**row, "access": SWARM_ACCESS[bool(row["private"])]} for row in rows]
    return table(shown, SWARM_COLUMNS, empty="no swarms yet")


# --- offers and wants ------------------------------------------------------------


def items(rows: Sequence[Mapping[str, Any]], plural: str) -> Shown:
    """``GET /offers`` or ``/wants``; ``plural`` names them in the empty line."""
    shown = [{**row, "author": named(row, "author")} for row in rows]
    return table(shown, ITEM_COLUMNS, empty=f"no {plural} found")


def item(data: Mapping[str, Any]) -> str:
    """One offer or want, a ``key: value`` line per field, lists joined; a lend item's terms too."""
    out = []
    for key in ITEM_FIELDS:
        value = data.get(f"{key}_name", data.get(key))
        text = ", ".join(value) if isinstance(value, list) else value
        out.append(f"{key + ':':10} {printable(text) if isinstance(text, str) else text}")
    if data.get("terms"):
        out.append(f"{'terms:':10} {lend_terms(data['terms'])}")
    if data.get("price"):
        unit = printable(data.get("price_unit") or "")
        out.append(f"{'price:':10} {data['price']} {unit}".rstrip())
    return lines(out)


def lend_terms(terms: Mapping[str, Any]) -> str:
    """``for up to 7 days, deposit "20 EUR"``: a lend item's terms (the deposit is remote text)."""
    days = terms.get("max_days")
    said = [f"for up to {days} day{'s' if days != 1 else ''}" if days else "no set term (14 days)"]
    if terms.get("deposit"):
        said.append(f"deposit {_quoted(terms['deposit']).strip()}")
    return ", ".join(said)


def web_login(data: Mapping[str, Any]) -> str:
    """``POST /web/login``: the one-time link, alone on its line."""
    return lines(
        [
            data["url"],
            "(open it in a browser on this machine: it works once, for ten minutes;"
            " your page is at " + data["page"] + ")",
        ]
    )


def withdrawn(data: Mapping[str, Any]) -> str:
    return f"withdrew {short_id(data['withdrawn'])}"


def edited(data: Mapping[str, Any]) -> str:
    """``POST /offers/{id}/edit``: the update published."""
    return f"updated {short_id(data['updated'])} (update {short_id(data['id'])})"


# --- barter and trust ------------------------------------------------------------


def trade_line(row: Mapping[str, Any]) -> str:
    """What a trade is, from this node's side: "Bob (x7k2q9) offers Ladder for your Cordless drill".

    The other party is named by ``with_name`` (else "they"); remote text is escaped.
    """
    give, get = ", ".join(row["you_give"]), ", ".join(row["you_get"])
    named_them = row.get("with_name")
    if row["proposed_by"] == "you":
        to = f" {named_them}" if named_them else ""
        if not get:
            return printable(f"you give {give} to{to or ' them'}")
        if not give:
            return printable(f"you ask{to} for their {get}")
        return printable(f"you offer {give}{' to' + to if to else ''} for their {get}")
    who, s = (named_them, "s") if named_them else ("they", "")
    if not give:
        return printable(f"{who} give{s} you {get}")
    if not get:
        return printable(f"{who} ask{s} for your {give}")
    return printable(f"{who} offer{s} {get} for your {give}")


def trade_state(row: Mapping[str, Any]) -> str:
    """The state, whose move it is while that matters, and why it closed if it was unavailable."""
    waiting = row.get("waiting_for")
    if waiting == "them":
        waiting = row.get("with_name", waiting)
    state = f"{row['state']}, waiting for {waiting}" if waiting else row["state"]
    if row.get("due") and row["state"] in ("handed over", "overdue"):
        state += f", due back {_day(row['due'])}"
    if row.get("closed_because"):
        state += f" ({row['closed_because']})"
    return printable(state)


TRADE_INDENT = 14
"""Where a trade's second line (its latest note) starts: under the sentence, after the 12-digit id."""


def trades(rows: Sequence[Mapping[str, Any]], width: int = TABLE_MIN_WIDTH) -> str:
    """``GET /proposals``: per trade, its id, what it is, its state and whose move; then its latest note.

    ``7cadb1b30e78  Bob (x7k2q9) offers Ladder for your Cordless drill — proposed, waiting for you``
    and, indented below, ``"for your shed roof"``. Lines fit ``width`` columns: the sentence and
    the note are cut with an ellipsis, never the id or the state.
    """
    if not rows:
        return "no proposals"
    out = []
    for row in rows:
        head = f"{short_id(row['id'])}  "
        tail = f" — {trade_state(row)}"
        out.append(head + _fit(trade_line(row), width - len(head) - _cells(tail)) + tail)
        if row.get("note"):
            out.append(" " * TRADE_INDENT + _fit(_quoted(row["note"]).strip(), width - TRADE_INDENT))
    return lines(out)


def _cells(text: str) -> int:
    from rich.cells import cell_len

    return cell_len(text)


def _fit(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns (at least 12), ending in an ellipsis if it was cut."""
    from rich.cells import set_cell_size

    width = max(width, 12)
    if _cells(text) <= width:
        return text
    return set_cell_size(text, width - 1).rstrip() + "…"


#: A move as done: "Bob (x7k2q9) proposed", "you accepted".
MOVE_DONE = {
    "propose": "proposed",
    "accept": "accepted",
    "counter": "countered",
    "decline": "declined",
    "cancel": "cancelled",
    "complete": "completed",
    "received": "received it",
    "extend": "extended the loan",
    "returned": "got it back",
}


def move_line(move: Mapping[str, Any]) -> str:
    """One move of a trade: day, who, what they did (with the terms they stated), the note."""
    terms = ""
    if move.get("you_give") is not None:
        give, get = ", ".join(move["you_give"]), ", ".join(move["you_get"])
        terms = f": you give {give or 'nothing'}, you get {get or 'nothing'}"
    did = MOVE_DONE.get(move["action"], move["action"])
    if move.get("until"):
        did += f" to {_day(move['until'])}"
    said = f"{named(move, 'who')} {did}{printable(terms)}{_quoted(move['note'])}"
    if "private" in move:
        private = move["private"]
        said += " [private: " + (f'"{printable(private)}"' if private is not None else "unreadable") + "]"
    why = f"  [not counted: {printable(move['why'])}]" if "why" in move else ""
    return f"{_day(move.get('date'))}  {said}{why}"


def trade_history(data: Mapping[str, Any]) -> str:
    """``GET /proposals/{id}``: what the trade is, its moves in order, its state, and replies not counted."""
    out = [f"{short_id(data['id'])}  {trade_line(data)}"]
    out += [f"  {move_line(m)}" for m in data["moves"]]
    out.append(f"state: {trade_state(data)}")
    if data.get("not_counted"):
        out.append("not counted:")
        out += [f"  {move_line(m)}" for m in data["not_counted"]]
    return lines(out)


def replied(action: str, data: Mapping[str, Any]) -> str:
    """A trade after ``action`` (accept, decline, cancel, complete, counter, or a loan's move) on it."""
    note = ""
    if action == "complete" and data["state"] == "accepted":
        note = " (done on your side; completed once the other side runs 'meshnode complete' too)"
    elif data.get("due") and data["state"] in ("handed over", "overdue"):
        note = f", due back {_day(data['due'])}"
    return f"{short_id(data['id'])} is now {data['state']}{note}"


def loans(rows: Sequence[Mapping[str, Any]], width: int = TABLE_MIN_WIDTH) -> str:
    """``GET /loans``: per loan, its id, what was lent to or by whom, its state and due date.

    ``7cadb1b30e78  you lent Ladder to Bob (x7k2q9) — handed over, due back 2026-12-07``
    """
    if not rows:
        return "no loans (a loan starts when a trade for a lend offer is accepted)"
    out = []
    for row in rows:
        what = ", ".join(row["items"])
        who = row.get("with_name") or row["with"]
        said = f"you lent {what} to {who}" if row["role"] == "lent" else f"you borrowed {what} from {who}"
        if row["state"] == "accepted":
            state = "accepted, not handed over yet"
            if row["role"] == "borrowed":
                state += ": run 'meshnode received' once you have it"
        else:
            state = trade_state({**row, "waiting_for": None})
            if row.get("days_overdue"):
                late = row["days_overdue"]
                state += f" ({late} day{'s' if late != 1 else ''} late)"
        head = f"{short_id(row['id'])}  "
        tail = f" — {printable(state)}"
        out.append(head + _fit(printable(said), width - len(head) - _cells(tail)) + tail)
    return lines(out)


def vouched(peer_id: str, level: float, replaces: Mapping[str, Any] | None = None) -> str:
    """``POST /vouch``: what was published, and the earlier attestation it ``replaces`` (if any)."""
    text = f"vouched for {peer_id} at {level:+.2f}"
    if replaces:
        what = "vouch" if replaces["level"] > 0 else "warning"
        text += f", replaces your {what} of {replaces['level']:+.2f} from {_day(replaces.get('date'))}"
    return text


def profile(data: Mapping[str, Any]) -> str:
    """``GET /profile``: nickname, bio, peer id and your petname for them (remote text escaped)."""
    out = [
        f"nickname: {printable(data['nickname']) or '-'}",
        f"bio:      {printable(data['bio']) or '-'}",
        f"peer id:  {data['peer']}",
    ]
    if not data.get("mine"):
        out += [
            f"petname:  {printable(data.get('petname') or '') or '-'}",
            f"shown as: {named(data, 'peer')}",
        ]
    if data.get("published"):
        out.append(f"published in: {', '.join(printable(s) for s in data['published'])}")
    return lines(out)


def _day(date: str | None) -> str:
    """The day of an API date (``2026-11-20T10:00:00Z`` -> ``2026-11-20``)."""
    return date[:10] if date else "?"


def _who(peer: str, me: str | None) -> str:
    return "you" if peer == me else peer


def named(row: Mapping[str, Any], key: str) -> Any:
    """The label the API gave the person in ``row[key]`` (``key_name``), else the peer id; printable."""
    value = row.get(f"{key}_name", row.get(key))
    return printable(value) if isinstance(value, str) else value


def _quoted(note: str) -> str:
    """A note (remote text) in double quotes, escaped by :func:`printable`; nothing if empty."""
    return f' "{printable(note)}"' if note else ""


def _statement(level: float, context: str, note: str) -> str:
    """``+0.80 [tools] "lent me his drill"``: one attestation's level, context and note."""
    shown_context = f" [{printable(context)}]" if context else ""
    return f"{level:+.2f}{shown_context}{_quoted(note)}"


def edge_text(edge: Mapping[str, Any]) -> str:
    """What one trust edge is: ``vouched +0.80 "note"`` or ``traded (proposal 1a2b3c4d5e6f)``."""
    if edge["kind"] == "trade":
        proposals = edge.get("proposals") or [edge["proposal"]]
        times = f" {len(proposals)} times" if len(proposals) > 1 else ""
        latest = "latest proposal" if len(proposals) > 1 else "proposal"
        late = edge.get("late_loans") or []
        kept = (
            f", weakened: kept {len(late)} loan{'s' if len(late) > 1 else ''} past the due date"
            if late
            else ""
        )
        return f"traded{times} ({latest} {short_id(proposals[-1])}{kept})"
    return f"{'vouched' if edge['level'] > 0 else 'warned'} {_said(edge)}"


def _said(vouch: Mapping[str, Any]) -> str:
    """A vouch's (or warning's) level, context and note; each attestation when it combines several."""
    said = vouch.get("attestations") or []
    if len(said) <= 1:
        return _statement(vouch["level"], vouch.get("context", ""), vouch.get("note", ""))
    parts = "; ".join(_statement(a["level"], a["context"], a["note"]) for a in said)
    return f"{vouch['level']:+.2f} in all ({parts})"


def trust(data: Mapping[str, Any]) -> str:
    """``GET /trust/{peer}``: the score, each path edge by edge, then the warnings that applied."""
    me = data.get("me")
    header = f"{_who(named(data, 'peer'), me)}: {data['score']:.2f}"
    if data.get("distrust") and data.get("trust", data["score"]) != data["score"]:
        header += f" ({data['trust']:.2f} before warnings)"
    out = [header]
    for number, path in enumerate(data["paths"], 1):
        out.append(f"  path {number}, strength {path['strength']:.2f}:")
        out += [
            f"    {_who(named(e, 'from'), me)} → {_who(named(e, 'to'), me)}: {edge_text(e)}"
            for e in path.get("edges", [])
        ]
    for warning in data.get("distrust", []):
        effect = "sets the score to 0" if warning["by"] == me else f"takes off {warning['takes_off']:.2f}"
        out.append(f"  warned about by {_who(named(warning, 'by'), me)}: {_said(warning)} ({effect})")
    for fork in data.get("forks", []):
        a, b = fork["transfers"]
        out.append(
            f"  double spent in {printable(fork['swarm'])}:"
            f" two transfers at place {fork['seq']} of one chain,"
            f" {a['amount']} to {printable(a['to_name'])} ({short_id(a['transfer'])}) and {b['amount']}"
            f" to {printable(b['to_name'])} ({short_id(b['transfer'])}): their credit limit there is 0"
        )
    if not data["paths"] and not data.get("distrust") and data["peer"] != me:
        out.append("  nobody you trust vouched for or traded with them")
    return lines(out)


def trusted(rows: Sequence[Mapping[str, Any]]) -> str:
    """``GET /trusted``: one line per peer, best first: score, peer, and how trust reaches them."""
    if not rows:
        return "you trust nobody yet: 'meshnode vouch PEER --note …' vouches for a neighbour"
    out = []
    for row in rows:
        edge = row.get("edge")
        if edge is None:
            how = "-"
        elif row.get("direct"):
            how = f"you {edge_text(edge)}"
        else:
            how = f"via {named(row, 'via')}, who {edge_text(edge)}"
        out.append(f"{row['score']:.2f}  {named(row, 'peer')}  {how}")
    return lines(out)


def rules(data: Mapping[str, Any]) -> str:
    """``GET /rules``: one line per rule in force, or how to set them."""
    if not data["rules"]:
        return (
            "no rules are set: trades wait for you. Add a [rules] table to config.toml"
            " (e.g. accept_give_from_trust = 0.7, decline_below_trust = 0.1) and restart the daemon"
        )
    return lines([f"- {line}" for line in data["rules"]])


# --- the inbox -------------------------------------------------------------------


def notice_line(notice: Mapping[str, Any]) -> str:
    """One notice: when, what kind, the sentence, the note (remote text escaped)."""
    when = str(notice.get("at", ""))[:16].replace("T", " ")
    return f"{when}  {notice['kind']:<11} {printable(notice['text'])}{_quoted(notice.get('note', ''))}"


def inbox(data: Mapping[str, Any], all_: bool = False) -> str:
    """``GET /inbox``: the notices, oldest first, and how many more are unread."""
    rows = data["notices"]
    if not rows:
        if all_:
            return "your inbox is empty: matches, proposals and vouches will show here"
        return "nothing new since you last looked ('meshnode inbox --all' shows the latest)"
    out = [notice_line(n) for n in rows]
    if data.get("unread"):
        out.append(f"{data['unread']} more unread: run 'meshnode inbox' again")
    return lines(out)
