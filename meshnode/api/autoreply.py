"""Answering while away: the daemon replies to trades by the owner's ``[rules]``.

:class:`AutoReplier` is told of every stored record (an ingest listener, like
the inbox feed); after a proposal, a reply or an attestation (trust may have
changed) it looks at the trade book. For each trade that is open and
awaiting the owner it asks :func:`meshnode.rules.decide`, with

* the trust scores the node derives (:meth:`meshnode.views.ViewCache.trust`),
* what barter knows of the offers the trade names (:func:`meshnode.views.offer_infos`),
* ``open_loans_by`` (:func:`open_loans_by`): per borrower, my accepted or
  handed-over loans not yet returned,
* ``previous_terms`` (:func:`previous_terms`): the terms before the trade's
  latest move, read from the proposal and the applied counters,
* the other party's label (:meth:`ApiService.name_of`),

and sends the decision as a normal signed reply through
:meth:`ApiService.reply` (every check runs there; a refusal is logged, not
fatal). The owner's inbox gets a ``move`` notice for that reply, by the
owner ("you accepted proposal …", the rule in its note): the inbox skips
what the owner signs, but an automatic move is one the owner has not seen.

Each trade is looked at once per latest move (:attr:`AutoReplier.tried`):
a refused reply is not retried until the trade moves again, and the
daemon's own reply never answers itself. Nothing is remembered on disk: a
trade answered before a restart no longer awaits the owner (the book is
derived from the records), and a trade in a swarm the node has not joined
(yet) is left for a later look (one every :data:`LOOK_EVERY_S` at least).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from meshnode import barter, views
from meshnode.barter import OPEN_STATES, OfferInfo, Trade
from meshnode.errors import MeshError
from meshnode.ids import short_id
from meshnode.inbox import Notice
from meshnode.records import ProposalBody, Record, ReplyBody
from meshnode.rules import Decision, Rules, decide, held_back

if TYPE_CHECKING:
    from meshnode.api.service import ApiService

log = logging.getLogger(__name__)

#: Records after which a trade may await an automatic answer.
WAKING_TYPES = frozenset({"proposal", "reply", "attest", "withdraw"})
#: Seconds between looks when no record wakes the replier (trust and time change too; at start the
#: swarms are joined after the first look).
LOOK_EVERY_S = 60.0
#: Seconds one look (deriving the book, reading offers, sending replies) may take at most.
LOOK_TIMEOUT_S = 60.0
#: Seconds one reply may take at most (it is signed, stored and gossiped).
REPLY_TIMEOUT_S = 20.0

Terms = tuple[tuple[bytes, ...], tuple[bytes, ...]]


@dataclass(frozen=True)
class Answer:
    """One automatic answer: ``trade`` as it stood, and what :func:`meshnode.rules.decide` chose."""

    trade: Trade
    decision: Decision


def awaiting_me(trades: Iterable[Trade], me: bytes, swarms: frozenset[bytes]) -> list[Trade]:
    """The trades open (proposed or countered) and awaiting ``me``, in the ``swarms`` I am in."""
    return [t for t in trades if t.state in OPEN_STATES and t.awaiting() == me and t.swarm in swarms]


def open_loans_by(trades: Iterable[Trade], me: bytes, offers: Mapping[bytes, OfferInfo]) -> dict[bytes, int]:
    """Per borrower, the loans I lend that are accepted and not yet returned (each trade counts once).

    An accepted trade counts when its current terms make me the lender
    (:func:`meshnode.barter.lender_of`, by ``offers``); a loan handed over
    or overdue when its ``lender`` is me.
    """
    out: dict[bytes, int] = {}
    for t in trades:
        if t.role(me) is None:
            continue
        if t.state == barter.ACCEPTED:
            lender = barter.lender_of(t, offers)
        elif t.state in barter.LOAN_STATES:
            lender = t.lender
        else:
            continue
        if lender == me:
            borrower = t.other(me)
            out[borrower] = out.get(borrower, 0) + 1
    return out


def previous_terms(trade: Trade, records: Mapping[bytes, Record]) -> Terms | None:
    """The terms (``give``, ``take``, from the proposer's side) before ``trade``'s latest move.

    An open trade's applied moves are counters: the terms before the latest
    one are those of the counter before it, else the proposal's. ``None``
    for a trade with no applied move, or when a record needed is missing.
    """
    if not trade.applied:
        return None
    before = trade.applied[-2] if len(trade.applied) > 1 else trade.proposal_id
    record = records.get(before)
    if record is None:
        return None
    body = record.body
    if isinstance(body, ProposalBody):
        return tuple(body.give), tuple(body.take)
    if isinstance(body, ReplyBody) and body.action == "counter":
        if record.author == trade.proposer:
            return tuple(body.give), tuple(body.take)
        return tuple(body.take), tuple(body.give)
    return None


def choose(
    trades: Iterable[Trade],
    *,
    me: bytes,
    rules: Rules,
    offers: Mapping[bytes, OfferInfo],
    trust: Mapping[bytes, float],
    open_loans: Mapping[bytes, int],
    records: Mapping[bytes, Record],
    label: Callable[[bytes], str],
) -> list[Answer]:
    """What to answer of ``trades`` (those awaiting ``me``), in their order; the rest is left to me."""
    out = []
    for t in trades:
        decision = decide(
            t,
            me=me,
            offers=offers,
            trust=trust,
            open_loans_by=open_loans,
            rules=rules,
            previous_terms=previous_terms(t, records),
            label=label(t.other(me)),
        )
        if decision is not None:
            out.append(Answer(t, decision))
        else:
            why = held_back(t, me=me, offers=offers, open_loans_by=open_loans, rules=rules)
            if why is not None:
                log.info("trade %s %s", short_id(t.proposal_id), why)
    return out


class AutoReplier:
    """Replies on the owner's behalf by ``rules`` (see the module docstring).

    ``service`` is the :class:`meshnode.api.service.ApiService` (its views,
    reader, node, ``name_of`` and ``reply``).
    """

    def __init__(self, service: ApiService, rules: Rules) -> None:
        self._service = service
        self.rules = rules
        self._woken = trio.Event()
        self._woken.set()  # look once at start: trades may await an answer from before
        self.tried: set[tuple[bytes, bytes]] = set()  # (proposal, latest move) looked at
        self.sent = 0  # automatic replies sent so far

    def on_stored(self, record: Record) -> None:
        """A record was stored (an ingest listener: cheap, runs in the ingest task)."""
        if record.type in WAKING_TYPES:
            self._woken.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer what the rules answer, after each waking record, until cancelled."""
        task_status.started()
        if not self.rules.any_on:
            return
        while True:
            with trio.move_on_after(LOOK_EVERY_S):
                await self._woken.wait()
            self._woken = trio.Event()
            with trio.move_on_after(LOOK_TIMEOUT_S) as scope:
                try:
                    await self.look()
                except MeshError as exc:  # a store error must not stop the answering
                    log.warning("answering by your rules failed: %s", exc)
            if scope.cancelled_caught:
                log.warning("answering by your rules took over %ss: looking again later", LOOK_TIMEOUT_S)

    async def look(self) -> list[Answer]:
        """Answer every trade awaiting the owner that the rules answer; the answers sent."""
        s = self._service
        me = s.me
        book = await s.views.book()
        joined = frozenset(sw.id for sw in s.node.swarms())
        awaiting = awaiting_me(book.trades.values(), me, joined)
        self.tried &= {(t.proposal_id, t.latest_move) for t in awaiting}  # forget what moved on
        waiting = [t for t in awaiting if (t.proposal_id, t.latest_move) not in self.tried]
        if not waiting:
            return []
        mine = book.involving(me)
        named = {oid for t in (*waiting, *mine) for oid in t.offers}
        before = {t.applied[-2] if len(t.applied) > 1 else t.proposal_id for t in waiting if t.applied}
        offers, records = await trio.to_thread.run_sync(self._read, named, before)
        trust = (await s.views.trust()).scores
        answers = choose(
            waiting,
            me=me,
            rules=self.rules,
            offers=offers,
            trust={t.other(me): trust.get(t.other(me), 0.0) for t in waiting},
            open_loans=open_loans_by(mine, me, offers),
            records=records,
            label=s.name_of,
        )
        self.tried.update((t.proposal_id, t.latest_move) for t in waiting)
        sent = []
        for answer in answers:
            if await self._send(answer):
                sent.append(answer)
        return sent

    def _read(
        self, named: set[bytes], before: set[bytes]
    ) -> tuple[dict[bytes, OfferInfo], dict[bytes, Record]]:
        reader = self._service.reader
        records = {rid: r for rid in before if (r := reader.get(rid)) is not None}
        return views.offer_infos(reader, named), records

    async def _send(self, answer: Answer) -> bool:
        """Send one answer as a normal reply and tell the owner's inbox; a refusal is logged."""
        s, t, d = self._service, answer.trade, answer.decision
        pid = short_id(t.proposal_id)
        try:
            with trio.fail_after(REPLY_TIMEOUT_S):
                await s.reply(t.proposal_id.hex(), d.action, note=d.note)
                moved = views.find_trade(await s.views.book(), t.proposal_id)
        except MeshError as exc:
            log.warning("could not %s trade %s by your rule %s: %s", d.action, pid, d.rule, exc)
            return False
        except trio.TooSlowError:
            log.warning(
                "could not %s trade %s by your rule %s: it took over %ss",
                d.action,
                pid,
                d.rule,
                REPLY_TIMEOUT_S,
            )
            return False
        self.sent += 1
        log.info("trade %s: %s", pid, d.note)
        if moved.applied and moved.latest_move != t.latest_move:
            await s.feed.keep(
                [Notice("move", moved.latest_move, s.me, t.proposal_id)]
            )  # told to watchers too
        return True
