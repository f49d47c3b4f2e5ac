"""The sync protocol ``/meshnode/sync/1``: catch up on a swarm's records with one peer.

Gossip carries only what is published while a node listens (and py-libp2p
drops messages under load, pitfall 7); a newcomer, a node back from offline
or the two halves of a healed partition converge through this protocol. The
wire format, the flow, the limits and what happens on misbehaviour are
specified in ``docs/sync-protocol.md``. The package has four layers, inner
first; the two inner ones are pure (no trio, no libp2p, no I/O):

* :mod:`.limits` -- :class:`SyncLimits`, the timeouts and bounds of a session;
* :mod:`.messages` -- one frozen dataclass per message kind, with its strict,
  bounded ``from_wire`` and its canonical ``to_wire``;
* :mod:`.session` -- :class:`SyncSession`, the state machine of one session
  (message order, expected ids, END counts, limits): messages in, actions out;
* :mod:`.channel` -- framing over a byte stream, every read and write under a
  timeout;
* :mod:`.service` -- :class:`SyncService`: the libp2p stream handler, when
  sessions run, inbound slots, penalties, and the driver that runs a session
  over a channel.

This file imports nothing, so that importing a pure module of the package
does not load trio or libp2p.
"""
