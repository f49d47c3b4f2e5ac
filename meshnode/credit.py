"""What a swarm's currency is called, and how far each member may go below zero (pure).

Nothing here has an administrator: both answers are derived, on each node,
from signed records and from the node's own view of trust
(:class:`meshnode.views.TrustView`).

The currency
------------

A ``currency`` record (:class:`meshnode.records.CurrencyBody`) proposes a
name and a unit for its swarm. A node follows the newest, by
``(ts, seq, id)``, among the proposals of its own owner and of the members
it trusts (trust score above 0): a stranger, or a fresh key, cannot rename
the currency. With none, the swarm counts in :data:`DEFAULT_UNIT`, unnamed.
The unit is a label: amounts are always hundredths of it.

Credit limits
-------------

A member's limit (hundredths, >= 0) is what the swarm, as this node sees it,
lets them owe:

* the **base**, :data:`BASE_LIMIT`, for the owner and for every member
  the owner's trust reaches (score above 0). A key nobody trusts gets no
  credit: a flood of fresh keys cannot spend.
* plus what each neighbour who trusts the member **extends**: for every
  positive trust edge ``v -> member`` (a vouch, or completed trades) from a
  neighbour ``v`` the owner trusts, ``EXTEND_PER_NEIGHBOUR * weight * score(v)``
  (a full vouch from someone the owner trusts fully extends 10 units).
* at most :data:`MAX_LIMIT` in all.

A member convicted of a fork (:class:`meshnode.ledger.ForkProof`) has limit 0,
whatever their trust: :func:`credit_limit` takes the forkers, and
:func:`meshnode.ledger.derive_ledger` enforces the same from its own proofs.
:class:`CreditLimit` keeps the parts, so ``meshnode balance`` can say where
a limit comes from.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from meshnode.records import CurrencyBody, Record
from meshnode.trust import TrustEdge

DEFAULT_UNIT = "hours"
#: The credit every member the owner's trust reaches starts with (hundredths: 5 units).
BASE_LIMIT = 500
#: What one neighbour extends with a full-weight edge when the owner trusts them fully (10 units).
EXTEND_PER_NEIGHBOUR = 1000
#: The most credit any member gets (50 units).
MAX_LIMIT = 5000


@dataclass(frozen=True)
class Currency:
    """A swarm's currency: ``name`` (empty when none was given), ``unit``, and the record that set it."""

    name: str = ""
    unit: str = DEFAULT_UNIT
    record: Record | None = None


def swarm_currency(records: Iterable[Record], *, me: bytes, scores: Mapping[bytes, float]) -> Currency:
    """The currency a node follows: the newest ``currency`` record by its owner or a trusted member.

    ``scores``: the owner's trust in each key (missing means 0).
    """
    best: Record | None = None
    for r in records:
        if not isinstance(r.body, CurrencyBody):
            continue
        if r.author != me and scores.get(r.author, 0.0) <= 0.0:
            continue
        if best is None or (r.ts, r.seq, r.id) > (best.ts, best.seq, best.id):
            best = r
    if best is None:
        return Currency()
    assert isinstance(best.body, CurrencyBody)
    return Currency(name=best.body.name, unit=best.body.unit, record=best)


@dataclass(frozen=True)
class CreditLine:
    """What neighbour ``by`` extends: ``amount`` hundredths, from an edge of ``weight``, trusted ``trust``."""

    by: bytes
    weight: float
    trust: float
    amount: int
    kind: str  # the edge's kind: "attest" (a vouch) or "trade" (completed trades)


@dataclass(frozen=True)
class CreditLimit:
    """A member's credit limit and where it comes from (see the module docstring).

    ``limit`` = min(:data:`MAX_LIMIT`, ``base`` + the ``lines``' amounts), or
    0 if ``forked``. ``capped``: the sum was above :data:`MAX_LIMIT`.
    """

    member: bytes
    limit: int
    base: int
    lines: tuple[CreditLine, ...]
    capped: bool = False
    forked: bool = False


def credit_limit(
    member: bytes,
    *,
    me: bytes,
    scores: Mapping[bytes, float],
    edges: Iterable[TrustEdge],
    forkers: Collection[bytes] = frozenset(),
) -> CreditLimit:
    """``member``'s limit as ``me`` sees it (``scores``: the owner's trust; ``edges``: the graph's)."""

    def score(key: bytes) -> float:
        return 1.0 if key == me else scores.get(key, 0.0)

    reached = score(member) > 0.0
    base = BASE_LIMIT if reached else 0
    lines = []
    if reached:
        for e in edges:
            if e.target != member or e.source == member or e.weight <= 0.0:
                continue
            trust = score(e.source)
            amount = int(EXTEND_PER_NEIGHBOUR * e.weight * trust)
            if amount > 0:
                lines.append(
                    CreditLine(by=e.source, weight=e.weight, trust=trust, amount=amount, kind=e.kind)
                )
    lines.sort(key=lambda line: (-line.amount, line.by))
    total = base + sum(line.amount for line in lines)
    forked = member in forkers
    limit = 0 if forked else min(total, MAX_LIMIT)
    return CreditLimit(
        member=member,
        limit=limit,
        base=base,
        lines=tuple(lines),
        capped=total > MAX_LIMIT,
        forked=forked,
    )


def limits_of(
    *,
    me: bytes,
    scores: Mapping[bytes, float],
    edges: Iterable[TrustEdge],
    forkers: Collection[bytes] = frozenset(),
) -> dict[bytes, int]:
    """Every limit above 0 (a key not listed has 0): what :func:`meshnode.ledger.derive_ledger` takes."""
    into: dict[bytes, list[TrustEdge]] = {}
    for e in edges:
        into.setdefault(e.target, []).append(e)
    members = {me, *(k for k, s in scores.items() if s > 0.0)}
    out = {}
    for m in members:
        limit = credit_limit(m, me=me, scores=scores, edges=into.get(m, ()), forkers=forkers).limit
        if limit > 0:
            out[m] = limit
    return out
