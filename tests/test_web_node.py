"""This node's page, in process (tests/webutil.py) over a fake node that reports a network."""

from __future__ import annotations

from typing import Any

import trio

from meshnode import records as r
from meshnode.identity import peer_id_of
from tests.conftest import Author
from tests.webutil import StatusNode, web_page

ME, BOB, CAROL = Author(81), Author(82), Author(83)


class NetNode(StatusNode):
    """A fake node that reports a network: relayed, two neighbours connected, one more known."""

    reach = {"state": "relayed", "reason": "behind NAT (<dial-backs failed>); through relay 1.2.3.4"}

    def __init__(self, store: Any, me: Author) -> None:
        super().__init__(store, me)
        self.connected = [peer_id_of(BOB.public), peer_id_of(CAROL.public)]

    def connected_peers(self) -> list[str]:
        return list(self.connected)

    def addrs(self, swarm: Any = None) -> list[str]:
        return ["/ip4/192.168.1.5/tcp/4001"]

    def reachability(self) -> dict[str, str]:
        return dict(self.reach)

    def peer_details(self) -> list[dict[str, Any]]:
        return [{"peer_id": pid, "swarms": ["Elm Street"], "since": 1.0} for pid in self.connected]

    def known_peers(self) -> list[dict[str, Any]]:
        rows = [("Elm Street", pid) for pid in [*self.connected, "12D3KooWOther"]]
        return [
            {"swarm": s, "peer_id": pid, "addrs": [], "last_seen": self.now, "failures": 0, "next_try": 0}
            for s, pid in rows
        ]


async def test_the_node_page_says_reach_peers_swarms_records_and_address(tmp_path):
    async with web_page(tmp_path, ME, node_class=NetNode) as page:
        page.node.stored(BOB.sign(r.ProfileBody(nickname="Bob <b>")), BOB.offer())
        with trio.fail_after(10):
            got = await page.get("/node")
        text = got.text
        assert got.status_code == 200 and text.count("<h1>") == 1
        assert "through a relay" in text and "(&lt;dial-backs failed&gt;)" in text  # the reason, escaped
        assert "2 connected" in text and "Bob &lt;b&gt;" in text
        assert "Nodes it knows how to reach: 3." in text
        assert "<li>Elm Street</li>" in text
        assert "Records stored: 2." in text
        assert "http://127.0.0.1:8790" in text


async def test_a_state_the_page_has_no_words_for_reads_as_unknown(tmp_path):
    class Odd(NetNode):
        reach = {"state": "sideways", "reason": ""}

    async with web_page(tmp_path, ME, node_class=Odd) as page:
        page.node.connected = []
        with trio.fail_after(10):
            got = await page.get("/node")
        assert got.status_code == 200 and "Not known yet" in got.text
        assert "No neighbour is connected right now." in got.text
