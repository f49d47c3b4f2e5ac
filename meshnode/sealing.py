"""Private parts of trade records: text sealed so that only the two parties read it.

A proposal or reply may carry a private part (an address, a phone number, a
meeting time). :func:`seal` turns the text into a blob that goes into the
record's body; the record is signed, stored and synced like any other, so a
neighbour stores and forwards it without being able to read it.
:func:`open_sealed` gives the text back to either party, from the blob alone.

Threat model: whoever holds a copy of the record (neighbours, relays, a
stolen database) learns who trades with whom (in clear in the record) and the
text's size to within :data:`PAD` bytes, not the text; nobody can change,
forge or move it unnoticed. A stolen identity key reveals every private part
of that party's trades (static keys: no forward secrecy).

Keys. Each party's X25519 key is derived from its Ed25519 identity (the
libsodium conversion, ``crypto_sign_ed25519_{pk,sk}_to_curve25519``), so no
new key is published or stored. The two parties share one key,
``X25519(a_sk, B_pk) = X25519(b_sk, A_pk)``, hashed by NaCl's ``Box``. The
Box is the same from both sides, so one ciphertext (XSalsa20-Poly1305, a
random 24-byte nonce) is readable by the sender and by the recipient: the
sender reads their own private part again after a restart, from the record.

Why not SealedBox. A SealedBox is encrypted to the recipient with a
throw-away key, so its own sender can never open it again: the sender would
need a second copy for themselves, or local state that a restart or a new
machine loses. What a SealedBox adds is an anonymous sender and secrecy
against a later theft of the *sender's* key only; the sender is the record's
signed, public author anyway, and the recipient's key opens the SealedBox as
it opens the Box. So the first message is sealed like every other: one format.

The blob (all sizes in bytes)::

    version (1) = 1 | nonce (24) | Box ciphertext (16-byte tag + frame)

    frame = sealed_by (32: the sealer's Ed25519 key)
          | context length (1) | context (0..MAX_CONTEXT)
          | text length (2, big-endian) | text (UTF-8, 0..MAX_TEXT)
          | zeros up to the next multiple of PAD

A blob is between :data:`MIN_BLOB` and :data:`MAX_BLOB` bytes and its size
is ``OVERHEAD + k * PAD``.

Binding. The blob sits inside the signed body, so the record's signature
covers it: nobody but the author changes a byte of it without breaking the
signature, and the Poly1305 tag refuses any change anyway. Because the Box
key is the same for both parties, the tag alone does not say which of the
two sealed it: the frame names the sealer, and :func:`open_sealed` checks it
against the record's author (so the counterparty cannot put a blob they
received into a record of theirs, nor seal one "as" the other party into a
record of their own). The frame also carries a ``context`` that the opener
must supply identically, which ties the blob to its trade:

* in a reply, :func:`reply_context` of the proposal id: a private part can
  not be replayed into another trade;
* in a proposal, whose own id depends on the blob inside it,
  :func:`proposal_context` of the swarm id: the blob stays in its swarm. Only
  its author could copy it into another proposal of theirs (the signature
  keeps anyone else out), and that is no more than sealing the same words
  again, which they may do anyway.

Limits. The text is at most :data:`MAX_TEXT` UTF-8 bytes and holds no
control characters other than tab and line feed (the rule of a record's
notes: the opener prints it, so a party cannot smuggle terminal escapes);
both rules are checked by :func:`seal` (:class:`BadValue`) and again by
:func:`open_sealed`.

Errors. :func:`open_sealed` raises :class:`ValidationError` and nothing else
for every blob it cannot open: wrong type or size, unknown version, any byte
changed, a key that is neither party's, another context, another sealer, a
frame that is not in its one canonical form. Bad arguments from the node's
own code or user (text, keys, context) raise :class:`BadValue`.

This module is pure: no I/O, no clock; the nonce comes from the OS random
source through PyNaCl.
"""

from __future__ import annotations

import re

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing
import nacl.utils

from meshnode.errors import BadValue, ValidationError
from meshnode.identity import Identity

VERSION = 1
KEY_SIZE = 32
ID_SIZE = 32
NONCE_SIZE = nacl.public.Box.NONCE_SIZE  # 24
TAG_SIZE = 16  # Poly1305
#: The frame is padded with zeros to a multiple of this, hiding the text's exact length.
PAD = 64
#: The most UTF-8 bytes of private text.
MAX_TEXT = 1024
#: The most bytes of context (a tag byte and a 32-byte id in practice).
MAX_CONTEXT = 64
#: Bytes of a blob besides the padded frame: version, nonce, tag.
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
_FRAME_FIXED = KEY_SIZE + 1 + 2
MIN_BLOB = OVERHEAD + PAD
MAX_BLOB = OVERHEAD + -(-(_FRAME_FIXED + MAX_CONTEXT + MAX_TEXT) // PAD) * PAD

_PROPOSAL_TAG = b"P"
_REPLY_TAG = b"R"
#: Control characters refused in the text: all of C0 and C1 but tab and line feed (as in record notes).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

SigningKeyLike = nacl.signing.SigningKey | Identity


def proposal_context(swarm_id: bytes) -> bytes:
    """The context of a private part in a proposal published in swarm ``swarm_id``."""
    _check_bytes(swarm_id, ID_SIZE, "swarm id")
    return _PROPOSAL_TAG + swarm_id


def reply_context(proposal_id: bytes) -> bytes:
    """The context of a private part in a reply (any move) on proposal ``proposal_id``."""
    _check_bytes(proposal_id, ID_SIZE, "proposal id")
    return _REPLY_TAG + proposal_id


def seal(text: str, *, sender: SigningKeyLike, recipient: bytes, context: bytes) -> bytes:
    """Seal ``text`` from ``sender`` to ``recipient`` (an Ed25519 public key) for ``context``.

    The blob opens with :func:`open_sealed` by either party. Raises
    :class:`BadValue` for text over :data:`MAX_TEXT` UTF-8 bytes, text with
    control characters or that is not encodable, an unusable or own key as
    recipient, or a context longer than :data:`MAX_CONTEXT`.
    """
    if not isinstance(text, str):
        raise BadValue(f"private text: expected text, found {type(text).__name__}")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadValue("private text: not valid Unicode (a lone surrogate)") from None
    _check_text(text, raw, BadValue)
    if not isinstance(context, bytes) or len(context) > MAX_CONTEXT:
        raise BadValue(f"context: expected at most {MAX_CONTEXT} bytes, found {_describe(context)}")
    signing_key = _signing_key(sender, "sender")
    me = bytes(signing_key.verify_key)
    box = _box(signing_key, recipient, me, BadValue, "recipient")
    frame = me + bytes([len(context)]) + context + len(raw).to_bytes(2, "big") + raw
    frame += bytes(-len(frame) % PAD)
    nonce = nacl.utils.random(NONCE_SIZE)
    return bytes([VERSION]) + nonce + box.encrypt(frame, nonce).ciphertext


def open_sealed(blob: bytes, *, me: SigningKeyLike, other: bytes, author: bytes, context: bytes) -> str:
    """The text of a blob between ``me`` and ``other``, sealed by ``author`` for ``context``.

    ``author`` is the author of the record the blob came in: ``other``, or
    ``me`` when reading my own private part. Raises :class:`ValidationError`
    (only) for anything that is not such a blob; see the module docstring.
    """
    signing_key = _signing_key(me, "me")
    mine = bytes(signing_key.verify_key)
    if not isinstance(blob, bytes):
        raise ValidationError(f"private part: expected bytes, found {type(blob).__name__}")
    size = len(blob)
    if not MIN_BLOB <= size <= MAX_BLOB or (size - OVERHEAD) % PAD:
        raise ValidationError(
            f"private part: expected {MIN_BLOB}..{MAX_BLOB} bytes in steps of {PAD}, found {size}"
        )
    if blob[0] != VERSION:
        raise ValidationError(f"private part: expected version {VERSION}, found {blob[0]}")
    if author not in (mine, other):
        raise ValidationError("private part: its record's author is neither party")
    box = _box(signing_key, other, mine, ValidationError, "other party")
    try:
        frame = box.decrypt(blob[1 + NONCE_SIZE :], blob[1 : 1 + NONCE_SIZE])
    except nacl.exceptions.CryptoError:
        raise ValidationError(
            "private part does not open: changed, or not sealed between these two parties"
        ) from None
    return _read_frame(frame, author=author, context=context)


def _read_frame(frame: bytes, *, author: bytes, context: bytes) -> str:
    """The text of a decrypted frame, after checking its sealer, context, lengths and padding."""
    if frame[:KEY_SIZE] != author:
        raise ValidationError("private part was sealed by the other party, not by its record's author")
    at = KEY_SIZE
    context_len = frame[at]
    at += 1
    if frame[at : at + context_len] != context or len(context) != context_len:
        raise ValidationError("private part belongs to another trade (its context differs)")
    at += context_len
    if at + 2 > len(frame):
        raise ValidationError("private part: frame too short")
    text_len = int.from_bytes(frame[at : at + 2], "big")
    at += 2
    raw = frame[at : at + text_len]
    padding = frame[at + text_len :]
    if len(raw) != text_len or len(padding) >= PAD or any(padding):
        raise ValidationError("private part: frame lengths or padding wrong")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("private part: text is not UTF-8") from None
    _check_text(text, raw, ValidationError)
    return text


def _check_text(text: str, raw: bytes, error: type[BadValue] | type[ValidationError]) -> None:
    if len(raw) > MAX_TEXT:
        raise error(f"private text: expected at most {MAX_TEXT} UTF-8 bytes, found {len(raw)}")
    if _CONTROL_RE.search(text):
        raise error("private text: control characters other than tab and line feed are not allowed")


def _signing_key(key: object, name: str) -> nacl.signing.SigningKey:
    if isinstance(key, Identity):
        return key.signing_key
    if isinstance(key, nacl.signing.SigningKey):
        return key
    raise BadValue(f"{name}: expected a SigningKey or an Identity, found {type(key).__name__}")


def _box(
    signing_key: nacl.signing.SigningKey,
    other: object,
    mine: bytes,
    error: type[BadValue] | type[ValidationError],
    name: str,
) -> nacl.public.Box:
    """The Box shared with ``other`` (an Ed25519 public key), or ``error`` if that key is unusable."""
    if not isinstance(other, bytes) or len(other) != KEY_SIZE:
        raise error(f"{name}: expected a {KEY_SIZE}-byte Ed25519 key, found {_describe(other)}")
    if other == mine:
        raise error(f"{name}: a private part is between two parties, not with oneself")
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(other):
        raise error(f"{name}: not a valid Ed25519 key (small order or not on the curve)")
    try:
        their_x = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(other)
        return nacl.public.Box(signing_key.to_curve25519_private_key(), nacl.public.PublicKey(their_x))
    except nacl.exceptions.CryptoError:
        raise error(f"{name}: the key does not convert to X25519") from None


def _check_bytes(value: object, size: int, name: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise BadValue(f"{name}: expected {size} bytes, found {_describe(value)}")


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return type(value).__name__
