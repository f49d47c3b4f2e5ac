"""How the current state of offers and wants follows from their records (pure).

An *item* is an offer or a want record (:data:`ITEM_TYPES`). Updates and
withdraws (:data:`TARGETING`) name an item by id (``body.target``); what the
derivation needs of one is its envelope, an :class:`ItemHead`.

The rules, all functions of the *set* of records, never of their order:

* A head is valid for a target when the target is an item and the head has
  the item's author and swarm (:func:`target_refusal` says why not).
* An item's current content is the body of its newest valid update by
  ``(ts, seq, id)``, or the original's when it has none.
* It is withdrawn from its earliest valid withdrawal on; an update never
  revives it.
* It expires at its current version's expiry, and at most
  :data:`~meshnode.lifetime.MAX_MS` after the original was made
  (:func:`~meshnode.lifetime.item_expiry`): every item expires.
* A head whose target is not known yet is kept and waits; when the target
  arrives, a head that is not valid for it is evicted (as if the target had
  come first and the head had been refused).

:func:`derive_item` gives an item's row of the ``items`` table
(:class:`ItemRow`), :func:`live_item` what readers see (:class:`LiveItem`).
Nothing here touches a database: the caller hands in the heads and a way to
load the winning update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from meshnode.errors import ExpiredError, MeshError, NotAllowed
from meshnode.ids import short_id
from meshnode.lifetime import item_expiry
from meshnode.records import ItemBody, LendTerms, Record

#: Record types that are items (one row each in ``items``).
ITEM_TYPES = ("offer", "want")
#: Record types that name an item: they change it, they are not items.
TARGETING = ("update", "withdraw")


class Target(Protocol):
    """What the rules need to know of a record that a head names."""

    @property
    def type(self) -> str: ...

    @property
    def author(self) -> bytes: ...

    @property
    def swarm(self) -> bytes: ...


@dataclass(frozen=True)
class ItemHead:
    """The envelope of an update or withdraw (no body): all the derivation reads of it."""

    id: bytes
    type: str
    author: bytes
    swarm: bytes
    ts: int
    seq: int
    target: bytes

    @classmethod
    def of(cls, record: Record) -> ItemHead:
        """The head of an update or withdraw record."""
        return cls(
            record.id, record.type, record.author, record.swarm, record.ts, record.seq, record.body.target
        )


def target_refusal(head: ItemHead, target: Target) -> MeshError | None:
    """Why ``head`` cannot apply to ``target`` (the record it names), or None if it can."""
    if target.type not in ITEM_TYPES:
        return NotAllowed(
            f"{head.type} names {short_id(head.target)}, a {target.type} record, not an offer or want"
        )
    if target.author != head.author:
        return NotAllowed(f"{head.type} of {short_id(head.target)} by someone other than its author")
    if target.swarm != head.swarm:
        return NotAllowed(
            f"{head.type} of {short_id(head.target)} from another swarm than the {target.type}'s"
        )
    return None


def refusal_of_unknown_target(head: ItemHead, target_pruned: bool) -> MeshError | None:
    """Why ``head``, whose target is not stored, is refused: only if the target was pruned.

    A target that is simply not known yet may still come: the head is kept and
    applies (or is evicted) when it arrives.
    """
    if target_pruned:
        return ExpiredError(f"{head.type} names {short_id(head.target)}, which expired and was pruned here")
    return None


def invalid_heads(target: Target, heads: Iterable[ItemHead]) -> list[ItemHead]:
    """The heads that name ``target`` but may not apply to it (to be evicted)."""
    return [h for h in heads if target_refusal(h, target) is not None]


class ItemRow(NamedTuple):
    """One row of the ``items`` table, fields in column order."""

    n: int  # the original's records.n
    type: str
    swarm: bytes
    author: bytes
    kind: str
    title: str
    description: str
    tags: str  # space-separated
    location: str
    quantity: int | None
    max_days: int | None
    deposit: str | None
    has_terms: int
    expires: int | None
    created_ts: int
    updated_ts: int
    cur_id: bytes
    cur_seq: int
    withdrawn_ts: int | None
    price: int | None  # schema version 4 (appended by ALTER TABLE: last)


#: The ``items`` columns, in :class:`ItemRow` order.
ITEM_COLUMNS = ", ".join(ItemRow._fields)
_make_row = ItemRow._make


def derive_item(
    original: Record, n: int, heads: Iterable[ItemHead], load: Callable[[bytes], Record]
) -> ItemRow:
    """The ``items`` row of ``original`` (stored as ``records.n`` = ``n``).

    ``heads`` may hold any heads: those that do not name ``original`` or are
    not valid for it are ignored. A max / min over the set, so their order
    cannot matter. ``load`` fetches the winning update's full record.
    """
    updates: list[tuple[int, int, bytes]] = []
    withdrawn_ts: int | None = None
    for h in heads:
        if h.target != original.id or target_refusal(h, original) is not None:
            continue
        if h.type == "update":
            updates.append((h.ts, h.seq, h.id))
        elif h.type == "withdraw" and (withdrawn_ts is None or h.ts < withdrawn_ts):
            withdrawn_ts = h.ts
    if updates:
        ts, seq, cur_id = max(updates)
        current = load(cur_id)
        item: ItemBody = current.body.item
    else:
        ts, seq, cur_id = original.ts, original.seq, original.id
        current, item = original, original.body
    terms = item.terms
    return _make_row(  # from a plain tuple: twice as fast as ItemRow(...) (once per stored item)
        (
            n,
            original.type,
            original.swarm,
            original.author,
            item.kind,
            item.title,
            item.desc,
            " ".join(item.tags),
            item.where,
            item.quantity,
            terms.max_days if terms is not None else None,
            terms.deposit if terms is not None else None,
            int(terms is not None),
            item_expiry(original.ts, current),
            original.ts,
            ts,
            cur_id,
            seq,
            withdrawn_ts,
            item.price,
        )
    )


@dataclass(frozen=True)
class LiveItem:
    """The current state of one offer or want (id = the original record's id)."""

    id: bytes
    type: str
    author: bytes
    swarm: bytes
    title: str
    kind: str
    desc: str
    tags: tuple[str, ...]
    where: str
    quantity: int | None
    expires: int | None
    created_ts: int
    updated_ts: int
    withdrawn: bool
    current_record_id: bytes
    terms: LendTerms | None = None
    withdrawn_ts: int | None = None
    price: int | None = None  # hundredths of the swarm's currency

    def live(self, now_ms: int) -> bool:
        """Neither withdrawn nor expired at ``now_ms``."""
        return not self.withdrawn and (self.expires is None or self.expires > now_ms)


def live_item(item_id: bytes, row: ItemRow) -> LiveItem:
    """What a reader sees of the item whose original has id ``item_id``."""
    return LiveItem(
        id=item_id,
        type=row.type,
        author=row.author,
        swarm=row.swarm,
        title=row.title,
        kind=row.kind,
        desc=row.description,
        tags=tuple(row.tags.split()),
        where=row.location,
        quantity=row.quantity,
        expires=row.expires,
        created_ts=row.created_ts,
        updated_ts=row.updated_ts,
        withdrawn=row.withdrawn_ts is not None,
        current_record_id=row.cur_id,
        terms=LendTerms(max_days=row.max_days, deposit=row.deposit or "") if row.has_terms else None,
        withdrawn_ts=row.withdrawn_ts,
        price=row.price,
    )
