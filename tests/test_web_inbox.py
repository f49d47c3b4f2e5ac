"""The inbox page and its event stream, in process (tests/webutil.py).

The stream is read to its end: each test shortens it
(``meshnode.web.pages.inbox.STREAM_S``), since httpx's ASGI transport hands
back a response only once the app has finished it.
"""

from __future__ import annotations

import httpx
import trio

from meshnode import records as r
from meshnode.inbox import Notice
from meshnode.web.app import build_web_app
from meshnode.web.pages import inbox
from tests.conftest import Author
from tests.webutil import BASE, WebPage, web_page

ME, BOB = Author(61), Author(62)
DAY = 86_400_000


async def bob_proposes(page: WebPage, title: str = "Drill <big>") -> r.Record:
    """Bob proposes for my offer, and the inbox keeps the notice (as the feed would): the proposal."""
    mine = ME.sign(r.OfferBody(title=title, kind="give"))
    page.node.stored(mine)
    body = r.ProposalBody(to=ME.public, take=(mine.id,), note="hi <there>", expires=page.node.now + DAY)
    proposal = BOB.sign(body, ts=page.node.now)
    page.node.stored(proposal)
    await page.api.feed.keep([Notice("proposal", proposal.id, BOB.public, proposal.id)])
    return proposal


async def test_the_inbox_lists_notices_newest_first_with_a_link_to_the_trade(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            empty = await page.get("/inbox")
            first = await bob_proposes(page, "Drill <big>")
            second = await bob_proposes(page, "Saw")
            got = await page.get("/inbox")
            fragment = await page.get("/inbox/list")
        assert empty.status_code == 200 and "Nothing yet." in empty.text
        assert got.status_code == 200
        assert 'data-live="/events"' in got.text and 'data-refresh="/inbox/list"' in got.text
        assert "Drill &lt;big&gt;" in got.text and "hi &lt;there&gt;" in got.text  # escaped
        assert got.text.index("Saw") < got.text.index("Drill")  # newest first
        assert f'href="/trades/{first.id.hex()}">Open the trade</a>' in got.text
        assert f'href="/trades/{second.id.hex()}">Open the trade</a>' in got.text
        assert fragment.status_code == 200 and "<html" not in fragment.text and "Saw" in fragment.text


async def test_pages_and_the_stream_need_a_session(tmp_path):
    async with web_page(tmp_path, ME) as page:
        transport = httpx.ASGITransport(app=build_web_app(page.ctx))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as stranger:
            with trio.fail_after(10):
                for url in ("/inbox", "/inbox/list", "/events"):
                    got = await stranger.get(url)
                    assert got.status_code == 303 and got.headers["location"] == "/login", url
                htmx = await stranger.get("/events", headers={"hx-request": "true"})
                assert htmx.status_code == 401


async def test_the_stream_sends_a_notice_kept_while_it_is_open(tmp_path, monkeypatch):
    monkeypatch.setattr(inbox, "STREAM_S", 1.5)
    async with web_page(tmp_path, ME) as page:
        got: list[httpx.Response] = []

        async def listen() -> None:
            got.append(await page.get("/events"))

        with trio.fail_after(10):
            await bob_proposes(page)  # before the stream: not sent (it starts with the next new notice)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                await trio.sleep(0.3)
                await bob_proposes(page, "Saw")
        response = got[0]
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "no-store" in response.headers["cache-control"]
        text = response.text
        assert text.startswith(": meshnode notices\nretry: 5000\nid: 1\n\n")
        assert "id: 2\nevent: notice\ndata: 2\n\n" in text
        assert "data: 1\n" not in text and "Saw" not in text  # only the number travels


async def test_the_stream_catches_up_from_the_last_event_id(tmp_path, monkeypatch):
    monkeypatch.setattr(inbox, "STREAM_S", 0.2)
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            for title in ("Drill", "Saw", "Ladder"):
                await bob_proposes(page, title)
            resumed = await page.get("/events", headers={"last-event-id": "1"})
            since = await page.get("/events", params={"since": "0"})
            bad = await page.get("/events", params={"since": "-1"})
        assert "event: notice\ndata: 1\n" not in resumed.text
        assert "id: 2\nevent: notice\ndata: 2\n\n" in resumed.text and "data: 3\n" in resumed.text
        assert since.text.count("event: notice") == 3
        assert bad.status_code == 400


async def test_the_stream_says_something_while_nothing_happens(tmp_path, monkeypatch):
    monkeypatch.setattr(inbox, "STREAM_S", 0.5)
    monkeypatch.setattr(inbox, "KEEPALIVE_S", 0.1)
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            got = await page.get("/events")
        assert got.text.count(": keepalive\n\n") >= 2 and "event:" not in got.text


async def test_too_many_streams_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(inbox, "MAX_STREAMS", 0)
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            got = await page.get("/events")
        assert got.status_code == 503 and 'role="alert"' in got.text


async def test_a_stream_ends_when_its_client_goes_away(tmp_path, monkeypatch):
    """Driven at the ASGI level: the client disconnects, the stream stops and lets go of its watcher."""
    monkeypatch.setattr(inbox, "KEEPALIVE_S", 0.05)
    async with web_page(tmp_path, ME) as page:
        app = build_web_app(page.ctx)
        cookie = "; ".join(f"{k}={v}" for k, v in page.client.cookies.items())
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/events",
            "raw_path": b"/events",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8790"), (b"cookie", cookie.encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8790),
        }
        gone = trio.Event()
        sent: list[dict] = []
        asked: list[bool] = []

        async def receive() -> dict:
            if not asked:
                asked.append(True)
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(app, scope, receive, send)
                while len(sent) < 3:  # the start, the greeting, a keepalive
                    await trio.sleep(0.02)
                assert sent[0]["status"] == 200
                assert len(page.api.feed._watchers) == 1
                gone.set()
            assert not page.api.feed._watchers


async def test_the_stream_ends_when_its_session_does(tmp_path, monkeypatch):
    monkeypatch.setattr(inbox, "STREAM_S", 30.0)
    monkeypatch.setattr(inbox, "KEEPALIVE_S", 0.05)
    async with web_page(tmp_path, ME) as page:
        got: list[httpx.Response] = []

        async def listen() -> None:
            got.append(await page.get("/events"))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                await trio.sleep(0.2)
                assert (await page.post("/logout")).status_code == 303
        assert got[0].status_code == 200 and ": keepalive" in got[0].text


def test_the_page_says_notices_without_the_ids_the_cli_needs():
    from meshnode.web.pages.inbox import plain

    assert (
        plain("Bob (okL49W) asks for your Ladder (proposal 788b8162b833)")
        == "Bob (okL49W) asks for your Ladder"
    )
    assert plain("Alice accepted proposal 6bb86793aca2 (their Garden help)") == (
        "Alice accepted the trade (their Garden help)"
    )
    said = "Bob spent it twice (place 2): a double spend (transfers 4d7b47f79445 and f6d2485b70a9; 'x')"
    assert plain(said) == "Bob spent it twice (place 2): a double spend"
    assert plain("Bob (okL49W) paid you 2.00 hours") == "Bob (okL49W) paid you 2.00 hours"
