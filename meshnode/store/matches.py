"""Finding the offers that meet a want, and the wants an offer meets, in the store.

Each query gathers candidates in SQL, then :func:`meshnode.matching.match`
decides and scores (its docstring holds the rules). Candidates are live
items (not withdrawn, not expired at ``now_ms``) of the other type, in the
same swarm, by another author, of a compatible kind, that either hold one
of the item's significant words (FTS5, the words ORed, best ranked first)
or carry one of its tags (newest first). Each of the two candidate queries
reads at most :data:`MAX_CANDIDATES` rows, so the work is bounded however
many items the swarm holds; a match outside the best-ranked candidates can
be missed, never a wrong one returned.

The item asked about (a :class:`~meshnode.matching.Matchable`: a stored
:class:`LiveItem` or one just arrived) is taken as given: its own state is
not checked.
Results are ``(Match, LiveItem)`` pairs, the other side's item with each
match, best first (:func:`meshnode.matching.rank`), at most ``limit``. The
caller holds the store's lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from meshnode import matching
from meshnode.matching import Match, Matchable
from meshnode.store.derive import ItemRow, LiveItem, live_item
from meshnode.store.search import LISTING_COLUMNS, MAX_QUERY_TERMS

#: The most candidates each of the two queries (words, tags) reads.
MAX_CANDIDATES = 200
#: The most of an offer's words a search for wants uses (its title and tags first).
MAX_OFFER_TERMS = 2 * MAX_QUERY_TERMS


def offers_for_want(
    conn: sqlite3.Connection, want: Matchable, now_ms: int, limit: int
) -> list[tuple[Match, LiveItem]]:
    """The live offers that meet ``want``, best first, at most ``limit``."""
    if want.type != "want":
        return []
    kinds = sorted(matching.COMPATIBLE_KINDS.get(want.kind, ()))
    words = sorted(matching.want_words(want))[:MAX_QUERY_TERMS]
    found = _candidates(conn, want, "offer", kinds, words, now_ms)
    return _ranked(((matching.match(want, o), o) for o in found), limit)


def wants_for_offer(
    conn: sqlite3.Connection, offer: Matchable, now_ms: int, limit: int
) -> list[tuple[Match, LiveItem]]:
    """The live wants that ``offer`` meets, best first, at most ``limit``."""
    if offer.type != "offer":
        return []
    kinds = sorted(k for k, meets in matching.COMPATIBLE_KINDS.items() if offer.kind in meets)
    head, desc = matching.offer_words(offer)
    words = (sorted(head) + sorted(desc - head))[:MAX_OFFER_TERMS]
    found = _candidates(conn, offer, "want", kinds, words, now_ms)
    return _ranked(((matching.match(w, offer), w) for w in found), limit)


def _ranked(pairs: Iterable[tuple[Match | None, LiveItem]], limit: int) -> list[tuple[Match, LiveItem]]:
    best = {m: item for m, item in pairs if m is not None}
    return [(m, best[m]) for m in matching.rank(best)][: max(limit, 0)]


def _candidates(
    conn: sqlite3.Connection, item: Matchable, type: str, kinds: list[str], words: list[str], now_ms: int
) -> list[LiveItem]:
    """Live items of ``type`` beside ``item`` holding one of ``words`` or one of its tags."""
    if not kinds:
        return []
    where = (
        f"i.type = ? AND i.swarm = ? AND i.author != ? AND i.kind IN ({', '.join('?' * len(kinds))})"
        " AND i.withdrawn_ts IS NULL AND (i.expires IS NULL OR i.expires > ?)"
    )
    params: list[Any] = [type, item.swarm, item.author, *kinds, now_ms]
    rows: list[tuple[Any, ...]] = []
    if words:  # each word is letters and digits only: quoted, it is one FTS5 term
        text = " OR ".join(f'"{w}"' for w in words)
        rows += conn.execute(
            f"SELECT {LISTING_COLUMNS} FROM items_fts JOIN items i ON i.n = items_fts.rowid"
            f" JOIN records r ON r.n = i.n WHERE items_fts MATCH ? AND {where}"
            " ORDER BY items_fts.rank, r.id LIMIT ?",
            [text, *params, MAX_CANDIDATES],
        ).fetchall()
    tags = sorted(set(item.tags))
    if tags:
        any_tag = " OR ".join("instr(' ' || i.tags || ' ', ?) > 0" for _ in tags)
        rows += conn.execute(
            f"SELECT {LISTING_COLUMNS} FROM items i JOIN records r ON r.n = i.n WHERE {where} AND ({any_tag})"
            " ORDER BY i.updated_ts DESC, r.id LIMIT ?",
            [*params, *(f" {t} " for t in tags), MAX_CANDIDATES],
        ).fetchall()
    unique = {bytes(row[0]): row for row in rows}
    return [live_item(rid, ItemRow._make(row[1:])) for rid, row in unique.items()]
