"""The web page's guards: login, sessions, Origin and CSRF, Host, headers, and what the daemon binds.

In process (tests/webutil.py: the real app over a fake node, httpx), then
against real daemons (their web page over TCP, their sockets seen by psutil).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest
import trio

from meshnode.web.app import COOKIE
from meshnode.web.auth import LOGIN_TTL_MS
from tests.conftest import Author
from tests.daemonutil import Daemon, stopped_at_exit
from tests.webutil import BASE, WebPage, web_page

pytestmark = pytest.mark.timeout(120)

ME = Author(51)


def no_session(page: WebPage) -> None:
    page.client.cookies.clear()


async def still_logged_in(page: WebPage) -> bool:
    return (await page.get("/offers")).status_code == 200


# --- in process: the login and the session ----------------------------------------------


async def test_no_session_redirects_to_the_login(tmp_path):
    async with web_page(tmp_path, ME) as page:
        no_session(page)
        with trio.fail_after(10):
            for url in ("/", "/offers", "/offers?q=drill", "/mine", "/inbox", "/trades", "/nowhere-at-all"):
                got = await page.get(url)
                if url == "/nowhere-at-all":  # unknown URLs are 404 with or without a session
                    assert got.status_code == 404
                    continue
                assert got.status_code == 303 and got.headers["location"] == "/login", (url, got)
            htmx = await page.get("/offers", headers={"hx-request": "true"})
            login = await page.get("/login")
            page.client.cookies.set(COOKIE, "0" * 64)
            forged = await page.get("/offers")
        assert htmx.status_code == 401 and htmx.headers["hx-redirect"] == "/login"
        assert login.status_code == 200 and "meshnode web" in login.text
        assert forged.status_code == 303 and forged.headers["location"] == "/login"


async def test_no_session_no_post(tmp_path):
    async with web_page(tmp_path, ME) as page:
        csrf = page.csrf
        no_session(page)
        with trio.fail_after(10):
            got = await page.post("/logout")
            add = await page.post("/mine/add", {"title": "Saw", "kind": "give"})
        assert got.status_code == 303 and got.headers["location"] == "/login"
        assert add.status_code == 303 and add.headers["location"] == "/login"
        assert csrf  # the token alone, without the session, opened nothing


async def test_a_login_link_works_once(tmp_path):
    async with web_page(tmp_path, ME) as page:
        no_session(page)
        token = page.ctx.auth.new_login(page.node.clock())
        with trio.fail_after(10):
            first = await page.get(f"/login?token={token}")
            assert first.status_code == 303 and first.headers["location"] == "/offers"
            assert await still_logged_in(page)
            no_session(page)
            second = await page.get(f"/login?token={token}")
            after = await page.get("/offers")
            wrong = await page.get("/login?token=" + "0" * 64)
        assert second.status_code == 403 and COOKIE not in second.headers.get("set-cookie", "")
        assert 'role="alert"' in second.text
        assert after.status_code == 303
        assert wrong.status_code == 403


async def test_a_login_link_expires_after_ten_minutes(tmp_path):
    async with web_page(tmp_path, ME) as page:
        no_session(page)
        late = page.ctx.auth.new_login(page.node.clock())
        in_time = page.ctx.auth.new_login(page.node.clock())
        page.node.now += LOGIN_TTL_MS
        with trio.fail_after(10):
            refused = await page.get(f"/login?token={late}")
            page.node.now -= 1
            accepted = await page.get(f"/login?token={in_time}")
        assert refused.status_code == 403
        assert accepted.status_code == 303 and accepted.headers["location"] == "/offers"


async def test_logging_out_ends_the_session(tmp_path):
    async with web_page(tmp_path, ME) as page:
        old = page.client.cookies[COOKIE]
        with trio.fail_after(10):
            out = await page.post("/logout")
            assert out.status_code == 303 and out.headers["location"] == "/login"
            assert f'{COOKIE}=""' in out.headers["set-cookie"]  # the browser forgets it
            after = await page.get("/offers")
            no_session(page)
            page.client.cookies.set(COOKIE, old)  # kept by someone: ended anyway
            again = await page.get("/offers")
        assert after.status_code == 303 and again.status_code == 303


async def test_the_session_cookie_is_httponly_and_samesite_strict(tmp_path):
    async with web_page(tmp_path, ME) as page:
        no_session(page)
        token = page.ctx.auth.new_login(page.node.clock())
        with trio.fail_after(10):
            got = await page.get(f"/login?token={token}")
        cookie = got.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
        assert not any(f.startswith(("domain", "expires", "max-age")) for f in flags)  # a session cookie


# --- in process: Origin and CSRF ------------------------------------------------------------


class FormFields(HTMLParser):
    """The controls of the form posting to ``action``: names by label text, and every field's default."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action = action
        self.inside = False
        self.ids: dict[str, str] = {}  # id -> name
        self.labels: dict[str, str] = {}  # label text -> id
        self.defaults: dict[str, str] = {}
        self._label_for: str | None = None
        self._label_text: list[str] = []
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("action") == self.action
        if not self.inside:
            return
        if tag in ("input", "textarea", "select") and a.get("name"):
            if a.get("id"):
                self.ids[a["id"]] = a["name"]
            if tag == "select":
                self._select = a["name"]
            elif a.get("type") not in ("checkbox", "radio", "submit"):
                self.defaults.setdefault(a["name"], a.get("value", ""))
        if tag == "option" and self._select and self._select not in self.defaults:
            self.defaults[self._select] = a.get("value", "")
        if tag == "label":
            self._label_for, self._label_text = a.get("for"), []

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        if tag == "select":
            self._select = None
        if tag == "label" and self._label_for is not None:
            self.labels[" ".join("".join(self._label_text).split())] = self._label_for
            self._label_for = None

    def handle_data(self, data):
        if self._label_for is not None:
            self._label_text.append(data)

    def name_of(self, label: str) -> str:
        for text, for_id in self.labels.items():
            if text.startswith(label):
                return self.ids[for_id]
        raise AssertionError(f"no field labelled {label!r} in the form to {self.action}: {self.labels}")


async def add_form(page: WebPage) -> dict[str, str]:
    """The fields of /mine's add form for a given-away "Saw" (names found by their labels)."""
    mine = await page.get("/mine")
    assert mine.status_code == 200, f"GET /mine: {mine.status_code}"
    fields = FormFields("/mine/add")
    fields.feed(mine.text)
    data = dict(fields.defaults)
    data[fields.name_of("Title")] = "Saw"
    data[fields.name_of("Kind")] = "give"
    data.pop("csrf", None)
    return data


async def test_a_wrong_origin_or_no_csrf_token_is_403_and_changes_nothing(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(20):
            data = await add_form(page)
            before = page.node.store.count()
            refused = [
                await page.post("/mine/add", data, headers={"origin": "http://evil.example"}),
                await page.post("/mine/add", data, headers={"origin": "http://evil.example:8790"}),
                await page.post("/mine/add", data, headers={"origin": "https://127.0.0.1:8790"}),
                await page.post("/mine/add", data, headers={"origin": "http://127.0.0.1:8791"}),
                await page.post("/mine/add", data, headers={"origin": "null"}),
                await page.client.post("/mine/add", data=data, headers={"origin": BASE}),  # no token
                await page.client.post("/mine/add", data={**data, "csrf": ""}, headers={"origin": BASE}),
                await page.client.post(
                    "/mine/add", data={**data, "csrf": "0" * 64}, headers={"origin": BASE}
                ),
                await page.client.post(  # a wrong token in the htmx header
                    "/mine/add", data=data, headers={"origin": BASE, "x-csrf-token": "0" * 64}
                ),
            ]
            assert [r.status_code for r in refused] == [403] * len(refused)
            assert all('role="alert"' in r.text for r in refused)
            assert page.node.store.count() == before
            assert await still_logged_in(page)
            # The same form with this page's Origin and the token is published (the refusals were the guard).
            ok = await page.post("/mine/add", data)
            assert ok.status_code == 303, ok.text
            assert page.node.store.count() == before + 1
            # Without an Origin header (some browsers send none on same-origin POSTs) the token is enough.
            also = await page.client.post("/mine/add", data={**data, "csrf": page.csrf})
            assert also.status_code == 303 and page.node.store.count() == before + 2
            # The token may come in the header htmx sends instead.
            header = await page.client.post(
                "/mine/add", data=data, headers={"origin": BASE, "x-csrf-token": page.csrf}
            )
            assert header.status_code == 303 and page.node.store.count() == before + 3


async def test_a_refused_logout_leaves_the_session(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            wrong_origin = await page.post("/logout", headers={"origin": "http://evil.example"})
            no_token = await page.client.post("/logout", headers={"origin": BASE})
            assert (wrong_origin.status_code, no_token.status_code) == (403, 403)
            assert await still_logged_in(page)


# --- in process: Host and headers ------------------------------------------------------------


async def test_a_host_that_is_not_loopback_is_refused_unless_configured(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            for host in ("evil.example:8790", "192.168.1.5:8790", "127.0.0.1:8791", "evil.example"):
                for url in ("/offers", "/login", "/static/style.css"):
                    got = await page.get(url, headers={"host": host})
                    assert got.status_code == 403, (host, url, got.status_code)
                    assert "content-security-policy" in got.headers
            for host in ("127.0.0.1:8790", "localhost:8790", "[::1]:8790"):
                assert (await page.get("/offers", headers={"host": host})).status_code == 200, host
            page.ctx.host = "192.168.1.5"  # the owner set web = "192.168.1.5:8790"
            assert (await page.get("/offers", headers={"host": "192.168.1.5:8790"})).status_code == 200
            assert (await page.get("/offers", headers={"host": "192.168.1.6:8790"})).status_code == 403
            assert (await page.get("/offers", headers={"host": "evil.example:8790"})).status_code == 403
            # ... and then a form from that address is this page's own.
            phone = "http://192.168.1.5:8790"
            assert (await page.post("/logout", headers={"origin": "http://evil.example"})).status_code == 403
            assert (await page.post("/logout", headers={"origin": phone})).status_code == 303
            page.ctx.host = "0.0.0.0"  # web = "0.0.0.0:8790": IP literals, still no names
            assert (await page.get("/login", headers={"host": "10.0.0.9:8790"})).status_code == 200
            assert (await page.get("/login", headers={"host": "evil.example:8790"})).status_code == 403


async def test_security_headers_on_every_answer(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            answers = [
                await page.get("/offers"),
                await page.get("/static/style.css"),
                await page.get("/nowhere"),
                await page.post("/logout", headers={"origin": "http://evil.example"}),
            ]
            no_session(page)
            answers += [await page.get("/login"), await page.get("/offers")]
        for got in answers:
            csp = got.headers.get("content-security-policy", "")
            assert "default-src 'none'" in csp and "script-src 'self'" in csp, (got.url, csp)
            assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert got.headers["x-frame-options"] == "DENY"
            assert got.headers["x-content-type-options"] == "nosniff"
            assert got.headers["cache-control"] == "no-store"


async def test_the_pages_load_nothing_from_elsewhere(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            html = (await page.get("/offers")).text
        sources = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert sources and all(s.startswith(("/", "#", "?")) for s in sources), sources
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # no inline script (the CSP would block it)
        assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers either


# --- real daemons ---------------------------------------------------------------------------


def http(d: Daemon) -> httpx.Client:
    return httpx.Client(base_url=d.web_url, timeout=10, follow_redirects=False)


def listening(d: Daemon) -> list[tuple[str, int]]:
    import psutil

    assert d.proc is not None
    conns = psutil.Process(d.proc.pid).net_connections(kind="inet")
    return sorted((c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN)


def udp(d: Daemon) -> list:
    import psutil

    assert d.proc is not None
    return psutil.Process(d.proc.pid).net_connections(kind="udp")


def test_a_real_daemon_guards_its_page(daemons):
    a = daemons("alice")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", a.web_url), a.web_url
    port = int(a.web_url.rsplit(":", 1)[1])
    with http(a) as c:
        assert c.get("/offers").status_code == 303
        assert c.get("/offers").headers["location"] == "/login"
        htmx = c.get("/offers", headers={"hx-request": "true"})
        assert htmx.status_code == 401 and htmx.headers["hx-redirect"] == "/login"
        for host in ("evil.example", "192.168.1.5", "localhost.evil.example"):
            assert c.get("/login", headers={"host": f"{host}:{port}"}).status_code == 403, host
        assert c.get("/login", headers={"host": f"localhost:{port}"}).status_code == 200

        link = a.json("web", "--no-open")
        assert isinstance(link, dict) and link["page"] == a.web_url
        url = link["url"]
        assert url.startswith(f"{a.web_url}/login?token=")
        first = c.get(url)
        assert first.status_code == 303 and first.headers["location"] == "/offers"
        cookie = first.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        page = c.get("/offers")
        assert page.status_code == 200 and "content-security-policy" in page.headers
        csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text)
        assert csrf is not None
        # The same link a second time: refused, even to a browser that is logged in.
        with http(a) as other:
            assert other.get(url).status_code == 403
        assert c.get(url).status_code == 403
        # A wrong Origin, a missing token: 403, and the session goes on.
        token = csrf.group(1)
        evil = c.post("/logout", data={"csrf": token}, headers={"origin": "http://evil.example"})
        bare = c.post("/logout", data={}, headers={"origin": a.web_url})
        assert (evil.status_code, bare.status_code) == (403, 403)
        assert c.get("/offers").status_code == 200
        out = c.post("/logout", data={"csrf": token}, headers={"origin": a.web_url})
        assert out.status_code == 303 and c.get("/offers").status_code == 303
    # The CLI's own text: the link alone on its line, and how long it works.
    said = a.cli("web", "--no-open").stdout
    assert re.match(rf"{re.escape(a.web_url)}/login\?token=[0-9a-f]+\n", said) and "once" in said


def write_config(home, **node: str) -> None:
    """A config.toml like the default one, but on 127.0.0.1 only and without mDNS or UPnP."""
    home.mkdir(mode=0o700, parents=True)
    lines = [
        "[node]",
        'listen = ["/ip4/127.0.0.1/tcp/0"]',
        "mdns = false",
        "upnp = false",
        *(f"{k} = {v}" for k, v in node.items()),
    ]
    (home / "config.toml").write_text("\n".join(lines) + "\n")


def test_nothing_binds_beyond_what_the_config_names(tmp_path):
    home = tmp_path / "alice"
    write_config(home, web='"127.0.0.1:0"')
    with stopped_at_exit() as started:
        a = Daemon(home, listen=None, web=None)  # everything from config.toml
        started.append(a.start())
        assert a.web_url.startswith("http://127.0.0.1:"), a.output
        web_port = int(a.web_url.rsplit(":", 1)[1])
        net_ports = sorted(net["port"] for net in a.json("status")["networks"])
        expected = sorted([("127.0.0.1", p) for p in net_ports] + [("127.0.0.1", web_port)])
        assert listening(a) == expected
        assert udp(a) == []
        with http(a) as c:
            assert c.get("/login").status_code == 200


def test_web_off_binds_no_web_port_and_meshnode_web_says_how_to_turn_it_on(tmp_path):
    home = tmp_path / "alice"
    write_config(home, web='"off"')
    with stopped_at_exit() as started:
        a = Daemon(home, listen=None, web=None)
        started.append(a.start())
        b = Daemon(tmp_path / "bob", web="off")  # the command line's --web off
        started.append(b.start())
        for d in (a, b):
            assert d.web_url == "" and " web=" not in "".join(d.output)
            net_ports = sorted(net["port"] for net in d.json("status")["networks"])
            assert listening(d) == sorted(("127.0.0.1", p) for p in net_ports)
            said = d.cli("web", "--no-open", check=False)
            assert said.returncode != 0 and said.stdout == ""
            assert 'web = "127.0.0.1:8790"' in said.stderr and "config.toml" in said.stderr, said.stderr


def test_meshnode_web_opens_a_browser_only_where_there_is_a_desktop(monkeypatch):
    """Without a display, Python's webbrowser would start a text browser in the terminal: only print."""
    from meshnode.cli import main

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert main._has_desktop() is False
    monkeypatch.setenv("DISPLAY", ":0")
    assert main._has_desktop() is True
