"""What the local API can do, independent of HTTP.

Each method takes plain values (already parsed from a request), checks them,
acts through the node, and returns JSON-ready data. Every refusal is a
:class:`~meshnode.errors.MeshError` raised *before* anything is signed,
stored or sent, so a refused request changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from meshnode import barter, money, sealing, views
from meshnode import records as rec
from meshnode.api.autoreply import AutoReplier
from meshnode.api.feed import InboxFeed
from meshnode.api.ledgerservice import LedgerService, LedgerWatcher
from meshnode.api.notices import Known, notice_json
from meshnode.api.peoplebook import PeopleBook
from meshnode.barter import TradeBook
from meshnode.errors import BadValue, MeshError, NotAllowed, NotFound
from meshnode.home import Home, save_swarms
from meshnode.identity import key_of_peer_id, peer_id_of
from meshnode.ids import short_id
from meshnode.lifetime import MAX_ITEM_DAYS
from meshnode.node import Node
from meshnode.people import MAX_PETNAME, check_bio, check_nickname
from meshnode.pools import Pool
from meshnode.rules import Rules, describe_rules
from meshnode.store import LiveItem
from meshnode.store.inbox import StoredNotice
from meshnode.swarm import Swarm
from meshnode.trust import Attestation, TrustEdge

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
MAX_EXPIRES_DAYS = MAX_ITEM_DAYS  # every item expires within its lifetime (meshnode.lifetime)
DEFAULT_VOUCH = 0.8
DEFAULT_TRUSTED = 20  # how many peers 'trusted' lists unless told
MAX_TRUSTED = 1000
PROPOSAL_DAYS = 14  # a proposal nobody accepts closes (expired) after this many days
MAX_PROPOSAL_DAYS = 90
DEFAULT_INBOX = 100  # notices 'inbox' shows at once
MAX_INBOX = 1000
REMIND_EVERY_S = 60  # how often the loan reminders are looked for (a due date is noticed this late at most)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Held:
    """What trades and rings hold at one moment: the trade ``book``, every reservation, what is given away."""

    book: TradeBook
    reserved: Mapping[bytes, bytes]  # offer id -> the accepted trade or ring holding it
    consumed: frozenset[bytes]


class ApiService:
    """The daemon's operations, as the local API exposes them."""

    def __init__(
        self, node: Node, home: Home, *, request_stop: Callable[[], None], rules: Rules | None = None
    ) -> None:
        self.node = node
        self.home = home
        self.reader = node.store.open_reader()  # reads never wait behind a write batch
        self._request_stop = request_stop
        self._lock = trio.Lock()  # one state-changing request at a time
        # Who is who: profiles from stored records, petnames and the own profile from people.cbor.
        self.people = PeopleBook(self.reader, home.people, self.me)
        self.people.attach(node)
        # Trades and trust, derived in the background and kept until records change them.
        self._views_reader = node.store.open_reader()
        self.views = views.ViewCache(self._views_reader, self.me, node.clock)
        node.ingest.on_stored.append(self.views.on_stored)
        node.on_removed.append(self.views.invalidate)
        # The owner's notices (inbox, watch), found as records are stored.
        self._feed_reader = node.store.open_reader()
        self.feed = InboxFeed(
            node.store, self._feed_reader, self.me, clock=node.clock, trust=self._trust_scores
        )
        node.ingest.on_stored.append(self.feed.on_stored)
        self.inbox = InboxView(self)
        self._moved = trio.Event()  # set when a reply is stored: look at the loan reminders again
        node.ingest.on_stored.append(self._on_stored_move)
        self._pooled = trio.Event()  # set when a pool, pledge or pool move is stored: look at the pools
        node.ingest.on_stored.append(self._on_stored_pool)
        # Answering while away: replies by the owner's [rules] (config.toml).
        self.autoreplier = AutoReplier(self, rules if rules is not None else Rules())
        node.ingest.on_stored.append(self.autoreplier.on_stored)
        # The web page, once the daemon serves it (meshnode.web.server.WebServer).
        self.web: Any = None
        # Mutual credit: fork and to-pay notices, missing links fetched (meshnode.api.ledgerservice).
        self.ledger_watcher = LedgerWatcher(self)
        node.ingest.on_stored.append(self.ledger_watcher.on_stored)
        node.on_removed.append(self.ledger_watcher.on_removed)

    def close(self) -> None:
        self.people.detach(self.node)
        if self.views.on_stored in self.node.ingest.on_stored:
            self.node.ingest.on_stored.remove(self.views.on_stored)
        if self.views.invalidate in self.node.on_removed:
            self.node.on_removed.remove(self.views.invalidate)
        if self.feed.on_stored in self.node.ingest.on_stored:
            self.node.ingest.on_stored.remove(self.feed.on_stored)
        if self._on_stored_move in self.node.ingest.on_stored:
            self.node.ingest.on_stored.remove(self._on_stored_move)
        if self._on_stored_pool in self.node.ingest.on_stored:
            self.node.ingest.on_stored.remove(self._on_stored_pool)
        if self.autoreplier.on_stored in self.node.ingest.on_stored:
            self.node.ingest.on_stored.remove(self.autoreplier.on_stored)
        if self.ledger_watcher.on_stored in self.node.ingest.on_stored:
            self.node.ingest.on_stored.remove(self.ledger_watcher.on_stored)
        if self.ledger_watcher.on_removed in self.node.on_removed:
            self.node.on_removed.remove(self.ledger_watcher.on_removed)
        self._feed_reader.close()
        self._views_reader.close()
        self.reader.close()

    async def _trust_scores(self) -> Callable[[bytes], float]:
        return (await self.views.trust()).score

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The background work (the inbox feed, loan reminders) until cancelled; start it in a nursery."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.feed.run)
            nursery.start_soon(self._remind_loans)
            nursery.start_soon(self._remind_pools)
            await nursery.start(self.autoreplier.run)
            await nursery.start(self.ledger_watcher.run)
            task_status.started()

    async def _remind_loans(self) -> None:
        """Put the reminders of loans due soon or overdue in the inbox: at start, on a move, every minute."""
        while True:
            self._moved = trio.Event()
            try:
                await self.feed.remind((await self._book()).trades.values())
            except MeshError as exc:  # a store error must not stop the reminders
                log.warning("loan reminders failed: %s", exc)
            with trio.move_on_after(REMIND_EVERY_S):
                await self._moved.wait()

    def _on_stored_move(self, record: rec.Record) -> None:
        """A reply was stored (an ingest listener): a loan may have been handed over or extended."""
        if record.type == "reply":
            self._moved.set()

    async def _remind_pools(self) -> None:
        """Keep the pool notices (reached, closed): at start, on a pool record, when a pool closes."""
        from meshnode.api.poolservice import GAP_S as POOL_GAP_S
        from meshnode.api.poolservice import REMIND_EVERY_S as POOL_EVERY_S
        from meshnode.api.poolservice import PoolService

        while True:
            self._pooled = trio.Event()
            wait = POOL_EVERY_S
            try:
                wait = await PoolService(self).remind()
            except MeshError as exc:  # a store error must not stop the reminders
                log.warning("pool reminders failed: %s", exc)
            with trio.move_on_after(wait):
                await self._pooled.wait()
            if self._pooled.is_set():
                await trio.sleep(POOL_GAP_S)  # a burst of pledges is one look, not one each

    def _on_stored_pool(self, record: rec.Record) -> None:
        """A pool, pledge or pool move was stored (an ingest listener): look at the pools again."""
        if record.type in ("pool", "pledge", "poolmove"):
            self._pooled.set()

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args)

    @property
    def me(self) -> bytes:
        return self.node.identity.public_key

    def name_of(self, key: bytes) -> str:
        """How this node names the person ``key`` wherever one appears: "you" for itself.

        Every JSON object that carries a peer id in a field ``X`` carries this
        label in ``X_name`` too (the CLI prints the label; scripts keep the id).
        Then a petname you gave, else a claimed nickname with the short id
        (``"Bob (x7k2q9)"``), else the short id (see :mod:`meshnode.people`).
        """
        return self.people.label(key)

    def _peer_named(self, text: object) -> bytes:
        """The key a PEER argument names: a peer id, hex key, petname, nickname or short id."""
        known = []
        for pid in self.node.connected_peers():
            try:
                known.append(key_of_peer_id(pid))
            except BadValue:
                continue
        return self.people.resolve(_text(text, "peer", 100), known)

    def _name_of_peer_id(self, peer_id: str) -> str:
        """:meth:`name_of` for a libp2p peer id (the id itself if it holds no Ed25519 key)."""
        try:
            return self.name_of(key_of_peer_id(peer_id))
        except BadValue:
            return peer_id

    # --- people ---------------------------------------------------------------

    async def profile(self, peer: str | None = None) -> dict[str, Any]:
        """A person's profile as this node knows it (yours by default) and your petname for them."""
        key = self.me if peer is None else self._peer_named(peer)
        if key == self.me:
            nickname, bio = self.people.own.nickname, self.people.own.bio
        else:
            p = self.people.profiles.get(key)
            nickname, bio = (p.nickname, p.bio) if p is not None else ("", "")
        return {
            "peer": peer_id_of(key),
            "peer_name": self.name_of(key),
            "nickname": nickname,
            "bio": bio,
            "petname": self.people.petnames.get(key),
            "mine": key == self.me,
        }

    async def profile_set(self, nickname: object = None, bio: object = None) -> dict[str, Any]:
        """Change your nickname and/or bio and publish the profile into every joined swarm."""
        if nickname is None and bio is None:
            raise BadValue("say what to change: --nickname NAME and/or --bio TEXT")
        nick = check_nickname(nickname) if nickname is not None else None
        text = check_bio(bio) if bio is not None else None
        async with self._lock:
            await trio.to_thread.run_sync(lambda: self.people.set_own(nickname=nick, bio=text))
            published = await self.publish_own_profile()
        return await self.profile() | {"published": published}

    async def publish_own_profile(self, swarms: list[Swarm] | None = None) -> list[str]:
        """Publish the own profile into ``swarms`` (default: all) where this node's latest differs."""
        own = self.people.own
        if not own.nickname and not own.bio:
            return []
        published = []
        joined = self.node.swarm_ids()
        for swarm in swarms if swarms is not None else self.node.swarms():
            if swarm.id not in joined:
                continue
            if await self._read(self.people.own_latest, swarm.id) == own:
                continue
            await self.node.publish(own, swarm)
            published.append(swarm.name)
        return published

    async def name_peer(self, peer: object, name: object) -> dict[str, Any]:
        """Give ``peer`` a petname on this node only (empty ``name``: remove it)."""
        key = self._peer_named(peer)
        if key == self.me:
            raise NotAllowed("you cannot name yourself: set your nickname with 'meshnode profile set'")
        text = _text(name, "name", MAX_PETNAME + 100)
        async with self._lock:
            await trio.to_thread.run_sync(self.people.set_petname, key, text)
        return await self.profile(peer_id_of(key))

    # --- node -----------------------------------------------------------------

    async def identity(self) -> dict[str, Any]:
        return {"peer_id": self.node.peer_id, "addrs": self.node.addrs()}

    async def status(self) -> dict[str, Any]:
        count = await self._read(self.reader.count)
        return {
            "peer_id": self.node.peer_id,
            "addrs": self.node.addrs(),
            "reachability": self.node.reachability(),
            "swarms": [s.name for s in self.node.swarms()],
            "networks": self.node.network_status(),
            "peers": len(self.node.connected_peers()),
            "records": count,
            "storage": await trio.to_thread.run_sync(self.node.storage),
            "ingest": dict(vars(self.node.ingest.stats)),
            "gossip": self.node.gossip_stats(),
            "sync": self.node.sync_stats(),
            "px": self.node.px_stats(),
        }

    async def peers(self) -> list[dict[str, Any]]:
        rows = self.node.peer_details()
        for row in rows:
            row["name"] = self._name_of_peer_id(row["peer_id"])
            row["since"] = iso(int(row["since"] * 1000)) if row["since"] is not None else None
        return rows

    async def known_peers(self) -> list[dict[str, Any]]:
        rows = self.node.known_peers()
        for row in rows:
            row["last_seen"] = iso(row["last_seen"])
            row["next_try"] = iso(row["next_try"]) if row["next_try"] else None
        return rows

    async def connect(self, addr: object, swarm: str | None = None) -> dict[str, Any]:
        target = self.node.swarm(_text(swarm, "swarm", 40)) if swarm is not None else None
        pid = await self.node.connect(_text(addr, "addr", 400), swarm=target)
        return {"peer_id": pid, "connected": True}

    async def stop(self) -> dict[str, Any]:
        self._request_stop()
        return {"stopping": True}

    # --- swarms ---------------------------------------------------------------

    def _swarm_json(self, s: Swarm) -> dict[str, Any]:
        return {"name": s.name, "id": s.id.hex(), "private": s.private}

    async def swarms(self) -> list[dict[str, Any]]:
        return [self._swarm_json(s) for s in self.node.swarms()]

    async def swarm_create(self, name: object, private: bool) -> dict[str, Any]:
        async with self._lock:
            swarm = Swarm.create(_text(name, "name", 40), private=bool(private))
            await self.node.join_swarm(swarm)
            await self._save_swarms()
            await self.publish_own_profile([swarm])
        return self._swarm_json(swarm)

    async def swarm_invite(self, name: str) -> dict[str, Any]:
        return {"code": await self.node.invite(self.node.swarm(name))}

    async def swarm_join(self, code: object) -> dict[str, Any]:
        from meshnode.errors import NetworkError
        from meshnode.swarm import decode_invite

        text = _text(code, "code", 4096)
        invite = decode_invite(text)
        async with self._lock:
            connected, warning = True, None
            try:
                swarm = await self.node.join_invite(text)
            except NetworkError as exc:
                swarm, connected, warning = invite.swarm, False, str(exc)
            await self._save_swarms()
            await self.publish_own_profile([swarm])
        out = self._swarm_json(swarm) | {"connected": connected}
        if warning:
            out["warning"] = warning
        return out

    async def swarm_leave(self, name: str) -> dict[str, Any]:
        async with self._lock:
            swarm = self.node.swarm(name)
            await self.node.leave_swarm(swarm)
            await self._save_swarms()
        return {"left": swarm.name}

    async def _save_swarms(self) -> None:
        await trio.to_thread.run_sync(save_swarms, self.home, self.node.swarms())

    def _pick_swarm(self, name: str | None) -> Swarm:
        if name:
            return self.node.swarm(name)
        swarms = self.node.swarms()
        if not swarms:
            raise NotFound(
                "this node is in no swarm yet: 'meshnode swarm create NAME' or 'meshnode swarm join CODE'"
            )
        if len(swarms) > 1:
            raise BadValue(f"this node is in {len(swarms)} swarms: say which with --swarm NAME")
        return swarms[0]

    # --- offers and wants -----------------------------------------------------

    async def item_add(
        self,
        type_: str,
        *,
        title: object,
        kind: str = "give",
        tags: list[str] | None = None,
        desc: str = "",
        expires_days: float | None = None,
        where: str = "",
        swarm: str | None = None,
        max_days: object = None,
        deposit: object = "",
        price: object = None,
    ) -> dict[str, Any]:
        target = self._pick_swarm(swarm)
        now = self.node.clock()
        expires = None if expires_days is None else _expires_at(expires_days, now, MAX_EXPIRES_DAYS)
        cls = rec.OfferBody if type_ == "offer" else rec.WantBody
        terms = _lend_terms(kind, max_days, deposit)
        body = cls(
            title=_text(title, "title", rec.MAX_TITLE).strip(),
            kind=_text(kind, "kind", 10),
            desc=_text(desc, "desc", rec.MAX_DESC),
            tags=rec.normalize_tags(_list_of_text(tags or [], "tags")),
            where=_text(where, "where", rec.MAX_GEOHASH).strip().lower(),
            expires=expires,
            terms=terms,
            price=_price(kind, price),
        )
        rec.check_body(body)
        record = await self.node.publish(body, target)
        return {"id": record.id.hex()}

    async def items(
        self,
        type_: str,
        *,
        mine: bool = False,
        kind: str | None = None,
        tag: str | None = None,
        query: str | None = None,
        limit: int = 100,
        swarm: str | None = None,
        near: str | None = None,
        km: float | None = None,
        all_: bool = False,
    ) -> list[dict[str, Any]]:
        """Live items, most trusted first; ``swarm`` a swarm's name, ``near``/``km`` a place (Store.items).

        Only available ones (not reserved by an accepted trade, not given away,
        not withdrawn) unless ``all_``; each says its ``state`` and ``swarm``.
        """
        now = self.node.clock()
        swarm_id = self.node.swarm(_text(swarm, "swarm", 40)).id if swarm is not None else None
        if kind is not None and kind not in rec.ITEM_KINDS:
            raise BadValue(f"kind: expected one of {list(rec.ITEM_KINDS)}, found {kind!r}")
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise BadValue("limit: expected 1..1000")
        trust = await self.views.trust()
        book = await self.views.book()
        held = await self._held(book)
        unavailable = set(held.reserved) | held.consumed if type_ == "offer" and not all_ else set()
        # Ranked by trust in the author inside the query, before its limit.
        found: list[LiveItem] = await self._read(
            lambda: self.reader.items(
                type_,
                include_withdrawn=bool(all_),
                exclude=unavailable,
                query=query or None,
                kind=kind,
                tag=tag.strip().lower() if tag else None,
                author=self.me if mine else None,
                now_ms=now,
                limit=limit,
                trust=trust.ranking,
                swarm=swarm_id,
                near=near,
                km=km,
                swarms=self._joined(),
            )
        )
        return [self._item_json(it, trust.score(it.author)) | self._where_and_state(it, held) for it in found]

    async def _held(self, book: TradeBook) -> Held:
        """What trades and rings hold: reserved (offer id -> the trade or ring) and given away."""
        reserved, given = await self.views.ring_holds()  # derived with the trades, not per request
        return Held(book, {**reserved, **book.reserved}, book.consumed | given)

    def _where_and_state(self, it: LiveItem, held: Held) -> dict[str, Any]:
        """An item's swarm (by name) and whether it can be had: available, reserved, given or withdrawn."""
        if it.withdrawn:
            state = "withdrawn"
        elif it.id in held.consumed:
            state = "given"
        elif it.id in held.reserved:
            holder = held.book.trades.get(held.reserved[it.id])
            state = "lent out" if holder is not None and holder.state in barter.LOAN_STATES else "reserved"
        else:
            state = "available"
        names = {s.id: s.name for s in self.node.swarms()}
        return {"state": state, "swarm": names.get(it.swarm)}

    def _item_json(self, it: LiveItem, trust: float, *, full: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": it.id.hex(),
            "title": it.title,
            "kind": it.kind,
            "tags": list(it.tags),
            "author": peer_id_of(it.author),
            "author_name": self.name_of(it.author),
            "trust": round(trust, 4),
            "expires": iso(it.expires),
        }
        if it.terms is not None:
            out["terms"] = {"max_days": it.terms.max_days, "deposit": it.terms.deposit}
        if it.price is not None:
            out["price"] = money.format_amount(it.price)
        if full:
            out |= {
                "type": it.type,
                "desc": it.desc,
                "where": it.where,
                "created": iso(it.created_ts),
                "updated": iso(it.updated_ts),
                "withdrawn": it.withdrawn,
                "mine": it.author == self.me,
            }
        return out

    async def item_show(self, text_id: str) -> dict[str, Any]:
        item = await self._item(text_id)
        trust = await self.views.trust()
        held = await self._held(await self.views.book())
        out = self._item_json(item, trust.score(item.author), full=True) | self._where_and_state(item, held)
        if item.price is not None:
            out["price_unit"] = (await LedgerService(self).currency(item.swarm)).unit
        return out

    async def _item(self, text_id: object) -> LiveItem:
        rid = await self._read(views.parse_id, _text(text_id, "id", 64), self.reader)
        item = await self._read(self.reader.item, rid)
        if item is None:
            raise NotFound(f"{text_id} is not an offer or want: see 'meshnode offer list'")
        if item.swarm not in self._joined():
            raise NotFound(f"{text_id} is in a swarm this node has left: join it again to see it")
        return item

    def _joined(self) -> set[bytes]:
        """The ids of the swarms this node is in: records of a swarm it left are hidden (and kept)."""
        return {s.id for s in self.node.swarms()}

    async def item_withdraw(self, text_id: str) -> dict[str, Any]:
        item = await self._item(text_id)
        if item.author != self.me:
            raise NotAllowed("only its author can withdraw an offer or want; this one is someone else's")
        if item.withdrawn:
            raise BadValue(f"{short_id(item.id)} is already withdrawn")
        swarm = self._swarm_of(item.swarm)
        record = await self.node.publish(rec.WithdrawBody(target=item.id), swarm)
        return {"id": record.id.hex(), "withdrawn": item.id.hex()}

    async def item_edit(
        self,
        type_: str,
        text_id: object,
        *,
        title: object = None,
        kind: object = None,
        desc: object = None,
        tags: object = None,
        where: object = None,
        expires_days: object = None,
        price: object = None,
    ) -> dict[str, Any]:
        """Publish an update of one of your live offers or wants: the fields given replace theirs.

        ``expires_days`` counts from now. Nothing given: :class:`BadValue`;
        someone else's item, or one withdrawn: :class:`NotAllowed`.
        """
        fields = (title, kind, desc, tags, where, expires_days, price)
        if all(f is None for f in fields):
            raise BadValue(
                "nothing to change: give --title, --desc, --tags, --kind, --where, --expires or --price"
            )
        async with self._lock:
            item = await self._item(text_id)
            if item.type != type_:
                raise BadValue(f"{short_id(item.id)} is a {item.type}, not a {type_}")
            if item.author != self.me:
                raise NotAllowed("only its author can edit an offer or want; this one is someone else's")
            if item.withdrawn:
                raise NotAllowed(f"{short_id(item.id)} is withdrawn: it cannot be edited")
            now = self.node.clock()
            expires = item.expires
            if expires_days is not None:
                expires = _expires_at(expires_days, now, MAX_EXPIRES_DAYS)
            original = await self._read(self.reader.get, item.id)
            new_kind = item.kind if kind is None else _text(kind, "kind", 10)
            if price is None:
                new_price = item.price if new_kind in rec.PRICED_KINDS else None
            else:
                new_price = _price(new_kind, price, zero=True)
            body = rec.ItemBody(
                title=item.title if title is None else _text(title, "title", rec.MAX_TITLE).strip(),
                kind=new_kind,
                desc=item.desc if desc is None else _text(desc, "desc", rec.MAX_DESC),
                tags=item.tags if tags is None else rec.normalize_tags(_list_of_text(tags, "tags")),
                where=item.where if where is None else _text(where, "where", rec.MAX_GEOHASH).strip().lower(),
                quantity=getattr(original.body, "quantity", None) if original is not None else None,
                terms=getattr(original.body, "terms", None) if original is not None else None,
                expires=expires,
                price=new_price,
            )
            update = rec.UpdateBody(target=item.id, item=body)
            rec.check_body(update)
            record = await self.node.publish(update, self._swarm_of(item.swarm))
        return {"id": record.id.hex(), "updated": item.id.hex()}

    def _swarm_of(self, swarm_id: bytes) -> Swarm:
        for s in self.node.swarms():
            if s.id == swarm_id:
                return s
        raise NotAllowed("that record belongs to a swarm this node has left")

    # --- barter -----------------------------------------------------------------

    async def _book(self) -> TradeBook:
        return await self.views.book()

    async def propose(
        self,
        offer_id: object,
        give: list[str],
        note: str = "",
        expires_days: object = None,
        private: object = "",
    ) -> dict[str, Any]:
        """Propose a trade for a neighbour's offer; it expires unless accepted in time.

        ``expires_days``: default :data:`PROPOSAL_DAYS`, at most :data:`MAX_PROPOSAL_DAYS`.
        """
        days = PROPOSAL_DAYS if expires_days is None else expires_days
        expires = _expires_at(days, self.node.clock(), MAX_PROPOSAL_DAYS)
        async with self._lock:
            wanted = await self._item(offer_id)
            now = self.node.clock()
            if wanted.type != "offer":
                raise BadValue(f"{offer_id} is a want, not an offer: propose for an offer")
            if wanted.author == self.me:
                raise NotAllowed("that offer is your own: propose for a neighbour's offer")
            if not wanted.live(now):
                raise NotAllowed(f"offer {short_id(wanted.id)} is withdrawn or expired")
            mine = []
            for text in _list_of_text(give, "give"):
                item = await self._item(text)
                if item.author != self.me or item.type != "offer":
                    raise NotAllowed(f"--give {text}: you can only give your own offers")
                if not item.live(now):
                    raise NotAllowed(f"--give {text}: that offer is withdrawn or expired")
                if item.swarm != wanted.swarm:
                    raise BadValue(f"--give {text}: that offer is in another swarm")
                mine.append(item.id)
            book = await self._book()
            for trade in book.involving(self.me):
                if trade.proposer == self.me and wanted.id in trade.offers and not trade.is_terminal:
                    raise NotAllowed(
                        f"you already have an open proposal {short_id(trade.proposal_id)} for offer"
                        f" {short_id(wanted.id)} ({trade.state}): see 'meshnode proposals',"
                        " or cancel it first"
                    )
            swarm = self._swarm_of(wanted.swarm)
            body = rec.ProposalBody(
                to=wanted.author,
                give=tuple(mine),
                take=(wanted.id,),
                note=_text(note, "note", rec.MAX_NOTE),
                expires=expires,
                private=self._sealed(private, wanted.author, sealing.proposal_context(swarm.id)),
            )
            record = await self.node.publish(body, swarm)
        return {"id": record.id.hex()}

    async def proposals(self) -> list[dict[str, Any]]:
        """My trades, newest first, as I see them: with whom, what I give and get, whose move, the note."""
        book = await self._book()
        joined = self._joined()
        trades = sorted((t for t in book.involving(self.me) if t.swarm in joined), key=_newest_first)
        named = {oid for t in trades for oid in t.offers}

        def read() -> tuple[dict[bytes, LiveItem], dict[bytes, str]]:
            items = self.reader.items_by_id(named)
            notes = {}
            for t in trades:
                latest = self.reader.get(t.latest_move)
                notes[t.proposal_id] = getattr(latest.body, "note", "") if latest is not None else ""
            return items, notes

        items, notes = await self._read(read)
        return [self._trade_json(t) | self._as_seen(t, items, notes[t.proposal_id]) for t in trades]

    async def loans(self, all_: bool = False) -> list[dict[str, Any]]:
        """What I lent and borrowed: loans out (handed over, overdue) and accepted ones not yet handed over.

        Soonest due first; ``all_`` adds the returned ones (newest first, after them).
        """
        book = await self._book()
        joined = self._joined()
        mine = [t for t in book.involving(self.me) if t.swarm in joined]
        accepted = [t for t in mine if t.state == barter.ACCEPTED and not t.completed_by]
        infos = await self._read(views.offer_infos, self.reader, {o for t in accepted for o in t.offers})
        lenders = {t.proposal_id: barter.lender_of(t, infos) for t in accepted}
        out_now = [t for t in mine if t.state in barter.LOAN_STATES]
        waiting = [t for t in accepted if lenders[t.proposal_id] is not None]
        returned = [t for t in mine if t.state == barter.RETURNED] if all_ else []
        out_now.sort(key=lambda t: (t.due or 0, t.proposal_id))
        returned.sort(key=_newest_first)
        trades = out_now + waiting + returned
        items = await self._read(self.reader.items_by_id, {o for t in trades for o in t.offers})
        now = self.node.clock()
        rows = []
        for t in trades:
            lender = t.lender if t.lender is not None else lenders.get(t.proposal_id)
            assert lender is not None
            lent = t.give if lender == t.proposer else t.take
            row = self._trade_json(t) | {
                "role": "lent" if lender == self.me else "borrowed",
                "with": peer_id_of(t.other(self.me)),
                "with_name": self.name_of(t.other(self.me)),
                "items": [_title(items, o) for o in lent],
                "handed_over": iso(t.handed_over_ts),
                "days_overdue": (now - t.due) // DAY_MS if t.state == barter.OVERDUE and t.due else None,
            }
            rows.append(row)
        return rows

    async def proposal(self, text_id: object) -> dict[str, Any]:
        """One of my trades with its whole history, as :meth:`proposals` shows it plus ``moves``.

        ``moves``: the proposal, then each applied reply, in chain order:
        ``who``/``who_name``, ``action`` (``propose`` first), ``you_give``/
        ``you_get`` (titles; for the proposal and counters, else None),
        ``note``, ``date``. ``not_counted``: the other replies to it this node
        holds (forks lost, refused or waiting moves), each with ``why``.
        """
        pid = await self._read(views.parse_id, _text(text_id, "id", 64), self.reader)
        book = await self._book()
        t = views.find_trade(book, pid)
        if t.swarm not in self._joined():
            raise NotFound(f"proposal {short_id(pid)} is in a swarm you left: join it again to see it")
        if t.role(self.me) is None:
            raise NotAllowed(f"proposal {short_id(pid)} is between two neighbours: you are no party to it")
        applied = set(t.applied)

        def read() -> tuple[list[Any], list[Any], dict[bytes, LiveItem]]:
            moves = [self.reader.get(rid) for rid in (pid, *t.applied)]
            others = [
                r
                for r in self.reader.records_of_type("reply", swarm=t.swarm or None)
                if r.body.proposal == pid and r.id not in applied
            ]
            named = {oid for r in (*moves, *others) if r is not None for oid in (*r.body.give, *r.body.take)}
            return moves, others, self.reader.items_by_id(named | set(t.offers))

        moves, others, items = await self._read(read)
        history = [self._move_json(r, items, t) for r in moves if r is not None]
        not_counted = [
            self._move_json(r, items, t)
            | {"why": book.refused.get(r.id, "waiting for the move it answers, not yet on this node")}
            for r in others
        ]
        note = history[-1]["note"] if history else ""
        seen = self._trade_json(t) | self._as_seen(t, items, note)
        return seen | {"moves": history, "not_counted": not_counted}

    def _move_json(self, r: Any, items: dict[bytes, LiveItem], trade: Any) -> dict[str, Any]:
        """One move of a trade (a proposal or a reply record), its terms by title from this node's side."""
        action = "propose" if r.type == "proposal" else r.body.action
        gives, gets = r.body.give, r.body.take  # what the mover gives and gets
        if r.author != self.me:
            gives, gets = gets, gives
        stated = action in ("propose", "counter")
        return {
            "id": r.id.hex(),
            "who": peer_id_of(r.author),
            "who_name": self.name_of(r.author),
            "action": action,
            "you_give": [_title(items, i) for i in gives] if stated else None,
            "you_get": [_title(items, i) for i in gets] if stated else None,
            "note": r.body.note,
            "date": iso(r.ts),
            "until": iso(getattr(r.body, "until", None)),  # an extend's new due date
        } | self._private_json(r, trade)

    def _sealed(self, text: object, other: bytes, context: bytes) -> bytes:
        """``text`` sealed so that only this node and ``other`` can read it (empty: no private part)."""
        plain = _text(text, "private", sealing.MAX_TEXT)
        if not plain:
            return b""
        if other == self.me:
            raise NotAllowed("only a party to the trade can add a private part")
        return sealing.seal(plain, sender=self.node.identity, recipient=other, context=context)

    def _private_json(self, r: rec.Record, trade: Any) -> dict[str, Any]:
        """``{"private": text}`` for a move of ``trade`` with a private part (None: unreadable here)."""
        blob = getattr(r.body, "private", b"")
        if not blob:
            return {}
        if isinstance(r.body, rec.ProposalBody):
            context = sealing.proposal_context(r.swarm)
        else:
            context = sealing.reply_context(trade.proposal_id)
        other = r.author if r.author != self.me else trade.other(self.me)
        try:
            text = sealing.open_sealed(
                blob, me=self.node.identity, other=other, author=r.author, context=context
            )
        except MeshError:
            return {"private": None}  # not for this node, or damaged: shown as unreadable
        return {"private": text}

    def _as_seen(self, t: Any, items: dict[bytes, LiveItem], note: str) -> dict[str, Any]:
        """A trade from this node's side: the other party, titles given and got, whose move.

        An ``unavailable`` trade also says why it closed (``closed_because``:
        which offer, withdrawn or given away; the field is there only then).
        """
        mine, theirs = (t.give, t.take) if t.proposer == self.me else (t.take, t.give)
        waiting: bytes | None = t.awaiting()
        if t.state == "accepted":
            waiting = self.me if self.me not in t.completed_by else t.other(self.me)
        elif t.state in barter.LOAN_STATES:
            waiting = t.lender  # only the lender moves: extend, or say it is back

        def titles(ids: tuple[bytes, ...]) -> list[str]:
            return [items[i].title if i in items else short_id(i) for i in ids]

        closed: dict[str, Any] = {}
        gone = getattr(t, "unavailable_offer", None)
        if gone is not None:
            withdrawn = gone in items and items[gone].withdrawn
            how = "was withdrawn" if withdrawn else "was given away in another trade"
            closed["closed_because"] = f"{_title(items, gone)} {how}"

        return closed | {
            "with": peer_id_of(t.other(self.me)),
            "with_name": self.name_of(t.other(self.me)),
            "proposed_by": "you" if t.proposer == self.me else "them",
            "you_give": titles(mine),
            "you_get": titles(theirs),
            "note": note,
            "waiting_for": None if waiting is None else "you" if waiting == self.me else "them",
        }

    def _trade_json(self, t: Any) -> dict[str, Any]:
        return {
            "id": t.proposal_id.hex(),
            "state": t.state,
            "from": peer_id_of(t.proposer),
            "from_name": self.name_of(t.proposer),
            "to": peer_id_of(t.responder),
            "to_name": self.name_of(t.responder),
            "give": [g.hex() for g in t.give],
            "take": [g.hex() for g in t.take],
            "expires": iso(t.expires),
            "lender": peer_id_of(t.lender) if t.lender is not None else None,
            "due": iso(t.due),
        }

    async def reply(
        self,
        proposal: str,
        action: str,
        *,
        give: list[str] | None = None,
        take: list[str] | None = None,
        note: str = "",
        private: object = "",
        days: object = None,
    ) -> dict[str, Any]:
        if action not in rec.REPLY_ACTIONS:
            raise BadValue(f"action: expected one of {list(rec.REPLY_ACTIONS)}, found {action!r}")
        if (action == "extend") != (days is not None):
            raise BadValue(
                "days: an extend needs the days to add to the due date, and only an extend takes them"
            )
        async with self._lock:
            pid = await self._read(views.parse_id, _text(proposal, "id", 64), self.reader)
            book = await self._book()
            trade = views.find_trade(book, pid)
            until = None
            if days is not None:
                if trade.due is None:
                    raise NotAllowed(
                        f"trade {short_id(pid)} is {trade.state}: only a loan the borrower has received can"
                        " be extended"
                    )
                if (
                    isinstance(days, bool)
                    or not isinstance(days, int | float)
                    or not 0 < days <= rec.MAX_LEND_DAYS
                ):
                    raise BadValue(f"days: expected 0 < days <= {rec.MAX_LEND_DAYS}, found {days!r}")
                until = trade.due + int(days * DAY_MS)  # from the current due date
            give_ids = [
                await self._read(views.parse_id, g, self.reader) for g in _list_of_text(give or [], "give")
            ]
            take_ids = [
                await self._read(views.parse_id, g, self.reader) for g in _list_of_text(take or [], "take")
            ]
            body = rec.ReplyBody(
                proposal=pid,
                action=action,
                give=tuple(give_ids),
                take=tuple(take_ids),
                note=_text(note, "note", rec.MAX_NOTE),
                prev=trade.latest_move,  # the move this reply answers: never reordered by timestamps
                private=self._sealed(
                    private,
                    trade.other(self.me) if trade.role(self.me) else self.me,
                    sealing.reply_context(pid),
                ),
                until=until,
            )
            named = set(trade.offers) | set(give_ids) | set(take_ids)  # all the check reads
            offers = await self._read(views.offer_infos, self.reader, named)
            book.check_reply(body, self.me, now_ms=self.node.clock(), offers=offers)
            if action == "accept":  # barter knows its own reservations, not the rings'
                held = await self._held(book)
                for oid in trade.offers:
                    if oid in held.consumed or held.reserved.get(oid, pid) != pid:
                        raise NotAllowed(
                            f"cannot accept trade {short_id(pid)}: offer {short_id(oid)} is reserved or"
                            " given away by a ring ('meshnode rings --mine' shows it)"
                        )
            await self.node.publish(body, self._swarm_of(_trade_swarm(trade, self.reader)))
            after = views.find_trade(await self._book(), pid)
        return self._trade_json(after)

    async def rules(self) -> dict[str, Any]:
        """The rules that answer trades while the owner is away (config.toml ``[rules]``), a line each."""
        return {"rules": list(describe_rules(self.autoreplier.rules)), "sent": self.autoreplier.sent}

    # --- trust ------------------------------------------------------------------

    async def vouch(
        self, peer: object, level: float = DEFAULT_VOUCH, note: str = "", swarm: str | None = None
    ) -> dict[str, Any]:
        """Publish an attestation about ``peer``; ``replaces`` the live one it supersedes, if any.

        ``replaces`` is the id, level, date and note of this node's earlier
        live attestation about the same peer in the same (general) context,
        or None.
        """
        subject = self._peer_named(peer)
        if subject == self.me:
            raise NotAllowed("you cannot vouch for yourself")
        if isinstance(level, bool) or not isinstance(level, int | float) or not -1.0 <= level <= 1.0:
            raise BadValue(f"level: expected a number from -1 to 1, found {level!r}")
        body = rec.AttestBody(
            subject=subject, level=round(level * rec.LEVEL_SCALE), note=_text(note, "note", rec.MAX_NOTE)
        )
        target = self._pick_swarm(swarm)
        edge = (await self.views.trust()).graph.edge(self.me, subject)
        earlier = [a for a in (edge.attestations if edge else ()) if a.context == body.context]
        record = await self.node.publish(body, target)
        return {"id": record.id.hex(), "replaces": _attestation_json(earlier[0]) if earlier else None}

    async def web_login(self) -> dict[str, Any]:
        """A one-time login link for the web page (``meshnode web``): only the socket's owner can ask."""
        if self.web is None:
            raise NotFound(
                'the daemon serves no web page: set web = "127.0.0.1:8790" in config.toml [node]'
                " (it is off, or its port was in use: see the daemon's log) and restart the daemon"
            )
        return {"url": self.web.login_url(), "page": self.web.url}

    async def trust(self, peer: str) -> dict[str, Any]:
        """How much this node trusts ``peer``: the score, the paths with each edge's provenance, the warnings.

        ``trust`` is the score before warnings; each ``distrust`` entry names
        who warned, their level and note, and how much it ``takes_off``.
        """
        subject = self._peer_named(peer)
        view = await self.views.trust()
        explanation = await self._read(view.graph.explain, self.me, subject)
        return {
            "peer": peer_id_of(subject),
            "peer_name": self.name_of(subject),
            "me": peer_id_of(self.me),
            "score": round(view.score(subject), 4),
            "trust": round(explanation.trust, 4),
            "paths": [
                {
                    "keys": [peer_id_of(k) for k in p.keys],
                    "names": [self.name_of(k) for k in p.keys],
                    "strength": round(p.strength, 4),
                    "edges": [self._named_edge_json(e) for e in p.edges],
                }
                for p in explanation.paths
            ],
            "distrust": [
                {"by": peer_id_of(by), "by_name": self.name_of(by), "takes_off": round(weight, 4)}
                | _said_json(edge)
                for (by, weight), edge in zip(explanation.distrusted_by, explanation.warnings, strict=True)
            ],
            "forks": await LedgerService(self).forks_of(subject),  # proofs of double spending
        }

    async def trusted(self, limit: int = DEFAULT_TRUSTED) -> list[dict[str, Any]]:
        """The peers this node trusts most, best first, each with the edge that brings it the most trust.

        ``direct``: that edge is this node's own (a vouch or a trade); else
        ``via`` is the peer through whom trust comes.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TRUSTED:
            raise BadValue(f"limit: expected 1..{MAX_TRUSTED}, found {limit!r}")
        view = await self.views.trust()
        ranked = await self._read(view.graph.ranked, self.me, limit)
        return [
            {
                "peer": peer_id_of(r.key),
                "peer_name": self.name_of(r.key),
                "score": round(r.score, 4),
                "direct": r.via is not None and r.via.source == self.me,
                "via": peer_id_of(r.via.source) if r.via is not None else None,
                "via_name": self.name_of(r.via.source) if r.via is not None else None,
                "edge": self._named_edge_json(r.via) if r.via is not None else None,
            }
            for r in ranked
        ]

    def _named_edge_json(self, edge: TrustEdge) -> dict[str, Any]:
        """:func:`_edge_json` with ``from_name`` and ``to_name``."""
        names = {"from_name": self.name_of(edge.source), "to_name": self.name_of(edge.target)}
        return _edge_json(edge) | names


# --- the inbox ------------------------------------------------------------------------


class InboxView:
    """``GET /inbox`` and the event stream: kept notices as JSON (see :mod:`meshnode.api.notices`)."""

    def __init__(self, service: ApiService) -> None:
        self.s = service

    async def inbox(self, all_: bool = False, limit: int = DEFAULT_INBOX) -> dict[str, Any]:
        """What happened since the owner last looked (the newest ``limit`` with ``all_``); marks it read.

        ``notices`` oldest first; ``unread`` how many unread notices are left
        for the next call (more than ``limit`` had come).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_INBOX:
            raise BadValue(f"limit: expected 1..{MAX_INBOX}, found {limit!r}")
        reader = self.s.reader
        seen, _ = await self.s._read(reader.inbox_marks)
        if all_:
            rows = list(reversed(await self.s._read(lambda: reader.notices(limit=limit, newest_first=True))))
        else:
            rows = await self.s._read(lambda: reader.notices(after=seen, limit=limit))
        shown = await self.as_json(rows)
        if rows and rows[-1].seq > seen:
            await trio.to_thread.run_sync(self.s.node.store.mark_inbox_seen, rows[-1].seq)
        upto = max(seen, rows[-1].seq if rows else 0)
        left = await self.s._read(reader.count_notices, upto)
        return {"notices": shown, "unread": left}

    async def last_seq(self) -> int:
        """The number of the newest notice kept (0: none yet)."""
        return int((await self.s._read(self.s.reader.inbox_marks))[1])

    async def since(self, seq: int, limit: int = MAX_INBOX) -> list[dict[str, Any]]:
        """The notices after ``seq`` as JSON, oldest first (what a reconnecting watcher missed)."""
        rows = await self.s._read(lambda: self.s.reader.notices(after=seq, limit=limit))
        return await self.as_json(rows)

    async def as_json(self, rows: list[StoredNotice]) -> list[dict[str, Any]]:
        """Kept notices as the API shows them, leaving out those whose records are gone."""
        if not rows:
            return []
        book = await self.s.views.book()
        trust = self.s.views.trust_now()
        ids = {r.notice.record for r in rows} | {r.notice.about for r in rows if r.notice.about}
        trades = {r.notice.about: book.trades[r.notice.about] for r in rows if r.notice.about in book.trades}
        offers = {oid for t in trades.values() for oid in t.offers}

        def read() -> tuple[dict[bytes, rec.Record], dict[bytes, LiveItem]]:
            found = {i: r for i in ids if (r := self.s.reader.get(i)) is not None}
            in_rings = {o for r in found.values() if isinstance(r.body, rec.RingBody) for o in r.body.offers}
            return found, self.s.reader.items_by_id(ids | offers | in_rings)

        records, items = await self.s._read(read)
        joined = frozenset(s.id for s in self.s.node.swarms())
        units = {s: (await LedgerService(self.s).currency(s)).unit for s in joined}
        pools: Mapping[bytes, Pool] = {}
        if any(r.notice.kind in ("poolreached", "poolclosed") for r in rows):
            from meshnode.api.poolservice import PoolService  # it imports this module

            pools = (await PoolService(self.s).book()).pools
        known = Known(self.s.me, records, items, trades, self.s.name_of, trust, joined, units, pools)
        out = [notice_json(r, known) for r in rows]
        return [o for o in out if o is not None]


def _attestation_json(a: Attestation) -> dict[str, Any]:
    return {
        "record": a.record.hex(),
        "level": a.level / rec.LEVEL_SCALE,
        "context": a.context,
        "note": a.note,
        "date": iso(a.ts),
    }


def _said_json(edge: TrustEdge) -> dict[str, Any]:
    """An edge's level and what it came from: its newest attestation, or its completed proposals."""
    out: dict[str, Any] = {
        "kind": "vouch" if edge.kind == "attest" else "trade",
        "level": round(edge.weight, 4),
    }
    if edge.kind == "attest":
        newest = edge.attestations[0] if edge.attestations else None
        out |= {
            "record": newest.record.hex() if newest else None,
            "note": newest.note if newest else "",
            "context": newest.context if newest else "",
            "date": iso(newest.ts) if newest else None,
            "attestations": [_attestation_json(a) for a in edge.attestations],
        }
    else:
        out |= {
            "proposal": edge.ref.hex() if edge.ref else None,
            "proposals": [p.hex() for p in edge.proposals],
            "late_loans": [p.hex() for p in edge.late_loans],
        }
    return out


def _edge_json(edge: TrustEdge) -> dict[str, Any]:
    """``{from, to, kind: vouch|trade, level, ...}``: one trust edge with its provenance."""
    return {"from": peer_id_of(edge.source), "to": peer_id_of(edge.target)} | _said_json(edge)


def _newest_first(trade: Any) -> int:
    return -int(trade.created_ts)


def _title(items: dict[bytes, LiveItem], oid: bytes) -> str:
    """An offer's title, or its short id when this node does not hold it."""
    return items[oid].title if oid in items else short_id(oid)


def _trade_swarm(trade: Any, store: Any) -> bytes:
    swarm = getattr(trade, "swarm", b"")
    if swarm:
        return swarm
    record = store.get(trade.proposal_id)
    if record is None:  # pragma: no cover - a trade always has its proposal
        raise NotFound("the proposal record is missing")
    return record.swarm


def _price(kind: object, price: object, *, zero: bool = False) -> int | None:
    """An item's price in hundredths from text like "2" or "1.5" (None: none; ``zero``: "0" removes it)."""
    if price is None or price == "":
        return None
    if kind not in rec.PRICED_KINDS:
        raise BadValue(f"price: only a service or lend item has a price, not a {kind!r} one")
    hundredths = money.parse_amount(_text(price, "price", 20), "price", zero=zero)
    return hundredths or None


def _lend_terms(kind: object, max_days: object, deposit: object) -> rec.LendTerms | None:
    """An item's lending terms from the request, or None when it sets none (only lend items may)."""
    if max_days is None and deposit in ("", None):
        return None
    if kind != "lend":
        raise BadValue(f"max_days and deposit are lending terms: only a lend item has them, not {kind!r}")
    if max_days is not None and (
        isinstance(max_days, bool) or not isinstance(max_days, int) or not 1 <= max_days <= rec.MAX_LEND_DAYS
    ):
        raise BadValue(
            f"max_days: expected a whole number of days from 1 to {rec.MAX_LEND_DAYS}, found {max_days!r}"
        )
    return rec.LendTerms(max_days=max_days, deposit=_text(deposit or "", "deposit", rec.MAX_DEPOSIT).strip())


def _expires_at(days: object, now: int, most: float) -> int:
    """``now`` plus ``days`` (0 < days <= ``most``) in ms; else a :class:`BadValue` naming ``expires``."""
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= most:
        raise BadValue(f"expires: expected 0 < days <= {most}, found {days!r}")
    return now + int(days * DAY_MS)


def _text(value: Any, name: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise BadValue(f"{name}: expected text, found {type(value).__name__}")
    if len(value) > max_len:
        raise BadValue(f"{name}: expected at most {max_len} characters, found {len(value)}")
    return value


def _list_of_text(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadValue(f"{name}: expected a list of text")
    if len(value) > rec.MAX_ITEMS:
        raise BadValue(f"{name}: expected at most {rec.MAX_ITEMS}, found {len(value)}")
    return value
