"""Finding items: user text to a safe FTS5 query, filters to the SQL of a listing (pure).

:func:`fts_query` turns user text into an FTS5 query in a small language of
its own: words are all required; ``OR`` (upper case) between two terms
means either (``drill OR saw ladder``: a drill or a saw, and a ladder);
``"quoted words"`` match as a phrase (an unclosed quote runs to the end); a
``*`` right after a word or a closing quote makes its last word a prefix.
Everything else (other operators, brackets, column filters, punctuation)
has no special meaning: every word reaches FTS5 quoted, groups in brackets,
so no text can make FTS5 fail. :func:`items_query` builds the one
``SELECT`` that lists live offers or wants, or says that nothing can match.
No database is touched here.

Ranking happens in that query, before its ``LIMIT``: with ``ranked``, items
are ordered first by the trust level of their author, read from the
connection's temporary table :data:`TRUST_TABLE` (author key -> level, filled
by the caller; an author missing there is at level 0), then as without
trust: by relevance with a text query, else newest first. So the first page
holds the most trusted authors' items, whatever number of strangers' items
there are. "Newest" reads an item's time clamped to ``now_ms``: an item
dated in the future counts as dated now, so a clock set ahead (or a forged
date) buys no place above items made at the same moment.

Near a place (:class:`Near`: a geohash and a distance): an item is kept when
the centre of its ``where`` cell is within ``km`` of the centre of the given
cell (an item without ``where`` is not). The query first keeps only items
whose ``where`` starts with one of the cells covering the circle's bounding
box (:func:`meshnode.geohash.covering_cells`, at the longest precision that
needs at most :data:`MAX_NEAR_CELLS` cells) or is a shorter prefix of one
(a coarse cell whose centre can lie in the box), then checks the exact
distance with :func:`location_km`, a Python function the caller registers
on the connection as :data:`DISTANCE_FUNCTION`. Both are conditions of the
same ``SELECT``, so its ``LIMIT`` counts matching items only: a page is
never short while more items match. Among items of the same trust level
the nearest come first (after relevance, with a text query).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from meshnode import geohash, records
from meshnode.errors import BadValue
from meshnode.store.derive import ITEM_COLUMNS, ITEM_TYPES

#: At most this many words (also those in phrases) of a query count; the rest is ignored.
MAX_QUERY_TERMS = 16
_WORD_RE = re.compile(r"(\w+)(\*?)")
_TOKEN_RE = re.compile(r'"(?P<phrase>[^"]*)"?(?P<pstar>\*?)|(?P<word>\w+)(?P<star>\*?)')
#: The distance of ``--near`` when none is given, km.
DEFAULT_NEAR_KM = 1.0
#: The most cells a near filter's bounding box is cut into (it picks the precision).
MAX_NEAR_CELLS = 32
#: The SQL function (location, lat, lon) -> km or NULL that a listing near a place calls.
DISTANCE_FUNCTION = "meshnode_km"
#: ``items`` columns (alias ``i``) after the original's id (alias ``r``): a listing's row.
LISTING_COLUMNS = "r.id, " + ", ".join(f"i.{c}" for c in ITEM_COLUMNS.split(", "))
#: The temporary table (one per connection) of item ids a listing leaves out (e.g. unavailable offers).
EXCLUDED_TABLE = "temp.listing_excluded"
#: Creates :data:`EXCLUDED_TABLE` if this connection has none yet.
CREATE_EXCLUDED_TABLE = f"CREATE TABLE IF NOT EXISTS {EXCLUDED_TABLE} (id BLOB PRIMARY KEY) WITHOUT ROWID"
#: The temporary table (one per connection) a ranked listing reads trust levels from.
TRUST_TABLE = "temp.listing_trust"
#: Creates :data:`TRUST_TABLE` if this connection has none yet.
CREATE_TRUST_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TRUST_TABLE} (author BLOB PRIMARY KEY, level REAL NOT NULL) WITHOUT ROWID"
)


def _words(text: str, budget: int) -> list[str]:
    """The searchable words of ``text`` (at least one letter or digit), at most ``budget``."""
    words = [w for w, _ in _WORD_RE.findall(text) if any(c.isalnum() for c in w)]
    return words[:budget]


def fts_query(text: str) -> str | None:
    """Turn user text into a safe FTS5 query (the language is in the module's docstring).

    At most :data:`MAX_QUERY_TERMS` words count. An ``OR`` with no term on
    one side is ignored. Returns ``None`` when the text holds no searchable
    word (the query then matches nothing).
    """
    if not isinstance(text, str):
        raise BadValue(f"query: expected text, found {type(text).__name__}")
    groups: list[list[str]] = []  # ANDed; the terms of each group ORed
    joining, budget = False, MAX_QUERY_TERMS
    for match in _TOKEN_RE.finditer(unicodedata.normalize("NFKC", text)):
        if budget == 0:
            break
        phrase, pstar, word, star = match.groups()
        if word == "OR" and not star:
            joining = bool(groups)
            continue
        words = _words(word if phrase is None else phrase, budget)
        if not words:
            continue
        budget -= len(words)
        term = '"' + " ".join(words) + '"' + (star if phrase is None else pstar)
        if joining:
            groups[-1].append(term)
        else:
            groups.append([term])
        joining = False
    if not groups:
        return None
    return " AND ".join(g[0] if len(g) == 1 else "(" + " OR ".join(g) + ")" for g in groups)


@dataclass(frozen=True)
class Near:
    """Items within ``km`` of the centre of a geohash cell (see the module's docstring)."""

    lat: float
    lon: float
    km: float
    precision: int  # of the covering cells
    prefixes: tuple[str, ...]  # the covering cells and their shorter prefixes

    @classmethod
    def parse(cls, where: object, km: object = None) -> Near:
        """The filter for geohash text ``where`` and distance ``km`` (default :data:`DEFAULT_NEAR_KM`).

        Raises :class:`BadValue` for text that is not a geohash or a
        distance that is not a number in (0, half the Earth's circumference].
        """
        if not isinstance(where, str):
            raise BadValue(f"near: expected a geohash, found {type(where).__name__}")
        try:
            cell = geohash.decode(where.strip().lower())
        except BadValue as exc:
            raise BadValue(f"near: {exc}") from None
        if km is None:
            km = DEFAULT_NEAR_KM
        if (
            isinstance(km, bool)
            or not isinstance(km, int | float)
            or not math.isfinite(km)
            or not 0 < km <= geohash.MAX_DISTANCE_KM
        ):
            most = f"{geohash.MAX_DISTANCE_KM:.0f}"
            raise BadValue(f"km: expected a distance in km, 0 < km <= {most}, found {km!r}")
        precision = next(
            p
            for p in range(records.MAX_GEOHASH, 0, -1)
            if p == 1 or geohash.covering_count(cell.lat, cell.lon, km, p) <= MAX_NEAR_CELLS
        )
        cells = geohash.covering_cells(cell.lat, cell.lon, km, precision)
        prefixes = sorted({c[:n] for c in cells for n in range(1, precision + 1)})
        return cls(cell.lat, cell.lon, float(km), precision, tuple(prefixes))


def location_km(location: object, lat: float, lon: float) -> float | None:
    """Distance from (``lat``, ``lon``) to the centre of geohash cell ``location``, km (None: not one)."""
    if not isinstance(location, str) or not location:
        return None
    try:
        cell = geohash.decode(location)
    except BadValue:
        return None
    return geohash.distance_km(lat, lon, cell.lat, cell.lon)


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
    near: Near | None = None,
    excluding: bool = False,
    swarms: Collection[bytes] | None = None,
) -> tuple[str, list[Any]] | None:
    """The SQL and parameters listing the items that match every filter given.

    Rows are :data:`LISTING_COLUMNS`. Live: not expired at ``now_ms``, and
    not withdrawn unless ``include_withdrawn``. ``tag`` is normalised as
    :func:`meshnode.records.normalize_tags` does. With ``ranked``, rows come
    by their author's level in :data:`TRUST_TABLE` first (highest first;
    unlisted authors at 0). Then, with ``query`` (user text, see
    :func:`fts_query`), by relevance, otherwise newest first by last update
    clamped to ``now_ms``; ties by id. With ``near``, only items near that
    place, and before newest (or after relevance) the nearest first; the
    connection must have :data:`DISTANCE_FUNCTION` (:func:`location_km`).
    With ``excluding``, items whose id is in :data:`EXCLUDED_TABLE` are left
    out, before the limit. With ``swarms``, only items of those swarms (the
    joined ones: a swarm left hides its records, which stay stored).
    ``None`` when nothing can match (no
    positive limit, a tag no item can carry, a query without a word, no swarm).
    Raises :class:`BadValue` for an unknown type or kind.
    """
    if type not in ITEM_TYPES:
        raise BadValue(f"type: expected one of {list(ITEM_TYPES)}, found {type!r}")
    if kind is not None and kind not in records.ITEM_KINDS:
        raise BadValue(f"kind: expected one of {list(records.ITEM_KINDS)}, found {kind!r}")
    if limit <= 0 or (swarms is not None and not swarms):
        return None
    where, params = equal_to([("i.type", type), ("i.swarm", swarm), ("i.kind", kind), ("i.author", author)])
    if swarms is not None:
        where.append(f"i.swarm IN ({', '.join('?' * len(swarms))})")
        params.extend(swarms)
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
    if excluding:
        where.append(f"r.id NOT IN (SELECT id FROM {EXCLUDED_TABLE})")
    by_distance, distance_params = "", list[Any]()
    if near is not None:
        where.append(
            f"substr(i.location, 1, {near.precision}) IN ({', '.join('?' * len(near.prefixes))})"
            f" AND {DISTANCE_FUNCTION}(i.location, ?, ?) <= ?"
        )
        params.extend([*near.prefixes, near.lat, near.lon, near.km])
        by_distance, distance_params = f"{DISTANCE_FUNCTION}(i.location, ?, ?), ", [near.lat, near.lon]
    join = f" LEFT JOIN {TRUST_TABLE} t ON t.author = i.author" if ranked else ""
    by_trust = "coalesce(t.level, 0) DESC, " if ranked else ""
    if query is None:
        sql = (
            f"SELECT {LISTING_COLUMNS} FROM items i JOIN records r ON r.n = i.n{join}"
            f" WHERE {' AND '.join(where)}"
            f" ORDER BY {by_trust}{by_distance}min(i.updated_ts, ?) DESC, r.id DESC LIMIT ?"
        )
        return sql, [*params, *distance_params, now_ms, limit]
    match = fts_query(query)
    if match is None:
        return None
    sql = (
        f"SELECT {LISTING_COLUMNS} FROM items_fts JOIN items i ON i.n = items_fts.rowid"
        f" JOIN records r ON r.n = i.n{join}"
        f" WHERE items_fts MATCH ? AND {' AND '.join(where)}"
        f" ORDER BY {by_trust}items_fts.rank, {by_distance}r.id LIMIT ?"
    )
    return sql, [match, *params, *distance_params, limit]
