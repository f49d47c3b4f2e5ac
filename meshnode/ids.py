"""How messages name a record, key or swarm to people: a short hex prefix.

A module of its own (no imports) so that light modules such as
:mod:`meshnode.swarm`, which the CLI loads at every command, can use it
without loading the record layer and its cryptography.
"""

from __future__ import annotations

SHORT_ID_HEX = 16  # hex digits of an id or key in messages


def short_id(value: bytes) -> str:
    """How messages name a record, key or swarm: its first 16 hex digits and "…"."""
    return value.hex()[:SHORT_ID_HEX] + "…"
