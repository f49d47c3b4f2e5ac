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

This module is pure: no I/O, no clock (time is a parameter), no network.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import Any, ClassVar

import cbor2
import nacl.bindings
import nacl.exceptions
import nacl.signing

from meshnode import wire
from meshnode.errors import (
    ClockSkewError,
    DecodeError,
    ExpiredError,
    SignatureError,
    ValidationError,
    WrongSwarmError,
)

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
LEVEL_SCALE = 1000  # attest levels are integers in [-1000, 1000] (thousandths)

ITEM_KINDS = ("lend", "give", "swap", "service")
REPLY_ACTIONS = ("accept", "decline", "counter", "cancel", "complete")

_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_GEOHASH_RE = re.compile(r"^[0123456789bcdefghjkmnpqrstuvwxyz]+$")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


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


@dataclass(frozen=True)
class ReplyBody:
    """A move on ``proposal``: accept, decline, counter (new terms), cancel or complete.

    For ``counter``, ``give`` and ``take`` are from the replying party's point
    of view (what the replier gives, what the replier takes).
    """

    proposal: bytes
    action: str
    give: tuple[bytes, ...] = ()
    take: tuple[bytes, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class ProfileBody:
    """Optional public profile of the author."""

    nickname: str = ""
    bio: str = ""


BODY_TYPES: dict[str, type] = {
    "offer": OfferBody,
    "want": WantBody,
    "update": UpdateBody,
    "withdraw": WithdrawBody,
    "attest": AttestBody,
    "proposal": ProposalBody,
    "reply": ReplyBody,
    "profile": ProfileBody,
}
RECORD_TYPES = tuple(BODY_TYPES)
_TYPE_OF_BODY = {cls: name for name, cls in BODY_TYPES.items()}


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
        body = self.body
        if isinstance(body, UpdateBody):
            return body.item.expires
        return getattr(body, "expires", None)


def record_id(encoded: bytes) -> bytes:
    """The id of a record given its encoded bytes."""
    return hashlib.blake2b(encoded, digest_size=ID_SIZE).digest()


def signing_bytes(record: Record) -> bytes:
    """The exact bytes the author's signature covers."""
    encoded = record.__dict__.get("encoded")
    if encoded is not None:
        cut = _unsigned_from_encoded(record, encoded)
        if cut is not None:
            return SIGNING_DOMAIN + cut
    # The map is built from checked dataclasses, so it is plain data already:
    # encode it directly (wire.encode would walk it again to check).
    return SIGNING_DOMAIN + cbor2.dumps(_record_map(record, with_sig=False), canonical=True)


_SIG_ENTRY = b"\x63sig\x58\x40"  # text "sig", then a 64-byte byte string


def _unsigned_from_encoded(record: Record, encoded: bytes) -> bytes | None:
    """The canonical map without ``sig``, cut out of the record's canonical bytes.

    In canonical order the keys run v, ts, seq, sig, body, type, swarm, author
    (shorter keys first), so the ``sig`` entry starts right after the three
    integers, at an offset known from their values. Saves re-encoding the
    record on every verification; returns None if the layout is not the
    expected one (then the caller re-encodes).
    """
    off = 1 + 2 + _int_len(record.v) + 3 + _int_len(record.ts) + 4 + _int_len(record.seq)
    if encoded[0] != 0xA8 or encoded[off : off + 6] != _SIG_ENTRY:
        return None
    return b"\xa7" + encoded[1:off] + encoded[off + 6 + SIG_SIZE :]


def _int_len(value: int) -> int:
    """Length of the canonical CBOR head of a non-negative integer."""
    if value < 24:
        return 1
    if value < 0x100:
        return 2
    if value < 0x10000:
        return 3
    if value < 0x100000000:
        return 5
    return 9


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
            f"signature of {record.type} record by {record.author.hex()[:16]}… does not verify"
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
    record: Record,
    *,
    now_ms: int,
    swarms: frozenset[bytes] | set[bytes] | None = None,
    allow_expired: bool = False,
) -> None:
    """Check a decoded record against the node's context: swarm, clock skew, expiry.

    ``swarms`` is the set of swarm ids the record may belong to (``None``: any).
    A record more than :data:`MAX_CLOCK_SKEW_MS` in the future is refused; an
    expired one is refused unless ``allow_expired``.
    """
    if swarms is not None and record.swarm not in swarms:
        raise WrongSwarmError(
            f"record is for swarm {record.swarm.hex()[:16]}…, which this node has not joined"
        )
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
    data: bytes,
    *,
    now_ms: int,
    swarms: frozenset[bytes] | set[bytes] | None = None,
    allow_expired: bool = False,
) -> Record:
    """The full ingest check: decode, schema, context (swarm, skew, expiry), signature.

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


def record_from_map(value: Any) -> Record:
    """Build a :class:`Record` from a decoded map, checking every field."""
    if not isinstance(value, dict):
        raise ValidationError(f"expected a record map, found {_describe(value)}")
    keys = set(value)
    expected = set(Record.FIELDS)
    if keys != expected:
        missing = sorted(expected - keys)
        extra = sorted(keys - expected)
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
    _check_envelope(record, body_checked=True)
    return record


def body_to_map(body: Any) -> dict[str, Any]:
    """The canonical map of a body: fields at their default are omitted."""
    if isinstance(body, ItemBody):
        return _item_to_map(body)
    if isinstance(body, UpdateBody):
        return {"target": body.target, "item": _item_to_map(body.item)}
    if isinstance(body, WithdrawBody):
        return {"target": body.target}
    if isinstance(body, AttestBody):
        return _without_defaults(
            {
                "subject": body.subject,
                "level": body.level,
                "context": body.context,
                "note": body.note,
                "expires": body.expires,
            }
        )
    if isinstance(body, ProposalBody):
        return _without_defaults(
            {
                "to": body.to,
                "give": list(body.give),
                "take": list(body.take),
                "note": body.note,
                "expires": body.expires,
            }
        )
    if isinstance(body, ReplyBody):
        return _without_defaults(
            {
                "proposal": body.proposal,
                "action": body.action,
                "give": list(body.give),
                "take": list(body.take),
                "note": body.note,
            }
        )
    if isinstance(body, ProfileBody):
        return _without_defaults({"nickname": body.nickname, "bio": body.bio})
    raise ValidationError(f"expected a record body, found {_describe(body)}")


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
        },
        keep=("title", "kind"),
    )


def _without_defaults(d: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k in keep or v not in (None, "", [])}


def body_from_map(rtype: str, value: Any) -> Any:
    """Build and check the body of a record of type ``rtype``; it must re-encode exactly."""
    if not isinstance(value, dict):
        raise ValidationError(f"expected a {rtype} body map, found {_describe(value)}")
    cls = BODY_TYPES[rtype]
    try:
        if issubclass(cls, ItemBody):
            body: Any = _item_from_map(value, cls, rtype)
        elif cls is UpdateBody:
            _only_keys(value, {"target", "item"}, rtype)
            target = _bytes_field(value.get("target"), "target", ID_SIZE)
            item_map = value.get("item")
            if not isinstance(item_map, dict):
                raise ValidationError(f"update: expected an item map, found {_describe(item_map)}")
            body = UpdateBody(target=target, item=_item_from_map(item_map, ItemBody, "update item"))
        elif cls is WithdrawBody:
            _only_keys(value, {"target"}, rtype)
            body = WithdrawBody(target=_bytes_field(value.get("target"), "target", ID_SIZE))
        elif cls is AttestBody:
            _only_keys(value, {"subject", "level", "context", "note", "expires"}, rtype)
            body = AttestBody(
                subject=_bytes_field(value.get("subject"), "subject", KEY_SIZE),
                level=_int_field(value.get("level"), "level", -LEVEL_SCALE, LEVEL_SCALE),
                context=_text_field(value.get("context", ""), "context", MAX_CONTEXT),
                note=_text_field(value.get("note", ""), "note", MAX_NOTE),
                expires=_opt_int(value.get("expires"), "expires"),
            )
        elif cls is ProposalBody:
            _only_keys(value, {"to", "give", "take", "note", "expires"}, rtype)
            body = ProposalBody(
                to=_bytes_field(value.get("to"), "to", KEY_SIZE),
                give=_ids_field(value.get("give", []), "give"),
                take=_ids_field(value.get("take", []), "take"),
                note=_text_field(value.get("note", ""), "note", MAX_NOTE),
                expires=_opt_int(value.get("expires"), "expires"),
            )
        elif cls is ReplyBody:
            _only_keys(value, {"proposal", "action", "give", "take", "note"}, rtype)
            body = ReplyBody(
                proposal=_bytes_field(value.get("proposal"), "proposal", ID_SIZE),
                action=_choice(value.get("action"), "action", REPLY_ACTIONS),
                give=_ids_field(value.get("give", []), "give"),
                take=_ids_field(value.get("take", []), "take"),
                note=_text_field(value.get("note", ""), "note", MAX_NOTE),
            )
        else:
            _only_keys(value, {"nickname", "bio"}, rtype)
            body = ProfileBody(
                nickname=_text_field(value.get("nickname", ""), "nickname", MAX_NICKNAME),
                bio=_text_field(value.get("bio", ""), "bio", MAX_BIO),
            )
    except ValidationError as exc:
        raise type(exc)(f"{rtype} body: {exc.message}") from None
    # Every field's type and limits were checked while parsing; what is left
    # are the rules across fields (check_body would check everything twice).
    _check_rules(body)
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


def _item_from_map(value: dict[str, Any], cls: type, what: str) -> ItemBody:
    _only_keys(value, {"title", "kind", "desc", "tags", "where", "quantity", "terms", "expires"}, what)
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
        title=_text_field(value.get("title"), "title", MAX_TITLE),
        kind=_choice(value.get("kind"), "kind", ITEM_KINDS),
        desc=_text_field(value.get("desc", ""), "desc", MAX_DESC),
        tags=tuple(_text_field(t, "tag", MAX_TAG) for t in tags),
        where=_text_field(value.get("where", ""), "where", MAX_GEOHASH),
        quantity=_opt_int(value.get("quantity"), "quantity", 1, MAX_QUANTITY),
        terms=terms,
        expires=_opt_int(value.get("expires"), "expires"),
    )


# --- semantic checks (shared by signing and decoding) -------------------------


def check_body(body: Any) -> None:
    """Check the limits and rules of a body; raise :class:`ValidationError` if broken."""
    if isinstance(body, ItemBody):
        _check_item(body)
    elif isinstance(body, UpdateBody):
        _check_len(body.target, ID_SIZE, "target")
        if not isinstance(body.item, ItemBody):
            raise ValidationError(f"update item: expected an item body, found {_describe(body.item)}")
        _check_item(body.item)
    elif isinstance(body, WithdrawBody):
        _check_len(body.target, ID_SIZE, "target")
    elif isinstance(body, AttestBody):
        _check_len(body.subject, KEY_SIZE, "subject")
        _int_field(body.level, "level", -LEVEL_SCALE, LEVEL_SCALE)
        _text_field(body.context, "context", MAX_CONTEXT)
        _text_field(body.note, "note", MAX_NOTE)
        _opt_int(body.expires, "expires")
    elif isinstance(body, ProposalBody):
        _check_len(body.to, KEY_SIZE, "to")
        _check_ids(body.give, "give")
        _check_ids(body.take, "take")
        if not body.give and not body.take:
            raise ValidationError("a proposal must give or take at least one offer")
        _text_field(body.note, "note", MAX_NOTE)
        _opt_int(body.expires, "expires")
    elif isinstance(body, ReplyBody):
        _check_len(body.proposal, ID_SIZE, "proposal")
        _choice(body.action, "action", REPLY_ACTIONS)
        _check_ids(body.give, "give")
        _check_ids(body.take, "take")
        if body.action == "counter":
            if not body.give and not body.take:
                raise ValidationError("a counter must give or take at least one offer")
        elif body.give or body.take:
            raise ValidationError(f"only a counter carries offers, found {body.action} with offers")
        _text_field(body.note, "note", MAX_NOTE)
    elif isinstance(body, ProfileBody):
        _text_field(body.nickname, "nickname", MAX_NICKNAME)
        _text_field(body.bio, "bio", MAX_BIO)
    else:
        raise ValidationError(f"expected a record body, found {_describe(body)}")


def _check_rules(body: Any) -> None:
    """The rules of a body beyond each field's own type and limits (see check_body)."""
    if isinstance(body, ItemBody):
        _check_item_rules(body)
    elif isinstance(body, UpdateBody):
        _check_item_rules(body.item)
    elif isinstance(body, ProposalBody):
        if not body.give and not body.take:
            raise ValidationError("a proposal must give or take at least one offer")
    elif isinstance(body, ReplyBody):
        if body.action == "counter":
            if not body.give and not body.take:
                raise ValidationError("a counter must give or take at least one offer")
        elif body.give or body.take:
            raise ValidationError(f"only a counter carries offers, found {body.action} with offers")


def _check_item_rules(item: ItemBody) -> None:
    if not item.title.strip():
        raise ValidationError("title: expected some text, found only blanks")
    if len(item.tags) > MAX_TAGS:
        raise ValidationError(f"tags: expected at most {MAX_TAGS}, found {len(item.tags)}")
    for tag in item.tags:
        if not _TAG_RE.match(tag):
            raise ValidationError(f"tag: expected lowercase letters, digits, '-' or '_', found {tag!r}")
    if list(item.tags) != sorted(set(item.tags)):
        raise ValidationError("tags: expected sorted and without duplicates (use normalize_tags)")
    if item.where and not _GEOHASH_RE.match(item.where):
        raise ValidationError(f"where: expected a geohash (base32, at most 6), found {item.where!r}")
    if item.terms is not None and item.kind != "lend":
        raise ValidationError(f"terms: only a lend item has lending terms, found kind {item.kind!r}")


def _check_item(item: ItemBody) -> None:
    title = _text_field(item.title, "title", MAX_TITLE)
    if not title.strip():
        raise ValidationError("title: expected some text, found only blanks")
    _choice(item.kind, "kind", ITEM_KINDS)
    _text_field(item.desc, "desc", MAX_DESC)
    if len(item.tags) > MAX_TAGS:
        raise ValidationError(f"tags: expected at most {MAX_TAGS}, found {len(item.tags)}")
    for tag in item.tags:
        _text_field(tag, "tag", MAX_TAG)
        if not _TAG_RE.match(tag):
            raise ValidationError(f"tag: expected lowercase letters, digits, '-' or '_', found {tag!r}")
    if list(item.tags) != sorted(set(item.tags)):
        raise ValidationError("tags: expected sorted and without duplicates (use normalize_tags)")
    _text_field(item.where, "where", MAX_GEOHASH)
    if item.where and not _GEOHASH_RE.match(item.where):
        raise ValidationError(f"where: expected a geohash (base32, at most 6), found {item.where!r}")
    _opt_int(item.quantity, "quantity", 1, MAX_QUANTITY)
    if item.terms is not None:
        if item.kind != "lend":
            raise ValidationError(f"terms: only a lend item has lending terms, found kind {item.kind!r}")
        _opt_int(item.terms.max_days, "terms.max_days", 1, MAX_LEND_DAYS)
        _text_field(item.terms.deposit, "terms.deposit", MAX_DEPOSIT)
    _opt_int(item.expires, "expires")


def _check_envelope(record: Record, *, body_checked: bool = False) -> None:
    if record.v != VERSION:
        raise ValidationError(f"expected record version {VERSION}, found {record.v!r}")
    if record.type not in BODY_TYPES:
        raise ValidationError(f"expected a record type in {list(RECORD_TYPES)}, found {record.type!r}")
    expected_cls = BODY_TYPES[record.type]
    if type(record.body) is not expected_cls:
        raise ValidationError(
            f"a {record.type} record needs a {expected_cls.__name__}, found {_describe(record.body)}"
        )
    _check_len(record.swarm, SWARM_ID_SIZE, "swarm")
    _check_len(record.author, KEY_SIZE, "author")
    _int_field(record.seq, "seq", 0, 2**63 - 1)
    _int_field(record.ts, "ts", 0, 2**63 - 1)
    if not body_checked:
        check_body(record.body)
    expires = record.expires
    if expires is not None and expires <= record.ts:
        raise ValidationError("expires: expected a time after the record's own timestamp")
    if isinstance(record.body, ProposalBody) and record.body.to == record.author:
        raise ValidationError("a proposal must be addressed to someone else")
    if isinstance(record.body, AttestBody) and record.body.subject == record.author:
        raise ValidationError("an attestation must be about someone else")


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
        raise ValidationError(f"{what}: unexpected fields {sorted(extra)}")


def _bytes_field(value: Any, name: str, size: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValidationError(f"{name}: expected {size} bytes, found {_describe(value)}")
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


def record_type_of(body: Any) -> str:
    """The record type name for a body instance."""
    try:
        return _TYPE_OF_BODY[type(body)]
    except KeyError:
        raise ValidationError(f"expected a record body, found {_describe(body)}") from None


def new_record(body: Any, *, swarm: bytes, seq: int, ts: int, signing_key: nacl.signing.SigningKey) -> Record:
    """Build and sign a record for ``body`` (its type follows from the body's class)."""
    record = Record(type=record_type_of(body), swarm=swarm, author=b"", seq=seq, ts=ts, body=body)
    return sign_record(record, signing_key)
