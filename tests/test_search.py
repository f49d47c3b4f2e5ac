"""Search people use: OR, phrases and prefixes in queries; near a place (geohash); by swarm."""

from __future__ import annotations

import math
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode import geohash
from meshnode.errors import BadValue
from meshnode.store import Store
from meshnode.store.search import (
    DEFAULT_NEAR_KM,
    MAX_NEAR_CELLS,
    MAX_QUERY_TERMS,
    Near,
    fts_query,
    location_km,
)
from tests import test_store
from tests.test_store import (
    ALICE,
    BOB,
    CAROL,
    HOUR,
    NOW,
    OTHER_SWARM,
    SWARM,
    _key,
    offer,
    pub,
    titles,
    want,
)

store = test_store.store  # fixtures: an empty store; a catalogue of four offers
catalogue = test_store.catalogue

# --- geohash: known coordinates ------------------------------------------------------


def test_decode_known_cells():
    c = geohash.decode("u4pruydqqvj")  # Wikipedia's example: 57.64911, 10.40744 (Jutland)
    assert c.lat == pytest.approx(57.64911, abs=1e-5) and c.lon == pytest.approx(10.40744, abs=1e-5)
    c = geohash.decode("ezs42")  # 42.605, -5.603 (León), cell +-0.022 degrees
    assert c.lat == pytest.approx(42.605, abs=0.001) and c.lon == pytest.approx(-5.603, abs=0.001)
    assert c.lat_err == pytest.approx(180 / 2**12 / 2) and c.lon_err == pytest.approx(360 / 2**13 / 2)
    c = geohash.decode("s")  # the cell just north-east of (0, 0)
    assert (c.lat, c.lon, c.lat_err, c.lon_err) == (22.5, 22.5, 22.5, 22.5)
    assert geohash.decode("0").lat < 0 and geohash.decode("0").lon < 0
    assert geohash.decode("gcpvj0").lat == pytest.approx(51.50, abs=0.01)  # London
    assert geohash.decode("gcpvj0").lon == pytest.approx(-0.13, abs=0.01)


def test_encode_known_points():
    assert geohash.encode(57.64911, 10.40744, 11) == "u4pruydqqvj"
    assert geohash.encode(42.605, -5.603, 5) == "ezs42"
    assert geohash.encode(51.5074, -0.1278, 6) == "gcpvj0"
    assert geohash.encode(-33.8688, 151.2093, 5) == "r3gx2"  # Sydney
    assert geohash.encode(90.0, 180.0, 3) == "zzz" and geohash.encode(-90.0, -180.0, 3) == "000"


def test_distance_known_pairs():
    assert geohash.distance_km(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(
        343.5, abs=1
    )  # London-Paris
    assert geohash.distance_km(40.7128, -74.0060, 51.5074, -0.1278) == pytest.approx(
        5570, abs=10
    )  # NY-London
    assert geohash.distance_km(0, 0, 0, 180) == pytest.approx(geohash.MAX_DISTANCE_KM)
    assert geohash.distance_km(0, 179.99, 0, -179.99) == pytest.approx(2.2, abs=0.1)  # across the date line
    assert geohash.distance_km(10, 10, 10, 10) == 0


@pytest.mark.parametrize("bad", ["", "a", "U4PRUY", "u4pruyi", "u4 pr", "x" * 13, "ü"])
def test_decode_refuses_what_is_not_a_geohash(bad):
    with pytest.raises(BadValue, match="geohash"):
        geohash.decode(bad)


@given(st.text(alphabet=geohash.ALPHABET, min_size=1, max_size=geohash.MAX_PRECISION))
def test_encode_of_a_cells_centre_names_the_cell(h):
    c = geohash.decode(h)
    assert geohash.encode(c.lat, c.lon, len(h)) == h
    assert geohash.decode(h[:1]).lat_err >= c.lat_err  # a prefix is a bigger cell holding it
    p = geohash.decode(h[:-1]) if len(h) > 1 else None
    if p is not None:
        assert abs(p.lat - c.lat) <= p.lat_err and abs(p.lon - c.lon) <= p.lon_err


def destination(lat, lon, km, bearing_deg):
    """The point ``km`` from (lat, lon) along the great circle at ``bearing_deg``."""
    d = km / geohash.EARTH_RADIUS_KM
    b, p1, l1 = math.radians(bearing_deg), math.radians(lat), math.radians(lon)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), (math.degrees(l2) + 540) % 360 - 180


@settings(max_examples=300, deadline=None)
@given(
    lat=st.floats(-89.9, 89.9),
    lon=st.floats(-180, 180),
    km=st.floats(0.01, 3000),
    fraction=st.floats(0, 1),
    bearing=st.floats(0, 360),
    precision=st.integers(1, 6),
)
def test_covering_cells_hold_every_point_of_the_circle(lat, lon, km, fraction, bearing, precision):
    if geohash.covering_count(lat, lon, km, precision) > 4096:
        return  # too many to list; the search never asks for more than MAX_NEAR_CELLS
    cells = geohash.covering_cells(lat, lon, km, precision)
    assert len(cells) == geohash.covering_count(lat, lon, km, precision) == len(set(cells))
    qlat, qlon = destination(lat, lon, km * fraction * 0.999999, bearing)
    assert geohash.encode(qlat, qlon, precision) in cells


def test_covering_cells_near_a_pole_and_across_the_date_line():
    assert len(geohash.covering_cells(89.99, 0, 5, 2)) == 32  # every longitude
    cells = geohash.covering_cells(0, 179.999, 5, 4)
    assert geohash.encode(0.001, -179.999, 4) in cells and geohash.encode(0.001, 179.999, 4) in cells


# --- the query language ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("drill", '"drill"'),
        ("cordless drill", '"cordless" AND "drill"'),
        ("drill OR saw", '("drill" OR "saw")'),
        ("drill OR saw ladder", '("drill" OR "saw") AND "ladder"'),
        ("a OR b OR c d", '("a" OR "b" OR "c") AND "d"'),
        ("drill or saw", '"drill" AND "or" AND "saw"'),  # lower case: a word
        ('"cordless drill"', '"cordless drill"'),
        ('"cordless drill" OR hammer', '("cordless drill" OR "hammer")'),
        ('"cordless dri"*', '"cordless dri"*'),
        ("bik*", '"bik"*'),
        ('"unclosed phrase', '"unclosed phrase"'),
        ('"" drill', '"drill"'),
        ("OR drill", '"drill"'),  # an OR with no term on one side is ignored
        ("drill OR", '"drill"'),
        ("drill OR OR saw", '("drill" OR "saw")'),
        ("OR* drill", '"OR"* AND "drill"'),
        (
            'NEAR(drill) title:"x" -y AND NOT',
            '"NEAR" AND "drill" AND "title" AND "x" AND "y" AND "AND" AND "NOT"',
        ),
        ('dri"ll', '"dri" AND "ll"'),
    ],
)
def test_fts_query_language(text, query):
    assert fts_query(text) == query


@pytest.mark.parametrize("text", ["", "OR", "OR OR", '""', '"*"', "(", "*"])
def test_fts_query_without_a_word_is_none(text):
    assert fts_query(text) is None


def test_fts_query_is_bounded():
    words = fts_query(" ".join(f"w{i}" for i in range(100)))
    assert words.count('"') == 2 * MAX_QUERY_TERMS
    phrase = fts_query('"' + " ".join(f"w{i}" for i in range(100)) + '" more')
    assert phrase == '"' + " ".join(f"w{i}" for i in range(MAX_QUERY_TERMS)) + '"'
    ors = fts_query(" OR ".join(f"w{i}" for i in range(100)))
    assert ors.count(" OR ") == MAX_QUERY_TERMS - 1


# --- searching the store --------------------------------------------------------------


@pytest.fixture
def tools(catalogue):
    """test_store's catalogue and a second drill: Cordless drill, Children's bike, Café table, Lawn mower."""
    catalogue.add_record(offer(title="Drill bits", desc="Cordless compatible", seq=5), now_ms=NOW)
    return catalogue


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("drill OR bike", {"Cordless drill", "Lawn mower", "Children's bike", "Drill bits"}),
        ("bike OR table", {"Children's bike", "Café table"}),
        ("bike OR table oak", {"Café table"}),
        ("drill or bike", set()),  # lower-case "or" is a word no item has
        ('"cordless drill"', {"Cordless drill"}),  # not "Drill bits", "Cordless compatible"
        ("cordless drill", {"Cordless drill", "Drill bits"}),
        ('"drill cordless"', set()),  # a phrase keeps its order
        ('"cordless dri"*', {"Cordless drill"}),
        ("bik*", {"Children's bike"}),
        ('"two batteries" OR "solid oak"', {"Cordless drill", "Café table"}),
        ('kids OR "solid oak" OR mower', {"Children's bike", "Café table", "Lawn mower"}),
    ],
)
def test_search_or_phrases_prefixes(tools, query, expected):
    assert set(titles(tools, query=query)) == expected


def test_or_ranks_title_hits_first(tools):
    assert titles(tools, query="mower OR batteries") == ["Lawn mower", "Cordless drill"]


HOSTILE = st.lists(
    st.sampled_from(
        ['"', "*", "OR", "AND", "NOT", "NEAR", "(", ")", ":", "^", "-", "+", " ", "drill", "bike"]
    )
    | st.text(max_size=12),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(HOSTILE)
def test_no_text_makes_fts5_fail(text):
    """Every text gives None or a query FTS5 accepts (run against a real FTS5 table)."""
    match = fts_query(text)
    if match is None:
        return
    conn = _fts_table()
    conn.execute("SELECT rowid FROM t WHERE t MATCH ?", (match,)).fetchall()


_FTS: list[sqlite3.Connection] = []


def _fts_table() -> sqlite3.Connection:
    if not _FTS:
        conn = sqlite3.connect(":memory:")
        conn.execute(
            "CREATE VIRTUAL TABLE t USING fts5 (a, tokenize = 'porter unicode61 remove_diacritics 2')"
        )
        conn.execute("INSERT INTO t VALUES ('cordless drill or bike and not near')")
        _FTS.append(conn)
    return _FTS[0]


@pytest.mark.parametrize("text", ['drill OR "', '"OR"', 'OR "OR" OR', "\x00 OR \x00", "ﬁ OR ﬂ", '"\ud800"'])
def test_hostile_or_and_quotes_through_the_store(catalogue, text):
    assert isinstance(catalogue.items(query=text, now_ms=NOW), list)


# --- near a place --------------------------------------------------------------------

CENTRE = "u4pruy"
C = geohash.decode(CENTRE)


def at(km, bearing=0.0, precision=6):
    """The geohash (of ``precision``) of the point ``km`` from CENTRE's centre."""
    return geohash.encode(*destination(C.lat, C.lon, km, bearing), precision)


@pytest.fixture
def places(store):
    records = [
        offer(title="Here", where=CENTRE, seq=1),
        offer(title="Half a km north", where=at(0.5, 0), seq=2),
        offer(title="1.9 km east", where=at(1.9, 90), seq=3),
        offer(title="4 km south", where=at(4, 180), seq=4),
        offer(title="Nowhere", seq=5),
        offer(title="Far", where="gcpvj0", seq=6),
        offer(BOB, "Bob's, 1.2 km west", where=at(1.2, 270), seq=1),
    ]
    store.add_records(records, now_ms=NOW)
    return store


def dist(where):
    return location_km(where, C.lat, C.lon)


def test_near_filters_by_distance_nearest_first(places):
    assert titles(places, near=CENTRE) == ["Here", "Half a km north"]  # default: 1 km
    assert DEFAULT_NEAR_KM == 1.0
    assert titles(places, near=CENTRE, km=2) == [
        "Here",
        "Half a km north",
        "Bob's, 1.2 km west",
        "1.9 km east",
    ]
    assert titles(places, near=" U4PRUY ", km=5)[-1] == "4 km south"  # case and spaces forgiven
    assert "Nowhere" not in titles(places, near=CENTRE, km=20000)  # no where: not near anything
    assert "Far" in titles(places, near=CENTRE, km=1200)
    assert titles(places, near="gcpvj0", km=0.5) == ["Far"]


def test_near_with_trust_query_and_limit(places):
    ranked = titles(places, near=CENTRE, km=2, trust={pub(BOB): 0.5})
    assert ranked == ["Bob's, 1.2 km west", "Here", "Half a km north", "1.9 km east"]
    assert titles(places, near=CENTRE, km=2, limit=2, trust={pub(BOB): 0.5}) == ["Bob's, 1.2 km west", "Here"]
    assert titles(places, near=CENTRE, km=2, query="km") == [
        "Half a km north",
        "1.9 km east",
        "Bob's, 1.2 km west",
    ]
    assert titles(places, near=CENTRE, km=2, query="west OR east") == ["1.9 km east", "Bob's, 1.2 km west"]
    assert titles(places, near=CENTRE, km=2, author=pub(BOB)) == ["Bob's, 1.2 km west"]


def test_near_page_is_full_however_many_far_newer_items(store):
    """300 newer items just outside the circle (same coarse cells) do not shorten or push off the page."""
    outside = [offer(_key(f"s{i}"), f"Outside {i}", where=at(2.6, i * 1.2), ts=NOW + i) for i in range(300)]
    inside = [offer(CAROL, f"Inside {i}", where=at(0.3 * i, 45), seq=i + 1, ts=NOW - HOUR) for i in range(6)]
    store.add_records(outside + inside, now_ms=NOW + HOUR)
    km = {r.body.title: dist(r.body.where) for r in outside + inside}
    assert max(km[r.body.title] for r in inside) <= 2 < min(km[r.body.title] for r in outside)
    page = titles(store, near=CENTRE, km=2, limit=5)
    assert len(page) == 5 and all(t.startswith("Inside") for t in page)
    assert [km[t] for t in page] == sorted(km[t] for t in page)  # nearest first
    assert max(km[t] for t in page) <= min(km[r.body.title] for r in inside if r.body.title not in page)
    assert len(titles(store, near=CENTRE, km=2, limit=100)) == 6
    assert len(titles(store, near=CENTRE, km=4, limit=1000)) == 306


def test_near_coarse_where_counts_by_its_cells_centre(store):
    coarse = CENTRE[:4]  # a cell of about 20 by 40 km, whose centre is some km from CENTRE's
    store.add_records([offer(title="Somewhere in town", where=coarse)], now_ms=NOW)
    d = dist(coarse)
    assert 1 < d < 30
    assert titles(store, near=CENTRE, km=d * 0.99) == []
    assert titles(store, near=CENTRE, km=d * 1.01) == ["Somewhere in town"]


@settings(max_examples=60, deadline=None)
@given(
    spots=st.lists(
        st.tuples(st.floats(0, 60), st.floats(0, 360), st.integers(1, 6)), min_size=1, max_size=25
    ),
    query=st.tuples(st.floats(0, 20), st.floats(0, 360), st.integers(1, 8)),
    km=st.floats(0.05, 80),
)
def test_near_is_exactly_the_brute_force_answer(spots, query, km):
    """The bounding-box prefilter never loses an item the exact distance keeps, whatever the precisions."""
    wheres = [at(d, b, p) for d, b, p in spots]
    centre = at(*query)
    with Store.open(":memory:") as s:
        s.add_records(
            [offer(title=f"item {i}", where=w, seq=i + 1) for i, w in enumerate(wheres)], now_ms=NOW
        )
        c = geohash.decode(centre)
        expected = {f"item {i}" for i, w in enumerate(wheres) if location_km(w, c.lat, c.lon) <= km}
        assert set(titles(s, near=centre, km=km, limit=1000)) == expected


@pytest.mark.parametrize(
    ("near", "km", "match"),
    [
        ("aaa", None, "near"),
        ("", None, "near"),
        ("u4pruy" * 3, None, "near"),
        ("u4pruy", 0, "km"),
        ("u4pruy", -1, "km"),
        ("u4pruy", math.nan, "km"),
        ("u4pruy", math.inf, "km"),
        ("u4pruy", 30000, "km"),
        ("u4pruy", True, "km"),
        (None, 2, "km"),
    ],
)
def test_bad_near_or_km_is_refused(places, near, km, match):
    with pytest.raises(BadValue, match=match):
        places.items(near=near, km=km, now_ms=NOW)


def test_near_uses_few_cells():
    for where, km in [(CENTRE, 0.1), (CENTRE, 1), (CENTRE, 50), ("zzzzzz", 5), ("0", 20000), ("s00000", 1)]:
        near = Near.parse(where, km)
        cells = [p for p in near.prefixes if len(p) == near.precision]
        assert 1 <= len(cells) <= MAX_NEAR_CELLS


# --- by swarm, with everything else ------------------------------------------------------


def test_swarm_and_near_and_query_combine(store):
    store.add_records(
        [
            offer(title="Ladder", where=CENTRE, seq=1),
            offer(title="Ladder", where=CENTRE, seq=2, swarm=OTHER_SWARM),
            want(title="Ladder", where=CENTRE, seq=3),
            offer(BOB, "Long ladder", where=at(0.5), seq=1, swarm=OTHER_SWARM),
        ],
        now_ms=NOW,
    )
    found = store.items(query='ladder OR "long ladder"', near=CENTRE, swarm=OTHER_SWARM, now_ms=NOW)
    assert [(i.title, i.swarm) for i in found] == [("Long ladder", OTHER_SWARM), ("Ladder", OTHER_SWARM)]
    assert [i.title for i in store.items(swarm=SWARM, near=CENTRE, now_ms=NOW)] == ["Ladder"]
    assert [i.title for i in store.items("want", swarm=SWARM, near=CENTRE, now_ms=NOW)] == ["Ladder"]
    assert titles(store, swarm=OTHER_SWARM, trust={pub(BOB): 1.0}) == ["Long ladder", "Ladder"]
    assert titles(store, near=CENTRE, km=0.01, author=pub(ALICE)) == ["Ladder", "Ladder"]
