"""The timeouts and bounds of sync sessions (pure).

The protocol constants that every node accepts whatever its tuning (frame,
message and record sizes) live in :mod:`.messages`; these are one node's
settings (``NodeConfig.sync_limits``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SyncLimits:
    """Timeouts and bounds of one session (and of inbound sessions per host)."""

    read_timeout: float = 20.0  # per frame
    write_timeout: float = 20.0  # per frame
    connect_timeout: float = 10.0  # opening the stream (protocol negotiation)
    session_timeout: float = 600.0  # a whole session
    max_rounds: int = 1024  # reconciliation messages received
    max_reconcile_bytes: int = 32 << 20  # reconciliation bytes received (~1M ids)
    max_notwant: int = 16_384  # ids in one NOTWANT (~560 KB)
    max_inbound: int = 8  # concurrent inbound sessions on one host
    inbound_rate: float = 0.2  # inbound sessions per second per peer ...
    inbound_burst: float = 10.0  # ... in bursts of this many (a session per swarm on connect)
    ingest_workers: int = 2  # concurrent ingest_many batches per session
    read_chunk: int = 2048  # ids per store read when pushing
