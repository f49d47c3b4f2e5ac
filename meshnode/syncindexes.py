"""The reconciliation indexes of a node's swarms, kept in step with its store.

One :class:`~meshnode.syncindex.SyncIndex` per joined swarm: built with one
scan of the store when the swarm is joined (the scan and the build in a
worker thread, on the read-only connection), kept current by :meth:`SyncIndexes.on_stored` (registered with
:class:`~meshnode.ingest.Ingest`), and rebuilt after a prune. A record stored
while its swarm's index is being built is buffered and added when the scan
is done, so no record is missed; records evicted by the store leave an index
when a sync push finds them gone.
"""

from __future__ import annotations

from typing import Protocol

import trio

from meshnode import records as rec
from meshnode.syncindex import SyncIndex

_ALL = 2**62  # more ids than any swarm holds: "every id" for ids_in_range


class IdSource(Protocol):
    """What the indexes read from the store."""

    def ids_in_range(
        self, swarm: bytes, lower: tuple[int, bytes] | None, upper: tuple[int, bytes] | None, limit: int
    ) -> list[tuple[int, bytes]]: ...


class SyncIndexes:
    """Swarm id -> :class:`SyncIndex`, for the swarms whose index is built."""

    def __init__(self, store: IdSource) -> None:
        self._store = store
        self._indexes: dict[bytes, SyncIndex] = {}
        # swarm id -> index ops that arrived while its index was being built
        self._building: dict[bytes, list[tuple[int, bytes]]] = {}

    def get(self, swarm_id: bytes) -> SyncIndex | None:
        """The index of ``swarm_id`` (None until it is built)."""
        return self._indexes.get(swarm_id)

    def on_stored(self, record: rec.Record) -> None:
        """Add a record the store has just committed (called by the ingest writer)."""
        index = self._indexes.get(record.swarm)
        if index is not None:
            index.insert(record.ts, record.id)
        building = self._building.get(record.swarm)
        if building is not None:
            building.append((record.ts, record.id))

    async def build(self, swarm_id: bytes, *, rebuild: bool = False) -> None:
        """Build ``swarm_id``'s index with one scan of the store, missing no record stored meanwhile.

        Does nothing if it is built (unless ``rebuild``) or being built. With
        ``rebuild`` the current index stays in use until the new one replaces it.
        """
        if swarm_id in self._building or (swarm_id in self._indexes and not rebuild):
            return
        self._building[swarm_id] = []
        try:
            store = self._store
            index = await trio.to_thread.run_sync(
                lambda: SyncIndex(store.ids_in_range(swarm_id, None, None, _ALL))
            )
            index.insert_many(self._building[swarm_id])
            self._indexes[swarm_id] = index
        finally:
            del self._building[swarm_id]

    def drop(self, swarm_id: bytes) -> None:
        """Forget ``swarm_id``'s index (the swarm was left)."""
        self._indexes.pop(swarm_id, None)
