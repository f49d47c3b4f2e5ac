"""One base for libp2p network notifees: every callback a no-op checkpoint.

libp2p calls a notifee's six callbacks on its own tasks; an exception in one
reaches libp2p's connection handling, so an override must catch everything.
Subclass :class:`Notifee`, override only the callbacks you need (usually
``connected`` / ``disconnected``), and register it with
``host.get_network().register_notifee(...)``.
"""

from __future__ import annotations

import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from multiaddr import Multiaddr


class Notifee(INotifee):
    """A notifee that does nothing; subclasses override what they need and never raise."""

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        await trio.lowlevel.checkpoint()
