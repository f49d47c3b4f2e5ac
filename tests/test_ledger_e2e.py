"""End to end: mutual credit with real daemons driven through the meshnode CLI.

1. Alice helps Bob for 2 hours: her ``service`` offer has a price of 2; Bob
   proposes, Alice accepts, both complete, and Bob's inbox asks him to pay.
   Bob pays 2 hours for the trade; all three nodes show Alice at +2.00 and
   Bob at -2.00, and Bob's to-pay notice is not repeated.
2. Bob double spends while partitioned: he backs up his home, pays Alice 1,
   stops, restores the backup (his store forgets that payment), and, with
   Alice away, pays Carol 1 from the same place of his chain. Carol's node
   counts it. Once Alice is back and the three sync, every node holds the
   proof, Bob's credit limit is 0 everywhere, neither place-2 payment
   counts, and Carol (a victim) has a ``fork`` notice saying one of the two
   was to her; ``meshnode trust Bob`` shows the proof.
"""

from __future__ import annotations

import shutil

import pytest

from tests.daemonutil import Daemon, wait_for

pytestmark = pytest.mark.timeout(300)


def link(a: Daemon, b: Daemon) -> None:
    """``a`` dials ``b`` (after a restart their ports are new: the address book cannot know them)."""
    addr = b.addrs[0] if "/p2p/" in b.addrs[0] else f"{b.addrs[0]}/p2p/{b.peer_id}"
    a.cli("connect", addr)


def balance(d: Daemon, who: Daemon) -> dict:
    [row] = d.json("balance", who.peer_id)
    return row


def balances_are(d: Daemon, alice: Daemon, bob: Daemon, a: str, b: str) -> bool:
    return balance(d, alice)["balance"] == a and balance(d, bob)["balance"] == b


def notices(d: Daemon, kind: str) -> list[dict]:
    return [n for n in d.json("inbox", "--all")["notices"] if n["kind"] == kind]


def test_alice_helps_bob_bob_pays_and_a_partitioned_double_spend_is_proven_everywhere(daemons, tmp_path):
    alice, bob, carol = daemons("alice"), daemons("bob"), daemons("carol")
    alice.cli("swarm", "create", "Elm Street")
    code = alice.cli("swarm", "invite", "Elm Street").stdout.strip()
    bob.cli("swarm", "join", code)
    carol.cli("swarm", "join", code)
    for d in (alice, bob, carol):
        for other in (alice, bob, carol):
            if other is not d:
                d.cli("vouch", other.peer_id, "--note", "neighbour")
    alice.cli("swarm", "currency", "Elm hours", "--unit", "hours")
    for d in (alice, bob, carol):
        wait_for(
            lambda d=d: all(balance(d, x)["limit"] != "0.00" for x in (alice, bob, carol)),
            timeout=60,
            what="every member has credit on every node",
        )
        wait_for(
            lambda d=d: d.json("swarm", "currency")[0]["name"] == "Elm hours", timeout=30, what="the currency"
        )

    # --- 1. Alice helps Bob for 2 hours; Bob pays ---------------------------------------
    help_ = alice.json("offer", "add", "Garden help", "--kind", "service", "--price", "2")["id"]
    wait_for(lambda: help_ in {o["id"] for o in bob.json("offer", "list")}, timeout=30, what="the offer")
    shown = bob.cli("offer", "show", help_).stdout
    assert "price:" in shown and "2.00 hours" in shown
    proposal = bob.json("propose", help_, "--note", "Saturday morning?")["id"]
    wait_for(lambda: proposal in {p["id"] for p in alice.json("proposals")}, timeout=30, what="the proposal")
    alice.cli("accept", proposal)
    wait_for(lambda: bob.json("proposal", proposal)["state"] == "accepted", timeout=30, what="accepted")
    alice.cli("complete", proposal)
    bob.cli("complete", proposal)
    for d in (alice, bob):
        wait_for(
            lambda d=d: d.json("proposal", proposal)["state"] == "completed", timeout=30, what="completed"
        )
    wait_for(lambda: notices(bob, "topay"), timeout=60, what="Bob's inbox asks him to pay")
    [topay] = notices(bob, "topay")
    assert topay["about"] == proposal and topay["amount"] == "2.00" and "Garden help" in topay["text"]
    assert f"meshnode pay {alice.peer_id[-6:]} 2.00 --for {proposal[:12]}" in topay["text"]

    command = topay["text"].split("'")[1].split()  # Bob runs what his inbox says
    assert command[:2] == ["meshnode", "pay"]
    paid = bob.json(*command[1:], "--memo", "garden, thanks")
    assert paid["amount"] == "2.00" and paid["unit"] == "hours" and paid["seq"] == 1
    assert paid["balance"] == "-2.00"
    for d in (alice, bob, carol):
        wait_for(
            lambda d=d: balances_are(d, alice, bob, "2.00", "-2.00"),
            timeout=60,
            what="Alice +2.00 and Bob -2.00 on every node",
        )
    assert balance(carol, carol)["balance"] == "0.00"
    wait_for(lambda: notices(alice, "payment"), timeout=30, what="the payment in Alice's inbox")
    [payment] = notices(alice, "payment")
    assert payment["amount"] == "2.00" and payment["note"] == "garden, thanks"
    assert f"paid you 2.00 hours for proposal {proposal[:12]} (Garden help)" in payment["text"]
    [mine] = alice.json("ledger")
    [row] = mine["transfers"]
    assert (row["direction"], row["amount"], row["status"], row["for"]) == ("in", "2.00", "counted", proposal)
    assert paid["for"] == proposal
    listed = bob.cli("balance").stdout
    assert "balance -2.00 hours" in listed and "base 5.00 hours" in listed
    bob.cli("inbox")  # reading the inbox does not bring the to-pay notice back
    assert len(notices(bob, "topay")) == 1

    # --- 2. Bob double spends place 2 while partitioned -------------------------------------
    bob.stop()
    backup = tmp_path / "bob-backup"
    shutil.copytree(bob.home, backup)
    carol.stop()
    bob.start()
    link(bob, alice)
    first = bob.json("pay", alice.peer_id, "1", "--memo", "for the ladder")
    assert first["seq"] == 2
    wait_for(lambda: balance(alice, alice)["balance"] == "3.00", timeout=60, what="Alice counts Bob's 1")
    bob.stop()
    alice.stop()
    shutil.rmtree(bob.home)
    shutil.copytree(backup, bob.home)  # Bob's store no longer holds his place-2 payment
    carol.start()
    bob.start()
    link(bob, carol)
    wait_for(lambda: balance(bob, bob)["balance"] == "-2.00", timeout=60, what="Bob's restored balance")
    second = bob.json("pay", carol.peer_id, "1", "--memo", "for the bike")
    assert second["seq"] == 2 and second["id"] != first["id"]
    wait_for(lambda: balance(carol, carol)["balance"] == "1.00", timeout=60, what="Carol counts Bob's 1")

    alice.start()
    link(alice, bob)
    link(alice, carol)
    for d in (alice, bob, carol):
        wait_for(
            lambda d=d: balance(d, bob)["fork"] is not None, timeout=90, what="the fork proof on every node"
        )
        row = balance(d, bob)
        assert row["limit"] == "0.00" and row["fork"]["seq"] == 2
        assert {t["transfer"] for t in row["fork"]["transfers"]} == {first["id"], second["id"]}
        # Neither payment at the forked place counts: Alice keeps the 2 for the garden, Carol has 0.
        assert balance(d, alice)["balance"] == "2.00" and balance(d, carol)["balance"] == "0.00"
        assert row["balance"] == "-2.00"
    wait_for(lambda: notices(carol, "fork"), timeout=60, what="the fork notice in Carol's inbox")
    [fork] = notices(carol, "fork")
    assert "double spend (one of them to you)" in fork["text"] and fork["peer"] == bob.peer_id
    trust = carol.json("trust", bob.peer_id)
    assert [f["seq"] for f in trust["forks"]] == [2]
    assert "double spent in Elm Street: two transfers at place 2" in carol.cli("trust", bob.peer_id).stdout
    assert "DOUBLE SPENDING" in carol.cli("balance", bob.peer_id).stdout
    refused = bob.cli("pay", carol.peer_id, "1", check=False)
    assert refused.returncode != 0 and "your own chain of transfers forks" in refused.stderr
