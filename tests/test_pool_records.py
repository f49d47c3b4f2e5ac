"""The pool, pledge and poolmove record types: round trips and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode import records as r
from meshnode.errors import MeshError, ValidationError
from tests.conftest import NOW, SWARM, Author

A = Author(1)
POOL_ID = bytes(range(32))
DAY = 86_400_000


def pool(**kw) -> r.PoolBody:
    fields = dict(
        title="Organic apples, 20 kg crates",
        supplier="Ferme du Coin",
        unit_price=1800,
        min=10,
        max=30,
        closes=NOW + 14 * DAY,
    )
    return r.PoolBody(**{**fields, **kw})


@pytest.mark.parametrize(
    "body",
    [
        pool(),
        pool(unit="crate", unit_price=0, min=1, max=1),
        r.PledgeBody(pool=POOL_ID, quantity=2),
        r.PledgeBody(pool=POOL_ID, quantity=0),
        r.PoolMoveBody(pool=POOL_ID, action="confirm"),
        r.PoolMoveBody(pool=POOL_ID, action="cancel", note="the farm lost its harvest"),
        r.PoolMoveBody(pool=POOL_ID, action="delivered"),
    ],
    ids=repr,
)
def test_pool_records_round_trip_and_verify(body):
    record = A.sign(body)
    assert record.type == {r.PoolBody: "pool", r.PledgeBody: "pledge", r.PoolMoveBody: "poolmove"}[type(body)]
    back = r.open_record(record.encoded, now_ms=NOW, swarms={SWARM})
    assert back == record and back.id == record.id


def test_the_supplier_is_from_on_the_wire_and_defaults_are_omitted():
    assert r.body_to_map(pool()) == {
        "title": "Organic apples, 20 kg crates",
        "from": "Ferme du Coin",
        "unit_price": 1800,
        "min": 10,
        "max": 30,
        "closes": NOW + 14 * DAY,
    }
    assert r.body_to_map(r.PledgeBody(pool=POOL_ID, quantity=0)) == {"pool": POOL_ID, "quantity": 0}


def test_a_pool_record_stays_current_after_it_closes():
    # ``closes`` is not an expiry: the pool must still sync once closed (to be confirmed and delivered).
    record = A.sign(pool(closes=NOW + 1))
    assert record.expires is None
    assert r.open_record(record.encoded, now_ms=NOW + DAY, swarms={SWARM}) == record


line = st.text(st.characters(blacklist_categories=("Cc", "Cf", "Zl", "Zp", "Cs")), min_size=1, max_size=40)


@settings(max_examples=100, deadline=None)
@given(
    line.filter(str.strip),
    line.filter(str.strip),
    st.integers(0, r.MAX_UNIT_PRICE),
    st.integers(1, r.MAX_QUANTITY),
    st.integers(0, r.MAX_QUANTITY),
    st.integers(0, 10**12),
    st.one_of(st.just(""), line),
)
def test_any_valid_pool_round_trips(title, supplier, price, lo, extra, closes, unit):
    body = r.PoolBody(
        title=title,
        supplier=supplier,
        unit_price=price,
        min=lo,
        max=min(lo + extra, r.MAX_QUANTITY),
        closes=closes,
        unit=unit,
    )
    record = A.sign(body, ts=0)
    assert r.decode_record(record.encoded) == record
    assert r.body_from_map("pool", r.body_to_map(body)) == body


@pytest.mark.parametrize(
    "body, words",
    [
        (pool(title="  "), "title"),
        (pool(title="two\nlines"), "title"),
        (pool(supplier=""), "from"),
        (pool(supplier=" "), "from"),
        (pool(unit_price=-1), "unit_price"),
        (pool(unit_price=r.MAX_UNIT_PRICE + 1), "unit_price"),
        (pool(min=0), "min"),
        (pool(min=10, max=9), "max: expected at least min"),
        (pool(max=r.MAX_QUANTITY + 1), "max"),
        (pool(closes=-1), "closes"),
        (pool(closes=True), "closes"),
        (pool(unit="x" * 33), "unit"),
        (pool(min=2.5), "min"),
        (r.PledgeBody(pool=POOL_ID, quantity=-1), "quantity"),
        (r.PledgeBody(pool=POOL_ID, quantity=r.MAX_QUANTITY + 1), "quantity"),
        (r.PledgeBody(pool=b"short", quantity=1), "pool"),
        (r.PoolMoveBody(pool=POOL_ID, action="accept"), "action"),
        (r.PoolMoveBody(pool=b"short", action="cancel"), "pool"),
        (r.PoolMoveBody(pool=POOL_ID, action="cancel", note="\x00"), "control"),
    ],
)
def test_bad_pool_bodies_are_refused_when_signing(body, words):
    with pytest.raises(ValidationError, match=words):
        A.sign(body)


@pytest.mark.parametrize(
    "change",
    [
        {"from": ""},
        {"from": None},
        {"unit": ""},
        {"supplier": "Ferme du Coin"},
        {"min": "10"},
        {"max": 5},
        {"closes": 1.5},
        {"extra": 1},
    ],
    ids=repr,
)
def test_bad_pool_maps_are_refused_when_decoding(change):
    value = {**r.body_to_map(pool()), **change}
    with pytest.raises(MeshError):
        r.body_from_map("pool", value)


@pytest.mark.parametrize(
    "rtype, value",
    [
        ("pledge", {"pool": POOL_ID}),
        ("pledge", {"pool": POOL_ID, "quantity": True}),
        ("pledge", {"pool": POOL_ID, "quantity": 1, "note": "x"}),
        ("pledge", {"pool": POOL_ID[:5], "quantity": 1}),
        ("poolmove", {"pool": POOL_ID, "action": "maybe"}),
        ("poolmove", {"pool": POOL_ID, "action": "cancel", "note": ""}),
        ("poolmove", {"action": "cancel"}),
    ],
    ids=repr,
)
def test_bad_pledge_and_move_maps_are_refused_when_decoding(rtype, value):
    with pytest.raises(MeshError):
        r.body_from_map(rtype, value)
