"""End to end: the inbox and watch, with real daemons driven through the meshnode CLI.

Alice wants a bread maker before anyone offers one; when Bob offers one the
match is in her ``inbox`` within seconds and her running ``meshnode watch``
printed it as it happened. Bob's proposal for her drill, her accept (in
Bob's inbox), Carol's vouch for her, and an offer from someone she trusts
are notices too; ``inbox`` shows each once, ``--all`` shows them again.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading

import pytest

from tests.daemonutil import MESHNODE, Daemon, env_for, wait_for

pytestmark = pytest.mark.timeout(240)


class Watcher:
    """A running ``meshnode watch --json``; its lines are collected as they come."""

    def __init__(self, d: Daemon) -> None:
        self.proc = subprocess.Popen(
            [*MESHNODE, "watch", "--json", "--home", str(d.home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env_for(d.home),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def has(self, predicate) -> bool:
        while True:
            try:
                self.seen.append(json.loads(self.lines.get_nowait()))
            except queue.Empty:
                return any(predicate(n) for n in self.seen)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def unread(d: Daemon) -> list[dict]:
    return d.json("inbox")["notices"]


def test_inbox_and_watch_tell_matches_proposals_moves_and_vouches(daemons):
    alice, bob, carol = daemons("alice"), daemons("bob"), daemons("carol")
    alice.cli("swarm", "create", "Elm Street")
    code = alice.cli("swarm", "invite", "Elm Street").stdout.strip()
    bob.cli("swarm", "join", code)
    carol.cli("swarm", "join", code)
    assert alice.cli("inbox").stdout.startswith("nothing new since you last looked")

    watcher = Watcher(alice)
    try:
        # A want added before any matching offer exists.
        want = alice.json("want", "add", "Bread maker", "--kind", "lend", "--tag", "kitchen")["id"]
        drill = alice.json("offer", "add", "Cordless drill", "--kind", "give")["id"]
        bread = bob.json("offer", "add", "Panasonic bread maker", "--kind", "lend", "--desc", "makes 1 kg")[
            "id"
        ]

        # Within seconds the match is in Alice's inbox, and watch printed it as it came.
        found: dict = {}

        def matched() -> bool:
            for n in unread(alice):
                if n["kind"] == "match" and n["item"] == bread:
                    found.update(n)
            return bool(found)

        took = wait_for(matched, timeout=20, what="the match in Alice's inbox")
        assert took < 20
        assert found["yours"] == want and found["peer"] == bob.peer_id
        assert "offers Panasonic bread maker: it matches your want Bread maker" in found["text"]
        wait_for(
            lambda: watcher.has(lambda n: n["kind"] == "match" and n["item"] == bread),
            timeout=20,
            what="watch to print the match",
        )
        # Read once: the next inbox has nothing new; --all shows it again.
        assert alice.cli("inbox").stdout.startswith("nothing new")
        assert any(
            n["item"] == bread for n in alice.json("inbox", "--all")["notices"] if n["kind"] == "match"
        )

        # Bob proposes his ladder for Alice's drill, with a note.
        ladder = bob.json("offer", "add", "Ladder", "--kind", "give")["id"]
        wait_for(
            lambda: drill in {o["id"] for o in bob.json("offer", "list")},
            timeout=20,
            what="Bob sees the drill",
        )
        proposal = bob.json("propose", drill, "--give", ladder, "--note", "for your shed roof")["id"]
        got: dict = {}

        def proposed() -> bool:
            got.update(next((n for n in unread(alice) if n["kind"] == "proposal"), {}))
            return bool(got)

        wait_for(proposed, timeout=20, what="the proposal in Alice's inbox")
        assert got["about"] == proposal and got["note"] == "for your shed roof"
        assert "offers Ladder for your Cordless drill" in got["text"], got["text"]
        wait_for(lambda: watcher.has(lambda n: n["kind"] == "proposal"), timeout=20, what="watch: proposal")

        # Alice accepts: a move in Bob's inbox.
        alice.cli("accept", proposal)
        moves: list[dict] = []
        wait_for(
            lambda: moves.extend(n for n in unread(bob) if n["kind"] == "move") or moves,
            timeout=20,
            what="Alice's accept in Bob's inbox",
        )
        assert moves[0]["action"] == "accept" and moves[0]["about"] == proposal
        assert f"accepted proposal {proposal[:12]}" in moves[0]["text"]

        # Carol vouches for Alice: a vouch notice; Alice trusts Bob, so his next offer is one too.
        carol.cli("vouch", alice.peer_id, "--note", "kind neighbour")
        alice.cli("vouch", bob.peer_id, "--level", "0.9")
        tent = bob.json("offer", "add", "Tent", "--kind", "lend")["id"]
        kinds: dict[str, dict] = {}

        def both() -> bool:
            for n in unread(alice):
                kinds.setdefault(n["kind"], n)
            return "vouch" in kinds and "offer" in kinds

        wait_for(both, timeout=30, what=f"the vouch and the trusted offer in Alice's inbox: {kinds}")
        assert kinds["vouch"]["peer"] == carol.peer_id and kinds["vouch"]["note"] == "kind neighbour"
        assert kinds["offer"]["item"] == tent
        text = alice.cli("inbox", "--all").stdout
        assert "offers Tent" in text and "vouched for you (+0.80)" in text and '"kind neighbour"' in text, (
            text
        )
    finally:
        watcher.stop()


def test_inbox_and_watch_refuse_bad_input(daemons):
    alice = daemons("alice")
    bad = alice.cli("inbox", "--limit", "0", check=False)
    assert bad.returncode == 64 and "limit" in bad.stderr and bad.stderr.count("\n") == 1
    bad = alice.cli("watch", "--since", "-1", check=False)
    assert bad.returncode == 64 and "--since" in bad.stderr
    assert alice.json("inbox") == {"notices": [], "unread": 0}
