"""Crash consistency: kill -9 the daemon repeatedly while it ingests; nothing acknowledged is lost."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import httpx
import pytest

from meshnode.store import Store
from tests.daemonutil import Daemon

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def _writer(
    sock: str, prefix: str, acked: list[str], stop: threading.Event, workers: int = 3
) -> list[threading.Thread]:
    """Post offers through the API as fast as it answers; remember every acknowledged id."""

    def run(w: int) -> None:
        transport = httpx.HTTPTransport(uds=sock)
        with httpx.Client(transport=transport, base_url="http://meshnode", timeout=10) as client:
            i = 0
            while not stop.is_set():
                try:
                    r = client.post("/v1/offers", json={"title": f"thing {prefix}-{w}-{i}", "kind": "give"})
                except (httpx.HTTPError, OSError):
                    return  # the daemon died mid-request: not acknowledged
                if r.status_code == 200:
                    acked.append(r.json()["id"])
                i += 1

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(workers)]
    for t in threads:
        t.start()
    return threads


def test_kill_9_during_ingest_keeps_every_acknowledged_record(tmp_path):
    home = tmp_path / "alice"
    acked: list[str] = []
    rng = random.Random(1)
    for round_ in range(5):
        d = Daemon(home).start()
        if round_ == 0:
            d.cli("swarm", "create", "Elm Street")
        stop = threading.Event()
        threads = _writer(str(home / "api.sock"), str(round_), acked, stop)
        time.sleep(rng.uniform(0.8, 2.0))
        os.kill(d.proc.pid, signal.SIGKILL)  # no chance to clean up
        d.proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=15)
    assert len(acked) > 50, "the writers should have been acknowledged many times"
    print(f"{len(acked)} records acknowledged across 5 kill -9 rounds")

    with Store.open(home / "meshnode.db") as store:
        assert store.integrity_check(), store.integrity_problems()
        missing = store.missing([bytes.fromhex(i) for i in acked])
        assert not missing, f"{len(missing)} acknowledged records lost"
        assert store.count(type="offer") >= len(set(acked))
        mine = store.items("offer", now_ms=int(time.time() * 1000), limit=100_000)
        assert {i.id.hex() for i in mine} >= set(acked)

    # And the daemon starts again on what is left, with its seq numbers intact.
    d = Daemon(home).start()
    try:
        new_id = d.json("offer", "add", "after the crashes")["id"]
        assert new_id not in acked
        assert len(d.json("offer", "list", "--mine")) >= min(100, len(set(acked)))
    finally:
        d.stop()
