"""End to end, issue 13's "Done when": three neighbours with nicknames, through the real CLI.

Alice and Bob name themselves at ``init``, Carol later with ``profile set``.
Alice wants a bread maker before anyone offers one; Carol's offer of one is
in Alice's inbox within seconds and Alice's running ``watch`` printed it.
Bob proposes his ladder for Alice's drill with a note: Alice's
``proposals`` says "Bob (…) offers Ladder for your Cordless drill", waiting
for her, with the note. Carol's proposal for Alice's sofa closes when Alice
withdraws the sofa. Alice and Bob complete their swap: the drill and the
ladder disappear from all three default lists. Carol vouches for Bob, and
her ``trust Alice`` names the vouch and the trade it comes from.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.daemonutil import MESHNODE, Daemon, env_for, stopped_at_exit, wait_for
from tests.test_inbox_e2e import Watcher

pytestmark = pytest.mark.timeout(300)


def init(home, nickname: str) -> None:
    subprocess.run(
        [*MESHNODE, "init", "--nickname", nickname, "--home", str(home)],
        check=True,
        capture_output=True,
        env=env_for(home),
        timeout=60,
    )


def state_of(d: Daemon, proposal: str) -> str | None:
    return next((p["state"] for p in d.json("proposals") if p["id"] == proposal), None)


def listed(d: Daemon) -> set[str]:
    return {o["id"] for o in d.json("offer", "list")}


def test_three_named_neighbours_trade_follow_and_get_told(tmp_path):
    with stopped_at_exit() as started:
        init(tmp_path / "alice", "Alice")
        init(tmp_path / "bob", "Bob")
        alice, bob, carol = (Daemon(tmp_path / n).start() for n in ("alice", "bob", "carol"))
        started += [alice, bob, carol]
        carol.cli("profile", "set", "--nickname", "Carol")
        alice.cli("swarm", "create", "Elm Street")
        code = alice.cli("swarm", "invite", "Elm Street").stdout.strip()
        bob.cli("swarm", "join", code)
        carol.cli("swarm", "join", code)

        watcher = Watcher(alice)
        try:
            # A want before any matching offer; then the offers.
            want = alice.json("want", "add", "Bread maker", "--kind", "lend")["id"]
            drill = alice.json("offer", "add", "Cordless drill", "--kind", "give")["id"]
            sofa = alice.json("offer", "add", "Sofa", "--kind", "give")["id"]
            ladder = bob.json("offer", "add", "Ladder", "--kind", "swap")["id"]
            bread = carol.json("offer", "add", "Bread maker", "--kind", "lend")["id"]

            # The match is in Alice's inbox within seconds, named by Carol's nickname; watch printed it.
            match: dict = {}

            def matched() -> bool:
                match.update(next((n for n in alice.json("inbox")["notices"] if n["kind"] == "match"), {}))
                return bool(match)

            wait_for(matched, timeout=20, what="the match in Alice's inbox")
            assert (match["item"], match["yours"]) == (bread, want)
            assert match["peer_name"].startswith("Carol (") and "Carol (" in match["text"], match
            wait_for(
                lambda: watcher.has(lambda n: n["kind"] == "match" and n["item"] == bread),
                timeout=20,
                what="watch to print the match",
            )

            # Bob proposes his ladder for Alice's drill; Alice reads it as a sentence, with the note.
            wait_for(
                lambda: {drill, sofa} <= listed(bob) and sofa in listed(carol), timeout=20, what="offers"
            )
            proposal = bob.json("propose", drill, "--give", ladder, "--note", "for your shed roof")["id"]
            wait_for(lambda: state_of(alice, proposal) == "proposed", timeout=20, what="Alice sees it")
            row = next(p for p in alice.json("proposals") if p["id"] == proposal)
            assert row["with_name"].startswith("Bob (") and row["waiting_for"] == "you"
            assert (row["you_give"], row["you_get"], row["note"]) == (
                ["Cordless drill"],
                ["Ladder"],
                "for your shed roof",
            )
            text = alice.cli("proposals").stdout.splitlines()
            at = next(i for i, ln in enumerate(text) if ln.startswith(proposal[:12]))
            line, note = text[at], text[at + 1]
            assert "  Bob (" in line, text
            assert "offers Ladder for your Cordless drill — proposed, waiting for you" in line, text
            assert note.strip() == '"for your shed roof"', text

            # Carol proposes for the sofa; Alice withdraws it: the proposal closes on both sides.
            closing = carol.json("propose", sofa, "--note", "for the porch")["id"]
            wait_for(lambda: state_of(alice, closing) == "proposed", timeout=20, what="Alice sees Carol's")
            alice.cli("offer", "withdraw", sofa)
            for d in (alice, carol):
                wait_for(lambda d=d: state_of(d, closing) == "unavailable", timeout=20, what="closed")

            # The swap completes: the drill (given) and the ladder leave everyone's default list.
            alice.cli("accept", proposal)
            wait_for(lambda: state_of(bob, proposal) == "accepted", timeout=20, what="Bob sees the accept")
            alice.cli("complete", proposal)
            bob.cli("complete", proposal)
            for d in (alice, bob, carol):
                wait_for(
                    lambda d=d: not {drill, ladder} & listed(d), timeout=30, what=f"{d.home.name}'s list"
                )
            assert bread in listed(alice)

            # Carol vouches for Bob; her trust in Alice names the vouch and the trade.
            carol.cli("vouch", "Bob", "--note", "fixed my fence")
            wait_for(lambda: carol.json("trust", "Alice")["paths"], timeout=30, what="Carol to trust Alice")
            explained = carol.cli("trust", "Alice").stdout
            assert 'vouched +0.80 "fixed my fence"' in explained, explained
            assert f"traded (proposal {proposal[:12]})" in explained, explained
            assert "Bob (" in explained and "Alice (" in explained, explained
        finally:
            watcher.stop()
