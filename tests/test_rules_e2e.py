"""End to end: answering while away, with real daemons driven through the meshnode CLI.

Alice's config.toml has ``[rules] accept_give_from_trust = 0.5`` (and
``decline_below_trust = 0.1``). She vouches for Bob and offers a chair to
give away. Bob proposes to take it: without Alice running any command, her
daemon accepts, the move's note names the rule, and both inboxes show the
move. Carol, whom nobody vouched for, proposes too and is declined by
``decline_below_trust``. ``meshnode rules`` lists the rules in force, and on
a node without rules says how to set them.
"""

from __future__ import annotations

import pytest

from meshnode.home import Home, ensure_home
from tests.daemonutil import Daemon, wait_for

pytestmark = pytest.mark.timeout(240)

RULES = "\n[rules]\naccept_give_from_trust = 0.5\ndecline_below_trust = 0.1\n"


def with_rules(path) -> None:
    """The default config.toml of a new home, plus the [rules] table (written before the daemon starts)."""
    home = Home(path)
    ensure_home(home)
    with home.config.open("a", encoding="utf-8") as f:
        f.write(RULES)


def state(d: Daemon, proposal: str) -> str:
    return d.json("proposal", proposal)["state"]


def moves_in_inbox(d: Daemon, proposal: str) -> list[dict]:
    notices = d.json("inbox", "--all")["notices"]
    return [n for n in notices if n["kind"] == "move" and n["about"] == proposal]


def test_alices_daemon_accepts_a_trusted_give_request_and_declines_a_stranger(daemons, tmp_path):
    with_rules(tmp_path / "alice")
    alice, bob, carol = daemons("alice"), daemons("bob"), daemons("carol")
    listed = alice.cli("rules").stdout
    assert "accept_give_from_trust = 0.5" in listed and "decline_below_trust = 0.1" in listed
    assert [r.split(":")[0] for r in alice.json("rules")["rules"]] == [
        "decline_below_trust = 0.1",
        "accept_give_from_trust = 0.5",
    ]
    none = bob.cli("rules").stdout
    assert "no rules are set" in none and "[rules]" in none and "restart the daemon" in none
    assert bob.json("rules")["rules"] == []

    alice.cli("swarm", "create", "Elm Street")
    code = alice.cli("swarm", "invite", "Elm Street").stdout.strip()
    bob.cli("swarm", "join", code)
    carol.cli("swarm", "join", code)
    alice.cli("vouch", bob.peer_id, "--note", "neighbour")
    chair = alice.json("offer", "add", "Chair", "--kind", "give")["id"]
    for d in (bob, carol):
        wait_for(
            lambda d=d: chair in {o["id"] for o in d.json("offer", "list")}, timeout=30, what="the chair"
        )
    wait_for(lambda: alice.json("trust", bob.peer_id)["trust"] >= 0.5, timeout=20, what="Alice trusts Bob")

    proposal = bob.json("propose", chair, "--note", "for my kitchen")["id"]
    wait_for(lambda: state(bob, proposal) == "accepted", timeout=60, what="Alice's daemon to accept")
    last = bob.json("proposal", proposal)["moves"][-1]
    assert last["action"] == "accept" and last["who"] == alice.peer_id
    assert last["note"].startswith("accepted automatically by my rule accept_give_from_trust (0.5):")
    assert "is trusted 0.80" in last["note"]

    # Both inboxes show the move: Bob's as Alice's accept, Alice's as her own automatic one.
    wait_for(lambda: moves_in_inbox(bob, proposal), timeout=20, what="the accept in Bob's inbox")
    [seen_by_bob] = moves_in_inbox(bob, proposal)
    assert seen_by_bob["action"] == "accept" and seen_by_bob["peer"] == alice.peer_id
    assert "accept_give_from_trust" in seen_by_bob["note"]
    wait_for(lambda: moves_in_inbox(alice, proposal), timeout=20, what="the accept in Alice's inbox")
    [seen_by_alice] = moves_in_inbox(alice, proposal)
    assert seen_by_alice["text"].startswith("you accepted proposal")
    assert "accept_give_from_trust" in seen_by_alice["note"]
    assert "accept_give_from_trust" in alice.cli("inbox", "--all").stdout

    # Carol is trusted 0: her proposal for the same chair is declined, once.
    lamp = alice.json("offer", "add", "Lamp", "--kind", "give")["id"]
    wait_for(lambda: lamp in {o["id"] for o in carol.json("offer", "list")}, timeout=30, what="the lamp")
    declined = carol.json("propose", lamp)["id"]
    wait_for(lambda: state(carol, declined) == "declined", timeout=60, what="Alice's daemon to decline")
    moves = carol.json("proposal", declined)["moves"]
    assert [m["action"] for m in moves] == ["propose", "decline"]
    assert moves[-1]["note"].startswith("declined automatically by my rule decline_below_trust (0.1):")
    assert alice.json("rules")["sent"] == 2
