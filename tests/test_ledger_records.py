"""The transfer record type: round trips and refusals."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode import records as r
from meshnode.errors import MeshError, ValidationError
from tests.conftest import NOW, SWARM, Author

A, B = Author(1), Author(2)
PREV = bytes(range(32))
IDS = tuple(bytes([i]) * 32 for i in (3, 5, 7))


def transfer(**kw) -> r.TransferBody:
    fields = dict(to=B.public, amount=200, seq=2, prev=PREV)
    return r.TransferBody(**{**fields, **kw})


@pytest.mark.parametrize(
    "body",
    [
        transfer(seq=1, prev=None),
        transfer(),
        transfer(memo="2 hours of help moving", trade=IDS[0], acks=IDS),
        transfer(amount=r.MAX_AMOUNT, seq=2**63 - 1),
    ],
    ids=repr,
)
def test_transfer_records_round_trip_and_verify(body):
    record = A.sign(body)
    assert record.type == "transfer"
    back = r.open_record(record.encoded, now_ms=NOW, swarms={SWARM})
    assert back == record and back.id == record.id


ids = st.lists(st.binary(min_size=32, max_size=32), max_size=r.MAX_ACKS, unique=True).map(
    lambda xs: tuple(sorted(xs))
)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, r.MAX_AMOUNT),
    st.integers(1, 10**6),
    ids,
    st.text(max_size=40).filter(lambda t: t.isprintable()),
    st.none() | st.binary(min_size=32, max_size=32),
)
def test_any_valid_transfer_round_trips(amount, seq, acks, memo, trade):
    body = r.TransferBody(
        to=B.public,
        amount=amount,
        seq=seq,
        prev=None if seq == 1 else PREV,
        acks=acks,
        memo=memo,
        trade=trade,
    )
    record = A.sign(body)
    assert r.decode_record(record.encoded) == record
    assert r.body_from_map("transfer", r.body_to_map(body)) == body


@pytest.mark.parametrize(
    "body, words",
    [
        (transfer(amount=0), "amount"),
        (transfer(amount=-5), "amount"),
        (transfer(amount=r.MAX_AMOUNT + 1), "amount"),
        (transfer(amount=True), "amount"),
        (transfer(seq=0, prev=None), "seq"),
        (transfer(seq=1), "first transfer"),
        (transfer(seq=2, prev=None), "first transfer"),
        (transfer(prev=b"short"), "prev"),
        (transfer(to=b"short"), "to"),
        (transfer(acks=(IDS[1], IDS[0])), "sorted"),
        (transfer(acks=(IDS[0], IDS[0])), "sorted"),
        (transfer(acks=tuple(bytes([i // 256, i % 256]) * 16 for i in range(r.MAX_ACKS + 1))), "at most"),
        (transfer(acks=(b"short",)), "acks"),
        (transfer(acks=[IDS[0]]), "tuple"),
        (transfer(memo="\x00"), "control"),
        (transfer(memo="x" * (r.MAX_NOTE + 1)), "memo"),
        (transfer(trade=b"short"), "trade"),
    ],
    ids=repr,
)
def test_bad_transfer_bodies_are_refused_when_signing(body, words):
    with pytest.raises(ValidationError, match=words):
        A.sign(body)


def test_a_transfer_must_pay_someone_else():
    with pytest.raises(ValidationError, match="someone else"):
        B.sign(transfer())
    # ...also when decoding a record someone else signed with such a body.
    good = A.sign(transfer())
    forged = dataclasses.replace(good, author=B.public, sig=b"")
    forged = dataclasses.replace(forged, sig=bytes(B.key.sign(r.signing_bytes(forged)).signature))
    with pytest.raises(ValidationError, match="someone else"):
        r.decode_record(forged.encoded)


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 0},
        {"amount": 1.5},
        {"amount": True},
        {"seq": 0},
        {"seq": "2"},
        {"prev": None},
        {"prev": b"x" * 31},
        {"acks": []},
        {"acks": [IDS[2], IDS[0]]},
        {"acks": IDS[0]},
        {"memo": ""},
        {"trade": None},
        {"to": b"x" * 33},
        {"extra": 1},
    ],
    ids=repr,
)
def test_bad_transfer_maps_are_refused_when_decoding(change):
    value = {**r.body_to_map(transfer()), **change}
    with pytest.raises(MeshError):
        r.body_from_map("transfer", value)


def test_missing_required_fields_are_refused():
    for name in ("to", "amount", "seq"):
        value = r.body_to_map(transfer())
        del value[name]
        with pytest.raises(ValidationError, match=name):
            r.body_from_map("transfer", value)


def test_defaults_are_omitted_in_the_canonical_map():
    assert r.body_to_map(transfer(seq=1, prev=None)) == {"to": B.public, "amount": 200, "seq": 1}
