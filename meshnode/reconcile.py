"""Range-based set reconciliation: which records does a peer have that we lack?

This is Meyer's range-based set reconciliation (2023), in the spirit of
negentropy / nostr NIP-77, as a pure, sans-I/O state machine: no sockets, no
trio, no database and no clock. The transport moves the bytes; a store
answers questions about the local set through :class:`ItemSource`.

Items and bounds
================

An *item* is a pair ``(ts, id)``: ``ts`` is an integer (ms since the epoch,
``0 <= ts <= 2**64 - 1``) and ``id`` is a 32-byte record id. Items are ordered
by ``(ts, id)``. A :class:`Bound` ``(ts, prefix)`` (``prefix``: 0..32 bytes)
is a position between items: an item is *below* the bound when
``(item.ts, item.id) < (bound.ts, bound.prefix)``, comparing the id bytewise
with the prefix (so the empty prefix is below every id of the same ``ts``).
:data:`INFINITY` is above every item. A *range* ``[lo, hi)`` holds the items
``lo <= item < hi``. A split between two neighbouring items uses the shortest
prefix that separates them (:func:`bound_between`), so bounds stay short.

The protocol
============

Both sides hold a set of items. Every message covers the whole item space
with consecutive ranges ``[LOWEST, b1), [b1, b2), ..., [bk-1, INFINITY)``;
each range carries a *mode*. The initiator opens with its ``idlist`` of the
whole space if it holds at most ``max_ids_per_range`` items, else with the
fingerprints of ``branching`` parts of about equal count. On receiving a
message, a side answers each range from its own items in that range:

``skip``
    Nothing to do here. Answer: ``skip``.
``fingerprint(fp)``
    The sender's fingerprint of the range. If ours is equal the range is in
    sync: ``skip``. Otherwise, if we hold at most ``max_ids_per_range`` items
    there, we answer ``idlist`` with all of them; else we split the range into
    ``branching`` parts of about equal count (by our items) and answer one
    ``fingerprint`` per part.
``idlist(ids)``
    *All* of the sender's ids in the range (``k`` of them). If we hold at most
    ``max_ids_per_range`` items there (``c``), we now know the exact
    difference and answer ``diff(give, want)``: ``give`` = our ids the sender
    lacks, ``want`` = a bitmap over the sender's list marking the ids we lack.
    If ``c > max_ids_per_range`` and ``2k <= c`` (at least half of our items
    there are surely missing on the sender: a node that starts empty, or a
    long partition), we answer *in bulk*: our own ``idlist`` ranges of
    ``max_ids_per_range`` ids each, consecutive over the range. Otherwise we
    split it into fingerprints, as for a fingerprint.
``diff(give, want)``
    The answer to an ``idlist`` we sent for exactly this range. The ids in
    ``give`` are ours to fetch (``need``), the listed ids that ``want`` marks
    are ours to push (``have``). Answer: ``skip``.

**Both sides learn the difference.** Unlike negentropy, where only the
initiator learns it, the side that receives an ``idlist`` computes the
difference of that range itself (and records it in its own ``have``/``need``)
and sends it back as a ``diff``, from which the ``idlist`` sender learns the
mirror image. Every difference is found in exactly one ``idlist``/``diff``
exchange, so at the end ``initiator.have == responder.need`` and
``initiator.need == responder.have``, and either side can push or pull. A
``diff`` costs 32 bytes per id the recipient lacks plus one bit per listed id
(the ``idlist`` sender keeps its list for one round to read the bitmap).

**Termination.** A message that is a single ``skip`` range is the *done*
message. A side whose answer would be all ``skip`` (every fingerprint
matched, every ``diff`` consumed, no ``idlist`` to answer) sends the done
message and sets ``done``; the side that receives it returns ``None`` and
sets ``done``. So :meth:`Reconciler.receive` returns bytes to send, and after
sending them the caller stops if ``done`` is set; it returns ``None`` when
there is nothing left to send. Any number of rounds may pass before that: a
``skip`` is final for that range only in the message that carries it.

**Message budget.** A side never sends more than ``max_message_bytes`` nor
more than :data:`MAX_RANGES_PER_MESSAGE` ranges. It answers the ranges in
order, range by range of its answer, while keeping room to *echo* the rest
(about 32 bytes per remaining range, at most a quarter of the budget). Once a
range of an answer does not fit, every range not yet answered (the rest of
the current one included) is echoed: answered by one ``fingerprint`` of our
items there (or ``skip`` when an incoming fingerprint matches), so the peer
reopens exactly those ranges next round and the tree built so far is kept.
When not even an echo fits, the message ends with one ``fingerprint`` of our
items from there to ``INFINITY`` (the *remainder*). The first range of the
first answer always fits (the constructor refuses budgets too small for it:
:func:`min_message_bytes`), so every round makes progress. ``diff`` ranges
past an echo or the remainder are still consumed.

The wire form (version 1)
=========================

A message is canonical CBOR (:mod:`meshnode.wire`), at most
:data:`MAX_MESSAGE_BYTES` bytes, nested at most 4 levels::

    message = [version, ranges]
      version : uint, = 1 (any other value is refused)
      ranges  : array of 1 .. MAX_RANGES_PER_MESSAGE range

    range = [upper, 0]                 ; skip
          / [upper, 1, fp]             ; fingerprint
          / [upper, 2, ids]            ; idlist
          / [upper, 3, give, want]     ; diff
      upper : null                     ; INFINITY; only, and always, the last range
            / [dts, prefix]            ; a finite bound
        dts    : uint, ts minus the ts of the previous range's upper bound
                 (minus 0 for the first range); the sum must be <= 2**64 - 1
        prefix : bstr, 0 .. 32 bytes
      fp    : bstr, exactly 16 bytes (see "Fingerprints")
      ids, give : array of 0 .. MAX_IDS_PER_RANGE bstr, each exactly 32
                 bytes, strictly ascending bytewise (sorted, no duplicates)
      want  : bstr, 0 .. 32 bytes: bit i (byte i // 8, value 1 << (i % 8)) set
                 = "I lack the i-th id of your idlist for this range"; exactly
                 ceil(n / 8) bytes for a list of n ids, unused bits zero

Each range covers ``[previous upper, upper)`` (the first starts at
``LOWEST = (0, b"")``); uppers are strictly increasing in ``(ts, prefix)``
order, so the ranges tile the whole space. Two neighbouring ``skip`` ranges
are refused (the sender merges them), so a message has one encoding.

A ``diff`` is accepted only for a range that exactly equals a range for which
we sent an ``idlist`` in our previous message; its ``give`` must not contain
any id we listed, and its ``want`` must have the exact length and no bit set
past our list. A ``skip`` that overlaps a range we sent an ``idlist`` for is
refused (an ``idlist`` must be answered: by a ``diff``, by splitting, by bulk
idlists or by an echo). The responder's first message must not be the done
message. Every violation, and any malformed or oversized message, raises
:class:`ReconcileError` (a :class:`~meshnode.errors.ValidationError`) or
:class:`~meshnode.errors.DecodeError`; the transport should drop the peer.
Nothing else escapes :meth:`Message.from_wire` or :meth:`Reconciler.receive`
(as long as the local :class:`ItemSource` does not fail).

Limits
======

The *acceptance* limits are protocol constants, so that any two nodes
interoperate whatever their tuning: :data:`MAX_MESSAGE_BYTES` (64 KiB),
:data:`MAX_RANGES_PER_MESSAGE` (4096), :data:`MAX_IDS_PER_RANGE` (256). The
constructor arguments only tune what this side *sends* (``max_ids_per_range``
<= :data:`MAX_IDS_PER_RANGE`, ``branching`` <= :data:`MAX_BRANCHING`,
``max_message_bytes`` <= :data:`MAX_MESSAGE_BYTES`), plus ``max_rounds``, the
number of messages this side accepts before it gives up. One message costs
the receiver at most O(ranges * branching) source calls. Bootstrapping an
empty node moves about 1,900 ids per 64 KiB message, so ``max_rounds`` (512
by default) bounds such a session to roughly a million items.

Fingerprints
============

The fingerprint of a set of ids is negentropy's scheme with BLAKE2b::

    total = (sum of int.from_bytes(id, "little") for id in ids) mod 2**256
    fp    = BLAKE2b(total.to_bytes(32, "little") || count.to_bytes(8, "little"),
                    digest_size=16, person=b"meshnode/rbsr/v1")

``(total, count)`` is an additive group (:class:`Accumulator`): a store can
maintain it incrementally (add an id on insert, subtract it on delete), keep
prefix sums, or sum per-bucket partials, and combine sub-ranges without
rehashing every id. A SQLite store can keep each id as eight 32-bit limbs and
``SUM()`` them over an index range (no 64-bit overflow below 2**31 rows), then
fold the limbs mod 2**256.

Why not XOR alone: XOR is addition in GF(2)^256, where every id is its own
inverse, so any id present twice cancels out, and a set difference made of
pairs of equal ids is invisible; worse, fingerprints are *linear*, so from
about 257 ids of its choice a peer can solve (Gaussian elimination) for a
subset whose XOR equals any target fingerprint and hide a difference at will.
Addition mod 2**256 has carries (no self-inverse ids) and, together with the
count, makes such forgeries a hard subset-sum / generalised-birthday problem
(Wagner) instead of linear algebra; the final hash makes the 16-byte value
unstructured. It is still not a commitment: the worst a forged collision does
is make one sync miss a difference, which the next sync with another peer
finds; records stay signed and are verified on their own.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal, NamedTuple, Protocol

from meshnode import wire
from meshnode.errors import BadValue, MeshError, ReconcileError

VERSION = 1
ID_SIZE = 32
FINGERPRINT_SIZE = 16
MAX_TS = 2**64 - 1

#: Protocol limits: what every node accepts (and so the most it may send).
MAX_MESSAGE_BYTES = 64 * 1024
MAX_RANGES_PER_MESSAGE = 4096
MAX_IDS_PER_RANGE = 256
MAX_BRANCHING = 64

#: Default tuning of what this side sends.
DEFAULT_MAX_IDS_PER_RANGE = 16
DEFAULT_BRANCHING = 16
DEFAULT_MAX_ROUNDS = 512

_MOD = 1 << 256
_FP_PERSON = b"meshnode/rbsr/v1"
_WIRE_DEPTH = 4
_MAX_BITMAP = (MAX_IDS_PER_RANGE + 7) // 8

Item = tuple[int, bytes]
Role = Literal["initiator", "responder"]


# --- bounds ------------------------------------------------------------------


class Bound(NamedTuple):
    """A position between items: ``(ts, prefix)``, compared like an item ``(ts, id)``."""

    ts: int
    prefix: bytes = b""

    @property
    def is_infinite(self) -> bool:
        return self.ts > MAX_TS


#: The bound below every item, and the bound above every item.
LOWEST = Bound(0, b"")
INFINITY = Bound(MAX_TS + 1, b"")


def bound_between(prev: Item, item: Item) -> Bound:
    """Return the shortest bound ``b`` with ``prev < b <= item`` (``prev < item``)."""
    if prev[0] != item[0]:
        return Bound(item[0], b"")
    a, b = prev[1], item[1]
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return Bound(item[0], b[: n + 1])


# --- fingerprints --------------------------------------------------------------


def fingerprint_digest(total: int, count: int) -> bytes:
    """The 16-byte fingerprint of a set whose ids sum to ``total`` (mod 2**256)."""
    data = (total % _MOD).to_bytes(32, "little") + count.to_bytes(8, "little")
    return hashlib.blake2b(data, digest_size=FINGERPRINT_SIZE, person=_FP_PERSON).digest()


@dataclass(frozen=True, slots=True)
class Accumulator:
    """The combinable state behind a fingerprint: ``(sum of ids mod 2**256, count)``.

    ``a + b`` is the accumulator of a disjoint union, ``a - b`` of a removal, so a
    store can maintain it per range or per bucket and never rescan.
    """

    total: int = 0
    count: int = 0

    @staticmethod
    def of(ids: Iterable[bytes]) -> Accumulator:
        acc = Accumulator()
        for item_id in ids:
            acc = acc.add(item_id)
        return acc

    def add(self, item_id: bytes) -> Accumulator:
        return Accumulator((self.total + int.from_bytes(item_id, "little")) % _MOD, self.count + 1)

    def remove(self, item_id: bytes) -> Accumulator:
        return Accumulator((self.total - int.from_bytes(item_id, "little")) % _MOD, self.count - 1)

    def __add__(self, other: Accumulator) -> Accumulator:
        return Accumulator((self.total + other.total) % _MOD, self.count + other.count)

    def __sub__(self, other: Accumulator) -> Accumulator:
        return Accumulator((self.total - other.total) % _MOD, self.count - other.count)

    def digest(self) -> bytes:
        return fingerprint_digest(self.total, self.count)


def fingerprint(ids: Iterable[bytes]) -> bytes:
    """The fingerprint of a set of ids (order does not matter)."""
    return Accumulator.of(ids).digest()


# --- the local set -------------------------------------------------------------


def check_item(ts: object, item_id: object) -> None:
    """Raise :class:`BadValue` unless ``(ts, item_id)`` is an item: ts in 0..2**64-1, a 32-byte id."""
    if type(ts) is not int or not 0 <= ts <= MAX_TS:
        raise BadValue(f"expected an item ts in 0..2**64-1, found {ts!r}")
    if not isinstance(item_id, bytes) or len(item_id) != ID_SIZE:
        raise BadValue(f"expected a {ID_SIZE}-byte item id, found {item_id!r}")


class ItemSource(Protocol):
    """The local set, as the reconciler needs to see it (a store implements this).

    Every range is ``lo <= item < hi`` with :class:`Bound` ``lo < hi``.
    """

    def count(self, lo: Bound, hi: Bound) -> int:
        """The number of items in the range."""
        ...

    def fingerprint(self, lo: Bound, hi: Bound) -> bytes:
        """:func:`fingerprint` of the ids in the range."""
        ...

    def items(self, lo: Bound, hi: Bound, limit: int) -> list[Item]:
        """The first ``limit`` items of the range, in order."""
        ...

    def split_points(self, lo: Bound, hi: Bound, parts: int) -> list[Bound]:
        """Bounds that cut the range into ``k = min(parts, count)`` parts of near-equal count.

        Return ``k - 1`` strictly increasing bounds, each made by
        :func:`bound_between` from the last item of one part and the first of the
        next (so ``lo < b < hi``); return ``[]`` when ``k <= 1``.
        """
        ...


class SortedItems:
    """An in-memory, immutable :class:`ItemSource`: a sorted list plus prefix sums.

    Building costs O(n log n). ``count``, ``fingerprint`` and ``split_points`` cost
    O(log n) (two bisections; a fingerprint is a difference of two prefix sums and
    one hash); ``items`` costs O(log n + limit).
    """

    def __init__(self, items: Iterable[Item] = ()) -> None:
        keys = sorted(set(items))
        seen: set[bytes] = set()
        for ts, item_id in keys:
            check_item(ts, item_id)
            if item_id in seen:
                raise BadValue(f"id {item_id.hex()} appears with two different timestamps")
            seen.add(item_id)
        sums = [0]
        total = 0
        for _, item_id in keys:
            total = (total + int.from_bytes(item_id, "little")) % _MOD
            sums.append(total)
        self._keys: list[Item] = keys
        self._sums = sums

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[Item]:
        return iter(self._keys)

    def ids(self) -> set[bytes]:
        return {item_id for _, item_id in self._keys}

    def _span(self, lo: Bound, hi: Bound) -> tuple[int, int]:
        i = bisect_left(self._keys, lo)
        j = bisect_left(self._keys, hi, lo=i)
        return i, j

    def count(self, lo: Bound, hi: Bound) -> int:
        i, j = self._span(lo, hi)
        return j - i

    def fingerprint(self, lo: Bound, hi: Bound) -> bytes:
        i, j = self._span(lo, hi)
        return fingerprint_digest(self._sums[j] - self._sums[i], j - i)

    def items(self, lo: Bound, hi: Bound, limit: int) -> list[Item]:
        i, j = self._span(lo, hi)
        return self._keys[i : min(j, i + max(limit, 0))]

    def split_points(self, lo: Bound, hi: Bound, parts: int) -> list[Bound]:
        i, j = self._span(lo, hi)
        n = j - i
        k = min(parts, n)
        if k <= 1:
            return []
        keys = self._keys
        return [bound_between(keys[i + n * t // k - 1], keys[i + n * t // k]) for t in range(1, k)]


# --- messages ------------------------------------------------------------------


class Mode(IntEnum):
    SKIP = 0
    FINGERPRINT = 1
    IDLIST = 2
    DIFF = 3


@dataclass(frozen=True, slots=True)
class SkipRange:
    """Nothing to do in this range."""

    upper: Bound


@dataclass(frozen=True, slots=True)
class FingerprintRange:
    """The sender's :func:`fingerprint` of its ids in this range."""

    upper: Bound
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class IdListRange:
    """All of the sender's ids in this range (sorted bytewise); answer with a diff."""

    upper: Bound
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class DiffRange:
    """The answer to an idlist on exactly this range.

    ``give``: the sender's ids that the recipient lacks (sorted bytewise).
    ``want``: a bitmap over the recipient's idlist (in its sorted order): bit ``i``
    (byte ``i // 8``, value ``1 << (i % 8)``) is set when the sender lacks the
    ``i``-th listed id. Exactly ``ceil(n / 8)`` bytes, unused high bits zero.
    """

    upper: Bound
    give: tuple[bytes, ...]
    want: bytes


def want_bitmap(listed: Sequence[bytes], lacking: Iterable[bytes]) -> bytes:
    """The ``want`` bitmap over ``listed`` that marks the ids in ``lacking``."""
    lack = set(lacking)
    bits = 0
    for i, item_id in enumerate(listed):
        if item_id in lack:
            bits |= 1 << i
    return bits.to_bytes((len(listed) + 7) // 8, "little")


def wanted_ids(listed: Sequence[bytes], want: bytes) -> list[bytes]:
    """The ids of ``listed`` that the bitmap ``want`` marks; :class:`ReconcileError` if malformed."""
    if len(want) != (len(listed) + 7) // 8:
        raise ReconcileError(
            f"expected a want bitmap of {(len(listed) + 7) // 8} bytes for {len(listed)} listed ids, "
            f"found {len(want)}"
        )
    bits = int.from_bytes(want, "little")
    if bits >> len(listed):
        raise ReconcileError("expected the unused bits of the want bitmap to be zero")
    return [item_id for i, item_id in enumerate(listed) if bits >> i & 1]


Range = SkipRange | FingerprintRange | IdListRange | DiffRange


@dataclass(frozen=True, slots=True)
class Message:
    """One reconciliation message: ranges that tile the whole item space.

    Constructing a message validates it (every rule of the module docstring that
    does not need the local set); a failure raises :class:`ReconcileError`.
    """

    ranges: tuple[Range, ...]

    def __post_init__(self) -> None:
        _check_ranges(self.ranges)

    @property
    def is_done(self) -> bool:
        """True for the done message: one ``skip`` range over everything."""
        return len(self.ranges) == 1 and isinstance(self.ranges[0], SkipRange)

    def to_wire(self) -> bytes:
        values: list[Any] = []
        prev_ts = 0
        for r in self.ranges:
            values.append(_range_value(r, prev_ts))
            prev_ts = r.upper.ts
        return wire.encode([VERSION, values])

    @classmethod
    def from_wire(cls, data: bytes) -> Message:
        """Decode and validate a message, or raise ``DecodeError``/:class:`ReconcileError`."""
        value = wire.decode(data, max_size=MAX_MESSAGE_BYTES, max_depth=_WIRE_DEPTH)
        if not isinstance(value, list) or len(value) != 2:
            raise ReconcileError("expected a reconcile message [version, ranges], found another value")
        version, raw = value
        if type(version) is not int or version != VERSION:
            raise ReconcileError(f"expected reconcile protocol version {VERSION}, found {version!r}")
        if not isinstance(raw, list):
            raise ReconcileError(f"expected an array of ranges, found {type(raw).__name__}")
        if not 1 <= len(raw) <= MAX_RANGES_PER_MESSAGE:
            raise ReconcileError(f"expected 1..{MAX_RANGES_PER_MESSAGE} ranges, found {len(raw)}")
        ranges: list[Range] = []
        prev_ts = 0
        for n, rv in enumerate(raw):
            r = _parse_range(rv, prev_ts, n)
            ranges.append(r)
            prev_ts = r.upper.ts
        return cls(tuple(ranges))


def _range_value(r: Range, prev_ts: int) -> list[Any]:
    upper: Any = None if r.upper.is_infinite else [r.upper.ts - prev_ts, r.upper.prefix]
    if isinstance(r, SkipRange):
        return [upper, Mode.SKIP.value]
    if isinstance(r, FingerprintRange):
        return [upper, Mode.FINGERPRINT.value, r.fingerprint]
    if isinstance(r, IdListRange):
        return [upper, Mode.IDLIST.value, list(r.ids)]
    return [upper, Mode.DIFF.value, list(r.give), r.want]


_ARITY = {Mode.SKIP: 2, Mode.FINGERPRINT: 3, Mode.IDLIST: 3, Mode.DIFF: 4}


def _parse_range(rv: Any, prev_ts: int, n: int) -> Range:
    where = f"range {n}"
    if not isinstance(rv, list) or not 2 <= len(rv) <= 4:
        raise ReconcileError(f"{where}: expected an array [upper, mode, ...], found {_kind(rv)}")
    up, mode = rv[0], rv[1]
    if type(mode) is not int or not 0 <= mode <= 3:
        raise ReconcileError(f"{where}: expected a mode 0..3, found {mode!r}")
    mode = Mode(mode)
    if len(rv) != _ARITY[mode]:
        raise ReconcileError(f"{where}: expected {_ARITY[mode]} fields for mode {mode.name}, found {len(rv)}")
    if up is None:
        upper = INFINITY
    else:
        if not isinstance(up, list) or len(up) != 2:
            raise ReconcileError(f"{where}: expected upper bound [dts, prefix] or null, found {_kind(up)}")
        dts, prefix = up
        if type(dts) is not int or dts < 0:
            raise ReconcileError(f"{where}: expected a ts delta >= 0, found {dts!r}")
        if prev_ts + dts > MAX_TS:
            raise ReconcileError(f"{where}: bound ts exceeds 2**64-1")
        if not isinstance(prefix, bytes):
            raise ReconcileError(f"{where}: expected a bound prefix as bytes, found {_kind(prefix)}")
        upper = Bound(prev_ts + dts, prefix)
    if mode is Mode.SKIP:
        return SkipRange(upper)
    if mode is Mode.FINGERPRINT:
        if not isinstance(rv[2], bytes):
            raise ReconcileError(f"{where}: expected fingerprint bytes, found {_kind(rv[2])}")
        return FingerprintRange(upper, rv[2])
    if mode is Mode.IDLIST:
        return IdListRange(upper, _parse_ids(rv[2], where))
    if not isinstance(rv[3], bytes):
        raise ReconcileError(f"{where}: expected a want bitmap as bytes, found {_kind(rv[3])}")
    return DiffRange(upper, _parse_ids(rv[2], where), rv[3])


def _parse_ids(v: Any, where: str) -> tuple[bytes, ...]:
    if not isinstance(v, list):
        raise ReconcileError(f"{where}: expected an array of ids, found {_kind(v)}")
    if len(v) > MAX_IDS_PER_RANGE:
        raise ReconcileError(f"{where}: expected at most {MAX_IDS_PER_RANGE} ids, found {len(v)}")
    return tuple(v)


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _check_ids(ids: Any, what: str) -> None:
    if not isinstance(ids, tuple):
        raise ReconcileError(f"{what}: expected a tuple of ids, found {_kind(ids)}")
    if len(ids) > MAX_IDS_PER_RANGE:
        raise ReconcileError(f"{what}: expected at most {MAX_IDS_PER_RANGE} ids, found {len(ids)}")
    prev = b""
    for item_id in ids:
        if not isinstance(item_id, bytes) or len(item_id) != ID_SIZE:
            raise ReconcileError(f"{what}: expected {ID_SIZE}-byte ids, found {_describe(item_id)}")
        if item_id <= prev:
            raise ReconcileError(f"{what}: expected ids strictly ascending bytewise (sorted, unique)")
        prev = item_id


def _describe(v: Any) -> str:
    return f"{len(v)} bytes" if isinstance(v, bytes) else _kind(v)


def _check_bound(b: Any, what: str) -> None:
    if not isinstance(b, Bound) or type(b.ts) is not int or not isinstance(b.prefix, bytes):
        raise ReconcileError(f"{what}: expected a Bound(ts, prefix), found {_kind(b)}")
    if b == INFINITY:
        return
    if not 0 <= b.ts <= MAX_TS:
        raise ReconcileError(f"{what}: expected a bound ts in 0..2**64-1, found {b.ts}")
    if len(b.prefix) > ID_SIZE:
        raise ReconcileError(
            f"{what}: expected a bound prefix of at most {ID_SIZE} bytes, found {len(b.prefix)}"
        )


def _check_ranges(ranges: Any) -> None:
    if not isinstance(ranges, tuple):
        raise ReconcileError(f"expected a tuple of ranges, found {_kind(ranges)}")
    if not 1 <= len(ranges) <= MAX_RANGES_PER_MESSAGE:
        raise ReconcileError(f"expected 1..{MAX_RANGES_PER_MESSAGE} ranges, found {len(ranges)}")
    prev: Bound = LOWEST
    prev_skip = False
    for n, r in enumerate(ranges):
        what = f"range {n}"
        if not isinstance(r, SkipRange | FingerprintRange | IdListRange | DiffRange):
            raise ReconcileError(f"{what}: expected a range, found {_kind(r)}")
        _check_bound(r.upper, what)
        if not r.upper > prev:
            raise ReconcileError(f"{what}: expected bounds strictly increasing, found {r.upper} after {prev}")
        prev = r.upper
        is_skip = isinstance(r, SkipRange)
        if is_skip and prev_skip:
            raise ReconcileError(f"{what}: expected neighbouring skip ranges merged into one")
        prev_skip = is_skip
        if isinstance(r, FingerprintRange):
            if not isinstance(r.fingerprint, bytes) or len(r.fingerprint) != FINGERPRINT_SIZE:
                raise ReconcileError(
                    f"{what}: expected a {FINGERPRINT_SIZE}-byte fingerprint, "
                    f"found {_describe(r.fingerprint)}"
                )
        elif isinstance(r, IdListRange):
            _check_ids(r.ids, f"{what} ids")
        elif isinstance(r, DiffRange):
            _check_ids(r.give, f"{what} give")
            if not isinstance(r.want, bytes) or len(r.want) > _MAX_BITMAP:
                raise ReconcileError(
                    f"{what}: expected a want bitmap of at most {_MAX_BITMAP} bytes, "
                    f"found {_describe(r.want)}"
                )
    if prev != INFINITY:
        raise ReconcileError(f"expected the last range to end at INFINITY (null), found {prev}")


# --- the state machine ---------------------------------------------------------

_HEADER_BYTES = 5  # outer array head + version + ranges array head (<= 3 bytes)
_BOUND_BYTES = 1 + 9 + 2 + ID_SIZE  # worst [dts, prefix]
_RANGE_HEAD_BYTES = 1 + _BOUND_BYTES + 1  # array head, upper, mode
_FP_RANGE_BYTES = _RANGE_HEAD_BYTES + 1 + FINGERPRINT_SIZE
_REMAINDER_BYTES = 1 + 1 + 1 + 1 + FINGERPRINT_SIZE  # [null, 1, fp]
_ECHO_BYTES = 32  # a typical fingerprint range: room kept for echoes
_FULL, _ECHO, _CUT = 0, 1, 2  # how far a reply still answers (see Reconciler.receive)


def _ids_bytes(n: int) -> int:
    return 3 + n * (2 + ID_SIZE)


def min_message_bytes(max_ids_per_range: int) -> int:
    """The smallest send budget that always fits one answer range.

    A message then holds one leading ``skip``, the largest single range we may
    produce (a ``diff`` giving ``max_ids_per_range`` ids against a full-size
    idlist, or an idlist of ``max_ids_per_range`` ids) and the closing remainder,
    so that every round answers at least one range.
    """
    worst = max(
        _RANGE_HEAD_BYTES + _ids_bytes(max_ids_per_range) + 2 + _MAX_BITMAP,
        _FP_RANGE_BYTES,
    )
    return _HEADER_BYTES + _RANGE_HEAD_BYTES + worst + _REMAINDER_BYTES


class _Builder:
    """Collects outgoing ranges, merging neighbouring skips and tracking the exact size."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.ranges: list[Range] = []
        self.sizes: list[int] = []
        self.size = _HEADER_BYTES

    def try_add(self, r: Range, reserve: int = 0) -> bool:
        """Append ``r`` if it fits, keeping room for a closing remainder (and ``reserve``)."""
        ranges, sizes = self.ranges, self.sizes
        merge = bool(ranges) and isinstance(r, SkipRange) and isinstance(ranges[-1], SkipRange)
        k = len(ranges) - 1 if merge else len(ranges)
        size = _range_size(r, ranges[k - 1].upper.ts if k > 0 else 0)
        delta = size - sizes[-1] if merge else size
        if (
            self.size + delta + _REMAINDER_BYTES + reserve > self.budget
            or k + 2 > MAX_RANGES_PER_MESSAGE  # this range and the remainder
        ):
            return False
        if merge:
            ranges[-1], sizes[-1] = r, size
        else:
            ranges.append(r)
            sizes.append(size)
        self.size += delta
        return True

    def close(self, remainder: Range | None) -> Message:
        if remainder is not None:
            self.ranges.append(remainder)
        return Message(tuple(self.ranges))


def _range_size(r: Range, prev_ts: int) -> int:
    return len(wire.encode(_range_value(r, prev_ts)))


#: One range of an answer, with what sending it teaches us: for a diff, the ids
#: of the peer's list that we lack (our ``need``); else None.
_Answer = tuple[Range, list[bytes] | None]


class Reconciler:
    """One side of one reconciliation session (see the module docstring).

    ``initiate()`` (initiator only) returns the first message. ``receive(data)``
    returns the answer to send, or ``None`` when there is nothing left to send;
    once ``done`` is set the session is over. ``have`` holds the ids we hold and
    the peer lacks (push them), ``need`` those the peer holds and we lack (fetch
    them); both sides end with mirror images. ``rounds`` counts the messages this
    side received; ``bytes_sent``/``bytes_received`` count the wire bytes;
    ``aborted`` is set once a message was refused.
    """

    def __init__(
        self,
        source: ItemSource,
        *,
        role: Role,
        max_ids_per_range: int = DEFAULT_MAX_IDS_PER_RANGE,
        branching: int = DEFAULT_BRANCHING,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if role not in ("initiator", "responder"):
            raise BadValue(f"expected role 'initiator' or 'responder', found {role!r}")
        if type(max_ids_per_range) is not int or not 1 <= max_ids_per_range <= MAX_IDS_PER_RANGE:
            raise BadValue(
                f"expected max_ids_per_range in 1..{MAX_IDS_PER_RANGE}, found {max_ids_per_range!r}"
            )
        if type(branching) is not int or not 2 <= branching <= MAX_BRANCHING:
            raise BadValue(f"expected branching in 2..{MAX_BRANCHING}, found {branching!r}")
        if type(max_rounds) is not int or max_rounds < 1:
            raise BadValue(f"expected max_rounds >= 1, found {max_rounds!r}")
        smallest = min_message_bytes(max_ids_per_range)
        if type(max_message_bytes) is not int or not smallest <= max_message_bytes <= MAX_MESSAGE_BYTES:
            raise BadValue(
                f"expected max_message_bytes in {smallest}..{MAX_MESSAGE_BYTES} "
                f"(for max_ids_per_range={max_ids_per_range}), found {max_message_bytes!r}"
            )
        self.source = source
        self.role: Role = role
        self.max_ids_per_range = max_ids_per_range
        self.branching = branching
        self.max_rounds = max_rounds
        self.max_message_bytes = max_message_bytes
        self.have: set[bytes] = set()
        self.need: set[bytes] = set()
        self.done = False
        self.aborted = False
        self.rounds = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self._started = role == "responder"
        # ranges [lo, hi) we sent an idlist for in our last message -> the ids, in order
        self._pending: dict[tuple[Bound, Bound], tuple[bytes, ...]] = {}

    # -- public moves --

    def initiate(self) -> bytes:
        """Return the first message (initiator only, once)."""
        if self.role != "initiator":
            raise ReconcileError("expected initiate() on the initiator, found a responder")
        if self._started:
            raise ReconcileError("expected initiate() once, found a second call")
        self._started = True
        out = _Builder(self.max_message_bytes)
        lo = LOWEST
        for r, _ in self._open(LOWEST, INFINITY):
            if not out.try_add(r):  # a small budget and a large branching
                return self._send(
                    out.close(FingerprintRange(INFINITY, self.source.fingerprint(lo, INFINITY)))
                )
            if isinstance(r, IdListRange):
                self._pending[(lo, r.upper)] = r.ids
            lo = r.upper
        return self._send(out.close(None))

    def receive(self, data: bytes) -> bytes | None:
        """Process one message from the peer; return the answer, or ``None`` when done.

        Raises :class:`ReconcileError` or :class:`~meshnode.errors.DecodeError` when
        the peer breaks the protocol; the session is then aborted (every later call
        raises :class:`ReconcileError`, and ``have``/``need`` keep only what earlier
        messages taught).
        """
        if self.aborted:
            raise ReconcileError("expected no more messages, the session was aborted")
        try:
            return self._receive(data)
        except MeshError:
            self.aborted = True
            raise

    def _receive(self, data: bytes) -> bytes | None:
        if self.done:
            raise ReconcileError("expected no more messages, the reconciliation is done")
        if not self._started:
            raise ReconcileError("expected initiate() before receive() on the initiator")
        self.rounds += 1
        if self.rounds > self.max_rounds:
            raise ReconcileError(f"expected at most {self.max_rounds} messages, the peer sent more")
        msg = Message.from_wire(data)
        self.bytes_received += len(data)
        if self.role == "responder" and self.rounds == 1 and msg.is_done:
            raise ReconcileError("expected an opening message, found the done message")

        pending = sorted(self._pending.items())
        self._pending = {}
        new_pending: dict[tuple[Bound, Bound], tuple[bytes, ...]] = {}
        have: set[bytes] = set()
        need: set[bytes] = set()
        budget = self.max_message_bytes
        out = _Builder(budget)
        work_left = sum(isinstance(r, FingerprintRange | IdListRange) for r in msg.ranges)
        answered = False  # whether out holds a full answer to some range yet
        phase = _FULL
        cut = LOWEST  # in phase _CUT: where the closing remainder starts
        p = 0
        lo = LOWEST
        for r in msg.ranges:
            hi = r.upper
            # our idlist ranges that overlap [lo, hi)
            while p < len(pending) and pending[p][0][1] <= lo:
                p += 1
            q = p
            while q < len(pending) and pending[q][0][0] < hi:
                q += 1
            overlapping = pending[p:q]

            if isinstance(r, SkipRange | DiffRange):
                if isinstance(r, SkipRange) and overlapping:
                    raise ReconcileError("expected our idlist to be answered, found it skipped")
                if isinstance(r, DiffRange):
                    if len(overlapping) != 1 or overlapping[0][0] != (lo, hi):
                        raise ReconcileError("expected a diff only for a range we sent an idlist for")
                    listed = overlapping[0][1]
                    if not set(listed).isdisjoint(r.give):
                        raise ReconcileError("expected diff 'give' to hold only ids we did not list")
                    have.update(wanted_ids(listed, r.want))
                    need.update(r.give)
                if phase != _CUT and not out.try_add(SkipRange(hi)):
                    phase, cut = _CUT, lo
                lo = hi
                continue

            work_left -= 1
            rest = lo  # the part [rest, hi) still to answer
            if phase == _FULL:
                for a, wanted in self._answer(r, lo, hi, budget - out.size):
                    # keep room to echo the ranges after this one, except in the first
                    # answer, which always fits (so that every round makes progress)
                    reserve = min(work_left * _ECHO_BYTES, budget // 4) if answered else 0
                    if not out.try_add(a, reserve):
                        phase = _ECHO
                        break
                    answered = True
                    if isinstance(a, IdListRange):
                        new_pending[(rest, a.upper)] = a.ids
                    elif isinstance(a, DiffRange):
                        have.update(a.give)
                        need.update(wanted or ())
                    rest = a.upper
            if rest != hi and phase != _CUT:
                # no room (or no more items fetched) for a full answer: echo our
                # fingerprint, so that the peer reopens just this range next round
                ours = self.source.fingerprint(rest, hi)
                if rest == lo and isinstance(r, FingerprintRange) and ours == r.fingerprint:
                    echo: Range = SkipRange(hi)
                else:
                    echo = FingerprintRange(hi, ours)
                if not out.try_add(echo):
                    phase, cut = _CUT, rest
            lo = hi

        remainder = None
        if phase == _CUT:
            remainder = FingerprintRange(INFINITY, self.source.fingerprint(cut, INFINITY))
        reply = out.close(remainder)
        self.have |= have
        self.need |= need
        if reply.is_done:
            self.done = True
            if msg.is_done:
                return None
        self._pending = new_pending
        return self._send(reply)

    # -- helpers --

    def _send(self, msg: Message) -> bytes:
        data = msg.to_wire()
        self.bytes_sent += len(data)
        return data

    def _answer(self, r: FingerprintRange | IdListRange, lo: Bound, hi: Bound, room: int) -> list[_Answer]:
        """Our answer to a fingerprint or idlist on ``[lo, hi)``, in order.

        It covers ``[lo, hi)`` except after a bulk answer that did not fetch every
        item (``room`` bytes left); the caller echoes the rest.
        """
        if isinstance(r, FingerprintRange):
            if self.source.fingerprint(lo, hi) == r.fingerprint:
                return [(SkipRange(hi), None)]
            return self._open(lo, hi)
        count = self.source.count(lo, hi)
        mine = self._small(lo, hi, count)
        if mine is not None:
            want = [item_id for item_id in r.ids if item_id not in mine]
            give = tuple(sorted(mine.difference(r.ids)))
            return [(DiffRange(hi, give, want_bitmap(r.ids, want)), want)]
        if 2 * len(r.ids) <= count:
            # at least half of our items here are missing on the peer: list them
            return self._bulk(lo, hi, room)
        return self._split(lo, hi)

    def _open(self, lo: Bound, hi: Bound) -> list[_Answer]:
        """Answer a mismatch on ``[lo, hi)``: our idlist if small, else fingerprints of parts."""
        mine = self._small(lo, hi, self.source.count(lo, hi))
        if mine is not None:
            return [(IdListRange(hi, tuple(sorted(mine))), None)]
        return self._split(lo, hi)

    def _small(self, lo: Bound, hi: Bound, count: int) -> set[bytes] | None:
        """Our ids in ``[lo, hi)`` if there are at most ``max_ids_per_range``, else None."""
        limit = self.max_ids_per_range
        if count > limit:
            return None
        ours = self.source.items(lo, hi, limit + 1)  # the set may have grown since count()
        return {item_id for _, item_id in ours} if len(ours) <= limit else None

    def _split(self, lo: Bound, hi: Bound) -> list[_Answer]:
        edges = [lo, *self.source.split_points(lo, hi, self.branching), hi]
        return [
            (FingerprintRange(edges[k + 1], self.source.fingerprint(edges[k], edges[k + 1])), None)
            for k in range(len(edges) - 1)
        ]

    def _bulk(self, lo: Bound, hi: Bound, room: int) -> list[_Answer]:
        """Our items of ``[lo, hi)`` as consecutive idlists of ``max_ids_per_range`` ids.

        Fetches only about as many items as ``room`` bytes can carry; the answer then
        ends before ``hi``.
        """
        per = self.max_ids_per_range
        fetch = max(room // (2 + ID_SIZE), per)
        items = self.source.items(lo, hi, fetch + 1)
        complete = len(items) <= fetch
        usable = len(items) if complete else fetch - fetch % per
        answer: list[_Answer] = []
        for start in range(0, usable, per):
            end = min(start + per, usable)
            upper = hi if complete and end == len(items) else bound_between(items[end - 1], items[end])
            answer.append(
                (IdListRange(upper, tuple(sorted(item_id for _, item_id in items[start:end]))), None)
            )
        return answer
