"""The page's words: every key the page asks for exists, French matches English, a request gets its language.

The audit reads the templates with Jinja2's own parser and the page modules
with :mod:`ast` (exact, unlike a regex: a call split over lines, single or
double quotes, ``~`` or ``+`` are all seen). Each ``t("area.key", ...)`` /
``ctx.text("area.key", ...)`` must name an English key, and pass every
``{field}`` that text has (a missing one is a ``KeyError``, so a 500, at run
time). A key built at run time (``t("offers.kind_" ~ k)``, an f-string, the
navigation's ``t(key)``) must be listed in :data:`EXPANSIONS` with the
values it can take, each checked the same way; a new kind of dynamic key
fails here until it is listed. French (``text/fr``) must have exactly the
English keys, each with the same fields.
"""

from __future__ import annotations

import ast
import re
import string
import tomllib
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import pytest
import trio
from jinja2 import nodes

from meshnode import barter, pools, records, ringtrade, trust
from meshnode import records as r
from meshnode.identity import peer_id_of
from meshnode.web import app
from meshnode.web.pages import node as node_page
from meshnode.web.pages import trades as trades_page
from tests.conftest import NOW, Author
from tests.webutil import StatusNode, web_page

ME, BOB = Author(61), Author(62)
DAY = 86_400_000
WEB = Path(str(resources.files("meshnode.web")))
TEXT = WEB / "text"
FRENCH = "fr-CH, fr;q=0.9, en;q=0.8"

#: The states an offer or want can be in (ApiService._where_and_state), as the templates spell their keys.
ITEM_STATES = ("available", "reserved", "lent out", "given", "withdrawn")
#: A trade's moves as the trade page names them: the proposal, then every reply action.
TRADE_MOVES = ("propose", *records.REPLY_ACTIONS)


def _keys(words: tuple[str, ...] | list[str]) -> list[str]:
    return [w.replace(" ", "_") for w in words]


#: Every key built at run time, by its fixed part ("*" where a value goes), and the values it can take.
EXPANSIONS: dict[str, list[str]] = {
    "mine.kind_*": list(records.ITEM_KINDS),
    "offers.kind_*": list(records.ITEM_KINDS),
    "item.kind_*": list(records.ITEM_KINDS),
    "mine.state_*": _keys(ITEM_STATES),
    "offers.state_*": _keys(ITEM_STATES),
    "item.state_*": _keys(ITEM_STATES),
    "item.type_*": ["offer", "want"],
    "money.extended_*": [*trust.EDGE_KINDS, "other"],
    "money.paid_*": ["in", "out"],
    "money.status_*": ["waiting", "refused"],  # "counted" shows no status
    "pools.do_*": list(records.POOL_ACTIONS),
    "pools.state_*": list(pools.STATES),
    "rings.do_*": list(records.RING_ACTIONS),
    "rings.state_*": list(ringtrade.STATES),
    "node.reach_*": list(node_page.REACH),
    "trades.do_*": list(trades_page.ACTIONS),
    "trades.state_*": _keys(barter.STATES),
    "trades.*_*": [f"{who}_{move}" for who in ("you", "they") for move in TRADE_MOVES],
    "key": [k for _, k in app.NAV],  # base.html's navigation
}


def load(lang: str) -> dict[str, str]:
    """Every ``area.key`` of one language, read from its TOML files."""
    out = {}
    for path in sorted((TEXT / lang).glob("*.toml")):
        for key, value in tomllib.loads(path.read_text(encoding="utf-8")).items():
            out[f"{path.stem}.{key}"] = value
    return out


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


class Use:
    """One call for a text: where, its key (or pattern of one), and the fields it passes."""

    def __init__(self, where: str, key: str, passed: set[str] | None, dynamic: bool) -> None:
        self.where, self.key, self.passed, self.dynamic = where, key, passed, dynamic

    def __repr__(self) -> str:
        return f"{self.where}: {self.key}"


def _template_uses() -> list[Use]:
    env = jinja2.Environment()
    uses = []
    for path in sorted((WEB / "templates").glob("*.html")):
        tree = env.parse(path.read_text(encoding="utf-8"))
        for call in tree.find_all(nodes.Call):
            if not (isinstance(call.node, nodes.Name) and call.node.name == "t"):
                continue
            where = f"templates/{path.name}:{call.lineno}"
            passed = None if call.dyn_kwargs is not None else {kw.key for kw in call.kwargs}
            first = call.args[0]
            if isinstance(first, nodes.Const):
                uses.append(Use(where, first.value, passed, False))
            elif isinstance(first, nodes.Concat) and isinstance(first.nodes[0], nodes.Const):
                uses.append(Use(where, first.nodes[0].value + "*", passed, True))
            elif isinstance(first, nodes.Name):
                uses.append(Use(where, first.name, passed, True))
            else:
                uses.append(Use(where, f"<unreadable: {first!r}>", passed, True))
    return uses


def _is_text_call(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Name) and func.id == "t") or (
        isinstance(func, ast.Attribute) and func.attr == "text"
    )


def _python_uses() -> list[Use]:
    uses = []
    for path in [WEB / "app.py", *sorted((WEB / "pages").glob("*.py"))]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and _is_text_call(call) and call.args):
                continue
            where = f"{path.relative_to(WEB)}:{call.lineno}"
            kws = call.keywords
            passed = None if any(k.arg is None for k in kws) else {k.arg for k in kws if k.arg}
            first = call.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                uses.append(Use(where, first.value, passed, False))
            elif (
                isinstance(first, ast.BinOp)
                and isinstance(first.op, ast.Add)
                and isinstance(first.left, ast.Constant)
            ):
                uses.append(Use(where, f"{first.left.value}*", passed, True))
            elif isinstance(first, ast.JoinedStr):
                pattern = "".join(v.value if isinstance(v, ast.Constant) else "*" for v in first.values)
                uses.append(Use(where, str(pattern), passed, True))
            else:
                uses.append(Use(where, f"<unreadable: {ast.unparse(first)}>", passed, True))
    return uses


def _expand(use: Use) -> list[str]:
    """The keys a use can ask for (a dynamic one through EXPANSIONS)."""
    if not use.dynamic:
        return [use.key]
    values = EXPANSIONS[use.key]
    if use.key == "key":
        return values
    area, _, rest = use.key.partition(".")
    fixed = rest.split("*")[0] if rest.count("*") == 1 else ""
    return [f"{area}.{fixed}{v}" for v in values]


def test_the_audit_reads_every_call():
    """The parsers find the calls a plain search finds (so no call escapes the audit unseen)."""
    uses = _template_uses() + _python_uses()
    by_file: dict[str, int] = {}
    for use in uses:
        name = use.where.rsplit(":", 1)[0]
        by_file[name] = by_file.get(name, 0) + 1
    call = re.compile(r"(?<![\w])(?:t|text)\(\s*(?:[\"'f]|key\b|[a-z_]+\s*\+)")
    for path in [*sorted((WEB / "templates").glob("*.html")), WEB / "app.py", *(WEB / "pages").glob("*.py")]:
        found = len(call.findall(path.read_text(encoding="utf-8")))
        assert by_file.get(str(path.relative_to(WEB)), 0) == found, path
    assert len(uses) > 300


def test_every_key_the_page_asks_for_is_in_english_with_its_fields():
    english = load("en")
    uses = _template_uses() + _python_uses()
    unknown_patterns = sorted({u.key for u in uses if u.dynamic and u.key not in EXPANSIONS})
    assert not unknown_patterns, (
        f"keys built at run time with no known values (list them in EXPANSIONS): {unknown_patterns}"
    )
    missing, unfilled = [], []
    for use in uses:
        for key in _expand(use):
            if key not in english:
                missing.append(f"{use.where}: {key}")
            elif use.passed is not None and not fields(english[key]) <= use.passed:
                unfilled.append(f"{use.where}: {key} needs {sorted(fields(english[key]) - use.passed)}")
    assert not missing, "keys missing in meshnode/web/text/en:\n" + "\n".join(missing)
    assert not unfilled, "texts asked for without all their fields:\n" + "\n".join(unfilled)


def test_every_dynamic_key_pattern_is_still_used():
    """A pattern in EXPANSIONS that no template or page uses any more is stale."""
    used = {u.key for u in _template_uses() + _python_uses() if u.dynamic}
    assert set(EXPANSIONS) <= used, sorted(set(EXPANSIONS) - used)


def test_french_has_every_english_key_with_the_same_fields():
    english, french = load("en"), load("fr")
    assert sorted(p.name for p in (TEXT / "fr").glob("*.toml")) == sorted(
        p.name for p in (TEXT / "en").glob("*.toml")
    )
    assert not set(french) - set(english), sorted(set(french) - set(english))
    assert not set(english) - set(french), sorted(set(english) - set(french))
    differ = [k for k in english if fields(english[k]) != fields(french[k])]
    assert not differ, differ
    assert all(french[k].strip() for k in french)
    assert len(french) == len(english) > 400


def test_french_keeps_the_command_names():
    english, french = load("en"), load("fr")
    for key, text in english.items():
        commands = re.findall(r"“(meshnode[^”]*)”", text) + ([text] if text.startswith("meshnode") else [])
        for command in commands:
            assert command in french[key], (key, command)


class Forms(HTMLParser):
    """A page's forms: method, action and each control's tag, name, type, value and formaction."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[Any, ...]] = []
        self.lang: str | None = None
        self.h1: list[str] = []
        self._in_h1 = False
        self._form: list[Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "h1":
            self._in_h1 = True
            self.h1.append("")
        elif tag == "form":
            self._form = [a.get("method"), a.get("action")]
        elif tag in ("input", "button", "select", "textarea", "option") and self._form is not None:
            self._form.append((tag, a.get("name"), a.get("type"), a.get("value"), a.get("formaction")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "h1":
            self._in_h1 = False
        elif tag == "form" and self._form is not None:
            self.forms.append(tuple(self._form))
            self._form = None

    def handle_data(self, data: str) -> None:
        if self._in_h1:
            self.h1[-1] += data


def read(html: str) -> Forms:
    parsed = Forms()
    parsed.feed(html)
    return parsed


async def test_a_request_is_answered_in_its_language(tmp_path):
    english, french = load("en"), load("fr")
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            fr = await page.get("/offers", headers={"accept-language": FRENCH})
            de = await page.get("/offers", headers={"accept-language": "de"})
            plain = await page.get("/offers")
        assert fr.status_code == de.status_code == plain.status_code == 200
        got = read(fr.text)
        assert got.lang == "fr" and got.h1 == [french["offers.title"]] == ["Offres"]
        assert french["common.nav_mine"] in fr.text and english["common.nav_mine"] not in fr.text
        for response in (de, plain):
            got = read(response.text)
            assert got.lang == "en" and got.h1 == [english["offers.title"]]


async def test_a_refusal_is_in_the_requests_language(tmp_path):
    async with web_page(tmp_path, ME) as page:
        with trio.fail_after(10):
            fr = await page.get("/offers", params={"km": "loin"}, headers={"accept-language": FRENCH})
        said = load("fr")["offers.bad_km"].format(value="loin")
        assert fr.status_code == 400 and said in fr.text and said.startswith("“loin” n")


async def test_every_page_has_the_same_forms_in_english_and_french(tmp_path):
    async with web_page(tmp_path, ME, node_class=StatusNode) as page:
        ladder = BOB.sign(r.OfferBody(title="Ladder", kind="lend"), ts=NOW)
        drill = ME.sign(r.OfferBody(title="Drill", kind="give"), ts=NOW)
        page.node.stored(
            ladder,
            drill,
            BOB.sign(r.ProfileBody(nickname="Bob", bio="at number 7")),
            ME.sign(r.AttestBody(subject=BOB.public, level=800, note="good neighbour")),
        )
        page.node.now += 1000
        body = r.ProposalBody(to=ME.public, take=(drill.id,), note="hello", expires=page.node.now + 7 * DAY)
        proposal = BOB.sign(body, ts=page.node.now)
        page.node.stored(proposal)
        urls = [
            "/offers",
            f"/offers/{ladder.id.hex()}",
            "/mine",
            f"/mine/{drill.id.hex()}/edit",
            "/inbox",
            "/trades",
            f"/trades/{proposal.id.hex()}",
            "/money",
            "/rings",
            "/pools",
            "/neighbours",
            f"/neighbours/{peer_id_of(BOB.public)}",
            "/swarms",
            "/node",
        ]
        compared = 0
        for url in urls:
            with trio.fail_after(10):
                en = await page.get(url, headers={"accept-language": "en"})
                fr = await page.get(url, headers={"accept-language": FRENCH})
            assert en.status_code == fr.status_code == 200, (url, en.status_code, fr.status_code)
            got_en, got_fr = read(en.text), read(fr.text)
            assert (got_en.lang, got_fr.lang) == ("en", "fr"), url
            assert len(got_en.h1) == len(got_fr.h1) == 1 and en.text != fr.text, url
            assert got_en.forms == got_fr.forms, url
            compared += len(got_fr.forms)
        assert compared >= 20  # the tour really met forms (trade moves, vouch, publish, join, search...)


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_every_text_is_valid_toml_of_plain_strings(lang):
    for path in (TEXT / lang).glob("*.toml"):
        for key, value in tomllib.loads(path.read_text(encoding="utf-8")).items():
            assert isinstance(value, str) and re.fullmatch(r"[a-z][a-z0-9_]*", key), (path.name, key)
