"""Group buying: each pool's state and each pledger's share, from ``pool``, ``pledge``, ``poolmove`` records.

An organiser publishes a pool (:class:`meshnode.records.PoolBody`): a title,
a supplier, a unit price (hundredths of the swarm's unit), ``min`` and
``max`` units and the time it ``closes`` (ms). Members pledge quantities
(:class:`~meshnode.records.PledgeBody`); the organiser may pledge too. The
organiser alone moves the pool (:class:`~meshnode.records.PoolMoveBody`):
``confirm``, ``cancel``, ``delivered``. Like :mod:`meshnode.ringtrade` this
module is a pure fold: no I/O, no clock (time is ``now_ms``), and the result
depends only on the *set* of records, never on their order or repetition.

States
------

``open``       before ``closes``; less than ``min`` pledged.
``reached``    before ``closes``; at least ``min`` pledged (pledges may still change).
``closed``     ``closes`` has passed with at least ``min`` pledged: the pool
               waits for the organiser to confirm the order (or cancel it).
``failed``     ``closes`` has passed with less than ``min`` pledged (final:
               nothing is ordered, nobody owes anything).
``cancelled``  the organiser cancelled the pool (final).
``confirmed``  the organiser confirmed the order.
``delivered``  the organiser marked the confirmed order delivered (final).

Precedence: ``delivered`` > ``confirmed`` > ``cancelled`` > by the clock and
the total pledged (``failed``/``closed`` once ``now_ms >= closes``, else
``reached``/``open``).

Pledges
-------

* A pledge counts only if it is in the pool's swarm, timestamped at or after
  the pool record and strictly before ``closes``. A pledge at or after
  ``closes`` is refused ("the pool closed"), whenever it arrives.
* Each member's **newest** counted pledge replaces the earlier ones, newest
  by ``(ts, seq, id)``; the earlier ones are listed in
  :attr:`PoolBook.replaced`. A newest pledge of 0 withdraws: the member has
  no share. A member changes or withdraws a pledge until the pool closes.
* The total pledged is the sum of the newest pledges.

Shares, and who is served when more than ``max`` is pledged
-----------------------------------------------------------

The members are served in the order of their newest pledge, by
``(ts, author, seq, id)``: first come, first served, and changing a pledge
puts the member at the back of the line (otherwise an early pledge of 1
could be raised to 30 at the last minute ahead of everyone). Each member
gets their full quantity while it fits under ``max``; the first one that
does not fit gets what is left (served partly), the ones after get 0.
:attr:`Share.pledged` is what the member pledged, :attr:`Share.quantity`
what they are served, :attr:`Share.cost` is ``quantity * unit_price``
(hundredths). The shares never add up to more than ``max``. They are
computed in every state; a ``failed`` or ``cancelled`` pool orders nothing
(:attr:`Pool.ordered` is False), so its shares are what would have been.

Organiser moves (a move that breaks a rule is refused, with the reason, in :attr:`PoolBook.refused`)
------------------------------------------------------------------------------------------------------

* Only the organiser (the pool record's author) may move; a move must be in
  the pool's swarm and timestamped at or after the pool record.
* ``confirm`` counts only if timestamped at or after ``closes`` and the
  pool reached ``min`` (with the pledges that count). There is no early
  confirm: members are promised until ``closes`` to change or withdraw, and
  an organiser who wants to order sooner publishes an earlier ``closes``.
* ``cancel`` counts at any time before a confirm: while the pool is open (the
  usual case), and also after it closed, so that an organiser whose supplier
  cannot deliver can call the order off rather than leave it ``closed`` for
  ever. A cancel of a failed pool is allowed and changes only its name.
* ``confirm`` and ``cancel`` are the organiser's *decision*: among the cancels
  and the confirms that could count, the first by ``(ts, seq, id)`` counts
  and every later one is refused (an organiser who signs both decided with
  the first). Anyone seeing both sees the later one refused, with the reason.
* ``delivered`` counts only once a confirm counts and if timestamped at or
  after it; the first by key counts, later ones are refused as repetitions.

Without ordering, a state can change as records arrive (a pledge timestamped
before ``closes`` that arrives late still counts, and may even make a refused
confirm count); the same *set* of records always gives the same
:class:`PoolBook`. :func:`check_pledge` and :func:`check_move` are what a
node calls before signing: they refuse what the fold would refuse, so a
record they allow is counted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from meshnode.errors import NotAllowed, NotFound, TransitionError, ValidationError
from meshnode.ids import short_id
from meshnode.records import PledgeBody, PoolBody, PoolMoveBody, Record, check_body

OPEN = "open"
REACHED = "reached"
CLOSED = "closed"
FAILED = "failed"
CANCELLED = "cancelled"
CONFIRMED = "confirmed"
DELIVERED = "delivered"
STATES: tuple[str, ...] = (OPEN, REACHED, CLOSED, FAILED, CANCELLED, CONFIRMED, DELIVERED)
TERMINAL_STATES: frozenset[str] = frozenset({FAILED, CANCELLED, DELIVERED})

CONFIRM, CANCEL, DELIVER = "confirm", "cancel", "delivered"


@dataclass(frozen=True)
class Share:
    """One member's part of a pool: ``pledged`` units asked, ``quantity`` served, ``cost`` in hundredths."""

    member: bytes
    pledge: bytes  # the id of the member's newest pledge
    pledged: int
    quantity: int
    cost: int

    @property
    def partly(self) -> bool:
        """Served less than pledged (``max`` was reached)."""
        return self.quantity < self.pledged


@dataclass(frozen=True)
class Pool:
    """One pool and what counts on it, as of one ``now_ms``.

    ``shares`` are in serving order (see the module docstring); ``pledged``
    is the total pledged, ``served`` the total served (at most ``max``).
    ``moves``: the ids of the counted organiser moves, by ``(ts, seq, id)``.
    ``latest``: member -> the ``ts`` of their newest counted pledge (withdrawals
    included), so that a node never signs a pledge older than its own newest.
    """

    pool_id: bytes
    swarm: bytes
    organiser: bytes
    title: str
    supplier: str
    unit_price: int
    unit: str
    min: int
    max: int
    closes: int
    created_ts: int
    state: str
    shares: tuple[Share, ...]
    pledged: int
    served: int
    moves: tuple[bytes, ...]
    confirmed_ts: int | None
    cancelled_ts: int | None
    delivered_ts: int | None
    latest: Mapping[bytes, int]

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def reached(self) -> bool:
        """At least ``min`` units are pledged."""
        return self.pledged >= self.min

    @property
    def ordered(self) -> bool:
        """Whether the shares are (or will be, once confirmed) bought: not failed, not cancelled."""
        return self.state not in (FAILED, CANCELLED)

    @property
    def total_cost(self) -> int:
        return sum(s.cost for s in self.shares)

    def share_of(self, member: bytes) -> Share | None:
        """The share of ``member``, if they have one."""
        for share in self.shares:
            if share.member == member:
                return share
        return None


@dataclass(frozen=True)
class PoolBook:
    """Every pool derived from a set of records, as of one ``now_ms``.

    ``pools``: pool id -> :class:`Pool`. ``refused``: pool, pledge or move
    record id -> why it does not count. ``replaced``: pledge id -> the newer
    pledge by the same member that replaces it. ``pending``: pledges and moves
    whose pool record is not (yet) known.
    """

    pools: Mapping[bytes, Pool]
    refused: Mapping[bytes, str]
    replaced: Mapping[bytes, bytes]
    pending: frozenset[bytes]

    def pool(self, pool_id: bytes) -> Pool:
        """The pool of ``pool_id``; :class:`NotFound` if there is none."""
        try:
            return self.pools[pool_id]
        except KeyError:
            raise NotFound(f"no pool {short_id(pool_id)} is known") from None

    def pledged_by(self, member: bytes) -> list[Pool]:
        """The pools ``member`` has a share in, soonest closing first."""
        found = [p for p in self.pools.values() if p.share_of(member) is not None]
        return sorted(found, key=lambda p: (p.closes, p.pool_id))


def derive_pools(
    pools: Iterable[Record], pledges: Iterable[Record], moves: Iterable[Record], now_ms: int
) -> PoolBook:
    """Fold ``pool``, ``pledge`` and ``poolmove`` records into a :class:`PoolBook` as of ``now_ms``.

    Depends only on the *set* of records and ``now_ms``. See the module docstring.
    """
    pool_records = _collect(pools, "pool", PoolBody)
    pledge_records = _collect(pledges, "pledge", PledgeBody)
    move_records = _collect(moves, "poolmove", PoolMoveBody)

    refused: dict[bytes, str] = {}
    replaced: dict[bytes, bytes] = {}
    pending: set[bytes] = set()
    for pid, record in pool_records.items():
        body: PoolBody = record.body
        if body.closes <= record.ts:
            refused[pid] = (
                f"pool {short_id(pid)} closes at {_when(body.closes)},"
                f" not after it was published ({_when(record.ts)})"
            )
    live = {pid for pid in pool_records if pid not in refused}
    pledges_of: dict[bytes, list[Record]] = {pid: [] for pid in live}
    moves_of: dict[bytes, list[Record]] = {pid: [] for pid in live}
    for group, into in ((pledge_records, pledges_of), (move_records, moves_of)):
        for rid, record in group.items():
            target = record.body.pool
            if target in into:
                into[target].append(record)
            elif target in refused:
                refused[rid] = f"pool {short_id(target)} was refused: {refused[target]}"
            else:
                pending.add(rid)

    folded = {
        pid: _fold_pool(pool_records[pid], pledges_of[pid], moves_of[pid], now_ms, refused, replaced)
        for pid in live
    }
    return PoolBook(
        pools=MappingProxyType(folded),
        refused=MappingProxyType(refused),
        replaced=MappingProxyType(replaced),
        pending=frozenset(pending),
    )


def check_pledge(pool: Pool, body: PledgeBody, author: bytes, *, now_ms: int) -> None:
    """Raise unless ``author`` may sign ``body`` (with ``ts = now_ms``) on ``pool`` now.

    Refuses a pledge once the pool closed or was cancelled, a withdrawal
    without a pledge, and a pledge older than the author's newest one there
    (at the same ``ts`` the node's own higher ``seq`` makes it the newer).
    """
    if not isinstance(body, PledgeBody):
        raise ValidationError(f"expected a pledge, found {type(body).__name__}")
    check_body(body)
    pid = short_id(pool.pool_id)
    if body.pool != pool.pool_id:
        raise ValidationError(f"the pledge names pool {short_id(body.pool)}, expected pool {pid}")
    if now_ms < pool.created_ts:
        raise TransitionError(
            f"cannot pledge to pool {pid} at {_when(now_ms)}: it was published at {_when(pool.created_ts)}"
            " (check the clock)"
        )
    if pool.state == CANCELLED:
        raise TransitionError(f"cannot pledge to pool {pid}: the organiser cancelled it")
    if now_ms >= pool.closes:
        raise TransitionError(f"cannot pledge to pool {pid}: it closed at {_when(pool.closes)}")
    latest = pool.latest.get(author)
    if latest is not None and now_ms < latest:
        raise TransitionError(
            f"cannot pledge to pool {pid} at {_when(now_ms)}:"
            f" your newest pledge there is timestamped {_when(latest)}"
            " (check the clock)"
        )
    if body.quantity == 0 and pool.share_of(author) is None:
        raise TransitionError(f"cannot withdraw from pool {pid}: you have no pledge there")


def check_move(pool: Pool, body: PoolMoveBody, author: bytes, *, now_ms: int) -> None:
    """Raise unless ``author`` may sign ``body`` (with ``ts = now_ms``) on ``pool`` now.

    What a node calls before signing a move: it refuses everything the fold
    would refuse (so a move that passes counts) and moves that would change
    nothing (a cancel of a cancelled pool).
    """
    if not isinstance(body, PoolMoveBody):
        raise ValidationError(f"expected a pool move, found {type(body).__name__}")
    check_body(body)
    pid, action = short_id(pool.pool_id), body.action
    if body.pool != pool.pool_id:
        raise ValidationError(f"the move names pool {short_id(body.pool)}, expected pool {pid}")
    if author != pool.organiser:
        raise NotAllowed(f"key {short_id(author)} cannot {action} pool {pid}: only its organiser may")
    if now_ms < pool.created_ts:
        raise TransitionError(
            f"cannot {action} pool {pid} at {_when(now_ms)}:"
            f" it was published at {_when(pool.created_ts)} (check the clock)"
        )
    if action == DELIVER:
        if pool.state == DELIVERED:
            raise TransitionError(f"pool {pid} is already marked delivered")
        if pool.state != CONFIRMED or pool.confirmed_ts is None or now_ms < pool.confirmed_ts:
            raise TransitionError(
                f"cannot mark pool {pid} delivered: the order is not confirmed ({pool.state})"
            )
        return
    if pool.state in (CONFIRMED, DELIVERED):
        raise TransitionError(f"cannot {action} pool {pid}: the order is already confirmed")
    if pool.state == CANCELLED:
        raise TransitionError(f"cannot {action} pool {pid}: it is cancelled")
    if action == CONFIRM:
        why = _cannot_confirm(pool.min, pool.closes, pool.pledged, now_ms, pid)
        if why:
            raise TransitionError(f"cannot confirm pool {pid}: {why}")


# --- the fold of one pool ------------------------------------------------------------


def _fold_pool(
    pool: Record,
    pledges: list[Record],
    moves: list[Record],
    now_ms: int,
    refused: dict[bytes, str],
    replaced: dict[bytes, bytes],
) -> Pool:
    body: PoolBody = pool.body
    pid = short_id(pool.id)

    newest: dict[bytes, Record] = {}
    for pledge in sorted(pledges, key=_key):
        who = short_id(pledge.author)
        if pledge.swarm != pool.swarm:
            refused[pledge.id] = f"the pledge by {who} is for another swarm than pool {pid}"
        elif pledge.ts < pool.ts:
            refused[pledge.id] = (
                f"the pledge by {who} is timestamped {pledge.ts}, before pool {pid} ({pool.ts})"
            )
        elif pledge.ts >= body.closes:
            refused[pledge.id] = (
                f"the pledge by {who} ({_when(pledge.ts)}) came after pool {pid}"
                f" closed at {_when(body.closes)}"
            )
        else:
            earlier = newest.get(pledge.author)
            if earlier is not None:
                replaced[earlier.id] = pledge.id
            newest[pledge.author] = pledge

    shares: list[Share] = []
    room = body.max
    for pledge in sorted((p for p in newest.values() if p.body.quantity > 0), key=_order):
        asked: int = pledge.body.quantity
        got = min(asked, room)
        room -= got
        shares.append(Share(pledge.author, pledge.id, asked, got, got * body.unit_price))
    pledged = sum(s.pledged for s in shares)

    candidates: list[Record] = []
    for move in moves:
        action, who = move.body.action, short_id(move.author)
        if move.author != pool.author:
            refused[move.id] = f"key {who} cannot {action} pool {pid}: only its organiser may"
        elif move.swarm != pool.swarm:
            refused[move.id] = f"the {action} of pool {pid} is for another swarm"
        elif move.ts < pool.ts:
            refused[move.id] = (
                f"the {action} of pool {pid} is timestamped {move.ts}, before the pool ({pool.ts})"
            )
        else:
            candidates.append(move)

    decision: Record | None = None
    for move in sorted((m for m in candidates if m.body.action in (CONFIRM, CANCEL)), key=_key):
        action = move.body.action
        why = _cannot_confirm(body.min, body.closes, pledged, move.ts, pid) if action == CONFIRM else ""
        if why:
            refused[move.id] = f"the confirm of pool {pid} does not count: {why}"
        elif decision is not None:
            done = "confirmed" if decision.body.action == CONFIRM else "cancelled"
            refused[move.id] = (
                f"the {action} of pool {pid} does not count: it was already {done}"
                f" (move {short_id(decision.id)})"
            )
        else:
            decision = move
    confirm = decision if decision is not None and decision.body.action == CONFIRM else None
    cancel = decision if decision is not None and decision.body.action == CANCEL else None

    delivered: Record | None = None
    for move in sorted((m for m in candidates if m.body.action == DELIVER), key=_key):
        if confirm is None or move.ts < confirm.ts:
            refused[move.id] = (
                f"the delivered of pool {pid} does not count: the order was not confirmed before it"
            )
        elif delivered is not None:
            refused[move.id] = f"pool {pid} was already marked delivered (move {short_id(delivered.id)})"
        else:
            delivered = move

    if delivered is not None:
        state = DELIVERED
    elif confirm is not None:
        state = CONFIRMED
    elif cancel is not None:
        state = CANCELLED
    elif now_ms >= body.closes:
        state = CLOSED if pledged >= body.min else FAILED
    else:
        state = REACHED if pledged >= body.min else OPEN
    counted = sorted((m for m in (confirm, cancel, delivered) if m is not None), key=_key)
    return Pool(
        pool_id=pool.id,
        swarm=pool.swarm,
        organiser=pool.author,
        title=body.title,
        supplier=body.supplier,
        unit_price=body.unit_price,
        unit=body.unit,
        min=body.min,
        max=body.max,
        closes=body.closes,
        created_ts=pool.ts,
        state=state,
        shares=tuple(shares),
        pledged=pledged,
        served=body.max - room,
        moves=tuple(m.id for m in counted),
        confirmed_ts=confirm.ts if confirm is not None else None,
        cancelled_ts=cancel.ts if cancel is not None else None,
        delivered_ts=delivered.ts if delivered is not None else None,
        latest=MappingProxyType({who: p.ts for who, p in sorted(newest.items())}),
    )


def _cannot_confirm(minimum: int, closes: int, pledged: int, ts: int, pid: str) -> str:
    if ts < closes:
        return (
            f"pool {pid} closes at {_when(closes)};"
            f" the order is confirmed at or after that, not at {_when(ts)}"
        )
    if pledged < minimum:
        return f"only {pledged} of the minimum {minimum} were pledged before pool {pid} closed"
    return ""


def _collect(records: Iterable[Record], rtype: str, cls: type) -> dict[bytes, Record]:
    out: dict[bytes, Record] = {}
    for record in records:
        if record.type != rtype or not isinstance(record.body, cls):
            raise ValidationError(f"expected {rtype} records, found a {record.type} record")
        out[record.id] = record
    return out


def _key(record: Record) -> tuple[int, int, bytes]:
    """Which of one author's records is newer: ``(ts, seq, id)``."""
    return (record.ts, record.seq, record.id)


def _order(record: Record) -> tuple[int, bytes, int, bytes]:
    """The serving order across members: ``(ts, author, seq, id)``."""
    return (record.ts, record.author, record.seq, record.id)


def _when(ms: int) -> str:
    """A time (ms since the epoch) as people read it: 2026-12-15 18:00:00 UTC (ms kept when not whole)."""
    when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{ms % 1000:03d} UTC" if ms % 1000 else f"{text} UTC"
