"""My things, in process (tests/webutil.py): the list, publishing, editing, withdrawing, and refusals."""

from __future__ import annotations

import trio

from meshnode import records as r
from tests.conftest import Author
from tests.webutil import BASE, web_page

ME, BOB = Author(61), Author(62)


async def test_publish_an_offer_and_a_want_then_see_them(tmp_path):
    async with web_page(tmp_path, ME) as page:
        before = page.node.store.count()
        with trio.fail_after(10):
            got = await page.post(
                "/mine/add",
                {
                    "title": "Ladder <3 m>",
                    "type": "offer",
                    "kind": "lend",
                    "desc": "Aluminium",
                    "tags": "tools, garden",
                    "price": "2",
                    "max_days": "7",
                    "deposit": "20 euros",
                },
            )
            want = await page.post("/mine/add", {"title": "A tent", "type": "want", "kind": "lend"})
            shown = await page.get(got.headers["location"])
        assert got.status_code == 303 and got.headers["location"] == "/mine?done=1"
        assert want.status_code == 303
        assert page.node.store.count() == before + 2
        offers = await page.api.items("offer", mine=True)
        assert offers[0]["tags"] == ["garden", "tools"] or offers[0]["tags"] == ["tools", "garden"]
        assert offers[0]["terms"] == {"max_days": 7, "deposit": "20 euros"} and offers[0]["price"] == "2.00"
        assert shown.text.count("<h1>") == 1 and 'role="status">Done.' in shown.text
        assert "Ladder &lt;3 m&gt;" in shown.text and "A tent" in shown.text
        assert ">Withdraw</button>" in shown.text and ">Edit</a>" in shown.text
        assert 'action="/mine/add"' in shown.text and ">Publish</button>" in shown.text


async def test_bad_input_is_one_clear_line_and_stores_nothing(tmp_path):
    async with web_page(tmp_path, ME) as page:
        before = page.node.store.count()
        with trio.fail_after(10):
            no_title = await page.post("/mine/add", {"title": "  ", "type": "offer", "kind": "give"})
            bad_days = await page.post("/mine/add", {"title": "Saw", "kind": "lend", "max_days": "a week"})
            priced_gift = await page.post("/mine/add", {"title": "Jam", "kind": "give", "price": "3"})
            bad_type = await page.post("/mine/add", {"title": "Jam", "type": "loan", "kind": "give"})
            forged = await page.client.post(
                "/mine/add", data={"title": "Forged", "kind": "give"}, headers={"origin": BASE}
            )
        for got in (no_title, bad_days, priced_gift, bad_type):
            assert got.status_code == 400 and 'role="alert"' in got.text, got.text
        assert "“a week” is not a whole number of days." in bad_days.text
        assert "price" in priced_gift.text
        assert forged.status_code == 403
        assert page.node.store.count() == before


async def test_edit_is_prefilled_and_saves(tmp_path):
    async with web_page(tmp_path, ME) as page:
        made = await page.api.item_add(
            "offer", title="Drill", kind="service", desc="Old", price="3", tags=["diy"]
        )
        with trio.fail_after(10):
            form = await page.get(f"/mine/{made['id']}/edit")
            saved = await page.post(
                f"/mine/{made['id']}/edit",
                {
                    "title": "Drill & bits",
                    "kind": "service",
                    "desc": "New",
                    "tags": "diy, tools",
                    "price": "",
                },
            )
            shown = await page.get("/mine?done=1")
            item = await page.api.item_show(made["id"])
        assert form.status_code == 200 and form.text.count("<h1>") == 1
        assert 'value="Drill"' in form.text and ">Old</textarea>" in form.text and 'value="diy"' in form.text
        assert 'value="3.00"' in form.text and ">Save</button>" in form.text
        assert saved.status_code == 303 and saved.headers["location"] == "/mine?done=1"
        assert item["title"] == "Drill & bits" and item["desc"] == "New" and "price" not in item
        assert "Drill &amp; bits" in shown.text


async def test_edit_bad_input_stores_nothing(tmp_path):
    async with web_page(tmp_path, ME) as page:
        made = await page.api.item_add("offer", title="Drill", kind="give")
        before = page.node.store.count()
        with trio.fail_after(10):
            empty = await page.post(f"/mine/{made['id']}/edit", {"title": "", "kind": "give"})
            priced = await page.post(
                f"/mine/{made['id']}/edit", {"title": "Drill", "kind": "give", "price": "5"}
            )
        assert empty.status_code == 400 and 'role="alert"' in empty.text
        assert priced.status_code == 400 and "price" in priced.text
        assert page.node.store.count() == before


async def test_withdraw_and_someone_elses_item_is_refused(tmp_path):
    async with web_page(tmp_path, ME) as page:
        made = await page.api.item_add("offer", title="Drill", kind="give")
        theirs = BOB.sign(r.OfferBody(title="Bob's saw", kind="lend"))
        page.node.stored(theirs)
        before = page.node.store.count()
        with trio.fail_after(10):
            edit_form = await page.get(f"/mine/{theirs.id.hex()}/edit")
            edit = await page.post(f"/mine/{theirs.id.hex()}/edit", {"title": "Mine now", "kind": "lend"})
            withdraw = await page.post(f"/mine/{theirs.id.hex()}/withdraw")
            forged = await page.client.post(f"/mine/{made['id']}/withdraw", headers={"origin": BASE})
            assert page.node.store.count() == before
            done = await page.post(f"/mine/{made['id']}/withdraw")
            again = await page.post(f"/mine/{made['id']}/withdraw")
            shown = await page.get("/mine")
        for got in (edit_form, edit, withdraw):
            assert got.status_code == 403 and 'role="alert"' in got.text
        assert "someone else" in edit.text
        assert forged.status_code == 403
        assert done.status_code == 303 and done.headers["location"] == "/mine?done=1"
        assert again.status_code == 400 and "already withdrawn" in again.text
        assert page.node.store.count() == before + 1
        assert "withdrawn" in shown.text and ">Withdraw</button>" not in shown.text
