"""Inbox notices as the API shows them: JSON with a sentence that says what happened.

:func:`notice_json` turns one kept notice (:class:`meshnode.store.inbox.
StoredNotice`) and what the node knows now (the records it names, their
items' current titles, the trade it belongs to, who is who) into the JSON of
``GET /inbox`` and of each event of ``GET /events``. The ``text`` is a
sentence from the owner's side ("Bob offers Ladder for your Cordless drill");
remote text (titles, notes) is put in as it is: the CLI escapes it when it
prints (:func:`meshnode.cli.render.printable`), a web page must too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshnode import money
from meshnode import records as rec
from meshnode.barter import Trade
from meshnode.identity import peer_id_of
from meshnode.people import short_peer
from meshnode.pools import Pool
from meshnode.store import LiveItem
from meshnode.store.inbox import StoredNotice

_DONE = {
    "accept": "accepted",
    "counter": "countered",
    "decline": "declined",
    "cancel": "cancelled",
    "complete": "completed their side of",
    "received": "received what you lent in",
    "extend": "extended the loan of",
    "returned": "got back what they lent in",
}


@dataclass(frozen=True)
class Known:
    """What the node knows now that a notice's JSON reads."""

    me: bytes
    records: Mapping[bytes, rec.Record]
    items: Mapping[bytes, LiveItem]
    trades: Mapping[bytes, Trade]
    name_of: Callable[[bytes], str]
    trust: Callable[[bytes], float]
    swarms: frozenset[bytes]  # the swarms the node is in: a left swarm's notices are hidden
    units: Mapping[bytes, str] = field(default_factory=dict)  # swarm -> its currency's unit
    pools: Mapping[bytes, Pool] = field(default_factory=dict)  # pool id -> derived now (if read)

    def unit(self, swarm: bytes) -> str:
        return self.units.get(swarm, "hours")

    def title(self, item_id: bytes) -> str:
        item = self.items.get(item_id)
        return item.title if item is not None else short(item_id)

    def titles(self, ids: tuple[bytes, ...]) -> str:
        return ", ".join(self.title(i) for i in ids)


def short(record_id: bytes) -> str:
    """A record id as the CLI shows it and accepts it back: its first 12 hex digits."""
    return record_id.hex()[:12]


def notice_json(stored: StoredNotice, known: Known) -> dict[str, Any] | None:
    """The notice as JSON, or None if what it names is gone (pruned or evicted since, or its swarm left)."""
    n = stored.notice
    record = known.records.get(n.record)
    if record is None or record.swarm not in known.swarms:
        return None
    name = known.name_of(n.peer)
    out: dict[str, Any] = {
        "seq": stored.seq,
        "at": dt.datetime.fromtimestamp(stored.at / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kind": n.kind,
        "peer": peer_id_of(n.peer),
        "peer_name": name,
        "record": n.record.hex(),
        "about": n.about.hex() if n.about else None,
        "note": getattr(record.body, "note", ""),
    }
    if n.kind in ("proposal", "move"):
        trade = known.trades.get(n.about)
        if n.kind == "proposal":
            what = _trade_phrase(trade, name, known) if trade is not None else f"{name} proposes a trade"
            out["text"] = f"{what} (proposal {short(n.about)})"
        else:
            action = getattr(record.body, "action", "")
            terms = f" ({_terms(trade, known)})" if trade is not None else ""
            out["text"] = f"{name} {_DONE.get(action, action)} proposal {short(n.about)}{terms}"
            out["action"] = action
        if trade is not None:
            out["state"] = trade.state
    elif n.kind in ("ring", "ringmove"):
        ring = known.records.get(n.about)
        what = _ring_phrase(ring.body, known) if ring is not None else "a trade ring"
        if n.kind == "ring":
            out["text"] = f"{name} proposes a ring: {what} (ring {short(n.about)})"
        else:
            action = getattr(record.body, "action", "")
            out["text"] = f"{name} {_DONE.get(action, action)} ring {short(n.about)} ({what})"
            out["action"] = action
    elif n.kind in ("due", "overdue"):
        trade = known.trades.get(n.about)
        out["text"] = _loan_reminder(n.kind, trade, name, known, short(n.about))
        if trade is not None:
            out["state"] = trade.state
            out["due"] = _iso(trade.due)
    elif n.kind in ("poolreached", "poolclosed"):
        pool = known.pools.get(n.about)
        out["text"] = _pool_notice(n.kind, record, pool, name, known)
        if pool is not None:
            out["state"] = pool.state
    elif n.kind == "poolmove":
        pool_record = known.records.get(n.about)
        title = pool_record.body.title if pool_record is not None else "a pool"
        action = getattr(record.body, "action", "")
        did = {
            "confirm": f"confirmed the order of {title}",
            "cancel": f"cancelled {title}: nothing is ordered",
            "delivered": f"marked {title} delivered",
        }.get(action, f"moved {title}")
        out["text"] = f"{name} {did} (pool {short(n.about)})"
        out["action"] = action
    elif n.kind == "vouch":
        level = record.body.level / rec.LEVEL_SCALE
        out["level"] = level
        out["text"] = f"{name} {'vouched for' if level > 0 else 'warned about'} you ({level:+.2f})"
    elif n.kind == "match":
        theirs, mine = known.title(n.record), known.title(n.about)
        if record.type == "offer":
            out["text"] = f"{name} offers {theirs}: it matches your want {mine}"
        else:
            out["text"] = f"{name} wants {theirs}: it matches your offer {mine}"
        out["item"] = n.record.hex()
        out["yours"] = n.about.hex()
    elif n.kind == "payment":
        body: rec.TransferBody = record.body
        what = f" for {_paid_for(body.trade, known)}" if body.trade is not None else ""
        out["amount"] = money.format_amount(body.amount)
        out["unit"] = known.unit(record.swarm)
        out["note"] = body.memo
        out["text"] = f"{name} paid you {out['amount']} {out['unit']}{what} (transfer {short(n.record)})"
    elif n.kind == "topay":
        trade = known.trades.get(n.about)
        priced = [
            known.items[o]
            for o in (trade.offers if trade is not None else ())
            if o in known.items and known.items[o].price is not None and known.items[o].author == n.peer
        ]
        amount = money.format_amount(sum(it.price or 0 for it in priced))
        unit = known.unit(record.swarm)
        titles = ", ".join(it.title for it in priced) or "their offer"
        out["amount"], out["unit"] = amount, unit
        out["text"] = (
            f"you received {titles} from {name}: pay {amount} {unit} with"
            f" 'meshnode pay {short_peer(n.peer)} {amount} --for {short(n.about)}'"
        )
    elif n.kind == "fork":
        other = known.records.get(n.about)
        a: rec.TransferBody = record.body
        mine = (
            " (one of them to you)"
            if a.to == known.me or (other is not None and getattr(other.body, "to", None) == known.me)
            else ""
        )
        out["text"] = (
            f"{name} spent the same place of their chain twice (place {a.seq}): a double spend{mine};"
            f" their credit limit is 0 and nothing they pay from there on counts"
            f" (transfers {short(n.about)} and {short(n.record)}; 'meshnode trust {short_peer(n.peer)}')"
        )
    else:  # offer from someone trusted
        out["text"] = f"{name} (trust {known.trust(n.peer):.2f}) offers {known.title(n.record)}"
        out["item"] = n.record.hex()
    return out


def _pool_notice(kind: str, record: rec.Record, pool: Pool | None, name: str, known: Known) -> str:
    """ "Organic apples (Alice's pool, 12 of min 10 pledged) reached its minimum (pool 1a2b…)"."""
    body: rec.PoolBody = record.body
    whose = "your pool" if record.author == known.me else f"{name}'s pool"
    ref = f"(pool {short(record.id)})"
    if pool is None:  # not derived here: what the pool record says
        if kind == "poolreached":
            return f"{body.title} ({whose}, min {body.min}) reached its minimum {ref}"
        return f"{body.title} ({whose}) closed: see 'meshnode pool show {short(record.id)}' {ref}"
    if kind == "poolreached":
        return f"{body.title} ({whose}, {pool.pledged} of min {pool.min} pledged) reached its minimum {ref}"
    if pool.state == "cancelled":
        return f"{body.title} ({whose}) closed, then was cancelled: nothing is ordered {ref}"
    if not pool.ordered:
        return f"{body.title} ({whose}) closed without reaching its minimum: nothing is ordered {ref}"
    share = pool.share_of(known.me)
    unit = f" {pool.unit}" if pool.unit else ""
    if share is None or share.quantity == 0:
        got = "you get nothing" if share is None else f"you get nothing of the {share.pledged} you pledged"
    else:
        cost = f"{money.format_amount(share.cost)} {known.unit(record.swarm)}"
        partly = f" (of {share.pledged} pledged)" if share.partly else ""
        got = f"you get {share.quantity}{unit}{partly} for {cost}"
    return f"{body.title} ({whose}, {pool.pledged} pledged) closed: {got} {ref}"


def _paid_for(trade: bytes, known: Known) -> str:
    """What a payment names: "proposal 1a2b3c4d5e6f (Garden help)" or "pool …"."""
    t = known.trades.get(trade)
    if t is not None:
        return f"proposal {short(trade)} ({known.titles(t.offers)})"
    return short(trade)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _loan_reminder(kind: str, trade: Trade | None, name: str, known: Known, pid: str) -> str:
    """ "Ladder you borrowed from Bob (x7k2q9) is due back 2026-12-03 (proposal …)"."""
    if trade is None or trade.lender is None or trade.due is None:
        return f"a loan with {name} is {'overdue' if kind == 'overdue' else 'due soon'} (proposal {pid})"
    lent = trade.give if trade.lender == trade.proposer else trade.take
    what = known.titles(lent)
    day = _iso(trade.due)[:10]  # type: ignore[index]
    if trade.lender == known.me:
        whose = f"your {what}, lent to {name},"
    else:
        whose = f"{what}, which you borrowed from {name},"
    when = f"was due back {day}: it is overdue" if kind == "overdue" else f"is due back {day}"
    return f"{whose} {when} (proposal {pid})"


def _ring_phrase(ring: rec.RingBody, known: Known) -> str:
    """ "you give Drill to Carol (q8h2c5), you get Ladder from Bob (k3d9x2)": my part in a ring."""
    n = len(ring.parties)
    if known.me not in ring.parties:
        return f"a ring of {n}"
    i = ring.parties.index(known.me)
    giver, taker = ring.parties[(i - 1) % n], ring.parties[(i + 1) % n]
    gives, gets = known.title(ring.offers[i]), known.title(ring.offers[(i - 1) % n])
    return f"you give {gives} to {known.name_of(taker)}, you get {gets} from {known.name_of(giver)}"


def _trade_phrase(trade: Trade, name: str, known: Known) -> str:
    """ "Bob (x7k2q9) offers Ladder for your Cordless drill": a proposal to the owner, from their side."""
    give, get = known.titles(trade.take), known.titles(trade.give)  # what I give, what I get
    if not give:
        return f"{name} gives you {get}"
    return f"{name} asks for your {give}" if not get else f"{name} offers {get} for your {give}"


def _terms(trade: Trade, known: Known) -> str:
    """The current terms from the owner's side: "your Ladder for their Cordless drill"."""
    mine, theirs = (trade.give, trade.take) if trade.proposer == known.me else (trade.take, trade.give)
    give, get = known.titles(mine), known.titles(theirs)
    if not get:
        return f"your {give}"
    return f"their {get}" if not give else f"your {give} for their {get}"
