"""Swarms and invite codes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.errors import BadValue, InviteError
from meshnode.swarm import INVITE_PREFIX, Invite, Swarm, decode_invite, encode_invite

ADDR = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"


def test_open_and_private_invites_round_trip():
    for swarm in (Swarm.create("Elm Street"), Swarm.create("Elm Street", private=True)):
        code = encode_invite(Invite(swarm=swarm, addrs=(ADDR,)))
        assert code.startswith(INVITE_PREFIX)
        assert code.isalnum()  # one word: copy-paste and double-click friendly
        back = decode_invite(code)
        assert back.swarm == swarm
        assert back.addrs == (ADDR,)
        assert back.swarm.private == swarm.private


def test_invite_tolerates_whitespace_from_pasting():
    code = encode_invite(Invite(swarm=Swarm.create("x"), addrs=(ADDR,)))
    assert decode_invite(f"  {code[:20]}\n{code[20:]}  ").swarm.name == "x"


def test_swarm_repr_never_shows_the_key():
    swarm = Swarm.create("secret", private=True)
    assert swarm.key.hex() not in repr(swarm)
    assert swarm.psk_hex == swarm.key.hex() and len(swarm.psk_hex) == 64


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("", "starts with"),
        ("hello", "starts with"),
        ("mesh1", "truncated"),
        ("mesh10OIl", "characters"),
        ("mesh1" + "2" * 5000, "too long"),
    ],
)
def test_malformed_invites_are_refused_clearly(code, words):
    with pytest.raises(InviteError) as info:
        decode_invite(code)
    assert words in str(info.value)


def test_a_typo_fails_the_checksum():
    code = encode_invite(Invite(swarm=Swarm.create("x"), addrs=(ADDR,)))
    i = len(code) // 2
    typo = code[:i] + ("2" if code[i] != "2" else "3") + code[i + 1 :]
    with pytest.raises(InviteError, match=r"checksum|malformed|characters"):
        decode_invite(typo)
    with pytest.raises(InviteError):
        decode_invite(code[:-3])


@given(st.text(max_size=300))
def test_any_text_gives_an_invite_or_an_invite_error(text):
    try:
        decode_invite(text)
    except InviteError:
        pass


@pytest.mark.parametrize("name", ["", " x", "x" * 41, "a/b", "tab\tname"])
def test_bad_swarm_names_are_refused(name):
    with pytest.raises(BadValue, match="swarm name"):
        Swarm.create(name)


def test_invite_needs_a_dialable_address():
    with pytest.raises(BadValue):
        encode_invite(Invite(swarm=Swarm.create("x"), addrs=()))
    with pytest.raises(BadValue):
        encode_invite(Invite(swarm=Swarm.create("x"), addrs=("/ip4/127.0.0.1/tcp/1",)))
