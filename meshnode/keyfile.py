"""The node's key file: created once, mode 0600, refused if others can read it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from meshnode.errors import IdentityError
from meshnode.identity import SEED_SIZE, Identity

KEY_FILE_NAME = "identity.key"
_MAGIC = b"meshnode-ed25519-seed-v1\n"


def key_path(home: Path) -> Path:
    return Path(home) / KEY_FILE_NAME


def load_identity(home: Path) -> Identity:
    """Load the node's identity from ``home``; refuse a key file others can access."""
    path = key_path(home)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise IdentityError(f"no key at {path}: run 'meshnode init' first") from None
    except OSError as exc:
        raise IdentityError(f"cannot open key file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IdentityError(f"key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise IdentityError(
                f"key file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o});"
                f" run 'chmod 600 {path}' if it is still secret, or make a new identity"
            )
        if st.st_uid != os.geteuid():
            raise IdentityError(f"key file {path} belongs to another user (uid {st.st_uid})")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    if not data.startswith(_MAGIC) or len(data) != len(_MAGIC) + 2 * SEED_SIZE + 1:
        raise IdentityError(f"key file {path} is not a meshnode key file")
    try:
        seed = bytes.fromhex(data[len(_MAGIC) : len(_MAGIC) + 2 * SEED_SIZE].decode("ascii"))
    except ValueError:
        raise IdentityError(f"key file {path} is corrupt (expected hex)") from None
    return Identity(seed=seed)


def create_identity(home: Path) -> tuple[Identity, bool]:
    """Load the identity in ``home``, creating it (atomically, 0600) if there is none.

    Returns the identity and whether it was created now.
    """
    home = Path(home)
    path = key_path(home)
    if path.exists() or path.is_symlink():
        return load_identity(home), False
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity = Identity.generate()
    tmp = path.with_name(f".{KEY_FILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, _MAGIC + identity.seed.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process created it meanwhile
    except FileExistsError:
        return load_identity(home), False
    finally:
        os.unlink(tmp)
    return identity, True
