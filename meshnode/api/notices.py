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
from dataclasses import dataclass
from typing import Any

from meshnode import records as rec
from meshnode.barter import Trade
from meshnode.identity import peer_id_of
from meshnode.ids import short_id
from meshnode.store import LiveItem
from meshnode.store.inbox import StoredNotice

_DONE = {
    "accept": "accepted",
    "counter": "countered",
    "decline": "declined",
    "cancel": "cancelled",
    "complete": "completed their side of",
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

    def title(self, item_id: bytes) -> str:
        item = self.items.get(item_id)
        return item.title if item is not None else short_id(item_id)

    def titles(self, ids: tuple[bytes, ...]) -> str:
        return ", ".join(self.title(i) for i in ids)


def notice_json(stored: StoredNotice, known: Known) -> dict[str, Any] | None:
    """The notice as JSON, or None if what it names is gone (pruned or evicted since)."""
    n = stored.notice
    record = known.records.get(n.record)
    if record is None:
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
        phrase = _trade_phrase(trade, name, known) if trade is not None else f"trade {short_id(n.about)}"
        if n.kind == "proposal":
            out["text"] = f"{phrase} (proposal {short_id(n.about)})"
        else:
            action = getattr(record.body, "action", "")
            out["text"] = f"{name} {_DONE.get(action, action)} proposal {short_id(n.about)}: {phrase}"
            out["action"] = action
        if trade is not None:
            out["state"] = trade.state
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
    else:  # offer from someone trusted
        out["text"] = f"{name} (trust {known.trust(n.peer):.2f}) offers {known.title(n.record)}"
        out["item"] = n.record.hex()
    return out


def _trade_phrase(trade: Trade, name: str, known: Known) -> str:
    """ "Bob offers Ladder for your Cordless drill" (or "you offer …"), from the owner's side."""
    if trade.proposer == known.me:
        give, get = known.titles(trade.give), known.titles(trade.take)
        who = "you"
        if not get:
            return f"you give {give}"
        return f"you ask for {get}" if not give else f"you offer {give} for {get}"
    give, get = known.titles(trade.take), known.titles(trade.give)  # what I give, what I get
    who = name
    if not give:
        return f"{who} gives you {get}"
    return f"{who} asks for your {give}" if not get else f"{who} offers {get} for your {give}"
