"""meshnode.sealing: private parts only the two parties of a trade can read."""

from __future__ import annotations

import hashlib

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.errors import BadValue, ValidationError
from meshnode.identity import Identity
from meshnode.sealing import (
    MAX_BLOB,
    MAX_CONTEXT,
    MAX_TEXT,
    MIN_BLOB,
    NONCE_SIZE,
    OVERHEAD,
    PAD,
    VERSION,
    open_sealed,
    proposal_context,
    reply_context,
    seal,
)


def _identity(name: str) -> Identity:
    return Identity(seed=hashlib.sha256(name.encode()).digest())


ALICE = _identity("alice")
BOB = _identity("bob")
CAROL = _identity("carol")
SWARM = hashlib.sha256(b"swarm").digest()
PROPOSAL = hashlib.sha256(b"proposal").digest()
CTX = reply_context(PROPOSAL)
TEXT = "12 Elm Street, ring twice\nphone 555-0199"
BLOB = seal(TEXT, sender=ALICE, recipient=BOB.public_key, context=CTX)


def _open_as_bob(blob: bytes, context: bytes = CTX) -> str:
    return open_sealed(blob, me=BOB, other=ALICE.public_key, author=ALICE.public_key, context=context)


def _open_as_alice(blob: bytes, context: bytes = CTX) -> str:
    return open_sealed(blob, me=ALICE, other=BOB.public_key, author=ALICE.public_key, context=context)


# --- both parties read it ------------------------------------------------------


def test_the_recipient_and_the_sender_both_open_it() -> None:
    assert _open_as_bob(BLOB) == TEXT
    assert _open_as_alice(BLOB) == TEXT


def test_both_open_it_with_fresh_key_objects_as_after_a_restart() -> None:
    """Only the 32-byte seeds survive a restart (the key file): the blob opens from them alone."""
    alice_again = nacl.signing.SigningKey(ALICE.seed)
    bob_again = Identity(seed=bytes(BOB.seed))
    assert (
        open_sealed(BLOB, me=alice_again, other=BOB.public_key, author=ALICE.public_key, context=CTX) == TEXT
    )
    assert (
        open_sealed(BLOB, me=bob_again, other=ALICE.public_key, author=ALICE.public_key, context=CTX) == TEXT
    )


def test_the_other_direction_and_signing_keys_work_too() -> None:
    blob = seal("see you at 6", sender=BOB.signing_key, recipient=ALICE.public_key, context=CTX)
    assert (
        open_sealed(blob, me=ALICE, other=BOB.public_key, author=BOB.public_key, context=CTX)
        == "see you at 6"
    )
    assert (
        open_sealed(blob, me=BOB, other=ALICE.public_key, author=BOB.public_key, context=CTX)
        == "see you at 6"
    )


def test_the_blob_has_the_documented_shape() -> None:
    assert BLOB[0] == VERSION
    assert MIN_BLOB <= len(BLOB) <= MAX_BLOB
    assert (len(BLOB) - OVERHEAD) % PAD == 0
    assert TEXT.encode() not in BLOB


def test_two_seals_of_the_same_text_differ() -> None:
    """A fresh random nonce each time: equal texts are not recognisable as equal."""
    again = seal(TEXT, sender=ALICE, recipient=BOB.public_key, context=CTX)
    assert again[1 : 1 + NONCE_SIZE] != BLOB[1 : 1 + NONCE_SIZE]
    assert again != BLOB and _open_as_bob(again) == TEXT


def test_the_size_hides_the_exact_length() -> None:
    short = seal("a", sender=ALICE, recipient=BOB.public_key, context=CTX)
    longer = seal("a" * 20, sender=ALICE, recipient=BOB.public_key, context=CTX)
    assert len(short) == len(longer) == OVERHEAD + 2 * PAD  # 32 + 1 + 33 + 2 + 20 <= 128


# --- nobody else reads or changes it ------------------------------------------------


def test_a_third_party_cannot_open_it() -> None:
    for other in (ALICE.public_key, BOB.public_key):
        for author in (ALICE.public_key, BOB.public_key):
            with pytest.raises(ValidationError):
                open_sealed(BLOB, me=CAROL, other=other, author=author, context=CTX)


def test_a_wrong_other_party_is_refused() -> None:
    with pytest.raises(ValidationError):
        open_sealed(BLOB, me=BOB, other=CAROL.public_key, author=CAROL.public_key, context=CTX)


def test_every_single_byte_flip_is_refused() -> None:
    for position in range(len(BLOB)):
        tampered = bytearray(BLOB)
        tampered[position] ^= 0x01
        with pytest.raises(ValidationError):
            _open_as_bob(bytes(tampered))
        with pytest.raises(ValidationError):
            _open_as_alice(bytes(tampered))


@given(position=st.integers(0, len(BLOB) - 1), mask=st.integers(1, 255))
def test_any_change_of_one_byte_is_refused(position: int, mask: int) -> None:
    tampered = bytearray(BLOB)
    tampered[position] ^= mask
    with pytest.raises(ValidationError):
        _open_as_bob(bytes(tampered))


# --- bound to its trade and its author ---------------------------------------------


def test_a_blob_cannot_move_to_another_trade() -> None:
    other_trade = reply_context(hashlib.sha256(b"another proposal").digest())
    for context in (other_trade, proposal_context(SWARM), b"", CTX[:-1], CTX + b"\x00"):
        with pytest.raises(ValidationError, match="another trade"):
            _open_as_bob(BLOB, context)


def test_a_proposal_blob_is_bound_to_its_swarm() -> None:
    ctx = proposal_context(SWARM)
    blob = seal("hi", sender=ALICE, recipient=BOB.public_key, context=ctx)
    assert _open_as_bob(blob, ctx) == "hi"
    with pytest.raises(ValidationError):
        _open_as_bob(blob, proposal_context(hashlib.sha256(b"other swarm").digest()))
    assert proposal_context(SWARM) != reply_context(SWARM)


def test_the_counterparty_cannot_pass_a_received_blob_off_as_their_own() -> None:
    """Bob puts Alice's blob into a record of his: its author (Bob) is not its sealer (Alice)."""
    for me, other in ((BOB, ALICE.public_key), (ALICE, BOB.public_key)):
        with pytest.raises(ValidationError, match="sealed by the other party"):
            open_sealed(BLOB, me=me, other=other, author=BOB.public_key, context=CTX)


def test_an_author_who_is_neither_party_is_refused() -> None:
    with pytest.raises(ValidationError, match="neither party"):
        open_sealed(BLOB, me=BOB, other=ALICE.public_key, author=CAROL.public_key, context=CTX)


# --- bad blobs: one error type --------------------------------------------------------


def test_truncated_extended_and_versioned_blobs_are_refused() -> None:
    cases = [
        b"",
        BLOB[:1],
        BLOB[:-1],
        BLOB[: MIN_BLOB - 1],
        BLOB + b"\x00",
        BLOB + bytes(PAD),
        bytes([VERSION + 1]) + BLOB[1:],
        bytes([0]) + BLOB[1:],
        bytes(MAX_BLOB + PAD),
        bytes(len(BLOB)),
    ]
    for blob in cases:
        with pytest.raises(ValidationError):
            _open_as_bob(blob)


def test_a_blob_that_is_not_bytes_is_refused() -> None:
    for blob in (None, TEXT, bytearray(BLOB), memoryview(BLOB), 42):
        with pytest.raises(ValidationError):
            _open_as_bob(blob)  # type: ignore[arg-type]


@given(st.binary(max_size=MAX_BLOB + 2 * PAD))
def test_random_bytes_raise_only_validation_error(blob: bytes) -> None:
    with pytest.raises(ValidationError):
        _open_as_bob(blob)


@given(st.binary(min_size=MIN_BLOB - 1, max_size=MAX_BLOB - 1))
def test_random_bytes_of_a_valid_size_and_version_raise_only_validation_error(body: bytes) -> None:
    blob = bytes([VERSION]) + body[: len(body) - (len(body) - NONCE_SIZE - 16) % PAD]
    assert MIN_BLOB <= len(blob) <= MAX_BLOB and (len(blob) - OVERHEAD) % PAD == 0  # reaches the Box
    with pytest.raises(ValidationError):
        _open_as_bob(blob)


@given(
    other=st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)),
    author=st.binary(max_size=40),
)
def test_garbage_keys_on_open_raise_only_validation_error(other: bytes, author: bytes) -> None:
    with pytest.raises(ValidationError):
        open_sealed(BLOB, me=BOB, other=other, author=author, context=CTX)


def test_unusable_keys_are_refused_on_open() -> None:
    small_order = bytes([1]) + bytes(31)  # the identity point
    for other in (small_order, bytes(32), BOB.public_key):
        with pytest.raises(ValidationError):
            open_sealed(BLOB, me=BOB, other=other, author=other, context=CTX)


def test_a_sealed_frame_that_breaks_the_text_rules_is_refused_on_open() -> None:
    """A hostile party seals a frame by hand: control characters, bad UTF-8, bad padding, over-long text."""
    import nacl.public
    import nacl.utils

    from meshnode.sealing import _box

    box = _box(ALICE.signing_key, BOB.public_key, ALICE.public_key, BadValue, "recipient")

    def handmade(raw: bytes, *, declared: int | None = None, pad: bytes | None = None) -> bytes:
        n = len(raw) if declared is None else declared
        frame = ALICE.public_key + bytes([len(CTX)]) + CTX + n.to_bytes(2, "big") + raw
        frame += bytes(-len(frame) % PAD) if pad is None else pad
        nonce = nacl.utils.random(NONCE_SIZE)
        return bytes([VERSION]) + nonce + box.encrypt(frame, nonce).ciphertext

    assert _open_as_bob(handmade(b"fine")) == "fine"
    bad = [
        handmade(b"\x1b[31mred"),  # a terminal escape
        handmade(b"\xff\xfe"),  # not UTF-8
        handmade(b"x" * (MAX_TEXT + 1)),  # over the limit
        handmade(b"abc", declared=4),  # length says more than the frame holds (padding eaten)
        handmade(b"abc", pad=bytes(-(len(ALICE.public_key) + 1 + len(CTX) + 2 + 3) % PAD - 1) + b"\x01"),
        handmade(b"abc", pad=bytes(-(len(ALICE.public_key) + 1 + len(CTX) + 2 + 3) % PAD + PAD)),
    ]
    for blob in bad:
        with pytest.raises(ValidationError):
            _open_as_bob(blob)


# --- text and limits ------------------------------------------------------------------

_ALLOWED_TEXT = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters=[chr(c) for c in range(0x20) if c not in (9, 10)]
        + ["\x7f"]
        + [chr(c) for c in range(0x80, 0xA0)],
    ),
    max_size=MAX_TEXT // 4,
)


@given(_ALLOWED_TEXT)
def test_any_unicode_text_round_trips(text: str) -> None:
    blob = seal(text, sender=ALICE, recipient=BOB.public_key, context=CTX)
    assert _open_as_bob(blob) == text
    assert _open_as_alice(blob) == text
    assert len(blob) <= MAX_BLOB


def test_the_text_limit_is_in_utf8_bytes() -> None:
    longest = "é" * (MAX_TEXT // 2)
    blob = seal(longest, sender=ALICE, recipient=BOB.public_key, context=b"\xff" * MAX_CONTEXT)
    assert len(blob) == MAX_BLOB
    assert _open_as_bob(blob, b"\xff" * MAX_CONTEXT) == longest
    with pytest.raises(BadValue, match="at most 1024 UTF-8 bytes"):
        seal(longest + "e", sender=ALICE, recipient=BOB.public_key, context=CTX)
    with pytest.raises(BadValue):
        seal("x" * (MAX_TEXT + 1), sender=ALICE, recipient=BOB.public_key, context=CTX)


def test_bad_arguments_to_seal_raise_bad_value() -> None:
    ok = {"sender": ALICE, "recipient": BOB.public_key, "context": CTX}
    for text in ("\x1b[2J", "a\rb", "\x00", "\x85", "\ud800", b"bytes"):
        with pytest.raises(BadValue):
            seal(text, **ok)  # type: ignore[arg-type]
    for recipient in (b"", bytes(32), bytes([1]) + bytes(31), ALICE.public_key, BOB.public_key.hex()):
        with pytest.raises(BadValue):
            seal("hi", sender=ALICE, recipient=recipient, context=CTX)  # type: ignore[arg-type]
    for context in (bytes(MAX_CONTEXT + 1), "text"):
        with pytest.raises(BadValue):
            seal("hi", sender=ALICE, recipient=BOB.public_key, context=context)  # type: ignore[arg-type]
    with pytest.raises(BadValue):
        seal("hi", sender=ALICE.seed, recipient=BOB.public_key, context=CTX)  # type: ignore[arg-type]
    for bad_id in (b"", bytes(31), "x" * 32):
        with pytest.raises(BadValue):
            reply_context(bad_id)  # type: ignore[arg-type]
        with pytest.raises(BadValue):
            proposal_context(bad_id)  # type: ignore[arg-type]


def test_tabs_line_feeds_and_empty_text_are_allowed() -> None:
    for text in ("", "a\tb\nc", "\n\n"):
        assert _open_as_bob(seal(text, sender=ALICE, recipient=BOB.public_key, context=CTX)) == text
