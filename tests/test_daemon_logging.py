"""Logging is set up by the daemon, not as a side effect of importing a module."""

from __future__ import annotations

import logging
import subprocess
import sys

PROBE = """
import logging
import meshnode.node, meshnode.protocols.autonat  # everything the daemon runs
lib = logging.getLogger("libp2p")
swarm = logging.getLogger("libp2p.network.swarm")
print(lib.propagate, lib.level, len(swarm.filters))
"""


def test_importing_the_node_leaves_logging_as_libp2p_set_it() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False", "30", "0"]  # pitfall 11: libp2p's own setting


def test_configure_logging_routes_libp2p_warnings_into_ours(caplog) -> None:
    from meshnode.daemon import configure_logging

    configure_logging(logging.INFO)
    lib = logging.getLogger("libp2p")
    assert lib.propagate is True
    assert lib.getEffectiveLevel() == logging.WARNING
    configure_logging(logging.INFO)  # idempotent: one dial-back filter, not two
    assert len(logging.getLogger("libp2p.network.swarm").filters) == 1
    with caplog.at_level(logging.INFO):
        logging.getLogger("libp2p.pubsub").warning("seen by the daemon's log")
        logging.getLogger("libp2p.pubsub").info("kept quiet")
    seen = {r.getMessage() for r in caplog.records}
    assert "seen by the daemon's log" in seen
    assert "kept quiet" not in seen
