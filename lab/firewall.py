"""The node firewall, shaped like the reported cluster's UFW, plus the fault rules scenarios render in.

UFW's layout: INPUT and FORWARD jump to ufw-before-*, ufw-user-* chains with the admin's allows, and the
default policy (deny) behind them. The cluster's allows: the pod and Service CIDRs, the overlay
interfaces, 8472/udp for VXLAN, SSH and the API server from the private network.
"""

from __future__ import annotations

from collections.abc import Mapping

from .topology import Topology


def render_filter(topo: Topology, faults: Mapping[str, float | None] = {}) -> str:
    chains = [
        "ufw-before-input",
        "ufw-user-input",
        "ufw-before-forward",
        "ufw-user-forward",
        "KUBE-FORWARD",
        "FLANNEL-FWD",
    ]
    rules: list[str] = []
    # Scenario rules go first: they stand for a rule someone (or a UFW reload) put in front of the allows.
    if "mtu-blackhole" in faults:
        # PMTU discovery cannot save the flow if the "fragmentation needed" answers are thrown away
        for chain in ("INPUT", "FORWARD"):
            rules.append(f"-A {chain} -p icmp -m icmp --icmp-type fragmentation-needed -j DROP")
    if "forward-drop-dnat" in faults:
        rules.append(
            '-A FORWARD -m conntrack --ctstate DNAT -m comment --comment "lab fault: forward-drop-dnat" -j DROP'
        )
    if (rate := faults.get("intermittent-loss", 0.0)) is not None and "intermittent-loss" in faults:
        rules.append(
            f"-A FORWARD -m conntrack --ctstate DNAT -m statistic --mode random --probability {rate:.4f} "
            '-m comment --comment "lab fault: intermittent-loss" -j DROP'
        )
    if (rate := faults.get("udp-dns-loss", 0.0)) is not None and "udp-dns-loss" in faults:
        rules.append(
            f"-A FORWARD -p udp -m udp --dport 53 -m conntrack --ctstate DNAT --ctorigdst {topo.kube_dns_ip} "
            f"-m statistic --mode random --probability {rate:.4f} "
            '-m comment --comment "lab fault: udp-dns-loss" -j DROP'
        )
    rules += [
        "-A INPUT -j ufw-before-input",
        "-A INPUT -j ufw-user-input",
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
        "-A FORWARD -j ufw-before-forward",
        "-A FORWARD -j ufw-user-forward",
        "-A ufw-before-input -i lo -j ACCEPT",
        "-A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A ufw-before-input -m conntrack --ctstate INVALID -j DROP",
        "-A ufw-before-input -p icmp -m icmp --icmp-type echo-request -j ACCEPT",
        "-A ufw-before-forward -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f'-A FLANNEL-FWD -s {topo.pod_cidr} -m comment --comment "flanneld forward" -j ACCEPT',
        f'-A FLANNEL-FWD -d {topo.pod_cidr} -m comment --comment "flanneld forward" -j ACCEPT',
    ]
    user_allows = [
        f"-s {topo.pod_cidr}",
        f"-s {topo.service_cidr}",
        "-i flannel.1",
        "-i cni0",
        f"-s {topo.underlay_net} -p tcp -m tcp --dport 6443",
        "-p tcp -m tcp --dport 22",
    ]
    if "vxlan-blocked" not in faults:
        user_allows.append(f"-p udp -m udp --dport {topo.vxlan_port}")
    rules += [f"-A ufw-user-input {a} -j ACCEPT" for a in user_allows]
    rules += [
        f"-A ufw-user-forward {a} -j ACCEPT"
        for a in (
            f"-s {topo.pod_cidr}",
            f"-d {topo.pod_cidr}",
            f"-s {topo.service_cidr}",
            f"-d {topo.service_cidr}",
            "-i flannel.1",
            "-o flannel.1",
            "-i cni0",
            "-o cni0",
        )
    ]
    lines = [
        "*filter",
        ":INPUT DROP [0:0]",
        ":FORWARD DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        *(f":{c} - [0:0]" for c in chains),
        *rules,
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"
