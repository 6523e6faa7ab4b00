"""kube-proxy's iptables NAT rules for the lab's Services, rendered the way kube-proxy writes them.

Shape (iptables mode): PREROUTING and OUTPUT jump to KUBE-SERVICES; one KUBE-SERVICES rule per Service
port jumps to KUBE-SVC-<hash>, which marks traffic from outside the pod CIDR for masquerade and picks an
endpoint chain KUBE-SEP-<hash> with `statistic --mode random --probability 1/n` rules; KUBE-SEP marks
hairpin traffic and DNATs to the pod. KUBE-POSTROUTING masquerades marked packets (mark 0x4000).
Faults are rendered in, not patched on, so break/heal are a plain re-apply (idempotent by construction).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping

from .topology import Service, ServicePort, Topology

MASQ_MARK = "0x4000/0x4000"


def chain_name(prefix: str, *parts: str) -> str:
    """KUBE-SVC-/KUBE-SEP- style name: a stable 16-character hash of what the chain is for."""
    digest = hashlib.sha256("".join(parts).encode()).digest()
    return f"{prefix}-{base64.b32encode(digest).decode()[:16]}"


def svc_chain(svc: Service, port: ServicePort) -> str:
    return chain_name("KUBE-SVC", f"{svc.key}:{port.name}", port.protocol.lower())


def sep_chain(svc: Service, port: ServicePort, ip: str) -> str:
    return chain_name("KUBE-SEP", f"{svc.key}:{port.name}", port.protocol.lower(), f"{ip}:{port.target_port}")


def render_nat(topo: Topology, faults: Mapping[str, float | None] = {}) -> str:
    chains = ["KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-NODEPORTS", "FLANNEL-POSTRTG"]
    rules: list[str] = []
    if "clusterip-nat" not in faults:
        rules += [
            '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        ]
    rules += [
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
        f"-A KUBE-MARK-MASQ -j MARK --set-xmark {MASQ_MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK} -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        f'-A FLANNEL-POSTRTG -s {topo.pod_cidr} -d {topo.pod_cidr} -m comment --comment "flanneld masq" -j RETURN',
        f'-A FLANNEL-POSTRTG -s {topo.pod_cidr} ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" '
        "-j MASQUERADE --random-fully",
    ]
    for svc in topo.services:
        for port in svc.ports:
            comment = f"{svc.key}:{port.name}"
            proto = port.protocol.lower()
            svc_c = svc_chain(svc, port)
            chains.append(svc_c)
            if not (svc.name == "kube-dns" and "dns-clusterip" in faults):
                rules.append(
                    f'-A KUBE-SERVICES -d {svc.cluster_ip}/32 -p {proto} -m comment --comment "{comment} '
                    f'cluster IP" -m {proto} --dport {port.port} -j {svc_c}'
                )
            rules.append(
                f"-A {svc_c} ! -s {topo.pod_cidr} -d {svc.cluster_ip}/32 -p {proto} -m comment --comment "
                f'"{comment} cluster IP" -m {proto} --dport {port.port} -j KUBE-MARK-MASQ'
            )
            n = len(svc.endpoints)
            for i, ep in enumerate(svc.endpoints):
                sep_c = sep_chain(svc, port, ep.ip)
                chains.append(sep_c)
                dest = f"{ep.ip}:{port.target_port}"
                balance = f"-m statistic --mode random --probability {1 / (n - i):.11f} " if i < n - 1 else ""
                rules += [
                    f'-A {svc_c} -m comment --comment "{comment} -> {dest}" {balance}-j {sep_c}',
                    f'-A {sep_c} -s {ep.ip}/32 -m comment --comment "{comment}" -j KUBE-MARK-MASQ',
                    f'-A {sep_c} -p {proto} -m comment --comment "{comment}" -m {proto} '
                    f"-j DNAT --to-destination {dest}",
                ]
    rules.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last '
        'rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
    )
    lines = ["*nat", *(f":{c} - [0:0]" for c in chains), *rules, "COMMIT"]
    return "\n".join(lines) + "\n"
