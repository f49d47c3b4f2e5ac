"""Trade rings for the local API: suggest rings, propose one, show one, move on one.

:class:`RingService` composes an :class:`~meshnode.api.service.ApiService`
(its node, store reader, views, lock and helpers) and adds the ring
operations. It keeps no state of its own: the rings are derived on each
request (:func:`meshnode.ringtrade.derive_rings`, in a worker thread) from
the ``ring`` and ``ringmove`` records of the swarms this node is in.

* :meth:`RingService.suggest`: rings that include this node, found by
  :func:`meshnode.rings.find_rings` among the live offers and wants of each
  swarm (at most :data:`SEARCHED_ITEMS` of each kind per swarm, most trusted
  authors first) that no trade or ring holds or has given away, ranked by
  trust (:meth:`ApiService.views.trust`). Each has a ``suggestion`` id: a
  hash of its offers in giving order, so it names the same ring for as long
  as those offers form one.
* :meth:`RingService.propose`: publish a ``ring`` record for a suggestion
  (by its id or a unique prefix) or for 3 to 5 offers given in order (the
  author of each gives it to the author of the next; one is this node's).
* :meth:`RingService.show`, :meth:`RingService.mine`: a ring's state, who
  gives what to whom, who has accepted, completed or declined.
* :meth:`RingService.move`: accept, decline or complete, checked first
  (:func:`meshnode.ringtrade.check_move`): a refused move is never signed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshnode import records as rec
from meshnode import rings, ringtrade, views
from meshnode.api.service import PROPOSAL_DAYS, ApiService, _expires_at, _list_of_text, _text, iso
from meshnode.barter import OfferInfo, TradeBook
from meshnode.errors import BadValue, NotAllowed, NotFound
from meshnode.identity import peer_id_of
from meshnode.ids import short_id
from meshnode.ringtrade import RingBook, RingTrade
from meshnode.store import LiveItem

MAX_RING_DAYS = 90
DEFAULT_SUGGESTIONS = 10
MAX_SUGGESTIONS = 50
SEARCHED_ITEMS = 1000
SUGGESTION_ID_BYTES = 8
_SUGGESTION_DOMAIN = b"meshnode/ring-suggestion\x00"


def suggestion_id(offers: tuple[bytes, ...]) -> str:
    """The id of a suggested ring: a hash of its offers in giving order, from the smallest author's."""
    digest = hashlib.blake2b(_SUGGESTION_DOMAIN + b"".join(offers), digest_size=SUGGESTION_ID_BYTES)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Rings:
    """What one request reads: the ring book, the trade book, and what the offers named are."""

    book: RingBook
    trades: TradeBook
    offers: Mapping[bytes, OfferInfo]
    items: Mapping[bytes, LiveItem]

    @property
    def held(self) -> set[bytes]:
        """Offers no new ring can have: reserved or given away by a trade or a ring."""
        return set(self.trades.reserved) | self.trades.consumed | set(self.book.reserved) | self.book.consumed


class RingService:
    """The ring operations of the local API (see the module docstring)."""

    def __init__(self, api: ApiService) -> None:
        self.api = api

    # --- reading -------------------------------------------------------------------

    async def _rings(self) -> _Rings:
        api = self.api
        trades = await api.views.book()
        joined = api._joined()
        now = api.node.clock()

        def read() -> _Rings:
            book, offers = views.ring_book(api.reader, joined, now, trades.consumed)
            return _Rings(book, trades, offers, api.reader.items_by_id(set(offers)))

        result: _Rings = await api._read(read)
        return result

    async def _ring(self, text_id: object) -> tuple[RingTrade, _Rings]:
        rid = await self.api._read(views.parse_id, _text(text_id, "id", 64), self.api.reader)
        state = await self._rings()
        return state.book.ring(rid), state

    # --- suggestions -----------------------------------------------------------------

    async def suggest(
        self, limit: int = DEFAULT_SUGGESTIONS, swarm: str | None = None
    ) -> list[dict[str, Any]]:
        """Rings that include this node, best first (see the module docstring)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SUGGESTIONS:
            raise BadValue(f"limit: expected 1..{MAX_SUGGESTIONS}, found {limit!r}")
        api = self.api
        targets = [api.node.swarm(_text(swarm, "swarm", 40))] if swarm is not None else api.node.swarms()
        trust = await api.views.trust()
        state = await self._rings()
        held = state.held
        now = api.node.clock()
        open_rings = {
            frozenset(r.offers): r.ring_id for r in state.book.involving(api.me) if not r.is_terminal
        }
        out: list[dict[str, Any]] = []
        for target in targets:

            def search(swarm_id: bytes = target.id) -> tuple[list[rings.Ring], dict[bytes, LiveItem]]:
                found = {}
                for type_ in ("offer", "want"):
                    for it in api.reader.items(
                        type_,
                        swarm=swarm_id,
                        now_ms=now,
                        limit=SEARCHED_ITEMS,
                        trust=trust.ranking,
                        exclude=held if type_ == "offer" else (),
                    ):
                        found[it.id] = it
                offers = [it for it in found.values() if it.type == "offer"]
                wants = [it for it in found.values() if it.type == "want"]
                return rings.find_rings(offers, wants, me=api.me, trust=trust.score, limit=limit), found

            found, items = await api._read(search)
            for ring in found:
                offers = tuple(s.gives for s in ring.steps)
                out.append(
                    {
                        "suggestion": suggestion_id(offers),
                        "swarm": target.name,
                        "min_trust": round(ring.min_trust, 4),
                        "mean_trust": round(ring.mean_trust, 4),
                        "proposed": _hex(open_rings.get(frozenset(offers))),
                        "steps": [self._step_json(s, ring, items) for s in ring.steps],
                    }
                )
        out.sort(key=lambda s: (-s["min_trust"], -s["mean_trust"], len(s["steps"]), s["suggestion"]))
        return out[:limit]

    def _step_json(
        self, step: rings.RingStep, ring: rings.Ring, items: Mapping[bytes, LiveItem]
    ) -> dict[str, Any]:
        after = ring.participants[(ring.participants.index(step.author) + 1) % len(ring.steps)]
        return {
            "author": peer_id_of(step.author),
            "author_name": self.api.name_of(step.author),
            "gives": step.gives.hex(),
            "gives_title": _title(items, step.gives),
            "to_name": self.api.name_of(after),
            "gets_want": step.gets.hex(),
            "gets_want_title": _title(items, step.gets),
        }

    # --- proposing -------------------------------------------------------------------

    async def propose(
        self,
        suggestion: object = None,
        offers: object = None,
        note: object = "",
        expires_days: object = None,
    ) -> dict[str, Any]:
        """Publish a ring for a suggestion id, or for 3 to 5 offers in giving order; returns the ring."""
        if (suggestion is None) == (offers is None):
            raise BadValue(
                "give either a suggestion id (from 'meshnode rings') or the ring's offers in order"
            )
        api = self.api
        expires = _expires_at(
            PROPOSAL_DAYS if expires_days is None else expires_days, api.node.clock(), MAX_RING_DAYS
        )
        text_note = _text(note, "note", rec.MAX_NOTE)
        async with api._lock:
            if suggestion is not None:
                offer_texts = await self._suggested_offers(_text(suggestion, "suggestion", 64))
            else:
                offer_texts = _list_of_text(offers, "offers")
            n = len(offer_texts)
            if not rec.MIN_RING_PARTIES <= n <= rec.MAX_RING_PARTIES:
                raise BadValue(
                    f"offers: a ring has {rec.MIN_RING_PARTIES} to {rec.MAX_RING_PARTIES} offers"
                    f" (one per party, in giving order), found {n}"
                )
            items = [await api._item(text) for text in offer_texts]
            state = await self._rings()
            self._check_offers(items, state, api.node.clock())
            ids = tuple(it.id for it in items)
            for ring in state.book.involving(api.me):
                if not ring.is_terminal and set(ring.offers) == set(ids):
                    raise NotAllowed(
                        f"ring {short_id(ring.ring_id)} with these offers is already {ring.state}:"
                        f" see 'meshnode ring {ring.ring_id.hex()[:12]}'"
                    )
            body = rec.RingBody(
                parties=tuple(it.author for it in items), offers=ids, note=text_note, expires=expires
            )
            rec.check_body(body)
            record = await api.node.publish(body, api._swarm_of(items[0].swarm))
        trade, after = await self._ring(record.id.hex())
        return self._ring_json(trade, after)

    async def _suggested_offers(self, text: str) -> list[str]:
        wanted = text.strip().lower()
        if len(wanted) < 6:
            raise BadValue(
                f"suggestion: expected its id or a prefix of at least 6 hex digits, found {text!r}"
            )
        found = [s for s in await self.suggest(MAX_SUGGESTIONS) if s["suggestion"].startswith(wanted)]
        if not found:
            raise NotFound(f"no ring suggestion {text!r} now: see 'meshnode rings' (offers may have gone)")
        if len(found) > 1:
            raise BadValue(f"suggestion {text!r} is ambiguous: give more digits")
        return [step["gives"] for step in found[0]["steps"]]

    def _check_offers(self, items: list[LiveItem], state: _Rings, now: int) -> None:
        api = self.api
        held = state.held
        for it in items:
            name = short_id(it.id)
            if it.type != "offer":
                raise BadValue(f"{name} is a want, not an offer: a ring is made of offers")
            if not it.live(now):
                raise NotAllowed(f"offer {name} is withdrawn or expired")
            if it.id in held:
                raise NotAllowed(f"offer {name} is reserved or given away by another trade or ring")
            if it.swarm != items[0].swarm:
                raise BadValue(f"offer {name} is in another swarm than the first offer")
        authors = [it.author for it in items]
        if len(set(authors)) != len(authors):
            raise BadValue("each offer must be by another neighbour: a ring has each party once")
        if len({it.id for it in items}) != len(items):
            raise BadValue("the same offer appears twice")
        if api.me not in authors:
            raise NotAllowed("one of the offers must be yours: you can only propose a ring you are in")

    # --- showing and moving ----------------------------------------------------------

    async def show(self, text_id: object) -> dict[str, Any]:
        """One ring: its state, each party's offer and moves, whose move it is."""
        trade, state = await self._ring(text_id)
        return self._ring_json(trade, state)

    async def mine(self) -> list[dict[str, Any]]:
        """The rings this node is a party to, newest first."""
        state = await self._rings()
        return [self._ring_json(r, state) for r in reversed(state.book.involving(self.api.me))]

    async def move(self, text_id: object, action: object, note: object = "") -> dict[str, Any]:
        """Accept, decline or complete a ring (checked before anything is signed); returns the ring."""
        if action not in rec.RING_ACTIONS:
            raise BadValue(f"action: expected one of {list(rec.RING_ACTIONS)}, found {action!r}")
        api = self.api
        async with api._lock:
            trade, state = await self._ring(text_id)
            body = rec.RingMoveBody(
                ring=trade.ring_id, action=str(action), note=_text(note, "note", rec.MAX_NOTE)
            )
            ringtrade.check_move(
                trade,
                body,
                api.me,
                now_ms=api.node.clock(),
                offers=state.offers,
                reserved={**state.trades.reserved, **state.book.reserved},
                consumed=state.trades.consumed | state.book.consumed,
            )
            await api.node.publish(body, api._swarm_of(trade.swarm))
        after, now = await self._ring(trade.ring_id.hex())
        return self._ring_json(after, now)

    def _ring_json(self, ring: RingTrade, state: _Rings) -> dict[str, Any]:
        api = self.api
        parties = []
        for party in ring.parties:
            parties.append(
                {
                    "peer": peer_id_of(party),
                    "name": api.name_of(party),
                    "gives": ring.gives(party).hex(),
                    "gives_title": _title(state.items, ring.gives(party)),
                    "to_name": api.name_of(ring.next_party(party)),
                    "accepted": party in ring.accepted_by,
                    "completed": party in ring.completed_by,
                    "declined": party in ring.declined_by,
                }
            )
        return {
            "id": ring.ring_id.hex(),
            "state": ring.state,
            "proposer": peer_id_of(ring.proposer),
            "proposer_name": api.name_of(ring.proposer),
            "note": ring.note,
            "created": iso(ring.created_ts),
            "expires": iso(ring.expires),
            "closed_because": ring.closed_because,
            "parties": parties,
            "waiting_for": [api.name_of(p) for p in ring.waiting_for()],
            "you_can": sorted(ring.allowed_actions(api.me)),
        }


def _title(items: Mapping[bytes, LiveItem], oid: bytes) -> str:
    item = items.get(oid)
    return item.title if item is not None else f"(unknown {short_id(oid)})"


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()
