"""One daemon per home: an exclusive ``flock`` on the home's lock file, holding the pid."""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass

from meshnode.errors import DaemonAlreadyRunning
from meshnode.home import Home


@dataclass
class DaemonLock:
    """An exclusive ``flock`` on the home's lock file, holding our pid."""

    path: os.PathLike[str]
    fd: int = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                os.close(fd)
                raise
            pid = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise DaemonAlreadyRunning(
                f"a meshnode daemon (pid {pid}) is already running for this home;"
                " stop it with 'meshnode stop' or use another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            try:
                os.ftruncate(self.fd, 0)
            finally:
                os.close(self.fd)
                self.fd = -1


def running_pid(home: Home) -> int | None:
    """The pid of the daemon holding ``home``'s lock, or None if none does."""
    try:
        fd = os.open(home.lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
