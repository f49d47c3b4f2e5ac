"""Amounts as people write them (meshnode.money)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.errors import BadValue
from meshnode.money import format_amount, parse_amount
from meshnode.records import MAX_AMOUNT


@pytest.mark.parametrize(
    ("text", "hundredths"),
    [("2", 200), ("1.5", 150), ("0.25", 25), ("0,5", 50), (" 3 ", 300), ("10000000", 10**9)],
)
def test_parse_amount(text: str, hundredths: int) -> None:
    assert parse_amount(text) == hundredths


@pytest.mark.parametrize("text", ["", "-1", "1.234", "1e3", "abc", "0", "0.00", "10000000.01", ".5", "1."])
def test_parse_amount_refuses(text: str) -> None:
    with pytest.raises(BadValue):
        parse_amount(text)


def test_zero_only_when_allowed() -> None:
    assert parse_amount("0", zero=True) == 0


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=MAX_AMOUNT))
def test_round_trip(hundredths: int) -> None:
    assert parse_amount(format_amount(hundredths)) == hundredths


def test_format_negative() -> None:
    assert format_amount(-250) == "-2.50"
    assert format_amount(5) == "0.05"
