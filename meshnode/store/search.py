"""Finding items: user text to a safe FTS5 query, filters to the SQL of a listing (pure).

:func:`fts_query` quotes every word of user text, so operators, quotes and
other punctuation have no special meaning and no text can make FTS5 fail.
:func:`items_query` builds the one ``SELECT`` that lists live offers or
wants, or says that nothing can match. No database is touched here.

Ranking happens in that query, before its ``LIMIT``: with ``ranked``, items
are ordered first by the trust level of their author, read from the
connection's temporary table :data:`TRUST_TABLE` (author key -> level, filled
by the caller; an author missing there is at level 0), then as without
trust: by relevance with a text query, else newest first. So the first page
holds the most trusted authors' items, whatever number of strangers' items
there are. "Newest" reads an item's time clamped to ``now_ms``: an item
dated in the future counts as dated now, so a clock set ahead (or a forged
date) buys no place above items made at the same moment.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from meshnode import records
from meshnode.errors import BadValue
from meshnode.store.derive import ITEM_COLUMNS, ITEM_TYPES

MAX_QUERY_TERMS = 16
_WORD_RE = re.compile(r"(\w+)(\*?)")
#: ``items`` columns (alias ``i``) after the original's id (alias ``r``): a listing's row.
LISTING_COLUMNS = "r.id, " + ", ".join(f"i.{c}" for c in ITEM_COLUMNS.split(", "))
#: The temporary table (one per connection) a ranked listing reads trust levels from.
TRUST_TABLE = "temp.listing_trust"
#: Creates :data:`TRUST_TABLE` if this connection has none yet.
CREATE_TRUST_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TRUST_TABLE} (author BLOB PRIMARY KEY, level REAL NOT NULL) WITHOUT ROWID"
)


def fts_query(text: str) -> str | None:
    """Turn user text into a safe FTS5 query: every word quoted, all required.

    A word followed by ``*`` is a prefix search. Operators, quotes and other
    punctuation in ``text`` have no special meaning. At most
    :data:`MAX_QUERY_TERMS` words count. Returns ``None`` when the text holds
    no searchable word (the query then matches nothing).
    """
    if not isinstance(text, str):
        raise BadValue(f"query: expected text, found {type(text).__name__}")
    terms: list[str] = []
    for match in _WORD_RE.finditer(unicodedata.normalize("NFKC", text)):
        word, star = match.groups()
        if not any(c.isalnum() for c in word):
            continue
        terms.append(f'"{word}"{star}')
        if len(terms) == MAX_QUERY_TERMS:
            break
    return " ".join(terms) or None


def equal_to(columns: Iterable[tuple[str, Any]]) -> tuple[list[str], list[Any]]:
    """``column = ?`` conditions and their values, for each pair whose value is not None."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in columns:
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    return where, params


def items_query(
    type: str,
    *,
    swarm: bytes | None,
    query: str | None,
    kind: str | None,
    tag: str | None,
    author: bytes | None,
    now_ms: int,
    limit: int,
    include_withdrawn: bool,
    ranked: bool = False,
) -> tuple[str, list[Any]] | None:
    """The SQL and parameters listing the items that match every filter given.

    Rows are :data:`LISTING_COLUMNS`. Live: not expired at ``now_ms``, and
    not withdrawn unless ``include_withdrawn``. ``tag`` is normalised as
    :func:`meshnode.records.normalize_tags` does. With ``ranked``, rows come
    by their author's level in :data:`TRUST_TABLE` first (highest first;
    unlisted authors at 0). Then, with ``query`` (user text, see
    :func:`fts_query`), by relevance, otherwise newest first by last update
    clamped to ``now_ms``; ties by id. ``None`` when nothing can match (no
    positive limit, a tag no item can carry, a query without a word).
    Raises :class:`BadValue` for an unknown type or kind.
    """
    if type not in ITEM_TYPES:
        raise BadValue(f"type: expected one of {list(ITEM_TYPES)}, found {type!r}")
    if kind is not None and kind not in records.ITEM_KINDS:
        raise BadValue(f"kind: expected one of {list(records.ITEM_KINDS)}, found {kind!r}")
    if limit <= 0:
        return None
    where, params = equal_to([("i.type", type), ("i.swarm", swarm), ("i.kind", kind), ("i.author", author)])
    where.append("(i.expires IS NULL OR i.expires > ?)")
    params.append(now_ms)
    if tag is not None:
        wanted = records.normalize_tags([tag])
        if not wanted or not records.TAG_PATTERN.match(wanted[0]):
            return None
        where.append("instr(' ' || i.tags || ' ', ?) > 0")
        params.append(f" {wanted[0]} ")
    if not include_withdrawn:
        where.append("i.withdrawn_ts IS NULL")
    join = f" LEFT JOIN {TRUST_TABLE} t ON t.author = i.author" if ranked else ""
    by_trust = "coalesce(t.level, 0) DESC, " if ranked else ""
    if query is None:
        sql = (
            f"SELECT {LISTING_COLUMNS} FROM items i JOIN records r ON r.n = i.n{join}"
            f" WHERE {' AND '.join(where)}"
            f" ORDER BY {by_trust}min(i.updated_ts, ?) DESC, r.id DESC LIMIT ?"
        )
        return sql, [*params, now_ms, limit]
    match = fts_query(query)
    if match is None:
        return None
    sql = (
        f"SELECT {LISTING_COLUMNS} FROM items_fts JOIN items i ON i.n = items_fts.rowid"
        f" JOIN records r ON r.n = i.n{join}"
        f" WHERE items_fts MATCH ? AND {' AND '.join(where)}"
        f" ORDER BY {by_trust}items_fts.rank, r.id LIMIT ?"
    )
    return sql, [match, *params, limit]
