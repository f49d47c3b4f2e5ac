"""What a node remembers of the network across restarts: its ports and its address book.

One file in the home, ``network.cbor`` (mode 0600: it says whom the node
knows and where), written atomically (temp file, fsync, rename)::

    {"v": 1, "ports": {"open" | <network tag>: port, ...}, "book": <AddressBook.to_value()>}

Keeping the ports is what lets peers' address books and old invite codes
stay valid after a restart, also when the listen address says port 0. The
file is a cache: a missing or corrupt one costs the node its memory of
peers (logged), never its start.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from meshnode import wire
from meshnode.addrbook import AddressBook
from meshnode.atomicfile import write_atomically
from meshnode.errors import MeshError

log = logging.getLogger(__name__)

MAX_SIZE = 16 << 20
OPEN = "open"


def network_tag(psk: str | None) -> str:
    """The key of a network (host) in the ports table: never the swarm key itself."""
    if psk is None:
        return OPEN
    return hashlib.blake2b(bytes.fromhex(psk), digest_size=8, person=b"meshnode-port").hexdigest()


@dataclass
class NetState:
    ports: dict[str, int] = field(default_factory=dict)
    book: AddressBook = field(default_factory=AddressBook)


def load_state(path: Path | None, **book_options: int) -> NetState:
    """The state kept at ``path``; an empty one if there is none or it is unreadable."""
    if path is None:
        return NetState(book=AddressBook(**book_options))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return NetState(book=AddressBook(**book_options))
    except OSError as exc:
        log.warning("cannot read %s (%s): starting with an empty address book", path, exc.strerror)
        return NetState(book=AddressBook(**book_options))
    try:
        value = wire.decode(data, max_size=MAX_SIZE, max_depth=8)
        if not isinstance(value, dict) or value.get("v") != 1:
            raise ValueError("unknown version")
        ports = value.get("ports", {})
        if not isinstance(ports, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536
            for k, v in ports.items()
        ):
            raise ValueError("bad ports table")
        book = AddressBook.from_value(value.get("book", {"v": 1, "swarms": []}), **book_options)
        return NetState(ports=dict(ports), book=book)
    except (MeshError, ValueError, TypeError) as exc:
        log.warning("%s is corrupt (%s): starting with an empty address book", path, exc)
        return NetState(book=AddressBook(**book_options))


def save_state(path: Path, state: NetState) -> None:
    """Write ``state`` to ``path`` atomically, mode 0600."""
    data = wire.encode({"v": 1, "ports": state.ports, "book": state.book.to_value()})
    write_atomically(path, data)
