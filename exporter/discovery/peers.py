"""Which peers each exporter probes: a pure function of node names, identical on every node.

Small clusters (≤ ``all_up_to`` nodes): everyone probes everyone. Larger ones: each node probes its K
successors on a hash ring of node names. Why a ring and not plain rendezvous (highest-random-weight) top-K:

* both are consistent hashing — a node joining or leaving changes only the choices that involve it;
* top-K HRW bounds the *out*-degree (K) but a node's *in*-degree (how many others probe it) is
  ~Binomial(N-1, K/(N-1)): at N=200, K=10 some nodes are probed by 3 others and some by 19, so a node's
  coverage depends on its name. On the ring every node is probed by exactly its K predecessors.

A join moves K choices (the K predecessors of the new node each swap their farthest successor for it);
a leave moves K the other way. ``tests/test_discovery_peers.py`` asserts both properties at 200 nodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def node_hash(name: str) -> int:
    """A stable 64-bit position for a node name: the same on every node and across restarts."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def select_peers(source: str, nodes: Iterable[str], k: int | None, all_up_to: int = 16) -> list[str]:
    """The nodes ``source`` probes, out of ``nodes`` (which may or may not include ``source``).

    ``k=None`` means all. The ring is built from ``nodes`` plus ``source``, so a node whose own
    Node object is missing from the list still places itself where its peers expect it.
    """
    members = sorted(set(nodes) | {source}, key=lambda n: (node_hash(n), n))
    others = len(members) - 1
    if k is None or len(members) <= all_up_to or k >= others:
        return sorted(n for n in members if n != source)
    start = members.index(source)
    return sorted(members[(start + i) % len(members)] for i in range(1, k + 1))


def rendezvous_top_k(source: str, nodes: Iterable[str], k: int) -> list[str]:
    """Plain highest-random-weight top-K, kept for the comparison the docs and tests make."""
    others = [n for n in set(nodes) if n != source]
    weight = {n: node_hash(f"{source}\0{n}") for n in others}
    return sorted(sorted(others, key=lambda n: weight[n], reverse=True)[:k])
