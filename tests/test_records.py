"""Signed records: every type, every refusal, and the signature properties."""

from __future__ import annotations

import dataclasses

import cbor2
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode import records as r
from meshnode import sealing, wire
from meshnode.errors import (
    ClockSkewError,
    DecodeError,
    ExpiredError,
    MeshError,
    SignatureError,
    ValidationError,
    WrongSwarmError,
)
from tests.conftest import NOW, SWARM, Author

ID = bytes(range(100, 132))
KEY2 = bytes(nacl.signing.SigningKey(b"\x07" * 32).verify_key)
SENDER = nacl.signing.SigningKey(b"\x08" * 32)
SEALED = sealing.seal("Elm St 12", sender=SENDER, recipient=KEY2, context=sealing.reply_context(ID))


def every_body():
    item = dict(title="Ladder", kind="lend", desc="3 m, aluminium", tags=("diy", "tools"))
    return [
        r.OfferBody(
            **item, where="u4pruy", quantity=1, terms=r.LendTerms(max_days=7, deposit="£10"), expires=NOW + 1
        ),
        r.OfferBody(title="Apples", kind="give"),
        r.WantBody(title="Sewing machine", kind="swap", tags=("sewing",)),
        r.UpdateBody(target=ID, item=r.ItemBody(title="Ladder (4 m)", kind="lend")),
        r.WithdrawBody(target=ID),
        r.AttestBody(subject=KEY2, level=800, context="tools", note="met at the fair"),
        r.AttestBody(subject=KEY2, level=-1000),
        r.AttestBody(subject=KEY2, level=0, expires=NOW + 10),
        r.ProposalBody(to=KEY2, give=(ID,), take=(bytes(32),), note="drill for ladder"),
        r.ProposalBody(to=KEY2, take=(ID,), expires=NOW + 60_000),
        r.ReplyBody(proposal=ID, action="accept"),
        r.ReplyBody(proposal=ID, action="decline", note="sorry"),
        r.ReplyBody(proposal=ID, action="counter", give=(ID,), take=(bytes(32),)),
        r.ReplyBody(proposal=ID, action="cancel"),
        r.ReplyBody(proposal=ID, action="complete"),
        r.ReplyBody(proposal=ID, action="accept", prev=ID),
        r.ReplyBody(proposal=ID, action="counter", take=(bytes(32),), note="half", prev=bytes(32)),
        r.ProfileBody(nickname="ada", bio="Lovelace Lane"),
        r.ProfileBody(),
        r.ProposalBody(to=KEY2, take=(ID,), private=SEALED),
        r.ReplyBody(proposal=ID, action="accept", prev=ID, private=SEALED),
    ]


def test_a_private_part_must_look_sealed_and_is_omitted_when_empty():
    """Others carry a private part unread: they check its size and version only (meshnode.sealing)."""
    plain = r.ProposalBody(to=KEY2, take=(ID,))
    assert "private" not in r.body_to_map(plain)
    too_big = bytes(sealing.MAX_BLOB + 64)
    for bad in (b"x", SEALED[:-1], SEALED + b"\0", b"\x02" + SEALED[1:], "text", too_big):
        with pytest.raises(ValidationError, match="private"):
            r.check_body(dataclasses.replace(plain, private=bad))


@pytest.mark.parametrize("body", every_body(), ids=lambda b: type(b).__name__)
def test_every_record_type_round_trips_and_verifies(body):
    author = Author()
    record = author.sign(body)
    assert record.type == r.record_type_of(body)
    assert len(record.encoded) <= r.MAX_RECORD_SIZE
    back = r.open_record(record.encoded, now_ms=NOW, swarms={SWARM})
    assert back == record
    assert back.id == record.id == r.record_id(record.encoded)
    # Same content, same bytes, same id, computed afresh.
    assert r.sign_record(dataclasses.replace(record, sig=b""), author.key).encoded == record.encoded


def test_ids_differ_for_different_content():
    a = Author(seed=1)
    assert a.offer("Drill").id != a.offer("Drill").id  # seq differs
    assert Author(seed=1).offer("Drill").id == Author(seed=1).offer("Drill").id


def test_signature_covers_a_domain_prefix():
    record = Author().offer()
    assert r.signing_bytes(record).startswith(r.SIGNING_DOMAIN)
    # A signature over the bare canonical bytes (no domain) does not verify.
    key = nacl.signing.SigningKey.generate()
    bare = wire.encode(
        r._record_map(dataclasses.replace(record, author=bytes(key.verify_key)), with_sig=False)
    )
    forged = dataclasses.replace(record, author=bytes(key.verify_key), sig=key.sign(bare).signature)
    with pytest.raises(SignatureError):
        r.verify_record(forged)


# --- refusals -----------------------------------------------------------------


def _remap(record: r.Record, **changes) -> bytes:
    m = r._record_map(record, with_sig=True)
    m.update(changes)
    return cbor2.dumps(m, canonical=True)


def _rebody(record: r.Record, **changes) -> bytes:
    m = r._record_map(record, with_sig=True)
    m["body"] = {**m["body"], **changes}
    return cbor2.dumps(m, canonical=True)


@pytest.mark.parametrize(
    ("mutate", "error", "words"),
    [
        (lambda rec: _remap(rec, v=2), ValidationError, "version"),
        (lambda rec: _remap(rec, type="gift"), ValidationError, "record type"),
        (lambda rec: _remap(rec, swarm=b"short"), ValidationError, "swarm"),
        (lambda rec: _remap(rec, author=b"\x01" * 31), ValidationError, "author"),
        (lambda rec: _remap(rec, seq=-1), ValidationError, "seq"),
        (lambda rec: _remap(rec, ts="yesterday"), ValidationError, "ts"),
        (lambda rec: _remap(rec, seq=1.0), ValidationError, "seq: expected an integer, found float"),
        (lambda rec: _rebody(rec, quantity=2.5), ValidationError, "quantity"),
        (lambda rec: _rebody(rec, tags=[1.5]), ValidationError, "tag"),
        (lambda rec: _rebody(rec, desc=cbor2.undefined), ValidationError, "desc"),
        (lambda rec: _remap(rec, sig=b"\x00" * 63), ValidationError, "sig"),
        (lambda rec: _remap(rec, extra=1), ValidationError, "unexpected"),
        (lambda rec: _remap(rec, body=[1]), ValidationError, "body map"),
        (lambda rec: _rebody(rec, title="x" * 121), ValidationError, "title"),
        (lambda rec: _rebody(rec, title="   "), ValidationError, "blanks"),
        (lambda rec: _rebody(rec, title="bell\x07"), ValidationError, "control"),
        (lambda rec: _rebody(rec, kind="sell"), ValidationError, "kind"),
        (lambda rec: _rebody(rec, tags=["B"]), ValidationError, "tag"),
        (lambda rec: _rebody(rec, tags=["b", "a"]), ValidationError, "sorted"),
        (lambda rec: _rebody(rec, tags=[f"t{i:02}" for i in range(17)]), ValidationError, "at most 16"),
        (lambda rec: _rebody(rec, where="u4pruyd"), ValidationError, "where"),
        (lambda rec: _rebody(rec, where="aaaa"), ValidationError, "geohash"),
        (lambda rec: _rebody(rec, quantity=0), ValidationError, "quantity"),
        (lambda rec: _rebody(rec, desc=""), ValidationError, "canonical"),
        (lambda rec: _rebody(rec, colour="red"), ValidationError, "unexpected"),
        (lambda rec: _rebody(rec, terms={"max_days": 3}, kind="give"), ValidationError, "lend"),
        (lambda rec: _rebody(rec, expires=NOW - 1), ValidationError, "expires"),
        (lambda rec: _rebody(rec, title="Drill!"), SignatureError, "verify"),
    ],
)
def test_refusals_are_typed_and_say_what_was_found(mutate, error, words):
    record = Author().offer("Drill", desc="18 V", tags=("tools",))
    with pytest.raises(error) as info:
        r.open_record(mutate(record), now_ms=NOW, swarms={SWARM})
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (r.ProposalBody(to=KEY2), "at least one offer"),
        (r.ProposalBody(to=KEY2, give=(ID, ID)), "twice"),
        (r.ProposalBody(to=KEY2, give=tuple(bytes([i]) * 32 for i in range(17))), "at most 16"),
        (r.ReplyBody(proposal=ID, action="maybe"), "action"),
        (r.ReplyBody(proposal=ID, action="accept", give=(ID,)), "only a counter"),
        (r.ReplyBody(proposal=ID, action="counter"), "at least one offer"),
        (r.ReplyBody(proposal=ID, action="accept", prev=b"short"), "prev"),
        (r.AttestBody(subject=KEY2, level=1001), "level"),
        (r.AttestBody(subject=b"x" * 31, level=1), "subject"),
        (r.ProfileBody(nickname="n" * 41), "nickname"),
        (r.WithdrawBody(target=b"short"), "target"),
        (r.OfferBody(title="x", kind="give", terms=r.LendTerms(max_days=2)), "lend"),
        (r.OfferBody(title="x", kind="lend", terms=r.LendTerms(max_days=0)), "max_days"),
    ],
)
def test_signing_refuses_invalid_bodies(body, words):
    with pytest.raises(ValidationError) as info:
        Author().sign(body)
    assert words in str(info.value)


def test_self_addressed_proposal_and_self_attestation_are_refused():
    a = Author()
    with pytest.raises(ValidationError, match="someone else"):
        a.sign(r.ProposalBody(to=a.public, take=(ID,)))
    with pytest.raises(ValidationError, match="someone else"):
        a.sign(r.AttestBody(subject=a.public, level=1000))


def test_oversize_record_is_refused_when_signing_and_decoding(monkeypatch):
    # The field limits keep any valid body under 16 KiB; the largest possible one:
    big = r.OfferBody(
        title="😀" * 120,
        kind="lend",
        desc="😀" * 2000,
        tags=tuple(sorted(f"t{i:02}" + "x" * 29 for i in range(16))),
        terms=r.LendTerms(max_days=1, deposit="😀" * 200),
        where="u4pruy",
        quantity=1,
        expires=NOW + 1,
    )
    assert len(Author().sign(big).encoded) < r.MAX_RECORD_SIZE
    monkeypatch.setattr(r, "MAX_RECORD_SIZE", 1000)
    with pytest.raises(ValidationError, match="at most 1000 bytes"):
        Author().sign(big)
    monkeypatch.undo()
    with pytest.raises(DecodeError, match="at most 16384"):
        r.decode_record(b"\xa0" * (r.MAX_RECORD_SIZE + 1))


def test_context_checks_swarm_clock_skew_and_expiry():
    a = Author()
    with pytest.raises(WrongSwarmError):
        r.open_record(a.offer().encoded, now_ms=NOW, swarms={b"\x00" * 32})
    future = a.offer(ts=NOW + r.MAX_CLOCK_SKEW_MS + 1)
    with pytest.raises(ClockSkewError, match="future"):
        r.open_record(future.encoded, now_ms=NOW)
    # Exactly at the limit is still accepted.
    r.open_record(a.offer(ts=NOW + r.MAX_CLOCK_SKEW_MS).encoded, now_ms=NOW)
    expiring = a.offer(expires=NOW + 1000)
    r.open_record(expiring.encoded, now_ms=NOW)
    with pytest.raises(ExpiredError):
        r.open_record(expiring.encoded, now_ms=NOW + 1000)
    r.open_record(expiring.encoded, now_ms=NOW + 1000, allow_expired=True)


def test_small_order_author_key_is_refused():
    record = Author().offer()
    identity_point = bytes([1]) + bytes(31)  # the neutral element, small order
    with pytest.raises(SignatureError, match="large order"):
        r.open_record(_remap(record, author=identity_point), now_ms=NOW)


def test_unsigned_record_has_no_bytes():
    rec = r.Record(type="profile", swarm=SWARM, author=KEY2, seq=1, ts=NOW, body=r.ProfileBody())
    with pytest.raises(ValidationError, match="not signed"):
        _ = rec.encoded


def test_normalize_tags():
    assert r.normalize_tags([" Tools", "diy", "tools", ""]) == ("diy", "tools")


# --- properties ---------------------------------------------------------------

texts = st.text(alphabet=st.characters(min_codepoint=32, blacklist_categories=("Cs", "Cc")), max_size=40)
# A title is one line of visible text: no format characters (direction, zero width) or line separators.
line_texts = st.text(
    alphabet=st.characters(min_codepoint=32, blacklist_categories=("Cs", "Cc", "Cf", "Zl", "Zp")), max_size=40
)
tags = st.lists(st.from_regex(r"[a-z0-9][a-z0-9_\-]{0,10}", fullmatch=True), max_size=5).map(
    lambda t: tuple(sorted(set(t)))
)
items = st.builds(
    r.OfferBody,
    title=line_texts.filter(lambda t: t.strip()),
    kind=st.sampled_from(["give", "swap", "service"]),
    desc=texts,
    tags=tags,
    where=st.from_regex(r"[0-9b-hjkmnp-z]{0,6}", fullmatch=True),
    quantity=st.none() | st.integers(1, 1000),
    expires=st.none() | st.integers(NOW + 1, NOW + 10**9),
)
AUTHOR = Author(seed=3)


@given(items, st.integers(0, 2**40), st.integers(0, NOW))
def test_encode_decode_round_trip(body, seq, ts):
    record = AUTHOR.sign(body, seq=seq, ts=ts)
    back = r.decode_record(record.encoded)
    assert back == record
    r.verify_record(back)
    assert back.encoded == record.encoded


@given(items, st.data())
def test_any_single_byte_change_to_a_signed_record_is_refused(body, data):
    record = AUTHOR.sign(body, seq=1)
    raw = record.encoded
    pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]), label="byte")
    mutated = raw[:pos] + bytes([byte]) + raw[pos + 1 :]
    with pytest.raises(MeshError):
        r.open_record(mutated, now_ms=NOW, allow_expired=True)


@given(st.binary(max_size=400))
def test_decoding_garbage_raises_only_mesh_errors(data):
    with pytest.raises(MeshError):
        r.open_record(data, now_ms=NOW)


@given(items)
def test_a_signature_by_another_key_is_refused(body):
    record = AUTHOR.sign(body, seq=1)
    other = Author(seed=4).sign(body, seq=1)
    forged = _remap(record, sig=other.sig)
    with pytest.raises(SignatureError):
        r.open_record(forged, now_ms=NOW, allow_expired=True)


def test_spelled_out_defaults_in_nested_maps_are_refused():
    a = Author()
    update = a.sign(
        r.UpdateBody(target=ID, item=r.ItemBody(title="Ladder", kind="lend", terms=r.LendTerms(max_days=3)))
    )
    m = r._record_map(update, with_sig=True)
    m["body"]["item"]["desc"] = ""
    with pytest.raises(ValidationError, match="canonical"):
        r.decode_record(cbor2.dumps(m, canonical=True))
    m = r._record_map(update, with_sig=True)
    m["body"]["item"]["terms"]["deposit"] = ""
    with pytest.raises(ValidationError, match="canonical"):
        r.decode_record(cbor2.dumps(m, canonical=True))


def test_signing_bytes_cut_from_the_wire_equal_the_re_encoded_ones():
    for body in every_body():
        record = Author().sign(body, seq=2**40, ts=NOW)
        decoded = r.decode_record(record.encoded)
        assert "encoded" in decoded.__dict__
        fresh = dataclasses.replace(decoded)  # no cached bytes: re-encodes
        assert "encoded" not in fresh.__dict__
        assert r.signing_bytes(decoded) == r.signing_bytes(fresh)


@given(
    st.dictionaries(
        st.binary(max_size=4) | st.text(max_size=4) | st.integers(-5, 5),
        st.integers(0, 3),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
def test_unexpected_keys_of_any_type_are_a_validation_error(extra, in_body):
    """Text, byte and integer keys side by side: a clear refusal, never a TypeError from sorting them."""
    m = {
        "v": 1,
        "type": "offer",
        "swarm": bytes(32),
        "author": bytes(32),
        "seq": 1,
        "ts": 1,
        "body": {"title": "x", "kind": "lend"},
        "sig": bytes(64),
    }
    target = m["body"] if in_body else m
    added = {k: v for k, v in extra.items() if k not in target}
    if not added:
        return
    target.update(added)
    with pytest.raises(MeshError):
        r.decode_record(cbor2.dumps(m, canonical=True))


@pytest.mark.parametrize(
    "title",
    ["drill\nauthor: x", "tab\there", "evil\u202egnp.exe", "a\u2066b\u2069", "zero\u200bwidth", "\ufeffbom"],
    ids=repr,
)
def test_a_title_is_one_line_of_visible_text(title):
    """Line breaks, tabs and invisible direction or zero-width characters are refused in titles,
    whether the body is made here or decoded from the network."""
    body = r.OfferBody(title=title, kind="lend")
    with pytest.raises(ValidationError, match="one line of visible text"):
        r.check_body(body)
    good = r.new_record(
        r.OfferBody(title="placeholder", kind="lend"),
        swarm=SWARM,
        seq=1,
        ts=NOW,
        signing_key=nacl.signing.SigningKey(b"\x05" * 32),
    )
    m = r._record_map(good, with_sig=True)
    m["body"] = {**m["body"], "title": title}
    with pytest.raises(ValidationError, match="one line of visible text"):
        r.decode_record(cbor2.dumps(m, canonical=True))


def test_a_title_keeps_the_joiners_scripts_and_emoji_need():
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # "I want", with a ZWNJ
    for title in [persian, "👨\u200d👩\u200d👧 toys", "Fahrrad für Kinder"]:
        r.check_body(r.OfferBody(title=title, kind="give"))


def test_a_reply_names_the_move_it_answers_and_one_without_still_decodes():
    """``prev`` links a reply to the move it answers. Replies signed before it existed have none:
    they must still decode from a store (barter never applies them)."""
    a = Author()
    chained = a.sign(r.ReplyBody(proposal=ID, action="accept", prev=KEY2))
    assert r._record_map(chained, with_sig=True)["body"]["prev"] == KEY2
    assert r.decode_record(chained.encoded).body.prev == KEY2
    old = a.sign(r.ReplyBody(proposal=ID, action="accept"))
    assert "prev" not in r._record_map(old, with_sig=True)["body"]  # exactly the old encoding
    back = r.open_record(old.encoded, now_ms=NOW, swarms={SWARM})
    assert back == old and back.body.prev is None
    for bad, words in ((b"x" * 31, "prev: expected 32 bytes"), ("ab" * 32, "prev: expected 32 bytes")):
        with pytest.raises(ValidationError, match=words):
            r.decode_record(_rebody(chained, prev=bad))
    m = r._record_map(old, with_sig=True)
    m["body"]["prev"] = None
    with pytest.raises(ValidationError, match="canonical"):
        r.decode_record(cbor2.dumps(m, canonical=True))
