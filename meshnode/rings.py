"""Trade rings: cycles of three to five neighbours who can each give the next what they want (pure).

A ring is a swap among ``n`` (3 to 5) authors where nobody has what the
next one wants directly in return, but ``A`` can give ``B`` something ``B``
wants, ``B`` can give ``C``, ..., and the last can give ``A``. Two-party
swaps are ordinary proposals and never reported here.

**The graph.** :func:`find_rings` takes a swarm's live offers and wants
(anything with the fields of :class:`meshnode.matching.Matchable`, e.g.
:class:`meshnode.store.LiveItem`; being live is the caller's business, as
for :func:`meshnode.matching.match`). An offer by ``X`` that meets a want by
``Y`` (``matching.match(want, offer)`` is not ``None``) is an edge ``X -> Y``
carrying that offer and that want. Between two authors only the best pair
counts: the highest score, then the smaller offer id, then the smaller want
id. :func:`rings_in_graph` runs the same search on edges given directly
(:class:`Edge`; the property tests feed it a brute-force graph).

**A ring** (:class:`Ring`, frozen) lists its participants in cycle order,
each once, as :class:`RingStep`: the author, the offer they give to the next
participant, and their want met by the previous participant's offer. A cycle
is reported once, rotated so that its smallest author id comes first.

**Ranking.** ``trust(author)`` (default: 0.0 for everyone) scores the
participants; with ``me`` it is not asked about ``me`` (one does not rank
oneself). Rings come best first by the minimum trust of the scored
participants, then their mean, then fewer participants, then the author ids
in order: deterministic, and at most ``limit`` of them. With ``me``, only
the rings that include ``me`` are searched for and returned.

**The search.** A depth-first search from each start author, at most
``max_len`` (3 to 5) steps, over the authors after the start in a canonical
order (most trusted first, then by id), so that every cycle is found exactly
once, from its first author in that order; with ``me``, one search from
``me`` over everyone. Before each start, a backward breadth-first pass marks
the authors that can reach the start in the steps left, and the search
enters no other (so it walks only towards cycles). Johnson's algorithm was
not chosen: its blocking lists serve unbounded cycles, and with the length
capped at 5 they must be reworked (Gupta and Suzumura's bounded variant) for
no gain at this depth; the ordered bounded search is short, obviously
correct, and lets the trust order prune: successors are tried most trusted
first, and once ``limit`` rings are held, a path whose minimum trust is
already below the worst of them is not extended (extending never raises a
minimum).

**Candidates, not every pair.** Matching every want against every offer is
quadratic, so the offers are indexed by their folded tags and their words
(:func:`meshnode.matching.folded_tags`, :func:`~meshnode.matching.offer_words`),
each posting list ordered by its author's trust (then author, then id). A
want's candidates are the offers sharing one of its folded tags or one of
its words (:func:`~meshnode.matching.want_words`), from another author in
the same swarm with a kind that meets it. A candidate pair is confirmed by
:func:`~meshnode.matching.match` only when the search first follows the
edge it would make, so the matching work follows the search, not the swarm.

**Bounds** (the work is bounded however large the swarm; a ring beyond them
can be missed, never a wrong one returned):

* :data:`MAX_POSTINGS_PER_KEY` offers read per tag or word of a want;
* :data:`MAX_CANDIDATES_PER_WANT` candidate offers per want;
* :data:`MAX_PAIRS_PER_EDGE` candidate (offer, want) pairs confirmed per
  pair of authors;
* :data:`MAX_EDGES_PER_AUTHOR` edges followed out of each author (the most
  trusted receivers first, then by id);
* :data:`MAX_EXPANSIONS` edges followed (and closing edges tried) in the
  whole search, ``budget`` to change it; when it runs out, the best rings
  found so far are returned.

Bad arguments (``max_len`` outside 3..5, ``limit`` or ``budget`` below 1)
raise :class:`RingSearchError` (a :class:`meshnode.errors.MeshError`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from meshnode import matching
from meshnode.errors import MeshError
from meshnode.matching import Matchable

MIN_RING = 3
MAX_RING = 5
MAX_POSTINGS_PER_KEY = 64
MAX_CANDIDATES_PER_WANT = 64
MAX_PAIRS_PER_EDGE = 8
MAX_EDGES_PER_AUTHOR = 32
MAX_EXPANSIONS = 200_000

Trust = Callable[[bytes], float]


class RingSearchError(MeshError):
    """Arguments a ring search cannot run with."""


@dataclass(frozen=True)
class Edge:
    """``giver`` can give ``taker`` the offer ``offer_id``, which meets ``taker``'s want ``want_id``."""

    giver: bytes
    taker: bytes
    offer_id: bytes
    want_id: bytes
    score: float


@dataclass(frozen=True)
class RingStep:
    """A participant: gives ``gives`` (an offer id) to the next; ``gets`` (a want id) met by the previous."""

    author: bytes
    gives: bytes
    gets: bytes


@dataclass(frozen=True)
class Ring:
    """A cycle of 3 to 5 participants in order, smallest author id first, and its trust."""

    steps: tuple[RingStep, ...]
    min_trust: float
    mean_trust: float

    @property
    def participants(self) -> tuple[bytes, ...]:
        """The authors in cycle order."""
        return tuple(s.author for s in self.steps)


def _better(a: Edge, b: Edge) -> bool:
    return (-a.score, a.offer_id, a.want_id) < (-b.score, b.offer_id, b.want_id)


class _Search:
    """One bounded search over a graph given by ``successors`` and ``edge`` (which may confirm lazily)."""

    def __init__(
        self,
        edge: Callable[[bytes, bytes], Edge | None],
        trust: Trust,
        me: bytes | None,
        max_len: int,
        limit: int,
        budget: int,
    ) -> None:
        self.edge = edge
        self.me = me
        self.max_len = max_len
        self.limit = limit
        self.budget = budget
        self.trust_of: dict[bytes, float] = {}
        self._trust = trust
        self.best: list[tuple[tuple[float, float, int, tuple[bytes, ...]], Ring]] = []
        self.succ: dict[bytes, list[bytes]] = {}
        self.pred: dict[bytes, list[bytes]] = {}

    def score(self, author: bytes) -> float:
        t = self.trust_of.get(author)
        if t is None:
            t = self.trust_of[author] = 0.0 if author == self.me else float(self._trust(author))
        return t

    def run(self, targets: Mapping[bytes, Iterable[bytes]]) -> list[Ring]:
        """The best rings over the candidate edges ``targets`` (giver -> takers)."""
        for x, ys in targets.items():
            self.succ[x] = sorted(ys, key=lambda y: (-self.score(y), y))[:MAX_EDGES_PER_AUTHOR]
            for y in self.succ[x]:
                self.pred.setdefault(y, []).append(x)
        if self.me is not None:
            self._from(self.me, lambda a: True)
        else:
            nodes = set(self.succ) | set(self.pred)
            order = sorted(nodes, key=lambda a: (-self.score(a), a))
            rank = {a: i for i, a in enumerate(order)}
            for start in order:
                if self.budget <= 0:
                    break
                self._from(start, _After(rank, rank[start]))
        return [ring for _, ring in self.best]

    def _reach_back(self, start: bytes, allowed: Callable[[bytes], bool]) -> dict[bytes, int]:
        """Steps from each allowed author to ``start`` (at most ``max_len - 1``)."""
        dist = {start: 0}
        frontier = [start]
        for d in range(1, self.max_len):
            nxt = []
            for y in frontier:
                for x in self.pred.get(y, ()):
                    if x not in dist and allowed(x):
                        dist[x] = d
                        nxt.append(x)
            frontier = nxt
        return dist

    def _from(self, start: bytes, allowed: Callable[[bytes], bool]) -> None:
        dist = self._reach_back(start, allowed)
        path = [start]
        edges: list[Edge] = []
        on_path = {start}
        scored = [] if start == self.me else [self.score(start)]

        def full_and_below(low: float) -> bool:
            return len(self.best) >= self.limit and -low > self.best[-1][0][0]

        def walk(v: bytes) -> None:
            if len(path) >= MIN_RING and start in self.succ.get(v, ()):
                self.budget -= 1
                closing = self.edge(v, start)
                if closing is not None:
                    self._keep(path, [*edges, closing], scored)
            if len(path) == self.max_len:
                return
            left = self.max_len - len(path)  # steps left after the next one, to get back
            for w in self.succ.get(v, ()):
                if self.budget <= 0:
                    return
                if w in on_path or dist.get(w, left + 1) > left or not allowed(w):
                    continue
                self.budget -= 1
                e = self.edge(v, w)
                if e is None:
                    continue
                t = self.score(w)
                if w != self.me and full_and_below(min([*scored, t])):
                    continue
                path.append(w)
                edges.append(e)
                on_path.add(w)
                if w != self.me:
                    scored.append(t)
                walk(w)
                if w != self.me:
                    scored.pop()
                on_path.discard(w)
                edges.pop()
                path.pop()

        walk(start)

    def _keep(self, path: list[bytes], edges: list[Edge], scored: list[float]) -> None:
        n = len(path)
        low = min(scored) if scored else 0.0
        mean = sum(scored) / len(scored) if scored else 0.0
        first = min(range(n), key=lambda i: path[i])
        steps = tuple(
            RingStep(author=path[i], gives=edges[i].offer_id, gets=edges[i - 1].want_id)
            for i in (*range(first, n), *range(first))
        )
        ring = Ring(steps=steps, min_trust=low, mean_trust=mean)
        key = (-low, -mean, n, ring.participants)
        if len(self.best) >= self.limit and key >= self.best[-1][0]:
            return
        bisect.insort(self.best, (key, ring), key=lambda kr: kr[0])
        del self.best[self.limit :]


@dataclass(frozen=True)
class _After:
    """Whether an author comes after the start in the search's order."""

    rank: Mapping[bytes, int]
    start: int

    def __call__(self, author: bytes) -> bool:
        return self.rank[author] > self.start


def _check(max_len: int, limit: int, budget: int) -> None:
    if not MIN_RING <= max_len <= MAX_RING:
        raise RingSearchError(f"max_len must be {MIN_RING} to {MAX_RING}, not {max_len}")
    if limit < 1 or budget < 1:
        raise RingSearchError(f"limit and budget must be at least 1, not {limit} and {budget}")


def rings_in_graph(
    edges: Iterable[Edge],
    *,
    me: bytes | None = None,
    max_len: int = MAX_RING,
    trust: Trust | None = None,
    limit: int = 20,
    budget: int = MAX_EXPANSIONS,
) -> list[Ring]:
    """The best rings over ``edges`` (the best edge between two authors counts), as :func:`find_rings`."""
    _check(max_len, limit, budget)
    best: dict[tuple[bytes, bytes], Edge] = {}
    for e in edges:
        if e.giver == e.taker:
            continue
        old = best.get((e.giver, e.taker))
        if old is None or _better(e, old):
            best[(e.giver, e.taker)] = e
    targets: dict[bytes, list[bytes]] = {}
    for x, y in best:
        targets.setdefault(x, []).append(y)
    return _Search(lambda x, y: best.get((x, y)), trust or _no_trust, me, max_len, limit, budget).run(targets)


def _no_trust(author: bytes) -> float:
    return 0.0


def find_rings(
    offers: Iterable[Matchable],
    wants: Iterable[Matchable],
    *,
    me: bytes | None = None,
    max_len: int = MAX_RING,
    trust: Trust | None = None,
    limit: int = 20,
    budget: int = MAX_EXPANSIONS,
) -> list[Ring]:
    """The best rings among ``offers`` and ``wants``, at most ``limit`` (rules in the module's docstring)."""
    _check(max_len, limit, budget)
    confirmed: dict[tuple[bytes, bytes], Edge | None] = {}

    def edge(x: bytes, y: bytes) -> Edge | None:
        if (x, y) not in confirmed:
            found = None
            for offer, want in pairs[x][y]:
                m = matching.match(want, offer)
                if m is not None:
                    e = Edge(giver=x, taker=y, offer_id=offer.id, want_id=want.id, score=m.score)
                    if found is None or _better(e, found):
                        found = e
            confirmed[(x, y)] = found
        return confirmed[(x, y)]

    search = _Search(edge, trust or _no_trust, me, max_len, limit, budget)
    pairs = _candidate_pairs(
        [o for o in offers if o.type == "offer"], [w for w in wants if w.type == "want"], search.score
    )
    return search.run(pairs)


def _candidate_pairs(
    offers: list[Matchable], wants: list[Matchable], trust: Trust
) -> dict[bytes, dict[bytes, list[tuple[Matchable, Matchable]]]]:
    """Giver -> taker -> the (offer, want) pairs that may match (bounds in the module's docstring)."""
    by_tag: dict[str, list[Matchable]] = {}
    by_word: dict[str, list[Matchable]] = {}
    for o in sorted(offers, key=lambda o: (-trust(o.author), o.author, o.id)):
        for tag in matching.folded_tags(o.tags):
            by_tag.setdefault(tag, []).append(o)
        head, desc = matching.offer_words(o)
        for word in head | desc:
            by_word.setdefault(word, []).append(o)
    pairs: dict[bytes, dict[bytes, list[tuple[Matchable, Matchable]]]] = {}
    for want in sorted(wants, key=lambda w: w.id):
        kinds = matching.COMPATIBLE_KINDS.get(want.kind, frozenset())
        postings = [by_tag.get(t, ()) for t in sorted(matching.folded_tags(want.tags))]
        postings += [by_word.get(w, ()) for w in sorted(matching.want_words(want))]
        seen: set[bytes] = set()
        for posting in postings:
            for offer in posting[:MAX_POSTINGS_PER_KEY]:
                if (
                    offer.id in seen
                    or offer.author == want.author
                    or offer.swarm != want.swarm
                    or offer.kind not in kinds
                ):
                    continue
                seen.add(offer.id)
                edge = pairs.setdefault(offer.author, {}).setdefault(want.author, [])
                if len(edge) < MAX_PAIRS_PER_EDGE:
                    edge.append((offer, want))
                if len(seen) >= MAX_CANDIDATES_PER_WANT:
                    break
            if len(seen) >= MAX_CANDIDATES_PER_WANT:
                break
    return pairs
