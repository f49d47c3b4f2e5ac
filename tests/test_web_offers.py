"""The offers page, in process (tests/webutil.py): search, trust badges, states, what htmx swaps."""

from __future__ import annotations

import trio

from meshnode import records as r
from tests.conftest import Author
from tests.webutil import web_page

ME, BOB = Author(41), Author(42)


async def test_offers_lists_and_searches_with_trust_badges(tmp_path):
    async with web_page(tmp_path, ME) as page:
        drill = BOB.sign(r.OfferBody(title="Cordless drill", kind="lend", tags=("diy",)))
        jam = BOB.sign(r.OfferBody(title="Jam <jars>", kind="give"))
        page.node.stored(drill, jam, ME.sign(r.AttestBody(subject=BOB.public, level=800)))
        with trio.fail_after(10):
            everything = await page.get("/offers")
            drills = await page.get("/offers", params={"q": "drill"})
            swapped = await page.get(
                "/offers", params={"kind": "give"}, headers={"hx-request": "true", "hx-target": "results"}
            )
        assert everything.status_code == 200
        assert "Cordless drill" in everything.text and "Jam &lt;jars&gt;" in everything.text  # escaped
        assert "trusted 0.80" in everything.text
        assert "Cordless drill" in drills.text and "Jam" not in drills.text
        assert (
            "<html" not in swapped.text
            and "Jam &lt;jars&gt;" in swapped.text
            and "Cordless" not in swapped.text
        )


async def test_a_bad_distance_is_one_clear_line(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            got = await page.get("/offers", params={"near": "u4pruy", "km": "far"})
        assert got.status_code == 400 and "“far” is not a distance in km." in got.text
