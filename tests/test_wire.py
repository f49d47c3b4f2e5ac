"""The canonical CBOR module: round trips, strictness, and fuzzing."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode import wire
from meshnode.errors import DecodeError

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(plain)
def test_round_trip_is_identity_and_canonical(value):
    data = wire.encode(value)
    assert wire.decode(data, max_depth=64, max_size=1 << 20) == value
    assert wire.encode(wire.decode(data, max_depth=64, max_size=1 << 20)) == data


@given(st.binary(max_size=200))
def test_decoding_random_bytes_raises_only_decode_error(data):
    try:
        wire.decode(data)
    except DecodeError:
        pass


@given(plain, st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_a_changed_byte_is_refused_or_decodes_to_a_value_with_other_bytes(value, pos, byte):
    data = wire.encode(value)
    pos %= len(data)
    if data[pos] == byte:
        return
    mutated = data[:pos] + bytes([byte]) + data[pos + 1 :]
    try:
        decoded = wire.decode(mutated, max_depth=64, max_size=1 << 20)
    except DecodeError:
        return
    # Whatever decodes is canonical: it has exactly one encoding, the mutated bytes.
    assert wire.encode(decoded) == mutated != data


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "no bytes"),
        (bytes.fromhex("a2616101616102"), "duplicate"),  # {"a":1,"a":2}
        (bytes.fromhex("9f01ff"), "indefinite"),  # [_ 1]
        (bytes.fromhex("1801"), "non-canonical"),  # 1 encoded in two bytes
        (bytes.fromhex("a2616202616101"), "non-canonical"),  # keys out of order
        (bytes.fromhex("0100"), "trailing"),  # 1 followed by garbage
        (bytes.fromhex("c11a00000000"), "tag"),  # epoch datetime
        (bytes.fromhex("c249010000000000000000"), "tag"),  # bignum
        (bytes.fromhex("d8ff00"), "tag"),  # unknown tag
        (bytes.fromhex("fb3ff0000000000000"), "float"),  # 1.0 as float64
        (bytes.fromhex("a10101"), "map keys"),  # {1: 1}
        (bytes.fromhex("5b4000000000000000") + b"abc", "malformed"),  # 2^62-byte string
        (b"\x81" * 100 + b"\x00", "nesting"),
        (bytes.fromhex("62ff00"), "malformed"),  # invalid utf-8
    ],
)
def test_refusals_name_the_problem(data, why):
    with pytest.raises(DecodeError) as info:
        wire.decode(data)
    assert why.split()[0].lower() in str(info.value).lower() or info.value.code == "malformed"


def test_oversize_input_is_refused_before_decoding():
    with pytest.raises(DecodeError, match="at most 16 bytes"):
        wire.decode(cbor2.dumps("x" * 100), max_size=16)


@pytest.mark.parametrize(
    "bad",
    [1.5, {1: 2}, object(), 2**64, {"a": {1.0}}],
    ids=["float", "int-key", "object", "2**64", "set"],  # stable ids: parallel workers collect the same
)
def test_encode_refuses_what_decode_would_refuse(bad):
    with pytest.raises(DecodeError):
        wire.encode(bad)


@given(st.dictionaries(st.text(max_size=8), plain, max_size=30), st.text(max_size=8))
def test_a_map_entry_cut_from_the_bytes_equals_the_map_encoded_without_it(value, key):
    """without_map_entry gives encode(map minus key); None when the key is absent."""
    keys = [key, *value]
    for k in keys:
        cut = wire.without_map_entry(wire.encode(value), k)
        if k in value:
            assert cut == wire.encode({x: v for x, v in value.items() if x != k})
        else:
            assert cut is None


def test_a_map_entry_is_cut_only_from_whole_maps():
    entries = {f"k{i:02}": i for i in range(24)}  # 24 entries: a two-byte head, 23: one byte
    assert wire.without_map_entry(wire.encode(entries), "k05") == wire.encode(
        {k: v for k, v in entries.items() if k != "k05"}
    )
    assert wire.without_map_entry(wire.encode([1, 2]), "a") is None  # not a map
    assert wire.without_map_entry(wire.encode({"a": b"xyz"})[:-1], "a") is None  # ends early
    assert wire.without_map_entry(b"", "a") is None
    assert wire.without_map_entry(b"\xbf\x61a\x01\xff", "a") is None  # indefinite length
