"""meshnode: a peer-to-peer daemon for neighbours who lend, give and swap things."""

__version__ = "0.1.0"
