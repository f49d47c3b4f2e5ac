"""End to end, issue 15 item 4: a pool reaches its minimum with three pledgers and closes on time.

Through the real CLI of three daemons: Alice organises a pool of apple crates
(min 10, max 30, closing a minute ahead); Alice, Bob and Carol pledge 4
each (Bob pledges 2 first and changes it to 4); all three nodes see it
``reached`` and the pledgers hear of it in their inbox; once the close time
passes (waiting on the state, no fixed sleep) all three see it ``closed``
and hear of that too; a pledge after the close is refused; Alice confirms
the order (the pledgers hear of it) and marks it delivered, and the shares
are the same on every node.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.daemonutil import wait_for

pytestmark = pytest.mark.timeout(300)

CLOSES_IN_S = 60


def pool_of(d, pool_id: str) -> dict | None:
    out = d.cli("pool", "show", pool_id, "--json", check=False)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)


def state_of(d, pool_id: str) -> str | None:
    found = pool_of(d, pool_id)
    return found["state"] if found is not None else None


def kinds(d) -> list[str]:
    return [n["kind"] for n in d.json("inbox", "--all")["notices"]]


def test_a_pool_reaches_its_minimum_and_closes_on_time(daemons):
    alice, bob, carol = daemons("alice"), daemons("bob"), daemons("carol")
    alice.cli("swarm", "create", "Elm Street")
    code = alice.cli("swarm", "invite", "Elm Street").stdout.strip()
    bob.cli("swarm", "join", code)
    carol.cli("swarm", "join", code)

    # Refused before anything is signed: a close in the past, max below min, a bad price.
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).strftime("%Y-%m-%d")
    for args, words in (
        (("--closes", "2020-01-01", "--min", "10", "--max", "30", "--unit-price", "18"), "in the past"),
        (("--closes", "2026-12-15T18:00:00", "--min", "10", "--max", "30", "--unit-price", "18"), "timezone"),
        (("--closes", "2099-12-15", "--min", "10", "--max", "30", "--unit-price", "18"), "365 days"),
        (("--closes", "tomorrow", "--min", "10", "--max", "30", "--unit-price", "18"), "a date like"),
        (("--closes", soon, "--min", "10", "--max", "5", "--unit-price", "18"), "max"),
        (("--closes", soon, "--min", "10", "--max", "30", "--unit-price", "1.234"), "unit price"),
    ):
        out = alice.cli("pool", "add", "Apples", "--from", "Ferme du Coin", *args, check=False)
        assert out.returncode == 64 and words in out.stderr, (args, out.returncode, out.stderr)
    assert alice.json("pools", "--all") == []

    closes = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=CLOSES_IN_S)
    pool_id = alice.cli(
        "pool",
        "add",
        "Organic apples, 20 kg crates",
        "--from",
        "Ferme du Coin",
        "--unit-price",
        "18",
        "--min",
        "10",
        "--max",
        "30",
        "--closes",
        closes.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--unit",
        "crate",
    ).stdout.strip()
    assert len(pool_id) == 64
    short = pool_id[:12]
    for d in (alice, bob, carol):
        wait_for(lambda d=d: state_of(d, short) == "open", timeout=30, what=f"{d.home.name} sees the pool")

    listed = bob.json("pools")
    assert [p["id"] for p in listed] == [pool_id]
    assert listed[0]["organiser_name"] != "you" and listed[0]["unit_price"] == 1800
    assert listed[0]["currency"] == "hours" and listed[0]["closes"] == closes.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "Organic apples, 20 kg crates from Ferme du Coin, 18.00 hours a crate" in bob.cli("pools").stdout

    alice.cli("pledge", short, "4")
    bob.cli("pledge", short, "2")
    carol.cli("pledge", short, "4")
    wait_for(lambda: pool_of(bob, short)["pledged"] == 10, timeout=30, what="Bob sees 10 pledged")
    bob.cli("pledge", short, "4")  # Bob changes his pledge: he goes to the back of the line
    again = bob.cli("pledge", short, "4", check=False)
    assert again.returncode == 64 and "already pledged 4" in again.stderr, again.stderr
    not_his = bob.cli("pool", "confirm", short, check=False)
    assert not_his.returncode == 77 and "only its organiser may" in not_his.stderr, not_his.stderr
    early = alice.cli("pool", "confirm", short, check=False)
    assert early.returncode == 77 and "closes at" in early.stderr, early.stderr

    for d in (alice, bob, carol):
        wait_for(
            lambda d=d: (
                (p := pool_of(d, short)) is not None and p["state"] == "reached" and p["pledged"] == 12
            ),
            timeout=30,
            what=f"{d.home.name}: reached with 12 pledged",
        )
    for d in (alice, bob, carol):
        wait_for(lambda d=d: "poolreached" in kinds(d), timeout=30, what=f"poolreached for {d.home.name}")
    assert "reached its minimum" in bob.cli("inbox", "--all").stdout

    # The close: each node notices it on its own, from its clock (no record arrives).
    for d in (alice, bob, carol):
        wait_for(
            lambda d=d: state_of(d, short) == "closed",
            timeout=CLOSES_IN_S + 60,
            what=f"{d.home.name}: closed",
        )
    for d in (alice, bob, carol):
        wait_for(lambda d=d: "poolclosed" in kinds(d), timeout=30, what=f"poolclosed for {d.home.name}")
    assert kinds(carol).count("poolreached") == 1 and kinds(carol).count("poolclosed") == 1
    for d in (alice, bob, carol):  # on time: the daemon looks again when the pool closes
        [at] = [n["at"] for n in d.json("inbox", "--all")["notices"] if n["kind"] == "poolclosed"]
        late_by = dt.datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC) - closes
        assert dt.timedelta(0) <= late_by <= dt.timedelta(seconds=5), (d.home.name, at, closes)
    late = carol.cli("pledge", short, "6", check=False)
    assert late.returncode == 77 and "it closed at" in late.stderr, late.stderr
    assert "pledge" not in pool_of(carol, short)["you_can"]

    shown = alice.json("pool", "confirm", short, "--note", "ordered, Saturday at the market")
    assert shown["state"] == "confirmed"
    for d in (bob, carol):
        wait_for(lambda d=d: state_of(d, short) == "confirmed", timeout=30, what=f"{d.home.name}: confirmed")
    for d in (bob, carol):
        wait_for(
            lambda d=d: any(
                n["kind"] == "poolmove" and "confirmed the order of Organic apples" in n["text"]
                for n in d.json("inbox", "--all")["notices"]
            ),
            timeout=30,
            what=f"the confirm in {d.home.name}'s inbox",
        )
    alice.cli("pool", "delivered", short)
    for d in (alice, bob, carol):
        wait_for(lambda d=d: state_of(d, short) == "delivered", timeout=30, what=f"{d.home.name}: delivered")

    views = [pool_of(d, short) for d in (alice, bob, carol)]
    for view in views:
        shares = [(s["pledged"], s["quantity"], s["cost"], s["partly"]) for s in view["shares"]]
        assert shares == [(4, 4, 7200, False)] * 3, view["shares"]
        assert view["pledged"] == 12 and view["served"] == 12
    order = [s["member"] for s in views[0]["shares"]]
    assert order[-1] == bob.peer_id, "Bob changed his pledge: he is served last"
    assert views[1]["my_quantity"] == 4 and views[1]["my_cost_text"] == "72.00"
    text = bob.cli("pool", "show", short).stdout
    assert "state: delivered" in text and "you pledged 4: you get 4 for 72.00 hours" in text, text
    assert bob.json("pools") == [], "a delivered pool is off the default list"
    assert "poolmove" not in kinds(alice), "her own moves are no notice to the organiser"
    assert [p["id"] for p in bob.json("pools", "--all")] == [pool_id]

    # Settling in the swarm's currency: Bob pays part of his share to Alice, naming the pool.
    alice.cli("vouch", bob.peer_id, "--note", "neighbour")  # her trust gives Bob credit on her node
    paid = bob.json("pay", alice.peer_id[-6:], "2.5", "--for", short, "--memo", "apples, first part")
    assert paid["for"] == pool_id and paid["amount"] == "2.50"

    def bobs_share_paid() -> str:
        [share] = [s for s in pool_of(alice, short)["shares"] if s["member"] == bob.peer_id]
        return share["paid_text"]

    wait_for(lambda: bobs_share_paid() == "2.50", timeout=60, what="Alice sees Bob's payment for the pool")
    assert "paid 2.50" in alice.cli("pool", "show", short).stdout
    wrong = carol.cli("pay", bob.peer_id[-6:], "1", "--for", short, check=False)
    assert wrong.returncode != 0 and "pay the organiser" in wrong.stderr
