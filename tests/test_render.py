"""The CLI's rendering (meshnode.cli.render): the API's JSON data as text and tables, no daemon."""

from __future__ import annotations

import copy
import io
import json
import re

import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from meshnode.cli import render

RECORD = "ab" * 32
OTHER = "0123456789abcdef" * 4
PEER = "12D3KooWDYUkCU2EquX4majWD43ymM1AGBnjCWRJzAuk8nYs4o6U"
PEER2 = "12D3KooWPCkTteaAJJpHiMxqtZbm3H8udPmfJHs4WGeuh34z84Dk"


def drawn(shown: render.Shown, width: int = render.TABLE_MIN_WIDTH) -> str:
    """What the CLI prints for ``shown`` (tables without colour, as when piped)."""
    if isinstance(shown, str):
        return shown
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(shown)
    return out.getvalue()


def cells(line: str) -> list[str]:
    """One drawn table line (header or row) as its cells."""
    return [c.strip() for c in re.split("[│┃]", line)]


def test_short_id_shortens_record_ids_only():
    assert render.short_id(RECORD) == "abababababab"
    assert render.short_id(OTHER) == "0123456789ab"
    for whole in (PEER, RECORD[:63], RECORD.upper(), "Elm Street", ""):
        assert render.short_id(whole) == whole


def test_cells():
    assert render.cell(None) == "-"
    assert render.cell([RECORD, "tools"]) == "abababababab, tools"
    assert render.cell([]) == ""
    assert render.cell(0.456) == "0.46"
    assert render.cell(3) == "3"
    assert render.cell(True) == "True"
    assert render.cell(RECORD) == "abababababab"
    assert render.cell(PEER) == PEER


def test_an_empty_list_is_one_line():
    assert render.items([], "wants") == "no wants found"
    assert render.trades([]) == "no proposals"
    assert render.swarms([]) == "no swarms yet"
    assert render.peers([]) == "no peers connected"
    assert render.known_peers([]) == "the address book is empty"


def test_item_table_never_cuts_ids_and_shortens_record_ids():
    rows = [
        {
            "id": RECORD,
            "title": "Cordless drill " + "very " * 60 + "long",
            "kind": "lend",
            "state": "reserved",
            "swarm": "Elm Street",
            "tags": ["tools", "power"],
            "author": PEER,
            "trust": 0.9,
            "expires": None,
        }
    ]
    shown = render.items(rows, "offers")
    assert isinstance(shown, Table)
    assert [c.header for c in shown.columns] == [
        "id",
        "title",
        "kind",
        "state",
        "swarm",
        "tags",
        "author",
        "trust",
        "expires",
    ]
    text = drawn(shown)  # a long title ends in an ellipsis (one line a row), the ids stay whole
    first = text.splitlines()[2]
    assert "abababababab" in first and RECORD not in text
    assert PEER in first and "long" not in text and "Cordless drill very very" in first and "…" in first
    assert "tools, power" in first and "0.90" in first and " - " in first and "reserved" in first


def test_trades_say_what_each_trade_is_whose_move_it_is_and_the_latest_note():
    base = {"id": OTHER, "from": PEER, "to": PEER2, "give": [RECORD], "take": [OTHER], "with": PEER}
    rows = [
        base
        | {
            "state": "proposed",
            "proposed_by": "them",
            "with_name": "Bob (x7k2q9)",
            "you_give": ["Cordless drill"],
            "you_get": ["Ladder"],
            "note": "for a weekend",
            "waiting_for": "you",
        },
        base
        | {
            "state": "completed",
            "proposed_by": "you",
            "you_give": ["Jam"],
            "you_get": [],
            "note": "",
            "waiting_for": None,
        },
        base
        | {
            "state": "unavailable",
            "proposed_by": "them",
            "you_give": ["Sofa"],
            "you_get": [],
            "note": "",
            "waiting_for": None,
            "closed_because": "Sofa was withdrawn",
        },
    ]
    assert render.trades(rows).splitlines() == [
        "0123456789ab  Bob (x7k2q9) offers Ladder for your Cordless drill — proposed, waiting for you",
        '              "for a weekend"',
        "0123456789ab  you give Jam to them — completed",
        "0123456789ab  they ask for your Sofa — unavailable (Sofa was withdrawn)",
    ]
    one_sided = rows[0] | {"you_give": []}
    assert render.trade_line(one_sided) == "Bob (x7k2q9) gives you Ladder"
    asked = rows[0] | {"you_get": [], "with_name": None}
    assert render.trade_line(asked) == "they ask for your Cordless drill"
    assert render.trade_line(rows[1] | {"you_give": [], "you_get": ["Saw"]}) == "you ask for their Saw"
    assert render.trade_line(rows[1] | {"you_get": ["Saw"], "with_name": "Bob (x7k2q9)"}) == (
        "you offer Jam to Bob (x7k2q9) for their Saw"
    )
    hostile = rows[0] | {"you_get": ["Lad\nder\u202e"], "note": "x\ny"}
    assert "\\n" in render.trades([hostile]) and "\n" not in render.trades([hostile]).splitlines()[0]


def test_peers_show_the_route_and_leave_the_rows_alone():
    rows = [
        {"peer_id": PEER, "swarms": ["Elm Street"], "addr": "/ip4/127.0.0.1/tcp/4001", "relayed": True},
        {"peer_id": PEER2, "swarms": [], "addr": "/ip4/127.0.0.1/tcp/4002", "direction": "in", "since": 12},
    ]
    before = copy.deepcopy(rows)
    text = drawn(render.peers(rows))
    assert rows == before
    lines = text.splitlines()
    assert cells(lines[0]) == ["peer", "swarms", "address", "direction", "route", "since"]
    first, second = cells(lines[2]), cells(lines[3])
    assert first == [PEER, "Elm Street", "/ip4/127.0.0.1/tcp/4001", "-", "relayed", "-"]
    assert second == [PEER2, "", "/ip4/127.0.0.1/tcp/4002", "in", "direct", "12"]


def test_known_peers_show_the_best_address_and_how_many_more():
    rows = [
        {"swarm": "Elm Street", "peer_id": PEER, "addrs": ["/ip4/1.2.3.4/tcp/1", "/ip4/10.0.0.2/tcp/1"]},
        {"swarm": "Elm Street", "peer_id": PEER2, "addrs": [], "last_seen": "2025-01-01", "failures": 2},
    ]
    before = copy.deepcopy(rows)
    lines = drawn(render.known_peers(rows)).splitlines()
    assert rows == before
    assert cells(lines[0]) == ["swarm", "peer", "best address", "more", "last connected", "failed dials"]
    assert cells(lines[2]) == ["Elm Street", PEER, "/ip4/1.2.3.4/tcp/1", "1", "-", "-"]
    assert cells(lines[3]) == ["Elm Street", PEER2, "-", "0", "2025-01-01", "2"]


def test_swarm_table_says_who_can_read_and_post():
    rows = [
        {"name": "Elm Street", "private": False, "id": RECORD},
        {"name": "Oak", "private": True, "id": RECORD},
    ]
    lines = drawn(render.swarms(rows)).splitlines()
    assert cells(lines[0]) == ["name", "who can read and post", "id"]
    assert cells(lines[2]) == ["Elm Street", "OPEN: anyone who connects", "abababababab"]
    assert cells(lines[3]) == ["Oak", "private: invitees only", "abababababab"]


def test_identity_and_status_text():
    assert render.identity({"peer_id": PEER, "addrs": ["/ip4/127.0.0.1/tcp/1", "/ip4/10.0.0.1/tcp/1"]}) == (
        f"{PEER}\n  /ip4/127.0.0.1/tcp/1\n  /ip4/10.0.0.1/tcp/1"
    )
    assert render.identity({"peer_id": PEER, "addrs": []}) == PEER
    status = {
        "peer_id": PEER,
        "reachability": {"state": "local", "reason": "loopback only"},
        "swarms": ["Elm Street", "Oak"],
        "peers": 2,
        "records": 17,
        "networks": [
            {
                "network": "open",
                "port": 4001,
                "peers": 2,
                "swarm_peers": {"Oak": 1, "Elm Street": 2},
                "reachability": {"state": "local"},
                "addrs": ["/ip4/127.0.0.1/tcp/4001"],
            },
            {
                "network": "private Oak",
                "port": 0,
                "peers": 0,
                "swarm_peers": {},
                "reachability": {"state": "unknown"},
                "addrs": [],
            },
        ],
    }
    assert render.status(status) == (
        f"peer id:  {PEER}\n"
        "reach:    local: loopback only\n"
        "swarms:   Elm Street, Oak\n"
        "peers:    2\n"
        "records:  17\n"
        "network:  open port 4001, 2 peers (Elm Street 2, Oak 1 connected); local\n"
        "            /ip4/127.0.0.1/tcp/4001\n"
        "network:  private Oak port -, 0 peers (no swarm connected); unknown"
    )
    bare = {"peer_id": PEER, "swarms": [], "peers": 0, "records": 0}
    assert render.status(bare) == (f"peer id:  {PEER}\nreach:    ?: \nswarms:   -\npeers:    0\nrecords:  0")


def test_item_text():
    item = {
        "id": RECORD,
        "title": "Drill",
        "kind": "lend",
        "state": "available",
        "swarm": "Elm Street",
        "tags": ["tools", "power"],
        "desc": "18 V",
        "where": "u4pruy",
        "author": PEER,
        "trust": 1.0,
        "created": "2025-01-01T00:00:00Z",
        "expires": None,
        "withdrawn": False,
    }
    assert render.item(item).splitlines() == [
        f"id:        {RECORD}",
        "title:     Drill",
        "kind:      lend",
        "state:     available",
        "swarm:     Elm Street",
        "tags:      tools, power",
        "desc:      18 V",
        "where:     u4pruy",
        f"author:    {PEER}",
        "trust:     1.0",
        "created:   2025-01-01T00:00:00Z",
        "expires:   None",
        "withdrawn: False",
    ]


def test_replies_withdrawals_and_vouches():
    assert render.replied("accept", {"id": RECORD, "state": "accepted"}) == "abababababab is now accepted"
    assert render.replied("complete", {"id": RECORD, "state": "completed"}) == "abababababab is now completed"
    assert render.replied("complete", {"id": RECORD, "state": "accepted"}) == (
        "abababababab is now accepted"
        " (done on your side; completed once the other side runs 'meshnode complete' too)"
    )
    assert render.withdrawn({"withdrawn": OTHER}) == "withdrew 0123456789ab"
    assert render.vouched(PEER, 0.8) == f"vouched for {PEER} at +0.80"
    assert render.vouched(PEER, -0.25) == f"vouched for {PEER} at -0.25"


PEER3 = "12D3KooWMbMqzHWkDhSKVqCELeMXEbK6cgxN8QnpYJhN4r7aG2tD"


def vouch_edge(source: str, target: str, level: float, note: str = "", context: str = "") -> dict:
    date = "2026-11-20T10:00:00Z"
    said = {"record": RECORD, "level": level, "context": context, "note": note, "date": date}
    return {"from": source, "to": target, "kind": "vouch", "attestations": [said]} | said


def trade_edge(source: str, target: str, *proposals: str) -> dict:
    return {
        "from": source,
        "to": target,
        "kind": "trade",
        "level": 0.3,
        "proposal": proposals[-1],
        "proposals": list(proposals),
    }


def test_trust_text_names_each_edge_and_each_warning():
    """Behaviour changed on purpose (issue 13): each path is shown edge by edge, with its provenance."""
    data = {
        "peer": PEER2,
        "me": PEER,
        "score": 0.41234,
        "trust": 0.66,
        "paths": [
            {
                "keys": [PEER, PEER3, PEER2],
                "strength": 0.24,
                "edges": [vouch_edge(PEER, PEER3, 0.8, "lent me his drill"), trade_edge(PEER3, PEER2, OTHER)],
            }
        ],
        "distrust": [
            {
                "by": PEER3,
                "takes_off": 0.25,
                "kind": "vouch",
                "level": -0.5,
                "note": "never returned my ladder",
            }
        ],
    }
    assert render.trust(data) == "\n".join(
        [
            f"{PEER2}: 0.41 (0.66 before warnings)",
            "  path 1, strength 0.24:",
            f'    you → {PEER3}: vouched +0.80 "lent me his drill"',
            f"    {PEER3} → {PEER2}: traded (proposal 0123456789ab)",
            f'  warned about by {PEER3}: -0.50 "never returned my ladder" (takes off 0.25)',
        ]
    )


def test_trust_text_without_paths_and_with_ones_own_warning():
    nobody = {"peer": PEER2, "me": PEER, "score": 0.0, "trust": 0.0, "paths": [], "distrust": []}
    assert render.trust(nobody) == f"{PEER2}: 0.00\n  nobody you trust vouched for or traded with them"
    mine = nobody | {"distrust": [{"by": PEER, "takes_off": 1.0, "kind": "vouch", "level": -0.4, "note": ""}]}
    assert render.trust(mine) == f"{PEER2}: 0.00\n  warned about by you: -0.40 (sets the score to 0)"
    assert render.trust({"peer": PEER, "me": PEER, "score": 1.0, "paths": [], "distrust": []}) == "you: 1.00"


def test_edge_text_shows_contexts_combined_vouches_and_repeated_trades():
    assert render.edge_text(vouch_edge(PEER, PEER2, 0.6, context="tools")) == "vouched +0.60 [tools]"
    combined = vouch_edge(PEER, PEER2, 0.25, "fair") | {
        "attestations": [
            {"record": OTHER, "level": -0.5, "context": "lending", "note": "bent", "date": None},
            {"record": RECORD, "level": 1.0, "context": "", "note": "fair", "date": None},
        ]
    }
    assert render.edge_text(combined) == 'vouched +0.25 in all (-0.50 [lending] "bent"; +1.00 "fair")'
    assert render.edge_text(trade_edge(PEER, PEER2, RECORD, OTHER)) == (
        "traded 2 times (latest proposal 0123456789ab)"
    )


def test_notes_and_contexts_are_shown_escaped():
    data = {
        "peer": PEER2,
        "me": PEER,
        "score": 0.8,
        "trust": 0.8,
        "paths": [
            {"keys": [PEER, PEER2], "strength": 0.8, "edges": [vouch_edge(PEER, PEER2, 0.8, "ok\nyou → X")]}
        ],
        "distrust": [],
    }
    shown = render.trust(data)
    assert 'vouched +0.80 "ok\\nyou → X"' in shown and len(shown.splitlines()) == 3
    assert "\u202e" not in render.edge_text(vouch_edge(PEER, PEER2, 0.8, context="\u202etools"))


def test_trusted_lines():
    rows = [
        {
            "peer": PEER2,
            "score": 0.8,
            "direct": True,
            "via": PEER,
            "edge": vouch_edge(PEER, PEER2, 0.8, "drill"),
        },
        {
            "peer": PEER3,
            "score": 0.225,
            "direct": False,
            "via": PEER2,
            "edge": trade_edge(PEER2, PEER3, RECORD),
        },
    ]
    assert render.trusted(rows) == "\n".join(
        [
            f'0.80  {PEER2}  you vouched +0.80 "drill"',
            f"0.23  {PEER3}  via {PEER2}, who traded (proposal abababababab)",
        ]
    )
    assert render.trusted([]).startswith("you trust nobody yet")


def test_vouched_says_what_it_replaces():
    earlier = {"record": RECORD, "level": 0.5, "context": "", "note": "", "date": "2026-11-20T09:00:00Z"}
    assert render.vouched(PEER, 0.9, earlier) == (
        f"vouched for {PEER} at +0.90, replaces your vouch of +0.50 from 2026-11-20"
    )
    assert render.vouched(PEER, 0.2, earlier | {"level": -0.3}).endswith(
        "replaces your warning of -0.30 from 2026-11-20"
    )
    assert render.vouched(PEER, 0.2, None) == f"vouched for {PEER} at +0.20"


def test_swarm_and_node_lines():
    assert render.swarm_created({"name": "Elm Street", "private": True}) == (
        "created private swarm 'Elm Street'\ninvite neighbours with: meshnode swarm invite 'Elm Street'"
    )
    assert render.swarm_created({"name": "Oak", "private": False}) == (
        "created OPEN swarm 'Oak'\ninvite neighbours with: meshnode swarm invite Oak"
    )
    assert render.joined({"name": "Oak"}) == "joined swarm 'Oak'"
    assert render.left("Oak") == "left swarm 'Oak'"
    assert render.warning("no peer reachable") == "warning: no peer reachable"
    assert render.connected({"peer_id": PEER}) == f"connected to {PEER}"
    assert render.initialised(PEER, "/h", True) == (
        f"Created node {PEER}\nhome: /h\nnext: run 'meshnode daemon' to start it"
    )
    assert render.initialised(PEER, "/h", False).startswith(f"Found node {PEER}\n")
    assert render.detached("ready peer_id=x addrs=y", 42, "/h/daemon.log") == (
        "ready peer_id=x addrs=y pid=42 log=/h/daemon.log"
    )


def test_json_forms():
    data = {"title": "Bohrmaschine für Nachbarn", "n": [1, 2]}
    assert render.pretty_json(data) == json.dumps(data, indent=2, ensure_ascii=False)
    assert "für" in render.pretty_json(data)
    assert render.compact_json(data) == '{"title": "Bohrmaschine f\\u00fcr Nachbarn", "n": [1, 2]}'


def test_vouch_level_defaults_to_the_services():
    """``vouch``'s default level is the API's DEFAULT_VOUCH, shown in the help."""
    from meshnode.api.service import DEFAULT_VOUCH
    from meshnode.cli.main import ServiceVouchLevel, app

    assert ServiceVouchLevel()() == DEFAULT_VOUCH
    result = CliRunner().invoke(app, ["vouch", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert f"[default: {DEFAULT_VOUCH}]" in result.output


def test_version_is_printed_without_a_daemon():
    from meshnode import __version__
    from meshnode.cli.main import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"meshnode {__version__}\n"


HOSTILE_TEXT = [
    "[/x] ladder",  # a closing tag with no opening one: rich raised MarkupError
    "[link=https://example.invalid]free drill[/link]",
    "[bold red]URGENT[/]",
    "drill\nauthor:   12D3KooWFake\ntrust:    1.00",
    "gnp.exe\u202e",
    "zero\u200bwidth\ufeff",
    "bell\x07 and \x1b[31mred",
]


@pytest.mark.parametrize("title", HOSTILE_TEXT, ids=repr)
def test_remote_text_is_shown_as_plain_text(title):
    """A table renders every title as the literal characters, with controls and invisible ones escaped."""
    from rich.console import Console

    row = {"id": RECORD, "title": title, "kind": "give", "tags": [], "author": PEER, "trust": 0.0}
    console = Console(width=400, record=True, color_system=None, markup=True)
    console.print(render.items([row], "offers"))
    out = console.export_text()
    assert render.printable(title) in out
    assert title.split("\n")[0] in out or "\n" not in title
    for line in out.splitlines():  # nothing escaped into a line of its own
        assert not line.startswith(("author:", "trust:"))
    assert not any(ch in out for ch in "\u202e\u200b\ufeff\x07\x1b")


@pytest.mark.parametrize("desc", HOSTILE_TEXT, ids=repr)
def test_offer_show_keeps_one_line_per_field(desc):
    item = {"id": RECORD, "title": "Drill", "desc": desc, "author": PEER, "trust": 0.5}
    shown = render.item(item).splitlines()
    assert [line.split(":")[0] for line in shown] == list(render.ITEM_FIELDS)
    assert shown[render.ITEM_FIELDS.index("desc")] == f"desc:      {render.printable(desc)}"


def test_printable_escapes_only_what_is_invisible_or_breaks_lines():
    assert render.printable("Fahrrad für Kinder 🚲") == "Fahrrad für Kinder 🚲"
    assert render.printable("👨\u200d👩\u200d👧") == "👨\u200d👩\u200d👧"  # joiners are kept
    assert render.printable("a\nb\tc\u202ed") == "a\\nb\\tc\\u202ed"


def test_status_shows_storage_and_a_full_disk():
    base = {"peer_id": PEER, "reachability": {}, "swarms": [], "peers": 0, "records": 3}
    ok = {
        "records": 3,
        "bytes": 3 << 20,
        "free_bytes": 10 << 30,
        "disk_floor_bytes": 256 << 20,
        "storing_others": True,
        "swarm_records": 20000,
        "swarm_bytes": 32 << 20,
    }
    assert "storage:  3 records, 3.0 MiB; 10240.0 MiB free (floor 256.0 MiB); at most 20000 records" in (
        render.status(base | {"storage": ok})
    )
    full = render.status(base | {"storage": ok | {"free_bytes": 100 << 20, "storing_others": False}})
    assert "100.0 MiB free (floor 256.0 MiB): DISK NEARLY FULL, storing only this node's own records" in full
    banned = render.status(base | {"gossip": {"bans": 2, "banned_addresses": 1}})
    assert "bans:     2 peers, 1 addresses" in banned


def test_a_refusal_under_json_is_one_json_line():
    line = render.error_json("bad_value", 'expires: expected 0 < days <= 365, found "x"')
    assert "\n" not in line
    assert json.loads(line) == {
        "error": {"code": "bad_value", "message": 'expires: expected 0 < days <= 365, found "x"'}
    }


LONG = "Cordless drill " + "really " * 27 + "long"  # 200 characters
LABEL = "Bartholomew the builder of sheds (" + PEER[-6:] + ")"


@pytest.mark.parametrize("person", [PEER, LABEL, "you"])
def test_every_table_fits_80_columns_with_ids_whole(person):
    """At 80 columns every table fits, each row on one line; record ids (12 digits) and
    people's short ids are whole; a 200-character title or note ends in an ellipsis."""
    from rich.cells import cell_len

    item = {"id": RECORD, "title": LONG, "kind": "service", "state": "available", "swarm": "Elm Street " * 3}
    item |= {
        "tags": ["tools", "power", "garden"],
        "author": person,
        "trust": 0.9,
        "expires": "2027-02-28T14:38:15Z",
    }
    trade = {"id": OTHER, "with": PEER, "with_name": person, "state": "proposed", "proposed_by": "them"}
    trade["waiting_for"] = "you"
    trade |= {"you_give": [LONG], "you_get": ["Ladder"], "note": LONG}
    peer = {
        "peer_id": person,
        "swarms": ["Elm Street"],
        "addr": "/ip4/192.168.100.200/tcp/40001",
        "since": 12,
    }
    known = {"swarm": "Elm Street", "peer_id": person, "addrs": ["/ip4/192.168.100.200/tcp/40001"] * 3}
    swarm = {"name": LONG, "private": False, "id": RECORD}
    tables = {
        "items": (render.items([item, item], "offers"), [RECORD[:12]]),
        "peers": (render.peers([peer]), []),
        "known": (render.known_peers([known]), []),
        "swarms": (render.swarms([swarm]), [RECORD[:12]]),
    }
    said = render.trades([trade], width=80).splitlines()  # lines, not a table: the sentence is cut
    assert len(said) == 2 and all(cell_len(line) <= 80 for line in said), said
    assert said[0].startswith(f"{OTHER[:12]}  ") and said[0].endswith(" — proposed, waiting for you"), said
    assert "…" in said[0] and "…" in said[1] and "long" not in "".join(said), said
    short_person = person if len(person) <= render.PERSON_WIDTH else PEER[-6:]
    for name, (shown, ids) in tables.items():
        text = drawn(shown, width=80)
        lines = text.splitlines()
        assert all(cell_len(line) <= 80 for line in lines), (name, text)
        assert len(lines) == 2 + (2 if name == "items" else 1), (name, text)  # one line a row
        for short in ids:
            assert re.search(rf"(^|\s){short}(\s|$)", lines[2]), (name, text)
        if name != "swarms":
            assert re.search(rf"(^|\s)\S*{re.escape(short_person)}\)?(\s|$)", lines[2]), (name, text)
        if name in ("items", "swarms"):
            assert "…" in lines[2] and "long" not in text, (name, text)


def test_a_long_label_keeps_its_short_id_and_a_peer_id_shortens_to_its_suffix():
    assert render.short_person(PEER) == PEER[-6:]
    assert render.short_person("Bob (x7k2q9)") == "Bob (x7k2q9)"
    cut = render.short_person(LABEL)
    assert cut.endswith(f"… ({PEER[-6:]})") and len(cut) <= render.PERSON_WIDTH and cut.startswith("Bartho")
    assert render.short_person("a petname " * 5) == "a petname a petname…"


def test_the_least_needed_columns_go_first_at_80_columns():
    item = {"id": RECORD, "title": "Drill", "kind": "lend", "state": "available", "swarm": "Elm Street"}
    item |= {"tags": ["tools"], "author": PEER, "trust": 0.5, "expires": "2027-02-28T14:38:15Z"}
    wide = cells(drawn(render.items([item], "offers"), width=200).splitlines()[0])
    assert wide == [c.title for c in render.ITEM_COLUMNS]
    narrow = cells(drawn(render.items([item], "offers"), width=80).splitlines()[0])
    assert narrow[:4] == ["id", "title", "kind", "state"] and "expires" not in narrow and "author" in narrow
