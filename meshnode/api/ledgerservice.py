"""Mutual credit for the local API: the swarm's currency, pay, balances, my ledger, and its watcher.

:class:`LedgerService` composes an :class:`~meshnode.api.service.ApiService`
and keeps no state of its own: each request derives the ledger of a swarm
(:func:`meshnode.ledger.derive_ledger`, in a worker thread) from its
``transfer`` records, with the credit limits this node's trust gives
(:mod:`meshnode.credit`).

* :meth:`LedgerService.pay`: sign the next link of the owner's chain
  (:func:`meshnode.ledger.next_transfer`: the next place, acknowledging the
  oldest payments received) after every check of the fold; a payment the
  fold would not count (over the limit, a gap in the chain) is never signed.
* :meth:`LedgerService.balance`: a member's balance in each swarm, their
  credit limit and where it comes from, what waits for a missing link, and
  the proof if they forked.
* :meth:`LedgerService.ledger`: the owner's own transfers, in and out.
* :meth:`LedgerService.set_currency`: publish a ``currency`` record.

:class:`LedgerWatcher` is the background part: when transfers (or the trust
that sets limits) change, it keeps the inbox's ``fork`` notices (a proof of
a double spend) and ``topay`` notices (a priced trade I received and have
not paid), and asks the swarm's peers for the links the ledger lacks
(:attr:`meshnode.ledger.Ledger.missing`) by syncing with them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from meshnode import barter, credit, money, views
from meshnode import records as rec
from meshnode.errors import BadValue, MeshError, NotAllowed, NotFound, TransitionError
from meshnode.identity import peer_id_of
from meshnode.ids import short_id
from meshnode.inbox import Notice
from meshnode.ledger import Ledger, derive_ledger, next_transfer
from meshnode.swarm import Swarm
from meshnode.views import TrustView

if TYPE_CHECKING:
    from meshnode.api.service import ApiService

log = logging.getLogger(__name__)

#: The watcher looks at the ledgers at least this often (s), and after every transfer stored.
WATCH_EVERY_S = 60.0
#: The watcher waits this long after a change before looking (s): a burst of records is one look.
WATCH_GAP_S = 0.5
#: At most one round of syncs for missing links per swarm this often (s).
FETCH_EVERY_S = 10.0
#: How long one sync for missing links may take (s).
FETCH_TIMEOUT_S = 20.0
MAX_MEMO = rec.MAX_NOTE


@dataclass(frozen=True)
class SwarmLedger:
    """One swarm's ledger as this node sees it now, with the limits and currency it used."""

    swarm: Swarm
    ledger: Ledger
    limits: Mapping[bytes, int]
    currency: credit.Currency
    trust: TrustView

    def limit_of(self, key: bytes) -> int:
        return self.limits.get(key, 0)

    def credit_of(self, key: bytes) -> credit.CreditLimit:
        return credit.credit_limit(
            key,
            me=self.trust.source,
            scores=self.trust.scores,
            edges=self.trust.graph.edges,
            forkers=self.ledger.forks.keys(),
        )


def derive_swarm_ledger(reader: Any, swarm: Swarm, trust: TrustView, me: bytes) -> SwarmLedger:
    """Derive ``swarm``'s ledger from ``reader`` (blocking: call it in a worker thread)."""
    transfers = reader.records_of_type("transfer", swarm=swarm.id)
    currencies = reader.records_of_type("currency", swarm=swarm.id)
    limits = credit.limits_of(me=me, scores=trust.scores, edges=trust.graph.edges)
    ledger = derive_ledger(transfers, lambda k: limits.get(k, 0))
    currency = credit.swarm_currency(currencies, me=me, scores=trust.scores)
    return SwarmLedger(swarm, ledger, limits, currency, trust)


class LedgerService:
    """The mutual-credit operations of the local API (see the module docstring)."""

    def __init__(self, api: ApiService) -> None:
        self.api = api

    # --- reading -------------------------------------------------------------------

    def _swarms(self, name: object) -> list[Swarm]:
        joined = self.api.node.swarms()
        if name is None or name == "":
            if not joined:
                raise NotFound("this node is in no swarm: create one ('meshnode swarm create') or join one")
            return joined
        return [self.api.node.swarm(_text(name, "swarm", 100))]

    def _one_swarm(self, name: object) -> Swarm:
        swarms = self._swarms(name)
        if len(swarms) > 1:
            names = ", ".join(s.name for s in swarms)
            raise BadValue(f"you are in {len(swarms)} swarms ({names}): say which with --swarm NAME")
        return swarms[0]

    async def state(self, swarm: Swarm) -> SwarmLedger:
        """``swarm``'s ledger now: derived in a worker thread, or as derived before if nothing changed.

        The last derivation per swarm is kept (:attr:`LedgerWatcher.derived`)
        with the trust snapshot it used and the watcher's count of transfer
        and currency records stored or records removed: it is reused while both are the same.
        """
        api = self.api
        trust = await api.views.trust()
        watcher: LedgerWatcher | None = getattr(api, "ledger_watcher", None)
        version = watcher.version if watcher is not None else -1
        if watcher is not None:
            kept = watcher.derived.get(swarm.id)
            if kept is not None and kept[0] == version and kept[1].trust is trust:
                return kept[1]
        found: SwarmLedger = await api._read(derive_swarm_ledger, api.reader, swarm, trust, api.me)
        if watcher is not None and watcher.version == version:
            watcher.derived[swarm.id] = (version, found)
        return found

    async def currency(self, swarm_id: bytes) -> credit.Currency:
        """The currency this node follows in the swarm ``swarm_id`` (:func:`credit.swarm_currency`)."""
        api = self.api
        view = await api.views.trust()
        found = await api._read(lambda: api.reader.records_of_type("currency", swarm=swarm_id))
        return credit.swarm_currency(found, me=api.me, scores=view.scores)

    # --- the currency ------------------------------------------------------------------

    async def show_currency(self, swarm: object = None) -> list[dict[str, Any]]:
        """The currency of each swarm (or of ``swarm``), who named it and when."""
        out = []
        for s in self._swarms(swarm):
            cur = await self.currency(s.id)
            out.append(self._currency_json(s, cur))
        return out

    def _currency_json(self, swarm: Swarm, cur: credit.Currency) -> dict[str, Any]:
        by = cur.record.author if cur.record is not None else None
        return {
            "swarm": swarm.name,
            "name": cur.name,
            "unit": cur.unit,
            "named_by": peer_id_of(by) if by is not None else None,
            "named_by_name": self.api.name_of(by) if by is not None else None,
            "since": _iso(cur.record.ts) if cur.record is not None else None,
        }

    async def set_currency(self, name: object, unit: object = None, swarm: object = None) -> dict[str, Any]:
        """Publish a ``currency`` record: the swarm's currency is ``name``, counted in ``unit``."""
        s = self._one_swarm(swarm)
        body = rec.CurrencyBody(
            name=_text(name, "name", rec.MAX_CURRENCY_NAME).strip(),
            unit=credit.DEFAULT_UNIT if unit is None else _text(unit, "unit", rec.MAX_UNIT).strip(),
        )
        rec.check_body(body)
        async with self.api._lock:
            await self.api.node.publish(body, s)
        return self._currency_json(s, await self.currency(s.id))

    # --- paying ------------------------------------------------------------------------

    async def pay(
        self,
        peer: object,
        amount: object,
        memo: object = "",
        for_: object = None,
        swarm: object = None,
    ) -> dict[str, Any]:
        """Pay ``peer`` ``amount`` units (text like "2" or "1.5") of the swarm's currency."""
        api = self.api
        to = api._peer_named(peer)
        if to == api.me:
            raise NotAllowed("you cannot pay yourself: name the neighbour you pay")
        hundredths = money.parse_amount(_text(amount, "amount", 20))
        note = _text(memo, "memo", MAX_MEMO + 100)
        if len(note) > MAX_MEMO:
            raise BadValue(f"memo: at most {MAX_MEMO} characters, found {len(note)}")
        trade: bytes | None = None
        target: Swarm | None = None
        if for_ is not None and for_ != "":
            trade, target = await self._paid_for(_text(for_, "for", 64), to)
        if target is None:
            target = self._one_swarm(swarm)
        elif swarm is not None and swarm != "" and api.node.swarm(_text(swarm, "swarm", 100)).id != target.id:
            raise BadValue(f"{short_id(trade or b'')} is in the swarm {target.name}, not in {swarm}")
        async with api._lock:
            state = await self.state(target)
            unit = state.currency.unit
            self._check_can_pay(state, hundredths, unit)
            try:
                body = next_transfer(
                    state.ledger, api.me, to, hundredths, state.limit_of, memo=note, trade=trade
                )
            except (NotAllowed, TransitionError) as exc:
                raise type(exc)(f"cannot pay: {exc}") from None
            record = await api.node.publish(body, target)
            after = await self.state(target)
        mine = after.ledger.account(api.me, after.limit_of)
        return {
            "id": record.id.hex(),
            "swarm": target.name,
            "to": peer_id_of(to),
            "to_name": api.name_of(to),
            "amount": money.format_amount(hundredths),
            "amount_hundredths": hundredths,
            "unit": unit,
            "memo": note,
            "for": trade.hex() if trade is not None else None,
            "seq": body.seq,
            "acknowledged": len(body.acks),
            "balance": money.format_amount(mine.balance),
            "limit": money.format_amount(mine.limit),
        }

    def _check_can_pay(self, state: SwarmLedger, amount: int, unit: str) -> None:
        """Refuse in the owner's words what :func:`meshnode.ledger.check_transfer` refuses for the limit."""
        me = self.api.me
        account = state.ledger.account(me, state.limit_of)
        if account.forked:
            raise NotAllowed(
                "your own chain of transfers forks (two transfers at one place, from a restored backup?):"
                " your credit limit is 0 and no later payment of yours counts"
            )
        credit_in = sum(state.ledger.transfers[t].body.amount for t in account.uncredited[: rec.MAX_ACKS])
        after = account.chain_balance + credit_in - amount
        if after < -account.limit:
            raise NotAllowed(
                f"paying {money.format_amount(amount)} {unit} would leave you at"
                f" {money.format_amount(after)},"
                f" below your credit limit of -{money.format_amount(account.limit)} {unit}:"
                " 'meshnode balance' says where your limit comes from"
            )

    async def _paid_for(self, text: str, to: bytes) -> tuple[bytes, Swarm]:
        """The proposal or pool a payment is for, and its swarm; the payee must be the other party."""
        api = self.api
        rid = await api._read(views.parse_id, text, api.reader)
        record = await api._read(api.reader.get, rid)
        if record is None:
            raise NotFound(f"no record {text!r} on this node")
        if record.type == "proposal":
            parties = {record.author, record.body.to}
            if api.me not in parties:
                raise NotAllowed(f"you are no party to proposal {short_id(rid)}")
            if to not in parties:
                raise NotAllowed(f"{api.name_of(to)} is no party to proposal {short_id(rid)}")
        elif record.type == "pool":
            if record.author != to:
                raise NotAllowed(
                    f"pool {short_id(rid)} is organised by {api.name_of(record.author)}: pay the organiser"
                )
        else:
            raise BadValue(f"--for names a proposal or a pool, and {short_id(rid)} is a {record.type}")
        return rid, api._swarm_of(record.swarm)

    # --- balances ----------------------------------------------------------------------

    async def balance(self, peer: object = None, swarm: object = None) -> list[dict[str, Any]]:
        """``peer``'s (default: the owner's) balance and credit in each swarm (or in ``swarm``)."""
        api = self.api
        key = api.me if peer is None or peer == "" else api._peer_named(peer)
        out = []
        for s in self._swarms(swarm):
            state = await self.state(s)
            out.append(self._balance_json(state, key))
        return out

    def _balance_json(self, state: SwarmLedger, key: bytes) -> dict[str, Any]:
        api, ledger = self.api, state.ledger
        account = ledger.account(key, state.limit_of)
        line = state.credit_of(key)
        waiting = [
            {"transfer": tid.hex(), "waits_for": missing.hex()}
            for tid, missing in ledger.pending.items()
            if ledger.transfers[tid].author == key or ledger.transfers[tid].body.to == key
        ]
        proof = ledger.forks.get(key)
        return {
            "swarm": state.swarm.name,
            "currency": state.currency.name,
            "unit": state.currency.unit,
            "peer": peer_id_of(key),
            "peer_name": api.name_of(key),
            "mine": key == api.me,
            "balance": money.format_amount(account.balance),
            "balance_hundredths": account.balance,
            "limit": money.format_amount(account.limit),
            "limit_hundredths": account.limit,
            "can_spend": money.format_amount(max(0, account.balance + account.limit)),
            "limit_from": {
                "base": money.format_amount(line.base),
                "trusted": line.base > 0,
                "extended": [
                    {
                        "by": peer_id_of(c.by),
                        "by_name": api.name_of(c.by),
                        "amount": money.format_amount(c.amount),
                        "weight": round(c.weight, 4),
                        "trust": round(c.trust, 4),
                        "kind": c.kind,
                    }
                    for c in line.lines
                ],
                "capped": line.capped,
                "max": money.format_amount(credit.MAX_LIMIT),
            },
            "transfers": sum(1 for t in ledger.transfers.values() if t.author == key),
            "waiting": waiting,
            "fork": self._fork_json(state, key) if proof is not None else None,
        }

    def _fork_json(self, state: SwarmLedger, key: bytes) -> dict[str, Any]:
        proof = state.ledger.forks[key]
        sides = []
        for r in (proof.a, proof.b):
            body: rec.TransferBody = r.body
            sides.append(
                {
                    "transfer": r.id.hex(),
                    "seq": body.seq,
                    "to": peer_id_of(body.to),
                    "to_name": self.api.name_of(body.to),
                    "amount": money.format_amount(body.amount),
                    "date": _iso(r.ts),
                }
            )
        return {"swarm": state.swarm.name, "peer": peer_id_of(key), "seq": proof.seq, "transfers": sides}

    async def forks_of(self, key: bytes) -> list[dict[str, Any]]:
        """The fork proofs against ``key`` in the swarms this node is in (for ``meshnode trust``)."""
        out = []
        for s in self.api.node.swarms():
            state = await self.state(s)
            if key in state.ledger.forks:
                out.append(self._fork_json(state, key))
        return out

    # --- my ledger ---------------------------------------------------------------------

    async def ledger(self, swarm: object = None) -> list[dict[str, Any]]:
        """The owner's transfers in each swarm (or in ``swarm``), newest first, and whether each counts."""
        api = self.api
        out = []
        for s in self._swarms(swarm):
            state = await self.state(s)
            ledger = state.ledger
            rows: list[dict[str, Any]] = []
            for tid, r in ledger.transfers.items():
                body: rec.TransferBody = r.body
                if api.me not in (r.author, body.to):
                    continue
                other = body.to if r.author == api.me else r.author
                if tid in ledger.counted:
                    status, why = "counted", ""
                elif tid in ledger.pending:
                    status, why = "waiting", f"waits for transfer {short_id(ledger.pending[tid])}"
                else:
                    status, why = "refused", ledger.refused.get(tid, "")
                rows.append(
                    {
                        "id": tid.hex(),
                        "date": _iso(r.ts),
                        "ts": r.ts,
                        "direction": "out" if r.author == api.me else "in",
                        "peer": peer_id_of(other),
                        "peer_name": api.name_of(other),
                        "amount": money.format_amount(body.amount),
                        "amount_hundredths": body.amount,
                        "memo": body.memo,
                        "for": body.trade.hex() if body.trade is not None else None,
                        "seq": body.seq if r.author == api.me else None,
                        "status": status,
                        "why": why,
                    }
                )
            rows.sort(key=lambda row: (-row["ts"], row["id"]))
            mine = ledger.account(api.me, state.limit_of)
            out.append(
                {
                    "swarm": s.name,
                    "currency": state.currency.name,
                    "unit": state.currency.unit,
                    "balance": money.format_amount(mine.balance),
                    "limit": money.format_amount(mine.limit),
                    "transfers": rows,
                }
            )
        return out

    # --- for the watcher ---------------------------------------------------------------

    async def to_pay(self) -> list[ToPay]:
        """The done trades in which the owner received priced offers and has not paid for them yet."""
        api = self.api
        book = await api.views.book()
        done = [
            t
            for t in book.trades.values()
            if t.state in barter.DONE_STATES and t.role(api.me) is not None and t.swarm in api._joined()
        ]
        if not done:
            return []

        def read() -> tuple[dict[bytes, Any], set[bytes]]:
            items = api.reader.items_by_id({o for t in done for o in t.offers})
            paid = {
                r.body.trade
                for s in {t.swarm for t in done}
                for r in api.reader.records_of_type("transfer", swarm=s)
                if r.author == api.me and r.body.trade is not None
            }
            return items, paid

        items, paid = await api._read(read)
        return prices_due(done, items, paid, api.me)

    async def notices(self) -> tuple[list[Notice], list[tuple[Swarm, frozenset[bytes]]]]:
        """The ``fork`` and ``topay`` notices of every swarm's ledger, and each swarm's missing links."""
        notices: list[Notice] = []
        missing: list[tuple[Swarm, frozenset[bytes]]] = []
        for s in self.api.node.swarms():
            state = await self.state(s)
            for author, proof in state.ledger.forks.items():
                notices.append(Notice("fork", proof.b.id, author, proof.a.id))
            if state.ledger.missing:
                missing.append((s, state.ledger.missing))
        for due in await self.to_pay():
            notices.append(Notice("topay", due.trade.latest_move, due.payee, due.trade.proposal_id))
        return notices, missing


@dataclass(frozen=True)
class ToPay:
    """A done ``trade`` where the owner received priced offers of ``payee``: ``amount`` hundredths in all."""

    trade: barter.Trade
    payee: bytes
    amount: int
    offers: tuple[bytes, ...]


def prices_due(
    trades: list[barter.Trade], items: Mapping[bytes, Any], paid: set[bytes], me: bytes
) -> list[ToPay]:
    """Of ``trades`` (done, mine), those where I received an offer with a price and no transfer of mine
    names the trade (``paid``: the trades my transfers name). ``items``: offer id -> its live item."""
    out = []
    for t in trades:
        if t.proposal_id in paid:
            continue
        priced = [
            items[o] for o in t.offers if o in items and items[o].price is not None and items[o].author != me
        ]
        if priced:
            payee = priced[0].author
            total = sum(it.price for it in priced if it.author == payee)
            offers = tuple(it.id for it in priced if it.author == payee)
            out.append(ToPay(t, payee, total, offers))
    return out


class LedgerWatcher:
    """Keeps the ledger's inbox notices and fetches missing links (see the module docstring)."""

    def __init__(self, api: ApiService) -> None:
        self.api = api
        self.service = LedgerService(api)
        self._changed = trio.Event()
        self._fetched_at: dict[bytes, float] = {}
        self.fetch_rounds = 0
        #: Bumped when a transfer or currency record is stored, or records are removed.
        self.version = 0
        #: The last ledger derived per swarm, with the version it was derived at.
        self.derived: dict[bytes, tuple[int, SwarmLedger]] = {}

    def on_stored(self, record: rec.Record) -> None:
        """An ingest listener: a transfer, or trust that moves limits, may change the ledgers."""
        if record.type in ("transfer", "currency"):
            self.version += 1
        if record.type in ("transfer", "attest", "currency", "reply"):
            self._changed.set()

    def on_removed(self) -> None:
        """A node listener: records left the store (an eviction may have taken transfers)."""
        self.version += 1
        self._changed.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._changed = trio.Event()
            try:
                await self.look()
            except MeshError as exc:  # a store error must not stop the watcher
                log.warning("ledger watch failed: %s", exc)
            with trio.move_on_after(WATCH_EVERY_S):
                await self._changed.wait()
            await trio.sleep(WATCH_GAP_S)  # a burst of records is one look, not one each

    async def look(self) -> None:
        """Keep the notices due now and ask peers for missing links."""
        notices, missing = await self.service.notices()
        await self.api.feed.keep(notices)
        now = trio.current_time()
        for swarm, ids in missing:
            if now - self._fetched_at.get(swarm.id, -FETCH_EVERY_S) < FETCH_EVERY_S:
                continue
            self._fetched_at[swarm.id] = now
            log.info("ledger of %s waits for %d transfers: syncing with its peers", swarm.name, len(ids))
            self.fetch_rounds += 1
            for peer in self.api.node.swarm_peers(swarm):
                with trio.move_on_after(FETCH_TIMEOUT_S):
                    try:
                        await self.api.node.sync_with(peer, swarm)
                    except MeshError as exc:
                        log.info("sync with %s for missing transfers failed: %s", peer, exc)


def _text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise BadValue(f"{what}: expected text, found {type(value).__name__}")
    if len(value) > limit:
        raise BadValue(f"{what}: at most {limit} characters, found {len(value)}")
    return value


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
