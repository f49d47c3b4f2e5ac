"""Neighbours, in process (tests/webutil.py): whom I trust and know, a neighbour's page, vouch, warn, name."""

from __future__ import annotations

import trio

from meshnode import records as r
from meshnode.identity import peer_id_of
from tests.conftest import Author
from tests.webutil import BASE, web_page

ME, BOB, CAROL, DAN = Author(71), Author(72), Author(73), Author(74)
BOB_ID = peer_id_of(BOB.public)


async def test_the_list_names_who_i_trust_and_who_i_know(tmp_path):
    async with web_page(tmp_path, ME) as page:
        page.node.stored(
            ME.sign(r.AttestBody(subject=BOB.public, level=800, note="good neighbour")),
            BOB.sign(r.AttestBody(subject=CAROL.public, level=600)),
            BOB.sign(r.ProfileBody(nickname="Bob", bio="at number 7")),
            DAN.sign(r.ProfileBody(nickname="Dan <the man>", bio="new here")),
        )
        with trio.fail_after(10):
            got = await page.get("/neighbours")
        assert got.status_code == 200 and got.text.count("<h1>") == 1
        assert f'href="/neighbours/{BOB_ID}"' in got.text and "You vouched for them." in got.text
        assert f'href="/neighbours/{peer_id_of(CAROL.public)}"' in got.text and "Through Bob" in got.text
        assert f'href="/neighbours/{peer_id_of(DAN.public)}"' in got.text
        assert "Dan &lt;the man&gt;" in got.text and "new here" in got.text


async def test_a_neighbours_page_explains_trust_warnings_and_forms(tmp_path):
    async with web_page(tmp_path, ME) as page:
        page.node.stored(
            BOB.sign(r.ProfileBody(nickname="Bob", bio="the <red> door")),
            ME.sign(r.AttestBody(subject=CAROL.public, level=900, note="my sister")),
            CAROL.sign(r.AttestBody(subject=BOB.public, level=700, note="fixed my bike")),
            ME.sign(r.AttestBody(subject=DAN.public, level=900)),
            DAN.sign(r.AttestBody(subject=BOB.public, level=-900, note="kept my ladder")),
        )
        with trio.fail_after(10):
            bob = await page.get(f"/neighbours/{BOB_ID}")
        assert bob.status_code == 200 and bob.text.count("<h1>") == 1
        assert (
            "the &lt;red&gt; door" in bob.text and "fixed my bike" in bob.text and "strength 0.63" in bob.text
        )
        for action, button in (("vouch", "Vouch"), ("warn", "Warn"), ("name", "Save name")):
            assert f'action="/neighbours/{BOB_ID}/{action}"' in bob.text and f">{button}</button>" in bob.text
        assert 'name="level" value="0.8"' in bob.text and "What happened" in bob.text
        assert "Warnings" in bob.text and "kept my ladder" in bob.text and "takes off" in bob.text


async def test_vouch_warn_and_name(tmp_path):
    (tmp_path / "home").mkdir()  # where a petname is kept
    async with web_page(tmp_path, ME) as page:
        page.node.stored(BOB.sign(r.ProfileBody(nickname="Bob")))
        before = page.node.store.count()
        with trio.fail_after(10):
            vouched = await page.post(
                f"/neighbours/{BOB_ID}/vouch", {"note": "lent me a drill", "level": "0.8"}
            )
            after_vouch = await page.get(vouched.headers["location"])
            score = (await page.api.trust(BOB_ID))["score"]
            warned = await page.post(f"/neighbours/{BOB_ID}/warn", {"note": "never gave it back"})
            after_warn = (await page.api.trust(BOB_ID))["score"]
            named = await page.post(f"/neighbours/{BOB_ID}/name", {"name": "Bob from 7"})
            shown = await page.get(named.headers["location"])
        assert vouched.status_code == 303 and vouched.headers["location"] == f"/neighbours/{BOB_ID}?done=1"
        assert 'role="status">Done.' in after_vouch.text and "lent me a drill" in after_vouch.text
        assert score > 0.7 and after_warn == 0
        assert warned.status_code == 303 and page.node.store.count() == before + 2
        assert named.status_code == 303
        assert "<h1>Bob from 7</h1>" in shown.text and "never gave it back" in shown.text


async def test_bad_input_and_forged_posts_store_nothing(tmp_path):
    async with web_page(tmp_path, ME) as page:
        me = peer_id_of(ME.public)
        before = page.node.store.count()
        with trio.fail_after(10):
            empty_warning = await page.post(f"/neighbours/{BOB_ID}/warn", {"note": "  "})
            bad_level = await page.post(f"/neighbours/{BOB_ID}/vouch", {"level": "lots"})
            too_high = await page.post(f"/neighbours/{BOB_ID}/vouch", {"level": "7"})
            myself = await page.post(f"/neighbours/{me}/vouch", {"note": "I am great"})
            name_myself = await page.post(f"/neighbours/{me}/name", {"name": "Me"})
            nobody = await page.post("/neighbours/nobody-at-all/vouch", {"note": "?"})
            long_name = await page.post(f"/neighbours/{BOB_ID}/name", {"name": "x" * 500})
            forged = [
                await page.client.post(
                    f"/neighbours/{BOB_ID}/{action}", data={"note": "x"}, headers={"origin": BASE}
                )
                for action in ("vouch", "warn", "name")
            ]
            own_page = await page.get(f"/neighbours/{me}")
        assert empty_warning.status_code == 400 and "Say what happened" in empty_warning.text
        assert bad_level.status_code == 400 and "“lots” is not a level" in bad_level.text
        assert too_high.status_code == 400 and "level" in too_high.text
        assert myself.status_code == 403 and 'role="alert"' in myself.text
        assert name_myself.status_code == 403
        assert nobody.status_code in (400, 404) and 'role="alert"' in nobody.text
        assert long_name.status_code == 400
        assert [f.status_code for f in forged] == [403, 403, 403]
        assert page.node.store.count() == before
        assert page.api.people.petnames == {}
        assert "This is you." in own_page.text and "/vouch" not in own_page.text
