"""The causes the localizer can name: a closed set (it is a label value), each with its title and next steps.

docs/diagnosis.md is the long form of this table; a test holds the two together.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Cause(StrEnum):
    CLUSTERIP_NAT_BROKEN = "clusterip_nat_broken"
    FORWARD_DROP = "forward_drop"
    SERVICE_PATH_BROKEN = "service_path_broken"
    OVERLAY_DOWN = "overlay_down"
    MTU_BLACKHOLE = "mtu_blackhole"
    BRIDGE_NF_OFF = "bridge_nf_off"
    CONNTRACK_RACE = "conntrack_race"
    CONNTRACK_FULL = "conntrack_full"
    DNS_SERVICE_PATH = "dns_service_path"
    COREDNS_DOWN = "coredns_down"
    DNS_BAD_ANSWER = "dns_bad_answer"
    BACKEND_DOWN = "backend_down"
    BACKEND_SLOW = "backend_slow"
    IPTABLES_SPLIT = "iptables_split"
    CHECKSUM_OFFLOAD_RISK = "checksum_offload_risk"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CauseInfo:
    title: str
    next_steps: tuple[str, ...]


CAUSES: dict[Cause, CauseInfo] = {
    Cause.CLUSTERIP_NAT_BROKEN: CauseInfo(
        "ClusterIP NAT path broken on this node",
        (
            "On this node: `iptables-save -t nat | grep -E 'KUBE-SERVICES|<cluster-ip>'` (and the same with "
            "iptables-legacy-save / iptables-nft-save): PREROUTING and OUTPUT must jump to KUBE-SERVICES, and "
            "each ClusterIP:port must lead to a DNAT.",
            "Check kube-proxy's sync: kubeproxy_sync_proxy_rules_iptables_restore_failures_total on "
            "127.0.0.1:10249 and the k3s log for iptables-restore errors.",
            "Fix: restart the k3s agent on this node (kube-proxy rewrites its chains); if something else "
            "(a firewall reload, a script) flushes the nat table, stop it doing so.",
        ),
    ),
    Cause.FORWARD_DROP: CauseInfo(
        "Firewall drops forwarded Service (DNATed) traffic on this node",
        (
            "The NAT rules are in place: look at the filter table instead. `iptables -L FORWARD -v -n "
            "--line-numbers` on this node: which rule's packet counter rises while the probes fail? A DROP/REJECT "
            "ahead of KUBE-FORWARD / FLANNEL-FWD, or policy DROP with the accept chains missing.",
            "Look for '[UFW BLOCK] IN=cni0' or 'IN=flannel.1' lines in the kernel log (journalctl -k).",
            "Fix: allow forwarded pod and Service traffic before the drop, e.g. `ufw route allow from "
            "10.42.0.0/16` and `ufw route allow to 10.42.0.0/16` (and 10.43.0.0/16), or "
            'DEFAULT_FORWARD_POLICY="ACCEPT" in /etc/default/ufw; then `ufw reload`.',
        ),
    ),
    Cause.SERVICE_PATH_BROKEN: CauseInfo(
        "Service (ClusterIP) path broken on this node; node facts needed to say where",
        (
            "Probes cannot tell a missing kube-proxy NAT rule from a firewall dropping DNATed traffic: both "
            "are silence. Read the node facts (node_facts.netns pointing at the node's namespace, or run the "
            "exporter with hostNetwork) or check by hand:",
            "`iptables-save -t nat | grep KUBE-SERVICES` (NAT hook and DNAT rules present?) and "
            "`iptables -L FORWARD -v -n` (a DROP counter rising?).",
        ),
    ),
    Cause.OVERLAY_DOWN: CauseInfo(
        "Overlay (flannel VXLAN) down or VXLAN blocked",
        (
            "On both nodes: `ip -d link show flannel.1` (up? `dev` = the NIC the nodes reach each other on?), "
            "`ip route | grep flannel.1` (one route per peer pod CIDR) and `bridge fdb show dev flannel.1` "
            "(an entry per peer with dst = the peer's node IP).",
            "Is UDP 8472 allowed in on the receiving node? `journalctl -k | grep 'DPT=8472'` shows UFW blocking "
            "it; fix with `ufw allow from <node network> to any port 8472 proto udp`.",
            "Wrong NIC: set --flannel-iface (k3s) to the private interface and restart the agent. After a "
            "reboot a stale VTEP MAC on the peers is fixed by restarting k3s on the rebooted node.",
        ),
    ),
    Cause.MTU_BLACKHOLE: CauseInfo(
        "MTU blackhole: small packets pass, large ones are lost",
        (
            "Compare `ip link` MTUs: flannel.1 must be at least 50 bytes below the underlay NIC on every node "
            "(and the underlay path must carry the NIC's MTU end to end). /run/flannel/subnet.env FLANNEL_MTU.",
            "Check that ICMP 'fragmentation needed' is not dropped (firewall, cloud security groups): PMTU "
            "discovery depends on it.",
            "Fix: set the flannel MTU (k3s: --flannel-backend-mtu or the flannel net-conf) to underlay − 50 "
            "and restart pods so their veths pick it up.",
        ),
    ),
    Cause.BRIDGE_NF_OFF: CauseInfo(
        "Bridged pod traffic skips iptables (br_netfilter / bridge-nf-call-iptables)",
        (
            "On this node: `lsmod | grep br_netfilter` and `sysctl net.bridge.bridge-nf-call-iptables "
            "net.ipv4.ip_forward` — both must be 1.",
            "Fix: `modprobe br_netfilter; sysctl -w net.bridge.bridge-nf-call-iptables=1`, persist it in "
            "/etc/modules-load.d and /etc/sysctl.d, and find what reset it (k3s sets it only at start).",
        ),
    ),
    Cause.CONNTRACK_RACE: CauseInfo(
        "UDP DNS via the Service loses queries (conntrack insert race)",
        (
            "Watch `conntrack -S` (insert_failed / clashres rising) or netpath_node_conntrack_stat_total on "
            "this node while the UDP probes fail.",
            "Mitigate: `options single-request-reopen` / use-vc in pod resolv.conf, NodeLocal DNSCache, or a "
            "kernel with the conntrack clash-resolution fixes (5.0+).",
        ),
    ),
    Cause.CONNTRACK_FULL: CauseInfo(
        "Conntrack table full: new connections are dropped",
        (
            "`sysctl net.netfilter.nf_conntrack_count net.netfilter.nf_conntrack_max` and `conntrack -S` "
            "(drop / early_drop rising) on this node; `dmesg | grep 'table full'`.",
            "Fix: raise nf_conntrack_max (kube-proxy --conntrack-max-per-core), find what opens so many "
            "connections, shorten UDP/TIME_WAIT timeouts.",
        ),
    ),
    Cause.DNS_SERVICE_PATH: CauseInfo(
        "DNS via the kube-dns Service broken while CoreDNS itself answers",
        (
            "CoreDNS is fine: the path to it through the kube-dns ClusterIP is not. On this node: "
            "`iptables-save -t nat | grep <kube-dns ClusterIP>` (a KUBE-SERVICES rule for udp and tcp 53 "
            "leading to a DNAT per CoreDNS pod?).",
            "Check the kube-dns EndpointSlices list the CoreDNS pods, and kube-proxy's sync errors.",
            "Fix: restart the k3s agent on this node so kube-proxy rewrites the rules.",
        ),
    ),
    Cause.COREDNS_DOWN: CauseInfo(
        "CoreDNS is not answering",
        (
            "`kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide` and the CoreDNS logs.",
            "Queries straight to the CoreDNS pods fail too, so this is CoreDNS (or every path to it), not the "
            "Service NAT. Check the pods' readiness, their node, and the Corefile (loop / forward plugin).",
        ),
    ),
    Cause.DNS_BAD_ANSWER: CauseInfo(
        "CoreDNS answers, but with an error or the wrong record",
        (
            "The queries reach CoreDNS and come back: the network is not at fault. Ask a CoreDNS pod directly: "
            "`dig @<coredns pod IP> <name>` — SERVFAIL/REFUSED point at the server (its forwarder, its "
            "kubernetes plugin's access to the API server), a wrong address at its data (stale records, a "
            "`hosts`/`rewrite` block, a Service recreated with a new ClusterIP while a cache holds the old one).",
            "`kubectl -n kube-system logs -l k8s-app=kube-dns` and the Corefile (`kubectl -n kube-system get "
            "configmap coredns -o yaml`).",
            "Fix the Corefile or the records, then `kubectl -n kube-system rollout restart deployment coredns`.",
        ),
    ),
    Cause.BACKEND_DOWN: CauseInfo(
        "Backend down or not ready: its pods refuse or answer 5xx",
        (
            "Refused and 5xx are answers: the network delivered the request. Look at the application: "
            "`kubectl get pods -o wide -l <selector>` (Running? Ready? restarting?), `kubectl describe pod` "
            "(readiness probe failures), `kubectl logs --previous`.",
            "`kubectl get endpointslices -l kubernetes.io/service-name=<svc>`: no ready endpoints makes "
            "kube-proxy reject connections to the ClusterIP, which the ingress reports as 502/503.",
            "Fix the application (or roll back its last deployment); the ingress recovers by itself.",
        ),
    ),
    Cause.BACKEND_SLOW: CauseInfo(
        "Backend slower than the ingress timeout (the network is fine)",
        (
            "Every network path to the backend works: the 504 is the ingress giving up on a slow answer. "
            "Look at the backend's latency and logs for the failing URL.",
            "Fix the application, or raise the ingress's upstream read timeout for that route "
            "(nginx: proxy_read_timeout; Traefik: serversTransport responseHeaderTimeout).",
        ),
    ),
    Cause.IPTABLES_SPLIT: CauseInfo(
        "iptables backend split (legacy and nft both hold rules)",
        (
            "`iptables-legacy-save | wc -l` and `iptables-nft-save | wc -l` on this node: rules in both "
            "means kube-proxy and the firewall write to different backends and one never sees the other's "
            "rules.",
            "Fix: pick one backend for everything (update-alternatives --set iptables /usr/sbin/iptables-nft "
            "or -legacy), flush the other, restart k3s and the firewall.",
        ),
    ),
    Cause.CHECKSUM_OFFLOAD_RISK: CauseInfo(
        "VXLAN checksum offload bug (tx-checksum-ip-generic on flannel.1)",
        (
            "`ethtool -k flannel.1 | grep tx-checksum-ip-generic`; `nstat -az UdpInCsumErrors` on the "
            "receiving node rising while Service traffic from host network fails or takes ~63 s.",
            "Fix: `ethtool -K flannel.1 tx-checksum-ip-generic off` on every node (persist it with a udev rule "
            "or systemd unit), or upgrade the kernel / flannel.",
        ),
    ),
    Cause.UNKNOWN: CauseInfo(
        "Unknown: these paths fail and no rule explains them",
        (
            "The failing targets and their reasons are listed as evidence; compare them with docs/diagnosis.md "
            "and the node facts (netpath_node_*).",
            "Run `netpath-exporter probe --config ...` on this node and on a peer to see whether the failure "
            "follows the source or the destination.",
        ),
    ),
}
