"""Group buying for the local API: publish a pool, list and show pools, pledge, move a pool.

:class:`PoolService` composes an :class:`~meshnode.api.service.ApiService`
and keeps no state of its own: the pools are derived on each request
(:func:`meshnode.pools.derive_pools`, in a worker thread) from the ``pool``,
``pledge`` and ``poolmove`` records of the swarms this node is in, as of the
node's clock.

* :meth:`PoolService.add`: publish a ``pool`` record. The unit price is
  written in the swarm's currency (``18``, ``2.5``: hundredths are kept);
  ``closes`` is a date (``2026-12-15``: the end of that day, 23:59:59.999
  UTC) or an ISO date-time with a timezone (``2026-12-15T18:00:00Z``),
  in the future and at most :data:`MAX_POOL_DAYS` days ahead.
* :meth:`PoolService.list_pools`: the pools not in a final state (``all``: every
  pool), the owner's first, then the most trusted organisers, then the ones
  closing soonest; each with the owner's pledge and share.
* :meth:`PoolService.show`: one pool with every share and the pledges and
  moves that do not count, with the reason.
* :meth:`PoolService.pledge`, :meth:`PoolService.move`: checked first
  (:func:`meshnode.pools.check_pledge`, :func:`meshnode.pools.check_move`):
  a refused pledge or move is never signed.
* :meth:`PoolService.remind`: keep the inbox's ``poolreached`` and
  ``poolclosed`` notices due now (:func:`meshnode.inbox.pool_reminders`);
  says how long until the next pool closes (the daemon looks again then).

Every request is bounded by :data:`REQUEST_TIMEOUT_S`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from meshnode import money, pools
from meshnode import records as rec
from meshnode.errors import BadValue, MeshError, NotFound
from meshnode.identity import peer_id_of
from meshnode.ids import short_id
from meshnode.inbox import pool_reminders
from meshnode.pools import Pool, PoolBook
from meshnode.swarm import Swarm
from meshnode.views import parse_id

if TYPE_CHECKING:
    from meshnode.api.service import ApiService

#: A pool closes at most this many days after it is published.
MAX_POOL_DAYS = 365
#: Every request gives up (with an error) after this many seconds.
REQUEST_TIMEOUT_S = 30.0
#: The daemon looks at the pools at least this often (s), and when a pool closes.
REMIND_EVERY_S = 60.0
#: After a pool record is stored the daemon waits this long before looking (s): a burst is one look.
GAP_S = 0.5
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class _Pools:
    """What one request reads: the pool book and, for each pledge or move, (pool, author, type)."""

    book: PoolBook
    index: Mapping[bytes, tuple[bytes, bytes, str]]
    now: int


class PoolService:
    """The group-buying operations of the local API (see the module docstring)."""

    def __init__(self, api: ApiService) -> None:
        self.api = api

    # --- reading -------------------------------------------------------------------

    async def _pools(self) -> _Pools:
        api = self.api
        joined = api._joined()
        now = api.node.clock()

        def read() -> _Pools:
            found = {
                t: [r for r in api.reader.records_of_type(t) if r.swarm in joined]
                for t in ("pool", "pledge", "poolmove")
            }
            index = {r.id: (r.body.pool, r.author, r.type) for t in ("pledge", "poolmove") for r in found[t]}
            book = pools.derive_pools(found["pool"], found["pledge"], found["poolmove"], now)
            return _Pools(book, index, now)

        result: _Pools = await api._read(read)
        return result

    async def book(self) -> PoolBook:
        """Every pool of the swarms this node is in, as of now."""
        async with _bounded("reading the pools"):
            return (await self._pools()).book

    async def _pool(self, text_id: object) -> tuple[Pool, _Pools]:
        rid = await self.api._read(parse_id, _text(text_id, "pool", 64), self.api.reader)
        state = await self._pools()
        return state.book.pool(rid), state

    async def _units(self, swarms: set[bytes]) -> dict[bytes, tuple[str, str]]:
        from meshnode.api.ledgerservice import LedgerService

        ledger = LedgerService(self.api)
        out = {}
        for s in swarms:
            cur = await ledger.currency(s)
            out[s] = (cur.unit, cur.name)
        return out

    # --- publishing ------------------------------------------------------------------

    async def add(
        self,
        title: object,
        supplier: object,
        unit_price: object,
        min_: object,
        max_: object,
        closes: object,
        unit: object = "",
        swarm: object = None,
    ) -> dict[str, Any]:
        """Publish a pool (checked first: a refused one is never signed); returns it."""
        api = self.api
        async with _bounded("publishing the pool"):
            now = api.node.clock()
            body = rec.PoolBody(
                title=_text(title, "title", rec.MAX_TITLE).strip(),
                supplier=_text(supplier, "from", rec.MAX_TITLE).strip(),
                unit_price=money.parse_amount(_text(unit_price, "unit price", 40), "unit price", zero=True),
                min=_count(min_, "min", 1),
                max=_count(max_, "max", 1),
                closes=parse_closes(closes, now),
                unit=_text(unit, "unit", rec.MAX_UNIT).strip(),
            )
            if not body.title:
                raise BadValue("title: expected what is bought, found nothing")
            if not body.supplier:
                raise BadValue("from: expected who sells it (the supplier), found nothing")
            if body.unit_price > rec.MAX_UNIT_PRICE:
                raise BadValue(f"unit price: expected at most {money.format_amount(rec.MAX_UNIT_PRICE)}")
            if body.max < body.min:
                raise BadValue(f"max: expected at least min ({body.min}), found {body.max}")
            rec.check_body(body)
            target = self._one_swarm(swarm)
            async with api._lock:
                record = await api.node.publish(body, target)
            pool, state = await self._pool(record.id.hex())
            return (await self._json([pool], state, detail=True))[0]

    async def pledge(self, text_id: object, quantity: object) -> dict[str, Any]:
        """Pledge ``quantity`` units to a pool (0 withdraws), checked first; returns the pool."""
        api = self.api
        count = _count(quantity, "quantity", 0)
        async with _bounded("pledging"), api._lock:
            pool, _ = await self._pool(text_id)
            mine = pool.share_of(api.me)
            if mine is not None and mine.pledged == count:
                raise BadValue(
                    f"you already pledged {count} to pool {short_id(pool.pool_id)}: a new pledge of the"
                    " same quantity would only put you at the back of the line"
                )
            body = rec.PledgeBody(pool=pool.pool_id, quantity=count)
            pools.check_pledge(pool, body, api.me, now_ms=api.node.clock())
            await api.node.publish(body, api._swarm_of(pool.swarm))
            after, state = await self._pool(pool.pool_id.hex())
            return (await self._json([after], state, detail=True))[0]

    async def move(self, text_id: object, action: object, note: object = "") -> dict[str, Any]:
        """Confirm, cancel or mark delivered a pool you organise (checked first); returns the pool."""
        if action not in rec.POOL_ACTIONS:
            raise BadValue(f"action: expected one of {list(rec.POOL_ACTIONS)}, found {action!r}")
        api = self.api
        async with _bounded(f"the {action}"), api._lock:
            pool, _ = await self._pool(text_id)
            body = rec.PoolMoveBody(
                pool=pool.pool_id, action=str(action), note=_text(note, "note", rec.MAX_NOTE)
            )
            pools.check_move(pool, body, api.me, now_ms=api.node.clock())
            await api.node.publish(body, api._swarm_of(pool.swarm))
            after, state = await self._pool(pool.pool_id.hex())
            return (await self._json([after], state, detail=True))[0]

    def _one_swarm(self, name: object) -> Swarm:
        api = self.api
        if name is not None and name != "":
            return api.node.swarm(_text(name, "swarm", 100))
        joined = api.node.swarms()
        if not joined:
            raise NotFound("this node is in no swarm: create one ('meshnode swarm create') or join one")
        if len(joined) > 1:
            names = ", ".join(s.name for s in joined)
            raise BadValue(f"you are in {len(joined)} swarms ({names}): say which with --swarm NAME")
        return joined[0]

    # --- showing ---------------------------------------------------------------------

    async def list_pools(self, all_: bool = False) -> list[dict[str, Any]]:
        """The pools not in a final state (``all_``: every pool), ordered as the module docstring says."""
        async with _bounded("listing the pools"):
            state = await self._pools()
            found = [p for p in state.book.pools.values() if all_ or not p.is_terminal]
            trust = await self.api.views.trust()
            me = self.api.me
            found.sort(
                key=lambda p: (p.organiser != me, -round(trust.score(p.organiser), 4), p.closes, p.pool_id)
            )
            return await self._json(found, state, detail=False)

    async def show(self, text_id: object) -> dict[str, Any]:
        """One pool: its state, every share, what does not count and why."""
        async with _bounded("reading the pool"):
            pool, state = await self._pool(text_id)
            return (await self._json([pool], state, detail=True))[0]

    async def _json(self, found: list[Pool], state: _Pools, *, detail: bool) -> list[dict[str, Any]]:
        units = await self._units({p.swarm for p in found})
        names = {s.id: s.name for s in self.api.node.swarms()}
        paid = await self._paid(found) if detail else {}
        return [self._pool_json(p, state, units[p.swarm], names.get(p.swarm), detail, paid) for p in found]

    async def _paid(self, found: list[Pool]) -> dict[tuple[bytes, bytes], int]:
        """(pool, member) -> what the member paid the organiser for it: counted transfers naming the pool."""
        from meshnode.api.ledgerservice import LedgerService

        ledger = LedgerService(self.api)
        wanted = {p.pool_id: p.organiser for p in found}
        out: dict[tuple[bytes, bytes], int] = {}
        for swarm in self.api.node.swarms():
            if not any(p.swarm == swarm.id for p in found):
                continue
            book = (await ledger.state(swarm)).ledger
            for tid in book.counted:
                t = book.transfers[tid]
                body: rec.TransferBody = t.body
                if body.trade in wanted and body.to == wanted[body.trade]:
                    out[(body.trade, t.author)] = out.get((body.trade, t.author), 0) + body.amount
        return out

    def _pool_json(
        self,
        pool: Pool,
        state: _Pools,
        unit: tuple[str, str],
        swarm: str | None,
        detail: bool,
        paid: Mapping[tuple[bytes, bytes], int],
    ) -> dict[str, Any]:
        api = self.api
        mine = pool.share_of(api.me)
        out: dict[str, Any] = {
            "id": pool.pool_id.hex(),
            "swarm": swarm,
            "title": pool.title,
            "supplier": pool.supplier,
            "unit": pool.unit,
            "unit_price": pool.unit_price,
            "unit_price_text": money.format_amount(pool.unit_price),
            "currency": unit[0],
            "currency_name": unit[1],
            "min": pool.min,
            "max": pool.max,
            "pledged": pool.pledged,
            "served": pool.served,
            "state": pool.state,
            "ordered": pool.ordered,
            "closes": _iso(pool.closes),
            "created": _iso(pool.created_ts),
            "organiser": peer_id_of(pool.organiser),
            "organiser_name": api.name_of(pool.organiser),
            "pledgers": len(pool.shares),
            "my_pledge": mine.pledged if mine is not None else 0,
            "my_quantity": mine.quantity if mine is not None else 0,
            "my_cost": mine.cost if mine is not None else 0,
            "my_cost_text": money.format_amount(mine.cost if mine is not None else 0),
            "you_can": you_can(pool, api.me, state.now),
        }
        if detail:
            out["total_cost_text"] = money.format_amount(pool.total_cost)
            out["shares"] = [
                {
                    "member": peer_id_of(s.member),
                    "member_name": api.name_of(s.member),
                    "pledged": s.pledged,
                    "quantity": s.quantity,
                    "cost": s.cost,
                    "cost_text": money.format_amount(s.cost),
                    "partly": s.partly,
                    "paid_text": money.format_amount(paid.get((pool.pool_id, s.member), 0)),
                }
                for s in pool.shares
            ]
            out["refused"] = [
                {
                    "record": rid.hex(),
                    "type": kind,
                    "by": peer_id_of(author),
                    "by_name": api.name_of(author),
                    "reason": why,
                }
                for rid, why in sorted(state.book.refused.items())
                for target, author, kind in [state.index.get(rid, (b"", b"", ""))]
                if target == pool.pool_id
            ]
        return out

    # --- the inbox -------------------------------------------------------------------

    async def remind(self) -> float:
        """Keep the pool notices due now; the seconds until the next look (a pool closes, or a minute)."""
        async with _bounded("the pool notices"):
            state = await self._pools()
            found = state.book.pools.values()
            await self.api.feed.keep(pool_reminders(found, me=self.api.me, now_ms=state.now))
        return next_look(found, self.api.node.clock())


def next_look(found: Any, now_ms: int) -> float:
    """Seconds until the next ``closes`` of a pool not in a final state, at most :data:`REMIND_EVERY_S`."""
    ahead = [p.closes - now_ms for p in found if not p.is_terminal and p.closes > now_ms]
    if not ahead:
        return REMIND_EVERY_S
    return min(REMIND_EVERY_S, min(ahead) / 1000 + 0.05)


def you_can(pool: Pool, me: bytes, now_ms: int) -> list[str]:
    """What the owner can do on ``pool`` now (as the checks would allow, roughly)."""
    out = []
    if pool.state in (pools.OPEN, pools.REACHED) and now_ms < pool.closes:
        out.append("pledge")
    if me == pool.organiser:
        if pool.state == pools.CLOSED:
            out.append("confirm")
        if pool.state in (pools.OPEN, pools.REACHED, pools.CLOSED, pools.FAILED):
            out.append("cancel")
        if pool.state == pools.CONFIRMED:
            out.append("delivered")
    return out


def parse_closes(value: object, now_ms: int) -> int:
    """When a pool closes (ms) from a date (the end of that day, UTC) or an ISO date-time with a timezone.

    Refuses a time in the past and one more than :data:`MAX_POOL_DAYS` days ahead.
    """
    text = _text(value, "closes", 64).strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            closes = int(start.timestamp() * 1000) + DAY_MS - 1
        else:
            when = dt.datetime.fromisoformat(text)
            if when.tzinfo is None:
                raise BadValue(f"closes: expected a timezone in {text!r}, e.g. {text}Z (UTC) or {text}+01:00")
            closes = int(when.timestamp() * 1000)
    except ValueError:
        raise BadValue(
            f"closes: expected a date like 2026-12-15 or a time like 2026-12-15T18:00:00Z, found {text!r}"
        ) from None
    if closes <= now_ms:
        raise BadValue(f"closes: {text} is in the past (it is {_iso(now_ms)} now)")
    if closes > now_ms + MAX_POOL_DAYS * DAY_MS:
        raise BadValue(f"closes: {text} is more than {MAX_POOL_DAYS} days ahead")
    return closes


@asynccontextmanager
async def _bounded(what: str) -> AsyncIterator[None]:
    try:
        with trio.fail_after(REQUEST_TIMEOUT_S):
            yield
    except trio.TooSlowError:
        raise MeshError(f"{what} took longer than {REQUEST_TIMEOUT_S:.0f} s: try again") from None


def _text(value: object, name: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise BadValue(f"{name}: expected text, found {type(value).__name__}")
    if len(value) > max_len:
        raise BadValue(f"{name}: expected at most {max_len} characters, found {len(value)}")
    return value


def _count(value: object, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= rec.MAX_QUANTITY:
        raise BadValue(f"{name}: expected a whole number from {least} to {rec.MAX_QUANTITY}, found {value!r}")
    return value


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
