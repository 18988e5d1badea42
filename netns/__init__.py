"""Topology: throwaway network namespaces joined by a veth pair (installed as ``pktassert.netns``).
Nothing here imports the rest of pktassert: namespaces know nothing of filters."""

from .namespace import Namespace
from .topology import UNIT_DUT, UNIT_PEER, Endpoint, Topology

__all__ = ["UNIT_DUT", "UNIT_PEER", "Endpoint", "Namespace", "Topology"]
