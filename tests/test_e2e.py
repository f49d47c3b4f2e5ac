"""End to end: three real daemons, driven only through the meshnode CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess

import pytest

from meshnode.identity import Identity
from tests.daemonutil import MESHNODE, Daemon, env_for, wait_for

pytestmark = pytest.mark.timeout(180)


def offer_ids(d: Daemon, *extra: str) -> set[str]:
    return {o["id"] for o in d.json("offer", "list", *extra)}


def proposal_state(d: Daemon, pid: str) -> str | None:
    for p in d.json("proposals"):
        if p["id"] == pid:
            return p["state"]
    return None


def test_three_neighbours_trade_and_vouch(daemons):
    a, b, c = daemons("alice"), daemons("bob"), daemons("carol")

    a.cli("swarm", "create", "Elm Street")
    code = a.cli("swarm", "invite", "Elm Street").stdout.strip()
    assert code.startswith("mesh1") and "\n" not in code
    b.cli("swarm", "join", code)
    c.cli("swarm", "join", code)
    assert [s["name"] for s in c.json("swarm", "list")] == ["Elm Street"]

    # A offers a drill; B sees it within seconds.
    drill = a.json("offer", "add", "Cordless drill", "--kind", "lend", "--tag", "tools", "--desc", "18 V")[
        "id"
    ]
    took = wait_for(lambda: drill in offer_ids(b), timeout=10, what="B to see the drill")
    print(f"B saw A's offer after {took:.2f} s")
    listed = next(o for o in b.json("offer", "list", "--query", "drill") if o["id"] == drill)
    assert listed["title"] == "Cordless drill" and listed["author"] == a.peer_id
    assert set(listed) == {
        *("id", "title", "kind", "state", "swarm", "tags", "author", "author_name", "trust", "expires")
    }
    assert (listed["state"], listed["swarm"]) == ("available", "Elm Street")

    # B proposes a swap with its own ladder; A accepts; both complete.
    ladder = b.json("offer", "add", "Ladder", "--kind", "swap")["id"]
    wait_for(lambda: ladder in offer_ids(a), timeout=10, what="A to see the ladder")
    proposal = b.json("propose", drill[:10], "--give", ladder[:10], "--note", "ladder for a weekend")["id"]
    again = b.cli("propose", drill[:10], check=False)  # one open proposal per person and offer
    assert again.returncode == 77 and f"already have an open proposal {proposal[:16]}" in again.stderr, (
        again.stderr
    )
    wait_for(lambda: proposal_state(a, proposal) == "proposed", timeout=10, what="A to see the proposal")
    seen = next(p for p in a.json("proposals") if p["id"] == proposal)  # Alice's side of it
    assert (seen["with"], seen["you_give"], seen["you_get"]) == (b.peer_id, ["Cordless drill"], ["Ladder"])
    assert (seen["note"], seen["waiting_for"], seen["proposed_by"]) == ("ladder for a weekend", "you", "them")
    listed = a.cli("proposals").stdout
    offers = f"{b.peer_id[-6:]} offers Ladder for your Cordless drill"  # Bob by his short id: no nickname
    assert offers in listed and "waiting for you" in listed, listed
    a.cli("accept", proposal)
    wait_for(lambda: proposal_state(b, proposal) == "accepted", timeout=10, what="B to see the accept")
    # Accepted: both offers are reserved, so nobody else is offered them (--all still shows them).
    assert drill not in offer_ids(a) and ladder not in offer_ids(a)
    states = {o["id"]: o["state"] for o in a.json("offer", "list", "--all")}
    assert (states[drill], states[ladder]) == ("reserved", "reserved")
    a.cli("complete", proposal)
    b.cli("complete", proposal)
    for d in (a, b):
        wait_for(lambda d=d: proposal_state(d, proposal) == "completed", timeout=10, what="completed")
    # Completed: the swapped ladder is gone for good; the lent drill is back.
    wait_for(lambda: ladder not in offer_ids(c), timeout=10, what="C to see the ladder go")  # C: no party
    for d in (a, b, c):
        listed_now = offer_ids(d)
        assert ladder not in listed_now and drill in listed_now, d.home.name
    assert {o["id"]: o["state"] for o in c.json("offer", "list", "--all")}[ladder] == "given"
    row = next(p for p in b.json("proposals") if p["id"] == proposal)
    assert (row.pop("you_give"), row.pop("you_get"), row.pop("waiting_for")) == (
        ["Ladder"],
        ["Cordless drill"],
        None,
    )
    assert (row.pop("with"), row.pop("proposed_by"), row.pop("note")) == (a.peer_id, "you", "")
    a_short = a.peer_id[-6:]  # the names beside the ids: Alice has no nickname, so her short id
    assert (row.pop("with_name"), row.pop("from_name"), row.pop("to_name")) == (a_short, "you", a_short)
    expires = dt.datetime.strptime(row.pop("expires"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    days = (expires - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    assert 13.9 < days <= 14.0  # the default: a proposal nobody accepts closes
    assert row == {
        "id": proposal,
        "state": "completed",
        "from": b.peer_id,
        "to": a.peer_id,
        "give": [ladder],
        "take": [drill],
        "lender": None,  # a swap, not a loan
        "due": None,
    }

    # C vouches for A, A vouches for B: C trusts B through A; a stranger scores 0.
    c.cli("vouch", a.peer_id, "--level", "0.9")
    a.cli("vouch", b.peer_id)
    wait_for(lambda: c.json("trust", b.peer_id)["score"] > 0, timeout=10, what="C to trust B")
    trust = c.json("trust", b.peer_id)
    assert trust["peer"] == b.peer_id
    assert any(path["keys"] == [c.peer_id, a.peer_id, b.peer_id] for path in trust["paths"])
    stranger = Identity.generate().peer_id
    unknown = c.json("trust", stranger)
    assert (unknown["peer"], unknown["score"], unknown["paths"], unknown["distrust"]) == (
        stranger,
        0.0,
        [],
        [],
    )

    # A withdrawn offer disappears from everyone's list.
    bike = a.json("offer", "add", "Bike pump", "--kind", "give")["id"]
    for d in (b, c):
        wait_for(lambda d=d: bike in offer_ids(d), timeout=10, what="the bike pump to arrive")
    a.cli("offer", "withdraw", bike[:12])
    for d in (a, b, c):
        wait_for(lambda d=d: bike not in offer_ids(d), timeout=10, what="the withdrawal")


def test_refusals_are_one_line_nonzero_and_change_nothing(daemons, tmp_path):
    a = daemons("alice")
    a.cli("swarm", "create", "Elm Street")
    mine = a.json("offer", "add", "Drill")["id"]
    before = a.json("status")["records"]

    cases = [
        (["offer", "show", "zzzz"], 64, "hex"),
        (["offer", "show", "abcdef0123"], 66, "no record"),
        (["offer", "add", "   "], 65, "title"),
        (["offer", "add", "x", "--kind", "sell"], 65, "kind"),
        (["offer", "add", "x", "--expires", "-1"], 64, "expires"),
        (["offer", "list", "--kind", "sell"], 64, "kind"),
        (["vouch", "not-a-peer"], 64, "peer id"),
        (["vouch", Identity.generate().peer_id, "--level", "5"], 64, "level"),
        (["vouch", a.peer_id], 77, "yourself"),
        (["propose", mine], 77, "your own"),
        (["propose", mine, "--expires", "0"], 64, "expires"),
        (["propose", mine, "--expires", "91"], 64, "expires"),
        (["accept", mine], 66, "no proposal"),
        (["swarm", "invite", "Nowhere"], 66, "no swarm"),
        (["swarm", "join", "mesh1notacode"], 64, "invite"),
        (["connect", "/ip4/127.0.0.1/tcp/1"], 64, "/p2p/"),
        (["vouch", Identity.generate().peer_id, "--level", "nan"], 64, "--level"),
        (["vouch", Identity.generate().peer_id, "--level", "inf"], 64, "--level"),
        (["offer", "add", "x", "--expires", "inf"], 64, "--expires"),
        (["offer", "add", "\udced\udca0\udc80 drill"], 64, "UTF-8"),  # bytes that are not UTF-8
        (["offer", "add", "line\nbreak"], 65, "one line"),
        (["offer", "show", ""], 64, "empty"),
        (["trust", " "], 64, "empty"),
    ]
    for args, code, words in cases:
        result = a.cli(*args, check=False)
        assert result.returncode == code, (args, result.returncode, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert words in lines[0], (args, lines[0])
        assert result.stdout == ""
        # With --json, the same refusal is one JSON line: its code and message.
        as_json = a.cli(*args, "--json", check=False)
        assert as_json.returncode == code and as_json.stdout == "", (args, as_json.stderr)
        error = json.loads(as_json.stderr)["error"]
        assert error["code"] and words in error["message"], (args, error)
    assert a.json("status")["records"] == before  # nothing was signed or stored

    # Every command that does something says it in JSON with --json.
    assert a.json("swarm", "invite", "Elm Street")["code"].startswith("mesh1")
    withdrawn = a.json("offer", "withdraw", mine[:12])
    assert withdrawn["withdrawn"] == mine and len(withdrawn["id"]) == 64

    # A second daemon on the same home refuses, naming the running pid.
    second = subprocess.run(
        [*MESHNODE, "daemon", "--home", str(a.home), "--listen", "/ip4/127.0.0.1/tcp/0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env_for(a.home),
        stdin=subprocess.DEVNULL,
    )
    assert second.returncode == 75
    assert f"pid {a.proc.pid}" in second.stderr

    # A daemon of another home on a port in use stops with a clear error, never a silent share.
    busy = a.addrs[0].rsplit("/p2p/", 1)[0]
    other = subprocess.run(
        [*MESHNODE, "daemon", "--home", str(tmp_path / "other"), "--listen", busy],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(tmp_path / "other"),
        stdin=subprocess.DEVNULL,
    )
    assert other.returncode == 78, other.stderr
    assert "ready" not in other.stdout
    assert f"TCP port {busy.split('/')[4]} on 127.0.0.1 is already in use" in other.stderr

    # The CLI with no daemon says how to start one.
    down = Daemon(tmp_path / "nobody")
    result = down.cli("status", check=False)
    assert result.returncode == 69
    assert "meshnode daemon --home" in result.stderr

    # No listener beyond what the config names: on 127.0.0.1, the announced port of the
    # open host and the one port of the (private, the default) swarm's own host, and the
    # web page's port (--web 127.0.0.1:0).
    import psutil

    listening = [c for c in psutil.Process(a.proc.pid).net_connections(kind="inet") if c.status == "LISTEN"]
    announced = int(a.addrs[0].split("/")[4])
    ports = sorted(net["port"] for net in a.json("status")["networks"])
    assert len(ports) == 2 and announced in ports
    web_port = int(a.web_url.rsplit(":", 1)[1])
    expected = sorted([("127.0.0.1", p) for p in ports] + [("127.0.0.1", web_port)])
    assert sorted((c.laddr.ip, c.laddr.port) for c in listening) == expected
    udp = psutil.Process(a.proc.pid).net_connections(kind="udp")
    assert udp == []  # no mDNS when listening on loopback only

    # The API socket is the owner's only: mode 0600 in a 0700 home.
    assert os.stat(a.home / "api.sock").st_mode & 0o777 == 0o600
    assert os.stat(a.home).st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
def test_another_user_cannot_use_the_api(daemons):
    a = daemons("alice")
    # Directly at the socket, as user nobody: refused by the file system.
    probe = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX)\n"
        "try:\n s.connect(sys.argv[1]); print('connected')\n"
        "except PermissionError: print('refused')\n"
    )
    result = subprocess.run(
        ["python3", "-c", probe, str(a.home / "api.sock")],
        capture_output=True,
        text=True,
        user=65534,
        timeout=30,
    )
    assert result.stdout.strip() == "refused", result.stderr
    # And the owner still gets in.
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(a.home / "api.sock"))
    s.close()


def test_a_home_that_is_a_file_is_a_one_line_error(tmp_path):
    afile = tmp_path / "not-a-dir"
    afile.write_text("")
    for args in (["status"], ["daemon", "--listen", "/ip4/127.0.0.1/tcp/0"]):
        result = subprocess.run(
            [*MESHNODE, *args, "--home", str(afile)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 78, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"error: the home {afile} is a file, not a directory: name a directory (--home or MESHNODE_HOME)"
        ]
