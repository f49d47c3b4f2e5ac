"""The ring and ringmove record types: round trips and refusals."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode import records as r
from meshnode.errors import MeshError, ValidationError
from tests.conftest import NOW, SWARM, Author

A, B, C = Author(1), Author(2), Author(3)
OFFERS = tuple(bytes([i]) * 32 for i in (11, 12, 13))
RING_ID = bytes(range(32))


def ring(**kw) -> r.RingBody:
    fields = dict(parties=(A.public, B.public, C.public), offers=OFFERS)
    return r.RingBody(**{**fields, **kw})


@pytest.mark.parametrize(
    "body",
    [
        ring(),
        ring(note="ladder, drill, jam", expires=NOW + 60_000),
        r.RingMoveBody(ring=RING_ID, action="accept"),
        r.RingMoveBody(ring=RING_ID, action="decline", note="gave it away already"),
        r.RingMoveBody(ring=RING_ID, action="complete"),
    ],
    ids=repr,
)
def test_ring_records_round_trip_and_verify(body):
    record = A.sign(body)
    assert record.type == ("ring" if isinstance(body, r.RingBody) else "ringmove")
    back = r.open_record(record.encoded, now_ms=NOW, swarms={SWARM})
    assert back == record and back.id == record.id


keys = st.lists(st.binary(min_size=32, max_size=32), min_size=3, max_size=5, unique=True)


@given(keys, st.data(), st.text(max_size=40).filter(lambda t: t.isprintable()), st.integers(0, 10**6))
def test_any_ring_of_three_to_five_round_trips(others, data, note, later):
    author = Author(9)
    parties = list(others[:-1])
    parties.insert(data.draw(st.integers(0, len(parties))), author.public)
    offers = data.draw(
        st.lists(
            st.binary(min_size=32, max_size=32), min_size=len(parties), max_size=len(parties), unique=True
        )
    )
    body = r.RingBody(
        parties=tuple(parties), offers=tuple(offers), note=note, expires=None if later == 0 else NOW + later
    )
    record = author.sign(body)
    assert r.decode_record(record.encoded) == record
    assert r.body_from_map("ring", r.body_to_map(body)) == body


@pytest.mark.parametrize(
    "body, words",
    [
        (ring(parties=(A.public, B.public), offers=OFFERS[:2]), "3 to 5 parties"),
        (
            ring(
                parties=(A.public, B.public, C.public, *(bytes([i]) * 32 for i in range(3))),
                offers=tuple(bytes([i]) * 32 for i in range(20, 26)),
            ),
            "3 to 5 parties",
        ),
        (ring(parties=(A.public, B.public, B.public)), "appears twice"),
        (ring(offers=OFFERS[:2]), "one offer per party"),
        (ring(offers=(OFFERS[0], OFFERS[0], OFFERS[1])), "twice"),
        (ring(parties=(A.public, B.public, b"short")), "parties"),
        (ring(note="\x00"), "control"),
        (r.RingMoveBody(ring=RING_ID, action="cancel"), "action"),
        (r.RingMoveBody(ring=b"short", action="accept"), "ring"),
    ],
)
def test_bad_ring_bodies_are_refused_when_signing(body, words):
    with pytest.raises(ValidationError, match=words):
        A.sign(body)


def test_a_ring_must_be_proposed_by_one_of_its_parties():
    outsider = Author(4)
    with pytest.raises(ValidationError, match="one of its parties"):
        outsider.sign(ring())
    # ...also when decoding a record someone else signed with such a body.
    good = A.sign(ring())
    forged = dataclasses.replace(good, author=outsider.public, sig=b"")
    forged = dataclasses.replace(forged, sig=bytes(outsider.key.sign(r.signing_bytes(forged)).signature))
    with pytest.raises(ValidationError, match="one of its parties"):
        r.decode_record(forged.encoded)


@pytest.mark.parametrize(
    "change",
    [
        {"parties": []},
        {"parties": "abc"},
        {"offers": [OFFERS[0]]},
        {"note": ""},
        {"expires": None},
        {"extra": 1},
    ],
    ids=repr,
)
def test_bad_ring_maps_are_refused_when_decoding(change):
    value = {**r.body_to_map(ring()), **change}
    with pytest.raises(MeshError):
        r.body_from_map("ring", value)
    move = {**r.body_to_map(r.RingMoveBody(ring=RING_ID, action="accept")), "action": "maybe"}
    with pytest.raises(ValidationError, match="action"):
        r.body_from_map("ringmove", move)
