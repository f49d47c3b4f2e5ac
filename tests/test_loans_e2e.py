"""End to end: a loan through the CLI of two real daemons (lend, hand over, extend, return; overdue).

Alice lends her drill (at most 7 days, a deposit asked). Bob asks for it, Alice
accepts, Bob says he received it (with its condition), Alice extends the loan by
three days and then says it is back: the drill is available again and the loan
is listed as returned. A second loan of one day reminds both of them that it is
due, and once their clocks are two days later (the daemons restarted with
``MESHNODE_CLOCK_OFFSET_MS``), both inboxes say it is overdue.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.daemonutil import Daemon, wait_for

pytestmark = pytest.mark.timeout(300)
DAY_MS = 86_400_000


def _state(d: Daemon, proposal: str) -> str:
    return d.json("proposal", proposal)["state"]


def _day(iso: str) -> dt.date:
    return dt.date.fromisoformat(iso[:10])


def _neighbours(daemons) -> tuple[Daemon, Daemon]:
    alice, bob = daemons("alice"), daemons("bob")
    alice.cli("swarm", "create", "Elm Street")
    bob.cli("swarm", "join", alice.cli("swarm", "invite", "Elm Street").stdout.strip())
    return alice, bob


def _lend(alice: Daemon, bob: Daemon, title: str, days: int) -> str:
    """Alice offers ``title`` to lend for ``days``; Bob asks for it; Alice accepts. The proposal id."""
    item = alice.json(
        "offer", "add", title, "--kind", "lend", "--max-days", str(days), "--deposit", "20 EUR"
    )["id"]
    wait_for(lambda: item in {o["id"] for o in bob.json("offer", "list")}, timeout=30, what=title)
    proposal = bob.json("propose", item, "--note", "for the shelves")["id"]
    wait_for(lambda: proposal in {p["id"] for p in alice.json("proposals")}, timeout=30, what="the proposal")
    alice.cli("accept", proposal)
    wait_for(lambda: _state(bob, proposal) == "accepted", timeout=30, what="Bob to see the accept")
    return proposal


def test_lend_hand_over_extend_return(daemons):
    alice, bob = _neighbours(daemons)
    proposal = _lend(alice, bob, "Drill", 7)
    drill = alice.json("proposal", proposal)["take"][0]
    shown = bob.cli("offer", "show", drill).stdout
    assert 'for up to 7 days, deposit "20 EUR"' in shown

    waiting = bob.cli("loans").stdout
    assert "you borrowed Drill from" in waiting and "run 'meshnode received'" in waiting

    said = bob.cli("received", proposal, "--note", "one scratch on the case").stdout
    assert "is now handed over, due back" in said
    wait_for(lambda: _state(alice, proposal) == "handed over", timeout=30, what="Alice to see the handover")
    lent = alice.json("loans")
    assert [(row["role"], row["items"], row["state"]) for row in lent] == [("lent", ["Drill"], "handed over")]
    due = _day(lent[0]["due"])
    assert due == _day(lent[0]["handed_over"]) + dt.timedelta(days=7)
    assert "you lent Drill to" in alice.cli("loans").stdout
    assert "lent out" in {o["state"] for o in alice.json("offer", "list", "--all") if o["id"] == drill}
    history = alice.cli("proposal", proposal).stdout
    assert 'received it "one scratch on the case"' in history

    # only the lender extends or says it is back; the borrower is refused with one line
    refused = bob.cli("returned", proposal, check=False)
    assert refused.returncode != 0 and "only the lender" in refused.stderr and refused.stderr.count("\n") == 1
    refused = alice.cli("extend", proposal, "--days", "0", check=False)
    assert refused.returncode == 64 and "days" in refused.stderr

    alice.cli("extend", proposal, "--days", "3", "--note", "keep it for the weekend")
    wait_for(
        lambda: _day(bob.json("loans")[0]["due"]) == due + dt.timedelta(days=3), timeout=30, what="the extend"
    )
    wait_for(
        lambda: any("extended the loan" in n["text"] for n in bob.json("inbox", "--all")["notices"]),
        timeout=30,
        what="the extend in Bob's inbox",
    )

    new_due = (due + dt.timedelta(days=3)).isoformat()
    assert f'extended the loan to {new_due} "keep it for the weekend"' in bob.cli("proposal", proposal).stdout

    alice.cli("returned", proposal, "--note", "thanks!")
    wait_for(lambda: _state(bob, proposal) == "returned", timeout=30, what="Bob to see the return")
    assert alice.json("loans") == [] and bob.json("loans") == []
    assert [row["state"] for row in bob.json("loans", "--all")] == ["returned"]
    assert drill in {o["id"] for o in alice.json("offer", "list")}  # available again
    wait_for(
        lambda: "traded" in bob.cli("trust", alice.peer_id).stdout, timeout=30, what="the trade in trust"
    )


def test_a_loan_reminds_when_due_and_when_overdue(daemons):
    alice, bob = _neighbours(daemons)
    proposal = _lend(alice, bob, "Ladder", 1)
    bob.cli("received", proposal)
    wait_for(lambda: _state(alice, proposal) == "handed over", timeout=30, what="the handover")

    def reminded(d: Daemon, kind: str) -> list[dict]:
        return [
            n
            for n in d.json("inbox", "--all")["notices"]
            if n["kind"] == kind and n["about"].startswith(proposal)
        ]

    for d in (alice, bob):  # due within a day: both are reminded
        wait_for(lambda d=d: reminded(d, "due"), timeout=30, what="the due reminder")
    assert "which you borrowed from" in reminded(bob, "due")[0]["text"]
    assert "lent to" in reminded(alice, "due")[0]["text"]

    for d in (alice, bob):  # two days later
        d.stop()
        d.env["MESHNODE_CLOCK_OFFSET_MS"] = str(2 * DAY_MS)
        d.start()
    for d in (alice, bob):
        wait_for(lambda d=d: reminded(d, "overdue"), timeout=30, what="the overdue reminder")
        assert "it is overdue" in reminded(d, "overdue")[0]["text"]
        assert "overdue" in d.cli("inbox", "--all").stdout
    rows = bob.json("loans")
    assert rows[0]["state"] == "overdue" and rows[0]["days_overdue"] >= 1
    assert "overdue, due back" in bob.cli("loans").stdout
