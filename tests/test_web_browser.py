"""Two neighbours trade through their web pages in a real browser (headless Chromium, Playwright).

Two real daemons in one swarm, each person in a browser context of their own
(Alice on a desktop window, Bob on a 360 px wide phone): Alice publishes an
offer on /mine, Bob finds it on his /offers, opens it and proposes, Alice
follows the notice in her inbox to the trade and accepts, both complete, and
both trade pages say it is completed. Then each visits every page of the
navigation (and the pages behind them). Every page visited is screenshotted
to test-artifacts/screenshots/ and checked with axe-core (no serious or
critical violation), has one h1, and on the phone no sideways scrolling.

The pages are driven by role and accessible name, as /work/notes/web-contract.md
lists them (button "Publish", label "Title", link "Open the trade"...).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.browserutil import axe_check, browser_fixture, login, new_page, shot  # noqa: F401
from tests.daemonutil import Daemon, wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

TITLE = "Cordless drill"
COMPLETED = re.compile(r"completed", re.IGNORECASE)


def offer_titles(d: Daemon) -> dict[str, str]:
    return {o["title"]: o["id"] for o in d.json("offer", "list")}  # type: ignore[union-attr]


def trade_state(d: Daemon, pid: str) -> str | None:
    found = [p for p in d.json("proposals") if p["id"] == pid]  # type: ignore[union-attr]
    return found[0]["state"] if found else None


@dataclass
class Person:
    """One neighbour at their browser: the page, their daemon, what they saw."""

    name: str
    daemon: Daemon
    page: Any
    phone: bool = False
    base: str = ""
    seen: list[str] = field(default_factory=list)  # paths visited
    problems: list[str] = field(default_factory=list)

    def go(self, path: str) -> None:
        response = self.page.goto(self.base + path)
        assert response is not None and response.status < 400, f"{self.name}: GET {path} -> {response.status}"

    def check(self, what: str, *, strict: bool = True) -> None:
        """Screenshot, one h1, axe-core, and on a phone no sideways scroll; ``strict``: fail now."""
        Shots.n += 1
        shot(self.page, f"{Shots.n:02d}-{self.name.lower()}-{what}")
        self.seen.append(self.page.url.removeprefix(self.base))
        found: list[str] = []
        h1 = self.page.locator("h1").count()
        if h1 != 1:
            found.append(f"{h1} h1 elements (one expected)")
        try:
            axe_check(self.page, f"{self.name.lower()}-{what}")
        except AssertionError as exc:
            found.append(str(exc))
        if self.phone:
            width = self.page.evaluate("() => document.documentElement.scrollWidth")
            if width > self.page.viewport_size["width"] + 1:
                found.append(f"{width} px wide on a 360 px phone (scrolls sideways)")
        if found:
            said = f"{self.name} on {self.page.url.removeprefix(self.base)} ({what}): " + "; ".join(found)
            assert not strict, said
            self.problems.append(said)

    def click(self, role: str, name: str) -> None:
        self.page.get_by_role(role, name=name, exact=True).first.click()


class Shots:
    n = 0


@pytest.fixture
def swarm(daemons) -> tuple[Daemon, Daemon]:
    a, b = daemons("alice"), daemons("bob")
    a.cli("swarm", "create", "Elm Street")
    code = a.cli("swarm", "invite", "Elm Street").stdout.strip()
    b.cli("swarm", "join", code)
    a.cli("profile", "set", "--nickname", "Alice", "--bio", "tools and jam")
    b.cli("profile", "set", "--nickname", "Bob", "--bio", "ladders")
    return a, b


def test_alice_offers_bob_proposes_alice_accepts_both_complete(swarm, browser):
    from playwright.sync_api import expect

    a, b = swarm
    Shots.n = 0
    alice = Person("Alice", a, new_page(browser))
    bob = Person("Bob", b, new_page(browser, phone=True), phone=True)
    for person in (alice, bob):
        person.base = login(person.page, person.daemon)

    # Alice publishes an offer on her page.
    alice.check("offers-empty")
    alice.go("/mine")
    alice.check("mine-empty")
    alice.page.get_by_label("Title", exact=True).fill(TITLE)
    alice.page.get_by_label("Kind", exact=True).select_option("give")
    alice.page.get_by_label("Description", exact=True).fill("18 V, two batteries. Mind the chuck.")
    alice.page.get_by_label("Tags", exact=True).fill("tools, diy")
    alice.click("button", "Publish")
    expect(alice.page).to_have_url(re.compile(r"/mine\?done=1$"))
    expect(alice.page.get_by_role("status")).to_contain_text("Done.")
    expect(alice.page.locator("main")).to_contain_text(TITLE)
    alice.check("mine-published")
    alice.go("/inbox")  # and keeps her inbox open: the notice should come in without a reload
    notice = alice.page.get_by_role("link", name="Open the trade", exact=True)
    expect(notice).to_have_count(0)

    # Bob sees it on his offers page, opens it and proposes.
    wait_for(lambda: TITLE in offer_titles(b), timeout=20, what="Bob's node to have Alice's offer")
    oid = offer_titles(b)[TITLE]
    bob.go("/offers")
    link = bob.page.get_by_role("link", name=TITLE, exact=True)
    expect(link).to_be_visible()
    expect(bob.page.locator("main")).to_contain_text("Alice")
    bob.check("offers")
    link.click()
    expect(bob.page).to_have_url(re.compile(rf"/offers/{oid}$"))
    expect(bob.page.get_by_role("heading", level=1)).to_contain_text(TITLE)
    expect(bob.page.locator("main")).to_contain_text("tools and jam")  # the author's profile
    bob.check("offer")
    bob.page.get_by_label("Note", exact=True).fill("for my shed, this weekend?")
    bob.page.get_by_label("Private details", exact=True).fill("I live at number 12")
    bob.click("button", "Propose")
    expect(bob.page).to_have_url(re.compile(r"/trades/[0-9a-f]+$"))
    pid = bob.page.url.rsplit("/", 1)[1]
    expect(bob.page.locator("main")).to_contain_text("for my shed, this weekend?")
    bob.check("trade-proposed")

    # Alice follows the notice in her inbox to the trade, and accepts.
    wait_for(lambda: trade_state(a, pid) == "proposed", timeout=20, what="Alice's node to have the proposal")
    try:
        expect(notice.first).to_be_visible(timeout=15_000)  # live: the page was open before the proposal
    except AssertionError:
        alice.problems.append("Alice: the open inbox did not show the new notice within 15 s (not live)")
        alice.go("/inbox")
        expect(notice.first).to_be_visible()
    alice.check("inbox")
    notice.first.click()
    expect(alice.page).to_have_url(re.compile(rf"/trades/{pid}$"))
    expect(alice.page.locator("main")).to_contain_text("I live at number 12")  # private, and hers to read
    alice.check("trade-proposed")
    alice.click("button", "Accept")
    expect(alice.page).to_have_url(re.compile(rf"/trades/{pid}(\?done=1)?$"))
    alice.check("trade-accepted")

    # Both complete.
    wait_for(lambda: trade_state(b, pid) == "accepted", timeout=20, what="Bob's node to see the accept")
    bob.go(f"/trades/{pid}")
    bob.click("button", "Complete")
    expect(bob.page).to_have_url(re.compile(rf"/trades/{pid}(\?done=1)?$"))
    bob.check("trade-completed-by-bob")
    wait_for(
        lambda: trade_state(a, pid) == "accepted" and "complete" in _moves(a, pid),
        timeout=20,
        what="Alice's node to see Bob's complete",
    )
    alice.go(f"/trades/{pid}")
    alice.click("button", "Complete")
    expect(alice.page).to_have_url(re.compile(rf"/trades/{pid}(\?done=1)?$"))
    wait_for(lambda: trade_state(b, pid) == "completed", timeout=20, what="Bob's node to see it completed")
    for person in (alice, bob):
        person.go(f"/trades/{pid}")
        expect(person.page.locator("main")).to_contain_text(COMPLETED)
        person.check("trade-completed")

    # Every page of the navigation, and the pages behind them: screenshot and axe-core each.
    for person in (alice, bob):
        tour(person, oid, other=(b if person is alice else a))
    problems = alice.problems + bob.problems
    assert not problems, "\n".join(problems)


def _moves(d: Daemon, pid: str) -> list[str]:
    return [m["action"] for m in d.json("proposal", pid[:10])["moves"]]  # type: ignore[index]


def tour(person: Person, oid: str, other: Daemon) -> None:
    """Visit each page of the navigation and the contract's pages behind them; problems are collected."""
    who = person.name.lower()
    person.go("/offers")
    nav = person.page.get_by_role("navigation")
    hrefs = [a.get_attribute("href") for a in nav.get_by_role("link").all()]
    pages = [h for h in hrefs if h and h.startswith("/")]
    for must in ("/offers", "/mine", "/inbox", "/trades", "/neighbours", "/swarms", "/node"):
        if must not in pages:
            person.problems.append(f"{person.name}: no link to {must} in the navigation ({pages})")
    behind = [
        f"/offers/{oid}",
        f"/neighbours/{other.peer_id}",
        "/swarms/Elm%20Street/invite",
    ]
    if person.name == "Alice":
        behind.append(f"/mine/{oid}/edit")
    for path in [*pages, *behind]:
        if path in person.seen and path not in ("/mine", "/inbox"):
            continue
        name = "tour-" + (path.strip("/").replace("/", "-") or "home")[:40]
        logged = len(person.daemon.output)
        response = person.page.goto(person.base + path)
        status = response.status if response is not None else 0
        if status >= 400:
            log = ""
            if status >= 500:  # the daemon's log says why (its lines arrive through a pipe: wait a little)
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and not any(
                    "Error" in line for line in person.daemon.output[logged:]
                ):
                    time.sleep(0.1)
                log = "".join(person.daemon.output[logged:][-12:])
            person.problems.append(f"{person.name}: GET {path} -> {status}\n{log}".rstrip())
            shot(person.page, f"99-{who}-{name}-error")
            continue
        person.check(name, strict=False)


def test_axe_check_fails_a_page_with_a_serious_violation(daemons, browser):
    """The accessibility check is not vacuous: axe-core runs under the page's CSP, finds a missing label."""
    a = daemons("alice")
    page = new_page(browser)
    login(page, a)
    axe_check(page)
    page.evaluate(
        """() => {
            const input = document.createElement('input');
            input.type = 'text';
            document.querySelector('main').appendChild(input);
        }"""
    )
    with pytest.raises(AssertionError, match=r"label \(critical\)"):
        axe_check(page)


def test_the_pages_work_without_javascript_and_by_keyboard(daemons, browser):
    """Without JavaScript (htmx only enhances): publish, search, edit, withdraw; then by keyboard."""
    from playwright.sync_api import expect

    a = daemons("alice")
    a.cli("swarm", "create", "Elm Street")
    context = browser.new_context(java_script_enabled=False, viewport={"width": 360, "height": 740})
    context.set_default_timeout(15_000)
    page = context.new_page()
    base = login(page, a)
    for title, kind in (("Long ladder", "lend"), ("Plum jam", "give")):
        page.goto(base + "/mine")
        page.get_by_label("Title", exact=True).fill(title)
        page.get_by_label("Kind", exact=True).select_option(kind)
        page.get_by_role("button", name="Publish", exact=True).click()
        expect(page).to_have_url(re.compile(r"/mine\?done=1$"))
        expect(page.get_by_role("status")).to_contain_text("Done.")
    page.goto(base + "/offers")
    page.get_by_label("Words", exact=True).fill("ladder")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page).to_have_url(re.compile(r"/offers\?.*q=ladder"))
    results = page.locator("main")
    expect(results.get_by_role("link", name="Long ladder", exact=True)).to_be_visible()
    expect(results.get_by_role("link", name="Plum jam", exact=True)).to_have_count(0)
    shot(page, "nojs-offers-search")
    page.goto(base + "/mine")
    page.get_by_role("link", name="Edit").first.click()
    expect(page).to_have_url(re.compile(r"/mine/[0-9a-f]+/edit$"))
    shot(page, "nojs-mine-edit")
    page.get_by_label("Title", exact=True).fill("Longer ladder")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("main")).to_contain_text("Longer ladder")
    page.goto(base + "/mine")
    before = page.get_by_role("button", name="Withdraw").count()
    page.get_by_role("button", name="Withdraw").first.click()
    expect(page.get_by_role("button", name="Withdraw")).to_have_count(before - 1)
    context.close()

    # By keyboard, with JavaScript: the first Tab reaches the skip link, which moves focus to the content.
    page = new_page(browser)
    login(page, a)
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "() => [document.activeElement.tagName, document.activeElement.getAttribute('href')]"
    )
    assert focused == ["A", "#main"], focused
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
