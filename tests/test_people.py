"""meshnode.people: labels, petnames over nicknames, resolving PEER arguments, order-independent profiles."""

from __future__ import annotations

import os
import stat

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.errors import BadValue, ConfigError
from meshnode.identity import peer_id_of
from meshnode.people import (
    Profiles,
    check_nickname,
    label,
    resolve_peer,
    short_peer,
)
from meshnode.petnames import load_people, set_petname, set_profile
from meshnode.records import ProfileBody, new_record

KEYS = [nacl.signing.SigningKey(bytes([i]) * 32) for i in range(1, 6)]
PUB = [bytes(k.verify_key) for k in KEYS]
ME = PUB[0]
SWARM_A, SWARM_B = b"\x01" * 32, b"\x02" * 32


def profile(i: int, nickname: str, seq: int = 1, ts: int = 1_000, swarm: bytes = SWARM_A, bio: str = ""):
    return new_record(
        ProfileBody(nickname=nickname, bio=bio), swarm=swarm, seq=seq, ts=ts, signing_key=KEYS[i]
    )


def test_labels_you_nickname_short_id():
    profiles = Profiles.from_records([profile(1, "Bob")])
    assert label(ME, ME, profiles, {}) == "you"
    assert label(PUB[1], ME, profiles, {}) == f"Bob ({short_peer(PUB[1])})"
    assert short_peer(PUB[1]) == peer_id_of(PUB[1])[-6:]
    assert label(PUB[2], ME, profiles, {}) == short_peer(PUB[2])


def test_same_nickname_gets_different_labels():
    profiles = Profiles.from_records([profile(1, "Bob"), profile(2, "Bob")])
    a, b = label(PUB[1], ME, profiles, {}), label(PUB[2], ME, profiles, {})
    assert a != b and a.startswith("Bob (") and b.startswith("Bob (")


def test_petname_overrides_nickname_and_is_shown_as_given():
    profiles = Profiles.from_records([profile(1, "Bob")])
    assert label(PUB[1], ME, profiles, {PUB[1]: "Bob from no. 12"}) == "Bob from no. 12"
    assert label(ME, ME, profiles, {ME: "me myself"}) == "you"


def test_remote_nickname_is_one_bounded_line():
    profiles = Profiles.from_records([profile(1, "Eve\n\nAdmin " + "x" * 29)])
    shown = label(PUB[1], ME, profiles, {})
    assert "\n" not in shown and shown.startswith("Eve Admin ") and len(shown) <= 40 + 9


def test_check_nickname_refuses_what_a_title_refuses():
    assert check_nickname("  Alice ") == "Alice"
    for bad in ("", "  ", "a\nb", "a\tb", "ev\u202eil", "x" * 41, 5):
        with pytest.raises(BadValue):
            check_nickname(bad)


def test_latest_profile_wins_whatever_swarm():
    profiles = Profiles.from_records([profile(1, "Robert", seq=2, swarm=SWARM_B), profile(1, "Bob", seq=1)])
    assert profiles.nickname(PUB[1]) == "Robert"
    assert not profiles.add(profile(1, "Bobby", seq=1, ts=999))


@given(st.permutations(list(range(6))))
def test_profiles_do_not_depend_on_arrival_order(order):
    recs = [
        profile(1, "Bob", seq=1),
        profile(1, "Robert", seq=3, ts=5),
        profile(1, "Rob", seq=3, ts=4, swarm=SWARM_B),
        profile(2, "Carol", seq=7, ts=1),
        profile(2, "Caroline", seq=7, ts=1, bio="tie on seq and ts: the id decides"),
        profile(3, "Dan"),
    ]
    assert Profiles.from_records(recs[i] for i in order) == Profiles.from_records(recs)


def test_resolve_peer_every_form():
    profiles = Profiles.from_records([profile(1, "Bob"), profile(2, "Carol")])
    pets = {PUB[3]: "Dan next door"}
    known = [PUB[1], PUB[2], PUB[3], PUB[4]]
    assert resolve_peer(peer_id_of(PUB[4]), known, profiles, pets) == PUB[4]
    assert resolve_peer(PUB[4].hex(), known, profiles, pets) == PUB[4]
    assert resolve_peer("bob", known, profiles, pets) == PUB[1]
    assert resolve_peer("Dan next door", known, profiles, pets) == PUB[3]
    assert resolve_peer(short_peer(PUB[4]), known, profiles, pets) == PUB[4]
    assert resolve_peer(label(PUB[2], ME, profiles, pets), known, profiles, pets) == PUB[2]


def test_resolve_peer_ambiguous_nickname_says_what_to_type():
    profiles = Profiles.from_records([profile(1, "Bob"), profile(2, "Bob")])
    with pytest.raises(BadValue) as err:
        resolve_peer("Bob", [], profiles, {})
    assert "2 people" in str(err.value) and peer_id_of(PUB[1]) in str(err.value)
    assert "meshnode name" in str(err.value)
    # the label of either one picks it
    for key in (PUB[1], PUB[2]):
        assert resolve_peer(label(key, ME, profiles, {}), [], profiles, {}) == key
    # a petname settles it
    assert resolve_peer("Bob", [], profiles, {PUB[2]: "Bob"}) == PUB[2]


def test_resolve_peer_unknown_and_bad():
    with pytest.raises(BadValue) as err:
        resolve_peer("Zed", [PUB[1]], Profiles(), {})
    assert "12D3KooW" in str(err.value)
    with pytest.raises(BadValue):
        resolve_peer("abc", [PUB[1]], Profiles(), {})  # too short for a short id
    with pytest.raises(BadValue):
        resolve_peer("  ", [], Profiles(), {})


def test_people_file_roundtrip_mode_and_removal(tmp_path):
    path = tmp_path / "people.cbor"
    assert load_people(path).petnames == {}
    set_profile(path, nickname="Alice")
    set_petname(path, PUB[1], "Bob from no. 12")
    people = load_people(path)
    assert people.profile == ProfileBody(nickname="Alice")
    assert people.petnames == {PUB[1]: "Bob from no. 12"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    set_petname(path, PUB[1], "")
    assert load_people(path).petnames == {}
    with pytest.raises(BadValue):
        set_petname(path, PUB[1], "two\nlines")
    path.write_bytes(b"\xff")
    with pytest.raises(ConfigError):
        load_people(path)
