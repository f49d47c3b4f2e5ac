"""End to end, issue 14 item 3: a ring of three neighbours, found, proposed, accepted and completed.

Alice gives a drill and wants a ladder, Bob gives a ladder and wants a sewing
machine, Carol gives a sewing machine and wants a drill: no two of them can
swap, but the three can. Through the real CLI: Alice's ``rings`` suggests
the ring; she proposes it by its suggestion id; all three see it and accept
it (each sees it accepted), then complete it, and Carol's decline
afterwards is refused: a completed ring is final.
"""

from __future__ import annotations

import json

import pytest

from tests.daemonutil import wait_for

pytestmark = pytest.mark.timeout(300)


def ring_state(d, ring_id: str) -> str | None:
    out = d.cli("ring", ring_id, "--json", check=False)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)["state"]


def test_three_neighbours_close_a_ring_through_the_cli(daemons):
    alice, bob, carol = daemons("alice"), daemons("bob"), daemons("carol")
    alice.cli("swarm", "create", "Elm Street")
    code = alice.cli("swarm", "invite", "Elm Street").stdout.strip()
    bob.cli("swarm", "join", code)
    carol.cli("swarm", "join", code)

    drill = alice.json("offer", "add", "Cordless drill", "--kind", "give")["id"]
    alice.json("want", "add", "Ladder", "--kind", "give")
    ladder = bob.json("offer", "add", "Aluminium ladder", "--kind", "give")["id"]
    bob.json("want", "add", "Sewing machine", "--kind", "give")
    sewing = carol.json("offer", "add", "Sewing machine", "--kind", "give")["id"]
    carol.json("want", "add", "Cordless drill", "--kind", "give")

    found: list = []

    def suggested() -> bool:
        found[:] = alice.json("rings")
        return bool(found)

    wait_for(suggested, timeout=30, what="Alice's rings to suggest the ring")
    ring = found[0]
    assert {s["gives"] for s in ring["steps"]} == {drill, ladder, sewing}
    you = next(s for s in ring["steps"] if s["author_name"] == "you")
    assert you["gives"] == drill and you["gets_want_title"] == "Ladder"
    text = alice.cli("rings").stdout
    assert f"propose it: meshnode propose-ring {ring['suggestion']}" in text, text
    assert "you give Cordless drill to " in text, text

    ring_id = alice.cli(
        "propose-ring", ring["suggestion"][:10], "--note", "drill, ladder, sewing"
    ).stdout.strip()
    assert len(ring_id) == 64
    for d in (alice, bob, carol):
        wait_for(lambda d=d: ring_state(d, ring_id) == "proposed", timeout=30, what=f"{d.home.name} sees it")
    assert any(s["proposed"] == ring_id for s in alice.json("rings")), "the suggestion says it is proposed"

    # Refusals change nothing: a ring of two, the same ring again, an unknown suggestion, a bad word.
    for args, words in (
        (("propose-ring", drill, ladder), "3 to 5"),
        (("propose-ring", sewing, drill, ladder), "with these offers is already proposed"),
        (("propose-ring", "abcdef0123"), "no ring suggestion"),
        (("ring", "maybe", ring_id), "expected 'meshnode ring ID'"),
    ):
        out = alice.cli(*args, check=False)
        assert out.returncode != 0 and words in out.stderr, (args, out.stderr)
    assert [r["id"] for r in alice.json("rings", "--mine")] == [ring_id]

    # Bob and Carol hear of it in their inbox, with their part in it.
    for d in (bob, carol):
        wait_for(
            lambda d=d: any(n["kind"] == "ring" for n in d.json("inbox", "--all")["notices"]),
            timeout=30,
            what=f"the ring in {d.home.name}'s inbox",
        )
    told = next(n for n in bob.json("inbox", "--all")["notices"] if n["kind"] == "ring")["text"]
    assert "proposes a ring: you give Aluminium ladder to " in told and "you get Sewing machine from" in told

    for d in (alice, bob, carol):
        shown = d.json("ring", "accept", ring_id)
        assert next(p for p in shown["parties"] if p["name"] == "you")["accepted"]
    for d in (alice, bob, carol):
        wait_for(
            lambda d=d: ring_state(d, ring_id) == "accepted", timeout=30, what=f"{d.home.name}: accepted"
        )
    wait_for(
        lambda: any("accepted ring" in n["text"] for n in alice.json("inbox", "--all")["notices"]),
        timeout=30,
        what="the others' accepts in Alice's inbox",
    )
    shown = bob.cli("ring", ring_id).stdout
    assert "accepted, waiting for" in shown and "you can: complete, decline" in shown, shown

    # The accepted ring holds its offers: off the default lists, "reserved" with --all, and a
    # two-party trade for one of them cannot be accepted.
    for d in (alice, bob, carol):
        wait_for(
            lambda d=d: drill not in {o["id"] for o in d.json("offer", "list")}, timeout=30, what="drill held"
        )
    assert {o["id"]: o["state"] for o in bob.json("offer", "list", "--all")}[drill] == "reserved"
    side = bob.json("propose", drill, "--note", "or just to me?")["id"]
    wait_for(lambda: side in {p["id"] for p in alice.json("proposals")}, timeout=30, what="the side deal")
    refused = alice.cli("accept", side, check=False)
    assert refused.returncode != 0 and "reserved or given away by a ring" in refused.stderr, refused.stderr
    assert alice.json("proposal", side)["state"] == "proposed"

    for d in (alice, bob, carol):
        d.cli("ring", "complete", ring_id, "--note", "thanks")
    for d in (alice, bob, carol):
        wait_for(lambda d=d: ring_state(d, ring_id) == "completed", timeout=30, what=f"{d.home.name}: done")
    # the side deal for the drill, never accepted, closes: the ring gave the drill away
    for d in (alice, bob):
        wait_for(
            lambda d=d: d.json("proposal", side)["state"] == "unavailable",
            timeout=30,
            what="side deal closed",
        )
    for d in (alice, bob, carol):  # given away: stays off every list, "given" with --all
        states = {o["id"]: o["state"] for o in d.json("offer", "list", "--all")}
        assert {states[drill], states[ladder], states[sewing]} == {"given"}, states
    mine = alice.json("rings", "--mine")
    assert [r["state"] for r in mine if r["id"] == ring_id] == ["completed"]
    refused = carol.cli("ring", "decline", ring_id, check=False)
    assert refused.returncode != 0 and "completed, a final state" in refused.stderr, refused.stderr
