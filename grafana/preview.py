"""`make dashboards-preview`: the dashboards drawn from live lab data, one PNG per dashboard under out/dashboards/.

Builds the 3-node lab, starts the lab's real Prometheus (lab/monitoring.py) scraping every exporter with the
recording and alerting rules of alerts/, lets it run healthy, breaks `clusterip-nat` on node2, renders every
dashboard (the node dashboard for node2), heals and tears everything down — also on an error or Ctrl-C.
Prometheus is queried from inside the lab namespace it runs in, never from the root namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.topology import Topology

from . import queries, render

OUT_DIR = Path(__file__).resolve().parent.parent / "out" / "dashboards"
BROKEN_NODE = "node2"
SCENARIO = "clusterip-nat"
STEP = 2.0  # seconds between range-query points
# The lab probes every 5 s; Grafana's $__rate_interval would be 4 × the scrape interval (4 s at 1 s), too short
# to hold two probes. 30 s holds six, as a production 1m holds four of a 15 s probe interval.
LAB_VARIABLES = {"__rate_interval": "30s"}


@dataclass(frozen=True)
class Evaluated:
    query: queries.PanelQuery
    series: list[render.Series]


@contextlib.contextmanager
def lab_prometheus(topo: Topology) -> Iterator[render.PrometheusApi]:
    """The lab's Prometheus (lab/monitoring.py: every exporter scraped each second, the rules of alerts/), and
    its HTTP API called from inside its namespace as `api(endpoint, params) -> data`. Stopped on exit."""
    from lab import monitoring

    def api(endpoint: str, params: Mapping[str, str]) -> dict[str, Any]:
        url = f"http://{monitoring.PROMETHEUS_ADDR}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
        doc = json.loads(monitoring.http_get(topo, url))
        if doc.get("status") != "success":
            raise RuntimeError(f"Prometheus answered {doc.get('error', doc)} to {params.get('query', '')}")
        data: dict[str, Any] = doc["data"]
        return data

    monitoring.start(topo)
    try:
        yield api
    finally:
        monitoring.stop()


def evaluate(api: render.PrometheusApi, dashboard: dict[str, Any], window: render.Window) -> list[Evaluated]:
    """Every panel query as Grafana sends it: instant ones at the window's end, the others over the window."""
    out = []
    for q in queries.panel_queries(dashboard):
        target = {"expr": q.expr, "instant": q.instant}
        out.append(Evaluated(q, render.run_target(api, target, window)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.preview", description=__doc__.split("\n")[0])
    parser.add_argument("--healthy", type=float, default=60, help="seconds of healthy run (default %(default)s)")
    parser.add_argument(
        "--broken", type=float, default=45, help=f"seconds with {SCENARIO} on {BROKEN_NODE} (default %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="directory for the PNGs (default %(default)s)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("dashboards-preview: the lab needs root", file=sys.stderr)
        return 2
    from lab import cluster, scenarios

    started = time.monotonic()
    with cluster.exclusive():
        cluster.down()  # leftovers of an interrupted run
        try:
            topo = cluster.up(3, 1500)
            with lab_prometheus(topo) as api:
                start = time.time()
                print(f"lab up; healthy for {args.healthy:.0f}s", flush=True)
                time.sleep(args.healthy)
                scenarios.break_(topo, SCENARIO, BROKEN_NODE)
                print(f"broke {SCENARIO} on {BROKEN_NODE}; waiting {args.broken:.0f}s", flush=True)
                time.sleep(args.broken)
                end = time.time()
                for name, dashboard in queries.dashboards().items():
                    variables = dict(LAB_VARIABLES)
                    if "node" in {v["name"] for v in dashboard["templating"]["list"]} and not _multi_node(dashboard):
                        variables["node"] = BROKEN_NODE
                    window = render.Window(start, end, STEP, variables)
                    png = render.render(
                        dashboard,
                        api,
                        window,
                        args.out / name.replace(".json", ".png"),
                        f"lab, {SCENARIO} on {BROKEN_NODE} for the last {args.broken:.0f}s",
                    )
                    print(f"wrote {png}", flush=True)
                scenarios.heal(topo)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            print(f"dashboards-preview: {exc}", file=sys.stderr)
            return 1
        finally:
            cluster.down()
    print(f"dashboards-preview took {time.monotonic() - started:.0f}s", flush=True)
    return 0


def _multi_node(dashboard: dict[str, Any]) -> bool:
    return any(v["name"] == "node" and v.get("multi") for v in dashboard["templating"]["list"])


if __name__ == "__main__":
    sys.exit(main())
