"""Tables through the real CLI fit an 80-column terminal (COLUMNS=80), ids whole (issue 13, item 8)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.timeout(120)


def test_offer_and_swarm_tables_fit_80_columns(daemons, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    a = daemons("a")
    a.cli("swarm", "create", "Elm Street and the houses by the old mill"[:40])
    title = "Cordless drill " + "really " * 14 + "long"  # 117 characters (titles hold 120)
    drill = a.json("offer", "add", title, "--kind", "lend", "--tag", "tools", "--tag", "power")["id"]
    a.json("offer", "add", "Ladder", "--kind", "swap", "--tag", "garden")
    for args in (["offer", "list"], ["offer", "list", "--mine"], ["swarm", "list"], ["peers"]):
        out = a.cli(*args).stdout
        lines = out.splitlines()
        assert lines and all(len(line) <= 80 for line in lines), (args, out)
        if args[0] == "offer":
            assert re.search(rf"(^|\s){drill[:12]}\s", out), out  # the short id, whole, on one line
            assert len(lines) == 4 and "…" in out and "long" not in out, out  # a row a line, title cut
    shown = a.json("offer", "show", drill[:12])  # the short id is accepted back
    assert shown["id"] == drill
