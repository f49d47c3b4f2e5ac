"""How long records last: every offer, want and vouch expires.

A record of a *lifetime type* (:data:`DEFAULT_MS`: offers, wants, updates of
them, and attests) stops being current at its **expiry**:

* its stated ``expires`` if it has one, else its ``ts`` plus the type's
  default lifetime (:data:`DEFAULT_MS`);
* never later than its ``ts`` plus the type's maximum lifetime
  (:data:`MAX_MS`), whatever it states (an author who says 2^63 - 1 gets the
  maximum).

An item (an offer or want with its updates) lives until the expiry of its
current version, and never longer than :data:`MAX_MS` after the original was
made: updates refresh it, they cannot keep it forever. A record whose
``ts`` plus its maximum lifetime has passed can never be current again, so
it is refused (:func:`past_lifetime`); one that is merely past its expiry is
stored and pruned like any expired record (a later update may extend an
item, see :mod:`meshnode.store.derive`).

Other types (proposals, replies, withdraws, profiles) keep what they state,
possibly nothing: the store's quotas bound them.

Pure: no clock; time is a parameter.
"""

from __future__ import annotations

from typing import Protocol

DAY_MS = 24 * 3600 * 1000

#: The lifetime of a record that states no ``expires``, by type.
DEFAULT_MS: dict[str, int] = {
    "offer": 60 * DAY_MS,
    "want": 60 * DAY_MS,
    "update": 60 * DAY_MS,
    "attest": 365 * DAY_MS,
}

#: The longest a record may be current, counted from its ``ts``, by type.
MAX_MS: dict[str, int] = {
    "offer": 365 * DAY_MS,
    "want": 365 * DAY_MS,
    "update": 365 * DAY_MS,
    "attest": 2 * 365 * DAY_MS,
}

#: The most days ``offer add --expires`` and ``want add --expires`` accept.
MAX_ITEM_DAYS = MAX_MS["offer"] // DAY_MS


class Dated(Protocol):
    """What a lifetime depends on (a :class:`~meshnode.records.Record` is one)."""

    @property
    def type(self) -> str: ...

    @property
    def ts(self) -> int: ...

    @property
    def expires(self) -> int | None: ...


def expiry(record: Dated) -> int | None:
    """When ``record`` stops being current (None: it states none and has no lifetime)."""
    stated = record.expires
    default = DEFAULT_MS.get(record.type)
    if default is None:
        return stated
    own = stated if stated is not None else record.ts + default
    return min(own, record.ts + MAX_MS[record.type])


def item_expiry(original_ts: int, current: Dated) -> int | None:
    """When an item made at ``original_ts``, whose current version is ``current``, expires."""
    own = expiry(current)
    longest = original_ts + MAX_MS["offer"]
    return longest if own is None else min(own, longest)


def past_lifetime(record: Dated, now_ms: int) -> bool:
    """True if ``record`` (of a lifetime type) can never be current again at ``now_ms``."""
    longest = MAX_MS.get(record.type)
    return longest is not None and record.ts + longest <= now_ms
