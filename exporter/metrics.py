"""Probe results as Prometheus metrics, rendered at scrape time from per-target state.

A custom collector rather than client-library metric objects: a removed target's state is dropped in
:meth:`ProbeMetrics.forget` and its series simply stop being rendered, with no label sets to remember to
unregister. Counters and histograms (not last-value gauges alone) so that failures between two scrapes are
never lost: an intermittent 504 pattern is a rate, not a sample. The names and labels here are the
project's Prometheus contract; docs/metrics.md documents every one and a test holds the two together.

Two renderings of the same families: :meth:`ProbeMetrics.collect` (prometheus_client's metric families, for
`name[]=` filters and as the tests' reference) and :meth:`ProbeMetrics.rendered_families`, the sample lines written
here from label text escaped once per target and kept until the target's next result (exporter.exposition's fast
path; tests/test_exposition.py holds the two byte for byte equal).
"""

from __future__ import annotations

import bisect
import platform
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import cast

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import __version__
from .exposition import FamilyHeader, RenderedFamily
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
    version: int = 0  # bumped by every result: a rendering of an older version is stale
    rendered: tuple[int, tuple[bytes, ...]] | None = None  # (version, one UTF-8 text per family in FAMILIES)
    label_text: _LabelText | None = None  # the labels as exposition text, made on the first render

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
            version=self.version,
            label_text=self.label_text,
        )


# The per-target families, in exposition order: the one declaration both renderings (prometheus_client's, via
# collect(), and the pre-rendered one) take names, types and HELP from.
ATTEMPTS = FamilyHeader("netpath_probe_attempts", "counter", "Probes started, per target.")
FAILURES = FamilyHeader("netpath_probe_failures", "counter", "Failed probes, per target and reason.")
DURATION = FamilyHeader(
    "netpath_probe_duration_seconds",
    "histogram",
    "Duration of successful probes (connect, request or query), per target.",
)
SUCCESS = FamilyHeader("netpath_probe_success", "gauge", "1 if the last probe of the target succeeded, else 0.")
PHASES = FamilyHeader(
    "netpath_probe_phase_seconds",
    "gauge",
    "Duration of each phase of the last successful probe (connect, first_byte, total, query).",
)
SYN_RETRANSMITS = FamilyHeader(
    "netpath_tcp_syn_retransmits",
    "counter",
    "SYNs retransmitted before the handshake completed (kernel TCP_INFO): each one is a lost packet.",
)
TCP_RTT = FamilyHeader("netpath_tcp_rtt_seconds", "gauge", "Kernel's smoothed RTT of the last probe connection.")
HTTP_RESPONSES = FamilyHeader(
    "netpath_http_responses", "counter", "HTTP responses received, per target and status code."
)
FAMILIES = (ATTEMPTS, FAILURES, DURATION, SUCCESS, PHASES, SYN_RETRANSMITS, TCP_RTT, HTTP_RESPONSES)
_EXTRA_LABELS = {FAILURES: "reason", DURATION: "le", PHASES: "phase", HTTP_RESPONSES: "code"}


# prometheus_client's own sample-value formatting (Go's), so both renderings write the same digits.
_go = cast(Callable[[float], str], floatToGoString)


def _count_text(n: int) -> str:
    """What floatToGoString writes for a count, without its float round trip for the usual sizes."""
    return f"{n}.0" if 0 <= n < 1_000_000 else _go(n)  # Go writes 1e+06 and up with an exponent


def _escape(value: str) -> str:
    # Label values, as both of prometheus_client's encoders escape them.
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _LabelText:
    """A target's label set as exposition text, escaped and sorted once per target rather than once per line.

    prometheus_client writes a sample's labels sorted by name, so an added label (le, reason, phase, code)
    lands in the middle: `around[label]` is the text before its value and the text after it.
    """

    __slots__ = ("around", "plain")

    def __init__(self, values: Sequence[str]) -> None:
        pairs = {name: _escape(value) for name, value in zip(TARGET_LABELS, values, strict=True)}
        self.plain = "{" + ",".join(f'{k}="{pairs[k]}"' for k in sorted(pairs)) + "} "
        self.around: dict[str, tuple[str, str]] = {}
        for extra in _EXTRA_LABELS.values():
            names = sorted([*pairs, extra])
            at = names.index(extra)
            before = "".join(f'{k}="{pairs[k]}",' for k in names[:at])
            after = "".join(f',{k}="{pairs[k]}"' for k in names[at + 1 :])
            self.around[extra] = ("{" + before + extra + '="', '"' + after + "} ")


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
        self._le_texts = (*map(_le, self._buckets), "+Inf")
        self._targets = targets
        self._in_flight = in_flight
        self._lock = threading.Lock()  # results arrive on the event loop, scrapes on the HTTP thread
        self._state: dict[TargetKey, _TargetState] = {}
        self._lag = _Histogram(LAG_BUCKETS)
        registry.register(self)
        registry.register(_ExporterSelfMetrics(self))

    # --- ResultSink ----------------------------------------------------------------------------------------

    def record(self, target: AnyTarget, result: ProbeResult) -> None:
        with self._lock:
            state = self._state.get(target.key)
            labels = self._labels(target)
            if state is None or state.labels != labels:
                state = self._state[target.key] = _TargetState(labels, _Histogram(self._buckets))
            state.attempts += 1
            state.version += 1
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
        """prometheus_client's rendering (used for `name[]=` filters and by tests as the reference)."""
        with self._lock:
            snapshots = [s.copy() for s in self._state.values()]
        yield from self._target_families(snapshots)

    def rendered_families(self) -> Iterator[RenderedFamily]:
        """The same families as collect(), as sample lines rendered here (exporter.exposition's fast path).

        A target's lines are rendered again only when a result arrived since its last rendering: with scrapes
        more often than probes most targets are unchanged. Only the snapshot is taken under the lock (results
        arrive on the event loop meanwhile); the rendering happens outside it.
        """
        with self._lock:
            work = [
                (state, None if state.rendered is not None and state.rendered[0] == state.version else state.copy())
                for state in self._state.values()
            ]
        per_target: list[tuple[bytes, ...]] = []
        for state, snapshot in work:
            if snapshot is None:
                assert state.rendered is not None
                per_target.append(state.rendered[1])
                continue
            if snapshot.label_text is None:
                snapshot.label_text = state.label_text = _LabelText(snapshot.labels)
            lines = tuple(text.encode() for text in self._render(snapshot, snapshot.label_text))
            state.rendered = (snapshot.version, lines)  # a result recorded meanwhile has bumped the version
            per_target.append(lines)
        for i, header in enumerate(FAMILIES):
            yield RenderedFamily(header, [lines[i] for lines in per_target])

    def _render(self, s: _TargetState, text: _LabelText) -> tuple[str, ...]:
        go = _go
        plain = text.plain
        reason_open, reason_close = text.around["reason"]
        le_open, le_close = text.around["le"]
        phase_open, phase_close = text.around["phase"]
        code_open, code_close = text.around["code"]
        running = list(accumulate(s.duration.counts))
        buckets = "".join(
            [
                f"netpath_probe_duration_seconds_bucket{le_open}{le}{le_close}{_count_text(n)}\n"
                for le, n in zip(self._le_texts, running, strict=True)
            ]
        )
        count = running[-1]  # +Inf's, as prometheus_client takes it
        return (
            f"netpath_probe_attempts_total{plain}{_count_text(s.attempts)}\n",
            "".join(
                f"netpath_probe_failures_total{reason_open}{_escape(reason)}{reason_close}{_count_text(n)}\n"
                for reason, n in sorted(s.failures.items())
            ),
            f"{buckets}netpath_probe_duration_seconds_count{plain}{_count_text(count)}\n"
            f"netpath_probe_duration_seconds_sum{plain}{go(s.duration.total)}\n",
            f"netpath_probe_success{plain}{go(s.last_success)}\n",
            "".join(
                f"netpath_probe_phase_seconds{phase_open}{_escape(phase)}{phase_close}{go(seconds)}\n"
                for phase, seconds in sorted(s.phases.items())
            ),
            ""
            if s.syn_retransmits is None
            else f"netpath_tcp_syn_retransmits_total{plain}{_count_text(s.syn_retransmits)}\n",
            "" if s.tcp_rtt is None else f"netpath_tcp_rtt_seconds{plain}{go(s.tcp_rtt)}\n",
            "".join(
                f"netpath_http_responses_total{code_open}{code}{code_close}{_count_text(n)}\n"
                for code, n in sorted(s.http_responses.items())
            ),
        )

    def _target_families(self, states: list[_TargetState]) -> Iterator[Metric]:
        labels = list(TARGET_LABELS)
        attempts = CounterMetricFamily(ATTEMPTS.name, ATTEMPTS.documentation, labels=labels)
        failures = CounterMetricFamily(FAILURES.name, FAILURES.documentation, labels=[*labels, "reason"])
        duration = HistogramMetricFamily(DURATION.name, DURATION.documentation, labels=labels)
        success = GaugeMetricFamily(SUCCESS.name, SUCCESS.documentation, labels=labels)
        phases = GaugeMetricFamily(PHASES.name, PHASES.documentation, labels=[*labels, "phase"])
        syn = CounterMetricFamily(SYN_RETRANSMITS.name, SYN_RETRANSMITS.documentation, labels=labels)
        rtt = GaugeMetricFamily(TCP_RTT.name, TCP_RTT.documentation, labels=labels)
        http = CounterMetricFamily(HTTP_RESPONSES.name, HTTP_RESPONSES.documentation, labels=[*labels, "code"])
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

    def collect_self(self) -> Iterator[Metric]:
        with self._lock:
            lag = self._lag.copy()
        yield from self._self_families(lag)

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


class _ExporterSelfMetrics(Collector):
    """The exporter's own series (targets, scheduler lag, in flight, build): few, rendered by prometheus_client."""

    def __init__(self, metrics: ProbeMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect_self()
