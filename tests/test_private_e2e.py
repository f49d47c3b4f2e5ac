"""End to end: a private part that only the two parties read, carried by a third node while one is away.

Alice offers her ladder and goes offline. Bob proposes for it with
``--private "Elm St 12, ring twice"`` and goes offline too; Carol's node has
stored the proposal. Alice comes back, gets the proposal from Carol (the only
one online) and reads Bob's private text; Carol stores it but cannot read it
(the plaintext is not in her store, and she is no party). Alice accepts with a
private answer and goes away again; Bob reads it when he is back, from Carol.
"""

from __future__ import annotations

import sqlite3

import pytest

from meshnode.home import Home
from tests.daemonutil import Daemon, wait_for

pytestmark = pytest.mark.timeout(300)

SECRET = "Elm St 12, ring twice"
ANSWER = "call me on 555-0199"


def proposal_ids(d: Daemon) -> set[str]:
    return {p["id"] for p in d.json("proposals")}


def stored_raw(d: Daemon, record_id: str) -> bytes | None:
    conn = sqlite3.connect(f"file:{Home(d.home).database}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT raw FROM records WHERE id = ?", (bytes.fromhex(record_id),)).fetchone()
    finally:
        conn.close()
    return None if row is None else bytes(row[0])


def test_a_private_part_is_read_by_the_two_parties_only_after_a_third_node_carried_it(daemons):
    alice, bob, carol = daemons("alice"), daemons("bob"), daemons("carol")
    alice.cli("swarm", "create", "Elm Street")
    code = alice.cli("swarm", "invite", "Elm Street").stdout.strip()
    bob.cli("swarm", "join", code)
    carol.cli("swarm", "join", code)
    ladder = alice.json("offer", "add", "Ladder", "--kind", "lend")["id"]
    for d in (bob, carol):
        wait_for(lambda d=d: ladder in {o["id"] for o in d.json("offer", "list")}, timeout=20, what="ladder")
    wait_for(lambda: bob.peer_id in {p["peer_id"] for p in carol.json("peers")}, timeout=30, what="Bob-Carol")

    alice.stop()  # Alice is away
    proposal = bob.json("propose", ladder, "--note", "Saturday?", "--private", SECRET)["id"]
    wait_for(lambda: stored_raw(carol, proposal) is not None, timeout=30, what="Carol to store the proposal")
    bob.stop()  # Bob is away too: only Carol holds the proposal now

    alice.start()
    wait_for(lambda: proposal in proposal_ids(alice), timeout=60, what="Alice to get the proposal from Carol")
    seen = alice.json("proposal", proposal)
    assert seen["moves"][0]["private"] == SECRET and seen["moves"][0]["note"] == "Saturday?"
    assert f'[private: "{SECRET}"]' in alice.cli("proposal", proposal).stdout

    # Carol carried it but cannot read it.
    raw = stored_raw(carol, proposal)
    assert raw is not None and SECRET.encode() not in raw
    refused = carol.cli("proposal", proposal, check=False)
    assert refused.returncode == 77 and "no party" in refused.stderr

    # Alice answers with her address and goes away again; Bob, the borrower, reads it when he
    # is back, from Carol, the only one online, who carried the accept without reading it.
    accepted = alice.json("accept", proposal, "--private", ANSWER)
    assert accepted["state"] == "accepted"
    accept_id = alice.json("proposal", proposal)["moves"][-1]["id"]
    wait_for(lambda: stored_raw(carol, accept_id) is not None, timeout=30, what="Carol to store the accept")
    assert ANSWER.encode() not in (stored_raw(carol, accept_id) or b"")
    alice.stop()
    bob.start()
    wait_for(
        lambda: bob.json("proposal", proposal)["state"] == "accepted", timeout=60, what="Bob: the accept"
    )
    moves = bob.json("proposal", proposal)["moves"]
    assert [m.get("private") for m in moves] == [SECRET, ANSWER]


def test_a_private_part_is_refused_when_too_long_and_changes_nothing(daemons):
    alice, bob = daemons("alice"), daemons("bob")
    alice.cli("swarm", "create", "Elm Street")
    bob.cli("swarm", "join", alice.cli("swarm", "invite", "Elm Street").stdout.strip())
    ladder = alice.json("offer", "add", "Ladder")["id"]
    wait_for(lambda: ladder in {o["id"] for o in bob.json("offer", "list")}, timeout=20, what="the ladder")
    refused = bob.cli("propose", ladder, "--private", "x" * 5000, check=False)
    assert refused.returncode == 64 and "private" in refused.stderr and refused.stderr.count("\n") == 1
    refused = bob.cli("propose", ladder, "--private", "ring\x1b[2J", check=False)
    assert refused.returncode == 64, refused.stderr
    assert bob.json("proposals") == []
