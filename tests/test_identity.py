"""Identity: key file permissions, peer ids, and agreement with libp2p."""

from __future__ import annotations

import os

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from meshnode.errors import BadValue, IdentityError
from meshnode.identity import Identity, key_of_peer_id, peer_id_of
from meshnode.keyfile import create_identity, key_path, load_identity


def test_peer_id_matches_libp2p():
    ident = Identity.generate()
    libp2p_id = ID.from_pubkey(create_new_key_pair(seed=ident.seed).public_key).to_base58()
    assert ident.peer_id == libp2p_id
    assert ident.peer_id.startswith("12D3KooW")
    assert key_of_peer_id(ident.peer_id) == ident.public_key
    assert key_of_peer_id(ident.public_key.hex()) == ident.public_key
    assert peer_id_of(ident.public_key) == ident.peer_id


@pytest.mark.parametrize(
    "bad", ["", "12D3KooW", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "zz", "0" * 63]
)
def test_bad_peer_ids_are_refused(bad):
    with pytest.raises(BadValue, match="peer id"):
        key_of_peer_id(bad)


def test_identity_never_prints_its_seed():
    ident = Identity.generate()
    assert ident.seed.hex() not in repr(ident)


def test_key_file_is_created_once_with_mode_0600(tmp_path):
    home = tmp_path / "home"
    ident, created = create_identity(home)
    assert created
    assert os.stat(key_path(home)).st_mode & 0o777 == 0o600
    again, created_again = create_identity(home)
    assert not created_again
    assert again.seed == ident.seed
    assert load_identity(home).peer_id == ident.peer_id


def test_key_file_readable_by_others_is_refused(tmp_path):
    create_identity(tmp_path)
    os.chmod(key_path(tmp_path), 0o644)
    with pytest.raises(IdentityError, match=r"readable by others.*chmod 600"):
        load_identity(tmp_path)


def test_missing_and_corrupt_key_files_are_refused(tmp_path):
    with pytest.raises(IdentityError, match="meshnode init"):
        load_identity(tmp_path)
    path = key_path(tmp_path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(IdentityError, match="not a meshnode key file"):
        load_identity(tmp_path)


def test_symlinked_key_file_is_refused(tmp_path):
    create_identity(tmp_path / "real")
    os.symlink(key_path(tmp_path / "real"), key_path(tmp_path))
    with pytest.raises(IdentityError):
        load_identity(tmp_path)
