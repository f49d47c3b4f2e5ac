"""End to end: neighbours with names, with real daemons driven through the meshnode CLI.

Alice sets her nickname with ``init --nickname`` before her daemon (and any
swarm) exists; Bob sets his with ``profile set`` once joined. After sync,
Alice's ``offer list``, ``proposals`` and ``trust`` name Bob as "Bob (…)",
``vouch Bob`` works by nickname, and the petname Alice gives Bob shows on
her node only.
"""

from __future__ import annotations

import pytest

from meshnode.people import SHORT_PEER
from tests.daemonutil import Daemon, stopped_at_exit, wait_for

pytestmark = pytest.mark.timeout(180)


def test_nicknames_petnames_and_peer_arguments(tmp_path):
    with stopped_at_exit() as started:
        alice = Daemon(tmp_path / "alice")
        alice.cli("init", "--nickname", "Alice")
        started.append(alice.start())
        bob = Daemon(tmp_path / "bob")
        started.append(bob.start())

        alice.cli("swarm", "create", "Elm Street")
        code = alice.cli("swarm", "invite", "Elm Street").stdout.strip()
        bob.cli("swarm", "join", code)
        bob_label = f"Bob ({bob.peer_id[-SHORT_PEER:]})"
        alice_label = f"Alice ({alice.peer_id[-SHORT_PEER:]})"

        mine = bob.json("profile", "set", "--nickname", "Bob", "--bio", "ladders and drills")
        assert (mine["nickname"], mine["published"]) == ("Bob", ["Elm Street"])
        assert alice.json("profile")["nickname"] == "Alice"

        # Alice's nickname, set before any swarm existed, reached Bob; Bob's reached Alice.
        wait_for(
            lambda: bob.json("profile", alice.peer_id)["peer_name"] == alice_label,
            timeout=20,
            what="Bob to learn Alice's nickname",
        )
        wait_for(
            lambda: alice.json("profile", "Bob")["bio"] == "ladders and drills",
            timeout=20,
            what="Alice to learn Bob's profile",
        )
        shown = alice.cli("profile", "Bob").stdout
        assert "nickname: Bob" in shown and bob.peer_id in shown and f"shown as: {bob_label}" in shown

        ladder = bob.json("offer", "add", "Ladder", "--kind", "swap")["id"]
        drill = alice.json("offer", "add", "Cordless drill", "--kind", "swap")["id"]
        wait_for(
            lambda: ladder in {o["id"] for o in alice.json("offer", "list")}, timeout=15, what="the ladder"
        )
        wait_for(lambda: drill in {o["id"] for o in bob.json("offer", "list")}, timeout=15, what="the drill")
        row = next(o for o in alice.json("offer", "list") if o["id"] == ladder)
        assert (row["author"], row["author_name"]) == (bob.peer_id, bob_label)
        assert bob_label in alice.cli("offer", "list").stdout
        assert f"author:    {bob_label}" in alice.cli("offer", "show", ladder[:12]).stdout

        # Bob proposes his ladder for Alice's drill: Alice's side names Bob.
        proposal = bob.json("propose", drill, "--give", ladder, "--note", "for your drill")["id"]
        wait_for(
            lambda: any(p["id"] == proposal for p in alice.json("proposals")), timeout=15, what="the proposal"
        )
        [seen] = [p for p in alice.json("proposals") if p["id"] == proposal]
        assert (seen["with_name"], seen["from_name"], seen["to_name"]) == (bob_label, bob_label, "you")
        assert f"{bob_label} offers Ladder for your Cordless drill" in alice.cli("proposals").stdout

        # vouch by nickname; trust names him.
        alice.cli("vouch", "Bob", "--note", "good neighbour")
        explained = alice.json("trust", "bob")
        assert (explained["peer"], explained["peer_name"]) == (bob.peer_id, bob_label)
        [edge] = explained["paths"][0]["edges"]
        assert (edge["from_name"], edge["to_name"]) == ("you", bob_label)
        assert f'you → {bob_label}: vouched +0.80 "good neighbour"' in alice.cli("trust", "Bob").stdout
        [ranked] = alice.json("trusted")
        assert (ranked["peer_name"], ranked["via_name"]) == (bob_label, "you")
        assert any(p["name"] == bob_label for p in alice.json("peers"))

        # A petname, on Alice's node only; it overrides the nickname and resolves back.
        alice.cli("name", bob.peer_id[-SHORT_PEER:], "Bob from no. 12")
        assert (
            next(o for o in alice.json("offer", "list") if o["id"] == ladder)["author_name"]
            == "Bob from no. 12"
        )
        assert alice.json("trust", "Bob from no. 12")["peer_name"] == "Bob from no. 12"
        assert alice.json("profile", "Bob")["petname"] == "Bob from no. 12"
        assert bob.json("profile")["peer_name"] == "you"
        assert bob.json("offer", "show", ladder)["author_name"] == "you"
        alice.cli("name", "Bob from no. 12", "")
        assert alice.json("profile", bob.peer_id)["peer_name"] == bob_label

        # Unknown and bad PEER arguments and nicknames: clear errors.
        failed = alice.cli("trust", "Zed", check=False)
        assert failed.returncode != 0 and "no one called 'Zed'" in failed.stderr
        bad = bob.cli("profile", "set", "--nickname", "two\nlines", check=False)
        assert bad.returncode != 0 and "one line" in bad.stderr
