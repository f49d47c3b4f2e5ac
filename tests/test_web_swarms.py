"""The swarms page, in process (tests/webutil.py): create, join (a pasted code), an invite and its QR code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import segno
import trio

from meshnode.errors import BadValue, NetworkError
from meshnode.identity import peer_id_of
from meshnode.swarm import Invite, Swarm, decode_invite, encode_invite
from tests.conftest import Author
from tests.webutil import BASE, ELM, FakeNode, web_page

ME, BOB = Author(51), Author(52)
STATIC = Path(__file__).parent.parent / "meshnode" / "web" / "static"
SVG_NS = "{http://www.w3.org/2000/svg}"


class SwarmNode(FakeNode):
    """A fake node that creates, joins and invites (no network: an invite reaches the inviter or not)."""

    reachable = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.joined: list[Any] = [ELM]

    def swarms(self) -> list:
        return list(self.joined)

    def swarm_ids(self) -> set[bytes]:
        return {s.id for s in self.joined}

    def swarm(self, name: Any) -> Any:
        for s in self.joined:
            if name in (s.name, s.id):
                return s
        return super().swarm(name)

    async def join_swarm(self, swarm: Swarm) -> None:
        for existing in self.joined:
            if existing.id == swarm.id:
                return
            if existing.name == swarm.name:
                raise BadValue(f"this node already has a swarm named {swarm.name!r}")
        self.joined.append(swarm)

    async def invite(self, swarm: Any) -> str:
        real = swarm if isinstance(swarm, Swarm) else Swarm(name="Elm Street", id=swarm.id)
        addr = f"/ip4/192.0.2.7/tcp/4001/p2p/{peer_id_of(self.me.public)}"
        return encode_invite(Invite(swarm=real, addrs=(addr,)))

    async def join_invite(self, code: str) -> Swarm:
        invite = decode_invite(code)
        await self.join_swarm(invite.swarm)
        if not self.reachable:
            raise NetworkError("could not reach the inviter yet")
        return invite.swarm


class UnreachableNode(SwarmNode):
    reachable = False


def bob_code(name: str = "Oak Lane") -> str:
    addr = f"/ip4/192.0.2.8/tcp/4001/p2p/{peer_id_of(BOB.public)}"
    return encode_invite(Invite(swarm=Swarm.create(name, private=True), addrs=(addr,)))


async def test_the_swarms_page_lists_mine_with_the_forms_and_the_scanner(tmp_path):
    async with web_page(tmp_path, ME, node_class=SwarmNode) as page:
        with trio.fail_after(10):
            got = await page.get("/swarms")
        assert got.status_code == 200
        text = got.text
        assert text.count("<h1>") == 1 and "Elm Street" in text and "Private: only people" in text
        assert 'href="/swarms/Elm%20Street/invite"' in text
        assert 'action="/swarms/create"' in text and 'action="/swarms/join"' in text
        assert '<label for="code">Invite code</label>' in text and '<label for="name">Name</label>' in text
        assert '<input id="scan-file" type="file" accept="image/*" capture="environment"' in text
        assert '<label for="scan-file">Scan a QR code</label>' in text
        assert '<script src="/static/scan.js" defer></script>' in text
        assert "<script>" not in text  # no inline script (the CSP forbids them)
        for name in ("scan.js", "jsQR.js"):
            served = await page.get(f"/static/{name}")
            assert served.status_code == 200 and "javascript" in served.headers["content-type"]


async def test_create_a_swarm(tmp_path):
    async with web_page(tmp_path, ME, node_class=SwarmNode) as page:
        with trio.fail_after(10):
            made = await page.post("/swarms/create", {"name": "Birch Road", "private": "1"})
            shown = await page.get(made.headers["location"])
            opened = await page.post("/swarms/create", {"name": "Open Square"})
        assert made.status_code == 303 and made.headers["location"] == "/swarms?done=1"
        assert 'role="status">Done.' in shown.text and "Birch Road" in shown.text
        assert opened.status_code == 303
        by_name = {s.name: s for s in page.node.swarms()}
        assert by_name["Birch Road"].private and not by_name["Open Square"].private


async def test_a_bad_swarm_name_is_one_clear_line_and_changes_nothing(tmp_path):
    async with web_page(tmp_path, ME, node_class=SwarmNode) as page:
        with trio.fail_after(10):
            empty = await page.post("/swarms/create", {"name": "", "private": "1"})
            odd = await page.post("/swarms/create", {"name": "<b>bad/name</b>"})
            same = await page.post("/swarms/create", {"name": "Elm Street"})
        assert empty.status_code == 400 and 'role="alert"' in empty.text
        assert (
            odd.status_code == 400 and "&lt;b&gt;bad/name&lt;/b&gt;" in odd.text and "<b>bad" not in odd.text
        )
        assert same.status_code == 400 and "already has a swarm named" in same.text
        assert [s.name for s in page.node.swarms()] == ["Elm Street"]


async def test_join_with_an_invite_code(tmp_path):
    async with web_page(tmp_path, ME, node_class=SwarmNode) as page:
        code = bob_code()
        with trio.fail_after(10):
            joined = await page.post("/swarms/join", {"code": code[:20] + "\n" + code[20:]})
            shown = await page.get(joined.headers["location"])
        assert joined.status_code == 303 and joined.headers["location"] == "/swarms?done=1"
        assert "Oak Lane" in shown.text and "cannot be reached yet" not in shown.text
        assert [s.name for s in page.node.swarms()] == ["Elm Street", "Oak Lane"]


async def test_join_when_the_inviter_is_not_reachable_says_so(tmp_path):
    async with web_page(tmp_path, ME, node_class=UnreachableNode) as page:
        with trio.fail_after(10):
            joined = await page.post("/swarms/join", {"code": bob_code()})
            shown = await page.get(joined.headers["location"])
        assert joined.status_code == 303
        assert "cannot be reached yet" in shown.text and "Oak Lane" in shown.text


async def test_a_bad_invite_code_is_one_clear_line_and_changes_nothing(tmp_path):
    async with web_page(tmp_path, ME, node_class=SwarmNode) as page:
        code = bob_code()
        with trio.fail_after(10):
            wrong = await page.post("/swarms/join", {"code": "hello"})
            cut = await page.post("/swarms/join", {"code": code[:-3]})
        assert wrong.status_code == 400 and "an invite code starts with" in wrong.text
        assert cut.status_code == 400 and 'role="alert"' in cut.text
        assert [s.name for s in page.node.swarms()] == ["Elm Street"]


async def test_forms_without_the_csrf_token_are_refused(tmp_path):
    async with web_page(tmp_path, ME, node_class=SwarmNode) as page:
        with trio.fail_after(10):
            made = await page.client.post("/swarms/create", data={"name": "Birch Road"})
            joined = await page.client.post("/swarms/join", data={"code": bob_code()})
            forged = await page.post("/swarms/create", {"name": "Birch Road", "csrf": "0" * 64})
        assert made.status_code == joined.status_code == forged.status_code == 403
        assert [s.name for s in page.node.swarms()] == ["Elm Street"]


async def test_an_unknown_swarm_has_no_invite(tmp_path):
    async with web_page(tmp_path, ME, node_class=SwarmNode) as page:
        with trio.fail_after(10):
            got = await page.get("/swarms/Nowhere/invite")
        assert got.status_code == 404 and 'role="alert"' in got.text


async def test_the_invite_page_shows_the_code_and_a_qr_code_of_exactly_it(tmp_path):
    async with web_page(tmp_path, ME, node_class=SwarmNode) as page:
        with trio.fail_after(10):
            got = await page.get("/swarms/Elm%20Street/invite")
        assert got.status_code == 200 and got.text.count("<h1>") == 1
        code = await page.node.invite(ELM)
        assert f'<pre id="invite-code">{code}</pre>' in got.text
        found = re.search(r"<svg .*?</svg>", got.text, re.S)
        assert found is not None
        svg = ET.fromstring(found.group(0))  # well-formed XML
        assert svg.tag == f"{SVG_NS}svg" and svg.get("role") == "img"
        assert (
            svg.get("aria-label")
            == "QR code of the invite code to Elm Street; the same code is written below"
        )
        matrix = svg_matrix(svg)
        expected = [list(row) for row in segno.make(code, error="m").matrix_iter(border=4)]
        assert matrix == [[bool(v) for v in row] for row in expected]
        if shutil.which("node"):  # decode it as the browser would, with the vendored jsQR
            assert decode_with_jsqr(matrix) == code


def svg_matrix(svg: ET.Element) -> list[list[bool]]:
    """The dark modules of segno's SVG: a path of 1-unit-wide strokes (M/m moves, h runs) in a viewBox."""
    _, _, width, height = (int(float(v)) for v in (svg.get("viewBox") or "").split())
    grid = [[False] * width for _ in range(height)]
    lines = [p for p in svg.iter(f"{SVG_NS}path") if p.get("stroke")]
    assert len(lines) == 1
    x = y = 0.0
    for op, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", lines[0].get("d") or ""):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:
            for col in range(int(x), int(x + float(a))):
                grid[int(y)][col] = True
            x += float(a)
    return grid


def decode_with_jsqr(matrix: list[list[bool]], scale: int = 4) -> str | None:
    """Decode a module matrix with node and static/jsQR.js (4 px per module, RGBA)."""
    pixels = []
    for row in matrix:
        line = [0 if dark else 255 for dark in row for _ in range(scale)]
        pixels += [line] * scale
    size = len(matrix) * scale
    script = (
        "const jsQR = require(process.argv[1]);"
        "const rows = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const data = new Uint8ClampedArray(rows.length * rows.length * 4);"
        "rows.flat().forEach((v, i) => { data.set([v, v, v, 255], i * 4); });"
        "const found = jsQR(data, rows.length, rows.length);"
        "process.stdout.write(JSON.stringify(found ? found.data : null));"
    )
    assert all(len(line) == size for line in pixels)
    done = subprocess.run(
        ["node", "-e", script, str(STATIC / "jsQR.js")],
        input=json.dumps(pixels),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(done.stdout)


class LeavingNode(SwarmNode):
    async def leave_swarm(self, swarm: Any) -> None:
        self.joined = [s for s in self.joined if s.id != swarm.id]


async def test_leave_a_swarm_through_its_form(tmp_path):
    async with web_page(tmp_path, ME, node_class=LeavingNode) as page:
        with trio.fail_after(10):
            shown = await page.get("/swarms")
            assert (
                'action="/swarms/Elm%20Street/leave"' in shown.text and "Leave Elm Street now" in shown.text
            )
            no_csrf = await page.client.post("/swarms/Elm%20Street/leave", headers={"origin": BASE})
            assert no_csrf.status_code == 403 and [s.name for s in page.node.swarms()] == ["Elm Street"]
            unknown = await page.post("/swarms/Nowhere/leave")
            assert unknown.status_code == 404 and 'role="alert"' in unknown.text
            left = await page.post("/swarms/Elm%20Street/leave")
            assert left.status_code == 303 and left.headers["location"] == "/swarms?done=1"
            assert page.node.swarms() == []
