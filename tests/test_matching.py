"""Wants meet offers: the pure rules (kind, tags, text, score) and the store's two queries."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode import matching
from meshnode import records as r
from meshnode.errors import BadValue, NotFound
from meshnode.matching import Match, match, significant_words
from meshnode.store import Store
from tests.conftest import NOW, SWARM, Author

OTHER_SWARM = hashlib.blake2b(b"other swarm", digest_size=32).digest()
ALICE, BOB = b"\x01" * 32, b"\x02" * 32


@dataclasses.dataclass(frozen=True)
class Item:
    """A Matchable for the pure tests."""

    type: str
    title: str
    kind: str = "lend"
    desc: str = ""
    tags: tuple[str, ...] = ()
    author: bytes = ALICE
    swarm: bytes = SWARM
    id: bytes = b""

    def __post_init__(self) -> None:
        if not self.id:
            digest = hashlib.blake2b(repr((self.type, self.title, self.author)).encode(), digest_size=32)
            object.__setattr__(self, "id", digest.digest())


def want(title: str, **kw) -> Item:
    return Item("want", title, **kw)


def offer(title: str, **kw) -> Item:
    kw.setdefault("author", BOB)
    return Item("offer", title, **kw)


# --- words ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        ("Cordless Drill", {"cordless", "drill"}),
        ("DRILLS drills Drill", {"drill"}),
        ("batteries, boxes & benches", {"battery", "box", "bench"}),
        ("glass glasses bus axis", {"glass", "bus", "axis"}),
        ("Looking for a ladder please", {"ladder"}),
        ("18V drill 2 x 2024", {"18v", "drill"}),
        ("<b>drill</b><script>alert(1)</script>", {"drill", "script", "alert"}),
        ("Straße ÉCOLE café", {"strasse", "école", "café"}),
        ("power_tools power-tools", {"power", "tool"}),
        ("", set()),
        ("!!! ... ---", set()),
    ],
)
def test_significant_words(text, words):
    assert significant_words(text) == words


# --- kinds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "want_kind, offer_kinds",
    [("lend", {"lend", "give"}), ("give", {"give"}), ("swap", {"swap", "give"}), ("service", {"service"})],
)
def test_kinds(want_kind, offer_kinds):
    for kind in r.ITEM_KINDS:
        found = match(want("Ladder", kind=want_kind), offer("Ladder", kind=kind))
        assert (found is not None) == (kind in offer_kinds), (want_kind, kind)


def test_exact_kind_scores_above_a_compatible_one():
    lend = match(want("Ladder"), offer("Ladder", kind="lend"))
    give = match(want("Ladder"), offer("Ladder", kind="give"))
    assert lend.score == 1.0 and give.score == 0.9 and give.kind == "give"


# --- tags ----------------------------------------------------------------------------


def test_a_shared_tag_is_enough():
    gutter = "Something to reach the gutter"
    found = match(want(gutter, tags=("ladder",)), offer("Alu steps", tags=("ladder",)))
    assert found is not None and found.shared_tags == ("ladder",)
    assert match(want(gutter + " ladder"), offer("Alu steps ladder")) is None  # 1 of 3 words


def test_tags_fold_plurals_and_case():
    found = match(want("x", tags=("drills",)), offer("Bosch", tags=("drill",)))
    assert found is not None and found.shared_tags == ("drill",)


def test_tag_words_count_as_want_words():
    found = match(want("Something for the garden", tags=("hedge-trimmers",)), offer("Hedge trimmer"))
    assert found is not None and set(found.shared_words) == {"hedge", "trimmer"}


# --- text ----------------------------------------------------------------------------


def test_words_match_across_case_and_plurals():
    found = match(want("bread MAKER"), offer("Panasonic Bread Makers"))
    assert found is not None and found.shared_words == ("bread", "maker")


def test_half_the_wants_words_are_needed():
    assert match(want("maker"), offer("Panasonic bread maker")) is not None
    assert match(want("cordless drill"), offer("Bosch drill")) is not None
    assert match(want("Cordless drill 18V battery"), offer("Cordless drill")) is not None
    assert match(want("Cordless drill 18V battery"), offer("Bosch drill")) is None
    full = match(want("bread maker"), offer("Panasonic bread maker"))
    half = match(want("bread maker"), offer("coffee maker"))
    assert full.score > half.score > 0


def test_stop_words_never_match():
    assert match(want("Looking for the ladder"), offer("Looking for the way home")) is None
    assert match(want("the a of"), offer("the a of")) is None


def test_title_and_tags_count_more_than_description():
    in_title = match(want("ladder"), offer("Ladder"))
    in_tags = match(want("ladder"), offer("Alu steps", tags=("ladder",)))
    in_desc = match(want("ladder"), offer("Alu steps", desc="a folding ladder, 3 m"))
    assert in_title.score == in_tags.score > in_desc.score > 0


def test_the_wants_description_is_not_matched_on():
    assert match(want("Ladder", desc="for the weekend, to clean the gutter"), offer("Gutter cleaner")) is None


def test_empty_description_and_hostile_titles():
    assert match(want("drill"), offer("<img src=x onerror=alert(1)> drill", desc="")) is not None
    assert match(want('"); DROP TABLE items; --'), offer("items table")) is not None
    assert match(want("\u202e\u200b"), offer("\u202e\u200b")) is None


def test_no_self_match_and_no_cross_swarm_match():
    assert match(want("Ladder"), offer("Ladder", author=ALICE)) is None
    assert match(want("Ladder"), offer("Ladder", swarm=OTHER_SWARM)) is None


def test_wrong_types_give_none():
    assert match(offer("Ladder"), want("Ladder", author=BOB)) is None
    assert match(want("Ladder"), want("Ladder", author=BOB)) is None


def test_match_names_both_sides_and_rank_is_deterministic():
    w = want("ladder")
    a, b = offer("Ladder", author=b"\x03" * 32), offer("ladder", desc="ladder", author=b"\x04" * 32)
    ma, mb = match(w, a), match(w, b)
    assert (ma.want_id, ma.offer_id) == (w.id, a.id)
    assert matching.rank([mb, ma]) == matching.rank([ma, mb])


# --- properties ----------------------------------------------------------------------

texts = st.text(max_size=200)
tag_lists = st.lists(st.text(max_size=20), max_size=5).map(tuple)


kinds = st.sampled_from(r.ITEM_KINDS)


@given(texts, texts, tag_lists, texts, texts, tag_lists, kinds, kinds)
def test_match_never_raises_and_scores_in_range(wt, wd, wtags, ot, od, otags, wk, ok):
    found = match(want(wt, desc=wd, tags=wtags, kind=wk), offer(ot, desc=od, tags=otags, kind=ok))
    assert found is None or (isinstance(found, Match) and 0 < found.score <= 1)


tags = st.from_regex(r"[a-z0-9][a-z0-9_\-]{0,10}", fullmatch=True)


@given(texts, tag_lists, texts, texts, tag_lists, tags, st.sampled_from(r.ITEM_KINDS))
def test_adding_a_shared_tag_never_lowers_the_score(wt, wtags, ot, od, otags, tag, ok):
    w, o = want(wt, tags=wtags, kind="lend"), offer(ot, desc=od, tags=otags, kind=ok)
    before = match(w, o)
    after = match(dataclasses.replace(w, tags=(*w.tags, tag)), dataclasses.replace(o, tags=(*o.tags, tag)))
    if ok in matching.COMPATIBLE_KINDS["lend"]:
        assert after is not None
        assert before is None or after.score >= before.score
    else:
        assert before is None and after is None


# --- the store -----------------------------------------------------------------------


@pytest.fixture
def store():
    with Store.open(":memory:") as s:
        yield s


def item(author: Author, title: str, cls=r.OfferBody, swarm: bytes = SWARM, **kw) -> r.Record:
    kw.setdefault("kind", "lend")
    return author.sign(cls(title=title, **kw), swarm=swarm)


def test_offers_for_a_want_and_wants_for_an_offer(store):
    alice, bob, carol = Author(1), Author(2), Author(3)
    w = item(alice, "Cordless drill", r.WantBody, tags=("tools",))
    drill = item(bob, "Bosch drills", desc="with two batteries")
    tools = item(carol, "Box of spanners", tags=("tools",))
    mine = item(alice, "Cordless drill")  # her own: never
    elsewhere = item(bob, "Cordless drill", swarm=b"\x09" * 32)
    kept = item(carol, "Cordless drill, to keep", kind="swap")  # a lend want is not met by a swap
    unrelated = item(bob, "Ladder")
    store.add_records([w, drill, tools, mine, elsewhere, kept, unrelated], now_ms=NOW)
    found = store.offers_matching(w.id, now_ms=NOW)
    # A shared tag (3) and its word (2) of 9 weigh more than one title word (2) of 9.
    assert [o.id for _, o in found] == [tools.id, drill.id]
    assert found[0][0].shared_tags == ("tool",) and found[1][0].shared_words == ("drill",)
    assert found[0][0].score == 0.6 and found[1][0].score == 0.3
    # From the other side, the same pair.
    back = store.wants_matching(drill.id, now_ms=NOW)
    assert [(m, x.id) for m, x in back] == [(found[1][0], w.id)]
    assert store.wants_matching(unrelated.id, now_ms=NOW) == []
    # A Matchable that is not stored (an item just arrived) works too.
    assert store.offers_matching(store.item(w.id), now_ms=NOW, limit=1) == found[:1]


def test_only_live_items_are_matched(store):
    alice, bob = Author(1), Author(2)
    w = item(alice, "Ladder", r.WantBody)
    gone = item(bob, "Ladder")
    soon = item(bob, "Long ladder", expires=NOW + 1000)
    store.add_records([w, gone, soon, bob.sign(r.WithdrawBody(target=gone.id))], now_ms=NOW)
    assert [o.id for _, o in store.offers_matching(w.id, now_ms=NOW)] == [soon.id]
    assert store.offers_matching(w.id, now_ms=NOW + 1000) == []


def test_bad_arguments(store):
    alice = Author(1)
    o = item(alice, "Ladder")
    store.add_record(o, now_ms=NOW)
    with pytest.raises(NotFound):
        store.offers_matching(b"\x00" * 32, now_ms=NOW)
    with pytest.raises(BadValue):
        store.offers_matching(o.id, now_ms=NOW)
    assert store.wants_matching(o.id, now_ms=NOW) == []


def test_hostile_text_reaches_fts_safely(store):
    alice, bob = Author(1), Author(2)
    w = item(alice, 'drill" OR * NEAR(x) ^ -- ) AND', r.WantBody, tags=("a-b_c",))
    o = item(bob, 'NEAR drill "', tags=("a-b_c",))
    store.add_records([w, o], now_ms=NOW)
    assert [x.id for _, x in store.offers_matching(w.id, now_ms=NOW)] == [o.id]
    assert [x.id for _, x in store.wants_matching(o.id, now_ms=NOW)] == [w.id]


def test_candidates_are_bounded_and_the_best_come_first(store):
    alice, bob = Author(1), Author(2)
    w = item(alice, "Ladder", r.WantBody)
    many = [item(bob, f"Ladder number {i}", desc="ladder") for i in range(250)]
    exact = item(bob, "Ladder")
    store.add_records([w, *many, exact], now_ms=NOW)
    found = store.offers_matching(w.id, now_ms=NOW, limit=5)
    assert len(found) == 5 and all(m.score == 1.0 for m, _ in found)
