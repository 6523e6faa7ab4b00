"""Probe results as Prometheus metrics, rendered at scrape time from per-target state.

A custom collector rather than client-library metric objects: a removed target's state is dropped in
:meth:`ProbeMetrics.forget` and its series simply stop being rendered, with no label sets to remember to
unregister. Counters and histograms (not last-value gauges alone) so that failures between two scrapes are
never lost: an intermittent 504 pattern is a rate, not a sample. The names and labels here are the
project's Prometheus contract; docs/metrics.md documents every one and a test holds the two together.
"""

from __future__ import annotations

import bisect
import platform
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import __version__
from .model import AnyTarget, PathClass, ProbeResult, TargetKey

TARGET_LABELS = (
    "source_node",  # the node the exporter runs on (downward API)
    "from",  # perspective: "pod" (pod network) or "node" (host network namespace)
    "path",  # pod_ip | cluster_ip | dns | ingress
    "via",  # service | pod | ingress | node: how the destination address is reached
    "target",  # the target's name
    "transport",  # tcp | udp
    "target_node",  # node of the destination, "" when not one node
    # namespace/name of the Service the target belongs to, "". Not `service`: prometheus-operator sets that one.
    "target_service",
)

# Scheduler lag: how late a probe started against its plan. Healthy is well under 10 ms; seconds mean the
# exporter is starved (CPU throttling, too small a concurrency bound) and its latencies are not to be trusted.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


@dataclass
class _Histogram:
    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; last is +Inf
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def copy(self) -> _Histogram:
        clone = _Histogram(self.bounds)
        clone.counts, clone.total = list(self.counts), self.total
        return clone

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip([*map(_le, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass
class _TargetState:
    labels: tuple[str, ...]
    duration: _Histogram
    attempts: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    last_success: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    syn_retransmits: int | None = None  # None until a probe of this target reported TCP_INFO
    tcp_rtt: float | None = None
    http_responses: Counter[int] = field(default_factory=Counter)

    def copy(self) -> _TargetState:
        """A snapshot to render outside the lock."""
        return _TargetState(
            labels=self.labels,
            duration=self.duration.copy(),
            attempts=self.attempts,
            failures=Counter(self.failures),
            last_success=self.last_success,
            phases=dict(self.phases),
            syn_retransmits=self.syn_retransmits,
            tcp_rtt=self.tcp_rtt,
            http_responses=Counter(self.http_responses),
        )


class ProbeMetrics(Collector):
    """Receives probe results (a scheduler ResultSink) and renders them as metrics on scrape."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        source_node: str,
        latency_buckets: Sequence[float],
        targets: Callable[[], Iterable[AnyTarget]] = list,
        in_flight: Callable[[], int] = lambda: 0,
    ) -> None:
        self._source_node = source_node
        self._buckets = tuple(latency_buckets)
        self._targets = targets
        self._in_flight = in_flight
        self._lock = threading.Lock()  # results arrive on the event loop, scrapes on the HTTP thread
        self._state: dict[TargetKey, _TargetState] = {}
        self._lag = _Histogram(LAG_BUCKETS)
        registry.register(self)

    # --- ResultSink ----------------------------------------------------------------------------------------

    def record(self, target: AnyTarget, result: ProbeResult) -> None:
        with self._lock:
            state = self._state.get(target.key)
            labels = self._labels(target)
            if state is None or state.labels != labels:
                state = self._state[target.key] = _TargetState(labels, _Histogram(self._buckets))
            state.attempts += 1
            state.last_success = 1.0 if result.ok else 0.0
            if result.ok:
                # Only successful probes feed the latency histogram: a failure's duration is the timeout,
                # which would drag every quantile towards it; failures are counted by reason instead.
                state.duration.observe(result.duration)
                state.phases = dict(result.phases)
            else:
                state.failures[result.reason.value] += 1
            if result.tcp_info is not None:
                state.syn_retransmits = (state.syn_retransmits or 0) + result.tcp_info.syn_retransmits
                state.tcp_rtt = result.tcp_info.rtt_seconds
            if result.http_status is not None:
                state.http_responses[result.http_status] += 1

    def forget(self, target: AnyTarget) -> None:
        with self._lock:
            self._state.pop(target.key, None)

    def observe_lag(self, seconds: float) -> None:
        with self._lock:
            self._lag.observe(seconds)

    def _labels(self, target: AnyTarget) -> tuple[str, ...]:
        return (
            self._source_node,
            target.perspective.value,
            target.path.value,
            target.via.value,
            target.name,
            target.transport.value,
            target.target_node,
            target.service,
        )

    # --- Collector -----------------------------------------------------------------------------------------

    def describe(self) -> Iterator[Metric]:
        # Rendering needs the lock and live state; an empty describe keeps registration cheap and lets the
        # registry skip its duplicate-name check for these dynamic families.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshots = [s.copy() for s in self._state.values()]
            lag = self._lag.copy()
        yield from self._target_families(snapshots)
        yield from self._self_families(lag)

    def _target_families(self, states: list[_TargetState]) -> Iterator[Metric]:
        labels = list(TARGET_LABELS)
        attempts = CounterMetricFamily("netpath_probe_attempts", "Probes started, per target.", labels=labels)
        failures = CounterMetricFamily(
            "netpath_probe_failures", "Failed probes, per target and reason.", labels=[*labels, "reason"]
        )
        duration = HistogramMetricFamily(
            "netpath_probe_duration_seconds",
            "Duration of successful probes (connect, request or query), per target.",
            labels=labels,
        )
        success = GaugeMetricFamily(
            "netpath_probe_success", "1 if the last probe of the target succeeded, else 0.", labels=labels
        )
        phases = GaugeMetricFamily(
            "netpath_probe_phase_seconds",
            "Duration of each phase of the last successful probe (connect, first_byte, total, query).",
            labels=[*labels, "phase"],
        )
        syn = CounterMetricFamily(
            "netpath_tcp_syn_retransmits",
            "SYNs retransmitted before the handshake completed (kernel TCP_INFO): each one is a lost packet.",
            labels=labels,
        )
        rtt = GaugeMetricFamily(
            "netpath_tcp_rtt_seconds", "Kernel's smoothed RTT of the last probe connection.", labels=labels
        )
        http = CounterMetricFamily(
            "netpath_http_responses",
            "HTTP responses received, per target and status code.",
            labels=[*labels, "code"],
        )
        for state in states:
            lv = list(state.labels)
            attempts.add_metric(lv, state.attempts)
            for reason, count in sorted(state.failures.items()):
                failures.add_metric([*lv, reason], count)
            duration.add_metric(lv, state.duration.cumulative(), state.duration.total)
            success.add_metric(lv, state.last_success)
            for phase, seconds in sorted(state.phases.items()):
                phases.add_metric([*lv, phase], seconds)
            if state.syn_retransmits is not None:
                syn.add_metric(lv, state.syn_retransmits)
            if state.tcp_rtt is not None:
                rtt.add_metric(lv, state.tcp_rtt)
            for code, count in sorted(state.http_responses.items()):
                http.add_metric([*lv, str(code)], count)
        yield from (attempts, failures, duration, success, phases, syn, rtt, http)

    def _self_families(self, lag: _Histogram) -> Iterator[Metric]:
        by_path = Counter(t.path.value for t in self._targets())
        targets = GaugeMetricFamily(
            "netpath_targets", "Targets currently scheduled, per path class.", labels=["source_node", "path"]
        )
        for path in PathClass:
            targets.add_metric([self._source_node, path.value], by_path.get(path.value, 0))
        lag_family = HistogramMetricFamily(
            "netpath_scheduler_lag_seconds",
            "How late probes started against their schedule; seconds mean the exporter is starved.",
            labels=["source_node"],
        )
        lag_family.add_metric([self._source_node], lag.cumulative(), lag.total)
        in_flight = GaugeMetricFamily("netpath_probes_in_flight", "Probes running right now.", labels=["source_node"])
        in_flight.add_metric([self._source_node], self._in_flight())
        build = GaugeMetricFamily(
            "netpath_build_info",
            "Always 1; the exporter's version and Python version as labels.",
            labels=["version", "python_version"],
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield from (targets, lag_family, in_flight, build)
