"""The trade rings page, in process (tests/webutil.py): a suggested ring proposed, accepted and completed."""

from __future__ import annotations

import re

import trio

from meshnode import records as r
from meshnode.identity import peer_id_of
from tests.conftest import Author
from tests.webutil import web_page

ME, BOB, CAROL = Author(61), Author(62), Author(63)


def three_way(page) -> None:
    """I give a drill and want a ladder; Bob gives a ladder, wants a sewing machine; Carol the reverse."""
    page.node.stored(
        ME.sign(r.OfferBody(title="Cordless drill", kind="give")),
        ME.sign(r.WantBody(title="Ladder", kind="give")),
        BOB.sign(r.OfferBody(title="Aluminium ladder", kind="give")),
        BOB.sign(r.WantBody(title="Sewing machine", kind="give")),
        CAROL.sign(r.OfferBody(title="Sewing machine", kind="give")),
        CAROL.sign(r.WantBody(title="Cordless drill", kind="give")),
    )


def suggestion_of(html: str) -> str:
    found = re.search(r'name="suggestion" value="([0-9a-f]+)"', html)
    assert found is not None, html
    return found.group(1)


def ring_of(html: str) -> str:
    found = re.search(r'action="/rings/([0-9a-f]{64})/', html)
    assert found is not None, html
    return found.group(1)


async def test_a_suggested_ring_is_proposed_accepted_and_completed(tmp_path):
    async with web_page(tmp_path, ME) as page:
        three_way(page)
        me = page.node.me
        with trio.fail_after(10):
            first = await page.get("/rings")
            assert first.status_code == 200 and first.text.count("<h1>") == 1
            assert "Propose this ring" in first.text and "Aluminium ladder" in first.text
            assert "You give Cordless drill to " in first.text
            proposed = await page.post(
                "/rings", {"suggestion": suggestion_of(first.text), "note": "a <b>ring</b>"}
            )
            assert proposed.status_code == 303 and proposed.headers["location"] == "/rings?done=1"
            shown = await page.get("/rings?done=1")
            assert 'role="status">Done.' in shown.text and "Already proposed" in shown.text
            assert "a &lt;b&gt;ring&lt;/b&gt;" in shown.text
            assert ">Accept</button>" in shown.text and ">Decline</button>" in shown.text
            rid = ring_of(shown.text)
            accepted = await page.post(f"/rings/{rid}/accept", {"note": ""})
            assert accepted.status_code == 303
            for other in (BOB, CAROL):
                page.node.stored(
                    other.sign(r.RingMoveBody(ring=bytes.fromhex(rid), action="accept"), ts=page.node.now)
                )
            ready = await page.get("/rings")
            assert ">Complete</button>" in ready.text and ">Accept</button>" not in ready.text
            completed = await page.post(f"/rings/{rid}/complete", {"note": "thanks"})
            assert completed.status_code == 303
        ring = (await page_rings(page))[0]
        done = [p["peer"] for p in ring["parties"] if p["completed"]]
        assert ring["state"] == "accepted" and done == [peer_id_of(me.public)]  # the others complete theirs


async def page_rings(page) -> list:
    from meshnode.api.ringservice import RingService

    return await RingService(page.api).mine()


async def test_bad_input_is_one_clear_line_and_changes_nothing(tmp_path):
    async with web_page(tmp_path, ME) as page:
        three_way(page)
        with trio.fail_after(10):
            first = await page.get("/rings")
            empty = await page.post("/rings", {"suggestion": ""})
            unknown = await page.post("/rings", {"suggestion": "abcdef0123"})
            assert empty.status_code == 400 and "Choose a suggested ring to propose." in empty.text
            assert unknown.status_code == 404 and 'role="alert"' in unknown.text
            assert await page_rings(page) == []
            await page.post("/rings", {"suggestion": suggestion_of(first.text)})
            rid = (await page_rings(page))[0]["id"]
            odd = await page.post(f"/rings/{rid}/explode", {"note": ""})
            early = await page.post(f"/rings/{rid}/complete", {"note": ""})
            nowhere = await page.post(f"/rings/{'0' * 64}/accept", {"note": ""})
        assert odd.status_code == 400 and "action: expected one of" in odd.text
        assert early.status_code in (400, 403, 409) and 'role="alert"' in early.text
        assert nowhere.status_code == 404
        after = (await page_rings(page))[0]
        assert after["state"] == "proposed" and not any(p["accepted"] for p in after["parties"])


async def test_forms_without_the_csrf_token_are_refused(tmp_path):
    async with web_page(tmp_path, ME) as page:
        three_way(page)
        with trio.fail_after(10):
            first = await page.get("/rings")
            suggestion = suggestion_of(first.text)
            refused = await page.client.post("/rings", data={"suggestion": suggestion})
            assert refused.status_code == 403 and await page_rings(page) == []
            await page.post("/rings", {"suggestion": suggestion})
            rid = (await page_rings(page))[0]["id"]
            move = await page.client.post(f"/rings/{rid}/accept", data={"note": ""})
        assert move.status_code == 403
        assert not any(p["accepted"] for p in (await page_rings(page))[0]["parties"])


async def test_no_rings_and_no_suggestions_say_so(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            got = await page.get("/rings")
        assert (
            got.status_code == 200
            and "You are in no ring yet." in got.text
            and "No ring found now." in got.text
        )
