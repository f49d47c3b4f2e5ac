"""Amounts of a swarm's currency as people write them, and back (pure).

The ledger and the pools count in integer *hundredths* of the swarm's unit
(:data:`meshnode.records.MAX_AMOUNT` at most). People write ``2``, ``1.5``
or ``0.25``; :func:`parse_amount` turns that into hundredths and refuses
anything else with a message that says what to type, and
:func:`format_amount` prints hundredths back (``150`` -> ``"1.50"``).
"""

from __future__ import annotations

import re

from meshnode.errors import BadValue
from meshnode.records import MAX_AMOUNT

_AMOUNT_RE = re.compile(r"^(\d{1,10})(?:[.,](\d{1,2}))?$")


def parse_amount(text: str, what: str = "amount", *, zero: bool = False) -> int:
    """Hundredths from ``text`` like ``2``, ``1.5``, ``0.25`` (a comma works as the decimal mark too).

    Refuses negative numbers, more than two decimals, more than
    :data:`MAX_AMOUNT` hundredths, and 0 unless ``zero``.
    """
    if not isinstance(text, str):
        raise BadValue(f"{what}: expected a number like 2 or 1.5, found {type(text).__name__}")
    m = _AMOUNT_RE.match(text.strip())
    if m is None:
        raise BadValue(f"{what}: expected a number like 2 or 1.5 (at most 2 decimals), found {text!r}")
    whole, frac = m.group(1), (m.group(2) or "").ljust(2, "0")
    value = int(whole) * 100 + int(frac)
    if value > MAX_AMOUNT:
        raise BadValue(f"{what}: at most {format_amount(MAX_AMOUNT)}, found {text!r}")
    if value == 0 and not zero:
        raise BadValue(f"{what}: expected more than 0, found {text!r}")
    return value


def format_amount(hundredths: int) -> str:
    """``"1.50"`` for 150, ``"-2.00"`` for -200: whole units and two decimals."""
    sign = "-" if hundredths < 0 else ""
    whole, cents = divmod(abs(hundredths), 100)
    return f"{sign}{whole}.{cents:02d}"
