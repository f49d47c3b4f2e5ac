"""Trade-ring search (``meshnode.rings.find_rings``) over 5,000 and 50,000 live offers and wants.

Builds in memory N items, half offers and half wants, from N / 10 authors
(titles from the vocabulary of ``bench.footprint``: a thing and an
adjective; tags the thing and one of five categories, so a category tag is
shared by a fifth of the swarm and the graph is dense), with a trust score
per author from a hash. Measures, best of ``--runs``:

* ``find_rings`` without ``me`` (the swarm's best 20 rings) and with ``me``
  (one author's), at the default bounds; and with ``me`` but no trust
  (everyone ties, nothing is pruned: the worst case, the budget spent);
* next to a ceiling measured in the same run: a plain pass over the items
  computing what matching reads of each (``folded_tags`` and the words),
  the least any index over matching's words costs; and ``matching.match``
  run once per want (on the want and an offer of its thing), the unit of
  confirming a candidate.

    .venv/bin/python -m bench.rings [--records 5000,50000] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import random

from bench.common import best_of
from bench.footprint import ADJ, THINGS
from meshnode import matching, rings
from meshnode.matching import Item

SWARM = b"s" * 32
CATEGORIES = ["diy", "garden", "kids", "music", "outdoor"]


def build(n: int) -> tuple[list[Item], list[Item]]:
    rng = random.Random(14)
    authors = [hashlib.sha256(b"author%d" % i).digest() for i in range(max(10, n // 10))]
    offers, wants = [], []
    for i in range(n):
        thing = rng.choice(THINGS).replace("-", " ")
        is_offer = i % 2 == 0
        item = Item(
            id=hashlib.sha256(b"item%d" % i).digest(),
            type="offer" if is_offer else "want",
            kind=rng.choice(["lend", "give", "swap"]),
            title=f"{rng.choice(ADJ).capitalize()} {thing}",
            desc=f"A {rng.choice(ADJ)} {thing} in good order; ask me about it. #{i}" if is_offer else "",
            tags=tuple(sorted({thing.split()[0], rng.choice(CATEGORIES)})),
            author=rng.choice(authors),
            swarm=SWARM,
        )
        (offers if is_offer else wants).append(item)
    return offers, wants


def trust(author: bytes) -> float:
    return author[0] / 255


def words_pass(offers: list[Item], wants: list[Item]) -> None:
    for o in offers:
        matching.folded_tags(o.tags)
        matching.offer_words(o)
    for w in wants:
        matching.folded_tags(w.tags)
        matching.want_words(w)


def match_once_per_want(offers: list[Item], wants: list[Item]) -> int:
    by_thing = {o.title.split(" ", 1)[1]: o for o in offers}
    return sum(matching.match(w, by_thing[w.title.split(" ", 1)[1]]) is not None for w in wants)


def measure(n: int, runs: int) -> None:
    offers, wants = build(n)
    me = offers[0].author
    floor, _ = best_of(runs, lambda: words_pass(offers, wants))
    unit, _ = best_of(runs, lambda: match_once_per_want(offers, wants))
    every, found = best_of(runs, lambda: rings.find_rings(offers, wants, trust=trust))
    mine, found_mine = best_of(runs, lambda: rings.find_rings(offers, wants, trust=trust, me=me))
    untrusted, _ = best_of(runs, lambda: rings.find_rings(offers, wants, me=me))
    assert isinstance(found, list) and isinstance(found_mine, list)
    print(
        f"{n:,} live items ({len(offers):,} offers, {len(wants):,} wants, {n // 10:,} authors),"
        f" best of {runs}:"
    )
    print(
        f"  find_rings, the best 20     {every * 1000:8.1f} ms  ({len(found)} rings;"
        f" best min trust {found[0].min_trust if found else 0:.2f})"
    )
    print(f"  find_rings, me=one author   {mine * 1000:8.1f} ms  ({len(found_mine)} rings)")
    print(f"  find_rings, me, no trust    {untrusted * 1000:8.1f} ms  (all tie: the work budget is spent)")
    print(f"  ceiling: a pass computing every item's tags and words  {floor * 1000:8.1f} ms")
    print(
        f"  ceiling: matching.match once per want ({len(wants):,} calls)  {unit * 1000:8.1f} ms"
        f"  ({unit / len(wants) * 1e6:.1f} us a call)"
    )
    print(f"  find_rings / words pass: {every / floor:.2f} (all), {mine / floor:.2f} (me)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", default="5000,50000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for n in args.records.split(","):
        measure(int(n), args.runs)


if __name__ == "__main__":
    main()
