"""End to end, through the CLI: trades that close, their history, offer edits, leaving a swarm."""

from __future__ import annotations

import pytest

from tests.daemonutil import Daemon, wait_for

pytestmark = pytest.mark.timeout(180)


def offer_ids(d: Daemon, *extra: str) -> set[str]:
    return {o["id"] for o in d.json("offer", "list", *extra)}


def trade(d: Daemon, pid: str) -> dict | None:
    return next((p for p in d.json("proposals") if p["id"] == pid), None)


def state(d: Daemon, pid: str) -> str | None:
    found = trade(d, pid)
    return None if found is None else found["state"]


@pytest.fixture
def neighbours(daemons) -> tuple[Daemon, Daemon, str]:
    a, b = daemons("alice"), daemons("bob")
    a.cli("swarm", "create", "Elm Street")
    code = a.cli("swarm", "invite", "Elm Street").stdout.strip()
    b.cli("swarm", "join", code)
    return a, b, code


def test_a_proposal_on_an_offer_then_withdrawn_closes_on_both_sides(neighbours):
    a, b, _ = neighbours
    saw = a.json("offer", "add", "Saw", "--kind", "give")["id"]
    wait_for(lambda: saw in offer_ids(b), timeout=10, what="B to see the saw")
    pid = b.json("propose", saw[:10], "--note", "for my shed")["id"]
    wait_for(lambda: state(a, pid) == "proposed", timeout=10, what="A to see the proposal")
    a.cli("offer", "withdraw", saw[:10])
    for d in (a, b):
        wait_for(lambda d=d: state(d, pid) == "unavailable", timeout=10, what="the trade to close")
        assert trade(d, pid)["closed_because"] == "Saw was withdrawn"
    shown = b.cli("proposal", pid[:10]).stdout
    assert "state: unavailable (Saw was withdrawn)" in shown, shown
    late = a.cli("accept", pid[:10], check=False)
    assert late.returncode != 0 and "unavailable" in late.stderr, late.stderr


def test_proposal_shows_every_move_with_its_note(neighbours):
    a, b, _ = neighbours
    drill = a.json("offer", "add", "Cordless drill", "--kind", "lend")["id"]
    ladder = b.json("offer", "add", "Ladder", "--kind", "lend")["id"]
    wait_for(lambda: drill in offer_ids(b) and ladder in offer_ids(a), timeout=10, what="both offers")
    pid = b.json("propose", drill[:10], "--note", "just the drill?")["id"]
    wait_for(lambda: state(a, pid) == "proposed", timeout=10, what="A to see the proposal")
    a.cli("counter", pid[:10], "--give", drill[:10], "--take", ladder[:10], "--note", "for your ladder")
    wait_for(lambda: state(b, pid) == "countered", timeout=10, what="B to see the counter")
    b.cli("accept", pid[:10], "--note", "deal")
    wait_for(lambda: state(a, pid) == "accepted", timeout=10, what="A to see the accept")
    for d in (a, b):
        data = d.json("proposal", pid[:10])
        assert data["id"] == pid and data["state"] == "accepted" and data["waiting_for"] == "you"
        moves = [(m["action"], m["who"], m["note"]) for m in data["moves"]]
        assert moves == [
            ("propose", b.peer_id, "just the drill?"),
            ("counter", a.peer_id, "for your ladder"),
            ("accept", b.peer_id, "deal"),
        ]
        for m in data["moves"]:
            assert (m["who_name"] == "you") == (m["who"] == d.peer_id)
        assert data["not_counted"] == []
    counter = a.json("proposal", pid[:10])["moves"][1]
    assert (counter["you_give"], counter["you_get"]) == (["Cordless drill"], ["Ladder"])
    propose = b.json("proposal", pid[:10])["moves"][0]
    assert (propose["you_give"], propose["you_get"]) == ([], ["Cordless drill"])
    shown = a.cli("proposal", pid[:10]).stdout
    for words in ('"just the drill?"', '"for your ladder"', '"deal"', "state: accepted"):
        assert words in shown, shown
    assert a.cli("proposal", "00000000", check=False).returncode != 0


def test_offer_edit_is_seen_by_a_neighbour(neighbours):
    a, b, _ = neighbours
    bread = a.json("offer", "add", "Bread", "--kind", "lend", "--tag", "kitchen")["id"]
    wait_for(lambda: bread in offer_ids(b), timeout=10, what="B to see the offer")
    out = a.json("offer", "edit", bread[:10], "--title", "Bread maker", "--tags", "kitchen, baking")
    assert out["updated"] == bread
    for d in (a, b):
        wait_for(
            lambda d=d: d.json("offer", "show", bread[:10])["title"] == "Bread maker",
            timeout=10,
            what="the edit to show",
        )
        shown = d.json("offer", "show", bread[:10])
        assert shown["tags"] == ["baking", "kitchen"] and shown["kind"] == "lend"
    nothing = a.cli("offer", "edit", bread[:10], check=False)
    assert nothing.returncode != 0 and "nothing to change" in nothing.stderr, nothing.stderr
    theirs = b.cli("offer", "edit", bread[:10], "--title", "Mine now", check=False)
    assert theirs.returncode != 0 and "only its author" in theirs.stderr, theirs.stderr
    a.cli("offer", "withdraw", bread[:10])
    gone = a.cli("offer", "edit", bread[:10], "--title", "Again", check=False)
    assert gone.returncode != 0 and "withdrawn" in gone.stderr, gone.stderr
    want = a.json("want", "add", "Bike pump")["id"]
    a.cli("want", "edit", want[:10], "--desc", "for a Presta valve")
    assert a.json("want", "show", want[:10])["desc"] == "for a Presta valve"


def test_leaving_a_swarm_hides_its_records_and_rejoining_shows_them(neighbours):
    a, b, code = neighbours
    drill = a.json("offer", "add", "Cordless drill", "--kind", "lend")["id"]
    pump = a.json("want", "add", "Bike pump")["id"]
    wait_for(lambda: drill in offer_ids(b), timeout=10, what="B to see the drill")
    wait_for(lambda: pump in {w["id"] for w in b.json("want", "list")}, timeout=10, what="the want")
    pid = b.json("propose", drill[:10])["id"]
    assert trade(b, pid) is not None
    b.json("want", "add", "Drill", "--kind", "lend")  # matches A's drill: a notice in B's inbox
    wait_for(lambda: b.json("inbox", "--all")["notices"], timeout=10, what="the match in B's inbox")
    b.cli("swarm", "leave", "Elm Street")
    assert b.json("offer", "list", "--all") == [] and b.json("want", "list") == []
    assert b.json("proposals") == [] and b.json("inbox", "--all")["notices"] == []
    hidden = b.cli("offer", "show", drill[:10], check=False)
    assert hidden.returncode != 0 and "left" in hidden.stderr, hidden.stderr
    b.cli("swarm", "join", code)
    assert drill in offer_ids(b) and trade(b, pid) is not None
    assert [n["kind"] for n in b.json("inbox", "--all")["notices"]] == ["match"]
    assert b.json("offer", "show", drill[:10])["title"] == "Cordless drill"
