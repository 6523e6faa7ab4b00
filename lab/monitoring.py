"""Prometheus and Alertmanager for the lab, configured as a kube-prometheus-stack user's are: the scrape job
prometheus-operator generates for the chart's ServiceMonitor (target labels job, namespace, service, pod,
container, endpoint, node from the monitor's relabelings; lab/operator_scrape.py) and the groups of the
PrometheusRule the chart renders (alerts/*.rules.yml with the chart's values applied), evaluated on what the lab's
exporters expose, and alerts/alertmanager.example.yml's routing and inhibit rules applied to them.

Both run inside the first node's network namespace (like a monitoring pod on the node), listen on 127.0.0.1
there, and scrape every exporter by its pod IP — nothing listens or connects in the root namespace. Their
configs and data live under ``<state dir>/monitoring``; their processes are recorded in ``state.json``, so
``python -m lab down`` stops them with everything else.

The rules are used as the chart renders them. Two documented changes for the lab: scrape and rule evaluation every
second (so the real ``for:`` durations are what a test waits for), and Alertmanager's receivers reduced to
their names (nothing to deliver to in a lab) with a 1 s group wait; routes and inhibit rules are the example's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import netns, operator_scrape
from .netns import LabError
from .state import LabState, Proc, state_dir
from .topology import Topology

ALERTS_DIR = Path(__file__).resolve().parent.parent / "alerts"
PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"  # Debian's name for the alertmanager binary
PROMETHEUS_ADDR = "127.0.0.1:9090"
ALERTMANAGER_ADDR = "127.0.0.1:9093"
INTERVAL = "1s"
READY_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0
PROC_NAMES = ("monitoring/prometheus", "monitoring/alertmanager")


def monitoring_dir() -> Path:
    return state_dir() / "monitoring"


def netns_of(topo: Topology) -> str:
    """Where Prometheus and Alertmanager run: the first node's namespace, which reaches every pod IP."""
    return topo.nodes[0].netns


def prometheus_config(
    topo: Topology, scrape_configs: list[dict[str, Any]] | None = None, *, rules_dir: Path | None = None
) -> dict[str, Any]:
    """The lab's Prometheus config, as prometheus-operator would write it for the chart installed beside
    kube-prometheus-stack: the ServiceMonitor's scrape job (its target labels and relabelings; lab/operator_scrape.py)
    and the rendered PrometheusRule's groups, written under ``rules_dir``. ``scrape_configs`` replaces the job
    (e.g. the PodMonitor's)."""
    stack = operator_scrape.stack_monitoring(topo.exporters, "ServiceMonitor", INTERVAL)
    rules_dir = rules_dir or monitoring_dir() / "rules"
    rules_dir.mkdir(parents=True, exist_ok=True)
    rules_file = rules_dir / f"{operator_scrape.NAMESPACE}-{operator_scrape.RELEASE}.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": stack.rule_groups}, sort_keys=False))
    return {
        "global": {"scrape_interval": INTERVAL, "scrape_timeout": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [ALERTMANAGER_ADDR]}]}]},
        "scrape_configs": scrape_configs or [stack.scrape_config],
    }


def alertmanager_config() -> dict[str, Any]:
    """The example config, receivers reduced to their names and the first notification sent after 1 s."""
    config: dict[str, Any] = yaml.safe_load((ALERTS_DIR / "alertmanager.example.yml").read_text())
    config["receivers"] = [{"name": r["name"]} for r in config["receivers"]]
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        if "group_wait" in route:
            route["group_wait"] = "1s"
    return config


def start(topo: Topology, scrape_configs: list[dict[str, Any]] | None = None) -> None:
    """Write both configs and start Prometheus and Alertmanager (fresh data dirs), recorded in state.json."""
    for tool in (PROMETHEUS, ALERTMANAGER):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} not found: install the Debian packages prometheus and prometheus-alertmanager")
    state = LabState.load()
    stop(state)
    base = monitoring_dir()
    shutil.rmtree(base, ignore_errors=True)
    (base / "prometheus-data").mkdir(parents=True)
    (base / "alertmanager-data").mkdir(parents=True)
    prom_yml = base / "prometheus.yml"
    am_yml = base / "alertmanager.yml"
    prom_yml.write_text(yaml.safe_dump(prometheus_config(topo, scrape_configs), sort_keys=False))
    am_yml.write_text(yaml.safe_dump(alertmanager_config(), sort_keys=False))
    ns = netns_of(topo)
    _start(
        state,
        "monitoring/alertmanager",
        ns,
        [
            ALERTMANAGER,
            f"--config.file={am_yml}",
            f"--storage.path={base / 'alertmanager-data'}",
            f"--web.listen-address={ALERTMANAGER_ADDR}",
            "--cluster.listen-address=",  # no HA gossip port
        ],
    )
    _start(
        state,
        "monitoring/prometheus",
        ns,
        [
            PROMETHEUS,
            f"--config.file={prom_yml}",
            f"--storage.tsdb.path={base / 'prometheus-data'}",
            f"--web.listen-address={PROMETHEUS_ADDR}",
        ],
    )
    for addr, path in ((ALERTMANAGER_ADDR, "/-/ready"), (PROMETHEUS_ADDR, "/-/ready")):
        _wait_ready(topo, f"http://{addr}{path}")


def stop(state: LabState | None = None) -> None:
    _close_relays()
    state = state or LabState.load()
    procs = [state.processes.pop(name) for name in PROC_NAMES if name in state.processes]
    if procs:
        netns.kill_pids(p.pid for p in procs)
        state.save()


def _start(state: LabState, name: str, ns: str, argv: list[str]) -> None:
    logs = state_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / (name.replace("/", "_") + ".log")
    with log.open("ab") as out:
        child = subprocess.Popen(
            ["ip", "netns", "exec", netns.check_name(ns), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state.processes[name] = Proc(name=name, netns=ns, pid=child.pid, argv=argv, log=str(log))
    state.save()


def _wait_ready(topo: Topology, url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        try:
            http_get(topo, url)
            return
        except LabError as exc:
            last = str(exc)
        time.sleep(0.5)
    logs = state_dir() / "logs"
    raise LabError(f"{url} not ready after {READY_TIMEOUT:.0f}s in {netns_of(topo)}: {last}; see {logs}")


# One long-lived relay per namespace answers GETs from inside it: a dashboard evaluation makes ~90 queries, and a
# fresh `ip netns exec python` per query cost ~0.5 s each. Requests and answers are JSON lines on its pipes.
_RELAY = (
    "import json, sys, urllib.request\n"
    "for line in sys.stdin:\n"
    "    url, timeout = json.loads(line)\n"
    "    try:\n"
    "        with urllib.request.urlopen(url, timeout=timeout) as r:\n"
    "            out = {'ok': r.read().decode()}\n"
    "    except Exception as exc:\n"
    "        out = {'error': f'{type(exc).__name__}: {exc}'}\n"
    "    sys.stdout.write(json.dumps(out) + '\\n')\n"
    "    sys.stdout.flush()\n"
)
_relays: dict[str, subprocess.Popen[str]] = {}


def _relay(ns: str) -> subprocess.Popen[str]:
    relay = _relays.get(ns)
    if relay is None or relay.poll() is not None:
        relay = subprocess.Popen(
            ["ip", "netns", "exec", netns.check_name(ns), sys.executable, "-c", _RELAY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        _relays[ns] = relay
    return relay


def _close_relays() -> None:
    for relay in _relays.values():
        if relay.stdin is not None:
            relay.stdin.close()
        try:
            relay.wait(timeout=5)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()
    _relays.clear()


def http_get(topo: Topology, url: str) -> str:
    """GET ``url`` from inside the monitoring namespace (the lab's addresses are never dialed from the root)."""
    relay = _relay(netns_of(topo))
    assert relay.stdin is not None and relay.stdout is not None
    relay.stdin.write(json.dumps([url, HTTP_TIMEOUT]) + "\n")
    relay.stdin.flush()
    # bounded: the relay's urlopen has a timeout, so a line always comes back (or EOF if it died)
    line = relay.stdout.readline()
    if not line:
        _relays.pop(netns_of(topo), None)
        raise LabError(f"GET {url}: the relay in {netns_of(topo)} exited")
    answer = json.loads(line)
    if "error" in answer:
        raise LabError(f"GET {url}: {answer['error']}")
    return str(answer["ok"])


def wait_for(check: Callable[[], Any], within: float, what: Callable[[], str]) -> Any:
    """Poll `check` every 2 s until it returns something true (returned), at most `within` seconds; the
    AssertionError then says `what()` (called only then: it may query Prometheus for a report)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.0f}s: {what()}")
        time.sleep(2)


def prometheus_alerts(topo: Topology) -> list[dict[str, Any]]:
    """Prometheus's pending and firing alerts: [{labels, annotations, state, activeAt, value}]."""
    doc = json.loads(http_get(topo, f"http://{PROMETHEUS_ADDR}/api/v1/alerts"))
    alerts: list[dict[str, Any]] = doc["data"]["alerts"]
    return alerts


def prometheus_query(topo: Topology, expr: str) -> list[dict[str, Any]]:
    from urllib.parse import quote

    doc = json.loads(http_get(topo, f"http://{PROMETHEUS_ADDR}/api/v1/query?query={quote(expr)}"))
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def alertmanager_alerts(topo: Topology) -> list[dict[str, Any]]:
    """Alertmanager's alerts, inhibited and silenced ones included: status.state is active or suppressed."""
    alerts: list[dict[str, Any]] = json.loads(http_get(topo, f"http://{ALERTMANAGER_ADDR}/api/v2/alerts"))
    return alerts


def wait_firing(topo: Topology, alertname: str, within: float, **labels: str) -> bool:
    """Poll Prometheus (every 2 s, at most ``within`` seconds) until ``alertname`` with ``labels`` is firing."""
    want = {"alertname": alertname, **labels}
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for alert in prometheus_alerts(topo):
            if alert["state"] == "firing" and want.items() <= alert["labels"].items():
                return True
        time.sleep(2)
    return False


def report(topo: Topology, *, pending: bool = True) -> str:
    """One line per alert: Prometheus's state, and whether Alertmanager would notify or has inhibited it.
    Without ``pending``, pending alerts are only counted."""
    am = {_key(a["labels"]): a for a in alertmanager_alerts(topo)}
    lines = []
    alerts = prometheus_alerts(topo)
    shown = [a for a in alerts if pending or a["state"] == "firing"]
    for alert in sorted(shown, key=lambda a: (a["state"], a["labels"]["alertname"])):
        labels = alert["labels"]
        where = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
        routed = am.get(_key(labels))
        if routed is None:
            fate = "-"
        elif routed["status"]["state"] == "suppressed":
            inhibitors = _names(am, routed["status"]["inhibitedBy"])
            fate = f"inhibited by {','.join(inhibitors)}" if inhibitors else "silenced"
        else:
            fate = "notified"
        lines.append(
            f"  {alert['state']:8} {labels.get('severity', ''):8} {labels['alertname']:38} {fate:34} {where}\n"
            f"  {'':8} {'':8} {alert['annotations'].get('summary', '')}"
        )
    if len(shown) < len(alerts):
        lines.append(f"  (+ {len(alerts) - len(shown)} pending: not held for their `for:` yet)")
    return "\n".join(lines) or "  (no alert pending or firing)"


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _names(am: dict[tuple[tuple[str, str], ...], dict[str, Any]], fingerprints: list[str]) -> list[str]:
    by_fp = {a["fingerprint"]: a["labels"]["alertname"] for a in am.values()}
    return sorted({by_fp.get(fp, fp) for fp in fingerprints})
