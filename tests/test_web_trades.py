"""The trades pages, in process (tests/webutil.py): the list, one trade, every move's form, paying.

Each move the page offers is posted through its form: a move the state
allows answers 303 and changes the trade; one it does not allow is one
clear line and signs nothing; a post without the CSRF token is refused.
"""

from __future__ import annotations

import re

import trio

from meshnode import records as r
from tests.conftest import NOW, Author
from tests.webutil import BASE, WebPage, web_page

ME, BOB = Author(51), Author(52)
DAY = 86_400_000


def replies(page: WebPage) -> int:
    return len(page.node.store.records_of_type("reply"))


async def latest(page: WebPage, pid: str) -> str:
    return (await page.api.proposal(pid))["moves"][-1]["id"]


async def bob_moves(page: WebPage, pid: str, action: str, **kw) -> None:
    """Bob answers the latest move of trade ``pid`` (a reply signed by Bob, stored)."""
    page.node.now += 1000
    prev = bytes.fromhex(await latest(page, pid))
    body = r.ReplyBody(proposal=bytes.fromhex(pid), action=action, prev=prev, **kw)
    page.node.stored(BOB.sign(body, ts=page.node.now))


async def i_propose(
    page: WebPage, title: str = "Ladder", kind: str = "give", price: int | None = None
) -> str:
    """I propose for Bob's offer ``title``: the trade's id."""
    offer = BOB.sign(r.OfferBody(title=title, kind=kind, price=price), ts=NOW)
    page.node.stored(offer)
    page.node.now += 1000
    return (await page.api.propose(offer.id.hex(), [], "may I?"))["id"]


async def bob_proposes(page: WebPage, kind: str = "give", title: str = "Drill") -> str:
    """Bob proposes for my offer ``title``: the trade's id."""
    mine = ME.sign(r.OfferBody(title=title, kind=kind), ts=NOW)
    page.node.stored(mine)
    page.node.now += 1000
    body = r.ProposalBody(to=ME.public, take=(mine.id,), note="hello <b>", expires=page.node.now + 7 * DAY)
    proposal = BOB.sign(body, ts=page.node.now)
    page.node.stored(proposal)
    return proposal.id.hex()


async def state(page: WebPage, pid: str) -> str:
    return (await page.api.proposal(pid))["state"]


def buttons(html: str) -> list[str]:
    """The submit buttons of the page's main part (not the header's "Log out")."""
    return re.findall(r'<button type="submit">([^<]+)</button>', html.split('<main id="main"')[1])


async def move(page: WebPage, pid: str, action: str, **fields: str):
    page.node.now += 1000
    return await page.post(f"/trades/{pid}/{action}", {"note": "ok", **fields})


async def test_the_list_says_each_trade_in_words_and_links_it(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            mine = await i_propose(page, title="Ladder <tall>")
            theirs = await bob_proposes(page)
            got = await page.get("/trades")
        assert got.status_code == 200
        assert "You ask" in got.text and "Ladder &lt;tall&gt;" in got.text
        assert "asks for your Drill" in got.text
        assert f'href="/trades/{mine}"' in got.text and f'href="/trades/{theirs}"' in got.text
        assert "proposed: your move" in got.text and "proposed: waiting for" in got.text


async def test_accept_then_complete_through_the_forms(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(20):
            pid = await bob_proposes(page)
            shown = await page.get(f"/trades/{pid}")
            assert shown.status_code == 200
            assert buttons(shown.text) == ["Accept", "Propose other terms", "Decline"]
            assert f"{page.api.name_of(BOB.public)} proposed" in shown.text
            assert "hello &lt;b&gt;" in shown.text  # Bob's note, escaped
            accepted = await move(page, pid, "accept")
            assert accepted.status_code == 303 and accepted.headers["location"] == f"/trades/{pid}?done=1"
            assert await state(page, pid) == "accepted"
            after = await page.get(accepted.headers["location"])
            assert 'role="status"' in after.text
            assert buttons(after.text) == ["Complete", "Cancel"]  # not a loan: no "I received it"
            assert "You accepted" in after.text
            done = await move(page, pid, "complete")
            assert done.status_code == 303
            moves = (await page.api.proposal(pid))["moves"]
            assert [m["action"] for m in moves] == ["propose", "accept", "complete"]
            await bob_moves(page, pid, "complete")
            assert await state(page, pid) == "completed"
            final = await page.get(f"/trades/{pid}")
            assert buttons(final.text) == [] and "Nothing to do here now." in final.text


async def test_decline_and_cancel(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(20):
            theirs = await bob_proposes(page)
            assert (await move(page, theirs, "decline")).status_code == 303
            assert await state(page, theirs) == "declined"
            mine = await i_propose(page)
            shown = await page.get(f"/trades/{mine}")
            assert buttons(shown.text) == ["Cancel"]
            assert (await move(page, mine, "cancel")).status_code == 303
            assert await state(page, mine) == "cancelled"


async def test_a_loan_i_borrow_received(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(20):
            pid = await i_propose(page, kind="lend")
            await bob_moves(page, pid, "accept")
            shown = await page.get(f"/trades/{pid}")
            assert buttons(shown.text) == ["I received it", "Complete", "Cancel"]
            got = await move(page, pid, "received")
            assert got.status_code == 303
            assert await state(page, pid) == "handed over"
            after = await page.get(f"/trades/{pid}")
            # only the lender moves now
            assert buttons(after.text) == []
            assert "lent out: waiting for" in after.text


async def test_a_loan_i_lend_extended_and_back(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(20):
            pid = await bob_proposes(page, kind="lend")
            assert (await move(page, pid, "accept")).status_code == 303
            shown = await page.get(f"/trades/{pid}")
            assert buttons(shown.text) == ["Complete", "Cancel"]  # the borrower says "I received it", not me
            await bob_moves(page, pid, "received")
            assert await state(page, pid) == "handed over"
            shown = await page.get(f"/trades/{pid}")
            assert buttons(shown.text) == ["Extend", "It is back"]
            assert '<label for="days-extend">Days</label>' in shown.text
            due = (await page.api.proposal(pid))["due"]
            bad = await move(page, pid, "extend", days="soon")
            assert bad.status_code == 400 and "“soon” is not a number of days" in bad.text
            got = await move(page, pid, "extend", days="7")
            assert got.status_code == 303
            assert (await page.api.proposal(pid))["due"] > due
            assert (await move(page, pid, "returned")).status_code == 303
            assert await state(page, pid) == "returned"


async def test_a_move_the_state_does_not_allow_is_one_line_and_signs_nothing(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(20):
            pid = await i_propose(page)
            before = replies(page)
            for action in ("complete", "accept", "returned", "received"):
                got = await move(page, pid, action)
                assert got.status_code == 403, (action, got.text)
                assert 'role="alert"' in got.text
                assert replies(page) == before
            extend = await move(page, pid, "extend", days="3")
            assert extend.status_code == 403 and "only a loan" in extend.text
            unknown = await move(page, pid, "explode")
            assert unknown.status_code == 404
            not_mine = await move(page, pid, "counter")  # my own proposal: the move is Bob's
            assert not_mine.status_code in (400, 403) and 'role="alert"' in not_mine.text
            assert replies(page) == before
            assert await state(page, pid) == "proposed"


async def test_no_csrf_no_move(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(20):
            pid = await bob_proposes(page)
            before = replies(page)
            for action in ("accept", "decline", "pay"):
                got = await page.client.post(
                    f"/trades/{pid}/{action}", data={"note": "x"}, headers={"origin": BASE}
                )
                assert got.status_code == 403
                wrong = await page.client.post(
                    f"/trades/{pid}/{action}", data={"csrf": "0" * 64}, headers={"origin": BASE}
                )
                assert wrong.status_code == 403
            assert replies(page) == before
            assert await state(page, pid) == "proposed"


async def test_paying_for_a_priced_offer_received(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(20):
            pid = await i_propose(page, title="Bike repair", kind="service", price=250)
            early = await page.post(f"/trades/{pid}/pay", {"amount": "2.50"})
            assert early.status_code == 403 and "nothing to pay" in early.text
            await bob_moves(page, pid, "accept")
            assert (await move(page, pid, "complete")).status_code == 303
            await bob_moves(page, pid, "complete")
            assert await state(page, pid) == "completed"
            shown = await page.get(f"/trades/{pid}")
            assert buttons(shown.text) == ["Pay"]
            assert 'name="amount" inputmode="decimal" required value="2.50"' in shown.text
            got = await page.post(f"/trades/{pid}/pay", {"amount": "2.50", "memo": "thanks"})
            assert got.status_code == 303 and got.headers["location"] == f"/trades/{pid}?done=1"
            transfers = page.node.store.records_of_type("transfer")
            assert len(transfers) == 1
            body = transfers[0].body
            assert body.to == BOB.public and body.amount == 250 and body.trade == bytes.fromhex(pid)
            paid = await page.get(f"/trades/{pid}")
            assert buttons(paid.text) == []
            again = await page.post(f"/trades/{pid}/pay", {"amount": "2.50"})
            assert again.status_code == 403 and len(page.node.store.records_of_type("transfer")) == 1


async def test_a_trade_that_is_not_here_is_one_line(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            unknown = await page.get("/trades/" + "ab" * 32)
            garbage = await page.get("/trades/not-an-id")
            move_unknown = await page.post("/trades/" + "ab" * 32 + "/accept", {"note": ""})
        assert unknown.status_code == 404 and 'role="alert"' in unknown.text
        assert garbage.status_code == 400
        assert move_unknown.status_code == 404 and replies(page) == 0


async def test_private_details_are_shown_to_the_parties(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            offer = BOB.sign(r.OfferBody(title="Ladder", kind="give"), ts=NOW)
            page.node.stored(offer)
            pid = (await page.api.propose(offer.id.hex(), [], "", None, "I live at <number 12>"))["id"]
            shown = await page.get(f"/trades/{pid}")
        assert "I live at &lt;number 12&gt;" in shown.text


async def test_counter_names_offers_by_checkboxes_and_changes_the_terms(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(20):
            pid = await bob_proposes(page, title="Drill")
            ladder = BOB.sign(r.OfferBody(title="Ladder <tall>", kind="swap"), ts=NOW)
            page.node.stored(ladder)
            shown = await page.get(f"/trades/{pid}")
            assert "What you give" in shown.text and "Ladder &lt;tall&gt;" in shown.text
            drill = (await page.api.proposal(pid))["take"][0]
            assert f'name="give" value="{drill}" checked' in shown.text  # the current terms are checked
            before = replies(page)
            page.node.now += 1000
            body = f"csrf={page.csrf}&give={drill}&take={ladder.id.hex()}&note=and+your+ladder%3F"
            got = await page.client.post(
                f"/trades/{pid}/counter",
                content=body,
                headers={"origin": BASE, "content-type": "application/x-www-form-urlencoded"},
            )
            assert got.status_code == 303, got.text
            assert replies(page) == before + 1
            row = await page.api.proposal(pid)
            assert row["state"] == "countered" and set(row["you_get"]) == {"Ladder <tall>"}
            assert set(row["you_give"]) == {"Drill"}
            nothing = await page.client.post(
                f"/trades/{pid}/counter",
                content=f"csrf={page.csrf}&note=x",
                headers={"origin": BASE, "content-type": "application/x-www-form-urlencoded"},
            )
            assert nothing.status_code in (400, 403) and replies(page) == before + 1
