"""The group buying pages, in process (tests/webutil.py): the pools, a pool, pledges, organiser moves."""

from __future__ import annotations

import re

import trio

from meshnode import records as r
from meshnode.api.poolservice import DAY_MS, PoolService
from tests.conftest import Author
from tests.webutil import web_page

ME, BOB = Author(71), Author(72)


def pool_by(page, author: Author, title: str = "Apples <crate>") -> str:
    """A pool ``author`` organises, open for a week; its id."""
    body = r.PoolBody(
        title=title,
        supplier="Orchard Farm",
        unit_price=1850,
        min=5,
        max=20,
        closes=page.node.now + 7 * DAY_MS,
    )
    record = author.sign(body, ts=page.node.now)
    page.node.stored(record)
    return record.id.hex()


async def shown(page, pid: str) -> dict:
    return await PoolService(page.api).show(pid)


async def test_the_pools_list_and_a_pledge(tmp_path):
    async with web_page(tmp_path, ME) as page:
        pid = pool_by(page, BOB)
        with trio.fail_after(10):
            listed = await page.get("/pools")
            assert listed.status_code == 200 and listed.text.count("<h1>") == 1
            assert f'<a href="/pools/{pid}">Apples &lt;crate&gt;</a>' in listed.text
            assert f'action="/pools/{pid}/pledge"' in listed.text and ">Pledge</button>" in listed.text
            assert f'<label for="qty-{pid}">How many</label>' in listed.text
            assert "Confirm the order" not in listed.text and "Cancel the pool" not in listed.text  # not mine
            pledged = await page.post(f"/pools/{pid}/pledge", {"quantity": "3"})
            assert pledged.status_code == 303 and pledged.headers["location"] == f"/pools/{pid}?done=1"
            one = await page.get(pledged.headers["location"])
        assert (
            one.status_code == 200
            and one.text.count("<h1>") == 1
            and "<h1>Apples &lt;crate&gt;</h1>" in one.text
        )
        assert 'role="status">Done.' in one.text and "You pledged 3" in one.text
        assert "<td>55.50</td>" in one.text  # 3 x 18.50
        assert (await shown(page, pid))["my_pledge"] == 3


async def test_bad_pledges_are_one_clear_line_and_change_nothing(tmp_path):
    async with web_page(tmp_path, ME) as page:
        pid = pool_by(page, BOB)
        with trio.fail_after(10):
            words = await page.post(f"/pools/{pid}/pledge", {"quantity": "lots"})
            negative = await page.post(f"/pools/{pid}/pledge", {"quantity": "-1"})
            nowhere = await page.post(f"/pools/{'0' * 64}/pledge", {"quantity": "1"})
            unknown = await page.get(f"/pools/{'0' * 64}")
        assert words.status_code == 400 and "“lots” is not a whole number." in words.text
        assert negative.status_code == 400 and 'role="alert"' in negative.text
        assert nowhere.status_code == unknown.status_code == 404
        assert (await shown(page, pid))["my_pledge"] == 0


async def test_the_organiser_moves(tmp_path):
    async with web_page(tmp_path, ME) as page:
        pid = pool_by(page, ME, "Flour")
        with trio.fail_after(10):
            listed = await page.get("/pools")
            assert (
                ">Cancel the pool</button>" in listed.text
                and f'formaction="/pools/{pid}/cancel"' in listed.text
            )
            assert ">Confirm the order</button>" not in listed.text  # not closed yet
            odd = await page.post(f"/pools/{pid}/explode", {"note": ""})
            early = await page.post(f"/pools/{pid}/delivered", {"note": ""})
            assert odd.status_code == 400 and "action: expected one of" in odd.text
            assert early.status_code in (400, 403, 409) and 'role="alert"' in early.text
            assert (await shown(page, pid))["state"] == "open"
            cancelled = await page.post(f"/pools/{pid}/cancel", {"note": "the farm closed"})
            assert cancelled.status_code == 303 and cancelled.headers["location"] == f"/pools/{pid}?done=1"
            after = await page.get(f"/pools/{pid}")
            gone = await page.get("/pools")
            every = await page.get("/pools", params={"all": "1"})
        assert "Cancelled by the organiser." in after.text and ">Pledge</button>" not in after.text
        assert "Flour" not in gone.text and "Flour" in every.text
        assert (await shown(page, pid))["state"] == "cancelled"


async def test_forms_without_the_csrf_token_are_refused(tmp_path):
    async with web_page(tmp_path, ME) as page:
        theirs, mine = pool_by(page, BOB), pool_by(page, ME, "Flour")
        with trio.fail_after(10):
            pledge = await page.client.post(f"/pools/{theirs}/pledge", data={"quantity": "2"})
            cancel = await page.client.post(f"/pools/{mine}/cancel", data={"note": ""})
        assert pledge.status_code == cancel.status_code == 403
        assert (await shown(page, theirs))["my_pledge"] == 0 and (await shown(page, mine))["state"] == "open"


async def test_no_pools_says_so(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            got = await page.get("/pools")
        assert got.status_code == 200 and "No open pools now." in got.text
        assert not re.search(r"<script>", got.text)


async def test_start_a_pool_through_the_form(tmp_path):
    import datetime as dt

    async with web_page(tmp_path, ME) as page:
        today = dt.datetime.fromtimestamp(page.node.now / 1000, tz=dt.UTC).date()
        fields = {
            "title": "Organic apples <crates>",
            "supplier": "Ferme du Coin",
            "unit_price": "1.5",
            "unit": "crate",
            "min": "10",
            "max": "30",
            "closes": (today + dt.timedelta(days=14)).isoformat(),
        }
        with trio.fail_after(10):
            shown = await page.get("/pools")
            assert "Start a pool" in shown.text and 'action="/pools/new"' in shown.text
            started = await page.post("/pools/new", fields)
            assert started.status_code == 303 and started.headers["location"].endswith("?done=1")
            pool = await page.get(started.headers["location"])
            assert "Organic apples &lt;crates&gt;" in pool.text and 'role="status"' in pool.text
            [record] = page.node.store.records_of_type("pool")
            assert (record.body.unit_price, record.body.min, record.body.max) == (150, 10, 30)
            for bad in ({"min": "ten"}, {"max": "5"}, {"closes": "2000-01-01"}, {"unit_price": "lots"}):
                refused = await page.post("/pools/new", fields | bad)
                assert refused.status_code == 400 and 'role="alert"' in refused.text, bad
            no_csrf = await page.client.post(
                "/pools/new", data=fields, headers={"origin": "http://127.0.0.1:8790"}
            )
            assert no_csrf.status_code == 403
            assert len(page.node.store.records_of_type("pool")) == 1
