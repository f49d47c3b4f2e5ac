"""The offer page, in process (tests/webutil.py): the offer, its author and trust, the propose form."""

from __future__ import annotations

import trio

from meshnode import records as r
from meshnode.identity import Identity, peer_id_of
from tests.conftest import Author
from tests.webutil import FakeNode, web_page

ME, BOB, CAROL = Author(51), Author(52), Author(53)


class SealingNode(FakeNode):
    """A fake node with a real identity, so a proposal's private details can be sealed."""

    def __init__(self, store, me: Author) -> None:
        super().__init__(store, me)
        self.identity = Identity(bytes(me.key))


async def test_a_neighbours_offer_shows_author_trust_and_the_propose_form(tmp_path):
    async with web_page(tmp_path, ME) as page:
        drill = BOB.sign(r.OfferBody(title="Drill <b>", kind="lend", desc="Makita, <i>18 V</i>"))
        page.node.stored(
            drill,
            BOB.sign(r.ProfileBody(nickname="Bob", bio="Number 7, the <blue> door")),
            ME.sign(r.AttestBody(subject=CAROL.public, level=900, note="my sister")),
            CAROL.sign(r.AttestBody(subject=BOB.public, level=700, note="fixed my bike")),
        )
        mine = await page.api.item_add("offer", title="Jam jars", kind="give")
        with trio.fail_after(10):
            got = await page.get(f"/offers/{drill.id.hex()}")
        assert got.status_code == 200
        text = got.text
        assert text.count("<h1>") == 1 and "<h1>Drill &lt;b&gt;</h1>" in text
        assert "Makita, &lt;i&gt;18 V&lt;/i&gt;" in text and "the &lt;blue&gt; door" in text
        assert "Calls themselves Bob." in text
        assert "Trust: 0." in text and "strength 0.63" in text  # 0.9 * 0.7
        assert "fixed my bike" in text and "vouched (0.70)" in text
        assert f'action="/offers/{drill.id.hex()}/propose"' in text
        assert 'name="csrf"' in text and ">Propose</button>" in text
        assert f'<option value="{mine["id"]}">Jam jars</option>' in text
        assert f'href="/neighbours/{peer_id_of(BOB.public)}"' in text


async def test_propose_redirects_to_the_trade_and_stores_the_proposal(tmp_path):
    async with web_page(tmp_path, ME, node_class=SealingNode) as page:
        drill = BOB.sign(r.OfferBody(title="Drill", kind="lend"))
        page.node.stored(drill)
        mine = await page.api.item_add("offer", title="Jam jars", kind="give")
        with trio.fail_after(10):
            got = await page.post(
                f"/offers/{drill.id.hex()}/propose",
                {"note": "Saturday?", "private": "call 0612", "give": mine["id"]},
            )
            assert got.status_code == 303
            trades = await page.api.proposals()
            assert len(trades) == 1
            assert got.headers["location"] == f"/trades/{trades[0]['id']}"
            trade = await page.api.proposal(trades[0]["id"])
        assert "Saturday?" in str(trade) and "Jam jars" in str(trade) and "call 0612" in str(trade)


async def test_propose_bad_input_and_refusals_store_nothing(tmp_path):
    async with web_page(tmp_path, ME) as page:
        drill = BOB.sign(r.OfferBody(title="Drill", kind="lend"))
        bobs_other = BOB.sign(r.OfferBody(title="Saw", kind="lend"))
        page.node.stored(drill, bobs_other)
        own = await page.api.item_add("offer", title="Jam jars", kind="give")
        before = page.node.store.count()
        with trio.fail_after(10):
            # giving someone else's offer in return
            theirs = await page.post(f"/offers/{drill.id.hex()}/propose", {"give": bobs_other.id.hex()})
            # proposing for my own offer
            for_mine = await page.post(f"/offers/{own['id']}/propose", {})
            # a note far too long
            too_long = await page.post(f"/offers/{drill.id.hex()}/propose", {"note": "x" * 5000})
            # no csrf token
            forged = await page.client.post(
                f"/offers/{drill.id.hex()}/propose", data={}, headers={"origin": "http://127.0.0.1:8790"}
            )
            mine_page = await page.get(f"/offers/{own['id']}")
            nothing = await page.get("/offers/00112233445566778899")
        assert theirs.status_code == 403 and "you can only give your own offers" in theirs.text
        assert 'role="alert"' in theirs.text
        assert for_mine.status_code == 403 and "your own" in for_mine.text
        assert too_long.status_code == 400 and "note" in too_long.text
        assert forged.status_code == 403
        assert page.node.store.count() == before
        assert ">Edit</a>" in mine_page.text and "/propose" not in mine_page.text
        assert nothing.status_code == 404
