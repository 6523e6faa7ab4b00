"""python -m lab up|down|status|scenarios|break|heal — see docs/lab.md."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import cluster, scenarios
from .netns import LabError
from .state import topology_path
from .topology import INGRESS_EVERY_NODE, INGRESS_LAYOUTS, MAX_NODES, SEED_PREFIX


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build the lab, start its workloads and exporters")
    up.add_argument("--nodes", type=int, help=f"number of nodes, 1 to {MAX_NODES} (default 3)")
    up.add_argument("--mtu", type=int, default=1500, help="underlay MTU (default 1500; 1450 is Hetzner-like)")
    up.add_argument("--no-exporters", action="store_true", help="do not start the exporters")
    up.add_argument(
        "--image",
        action="store_true",
        help="run the exporters from the container image with the chart's rendered config (builds it first)",
    )
    up.add_argument(
        "--ingress",
        choices=INGRESS_LAYOUTS,
        help="the ingress controller on every node (default) or on node1 only, reached from every node",
    )
    up.add_argument(
        "--layout",
        help=f"where the workloads run: {' or '.join(INGRESS_LAYOUTS)} (as --ingress), or {SEED_PREFIX}N: a layout "
        f"drawn from seed N (its own node count, 3 to 5; the ingress controller, CoreDNS and the app placed at random)",
    )
    sub.add_parser("down", help="remove everything the lab created (also after a crashed up)")
    sub.add_parser("status", help="namespaces, pods, Services, processes and active faults")
    sub.add_parser("scenarios", help="list the fault scenarios")
    brk = sub.add_parser("break", help="inject a fault scenario")
    brk.add_argument("scenario", choices=sorted(scenarios.SCENARIOS))
    brk.add_argument("--node", help="node to break (name like node2, or its number)")
    brk.add_argument("--rate", type=float, help="fraction of packets to drop, for the scenarios that take one")
    heal = sub.add_parser("heal", help="heal one scenario, or all active ones")
    heal.add_argument("scenario", nargs="?", choices=sorted(scenarios.SCENARIOS))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("python -m lab: needs root (network namespaces, iptables)", file=sys.stderr)
        return 2
    try:
        if args.command == "up":
            if args.layout is not None and args.ingress is not None:
                raise LabError("--ingress and --layout: give one (--layout takes the same names)")
            if args.layout is not None and args.layout.startswith(SEED_PREFIX) and args.nodes is not None:
                raise LabError(f"--nodes: a {SEED_PREFIX}N layout draws its own node count (3 to 5); drop --nodes")
            if args.image and not args.no_exporters:
                from . import image

                image.build()  # seconds when nothing changed
            topo = cluster.up(
                3 if args.nodes is None else args.nodes,
                args.mtu,
                with_exporters=not args.no_exporters,
                ingress=args.ingress or INGRESS_EVERY_NODE,
                from_image=args.image,
                layout=args.layout,
            )
            print(f"lab up: {topo.placement.summary()}; {len(topo.pods)} pods; topology in {topology_path()}")
        elif args.command == "down":
            removed = cluster.down()
            print(f"lab down: removed {len(removed)} namespaces")
        elif args.command == "status":
            print(cluster.status())
        elif args.command == "scenarios":
            for s in scenarios.SCENARIOS.values():
                scope = "--node X" if s.per_node else "[--node X]"
                rate = f" [--rate P, default {s.default_rate}]" if s.takes_rate else ""
                print(f"{s.name:<18} {scope}{rate}\n    {s.summary}")
        elif args.command == "break":
            nodes = scenarios.break_(cluster.load_topology(), args.scenario, args.node, args.rate)
            print(f"broke {args.scenario} on {', '.join(nodes)}")
        elif args.command == "heal":
            healed = scenarios.heal(cluster.load_topology(), args.scenario)
            print(f"healed {', '.join(healed) or 'nothing (no active fault)'}")
    except (LabError, ValueError) as exc:
        print(f"python -m lab {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0
