"""Personalised trust: how much one key, the *source*, may trust every other key.

This module is pure: no I/O, no clock (time is the parameter ``now_ms``), no
network. Records are assumed to have passed :func:`meshnode.records.open_record`;
nothing here checks signatures.

Evidence
--------
Two kinds of evidence become :class:`TrustEdge` s, each from one key to another
with a weight in [-1, 1]:

* **attestations** (:func:`edges_from_attestations`): an explicit vouch
  (weight > 0) or distrust (weight < 0), weight = level / 1000. Per author,
  subject and context only the newest attestation counts; the contexts an author
  keeps about one subject are averaged into one edge.
* **completed trades** (:func:`edges_from_trades`): a small positive edge both
  ways, :data:`TRADE_WEIGHT` for one trade, growing with repeated trades between
  the same pair but staying below :data:`TRADE_CAP`.

Every edge keeps its provenance, so that a score can be explained in terms
a person recognises: an attest edge carries the live :class:`Attestation` s
it combines (record id, level, context, note, time), a trade edge the ids of
the completed proposals it counts.

:class:`TrustGraph` keeps one edge per ordered pair of keys: an attestation
dominates, a trade edge only counts for a pair that has no attestation.

Model
-----
Seen from ``source``, a key's score is computed in three steps.

1. **Trust walk** -- personalised PageRank (Page, Brin, Motwani & Winograd 1999,
   "The PageRank citation ranking"; Haveliwala 2002, "Topic-sensitive PageRank")
   over the positive edges: a walker starts at ``source``, and at every key it
   follows one of that key's vouches with probability 1 - :data:`RESTART_PROBABILITY`
   or restarts at ``source``. Each key's vouches are normalised by
   ``max(1, sum of its positive weights)``: a key that vouches for several people
   splits its walk among them by weight, and a key whose vouches add up to less
   than 1 passes on only that much (the remainder restarts), so a lukewarm 0.3
   vouch passes less trust than a full one. Keys that ``source`` itself distrusts
   pass no trust on.

   With ``pi`` the stationary PPR vector, the raw trust of a key ``v`` is
   ``t(v) = pi(v) / pi(source) * D / (1 - alpha)`` where ``D`` is the source's
   normaliser and ``alpha`` the restart probability. Equivalently (dividing the PPR
   equation by ``pi(source)``), ``t`` solves
   ``t(v) = w(source, v) + (1 - alpha) * sum over u != source of t(u) * p(u, v)``
   where ``p(u, v) = w(u, v) / max(1, sum of u's positive weights)``:
   the source's own vouches seed the walk at their *raw* levels, and trust then
   flows on, decaying by ``1 - alpha`` per hop. (Walks that come back to
   ``source`` end there; that is exactly what dividing by ``pi(source)`` does.)
   The system is solved by residual push until the trust still to come is below
   :data:`TOLERANCE` (each raw trust is then within that much *below* its exact
   value), in at most :data:`MAX_SWEEPS` sweeps.

2. **Normalisation** -- the trust score is ``min(1, t(v))``. It reads as: "how
   much trust reaches ``v``, in units of what a key you vouched for yourself at
   full strength receives from that vouch alone". So a key ``source`` vouched
   for at level ``w`` scores at least ``w`` (1.0 for a full vouch), a
   friend-of-a-friend reached through a friend with ``k`` full vouches scores
   about ``(1 - alpha) / k``, a key vouched for by many of your friends can
   reach 1.0, and a key with no positive path from ``source`` scores exactly 0.
   ``source`` itself scores 1.0.

3. **Distrust** -- one-step distrust propagation (Guha, Kumar, Raghavan &
   Tomkins 2004, "Propagation of trust and distrust"): trust propagates along
   walks, then distrust is applied once, at the last step, and is not
   propagated further. A key ``x`` distrusted by judges ``u`` scores
   ``max(0, min(1, t(x)) - sum of j(u) * |w(u, x)|)``, where the judge weight
   ``j(u)`` is ``u``'s own trust score counting only trust that reaches ``u``
   without passing through any *accused* key (one that some key reached by the
   walk, or ``source``, distrusts). So nobody gains a say over ``x`` by way of
   ``x`` itself, and a disputed key lends no weight to anyone's judgement. A
   distrust by ``source`` itself overrides everything: the key scores 0, and
   its own distrust of others counts for nothing.

   The judge rule keeps the scores monotone: giving a key a (stronger) vouch
   from ``source`` never lowers its score, and a new or stronger distrust of a
   key never raises its score. Judging with plain trust scores would break
   this, since vouching for ``x`` also raises the trust of the keys ``x``
   vouches for, who may distrust ``x``.

Robustness
----------
A Sybil region of any size that hangs off the honest keys by a few attack
edges receives, in raw trust ``t`` summed over all its keys, at most
``(1 - alpha) / alpha`` times what the attack edges carry (each attacker's trust
times the edge's share of the attacker's vouches): fake keys vouching for each
other create no trust, they only share what leaks in, and more of them only
spread it thinner. Their distrust weighs no more than that trust either.

Explanations
------------
:meth:`TrustGraph.explain` gives the strongest positive paths from
``source`` to a key, each edge with its provenance, and the distrust that
applied to it (who warned, the edge with its attestations, how much it took
off). :meth:`TrustGraph.ranked` lists the most trusted keys, each with the
edge into it that brings it the most raw trust: ``source``'s own edge
contributes its weight ``w(source, v)``, any other key ``u`` contributes
``(1 - alpha) * t(u) * p(u, v)`` (the terms of the equation above).
Explaining changes no score.

Work per query is bounded by :data:`MAX_SWEEPS` passes over the edges (in
practice about 30; a 3,000-key, 50,000-edge graph scores in 0.1-0.2 s), and
path search for :meth:`TrustGraph.explain` by :data:`MAX_PATH_EXPANSIONS`.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import count, pairwise
from typing import Any

from meshnode.errors import BadValue
from meshnode.ids import short_id
from meshnode.records import (
    ID_SIZE,
    KEY_SIZE,
    LEVEL_SCALE,
    AttestBody,
    Record,
)
from meshnode.records import describe as _describe

#: Edge kinds: an explicit attestation, or a completed trade.
EDGE_KINDS = ("attest", "trade")

#: Probability that the trust walk restarts at the source at each hop
#: (``alpha``): trust decays by ``1 - alpha`` per hop.
RESTART_PROBABILITY = 0.25
#: Weight of the edge (both ways) after one completed trade.
TRADE_WEIGHT = 0.3
#: Repeated trades between the same pair approach, but never reach, this weight.
TRADE_CAP = 0.6
#: Each loan a borrower keeps past its grace period multiplies the lender's
#: trade edge to the borrower by this (the borrower's edge to the lender stays).
LATE_LOAN_FACTOR = 0.5
#: Upper bound on the trust still to come when the walk stops: every score is
#: within this much (below) its exact value.
TOLERANCE = 1e-6
#: Hard bound on the number of sweeps over the graph one trust walk may take
#: (a sweep passes every key's pending trust on by at least one hop).
MAX_SWEEPS = 200
#: Longest path (in edges) :meth:`TrustGraph.explain` will look for.
MAX_PATH_LEN = 8
#: Most partial paths :meth:`TrustGraph.explain` expands before it gives up.
MAX_PATH_EXPANSIONS = 20_000


# --- edges ---------------------------------------------------------------------


@dataclass(frozen=True)
class Attestation:
    """What one live attest record behind an ``"attest"`` edge says.

    ``record`` is its id, ``level`` its level in thousandths (-1000..1000, not
    0), ``context`` and ``note`` its text as signed (remote text: shown
    escaped), ``ts`` its timestamp (ms).
    """

    record: bytes
    level: int
    context: str
    note: str
    ts: int

    def __post_init__(self) -> None:
        if not isinstance(self.record, bytes) or len(self.record) != ID_SIZE:
            raise BadValue(
                f"attestation record: expected a {ID_SIZE}-byte id, found {_describe(self.record)}"
            )
        level = self.level
        if isinstance(level, bool) or not isinstance(level, int) or not 0 < abs(level) <= LEVEL_SCALE:
            raise BadValue(
                f"attestation level: expected a whole number in -{LEVEL_SCALE}..{LEVEL_SCALE} other than 0,"
                f" found {level!r}"
            )
        if not isinstance(self.context, str) or not isinstance(self.note, str):
            raise BadValue("attestation context and note: expected text")
        if isinstance(self.ts, bool) or not isinstance(self.ts, int):
            raise BadValue(f"attestation ts: expected a whole number of ms, found {self.ts!r}")


@dataclass(frozen=True)
class TrustEdge:
    """``source`` trusts (``weight`` > 0) or distrusts (``weight`` < 0) ``target``.

    ``weight`` is in [-1, 1]. ``kind`` says what the edge came from: ``"attest"``
    (an attest record, ``ref`` is its id) or ``"trade"`` (completed trades,
    ``ref`` is a proposal id; trade edges are never negative).

    Provenance, for explanations (empty for an edge built by hand):
    ``attestations`` are the live attestations an attest edge combines, newest
    first; ``proposals`` the completed proposals a trade edge counts, in the
    order given (oldest first when trades come oldest first). Neither is
    allowed on an edge of the other kind.
    """

    source: bytes
    target: bytes
    weight: float
    kind: str
    ref: bytes | None = None
    attestations: tuple[Attestation, ...] = ()
    proposals: tuple[bytes, ...] = ()
    late_loans: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        _check_key(self.source, "edge source")
        _check_key(self.target, "edge target")
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise BadValue(f"edge weight: expected a number in [-1, 1], found {type(weight).__name__}")
        if not (math.isfinite(weight) and -1.0 <= weight <= 1.0):
            raise BadValue(f"edge weight: expected a number in [-1, 1], found {weight!r}")
        object.__setattr__(self, "weight", float(weight))
        if self.kind not in EDGE_KINDS:
            raise BadValue(f"edge kind: expected one of {list(EDGE_KINDS)}, found {self.kind!r}")
        if self.kind == "trade" and self.weight < 0:
            raise BadValue(f"trade edge weight: expected a number in [0, 1], found {self.weight!r}")
        if self.ref is not None and (not isinstance(self.ref, bytes) or len(self.ref) != ID_SIZE):
            raise BadValue(f"edge ref: expected None or a {ID_SIZE}-byte id, found {_describe(self.ref)}")
        if not isinstance(self.attestations, tuple) or not all(
            isinstance(a, Attestation) for a in self.attestations
        ):
            raise BadValue(
                f"edge attestations: expected a tuple of Attestation, found {_describe(self.attestations)}"
            )
        if not isinstance(self.proposals, tuple) or not all(
            isinstance(p, bytes) and len(p) == ID_SIZE for p in self.proposals
        ):
            raise BadValue(
                f"edge proposals: expected a tuple of {ID_SIZE}-byte ids, found {_describe(self.proposals)}"
            )
        if self.attestations and self.kind != "attest":
            raise BadValue("edge attestations: only an attest edge has attestations")
        if self.proposals and self.kind != "trade":
            raise BadValue("edge proposals: only a trade edge has proposals")
        if not isinstance(self.late_loans, tuple) or not all(
            isinstance(p, bytes) and len(p) == ID_SIZE for p in self.late_loans
        ):
            raise BadValue(
                f"edge late loans: expected a tuple of {ID_SIZE}-byte ids, found {_describe(self.late_loans)}"
            )
        if self.late_loans and self.kind != "trade":
            raise BadValue("edge late loans: only a trade edge has late loans")


def edges_from_attestations(attests: Iterable[Record], now_ms: int) -> list[TrustEdge]:
    """Turn attest records into one ``"attest"`` edge per (author, subject).

    * For each (author, subject, context) only the newest record counts, newest
      by ``(ts, seq, id)``. The newest decides even when it no longer yields an
      edge: a newer level-0 attestation retracts an older one, and an expired
      newest attestation does not bring an older one back.
    * Records that have expired (``expires <= now_ms``) or have level 0 give no
      edge; nor do (invalid) attestations about their own author.
    * The live contexts an author keeps about one subject ("" -- the general
      one -- included) are combined into one edge whose weight is the **mean** of
      their levels / 1000. Each is a current statement of the author about one
      aspect of the same relationship, so each counts equally; a newer
      complaint in one context is neither drowned by nor drowns an older general
      vouch. The mean stays in [-1, 1], so attesting in many contexts gains an
      author no extra influence. A mean of exactly 0 gives no edge. ``ref`` is
      the id of the newest record that contributed; ``attestations`` are all
      that contributed (:class:`Attestation`), newest first.

    Every item must be an attest record (:class:`BadValue` otherwise). The
    edges come sorted by (source, target).
    """
    newest: dict[tuple[bytes, bytes, str], Record] = {}
    for record in attests:
        if not isinstance(record, Record) or record.type != "attest":
            found = record.type if isinstance(record, Record) else type(record).__name__
            raise BadValue(f"expected attest records, found {found}")
        body = record.body
        if not isinstance(body, AttestBody):
            raise BadValue(f"expected an attest record with an AttestBody, found {_describe(body)}")
        key = (record.author, body.subject, body.context)
        current = newest.get(key)
        if current is None or _recency(record) > _recency(current):
            newest[key] = record

    live: dict[tuple[bytes, bytes], list[Record]] = defaultdict(list)
    for (author, subject, _context), record in newest.items():
        body = record.body
        if body.level == 0 or author == subject:
            continue
        if body.expires is not None and body.expires <= now_ms:
            continue
        live[(author, subject)].append(record)

    edges = []
    for (author, subject), records in sorted(live.items()):
        total = sum(r.body.level for r in records)
        if total == 0:
            continue
        records.sort(key=_recency, reverse=True)
        weight = total / (LEVEL_SCALE * len(records))
        said = tuple(Attestation(r.id, r.body.level, r.body.context, r.body.note, r.ts) for r in records)
        edges.append(TrustEdge(author, subject, weight, "attest", records[0].id, said))
    return edges


def trade_weight(trades: int) -> float:
    """The weight of a trade edge after ``trades`` completed trades between one pair.

    ``TRADE_CAP * (1 - (1 - TRADE_WEIGHT / TRADE_CAP) ** trades)``: the first
    trade gives :data:`TRADE_WEIGHT` (0.3), and each further trade closes the same
    share (half) of the gap to :data:`TRADE_CAP` (0.6): 0.3, 0.45, 0.525, ...
    Trading a lot with someone never weighs as much as a full explicit vouch.
    """
    if isinstance(trades, bool) or not isinstance(trades, int) or trades < 0:
        raise BadValue(f"trade count: expected a whole number >= 0, found {trades!r}")
    return TRADE_CAP * (1.0 - (1.0 - TRADE_WEIGHT / TRADE_CAP) ** trades)


def edges_from_trades(
    completed: Iterable[tuple[bytes, bytes, bytes]], late: Iterable[tuple[bytes, bytes, bytes]] = ()
) -> list[TrustEdge]:
    """Turn completed trades ``(proposal_id, party_a, party_b)`` into ``"trade"`` edges.

    ``late`` are loans kept past their grace period, ``(proposal_id, lender,
    borrower)`` (:meth:`meshnode.barter.TradeBook.late_loans`): each distinct
    one multiplies the lender's edge to the borrower by
    :data:`LATE_LOAN_FACTOR` and is listed in its ``late_loans``. A late loan
    creates no edge (there is nothing to weaken between strangers) and the
    borrower's edge to the lender is left as it is.

    Each pair of parties gets one edge each way, of weight
    :func:`trade_weight` of the number of distinct proposals they completed
    together (a proposal listed twice counts once; a proposal listed with two
    different pairs is refused). Trades of a key with itself are ignored.
    ``ref`` is the proposal id of the pair's last trade in input order (pass
    trades oldest first and it is the latest), ``proposals`` all of the pair's
    proposal ids in input order. The edges come sorted by (source, target).
    """
    parties_of: dict[bytes, frozenset[bytes]] = {}
    trades: dict[frozenset[bytes], list[bytes]] = defaultdict(list)
    for item in completed:
        if not isinstance(item, tuple) or len(item) != 3:
            raise BadValue(
                f"completed trade: expected (proposal_id, party_a, party_b), found {_describe(item)}"
            )
        proposal, party_a, party_b = item
        if not isinstance(proposal, bytes) or len(proposal) != ID_SIZE:
            raise BadValue(f"proposal id: expected {ID_SIZE} bytes, found {_describe(proposal)}")
        _check_key(party_a, "trade party")
        _check_key(party_b, "trade party")
        pair = frozenset((party_a, party_b))
        known = parties_of.get(proposal)
        if known is not None:
            if known != pair:
                raise BadValue(f"proposal {short_id(proposal)} is listed with two different pairs of parties")
            continue
        parties_of[proposal] = pair
        if len(pair) == 2:
            trades[pair].append(proposal)

    kept: dict[tuple[bytes, bytes], list[bytes]] = defaultdict(list)
    for proposal, lender, borrower in late:
        _check_key(lender, "lender")
        _check_key(borrower, "borrower")
        if proposal not in kept[(lender, borrower)]:
            kept[(lender, borrower)].append(proposal)
    edges = []
    for pair, proposals in trades.items():
        weight = trade_weight(len(proposals))
        a, b = sorted(pair)
        for source, target in ((a, b), (b, a)):
            overdue = tuple(kept.get((source, target), ()))
            edges.append(
                TrustEdge(
                    source,
                    target,
                    weight * LATE_LOAN_FACTOR ** len(overdue),
                    "trade",
                    proposals[-1],
                    proposals=tuple(proposals),
                    late_loans=overdue,
                )
            )
    edges.sort(key=lambda e: (e.source, e.target))
    return edges


# --- explanations --------------------------------------------------------------


@dataclass(frozen=True)
class TrustPath:
    """A chain of positive edges ``keys[0] -> keys[1] -> ...`` from the source.

    ``strength`` is the product of the edge weights along the chain, and
    ``edges`` the graph's edges along it, with their provenance (one fewer than
    ``keys``). The keys name the edges in a graph, so equality compares only
    ``keys`` and ``strength``.
    """

    keys: tuple[bytes, ...]
    strength: float
    edges: tuple[TrustEdge, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class TrustExplanation:
    """Why ``source`` trusts ``subject`` as much as it does.

    ``score`` is the final score (:meth:`TrustGraph.score`); ``trust`` the score
    before distrust was applied. ``paths`` are the strongest positive paths
    from source to subject, strongest first. ``distrusted_by`` lists the keys
    whose distrust lowered the score, each with how much it took off
    (judge weight times level), largest first; a distrust by ``source`` itself
    is listed with 1.0 and sets the score to 0 on its own (it is listed even
    when no trust reaches ``subject``). ``warnings`` are the distrust edges
    into ``subject`` of those keys, in the same order, with their
    attestations: who warned, how strongly, and what they said.
    """

    source: bytes
    subject: bytes
    score: float
    trust: float
    paths: tuple[TrustPath, ...]
    distrusted_by: tuple[tuple[bytes, float], ...]
    warnings: tuple[TrustEdge, ...] = ()


@dataclass(frozen=True)
class Ranked:
    """A key :meth:`TrustGraph.ranked` lists: its ``score`` and how trust reaches it.

    ``via`` is the positive edge into ``key`` that brings it the most raw trust
    (see the module docstring): ``via.source`` is the ranking's source for a
    direct vouch or trade, else the key through whom ``key`` is trusted most.
    """

    key: bytes
    score: float
    via: TrustEdge | None


@dataclass(frozen=True)
class _Assessment:
    """Internal result of one trust computation from one source (key indices)."""

    source: int
    trust: list[float]  # uncapped walk trust t(v), 0.0 where unreached
    judge: list[float] | None  # judge weights before capping, None if no judge needed
    stops: frozenset[int]  # source and the keys it distrusts: they pass no trust on


# --- the graph -----------------------------------------------------------------


class TrustGraph:
    """The trust edges of a swarm, ready to answer "how much does X trust Y".

    Built from any mix of :class:`TrustEdge` s. At most one edge of each kind
    per ordered pair is accepted (build them with :func:`edges_from_attestations`
    and :func:`edges_from_trades`, which already combine); a pair with both an
    attestation and a trade edge uses the attestation alone, because what a key
    says about another on purpose, distrust especially, must not be softened or
    overridden by the incidental fact that they traded. Self-loops are
    ignored, and zero-weight edges carry nothing (a zero-weight attestation
    still masks a trade edge of the same pair).

    Queries do not change the graph; a graph can be shared freely.
    """

    def __init__(self, edges: Iterable[TrustEdge]) -> None:
        chosen: dict[tuple[bytes, bytes], TrustEdge] = {}
        seen: set[tuple[bytes, bytes, str]] = set()
        for edge in edges:
            if not isinstance(edge, TrustEdge):
                raise BadValue(f"expected TrustEdge values, found {_describe(edge)}")
            if edge.source == edge.target:
                continue
            marker = (edge.source, edge.target, edge.kind)
            if marker in seen:
                raise BadValue(
                    f"expected at most one {edge.kind} edge from {short_id(edge.source)} to "
                    f"{short_id(edge.target)}, found several (combine them with "
                    f"edges_from_{'attestations' if edge.kind == 'attest' else 'trades'})"
                )
            seen.add(marker)
            pair = (edge.source, edge.target)
            if edge.kind == "attest" or pair not in chosen:
                chosen[pair] = edge
        self.edges: tuple[TrustEdge, ...] = tuple(
            chosen[pair] for pair in sorted(chosen) if chosen[pair].weight != 0.0
        )
        self._edge: dict[tuple[bytes, bytes], TrustEdge] = {(e.source, e.target): e for e in self.edges}

        keys: list[bytes] = []
        index: dict[bytes, int] = {}
        for edge in self.edges:
            for key in (edge.source, edge.target):
                if key not in index:
                    index[key] = len(keys)
                    keys.append(key)
        self._keys = keys
        self._index = index
        n = len(keys)
        vouches: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        distrusts: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        judges: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        for edge in self.edges:
            u, v = index[edge.source], index[edge.target]
            if edge.weight > 0:
                vouches[u].append((v, edge.weight))
            else:
                distrusts[u].append((v, -edge.weight))
                judges[v].append((u, -edge.weight))
        keep = 1.0 - RESTART_PROBABILITY
        self._vouches = [tuple(row) for row in vouches]
        self._distrusts = [tuple(row) for row in distrusts]
        self._judges = [tuple(row) for row in judges]
        vouchers: list[list[int]] = [[] for _ in range(n)]
        for u, row in enumerate(vouches):
            for v, _ in row:
                vouchers[v].append(u)
        self._vouchers = [tuple(row) for row in vouchers]
        # One hop of the walk: (target, (1 - alpha) * weight / max(1, sum of weights)).
        self._steps = [
            tuple((v, keep * w / max(1.0, sum(x for _, x in row))) for v, w in row) for row in vouches
        ]
        self._step_to = [dict(row) for row in self._steps]

    def __repr__(self) -> str:
        return f"TrustGraph({len(self._keys)} keys, {len(self.edges)} edges)"

    # --- queries -----------------------------------------------------------------

    def scores(self, source: bytes) -> dict[bytes, float]:
        """The trust score in [0, 1] of every key reachable from ``source``, as ``source`` sees it.

        ``source`` scores 1.0. Every key a positive path from ``source`` reaches
        is listed (a reachable key pushed down by distrust is listed with
        0.0); a key that is not listed scores 0. See the module docstring for
        the model. A source the graph does not know gets ``{source: 1.0}``.
        """
        _check_key(source, "source")
        s = self._index.get(source)
        if s is None:
            return {source: 1.0}
        assessment = self._assess(s)
        out = {source: 1.0}
        keys = self._keys
        for v, trust in enumerate(assessment.trust):
            if trust > 0.0 and v != s:
                out[keys[v]] = self._final(assessment, v)
        return out

    def edge(self, source: bytes, target: bytes) -> TrustEdge | None:
        """The edge the graph uses from ``source`` to ``target`` (None if none, or of weight 0)."""
        _check_key(source, "source")
        _check_key(target, "target")
        return self._edge.get((source, target))

    def score(self, source: bytes, subject: bytes) -> float:
        """The trust score in [0, 1] of ``subject`` as seen from ``source`` (see :meth:`scores`)."""
        _check_key(source, "source")
        _check_key(subject, "subject")
        if subject == source:
            return 1.0
        s, x = self._index.get(source), self._index.get(subject)
        if s is None or x is None:
            return 0.0
        return self._final(self._assess(s), x)

    def explain(
        self, source: bytes, subject: bytes, max_paths: int = 3, max_len: int = 4
    ) -> TrustExplanation:
        """Why ``source`` trusts ``subject`` as much as it does.

        Gives the score, the trust before distrust, up to ``max_paths`` of the
        strongest positive paths of at most ``max_len`` edges (strength = product
        of edge weights, strongest first; paths do not pass through ``source``
        again nor through keys ``source`` distrusts), and the distrust that
        lowered the score. The path search is best-first and stops after
        :data:`MAX_PATH_EXPANSIONS` expansions, so on a huge, dense graph it may
        return fewer paths than exist.
        """
        _check_key(source, "source")
        _check_key(subject, "subject")
        if isinstance(max_paths, bool) or not isinstance(max_paths, int) or max_paths < 0:
            raise BadValue(f"max_paths: expected a whole number >= 0, found {max_paths!r}")
        if isinstance(max_len, bool) or not isinstance(max_len, int) or not 1 <= max_len <= MAX_PATH_LEN:
            raise BadValue(f"max_len: expected a whole number in 1..{MAX_PATH_LEN}, found {max_len!r}")
        if subject == source:
            path = (TrustPath((source,), 1.0),) if max_paths else ()
            return TrustExplanation(source, subject, 1.0, 1.0, path, ())
        s, x = self._index.get(source), self._index.get(subject)
        if s is None or x is None:
            return TrustExplanation(source, subject, 0.0, 0.0, (), ())
        assessment = self._assess(s)
        keys = self._keys
        found: list[TrustPath] = []
        for indices, strength in self._strongest_paths(s, x, assessment.stops, max_paths, max_len):
            chain = tuple(keys[i] for i in indices)
            edges = tuple(self._edge[pair] for pair in pairwise(chain))
            found.append(TrustPath(chain, strength, edges))
        penalties = self._penalties(assessment, x)
        if not penalties and x in assessment.stops:  # the source's own distrust, no trust to lower
            penalties = [(s, 1.0)]
        distrusted_by = tuple(
            (keys[u], weight) for u, weight in sorted(penalties, key=lambda p: (-p[1], keys[p[0]]))
        )
        return TrustExplanation(
            source=source,
            subject=subject,
            score=self._final(assessment, x),
            trust=min(1.0, assessment.trust[x]),
            paths=tuple(found),
            distrusted_by=distrusted_by,
            warnings=tuple(self._edge[(judge, subject)] for judge, _ in distrusted_by),
        )

    def ranked(self, source: bytes, limit: int) -> tuple[Ranked, ...]:
        """The ``limit`` keys ``source`` trusts most, best first, each with how trust reaches it.

        Scores as :meth:`scores` gives them; ``source`` itself and keys scoring
        0 are left out; equal scores come in key order. Each key's ``via`` is
        the positive edge into it that contributes the most raw trust (ties:
        the edge from the lower key). One trust walk in all.
        """
        _check_key(source, "source")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise BadValue(f"limit: expected a whole number >= 0, found {limit!r}")
        s = self._index.get(source)
        if s is None or limit == 0:
            return ()
        assessment = self._assess(s)
        keys = self._keys
        scored = [
            (self._final(assessment, v), keys[v])
            for v, t in enumerate(assessment.trust)
            if t > 0.0 and v != s
        ]
        best = heapq.nsmallest(limit, ((-score, key) for score, key in scored if score > 0.0))
        return tuple(Ranked(key, -negative, self._via(assessment, key)) for negative, key in best)

    def _via(self, assessment: _Assessment, key: bytes) -> TrustEdge | None:
        """The positive edge into ``key`` that contributes the most raw trust (see :meth:`ranked`)."""
        s, v = assessment.source, self._index[key]
        best: tuple[float, bytes] | None = None
        for u in self._vouchers[v]:
            if u == s:
                share = self._edge[(self._keys[s], key)].weight
            elif u in assessment.stops:
                continue
            else:
                share = assessment.trust[u] * self._step_to[u][v]
            if share > 0.0 and (best is None or (-share, self._keys[u]) < (-best[0], best[1])):
                best = (share, self._keys[u])
        return None if best is None else self._edge[(best[1], key)]

    # --- the computation -----------------------------------------------------------

    def _assess(self, s: int) -> _Assessment:
        """Run the trust walk from key ``s`` and, if some distrust needs it, the judge walk."""
        stops = frozenset({s, *(v for v, _ in self._distrusts[s])})
        seed = {v: w for v, w in self._vouches[s] if v not in stops}
        trust = self._walk(seed, stops)

        # Accused keys: distrusted by the source or by a key the walk reached.
        accused = {v for v, _ in self._distrusts[s]}
        for u, t in enumerate(trust):
            if t > 0.0 and self._distrusts[u]:
                accused.update(v for v, _ in self._distrusts[u])
        judged = any(
            trust[v] > 0.0 and v not in stops and any(u != s and trust[u] > 0.0 for u, _ in self._judges[v])
            for v in accused
        )
        judge = self._walk(seed, stops | accused) if judged else None
        return _Assessment(source=s, trust=trust, judge=judge, stops=stops)

    def _walk(self, seed: dict[int, float], stops: frozenset[int] | set[int]) -> list[float]:
        """Solve ``t = seed + C^T t`` (one hop of the walk is ``C``; keys in ``stops`` absorb).

        Residual push in sweeps (the forward push of Andersen, Chung & Lang 2006,
        "Local graph partitioning using PageRank vectors", done in Gauss-Seidel
        order): ``t`` holds the trust found so far and ``residual`` the trust
        still to be passed on, and the exact answer is always ``t`` plus the walk
        from ``residual``. A sweep visits every key reachable from the seed in
        breadth-first order and passes its whole residual on. Every hop keeps at
        most ``1 - alpha`` of the mass, so once ``sum(residual) / alpha`` is below
        :data:`TOLERANCE` no key can gain more than that; the walk also stops
        after :data:`MAX_SWEEPS` sweeps.
        """
        steps = list(self._steps)
        for u in stops:
            steps[u] = ()
        order = list(seed)
        reached = set(order)
        for u in order:  # grows while iterating: breadth-first
            for v, _ in steps[u]:
                if v not in reached:
                    reached.add(v)
                    order.append(v)
        n = len(self._keys)
        trust = [0.0] * n
        residual = [0.0] * n
        for v, weight in seed.items():
            residual[v] += weight
        bound = TOLERANCE * RESTART_PROBABILITY
        for _ in range(MAX_SWEEPS):
            for u in order:
                mass = residual[u]
                if mass:
                    residual[u] = 0.0
                    trust[u] += mass
                    for v, coef in steps[u]:
                        residual[v] += mass * coef
            if sum(residual) <= bound:
                break
        for u in order:
            trust[u] += residual[u]
        return trust

    def _penalties(self, assessment: _Assessment, x: int) -> list[tuple[int, float]]:
        """The judges whose distrust lowers key ``x``, with how much each takes off."""
        s = assessment.source
        if assessment.trust[x] <= 0.0:
            return []
        out = []
        for u, level in self._judges[x]:
            if u == s:
                out.append((u, 1.0))
            elif u in assessment.stops:  # the source distrusts the judge: no say
                continue
            elif assessment.judge is not None:
                weight = min(1.0, assessment.judge[u]) * level
                if weight > 0.0:
                    out.append((u, weight))
        return out

    def _final(self, assessment: _Assessment, x: int) -> float:
        """Key ``x``'s score: capped trust, less one step of distrust, floored at 0."""
        if x == assessment.source:
            return 1.0
        trust = assessment.trust[x]
        if trust <= 0.0:
            return 0.0
        if x in assessment.stops:  # the source distrusts x itself
            return 0.0
        penalty = sum(weight for _, weight in self._penalties(assessment, x))
        return max(0.0, min(1.0, trust) - penalty)

    def _strongest_paths(
        self, s: int, x: int, stops: frozenset[int], max_paths: int, max_len: int
    ) -> list[tuple[tuple[int, ...], float]]:
        """Best-first search for the strongest simple positive paths ``s -> ... -> x``.

        Edge weights are at most 1, so a path never gets stronger as it grows,
        and paths leave the heap strongest first. A backward breadth-first search
        from ``x`` prunes every key that cannot reach ``x`` within the hops left.
        """
        if max_paths == 0:
            return []
        hops_to_x = {x: 0}
        frontier = [x]
        for hops in range(1, max_len + 1):
            nxt = []
            for v in frontier:
                for u in self._vouchers[v]:
                    if u not in hops_to_x and (u == s or u not in stops):
                        hops_to_x[u] = hops
                        nxt.append(u)
            frontier = nxt
        if s not in hops_to_x:
            return []

        found: list[tuple[tuple[int, ...], float]] = []
        tiebreak = count()
        heap: list[tuple[float, int, tuple[int, ...]]] = [(-1.0, next(tiebreak), (s,))]
        expansions = 0
        while heap and len(found) < max_paths and expansions < MAX_PATH_EXPANSIONS:
            negative, _, path = heapq.heappop(heap)
            last = path[-1]
            if last == x:
                found.append((path, -negative))
                continue
            expansions += 1
            left = max_len - len(path)  # hops left after the next one
            for v, w in self._vouches[last]:
                if v in path or hops_to_x.get(v, max_len + 1) > left:
                    continue
                if v != x and v in stops:
                    continue
                heapq.heappush(heap, (negative * w, next(tiebreak), (*path, v)))
        return found


# --- helpers -------------------------------------------------------------------


def _recency(record: Record) -> tuple[int, int, bytes]:
    return (record.ts, record.seq, record.id)


def _check_key(key: Any, what: str) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise BadValue(f"{what}: expected a {KEY_SIZE}-byte public key, found {_describe(key)}")
