"""The trade-ring search (meshnode.rings): cycles of 3 to 5 authors, each once, ranked by trust."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode import matching
from meshnode.matching import Item
from meshnode.rings import Edge, Ring, RingSearchError, find_rings, rings_in_graph

SWARM = b"s" * 32


def offer(author: bytes, thing: str, n: int = 0, kind: str = "give") -> Item:
    return Item(
        b"o:" + author + thing.encode() + bytes([n]), "offer", kind, thing, "", (thing,), author, SWARM
    )


def want(author: bytes, thing: str, n: int = 0, kind: str = "swap") -> Item:
    return Item(
        b"w:" + author + thing.encode() + bytes([n]), "want", kind, thing, "", (thing,), author, SWARM
    )


def chain(authors: list[bytes], thing: str = "thing") -> tuple[list[Item], list[Item]]:
    """A cycle: authors[i] offers thing i, which authors[i+1] wants (the last's goes to the first)."""
    n = len(authors)
    offers = [offer(a, f"{thing}{i}") for i, a in enumerate(authors)]
    wants = [want(authors[(i + 1) % n], f"{thing}{i}") for i in range(n)]
    return offers, wants


def test_a_three_ring_found_with_its_steps() -> None:
    offers, wants = chain([b"A", b"B", b"C"])
    (ring,) = find_rings(offers, wants)
    assert ring.participants == (b"A", b"B", b"C")
    assert [(s.gives, s.gets) for s in ring.steps] == [
        (offers[0].id, wants[2].id),  # A gives thing0 to B, gets thing2 from C
        (offers[1].id, wants[0].id),
        (offers[2].id, wants[1].id),
    ]


def test_a_five_ring_found_and_rotated_to_the_smallest_id() -> None:
    offers, wants = chain([b"D", b"B", b"E", b"A", b"C"])
    (ring,) = find_rings(offers, wants)
    assert ring.participants == (b"A", b"C", b"D", b"B", b"E")


def test_a_six_cycle_is_not_a_ring() -> None:
    offers, wants = chain([b"A", b"B", b"C", b"D", b"E", b"F"])
    assert find_rings(offers, wants) == []
    offers, wants = chain([b"A", b"B", b"C", b"D"])
    assert find_rings(offers, wants, max_len=3) == []
    assert len(find_rings(offers, wants, max_len=4)) == 1


def test_a_two_party_swap_is_not_a_ring() -> None:
    offers, wants = chain([b"A", b"B"])
    assert find_rings(offers, wants) == []


def test_me_keeps_only_my_rings() -> None:
    o1, w1 = chain([b"A", b"B", b"C"])
    o2, w2 = chain([b"D", b"E", b"F"], "other")
    assert len(find_rings(o1 + o2, w1 + w2)) == 2
    (mine,) = find_rings(o1 + o2, w1 + w2, me=b"E")
    assert mine.participants == (b"D", b"E", b"F")
    assert find_rings(o1 + o2, w1 + w2, me=b"Z") == []


def test_ranked_by_minimum_then_mean_trust_then_ids() -> None:
    o1, w1 = chain([b"A", b"B", b"C"])
    o2, w2 = chain([b"D", b"E", b"F"], "other")
    o3, w3 = chain([b"G", b"H", b"I"], "third")
    trust = {
        b"A": 0.2,
        b"B": 0.9,
        b"C": 0.9,
        b"D": 0.5,
        b"E": 0.5,
        b"F": 0.6,
        b"G": 0.5,
        b"H": 0.5,
        b"I": 0.5,
    }
    rings = find_rings(o1 + o2 + o3, w1 + w2 + w3, trust=trust.__getitem__)
    assert [r.participants[0] for r in rings] == [b"D", b"G", b"A"]
    assert (rings[0].min_trust, round(rings[0].mean_trust, 6)) == (0.5, round(1.6 / 3, 6))
    assert [
        r.participants[0] for r in find_rings(o1 + o2 + o3, w1 + w2 + w3, trust=trust.__getitem__, limit=2)
    ] == [
        b"D",
        b"G",
    ]
    # Without trust: by ids.
    assert [r.participants[0] for r in find_rings(o1 + o2 + o3, w1 + w2 + w3)] == [b"A", b"D", b"G"]


def test_me_is_not_scored_by_trust() -> None:
    offers, wants = chain([b"A", b"B", b"C"])
    asked: list[bytes] = []

    def trust(author: bytes) -> float:
        asked.append(author)
        return 1.0

    (ring,) = find_rings(offers, wants, me=b"A", trust=trust)
    assert b"A" not in asked and ring.min_trust == 1.0


def test_me_is_found_in_a_crowd_more_trusted_than_me() -> None:
    """The candidate lists are capped most trusted first, but ``me``'s items always make them."""
    crowd = [b"%03d" % i for i in range(100)]
    offers = [offer(a, "thing") for a in crowd]
    wants = [want(a, "thing") for a in crowd]
    rings = find_rings(offers, wants, me=b"050", trust=lambda a: 1.0 - int(a) / 1000, limit=5)
    assert len(rings) == 5 and all(b"050" in r.participants for r in rings)
    assert rings[0].participants == (b"000", b"001", b"050") and rings[0].min_trust == 0.999


def test_each_cycle_once_in_a_complete_graph() -> None:
    """Everyone offers and wants one shared thing: every directed 3- and 4-cycle of 4 authors, once."""
    authors = [b"A", b"B", b"C", b"D"]
    offers = [offer(a, "thing") for a in authors]
    wants = [want(a, "thing") for a in authors]
    rings = find_rings(offers, wants, limit=100)
    cycles = [r.participants for r in rings]
    assert len(cycles) == len(set(cycles)) == 4 * 2 + 6
    assert all(c[0] == min(c) for c in cycles)


def test_an_author_with_two_offers_gives_the_one_wanted() -> None:
    # A offers a drill and a tent; B wants the drill, C the tent; B and C each give A what A wants.
    offers = [offer(b"A", "drill"), offer(b"A", "tent"), offer(b"B", "ladder"), offer(b"C", "saw")]
    wants = [want(b"B", "drill"), want(b"C", "ladder"), want(b"A", "saw"), want(b"C", "tent")]
    rings = find_rings(offers, wants)
    (ring,) = rings  # A -> B -> C -> A; A -> C directly is a two-step cycle only with C -> A
    assert ring.participants == (b"A", b"B", b"C")
    assert ring.steps[0].gives == offers[0].id  # the drill, not the tent


def test_the_best_scored_pair_names_an_edge() -> None:
    e1 = Edge(b"A", b"B", b"o1", b"w1", 0.5)
    e2 = Edge(b"A", b"B", b"o0", b"w1", 0.9)
    rest = [Edge(b"B", b"C", b"o2", b"w2", 1.0), Edge(b"C", b"A", b"o3", b"w3", 1.0)]
    (ring,) = rings_in_graph([e1, e2, *rest])
    assert ring.steps[0].gives == b"o0"


def test_kinds_and_swarms_are_respected() -> None:
    offers, wants = chain([b"A", b"B", b"C"])
    service = [*wants[:2], want(b"A", "thing2", kind="service")]  # a give offer cannot meet a service want
    assert find_rings(offers, service) == []
    other = [*offers[:2], Item(b"x", "offer", "give", "thing2", "", ("thing2",), b"C", b"t" * 32)]
    assert find_rings(other, wants) == []


def test_bad_arguments_are_refused() -> None:
    for kwargs in ({"max_len": 2}, {"max_len": 6}, {"limit": 0}, {"budget": 0}):
        with pytest.raises(RingSearchError):
            find_rings([], [], **kwargs)  # type: ignore[arg-type]


def test_the_budget_bounds_the_search() -> None:
    authors = [bytes([65 + i]) for i in range(12)]
    offers = [offer(a, "thing") for a in authors]
    wants = [want(a, "thing") for a in authors]
    assert find_rings(offers, wants, budget=500, limit=1000) != []
    assert len(find_rings(offers, wants, budget=500, limit=1000)) < len(
        find_rings(offers, wants, budget=10**6, limit=1000)
    )


# -- against brute force --------------------------------------------------------------------------


def brute_force_cycles(edges: set[tuple[bytes, bytes]], me: bytes | None = None) -> set[tuple[bytes, ...]]:
    """Every cycle of 3 to 5 distinct authors over ``edges``, smallest id first, by permutations."""
    authors = sorted({a for e in edges for a in e})
    found = set()
    for k in range(3, 6):
        for perm in itertools.permutations(authors, k):
            if perm[0] != min(perm) or (me is not None and me not in perm):
                continue
            if all((perm[i], perm[(i + 1) % k]) in edges for i in range(k)):
                found.add(perm)
    return found


THINGS = ["drill", "ladder", "tent", "saw"]
KINDS = [
    "give",
    "swap",
    "lend",
]  # an offer's "give" meets every want but "service"; "swap" and "lend" their own
#: For each of 3 to 8 authors, what they offer and what they want: (thing, kind) pairs.
Spec = list[tuple[list[tuple[str, str]], list[tuple[str, str]]]]
things = st.lists(st.tuples(st.sampled_from(THINGS), st.sampled_from(KINDS)), min_size=1, max_size=3)
swarms = st.lists(st.tuples(things, things), min_size=3, max_size=8)


def build(spec: Spec) -> tuple[list[Item], list[Item]]:
    offers, wants = [], []
    for a, (offered, wanted) in enumerate(spec):
        who = bytes([65 + a])
        offers += [offer(who, thing, n, kind) for n, (thing, kind) in enumerate(offered)]
        wants += [want(who, thing, n, kind) for n, (thing, kind) in enumerate(wanted)]
    return offers, wants


@given(swarms, st.one_of(st.none(), st.integers(0, 7)))
def test_every_cycle_found_as_brute_force(spec: Spec, me_n: int | None) -> None:
    offers, wants = build(spec)
    me = None if me_n is None else bytes([65 + me_n])
    edges = [
        Edge(o.author, w.author, o.id, w.id, m.score)
        for o in offers
        for w in wants
        if (m := matching.match(w, o)) is not None
    ]
    expected = brute_force_cycles({(e.giver, e.taker) for e in edges}, me)
    rings = find_rings(offers, wants, me=me, limit=10_000)
    assert [r.participants for r in rings] == [
        r.participants for r in rings_in_graph(edges, me=me, limit=10_000)
    ]
    assert {r.participants for r in rings} == expected
    assert len(rings) == len(expected)
    by_id = {i.id: i for i in offers + wants}
    for ring in rings:
        check_steps(ring, by_id)


def check_steps(ring: Ring, by_id: dict[bytes, Item]) -> None:
    n = len(ring.steps)
    for i, step in enumerate(ring.steps):
        gives, gets = by_id[step.gives], by_id[step.gets]
        assert gives.author == gets.author == step.author
        nxt = by_id[ring.steps[(i + 1) % n].gets]
        assert matching.match(nxt, gives) is not None
