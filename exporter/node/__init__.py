"""Node facts: what this network namespace's kernel says about the overlay, forwarding, conntrack and NAT.

Read with pyroute2 and /proc, refreshed on their own interval, exported as ``netpath_node_*`` metrics. Each
fact source is read independently; one that cannot be read (no permission, module not loaded) is reported as
:class:`~exporter.node.facts.Unavailable`, never as healthy and never as an exception.
"""

from .facts import (
    BridgeNetfilterFacts,
    ClusterIPPort,
    ConntrackFacts,
    IptablesFacts,
    NodeFacts,
    OffloadFacts,
    OverlayFacts,
    PeerRoute,
    SnmpFacts,
    Source,
    SysctlFacts,
    Unavailable,
    VxlanLink,
)
from .metrics import NodeFactsMetrics
from .readers import read_node_facts
from .refresh import refresh_forever

__all__ = [
    "BridgeNetfilterFacts",
    "ClusterIPPort",
    "ConntrackFacts",
    "IptablesFacts",
    "NodeFacts",
    "NodeFactsMetrics",
    "OffloadFacts",
    "OverlayFacts",
    "PeerRoute",
    "SnmpFacts",
    "Source",
    "SysctlFacts",
    "Unavailable",
    "VxlanLink",
    "read_node_facts",
    "refresh_forever",
]
