"""How offers and wants get their current state from their records: pure, no database.

``meshnode.store.derive`` is checked here on records alone (signed in memory,
never stored); tests/test_store.py checks that the store applies it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode import lifetime
from meshnode.errors import ExpiredError, NotAllowed
from meshnode.records import (
    AttestBody,
    ItemBody,
    LendTerms,
    OfferBody,
    Record,
    UpdateBody,
    WantBody,
    WithdrawBody,
)
from meshnode.store import schema
from meshnode.store.derive import (
    ITEM_COLUMNS,
    ItemHead,
    ItemRow,
    LiveItem,
    derive_item,
    invalid_heads,
    live_item,
    refusal_of_unknown_target,
    target_refusal,
)
from tests.conftest import NOW, SWARM, Author

OTHER_SWARM = bytes(range(1, 33))
N = 7  # the original's records.n in these tests

ALICE = Author(1)
BOB = Author(2)


def offer(title: str = "Cordless drill", *, ts: int = NOW, **kw) -> Record:
    return ALICE.sign(OfferBody(title=title, **kw), seq=1, ts=ts)


def update(
    target: Record, title: str, *, ts: int, seq: int, author: Author = ALICE, swarm: bytes = SWARM, **kw
) -> Record:
    body = UpdateBody(target=target.id, item=ItemBody(title=title, **kw))
    return author.sign(body, ts=ts, seq=seq, swarm=swarm)


def withdraw(target: Record, *, ts: int, seq: int, author: Author = ALICE, swarm: bytes = SWARM) -> Record:
    return author.sign(WithdrawBody(target=target.id), ts=ts, seq=seq, swarm=swarm)


def derive(original: Record, *changes: Record) -> ItemRow:
    """The item row of ``original`` given ``changes`` (its updates and withdraws, in this order)."""
    by_id = {r.id: r for r in changes}
    return derive_item(original, N, [ItemHead.of(r) for r in changes], by_id.__getitem__)


def no_load(record_id: bytes) -> Record:
    raise AssertionError("the original has no valid update: nothing to load")


# --- the rows ------------------------------------------------------------------------


def test_an_item_without_changes_is_its_original():
    terms = LendTerms(max_days=7, deposit="20 EUR")
    o = ALICE.sign(
        OfferBody(
            title="Drill",
            desc="18 V",
            tags=("diy", "tools"),
            where="u4pru",
            quantity=2,
            kind="lend",
            terms=terms,
        ),
        seq=3,
        ts=NOW,
    )
    row = derive_item(o, N, [], no_load)
    assert row == ItemRow(
        n=N,
        type="offer",
        swarm=SWARM,
        author=ALICE.public,
        kind="lend",
        title="Drill",
        description="18 V",
        tags="diy tools",
        location="u4pru",
        quantity=2,
        max_days=7,
        deposit="20 EUR",
        has_terms=1,
        expires=NOW + lifetime.DEFAULT_MS["offer"],  # an offer that states none gets the default
        created_ts=NOW,
        updated_ts=NOW,
        cur_id=o.id,
        cur_seq=3,
        withdrawn_ts=None,
        price=None,
    )
    item = live_item(o.id, row)
    assert item == LiveItem(
        id=o.id,
        type="offer",
        author=ALICE.public,
        swarm=SWARM,
        title="Drill",
        kind="lend",
        desc="18 V",
        tags=("diy", "tools"),
        where="u4pru",
        quantity=2,
        expires=NOW + lifetime.DEFAULT_MS["offer"],
        created_ts=NOW,
        updated_ts=NOW,
        withdrawn=False,
        current_record_id=o.id,
        terms=terms,
        withdrawn_ts=None,
    )


def test_a_want_without_terms_has_none():
    w = ALICE.sign(WantBody(title="Ladder"), seq=1)
    row = derive_item(w, N, [], no_load)
    assert (row.type, row.has_terms, row.max_days, row.deposit, row.tags) == ("want", 0, None, None, "")
    item = live_item(w.id, row)
    assert item.terms is None and item.tags == ()


def test_the_row_has_the_columns_of_the_items_table():
    """ItemRow's fields are the ``items`` columns of the schema, in order (read from the DDL text).

    The columns of ``CREATE TABLE items``, then those later migrations append with ``ALTER TABLE``.
    """
    table = re.search(r"CREATE TABLE items \((.*?)\n\);", schema.MIGRATIONS[0], re.S)
    assert table is not None
    columns = [line.split()[0] for line in table.group(1).strip().splitlines()]
    for step in schema.MIGRATIONS[1:]:
        if isinstance(step, str):
            columns += re.findall(r"ALTER TABLE items ADD COLUMN (\w+)", step)
    assert columns == list(ItemRow._fields)
    assert ITEM_COLUMNS == ", ".join(columns)


# --- updates and withdraws -------------------------------------------------------------


def test_the_newest_update_wins_by_ts_then_seq_then_id():
    o = offer()
    early = update(o, "early", ts=NOW + 10, seq=2)
    late = update(o, "late", ts=NOW + 20, seq=3)
    late_higher_seq = update(o, "late, higher seq", ts=NOW + 20, seq=4)
    row = derive(o, early, late_higher_seq, late)
    assert (row.title, row.cur_id, row.cur_seq, row.updated_ts) == (
        "late, higher seq",
        late_higher_seq.id,
        4,
        NOW + 20,
    )
    assert row.created_ts == o.ts
    a = update(o, "same ts a", ts=NOW + 30, seq=7)
    b = update(o, "same ts b", ts=NOW + 30, seq=7)
    assert derive(o, a, b).cur_id == max(a.id, b.id)


def test_an_update_replaces_the_whole_content():
    o = offer(desc="old text", tags=("old",), kind="lend", terms=LendTerms(max_days=3))
    u = update(o, "New", ts=NOW + 1, seq=2, kind="give", tags=("new",))
    row = derive(o, u)
    assert (row.title, row.description, row.tags, row.kind, row.has_terms) == ("New", "", "new", "give", 0)
    assert (row.type, row.author, row.swarm) == ("offer", ALICE.public, SWARM)  # the original's envelope


def test_the_earliest_withdrawal_counts_and_an_update_never_revives():
    o = offer()
    row = derive(
        o,
        withdraw(o, ts=NOW + 50, seq=4),
        withdraw(o, ts=NOW + 20, seq=3),
        update(o, "Back again", ts=NOW + 90, seq=9),
    )
    assert row.withdrawn_ts == NOW + 20 and row.title == "Back again"
    item = live_item(o.id, row)
    assert item.withdrawn and not item.live(NOW)


def test_changes_by_another_author_or_swarm_or_for_another_item_are_ignored():
    o, other = offer(), offer("Other thing", desc="x")
    changes = [
        update(o, "by Bob", ts=NOW + 5, seq=2, author=BOB),
        update(o, "elsewhere", ts=NOW + 6, seq=3, swarm=OTHER_SWARM),
        withdraw(o, ts=NOW + 7, seq=4, author=BOB),
        withdraw(o, ts=NOW + 8, seq=5, swarm=OTHER_SWARM),
        update(other, "for the other", ts=NOW + 9, seq=6),
        withdraw(other, ts=NOW + 10, seq=7),
    ]
    assert derive(o, *changes) == derive_item(o, N, [], no_load)


@given(st.permutations(range(6)))
def test_the_order_of_the_changes_does_not_matter(order):
    o = offer()
    changes = [
        update(o, "u1", ts=NOW + 10, seq=2),
        update(o, "u2", ts=NOW + 30, seq=3),
        update(o, "u3", ts=NOW + 30, seq=4),
        update(o, "by Bob", ts=NOW + 99, seq=5, author=BOB),
        withdraw(o, ts=NOW + 40, seq=6),
        withdraw(o, ts=NOW + 20, seq=7),
    ]
    expected = derive(o, *changes)
    assert derive(o, *(changes[i] for i in order)) == expected
    assert (expected.title, expected.withdrawn_ts) == ("u3", NOW + 20)


# --- whether a change may apply ----------------------------------------------------------


def test_target_refusal():
    o = offer()
    assert target_refusal(ItemHead.of(update(o, "ok", ts=NOW + 1, seq=2)), o) is None
    assert target_refusal(ItemHead.of(withdraw(o, ts=NOW + 1, seq=2)), o) is None
    by_bob = ItemHead.of(update(o, "x", ts=NOW + 1, seq=2, author=BOB))
    assert isinstance(target_refusal(by_bob, o), NotAllowed)
    assert "other than its author" in str(target_refusal(by_bob, o))
    elsewhere = ItemHead.of(withdraw(o, ts=NOW + 1, seq=2, swarm=OTHER_SWARM))
    assert "another swarm" in str(target_refusal(elsewhere, o))
    attest = ALICE.sign(AttestBody(subject=BOB.public, level=500), seq=1)
    of_attest = ItemHead.of(update(attest, "x", ts=NOW + 1, seq=2))
    assert "not an offer or want" in str(target_refusal(of_attest, attest))


def test_an_unknown_target_waits_unless_it_was_pruned():
    head = ItemHead.of(update(offer(), "x", ts=NOW + 1, seq=2))
    assert refusal_of_unknown_target(head, target_pruned=False) is None
    assert isinstance(refusal_of_unknown_target(head, target_pruned=True), ExpiredError)


def test_invalid_heads_are_those_that_may_not_apply():
    o = offer()
    good = ItemHead.of(update(o, "ok", ts=NOW + 1, seq=2))
    bad = ItemHead.of(withdraw(o, ts=NOW + 1, seq=3, author=BOB))
    assert invalid_heads(o, [good, bad]) == [bad]
    attest = ALICE.sign(AttestBody(subject=BOB.public, level=500), seq=1)
    assert invalid_heads(attest, [good, bad]) == [good, bad]  # nothing applies to a non-item


def test_item_head_of_a_record():
    o = offer()
    u = update(o, "x", ts=NOW + 3, seq=5)
    assert ItemHead.of(u) == ItemHead(u.id, "update", ALICE.public, SWARM, NOW + 3, 5, o.id)


# --- liveness ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires", "withdrawn", "live"),
    [(None, False, True), (NOW + 1, False, True), (NOW, False, False), (None, True, False)],
)
def test_live_means_neither_withdrawn_nor_expired(expires, withdrawn, live):
    o = offer(ts=NOW - 1000, expires=expires)
    row = derive(o, withdraw(o, ts=NOW - 500, seq=2)) if withdrawn else derive(o)
    assert live_item(o.id, row).live(NOW) is live


# --- purity ---------------------------------------------------------------------------------

CORE = {"meshnode.errors", "meshnode.ids", "meshnode.records", "meshnode.lifetime", "meshnode.geohash"}
PURE_STDLIB = {
    "__future__",
    "collections",
    "collections.abc",
    "dataclasses",
    "typing",
    "re",
    "unicodedata",
    "math",
}


@pytest.mark.parametrize("module", ["derive", "search"])
def test_the_pure_store_modules_import_only_the_core(module):
    """derive and search need no database: they import only the (pure) core and pure stdlib modules."""
    path = Path(__file__).parent.parent / "meshnode" / "store" / f"{module}.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            imported.update(f"{name}.{a.name}" if name == "meshnode" else name for a in node.names)
    assert imported <= CORE | PURE_STDLIB | {"meshnode.store.derive"}, imported
