"""Signed records: every fact meshnode knows or shares is one of these.

A record is a frozen :class:`Record` whose ``body`` is one of the body
dataclasses below. On the wire and on disk it is a canonical CBOR map
(see :mod:`meshnode.wire`)::

    {"v": 1, "type": "offer", "swarm": <32 bytes>, "author": <32 bytes>,
     "seq": <int>, "ts": <ms since epoch>, "body": {...}, "sig": <64 bytes>}

* The Ed25519 signature covers :data:`SIGNING_DOMAIN` followed by the
  canonical encoding of the map *without* ``sig`` (:func:`signing_bytes`).
* The record id is the BLAKE2b-256 hash of the complete encoded record,
  signature included (:func:`record_id`). With strict (libsodium) verification
  nobody but the author can produce a second valid encoding of a record, so a
  tampered copy always has a different id and can never shadow the real one
  in a seen-cache.
* A body has exactly one encoding: optional fields that hold their default
  are omitted, and a decoded body must re-encode to the map it came from.
* :data:`BODY_TYPES` is the one table of record types: for each type name its
  body class and the functions that encode, decode and check such a body
  (:class:`BodyType`). Adding a record type is one entry there.

This module is pure: no I/O, no clock (time is a parameter), no network.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, fields, replace
from functools import cached_property, lru_cache, partial
from typing import Any, ClassVar

import cbor2
import nacl.bindings
import nacl.exceptions
import nacl.signing

from meshnode import sealing, wire
from meshnode.errors import (
    ClockSkewError,
    DecodeError,
    ExpiredError,
    SignatureError,
    ValidationError,
    WrongSwarmError,
)
from meshnode.ids import short_id

VERSION = 1
SIGNING_DOMAIN = b"meshnode/record/v1\x00"
MAX_RECORD_SIZE = 16 * 1024
MAX_CLOCK_SKEW_MS = 10 * 60 * 1000
ID_SIZE = 32
KEY_SIZE = 32
SIG_SIZE = 64
SWARM_ID_SIZE = 32

MAX_TITLE = 120
MAX_DESC = 2000
MAX_TAGS = 16
MAX_TAG = 32
MAX_NOTE = 500
MAX_CONTEXT = 32
MAX_NICKNAME = 40
MAX_BIO = 280
MAX_ITEMS = 16
MAX_GEOHASH = 6
MAX_DEPOSIT = 200
MAX_QUANTITY = 1_000_000
MAX_LEND_DAYS = 3650
#: The largest amount of one transfer or price, in hundredths of the swarm's unit.
MAX_AMOUNT = 10**9
LEVEL_SCALE = 1000  # attest levels are integers in [-1000, 1000] (thousandths)

ITEM_KINDS = ("lend", "give", "swap", "service")
REPLY_ACTIONS = ("accept", "decline", "counter", "cancel", "complete", "received", "extend", "returned")
#: The longest a loan may be extended at once, from the extend's own time (ms).
MAX_EXTEND_MS = MAX_LEND_DAYS * 86_400_000

#: What a tag may look like (after :func:`normalize_tags`): lowercase letters, digits, '-' and '_'.
TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_GEOHASH_RE = re.compile(r"^[0123456789bcdefghjkmnpqrstuvwxyz]+$")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: What a one-line field (a title) may not hold besides control characters:
#: line breaks and tabs, which would print as lines of their own, and the
#: invisible direction marks, embeddings, overrides and isolates and the
#: zero-width space, word joiner and BOM, which can make a title read as
#: something else (U+061C, U+200B, U+200E-U+200F, U+202A-U+202E,
#: U+2060-U+2069, U+FEFF), and the line and paragraph separators U+2028-U+2029.
#: The zero-width (non-)joiners U+200C/U+200D stay: Persian, Indic scripts and
#: emoji sequences need them.
_NOT_IN_A_LINE_RE = re.compile("[\t\n\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff]")


# --- bodies ------------------------------------------------------------------


@dataclass(frozen=True)
class LendTerms:
    """How a lent item is lent: at most ``max_days`` days, an optional deposit note."""

    max_days: int | None = None
    deposit: str = ""


@dataclass(frozen=True)
class ItemBody:
    """What an offer or a want describes (both have the same shape)."""

    title: str
    kind: str = "give"
    desc: str = ""
    tags: tuple[str, ...] = ()
    where: str = ""  # coarse geohash, at most 6 characters
    quantity: int | None = None
    terms: LendTerms | None = None
    expires: int | None = None  # ms since epoch
    price: int | None = None  # hundredths of the swarm's currency (service and lend items only)


#: The kinds of item that may carry a price in the swarm's currency.
PRICED_KINDS = ("service", "lend")


@dataclass(frozen=True)
class OfferBody(ItemBody):
    """Something the author lends, gives, swaps or does for neighbours."""


@dataclass(frozen=True)
class WantBody(ItemBody):
    """Something the author is looking for."""


@dataclass(frozen=True)
class UpdateBody:
    """Replace the author's own offer or want ``target`` by ``item``."""

    target: bytes
    item: ItemBody


@dataclass(frozen=True)
class WithdrawBody:
    """Take the author's own offer or want ``target`` out of the live view."""

    target: bytes


@dataclass(frozen=True)
class AttestBody:
    """The author vouches for (level > 0) or distrusts (level < 0) ``subject``.

    ``level`` is in thousandths, -1000..1000. A newer attest by the same author
    about the same subject (and context) replaces the older.
    """

    subject: bytes
    level: int
    context: str = ""
    note: str = ""
    expires: int | None = None


@dataclass(frozen=True)
class ProposalBody:
    """A trade proposed to ``to``: the author gives ``give``, takes ``take`` (offer ids)."""

    to: bytes
    give: tuple[bytes, ...] = ()
    take: tuple[bytes, ...] = ()
    note: str = ""
    expires: int | None = None
    private: bytes = b""  # sealed for the two parties (meshnode.sealing); empty: none


@dataclass(frozen=True)
class ReplyBody:
    """A move on ``proposal``: accept, decline, counter (new terms), cancel or complete.

    For ``counter``, ``give`` and ``take`` are from the replying party's point
    of view (what the replier gives, what the replier takes).

    The moves of a loan (an accepted trade of a ``lend`` offer, see
    :mod:`meshnode.barter`): ``received`` (the borrower has the thing; ``note``
    may say in what condition), ``extend`` (the lender moves the due date to
    ``until``, ms since the epoch; only an extend carries ``until``) and
    ``returned`` (the lender has it back).

    ``prev`` is the id of the move this reply answers: the proposal itself for
    the first reply, else the reply it follows. The replies of a trade thus form
    a hash chain from the proposal, and :mod:`meshnode.barter` orders a trade's
    moves by that chain, never by timestamps. It is optional in the encoding
    only so that replies signed before it existed still decode from a store;
    barter never applies a reply without it.
    """

    proposal: bytes
    action: str
    give: tuple[bytes, ...] = ()
    take: tuple[bytes, ...] = ()
    note: str = ""
    prev: bytes | None = None
    private: bytes = b""  # sealed for the two parties (meshnode.sealing); empty: none
    until: int | None = None  # extend: the new due date (ms)


@dataclass(frozen=True)
class ProfileBody:
    """Optional public profile of the author."""

    nickname: str = ""
    bio: str = ""


# --- the record --------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One signed fact. Build with :func:`sign_record`; read with :func:`decode_record`."""

    type: str
    swarm: bytes
    author: bytes
    seq: int
    ts: int
    body: Any
    sig: bytes = b""
    v: int = VERSION

    FIELDS: ClassVar[tuple[str, ...]] = ("v", "type", "swarm", "author", "seq", "ts", "body", "sig")

    @cached_property
    def encoded(self) -> bytes:
        """The canonical wire bytes of the signed record."""
        if len(self.sig) != SIG_SIZE:
            raise ValidationError("record is not signed: sign it with sign_record() first")
        return wire.encode(_record_map(self, with_sig=True))

    @cached_property
    def id(self) -> bytes:
        """The content id: BLAKE2b-256 of :attr:`encoded`."""
        return record_id(self.encoded)

    @property
    def expires(self) -> int | None:
        """When the record stops being current (ms), if its body says so."""
        body_type = _body_type_of(self.body)
        if body_type is None:
            return getattr(self.body, "expires", None)
        return body_type.expires(self.body)


def record_id(encoded: bytes) -> bytes:
    """The id of a record given its encoded bytes."""
    return hashlib.blake2b(encoded, digest_size=ID_SIZE).digest()


def signing_bytes(record: Record) -> bytes:
    """The exact bytes the author's signature covers."""
    encoded = record.__dict__.get("encoded")
    if encoded is not None:
        # Cutting the signature out of the canonical bytes saves re-encoding
        # the record on every verification.
        unsigned = wire.without_map_entry(encoded, "sig")
        if unsigned is not None:
            return SIGNING_DOMAIN + unsigned
    # The map is built from checked dataclasses, so it is plain data already:
    # encode it directly (wire.encode would walk it again to check).
    return SIGNING_DOMAIN + cbor2.dumps(_record_map(record, with_sig=False), canonical=True)


def sign_record(record: Record, signing_key: nacl.signing.SigningKey) -> Record:
    """Return ``record`` with ``author`` set to the key's public key and a fresh signature.

    The body is validated first, so a signed record is always one that
    :func:`decode_record` accepts (given a sane size).
    """
    author = bytes(signing_key.verify_key)
    unsigned = replace(record, author=author, sig=b"")
    _check_envelope(unsigned)
    sig = signing_key.sign(signing_bytes(unsigned)).signature
    signed = replace(unsigned, sig=bytes(sig))
    if len(signed.encoded) > MAX_RECORD_SIZE:
        raise ValidationError(
            f"expected a record of at most {MAX_RECORD_SIZE} bytes, found {len(signed.encoded)}:"
            " shorten the description or notes"
        )
    return signed


def verify_record(record: Record) -> None:
    """Raise :class:`SignatureError` unless ``record.sig`` is the author's valid signature."""
    check_author_key(record.author)
    try:
        nacl.signing.VerifyKey(record.author).verify(signing_bytes(record), record.sig)
    except nacl.exceptions.BadSignatureError:
        raise SignatureError(
            f"signature of {record.type} record by {short_id(record.author)} does not verify"
        ) from None
    except Exception as exc:  # malformed key or signature material
        raise SignatureError(f"signature cannot be checked: {exc}") from None


def check_author_key(key: bytes) -> None:
    """Refuse keys that are not usable Ed25519 public keys (small order, not on the curve)."""
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise SignatureError(f"expected a {KEY_SIZE}-byte Ed25519 key, found {_describe(key)}")
    if not _is_valid_point(key):
        raise SignatureError("author key is not a valid Ed25519 point of large order")


@lru_cache(maxsize=8192)
def _is_valid_point(key: bytes) -> bool:
    # ~60 us a call, and the same few authors sign most records: cache it.
    return bool(nacl.bindings.crypto_core_ed25519_is_valid_point(key))


def check_record(
    record: Record, *, now_ms: int, swarms: AbstractSet[bytes] | None = None, allow_expired: bool = False
) -> None:
    """Check a decoded record against the node's context: swarm, clock skew, expiry.

    ``swarms`` is the set of swarm ids the record may belong to (``None``: any).
    A record more than :data:`MAX_CLOCK_SKEW_MS` in the future is refused; an
    expired one is refused unless ``allow_expired``.
    """
    if swarms is not None and record.swarm not in swarms:
        raise WrongSwarmError(f"record is for swarm {short_id(record.swarm)}, which this node has not joined")
    if record.ts > now_ms + MAX_CLOCK_SKEW_MS:
        raise ClockSkewError(
            f"record timestamp is {(record.ts - now_ms) // 1000} s in the future;"
            f" at most {MAX_CLOCK_SKEW_MS // 1000} s is accepted (check the author's clock)"
        )
    expires = record.expires
    if not allow_expired and expires is not None and expires <= now_ms:
        raise ExpiredError(f"{record.type} record expired {(now_ms - expires) // 1000} s ago")


def decode_record(data: bytes) -> Record:
    """Decode and schema-check one record from its wire bytes (signature not checked).

    Raises :class:`DecodeError` for bad bytes and :class:`ValidationError`
    for a well-formed value that is not a valid record.
    """
    if isinstance(data, bytes | bytearray | memoryview) and len(data) > MAX_RECORD_SIZE:
        raise DecodeError(f"expected a record of at most {MAX_RECORD_SIZE} bytes, found {len(data)}")
    # The schema check below refuses every unexpected type, so the generic
    # type walk is skipped (it costs as much as the decoding itself).
    value = wire.decode(data, max_size=MAX_RECORD_SIZE, max_depth=wire.DEFAULT_MAX_DEPTH, check_types=False)
    record = record_from_map(value)
    # Cache the bytes we were given: decode() proved they are the canonical form.
    record.__dict__["encoded"] = bytes(data)
    return record


def open_record(
    data: bytes, *, now_ms: int, swarms: AbstractSet[bytes] | None = None, allow_expired: bool = False
) -> Record:
    """The full ingest check: :func:`decode_record`, :func:`check_record`, :func:`verify_record`.

    Cheap checks run before the signature, so hostile input costs little.
    """
    record = decode_record(data)
    check_record(record, now_ms=now_ms, swarms=swarms, allow_expired=allow_expired)
    verify_record(record)
    return record


# --- maps <-> dataclasses ----------------------------------------------------


def _record_map(record: Record, *, with_sig: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "v": record.v,
        "type": record.type,
        "swarm": record.swarm,
        "author": record.author,
        "seq": record.seq,
        "ts": record.ts,
        "body": body_to_map(record.body),
    }
    if with_sig:
        out["sig"] = record.sig
    return out


_RECORD_KEYS = frozenset(Record.FIELDS)


def record_from_map(value: Any) -> Record:
    """Build a :class:`Record` from a decoded map, checking every field."""
    if not isinstance(value, dict):
        raise ValidationError(f"expected a record map, found {_describe(value)}")
    keys = value.keys()
    expected = _RECORD_KEYS
    if keys != expected:
        missing = sorted(expected - keys, key=repr)
        extra = sorted(keys - expected, key=repr)
        raise ValidationError(f"record fields wrong: missing {missing}, unexpected {extra}")
    v = value["v"]
    if v != VERSION or isinstance(v, bool):
        raise ValidationError(f"expected record version {VERSION}, found {v!r}")
    rtype = value["type"]
    if rtype not in BODY_TYPES:
        raise ValidationError(f"expected a record type in {list(RECORD_TYPES)}, found {rtype!r}")
    swarm = _bytes_field(value["swarm"], "swarm", SWARM_ID_SIZE)
    author = _bytes_field(value["author"], "author", KEY_SIZE)
    seq = _int_field(value["seq"], "seq", 0, 2**63 - 1)
    ts = _int_field(value["ts"], "ts", 0, 2**63 - 1)
    sig = _bytes_field(value["sig"], "sig", SIG_SIZE)
    body = body_from_map(rtype, value["body"])
    record = Record(type=rtype, swarm=swarm, author=author, seq=seq, ts=ts, body=body, sig=sig)
    _check_across(record, BODY_TYPES[rtype])
    return record


def body_to_map(body: Any) -> dict[str, Any]:
    """The canonical map of a body: fields at their default are omitted."""
    return _registered_body_type(body).to_map(body)


def body_from_map(rtype: str, value: Any) -> Any:
    """Build and check the body of a record of type ``rtype``; it must re-encode exactly."""
    if not isinstance(value, dict):
        raise ValidationError(f"expected a {rtype} body map, found {_describe(value)}")
    body_type = BODY_TYPES[rtype]
    try:
        body = body_type.from_map(value, rtype)
    except ValidationError as exc:
        raise type(exc)(f"{rtype} body: {exc.message}") from None
    # Every field's type and limits were checked while parsing; what is left
    # are the rules across fields (check_body would check every field twice).
    body_type.check_rules(body)
    if _spells_out_a_default(value):
        raise ValidationError(f"{rtype} body is not in canonical form (a default value was spelled out)")
    return body


def _spells_out_a_default(value: dict[str, Any]) -> bool:
    """True if an optional field holds its default (which the canonical form omits).

    Optional fields at their default are omitted: spelling one out would give
    the same body a second encoding. Unknown keys were refused already.
    """
    for key, field_value in value.items():
        if isinstance(field_value, dict):
            if _spells_out_a_default(field_value):
                return True
        elif field_value in (None, "", []) and key not in ("title", "kind"):
            return True
    return False


def _without_defaults(d: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k in keep or (v not in (None, "", []) and v != b"")}


# --- each body type: to map, from map, field checks, rules --------------------
#
# ``*_from_map`` parses a decoded map and checks each field's type and limits
# on the way; ``_check_*_fields`` runs the same field checks on a body built
# in code; ``_check_*_rules`` are the rules across fields, which both paths
# run afterwards (see check_body and body_from_map).


def _no_rules(body: Any) -> None:
    """For body types whose fields are independent of each other."""


def _fields_to_map(body: Any) -> dict[str, Any]:
    """The map of a body of plain fields (tuples become lists), fields at their default omitted."""
    out = {}
    for f in fields(body):
        value = getattr(body, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return _without_defaults(out)


def _own_expires(body: Any) -> int | None:
    return getattr(body, "expires", None)


def _item_to_map(item: ItemBody) -> dict[str, Any]:
    terms = None
    if item.terms is not None:
        terms = _without_defaults({"max_days": item.terms.max_days, "deposit": item.terms.deposit})
    return _without_defaults(
        {
            "title": item.title,
            "kind": item.kind,
            "desc": item.desc,
            "tags": list(item.tags),
            "where": item.where,
            "quantity": item.quantity,
            "terms": terms,
            "expires": item.expires,
            "price": item.price,
        },
        keep=("title", "kind"),
    )


def _item_from_map(value: dict[str, Any], what: str, cls: type[ItemBody] = ItemBody) -> ItemBody:
    _only_keys(
        value, {"title", "kind", "desc", "tags", "where", "quantity", "terms", "expires", "price"}, what
    )
    terms_map = value.get("terms")
    terms = None
    if terms_map is not None:
        if not isinstance(terms_map, dict):
            raise ValidationError(f"terms: expected a map, found {_describe(terms_map)}")
        _only_keys(terms_map, {"max_days", "deposit"}, "terms")
        terms = LendTerms(
            max_days=_opt_int(terms_map.get("max_days"), "terms.max_days", 1, MAX_LEND_DAYS),
            deposit=_text_field(terms_map.get("deposit", ""), "terms.deposit", MAX_DEPOSIT),
        )
    tags = value.get("tags", [])
    if not isinstance(tags, list):
        raise ValidationError(f"tags: expected a list, found {_describe(tags)}")
    return cls(
        title=_line_field(value.get("title"), "title", MAX_TITLE),
        kind=_choice(value.get("kind"), "kind", ITEM_KINDS),
        desc=_text_field(value.get("desc", ""), "desc", MAX_DESC),
        tags=tuple(_text_field(t, "tag", MAX_TAG) for t in tags),
        where=_text_field(value.get("where", ""), "where", MAX_GEOHASH),
        quantity=_opt_int(value.get("quantity"), "quantity", 1, MAX_QUANTITY),
        terms=terms,
        expires=_opt_int(value.get("expires"), "expires"),
        price=_opt_int(value.get("price"), "price", 1, MAX_AMOUNT),
    )


def _check_item_fields(item: ItemBody) -> None:
    _line_field(item.title, "title", MAX_TITLE)
    _choice(item.kind, "kind", ITEM_KINDS)
    _text_field(item.desc, "desc", MAX_DESC)
    for tag in item.tags:
        _text_field(tag, "tag", MAX_TAG)
    _text_field(item.where, "where", MAX_GEOHASH)
    _opt_int(item.quantity, "quantity", 1, MAX_QUANTITY)
    if item.terms is not None:
        _opt_int(item.terms.max_days, "terms.max_days", 1, MAX_LEND_DAYS)
        _text_field(item.terms.deposit, "terms.deposit", MAX_DEPOSIT)
    _opt_int(item.expires, "expires")
    _opt_int(item.price, "price", 1, MAX_AMOUNT)


def _check_item_rules(item: ItemBody) -> None:
    if not item.title.strip():
        raise ValidationError("title: expected some text, found only blanks")
    if len(item.tags) > MAX_TAGS:
        raise ValidationError(f"tags: expected at most {MAX_TAGS}, found {len(item.tags)}")
    for tag in item.tags:
        if not TAG_PATTERN.match(tag):
            raise ValidationError(f"tag: expected lowercase letters, digits, '-' or '_', found {tag!r}")
    if list(item.tags) != sorted(set(item.tags)):
        raise ValidationError("tags: expected sorted and without duplicates (use normalize_tags)")
    if item.where and not _GEOHASH_RE.match(item.where):
        raise ValidationError(f"where: expected a geohash (base32, at most 6), found {item.where!r}")
    if item.terms is not None and item.kind != "lend":
        raise ValidationError(f"terms: only a lend item has lending terms, found kind {item.kind!r}")
    if item.price is not None and item.kind not in PRICED_KINDS:
        raise ValidationError(f"price: only a service or lend item has a price, found kind {item.kind!r}")


def _update_to_map(body: UpdateBody) -> dict[str, Any]:
    return {"target": body.target, "item": _item_to_map(body.item)}


def _update_from_map(value: dict[str, Any], what: str) -> UpdateBody:
    _only_keys(value, {"target", "item"}, what)
    target = _bytes_field(value.get("target"), "target", ID_SIZE)
    item_map = value.get("item")
    if not isinstance(item_map, dict):
        raise ValidationError(f"update: expected an item map, found {_describe(item_map)}")
    return UpdateBody(target=target, item=_item_from_map(item_map, "update item"))


def _check_update_fields(body: UpdateBody) -> None:
    _check_len(body.target, ID_SIZE, "target")
    if not isinstance(body.item, ItemBody):
        raise ValidationError(f"update item: expected an item body, found {_describe(body.item)}")
    _check_item_fields(body.item)


def _check_update_rules(body: UpdateBody) -> None:
    _check_item_rules(body.item)


def _update_expires(body: UpdateBody) -> int | None:
    return body.item.expires


def _withdraw_to_map(body: WithdrawBody) -> dict[str, Any]:
    return {"target": body.target}


def _withdraw_from_map(value: dict[str, Any], what: str) -> WithdrawBody:
    _only_keys(value, {"target"}, what)
    return WithdrawBody(target=_bytes_field(value.get("target"), "target", ID_SIZE))


def _check_withdraw_fields(body: WithdrawBody) -> None:
    _check_len(body.target, ID_SIZE, "target")


def _attest_from_map(value: dict[str, Any], what: str) -> AttestBody:
    _only_keys(value, {"subject", "level", "context", "note", "expires"}, what)
    return AttestBody(
        subject=_bytes_field(value.get("subject"), "subject", KEY_SIZE),
        level=_int_field(value.get("level"), "level", -LEVEL_SCALE, LEVEL_SCALE),
        context=_text_field(value.get("context", ""), "context", MAX_CONTEXT),
        note=_text_field(value.get("note", ""), "note", MAX_NOTE),
        expires=_opt_int(value.get("expires"), "expires"),
    )


def _check_attest_fields(body: AttestBody) -> None:
    _check_len(body.subject, KEY_SIZE, "subject")
    _int_field(body.level, "level", -LEVEL_SCALE, LEVEL_SCALE)
    _text_field(body.context, "context", MAX_CONTEXT)
    _text_field(body.note, "note", MAX_NOTE)
    _opt_int(body.expires, "expires")


def _check_attest_author(body: AttestBody, author: bytes) -> None:
    if body.subject == author:
        raise ValidationError("an attestation must be about someone else")


def _proposal_from_map(value: dict[str, Any], what: str) -> ProposalBody:
    _only_keys(value, {"to", "give", "take", "note", "expires", "private"}, what)
    return ProposalBody(
        to=_bytes_field(value.get("to"), "to", KEY_SIZE),
        give=_ids_field(value.get("give", []), "give"),
        take=_ids_field(value.get("take", []), "take"),
        note=_text_field(value.get("note", ""), "note", MAX_NOTE),
        expires=_opt_int(value.get("expires"), "expires"),
        private=_private_field(value.get("private", b"")),
    )


def _check_proposal_fields(body: ProposalBody) -> None:
    _check_len(body.to, KEY_SIZE, "to")
    _check_ids(body.give, "give")
    _check_ids(body.take, "take")
    _text_field(body.note, "note", MAX_NOTE)
    _opt_int(body.expires, "expires")
    _private_field(body.private)


def _check_proposal_rules(body: ProposalBody) -> None:
    if not body.give and not body.take:
        raise ValidationError("a proposal must give or take at least one offer")


def _check_proposal_author(body: ProposalBody, author: bytes) -> None:
    if body.to == author:
        raise ValidationError("a proposal must be addressed to someone else")


def _reply_from_map(value: dict[str, Any], what: str) -> ReplyBody:
    _only_keys(value, {"proposal", "action", "give", "take", "note", "prev", "private", "until"}, what)
    prev = value.get("prev")
    return ReplyBody(
        proposal=_bytes_field(value.get("proposal"), "proposal", ID_SIZE),
        action=_choice(value.get("action"), "action", REPLY_ACTIONS),
        give=_ids_field(value.get("give", []), "give"),
        take=_ids_field(value.get("take", []), "take"),
        note=_text_field(value.get("note", ""), "note", MAX_NOTE),
        prev=None if prev is None else _bytes_field(prev, "prev", ID_SIZE),
        private=_private_field(value.get("private", b"")),
        until=_opt_int(value.get("until"), "until"),
    )


def _check_reply_fields(body: ReplyBody) -> None:
    _check_len(body.proposal, ID_SIZE, "proposal")
    _choice(body.action, "action", REPLY_ACTIONS)
    _check_ids(body.give, "give")
    _check_ids(body.take, "take")
    _text_field(body.note, "note", MAX_NOTE)
    if body.prev is not None:
        _check_len(body.prev, ID_SIZE, "prev")
    _private_field(body.private)
    _opt_int(body.until, "until")


def _check_reply_rules(body: ReplyBody) -> None:
    if (body.action == "extend") != (body.until is not None):
        raise ValidationError(
            "an extend must carry the new due date (until), and only an extend carries one"
            f" (found {body.action} with until={body.until})"
        )
    if body.action == "counter":
        if not body.give and not body.take:
            raise ValidationError("a counter must give or take at least one offer")
    elif body.give or body.take:
        raise ValidationError(f"only a counter carries offers, found {body.action} with offers")


def _profile_from_map(value: dict[str, Any], what: str) -> ProfileBody:
    _only_keys(value, {"nickname", "bio"}, what)
    return ProfileBody(
        nickname=_text_field(value.get("nickname", ""), "nickname", MAX_NICKNAME),
        bio=_text_field(value.get("bio", ""), "bio", MAX_BIO),
    )


def _check_profile_fields(body: ProfileBody) -> None:
    _text_field(body.nickname, "nickname", MAX_NICKNAME)
    _text_field(body.bio, "bio", MAX_BIO)


def _no_author_rule(body: Any, author: bytes) -> None:
    """For body types that may name their own author."""


# --- trade rings: the ring and ringmove bodies (see meshnode.ringtrade) --------

MIN_RING_PARTIES = 3
MAX_RING_PARTIES = 5
RING_ACTIONS = ("accept", "decline", "complete")


@dataclass(frozen=True)
class RingBody:
    """A trade ring proposed among ``parties``: party ``i`` gives ``offers[i]`` to party ``(i + 1) % n``.

    ``n`` is 3 to 5; the parties are distinct keys, the offers distinct
    offer ids, one per party; the author must be one of the parties. The
    ring's moves are ``ringmove`` records (:mod:`meshnode.ringtrade`).
    """

    parties: tuple[bytes, ...]
    offers: tuple[bytes, ...]
    note: str = ""
    expires: int | None = None


@dataclass(frozen=True)
class RingMoveBody:
    """A party's move on the ring record ``ring``: accept, decline or complete."""

    ring: bytes
    action: str
    note: str = ""


def _keys_field(value: Any, name: str) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise ValidationError(f"{name}: expected a list of keys, found {_describe(value)}")
    return tuple(_bytes_field(v, name, KEY_SIZE) for v in value)


def _ring_from_map(value: dict[str, Any], what: str) -> RingBody:
    _only_keys(value, {"parties", "offers", "note", "expires"}, what)
    return RingBody(
        parties=_keys_field(value.get("parties"), "parties"),
        offers=_ids_field(value.get("offers"), "offers"),
        note=_text_field(value.get("note", ""), "note", MAX_NOTE),
        expires=_opt_int(value.get("expires"), "expires"),
    )


def _check_ring_fields(body: RingBody) -> None:
    if not isinstance(body.parties, tuple) or not isinstance(body.offers, tuple):
        raise ValidationError("ring: parties and offers must be tuples")
    for key in body.parties:
        _check_len(key, KEY_SIZE, "parties")
    _check_ids(body.offers, "offers")
    _text_field(body.note, "note", MAX_NOTE)
    _opt_int(body.expires, "expires")


def _check_ring_rules(body: RingBody) -> None:
    n = len(body.parties)
    if not MIN_RING_PARTIES <= n <= MAX_RING_PARTIES:
        raise ValidationError(
            f"parties: a ring has {MIN_RING_PARTIES} to {MAX_RING_PARTIES} parties, found {n}"
        )
    if len(set(body.parties)) != n:
        raise ValidationError("parties: the same key appears twice")
    if len(body.offers) != n:
        raise ValidationError(f"offers: expected one offer per party ({n}), found {len(body.offers)}")


def _check_ring_author(body: RingBody, author: bytes) -> None:
    if author not in body.parties:
        raise ValidationError("a ring must be proposed by one of its parties")


def _ringmove_from_map(value: dict[str, Any], what: str) -> RingMoveBody:
    _only_keys(value, {"ring", "action", "note"}, what)
    return RingMoveBody(
        ring=_bytes_field(value.get("ring"), "ring", ID_SIZE),
        action=_choice(value.get("action"), "action", RING_ACTIONS),
        note=_text_field(value.get("note", ""), "note", MAX_NOTE),
    )


def _check_ringmove_fields(body: RingMoveBody) -> None:
    _check_len(body.ring, ID_SIZE, "ring")
    _choice(body.action, "action", RING_ACTIONS)
    _text_field(body.note, "note", MAX_NOTE)


# --- end of trade rings --------------------------------------------------------


# --- mutual credit: the transfer body (see meshnode.ledger) ---------------------

#: The most incoming transfers one transfer may acknowledge.
MAX_ACKS = 64


@dataclass(frozen=True)
class TransferBody:
    """A payment of ``amount`` hundredths of the swarm's unit from the author to ``to``.

    The author's transfers form one chain: ``seq`` is the place (1, 2, ...),
    ``prev`` the id of the author's transfer at ``seq - 1`` (``None`` only,
    and always, for ``seq`` 1). ``acks`` are ids of transfers paid *to* the
    author that this link credits to the author's own chain (sorted, no
    duplicates); ``trade`` optionally names the proposal paid for. See
    :mod:`meshnode.ledger`.
    """

    to: bytes
    amount: int
    seq: int
    prev: bytes | None = None
    acks: tuple[bytes, ...] = ()
    memo: str = ""
    trade: bytes | None = None


def _acks_field(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise ValidationError(f"acks: expected a list of ids, found {_describe(value)}")
    return tuple(_bytes_field(v, "acks", ID_SIZE) for v in value)


def _transfer_from_map(value: dict[str, Any], what: str) -> TransferBody:
    _only_keys(value, {"to", "amount", "seq", "prev", "acks", "memo", "trade"}, what)
    prev, trade = value.get("prev"), value.get("trade")
    return TransferBody(
        to=_bytes_field(value.get("to"), "to", KEY_SIZE),
        amount=_int_field(value.get("amount"), "amount", 1, MAX_AMOUNT),
        seq=_int_field(value.get("seq"), "seq", 1, 2**63 - 1),
        prev=None if prev is None else _bytes_field(prev, "prev", ID_SIZE),
        acks=_acks_field(value.get("acks", [])),
        memo=_text_field(value.get("memo", ""), "memo", MAX_NOTE),
        trade=None if trade is None else _bytes_field(trade, "trade", ID_SIZE),
    )


def _check_transfer_fields(body: TransferBody) -> None:
    _check_len(body.to, KEY_SIZE, "to")
    _int_field(body.amount, "amount", 1, MAX_AMOUNT)
    _int_field(body.seq, "seq", 1, 2**63 - 1)
    if body.prev is not None:
        _check_len(body.prev, ID_SIZE, "prev")
    if not isinstance(body.acks, tuple):
        raise ValidationError("transfer: acks must be a tuple")
    for ack in body.acks:
        _check_len(ack, ID_SIZE, "acks")
    _text_field(body.memo, "memo", MAX_NOTE)
    if body.trade is not None:
        _check_len(body.trade, ID_SIZE, "trade")


def _check_transfer_rules(body: TransferBody) -> None:
    if (body.seq == 1) != (body.prev is None):
        raise ValidationError(
            "prev: the first transfer of a chain (seq 1) names no previous one, and every later one does"
            f" (found seq {body.seq} with {'no prev' if body.prev is None else 'a prev'})"
        )
    if len(body.acks) > MAX_ACKS:
        raise ValidationError(f"acks: expected at most {MAX_ACKS} ids, found {len(body.acks)}")
    if any(a >= b for a, b in zip(body.acks, body.acks[1:], strict=False)):
        raise ValidationError("acks: expected ids sorted and without duplicates")


def _check_transfer_author(body: TransferBody, author: bytes) -> None:
    if body.to == author:
        raise ValidationError("a transfer must pay someone else")


# --- end of mutual credit -------------------------------------------------------


# --- group buying: the pool, pledge and poolmove bodies (see meshnode.pools) ------

#: The largest unit price of a pool, in hundredths of the swarm's unit.
MAX_UNIT_PRICE = 10**9
MAX_UNIT = 32
POOL_ACTIONS = ("confirm", "cancel", "delivered")


@dataclass(frozen=True)
class PoolBody:
    """A group purchase the author organises: ``title`` bought from ``supplier`` (``"from"`` on the wire).

    Each unit costs ``unit_price`` hundredths of the swarm's unit; ``unit``
    optionally names it ("20 kg crate"). The order is placed if at least
    ``min`` units are pledged before ``closes`` (ms); at most ``max`` units
    are bought. The fold is :mod:`meshnode.pools`.
    """

    title: str
    supplier: str
    unit_price: int
    min: int
    max: int
    closes: int
    unit: str = ""


@dataclass(frozen=True)
class PledgeBody:
    """The author's pledge of ``quantity`` units to the pool record ``pool`` (0 withdraws).

    The author's newest pledge to a pool replaces the earlier ones.
    """

    pool: bytes
    quantity: int


@dataclass(frozen=True)
class PoolMoveBody:
    """The organiser's move on the pool record ``pool``: confirm, cancel or delivered."""

    pool: bytes
    action: str
    note: str = ""


def _pool_to_map(body: PoolBody) -> dict[str, Any]:
    out = {
        "title": body.title,
        "from": body.supplier,
        "unit_price": body.unit_price,
        "min": body.min,
        "max": body.max,
        "closes": body.closes,
        "unit": body.unit,
    }
    return _without_defaults(out)


def _pool_from_map(value: dict[str, Any], what: str) -> PoolBody:
    _only_keys(value, {"title", "from", "unit_price", "min", "max", "closes", "unit"}, what)
    return PoolBody(
        title=_line_field(value.get("title"), "title", MAX_TITLE),
        supplier=_line_field(value.get("from"), "from", MAX_TITLE),
        unit_price=_int_field(value.get("unit_price"), "unit_price", 0, MAX_UNIT_PRICE),
        min=_int_field(value.get("min"), "min", 1, MAX_QUANTITY),
        max=_int_field(value.get("max"), "max", 1, MAX_QUANTITY),
        closes=_int_field(value.get("closes"), "closes", 0, 2**63 - 1),
        unit=_line_field(value.get("unit", ""), "unit", MAX_UNIT),
    )


def _check_pool_fields(body: PoolBody) -> None:
    _line_field(body.title, "title", MAX_TITLE)
    _line_field(body.supplier, "from", MAX_TITLE)
    _int_field(body.unit_price, "unit_price", 0, MAX_UNIT_PRICE)
    _int_field(body.min, "min", 1, MAX_QUANTITY)
    _int_field(body.max, "max", 1, MAX_QUANTITY)
    _int_field(body.closes, "closes", 0, 2**63 - 1)
    _line_field(body.unit, "unit", MAX_UNIT)


def _check_pool_rules(body: PoolBody) -> None:
    if not body.title.strip():
        raise ValidationError("title: expected some text, found only blanks")
    if not body.supplier.strip():
        raise ValidationError("from: expected the supplier's name, found only blanks")
    if body.max < body.min:
        raise ValidationError(f"max: expected at least min ({body.min}), found {body.max}")


def _pledge_from_map(value: dict[str, Any], what: str) -> PledgeBody:
    _only_keys(value, {"pool", "quantity"}, what)
    return PledgeBody(
        pool=_bytes_field(value.get("pool"), "pool", ID_SIZE),
        quantity=_int_field(value.get("quantity"), "quantity", 0, MAX_QUANTITY),
    )


def _check_pledge_fields(body: PledgeBody) -> None:
    _check_len(body.pool, ID_SIZE, "pool")
    _int_field(body.quantity, "quantity", 0, MAX_QUANTITY)


def _poolmove_from_map(value: dict[str, Any], what: str) -> PoolMoveBody:
    _only_keys(value, {"pool", "action", "note"}, what)
    return PoolMoveBody(
        pool=_bytes_field(value.get("pool"), "pool", ID_SIZE),
        action=_choice(value.get("action"), "action", POOL_ACTIONS),
        note=_text_field(value.get("note", ""), "note", MAX_NOTE),
    )


def _check_poolmove_fields(body: PoolMoveBody) -> None:
    _check_len(body.pool, ID_SIZE, "pool")
    _choice(body.action, "action", POOL_ACTIONS)
    _text_field(body.note, "note", MAX_NOTE)


# --- end of group buying ---------------------------------------------------------


# --- a swarm's currency: its name and unit (see meshnode.credit) ----------------

MAX_CURRENCY_NAME = 40


@dataclass(frozen=True)
class CurrencyBody:
    """The author proposes that the swarm's currency be called ``name``, counted in ``unit`` (e.g. hours).

    Which proposal a node follows is :func:`meshnode.credit.swarm_currency`'s
    choice; amounts are always hundredths of the unit, whatever it is called.
    """

    name: str
    unit: str = "hours"


def _currency_from_map(value: dict[str, Any], what: str) -> CurrencyBody:
    _only_keys(value, {"name", "unit"}, what)
    return CurrencyBody(
        name=_line_field(value.get("name"), "name", MAX_CURRENCY_NAME),
        unit=_line_field(value.get("unit"), "unit", MAX_UNIT),
    )


def _check_currency_fields(body: CurrencyBody) -> None:
    _line_field(body.name, "name", MAX_CURRENCY_NAME)
    _line_field(body.unit, "unit", MAX_UNIT)


def _check_currency_rules(body: CurrencyBody) -> None:
    if not body.name.strip():
        raise ValidationError("name: expected the currency's name, found only blanks")
    if not body.unit.strip():
        raise ValidationError("unit: expected the unit's name (hours, say), found only blanks")


# --- end of a swarm's currency ---------------------------------------------------


# --- the registry of body types -------------------------------------------------


@dataclass(frozen=True)
class BodyType:
    """One record type: its name, its body class, and how such a body is encoded, decoded and checked.

    * ``to_map(body)``: the canonical map (optional fields at their default omitted).
    * ``from_map(value, what)``: the body parsed from a decoded map, each
      field's type and limits checked on the way (``what`` names it in errors).
    * ``check_fields(body)``: the same field checks, on a body built in code.
    * ``check_rules(body)``: the rules across fields (after either of the two above).
    * ``check_author(body, author)``: the rules that involve the record's author.
    * ``expires(body)``: when a record with this body stops being current, if ever.
    """

    name: str
    cls: type
    to_map: Callable[[Any], dict[str, Any]]
    from_map: Callable[[dict[str, Any], str], Any]
    check_fields: Callable[[Any], None]
    check_rules: Callable[[Any], None] = _no_rules
    check_author: Callable[[Any, bytes], None] = _no_author_rule
    expires: Callable[[Any], int | None] = _own_expires


def _item_type(name: str, cls: type[ItemBody]) -> BodyType:
    return BodyType(
        name, cls, _item_to_map, partial(_item_from_map, cls=cls), _check_item_fields, _check_item_rules
    )


#: Every record type, by the name its records carry in ``"type"``. Adding a
#: record type is one body dataclass, its functions above and one entry here.
BODY_TYPES: dict[str, BodyType] = {
    t.name: t
    for t in (
        _item_type("offer", OfferBody),
        _item_type("want", WantBody),
        BodyType(
            "update",
            UpdateBody,
            _update_to_map,
            _update_from_map,
            _check_update_fields,
            _check_update_rules,
            expires=_update_expires,
        ),
        BodyType("withdraw", WithdrawBody, _withdraw_to_map, _withdraw_from_map, _check_withdraw_fields),
        BodyType(
            "attest",
            AttestBody,
            _fields_to_map,
            _attest_from_map,
            _check_attest_fields,
            check_author=_check_attest_author,
        ),
        BodyType(
            "proposal",
            ProposalBody,
            _fields_to_map,
            _proposal_from_map,
            _check_proposal_fields,
            _check_proposal_rules,
            check_author=_check_proposal_author,
        ),
        BodyType(
            "reply", ReplyBody, _fields_to_map, _reply_from_map, _check_reply_fields, _check_reply_rules
        ),
        BodyType("profile", ProfileBody, _fields_to_map, _profile_from_map, _check_profile_fields),
        BodyType(
            "ring",
            RingBody,
            _fields_to_map,
            _ring_from_map,
            _check_ring_fields,
            _check_ring_rules,
            check_author=_check_ring_author,
        ),
        BodyType("ringmove", RingMoveBody, _fields_to_map, _ringmove_from_map, _check_ringmove_fields),
        BodyType(
            "transfer",
            TransferBody,
            _fields_to_map,
            _transfer_from_map,
            _check_transfer_fields,
            _check_transfer_rules,
            check_author=_check_transfer_author,
        ),
        BodyType("pool", PoolBody, _pool_to_map, _pool_from_map, _check_pool_fields, _check_pool_rules),
        BodyType("pledge", PledgeBody, _fields_to_map, _pledge_from_map, _check_pledge_fields),
        BodyType("poolmove", PoolMoveBody, _fields_to_map, _poolmove_from_map, _check_poolmove_fields),
        BodyType(
            "currency",
            CurrencyBody,
            _fields_to_map,
            _currency_from_map,
            _check_currency_fields,
            _check_currency_rules,
        ),
    )
}
RECORD_TYPES = tuple(BODY_TYPES)
_BODY_TYPE_OF_CLASS: dict[type, BodyType] = {t.cls: t for t in BODY_TYPES.values()}
# A bare ItemBody (the item inside an update) is encoded and checked as offers and wants are.
_ENCODING_OF_CLASS: dict[type, BodyType] = {**_BODY_TYPE_OF_CLASS, ItemBody: BODY_TYPES["offer"]}


def _body_type_of(body: Any) -> BodyType | None:
    """The registry entry that encodes and checks ``body`` (found for subclasses too), if any."""
    body_type = _ENCODING_OF_CLASS.get(type(body))
    if body_type is None:
        for cls in type(body).__mro__[1:]:
            body_type = _ENCODING_OF_CLASS.get(cls)
            if body_type is not None:
                break
    return body_type


def _registered_body_type(body: Any) -> BodyType:
    body_type = _body_type_of(body)
    if body_type is None:
        raise ValidationError(f"expected a record body, found {_describe(body)}")
    return body_type


def record_type_of(body: Any) -> str:
    """The record type name for a body instance."""
    body_type = _BODY_TYPE_OF_CLASS.get(type(body))
    if body_type is None:
        raise ValidationError(f"expected a record body, found {_describe(body)}")
    return body_type.name


# --- checks (shared by signing and decoding) ------------------------------------


def check_body(body: Any) -> None:
    """Check the limits and rules of a body; raise :class:`ValidationError` if broken."""
    body_type = _registered_body_type(body)
    body_type.check_fields(body)
    body_type.check_rules(body)


def _check_envelope(record: Record) -> None:
    """Every check of a record built in code: its fields, its body, and the rules across them."""
    if record.v != VERSION:
        raise ValidationError(f"expected record version {VERSION}, found {record.v!r}")
    body_type = BODY_TYPES.get(record.type)
    if body_type is None:
        raise ValidationError(f"expected a record type in {list(RECORD_TYPES)}, found {record.type!r}")
    if type(record.body) is not body_type.cls:
        raise ValidationError(
            f"a {record.type} record needs a {body_type.cls.__name__}, found {_describe(record.body)}"
        )
    _check_len(record.swarm, SWARM_ID_SIZE, "swarm")
    _check_len(record.author, KEY_SIZE, "author")
    _int_field(record.seq, "seq", 0, 2**63 - 1)
    _int_field(record.ts, "ts", 0, 2**63 - 1)
    check_body(record.body)
    _check_across(record, body_type)


def _check_across(record: Record, body_type: BodyType) -> None:
    """The rules across a record's fields and its body (all that decoding has left to check)."""
    expires = body_type.expires(record.body)
    if expires is not None and expires <= record.ts:
        raise ValidationError("expires: expected a time after the record's own timestamp")
    body_type.check_author(record.body, record.author)


def normalize_tags(tags: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Lowercase, strip, dedupe and sort user-typed tags into the canonical form."""
    return tuple(sorted({t.strip().lower() for t in tags if t.strip()}))


# --- small field checkers ----------------------------------------------------


def describe(value: Any) -> str:
    """A short description of a value's kind and size, for error messages."""
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    if isinstance(value, str):
        return f"text of {len(value)} characters"
    return type(value).__name__


_describe = describe


def _only_keys(value: dict[str, Any], allowed: set[str], what: str) -> None:
    extra = set(value) - allowed
    if extra:
        raise ValidationError(f"{what}: unexpected fields {sorted(extra, key=repr)}")


def _bytes_field(value: Any, name: str, size: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValidationError(f"{name}: expected {size} bytes, found {_describe(value)}")
    return value


def _private_field(value: Any) -> bytes:
    """A sealed private part (:mod:`meshnode.sealing`): empty, or a blob of a valid size and version.

    Only the two parties can open it; everyone else checks its shape and
    carries it (the record's signature covers it).
    """
    if not isinstance(value, bytes):
        raise ValidationError(f"private: expected bytes, found {_describe(value)}")
    if value and (
        not sealing.MIN_BLOB <= len(value) <= sealing.MAX_BLOB
        or (len(value) - sealing.OVERHEAD) % sealing.PAD
        or value[0] != sealing.VERSION
    ):
        raise ValidationError(
            f"private: expected a sealed part of {sealing.MIN_BLOB}..{sealing.MAX_BLOB} bytes"
            f" (version {sealing.VERSION}), found {len(value)} bytes"
        )
    return value


def _check_len(value: Any, size: int, name: str) -> None:
    _bytes_field(value, name, size)


def _int_field(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name}: expected an integer, found {_describe(value)}")
    if not lo <= value <= hi:
        raise ValidationError(f"{name}: expected {lo}..{hi}, found {value}")
    return value


def _opt_int(value: Any, name: str, lo: int = 0, hi: int = 2**63 - 1) -> int | None:
    if value is None:
        return None
    return _int_field(value, name, lo, hi)


def _text_field(value: Any, name: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{name}: expected text, found {_describe(value)}")
    if len(value) > max_len:
        raise ValidationError(f"{name}: expected at most {max_len} characters, found {len(value)}")
    if _CONTROL_RE.search(value):
        raise ValidationError(f"{name}: control characters are not allowed")
    return value


def _line_field(value: Any, name: str, max_len: int) -> str:
    """A :func:`_text_field` that is one line of visible text (see ``_NOT_IN_A_LINE_RE``)."""
    text = _text_field(value, name, max_len)
    found = _NOT_IN_A_LINE_RE.search(text)
    if found:
        raise ValidationError(
            f"{name}: one line of visible text, found U+{ord(found.group()):04X}"
            " (a line break, tab, or invisible direction or zero-width character)"
        )
    return text


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        raise ValidationError(f"{name}: expected one of {list(choices)}, found {value!r}")
    return value


def _ids_field(value: Any, name: str) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise ValidationError(f"{name}: expected a list of ids, found {_describe(value)}")
    ids = tuple(_bytes_field(v, name, ID_SIZE) for v in value)
    _check_ids(ids, name)
    return ids


def _check_ids(ids: tuple[bytes, ...], name: str) -> None:
    if len(ids) > MAX_ITEMS:
        raise ValidationError(f"{name}: expected at most {MAX_ITEMS} ids, found {len(ids)}")
    for i in ids:
        _check_len(i, ID_SIZE, name)
    if len(set(ids)) != len(ids):
        raise ValidationError(f"{name}: the same id appears twice")


def new_record(body: Any, *, swarm: bytes, seq: int, ts: int, signing_key: nacl.signing.SigningKey) -> Record:
    """Build and sign a record for ``body`` (its type follows from the body's class)."""
    record = Record(type=record_type_of(body), swarm=swarm, author=b"", seq=seq, ts=ts, body=body)
    return sign_record(record, signing_key)
