"""End to end: trust you can read, with real daemons driven through the meshnode CLI.

Alice vouches for Bob with a note, Bob and Carol complete a trade, and
Alice's ``trust CAROL`` names both the vouch (its note) and the trade (its
proposal); ``trusted`` says how each peer is reached; a second vouch says
which one it replaces; Alice's own warning is shown with its note.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.daemonutil import Daemon, wait_for

pytestmark = pytest.mark.timeout(180)


def state_of(d: Daemon, proposal: str) -> str | None:
    return next((p["state"] for p in d.json("proposals") if p["id"] == proposal), None)


def test_trust_names_the_vouch_and_the_trade_it_comes_from(daemons):
    alice, bob, carol = daemons("alice"), daemons("bob"), daemons("carol")
    alice.cli("swarm", "create", "Elm Street")
    code = alice.cli("swarm", "invite", "Elm Street").stdout.strip()
    bob.cli("swarm", "join", code)
    carol.cli("swarm", "join", code)

    first = alice.json("vouch", bob.peer_id, "--level", "0.8", "--note", "lent me his drill")
    assert first["replaces"] is None

    # Bob and Carol complete a trade: Carol asks for Bob's ladder.
    ladder = bob.json("offer", "add", "Ladder", "--kind", "lend")["id"]
    wait_for(
        lambda: ladder in {o["id"] for o in carol.json("offer", "list")}, timeout=15, what="Carol's ladder"
    )
    proposal = carol.json("propose", ladder, "--note", "for the gutter")["id"]
    wait_for(lambda: state_of(bob, proposal) == "proposed", timeout=15, what="Bob to see the proposal")
    bob.cli("accept", proposal)
    wait_for(lambda: state_of(carol, proposal) == "accepted", timeout=15, what="Carol to see the accept")
    bob.cli("complete", proposal)
    carol.cli("complete", proposal)

    # Alice trusts Carol through her vouch for Bob and Bob's trade with Carol.
    wait_for(lambda: alice.json("trust", carol.peer_id)["paths"], timeout=20, what="Alice to trust Carol")
    explained = alice.json("trust", carol.peer_id)
    assert explained["score"] > 0 and explained["distrust"] == []
    [path] = explained["paths"]
    assert path["keys"] == [alice.peer_id, bob.peer_id, carol.peer_id]
    vouch, trade = path["edges"]
    assert (vouch["kind"], vouch["from"], vouch["to"]) == ("vouch", alice.peer_id, bob.peer_id)
    assert (vouch["level"], vouch["note"], vouch["record"]) == (0.8, "lent me his drill", first["id"])
    assert (trade["kind"], trade["from"], trade["to"]) == ("trade", bob.peer_id, carol.peer_id)
    assert (trade["proposal"], trade["proposals"]) == (proposal, [proposal])

    text = alice.cli("trust", carol.peer_id).stdout  # people without a nickname: their short id
    bob_short, carol_short = bob.peer_id[-6:], carol.peer_id[-6:]
    assert f'you → {bob_short}: vouched +0.80 "lent me his drill"' in text, text
    assert f"{bob_short} → {carol_short}: traded (proposal {proposal[:12]})" in text, text

    ranked = alice.json("trusted")
    assert [row["peer"] for row in ranked] == [bob.peer_id, carol.peer_id]
    assert (ranked[0]["direct"], ranked[1]["direct"], ranked[1]["via"]) == (True, False, bob.peer_id)
    listed = alice.cli("trusted", "--limit", "1").stdout
    best = f"{ranked[0]['score']:.2f}"  # above 0.80: trust also comes back from Carol's trade with Bob
    assert listed.strip() == f'{best}  {bob_short}  you vouched +0.80 "lent me his drill"', listed

    # A new vouch for Bob says which one it replaces.
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    said = alice.cli("vouch", bob.peer_id, "--level", "0.9", "--note", "and fixed my fence").stdout
    assert said.strip() == f"vouched for {bob.peer_id} at +0.90, replaces your vouch of +0.80 from {today}"
    again = alice.json("vouch", bob.peer_id, "--level", "0.5")
    assert (again["replaces"]["level"], again["replaces"]["note"]) == (0.9, "and fixed my fence")

    # Alice's own warning about Carol: shown with its note, and it sets the score to 0.
    alice.cli("vouch", carol.peer_id, "--level", "-0.5", "--note", "never returned my ladder")
    warned = alice.json("trust", carol.peer_id)
    assert warned["score"] == 0.0
    assert [(w["by"], w["level"], w["note"]) for w in warned["distrust"]] == [
        (alice.peer_id, -0.5, "never returned my ladder")
    ]
    text = alice.cli("trust", carol.peer_id).stdout
    assert 'warned about by you: -0.50 "never returned my ladder" (sets the score to 0)' in text, text


def test_trusted_refuses_a_bad_limit(daemons):
    alice = daemons("alice")
    assert alice.cli("trusted").stdout.startswith("you trust nobody yet")
    for bad in ("0", "1001"):
        result = alice.cli("trusted", "--limit", bad, check=False)
        assert result.returncode == 64 and "limit" in result.stderr, result.stderr
