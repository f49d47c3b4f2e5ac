"""The money page, in process (tests/webutil.py): balances, where the limit comes from, paying."""

from __future__ import annotations

import re

import trio

from meshnode import records as r
from meshnode.identity import peer_id_of
from tests.conftest import Author
from tests.webutil import BASE, web_page

ME, BOB, CAROL = Author(71), Author(72), Author(73)


def transfers(page) -> list[r.Record]:
    return page.node.store.records_of_type("transfer")


async def test_balance_limit_and_where_it_comes_from(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            empty = await page.get("/money")
            # Bob (whom I trust) vouches for me: my limit grows by what he extends
            page.node.stored(ME.sign(r.AttestBody(subject=BOB.public, level=1000)))
            page.node.stored(BOB.sign(r.AttestBody(subject=ME.public, level=1000, note="good <egg>")))
            got = await page.get("/money")
        assert empty.status_code == 200
        assert (
            "<h1>Money</h1>" in empty.text and '<a href="/money" aria-current="page">Money</a>' in empty.text
        )
        assert "0.00 hours" in empty.text and "you may go down to -5.00 hours" in empty.text
        assert "5.00 hours to start with" in empty.text
        assert "No payments yet." in empty.text
        assert "You can pay a neighbour once you trust one" in empty.text
        name = page.api.name_of(BOB.public)
        assert f"more because {name} vouched for you" in got.text
        assert f'<option value="{peer_id_of(BOB.public)}">{name}</option>' in got.text
        for label in ("Who", "Amount", "What for"):
            assert re.search(rf'<label for="pay-\w+">{label}</label>', got.text), label


async def test_paying_a_neighbour(tmp_path):
    async with web_page(tmp_path, ME) as page:
        page.node.stored(ME.sign(r.AttestBody(subject=BOB.public, level=1000)))
        with trio.fail_after(10):
            paid = await page.post(
                "/money/pay", {"peer": peer_id_of(BOB.public), "amount": "1.5", "memo": "jam <3"}
            )
            assert paid.status_code == 303 and paid.headers["location"] == "/money?done=1"
            after = await page.get("/money?done=1")
        [transfer] = transfers(page)
        assert (
            transfer.body.to == BOB.public and transfer.body.amount == 150 and transfer.body.memo == "jam <3"
        )
        assert 'role="status"' in after.text and "Done." in after.text
        assert f"You paid {page.api.name_of(BOB.public)} 1.50 hours" in after.text
        assert "jam &lt;3" in after.text and "-1.50 hours" in after.text


async def test_a_payment_the_service_refuses_is_one_line_and_signs_nothing(tmp_path):
    async with web_page(tmp_path, ME) as page:
        page.node.stored(ME.sign(r.AttestBody(subject=BOB.public, level=1000)))
        with trio.fail_after(10):
            over = await page.post("/money/pay", {"peer": peer_id_of(BOB.public), "amount": "100"})
            bad = await page.post("/money/pay", {"peer": peer_id_of(BOB.public), "amount": "lots"})
            nobody = await page.post("/money/pay", {"peer": "", "amount": "1"})
            myself = await page.post("/money/pay", {"peer": peer_id_of(ME.public), "amount": "1"})
        assert (
            over.status_code == 403 and "below your credit limit" in over.text and 'role="alert"' in over.text
        )
        assert bad.status_code == 400 and 'role="alert"' in bad.text
        assert nobody.status_code in (400, 404)
        assert myself.status_code == 403 and "you cannot pay yourself" in myself.text
        assert transfers(page) == []


async def test_no_csrf_no_payment(tmp_path):
    async with web_page(tmp_path, ME) as page:
        page.node.stored(ME.sign(r.AttestBody(subject=BOB.public, level=1000)))
        with trio.fail_after(10):
            data = {"peer": peer_id_of(BOB.public), "amount": "1"}
            none = await page.client.post("/money/pay", data=data, headers={"origin": BASE})
            foreign = await page.post("/money/pay", data, headers={"origin": "http://evil.example:8790"})
        assert none.status_code == 403 and foreign.status_code == 403
        assert transfers(page) == []
