"""Reading the peer exporters' own /diagnose documents, so each exporter's verdicts are cluster-consistent.

Every `interval` seconds the exporter asks each peer it probes (the `peer/<node>` TCP targets discovery makes:
the peer's exporter pod IP and port) for its /diagnose document. What a peer says about *itself* is then used
by :func:`exporter.diagnose.attribution.with_peer_reports` when this node's failures run through a component
on that peer (docs/diagnosis.md, "Peer reports").

Bounded and safe when a peer is down: one round at a time, at most `CONCURRENCY` peers at once, each with a
timeout (connect, request and read) and a size cap on the body; a round ends within `timeout` + a small margin
whatever the peers do. A report is used only while it is fresh (at most 3 intervals old) and only if it is a
/diagnose document of the node it was asked for; anything else is an error for that peer
(`netpath_peer_report_up` 0), never an exception in the exporter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .model import AnyTarget, PathClass
from .probes.tcp import TCPTarget

CONCURRENCY = 16  # peers asked at once; with ring peers (k) a node asks at most k + its all_up_to
MAX_BODY_BYTES = 4 * 1024 * 1024  # a /diagnose document of ~1000 targets is ~600 KiB
FRESH_INTERVALS = 3  # a report older than this many intervals is not used
PEER_TARGET_PREFIX = "peer/"

log = logging.getLogger("netpath_exporter.peer_reports")


@dataclass(frozen=True)
class PeerReport:
    node: str
    url: str
    doc: dict[str, Any] | None  # the last good document (kept while fresh, also across a failed round)
    fetched_at: float  # Unix time of that document (0: none yet)
    error: str = ""  # why the last round got nothing ("" it got the document)


def peer_urls(targets: Iterable[AnyTarget]) -> dict[str, str]:
    """node → base URL of its exporter, from the peer targets being probed (`peer/<node>`: TCP to the peer
    exporter pod's IP and port; discovery's `peers` source, or static targets named that way)."""
    urls: dict[str, str] = {}
    for t in targets:
        if (
            isinstance(t, TCPTarget)
            and t.path is PathClass.POD_IP
            and t.target_node
            and (t.source == "peers" or t.name.startswith(PEER_TARGET_PREFIX))
        ):
            host = f"[{t.host}]" if ":" in t.host else t.host
            urls.setdefault(t.target_node, f"http://{host}:{t.port}")
    return urls


def check_document(body: bytes, node: str) -> dict[str, Any]:
    """The parsed /diagnose document of `node`, or ValueError saying what is wrong with it."""
    doc = json.loads(body)
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("verdicts"), list)
        or not isinstance(doc.get("targets"), list)
    ):
        raise ValueError("not a /diagnose document (no verdicts and targets lists)")
    if doc.get("source_node") != node:
        raise ValueError(f"the document is node {doc.get('source_node')!r}'s, not {node!r}'s")
    if not all(isinstance(t, dict) for t in doc["targets"]) or not all(isinstance(v, dict) for v in doc["verdicts"]):
        raise ValueError("not a /diagnose document (targets and verdicts must be objects)")
    return doc


class PeerReports:
    """The latest report of each peer; :meth:`run` refreshes them, :meth:`fresh` is read from any thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        source_node: str,
        peers: Callable[[], Mapping[str, str]],
        interval: float,
        timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source_node = source_node
        self._peers = peers
        self.interval = interval
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._reports: dict[str, PeerReport] = {}
        registry.register(_PeerReportCollector(self, source_node))

    def fresh(self) -> dict[str, dict[str, Any]]:
        """node → document, for the reports young enough to use."""
        oldest = self._clock() - FRESH_INTERVALS * self.interval
        with self._lock:
            return {n: r.doc for n, r in self._reports.items() if r.doc is not None and r.fetched_at >= oldest}

    def reports(self) -> list[PeerReport]:
        with self._lock:
            return sorted(self._reports.values(), key=lambda r: r.node)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout, trust_env=False, follow_redirects=False) as client:
            while True:
                started = time.monotonic()
                await self.refresh(client)
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def refresh(self, client: httpx.AsyncClient) -> None:
        """One round: every current peer asked once; peers no longer probed are forgotten."""
        peers = {n: u for n, u in self._peers().items() if n != self._source_node}
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(node: str, url: str) -> tuple[str, str, dict[str, Any] | None, str]:
            async with slots:
                try:  # the client's timeout bounds each phase; this bounds the whole request
                    async with asyncio.timeout(self.timeout):
                        return node, url, await _fetch(client, url, node), ""
                except (httpx.HTTPError, ValueError, TimeoutError) as exc:
                    return node, url, None, _describe(exc)

        results = await asyncio.gather(*(one(n, u) for n, u in sorted(peers.items())))
        now = self._clock()
        with self._lock:
            previous, self._reports = self._reports, {}
            for node, url, doc, error in results:
                old = previous.get(node)
                if doc is not None:
                    self._reports[node] = PeerReport(node, url, doc, now)
                else:
                    if old is None or old.url != url or old.error == "":
                        log.debug("peer report from %s (%s): %s", node, url, error)
                    kept = old if old is not None and old.url == url else None
                    self._reports[node] = PeerReport(
                        node, url, kept.doc if kept else None, kept.fetched_at if kept else 0.0, error
                    )


async def _fetch(client: httpx.AsyncClient, url: str, node: str) -> dict[str, Any]:
    async with client.stream("GET", url + "/diagnose", headers={"Accept": "application/json"}) as response:
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise ValueError(f"document larger than {MAX_BODY_BYTES} bytes")
    return check_document(bytes(body), node)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _PeerReportCollector(Collector):
    """``netpath_peer_report_up{source_node, peer_node}``: 1 while a fresh report of that peer is in hand."""

    def __init__(self, reports: PeerReports, source_node: str) -> None:
        self._reports = reports
        self._source_node = source_node

    def describe(self) -> Iterator[Metric]:
        return iter(())  # rendered at scrape time; peers come and go

    def collect(self) -> Iterator[Metric]:
        fresh = self._reports.fresh()
        family = GaugeMetricFamily(
            "netpath_peer_report_up",
            "1 while this exporter holds a fresh /diagnose report of the peer's exporter (used to attribute "
            "failures through components on that node), 0 while it cannot read one.",
            labels=["source_node", "peer_node"],
        )
        for report in self._reports.reports():
            family.add_metric([self._source_node, report.node], 1.0 if report.node in fresh else 0.0)
        yield family
