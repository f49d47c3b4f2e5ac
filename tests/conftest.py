"""Shared fixtures and record builders for the test suite."""

from __future__ import annotations

import os
import time

import nacl.signing
import pytest
from hypothesis import HealthCheck, settings

from meshnode import records as r

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

SWARM = bytes(range(32))
NOW = 1_790_000_000_000  # a fixed "now" in ms, so tests never depend on the clock


class Author:
    """A test author: a key and its own per-author sequence counter."""

    def __init__(self, seed: int | None = None) -> None:
        self.key = (
            nacl.signing.SigningKey(bytes([seed]) * 32)
            if seed is not None
            else nacl.signing.SigningKey.generate()
        )
        self.public = bytes(self.key.verify_key)
        self.seq = 0

    def sign(self, body, *, ts: int = NOW, swarm: bytes = SWARM, seq: int | None = None) -> r.Record:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return r.new_record(body, swarm=swarm, seq=seq, ts=ts, signing_key=self.key)

    def offer(self, title: str = "Cordless drill", **kw) -> r.Record:
        ts = kw.pop("ts", NOW)
        kw.setdefault("kind", "lend")
        return self.sign(r.OfferBody(title=title, **kw), ts=ts)


@pytest.fixture(autouse=True)
def no_terminal_width(monkeypatch):
    """The CLI's output goes to a pipe in tests: no inherited terminal width (pytest-xdist sets COLUMNS=80).

    A test that wants a width sets ``COLUMNS`` itself (tests/test_narrow_e2e.py).
    """
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture
def alice() -> Author:
    return Author()


@pytest.fixture
def bob() -> Author:
    return Author()


def wall_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def daemons(tmp_path):
    """``start(name)``: a real daemon in ``tmp_path / name`` on 127.0.0.1; all stopped at the end."""
    from tests.daemonutil import Daemon, stopped_at_exit

    with stopped_at_exit() as started:

        def start(name: str) -> Daemon:
            d = Daemon(tmp_path / name).start()
            started.append(d)
            return d

        yield start
