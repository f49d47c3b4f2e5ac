"""The one module that owns meshnode's byte encoding.

Everything meshnode signs, stores or sends is a plain CBOR value encoded in
deterministic ("canonical") form, RFC 8949 §4.2: shortest integer and length
heads, definite lengths, map keys sorted bytewise by their encoding. The same
value therefore has exactly one encoding, which is what makes signatures and
content ids agree on every node.

Decoding is strict. :func:`decode` bounds the input size first, refuses
indefinite lengths, duplicate map keys, nesting deeper than ``max_depth``,
CBOR tags and any type outside the plain data model, and finally re-encodes
the value and requires the very same bytes back, which refuses every other
non-canonical form (long integer heads, unsorted keys, ...). Floats are
not part of meshnode's data model (levels and amounts are integers), so
no float ever needs a canonical width.
Every refusal is a :class:`~meshnode.errors.DecodeError`; nothing else escapes.

:func:`without_map_entry` cuts one entry out of a canonical map's bytes
without decoding them (records take the bytes a signature covers out of the
signed bytes this way).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cbor2

from meshnode.errors import DecodeError

DEFAULT_MAX_SIZE = 16 * 1024
DEFAULT_MAX_DEPTH = 8
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def encode(value: Any) -> bytes:
    """Return the canonical CBOR encoding of ``value``.

    ``value`` must be built from ``None``, ``bool``, ``int`` (64-bit),
    ``str``, ``bytes``, ``list``/``tuple`` and ``dict`` with ``str``
    keys. Anything else raises :class:`DecodeError` (the encoder refuses to
    produce bytes that :func:`decode` would refuse).
    """
    _check_plain(value, depth=0, max_depth=64)
    return cbor2.dumps(value, canonical=True)


def decode(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
    check_types: bool = True,
) -> Any:
    """Decode one canonical CBOR value from ``data``, or raise :class:`DecodeError`.

    The whole of ``data`` must be exactly one value: trailing bytes are refused.
    Arrays decode as ``list``, maps as ``dict`` with ``str`` keys.
    ``check_types=False`` skips the walk that refuses values outside the plain
    data model (floats, simple values); only for callers whose own schema
    check refuses every unexpected type anyway (records do).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes to decode, found {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_size:
        raise DecodeError(f"expected at most {max_size} bytes, found {len(data)}")
    if not data:
        raise DecodeError("expected a CBOR value, found no bytes")
    try:
        value = cbor2.loads(
            data,
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
            tag_hook=_refuse_tag,
            semantic_decoders=_REFUSE_SEMANTIC_TAGS,
        )
    except DecodeError:
        raise
    except Exception as exc:  # cbor2 raises a zoo of types on hostile input
        raise DecodeError(f"malformed CBOR: {exc}") from None
    if check_types:
        _check_plain(value, depth=0, max_depth=max_depth)
    try:
        again = cbor2.dumps(value, canonical=True)
    except Exception as exc:  # pragma: no cover - _check_plain admits only encodable values
        raise DecodeError(f"value cannot be re-encoded: {exc}") from None
    if again != data:
        if len(again) < len(data) and data.startswith(again):
            raise DecodeError(f"expected one CBOR value, found {len(data) - len(again)} trailing bytes")
        raise DecodeError("expected canonical CBOR (RFC 8949 §4.2), found a non-canonical encoding")
    return value


def without_map_entry(encoded: bytes, key: str) -> bytes | None:
    """The canonical encoding of the map ``encoded`` without its entry ``key``, cut from the bytes.

    ``encoded`` must be canonical CBOR (as :func:`decode` proves): removing an
    entry from a canonical map leaves the other entries canonical and in
    order, so the result is exactly ``encode(map without key)``, at the cost of
    reading the heads of the entries up to ``key`` instead of encoding the
    whole map again. Returns ``None`` if ``encoded`` is not a map, has no entry
    ``key`` or ends early.
    """
    want = _text_item(key)
    try:
        initial = encoded[0]
        if 0xA0 <= initial < 0xB8:  # a map of fewer than 24 entries (a record's): a one-byte head
            count, entries_start = initial - 0xA0, 1
        else:
            major, count, entries_start = _head(encoded, 0)
            if major != _MAP:
                return None
        pos = entries_start
        for _ in range(count):
            if encoded.startswith(want, pos):
                value = pos + len(want)
                head = encoded[value]
                if 0x40 <= head < 0x58:  # a short byte string (no length bytes)
                    end = value + 1 + (head - 0x40)
                elif head == 0x58:  # a byte string of 24..255 bytes (a signature)
                    end = value + 2 + encoded[value + 1]
                else:
                    end = _skip_items(encoded, value, 1)
                if end > len(encoded):
                    return None
                return _head_bytes(_MAP, count - 1) + encoded[entries_start:pos] + encoded[end:]
            # Fast path (a record's leading entries): a text key shorter than
            # 24 bytes and an integer value, stepped over without a call.
            head = encoded[pos]
            if 0x60 <= head < 0x78:
                value_pos = pos + 1 + (head - 0x60)
                value_head = encoded[value_pos]
                if value_head < 0x40 and _INT_SIZE[value_head & 0x1F]:
                    pos = value_pos + _INT_SIZE[value_head & 0x1F]
                    continue
            pos = _skip_items(encoded, pos, 2)  # the key and its value
    except (IndexError, ValueError):
        return None
    return None


_BYTES, _TEXT, _ARRAY, _MAP, _TAG = 2, 3, 4, 5, 6
#: Size of an integer's encoding by the low 5 bits of its first byte (0: not definite).
_INT_SIZE = bytes([1] * 24 + [2, 3, 5, 9] + [0] * 4)
#: Every one-byte head, by its value.
_SHORT_HEADS = tuple(bytes([b]) for b in range(256))


def _head(data: bytes, pos: int) -> tuple[int, int, int]:
    """``(major type, argument, position after the head)`` of the data item at ``pos``."""
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    if info < 24:
        return major, info, pos + 1
    if info > 27:  # indefinite length or reserved: never in canonical bytes
        raise ValueError("not a definite-length head")
    size = 1 << (info - 24)
    end = pos + 1 + size
    if end > len(data):
        raise IndexError("head runs past the end")
    return major, int.from_bytes(data[pos + 1 : end], "big"), end


def _skip_items(data: bytes, pos: int, count: int) -> int:
    """The position after ``count`` whole data items that start at ``pos``."""
    while count:
        initial = data[pos]
        if initial & 0x1F < 24:  # the argument is in the first byte (most heads)
            major, arg, pos = initial >> 5, initial & 0x1F, pos + 1
        else:
            major, arg, pos = _head(data, pos)
        count -= 1
        if major == _BYTES or major == _TEXT:
            pos += arg
        elif major == _ARRAY:
            count += arg
        elif major == _MAP:
            count += 2 * arg
        elif major == _TAG:
            count += 1
    return pos


@lru_cache(maxsize=64)
def _text_item(text: str) -> bytes:
    """The canonical encoding of a text string."""
    data = text.encode()
    return _head_bytes(_TEXT, len(data)) + data


def _head_bytes(major: int, arg: int) -> bytes:
    """The canonical (shortest) head of a data item with this major type and argument."""
    if arg < 24:
        return _SHORT_HEADS[major << 5 | arg]
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if arg < 1 << (8 * size):
            return bytes([major << 5 | info]) + arg.to_bytes(size, "big")
    raise ValueError(f"argument too large for a CBOR head: {arg}")


def _refuse_tag(_decoder: Any, tag: Any) -> Any:
    raise DecodeError(f"CBOR tags are not allowed, found tag {getattr(tag, 'tag', '?')}")


def _refuse_semantic(decoder: Any) -> Any:
    raise DecodeError("CBOR tags are not allowed")


# cbor2 decodes some tags itself (datetimes, bignums, ...) without calling
# tag_hook; override every tag it knows so that none of them slips through.
_REFUSE_SEMANTIC_TAGS = {
    tag: _refuse_semantic
    for tag in (
        0,
        1,
        2,
        3,
        4,
        5,
        25,
        28,
        29,
        30,
        35,
        36,
        37,
        100,
        256,
        258,
        260,
        261,
        1004,
        55799,
    )
}


def _check_plain(value: Any, *, depth: int, max_depth: int) -> None:
    """Refuse anything outside meshnode's plain data model (iteratively bounded)."""
    stack: list[tuple[Any, int]] = [(value, depth)]
    while stack:
        item, d = stack.pop()
        if d > max_depth:
            raise DecodeError(f"expected nesting of at most {max_depth} levels, found more")
        if item is None or isinstance(item, bool | str | bytes):
            continue
        if isinstance(item, int):
            if not _INT_MIN <= item <= _INT_MAX:
                raise DecodeError(f"integer out of 64-bit range: {item}")
            continue
        if isinstance(item, list | tuple):
            stack.extend((x, d + 1) for x in item)
            continue
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise DecodeError(f"map keys must be text, found {type(k).__name__}")
                stack.append((v, d + 1))
            continue
        raise DecodeError(f"type {type(item).__name__} is not allowed in meshnode CBOR")
