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
``me`` over everyone. Before each start, a backward breadth-first pass of
:data:`REACH_BACK` steps (or ``max_len - 1``, if fewer) marks how many steps
each author near the start needs to get back to it (one not marked needs
more), and the search enters no author that cannot get back in the steps
left (so the last steps walk only towards cycles). Johnson's algorithm was
not chosen: its blocking lists serve unbounded cycles, and with the length
capped at 5 they must be reworked (Gupta and Suzumura's bounded variant) for
no gain at this depth; the ordered bounded search is short, plainly correct,
and lets the trust order prune: successors are tried most trusted first;
once ``limit`` rings are held, a path whose minimum trust is already below
the worst of them is not extended (extending never raises a minimum), and no
start less trusted than that is tried.

**Candidates, not every pair.** Matching every want against every offer is
quadratic. Offers and wants are indexed by swarm, kind and each folded tag
(:func:`meshnode.matching.folded_tags`) and word (an offer's
:func:`~meshnode.matching.offer_words`, a want's
:func:`~meshnode.matching.want_words`), each posting list ordered with
``me``'s items first, then by author trust, author and id. An author's
candidate receivers are the authors of the wants that share a tag or a word
with one of its offers, in a kind that offer meets (and symmetrically for
givers, which the backward pass reads). They are gathered only when the
search reaches that author, and a candidate pair is confirmed by
:func:`~meshnode.matching.match` only when the search first follows its
edge: the work follows the search, not the swarm.

**Bounds** (the work is bounded however large the swarm; a ring beyond them
can be missed, never a wrong one returned):

* :data:`MAX_POSTINGS_PER_KEY` items read per (kind, tag or word) of an item;
* :data:`MAX_CANDIDATES_PER_ITEM` candidates per offer (wants) or want (offers);
* :data:`MAX_PAIRS_PER_EDGE` candidate (offer, want) pairs confirmed per
  pair of authors;
* :data:`MAX_EDGES_PER_AUTHOR` receivers followed out of, and givers read
  into, each author (``me`` first, then the most trusted, then by id);
* ``budget`` (default :data:`MAX_WORK`) units of work in all: an edge
  followed or a closing edge tried, a posting read, a match confirmed (the
  default is ~0.5 s of Python on the benchmark's machine, reached when
  trust does not prune: with no trust, everyone ties). When it runs out,
  the best rings found so far are returned.

Bad arguments (``max_len`` outside 3..5, ``limit`` or ``budget`` below 1)
raise :class:`RingSearchError` (a :class:`meshnode.errors.MeshError`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from meshnode import matching
from meshnode.errors import MeshError
from meshnode.matching import Matchable

MIN_RING = 3
MAX_RING = 5
REACH_BACK = 2
MAX_POSTINGS_PER_KEY = 32
MAX_CANDIDATES_PER_ITEM = 32
MAX_PAIRS_PER_EDGE = 8
MAX_EDGES_PER_AUTHOR = 32
MAX_WORK = 100_000

Trust = Callable[[bytes], float]
_RankKey = tuple[float, float, int, tuple[bytes, ...]]


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


class _Graph(Protocol):
    """What the search reads of the graph: candidate neighbours, and edges confirmed on demand."""

    work: int

    def authors(self) -> Iterable[bytes]: ...

    def takers(self, giver: bytes) -> Iterable[bytes]: ...

    def givers(self, taker: bytes) -> Iterable[bytes]: ...

    def edge(self, giver: bytes, taker: bytes) -> Edge | None: ...


def _better(a: Edge, b: Edge) -> bool:
    return (-a.score, a.offer_id, a.want_id) < (-b.score, b.offer_id, b.want_id)


class _EdgeGraph:
    """A graph given as edges (the best one between two authors counts)."""

    def __init__(self, edges: Iterable[Edge]) -> None:
        self.work = 0
        self.best: dict[tuple[bytes, bytes], Edge] = {}
        self.out: dict[bytes, list[bytes]] = {}
        self.into: dict[bytes, list[bytes]] = {}
        for e in edges:
            old = self.best.get((e.giver, e.taker))
            if e.giver != e.taker and (old is None or _better(e, old)):
                self.best[(e.giver, e.taker)] = e
        for x, y in self.best:
            self.out.setdefault(x, []).append(y)
            self.into.setdefault(y, []).append(x)

    def authors(self) -> Iterable[bytes]:
        return (a for a in self.out if a in self.into)

    def takers(self, giver: bytes) -> Iterable[bytes]:
        return self.out.get(giver, ())

    def givers(self, taker: bytes) -> Iterable[bytes]:
        return self.into.get(taker, ())

    def edge(self, giver: bytes, taker: bytes) -> Edge | None:
        return self.best.get((giver, taker))


def _keys(item: Matchable) -> tuple[set[str], set[str]]:
    """What an item is indexed by: its folded tags, and its words (an offer's, or a want's)."""
    if item.type == "offer":
        head, desc = matching.offer_words(item)
        return matching.folded_tags(item.tags), head | desc
    return matching.folded_tags(item.tags), matching.want_words(item)


_Postings = dict[str, list[Matchable]]


class _ItemGraph:
    """The graph of offers meeting wants, indexed, with candidates gathered and confirmed on demand."""

    def __init__(
        self, offers: Iterable[Matchable], wants: Iterable[Matchable], order: Callable[[bytes], float]
    ):
        self.work = 0
        self.by_author: dict[tuple[str, bytes], list[Matchable]] = {}
        # (type, swarm, kind) -> (folded tag -> items, word -> items), each list in the index's order
        self.index: dict[tuple[str, bytes, str], tuple[_Postings, _Postings]] = {}
        items = [i for i in offers if i.type == "offer"] + [i for i in wants if i.type == "want"]
        for item in sorted(items, key=lambda i: (order(i.author), i.author, i.id)):
            # The keys are not kept: a swarm's worth of small sets costs more in garbage
            # collection than computing again those of the few items the search reaches.
            tags, words = _keys(item)
            self.by_author.setdefault((item.type, item.author), []).append(item)
            by_tag, by_word = self.index.setdefault((item.type, item.swarm, item.kind), ({}, {}))
            for tag in tags:
                by_tag.setdefault(tag, []).append(item)
            for word in words:
                by_word.setdefault(word, []).append(item)
        self.pairs: dict[tuple[bytes, bytes], list[tuple[Matchable, Matchable]]] = {}
        self.takers_of: dict[bytes, list[bytes]] = {}
        self.givers_of: dict[bytes, list[bytes]] = {}
        self.confirmed: dict[tuple[bytes, bytes], Edge | None] = {}

    def authors(self) -> Iterable[bytes]:
        offering = {a for t, a in self.by_author if t == "offer"}
        return (a for t, a in self.by_author if t == "want" and a in offering)

    def _candidates(self, item: Matchable, other: str, kinds: Iterable[str]) -> list[Matchable]:
        """Items of type ``other`` and of one of ``kinds`` sharing a tag or a word with ``item``."""
        seen: set[bytes] = set()
        found: list[Matchable] = []
        tags, words = _keys(item)
        for field, key in [(0, t) for t in sorted(tags)] + [(1, w) for w in sorted(words)]:
            for kind in kinds:
                lists = self.index.get((other, item.swarm, kind))
                postings = lists[field].get(key, [])[:MAX_POSTINGS_PER_KEY] if lists else []
                self.work += len(postings)
                for cand in postings:
                    if cand.author != item.author and cand.id not in seen:
                        seen.add(cand.id)
                        found.append(cand)
                        if len(found) >= MAX_CANDIDATES_PER_ITEM:
                            return found
        return found

    def takers(self, giver: bytes) -> Iterable[bytes]:
        if giver not in self.takers_of:
            takers: dict[bytes, None] = {}
            for offer in self.by_author.get(("offer", giver), ()):
                kinds = sorted(k for k, meets in matching.COMPATIBLE_KINDS.items() if offer.kind in meets)
                for want in self._candidates(offer, "want", kinds):
                    takers[want.author] = None
                    pairs = self.pairs.setdefault((giver, want.author), [])
                    if len(pairs) < MAX_PAIRS_PER_EDGE:
                        pairs.append((offer, want))
            self.takers_of[giver] = list(takers)
        return self.takers_of[giver]

    def givers(self, taker: bytes) -> Iterable[bytes]:
        if taker not in self.givers_of:
            givers: dict[bytes, None] = {}
            for want in self.by_author.get(("want", taker), ()):
                kinds = sorted(matching.COMPATIBLE_KINDS.get(want.kind, ()))
                for offer in self._candidates(want, "offer", kinds):
                    givers[offer.author] = None
            self.givers_of[taker] = list(givers)
        return self.givers_of[taker]

    def edge(self, giver: bytes, taker: bytes) -> Edge | None:
        if (giver, taker) not in self.confirmed:
            self.takers(giver)
            found = None
            for offer, want in self.pairs.get((giver, taker), ()):
                self.work += 1
                m = matching.match(want, offer)
                if m is not None:
                    e = Edge(giver=giver, taker=taker, offer_id=offer.id, want_id=want.id, score=m.score)
                    if found is None or _better(e, found):
                        found = e
            self.confirmed[(giver, taker)] = found
        return self.confirmed[(giver, taker)]


class _Scores:
    """Each author's trust, asked once (``me`` is 0.0 and never asked)."""

    def __init__(self, trust: Trust | None, me: bytes | None) -> None:
        self.trust = trust or _no_trust
        self.me = me
        self.of: dict[bytes, float] = {}

    def score(self, author: bytes) -> float:
        t = self.of.get(author)
        if t is None:
            t = self.of[author] = 0.0 if author == self.me else float(self.trust(author))
        return t

    def order(self, author: bytes) -> float:
        """Where an author's items go in the index: ``me`` first, then the most trusted."""
        return float("-inf") if author == self.me else -self.score(author)


class _Search:
    """One bounded search for the best rings over a :class:`_Graph`."""

    def __init__(self, graph: _Graph, scores: _Scores, max_len: int, limit: int, budget: int):
        self.graph = graph
        self.me = scores.me
        self.score = scores.score
        self.order = scores.order
        self.max_len = max_len
        self.limit = limit
        self.budget = budget
        self.spent = 0
        self.best: list[tuple[_RankKey, Ring]] = []
        self.succ_of: dict[bytes, list[bytes]] = {}
        self.pred_of: dict[bytes, list[bytes]] = {}

    def _most_trusted(self, authors: Iterable[bytes]) -> list[bytes]:
        """``me`` first, then the most trusted, then by id; at most :data:`MAX_EDGES_PER_AUTHOR`."""
        return sorted(authors, key=lambda a: (self.order(a), a))[:MAX_EDGES_PER_AUTHOR]

    def succ(self, author: bytes) -> Sequence[bytes]:
        if author not in self.succ_of:
            self.succ_of[author] = self._most_trusted(self.graph.takers(author))
        return self.succ_of[author]

    def pred(self, author: bytes) -> Sequence[bytes]:
        if author not in self.pred_of:
            self.pred_of[author] = self._most_trusted(self.graph.givers(author))
        return self.pred_of[author]

    def out_of_budget(self) -> bool:
        return self.spent + self.graph.work >= self.budget

    def worst_kept(self) -> float | None:
        """The minimum trust of the worst ring kept, once ``limit`` are kept."""
        return -self.best[-1][0][0] if len(self.best) >= self.limit else None

    def run(self) -> list[Ring]:
        if self.me is not None:
            self._from(self.me, None)
        else:
            order = sorted(self.graph.authors(), key=lambda a: (-self.score(a), a))
            rank = {a: i for i, a in enumerate(order)}
            for start in order:
                worst = self.worst_kept()
                if self.out_of_budget() or (worst is not None and self.score(start) < worst):
                    break
                self._from(start, _After(rank, rank[start]))
        return [ring for _, ring in self.best]

    def _reach_back(self, start: bytes, allowed: Callable[[bytes], bool] | None) -> dict[bytes, int]:
        """Steps from the authors that reach ``start`` in at most :data:`REACH_BACK` steps."""
        dist = {start: 0}
        frontier = [start]
        for d in range(1, min(REACH_BACK, self.max_len - 1) + 1):
            nxt = []
            for y in frontier:
                for x in self.pred(y):
                    if x not in dist and (allowed is None or allowed(x)):
                        dist[x] = d
                        nxt.append(x)
            frontier = nxt
        return dist

    def _from(self, start: bytes, allowed: Callable[[bytes], bool] | None) -> None:
        dist = self._reach_back(start, allowed)
        far = min(REACH_BACK, self.max_len - 1) + 1  # at least this many steps back, if not in dist
        path = [start]
        edges: list[Edge] = []
        on_path = {start}
        scored = [] if start == self.me else [self.score(start)]

        def walk(v: bytes) -> None:
            succ = self.succ(v)
            if len(path) >= MIN_RING and start in succ:
                self.spent += 1
                closing = self.graph.edge(v, start)
                if closing is not None:
                    self._keep(path, [*edges, closing], scored)
            if len(path) == self.max_len:
                return
            left = self.max_len - len(path)  # steps left after the next one, to get back
            for w in succ:
                if self.out_of_budget():
                    return
                if w in on_path or dist.get(w, far) > left or (allowed is not None and not allowed(w)):
                    continue
                t = self.score(w)
                worst = self.worst_kept()
                if w != self.me and worst is not None and min([*scored, t]) < worst:
                    continue
                self.spent += 1
                e = self.graph.edge(v, w)
                if e is None:
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

    rank: dict[bytes, int]
    start: int

    def __call__(self, author: bytes) -> bool:
        return self.rank.get(author, -1) > self.start


def _check(max_len: int, limit: int, budget: int) -> None:
    if not MIN_RING <= max_len <= MAX_RING:
        raise RingSearchError(f"max_len must be {MIN_RING} to {MAX_RING}, not {max_len}")
    if limit < 1 or budget < 1:
        raise RingSearchError(f"limit and budget must be at least 1, not {limit} and {budget}")


def find_rings(
    offers: Iterable[Matchable],
    wants: Iterable[Matchable],
    *,
    me: bytes | None = None,
    max_len: int = MAX_RING,
    trust: Trust | None = None,
    limit: int = 20,
    budget: int = MAX_WORK,
) -> list[Ring]:
    """The best rings among ``offers`` and ``wants``, at most ``limit`` (rules in the module's docstring)."""
    _check(max_len, limit, budget)
    scores = _Scores(trust, me)
    return _Search(_ItemGraph(offers, wants, scores.order), scores, max_len, limit, budget).run()


def rings_in_graph(
    edges: Iterable[Edge],
    *,
    me: bytes | None = None,
    max_len: int = MAX_RING,
    trust: Trust | None = None,
    limit: int = 20,
    budget: int = MAX_WORK,
) -> list[Ring]:
    """The best rings over ``edges`` (the best edge between two authors counts), as :func:`find_rings`."""
    _check(max_len, limit, budget)
    return _Search(_EdgeGraph(edges), _Scores(trust, me), max_len, limit, budget).run()


def _no_trust(author: bytes) -> float:
    return 0.0
