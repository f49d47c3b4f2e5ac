"""The node's one ban book, shared by all of its hosts and kept in the home.

:class:`SharedBans` wraps a :class:`~meshnode.bans.BanBook` (the rules are
there) with the node's clock, the file it lives in, and the hosts that act
on it. Each host's gossip adapter registers an :class:`Enforcer`; a ban made
on any host is enforced on every host at once (pubsub blacklist, connections
closed), and each host's connection gates ask :meth:`SharedBans.is_banned`
and :meth:`SharedBans.ip_refused`.

The file (``bans.cbor`` in the home, mode 0600: it names peers and
addresses) is written atomically (temp file, fsync, rename) soon after each
change (:meth:`SharedBans.run`) and when the node stops. A missing file is
an empty book; an unreadable or corrupt one is logged and the node starts
with an empty book (the file is rewritten at the next ban), never fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import trio

from meshnode.atomicfile import write_atomically
from meshnode.bans import BanBook, BanCounts, BanOutcome, BanPolicy
from meshnode.errors import MeshError

log = logging.getLogger(__name__)

#: Seconds between looks for ended bans (lifted from the pubsub blacklists)
#: and for changes to write.
SWEEP_INTERVAL = 30.0


class Enforcer(Protocol):
    """One host's side of the shared book (the gossip adapter)."""

    def enforce_ban(self, peer: str) -> None:
        """``peer`` is banned now: refuse it on this host and close its connections."""
        ...

    def lift_bans(self, still_banned: Callable[[str], bool]) -> None:
        """Stop refusing the peers for which ``still_banned`` is False."""
        ...


class SharedBans:
    """One node's bans: one book, one file, every host told."""

    def __init__(
        self,
        book: BanBook,
        *,
        path: Path | None = None,
        clock: Callable[[], int],
        sweep_interval: float = SWEEP_INTERVAL,
    ) -> None:
        self.book = book
        self.path = path
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._enforcers: list[Enforcer] = []
        self._wake = trio.Event()
        self.exempt_limits = 0  # address limits reached on loopback and not applied

    @classmethod
    def load(
        cls, path: Path | None, *, clock: Callable[[], int], policy: BanPolicy | None = None
    ) -> SharedBans:
        """The bans kept at ``path`` (an empty book when None, missing, unreadable or corrupt)."""
        return cls(_read_book(path, clock(), policy), path=path, clock=clock)

    # --- questions (every host's gates) --------------------------------------------

    def is_banned(self, peer: str) -> bool:
        return self.book.is_banned(peer, self._clock())

    def on_probation(self, peer: str) -> bool:
        return self.book.on_probation(peer, self._clock())

    def ip_refused(self, ip: str | None) -> bool:
        return self.book.ip_refused(ip, self._clock())

    def banned_peers(self) -> list[str]:
        return self.book.banned_peers(self._clock())

    def counts(self) -> BanCounts:
        return self.book.counts(self._clock())

    # --- changes ---------------------------------------------------------------------

    def ban(self, peer: str, ip: str | None) -> BanOutcome:
        """Ban ``peer`` (connected from ``ip``) and enforce it on every host. Never raises."""
        now = self._clock()
        try:
            outcome = self.book.ban(peer, ip, now)
        except MeshError as exc:
            log.warning("cannot ban %r: %s", peer, exc)
            return BanOutcome(banned=False, until=0)
        if outcome.banned:
            log.warning(
                "banning peer %s for %d min: too many invalid messages", peer, (outcome.until - now) // 60_000
            )
        if outcome.address is not None:
            log.warning(
                "refusing connections from %s: %d peers from it banned",
                outcome.address,
                self.book.policy.ip_limit,
            )
        if outcome.exempt:
            self.exempt_limits += 1
            log.warning(
                "%d peers from the loopback address %s were banned; loopback is exempt from"
                " address limits (BanPolicy.limit_loopback), so it is not refused",
                self.book.policy.ip_limit,
                ip,
            )
        if outcome.banned:
            for enforcer in list(self._enforcers):
                try:
                    enforcer.enforce_ban(peer)
                except Exception as exc:  # one host failing must not spare the others
                    log.debug("enforcing a ban failed: %r", exc)
            self._wake.set()
        return outcome

    def register(self, enforcer: Enforcer) -> None:
        """``enforcer`` acts on bans from now on, starting with those in force."""
        self._enforcers.append(enforcer)
        for peer in self.banned_peers():
            try:
                enforcer.enforce_ban(peer)
            except Exception as exc:  # one bad entry must not stop the host
                log.debug("enforcing the ban of %s failed: %r", peer, exc)

    def unregister(self, enforcer: Enforcer) -> None:
        if enforcer in self._enforcers:
            self._enforcers.remove(enforcer)

    # --- upkeep ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Lift ended bans and write changes, every sweep interval and soon after a ban."""
        task_status.started()
        while True:
            with trio.move_on_after(self._sweep_interval):
                await self._wake.wait()
            self._wake = trio.Event()
            self.sweep()
            if self.book.changed:
                await trio.to_thread.run_sync(self.save_now)

    def sweep(self) -> None:
        """Forget what expired and lift ended bans on every host (:meth:`run` does it regularly)."""
        self.book.expire(self._clock())
        for enforcer in list(self._enforcers):
            try:
                enforcer.lift_bans(self.is_banned)
            except Exception as exc:
                log.debug("lifting bans failed: %r", exc)

    def save_now(self) -> None:
        """Write the book if it changed (atomically, 0600); a failure is logged, never raised."""
        if self.path is None or not self.book.changed:
            return
        self.book.changed = False
        try:
            write_atomically(self.path, self.book.encode())
        except OSError as exc:
            self.book.changed = True
            log.warning("cannot save the bans to %s: %s", self.path, exc.strerror or exc)


def _read_book(path: Path | None, now: int, policy: BanPolicy | None) -> BanBook:
    if path is None:
        return BanBook(policy)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return BanBook(policy)
    except OSError as exc:
        log.warning("cannot read %s (%s): starting with no bans", path, exc.strerror)
        return BanBook(policy)
    try:
        return BanBook.decode(data, now=now, policy=policy)
    except MeshError as exc:
        log.warning("%s is corrupt (%s): starting with no bans", path, exc)
        return BanBook(policy)
