"""Command line: ``run`` (serve /metrics), ``probe`` (every target once, as a table), ``diagnose`` (name the
likely cause), ``check-config``.

Exit status: 0 success; 1 ``probe`` found a failing target or ``diagnose`` named a cause; 2 bad config or
usage (or, for ``diagnose --url``, no answer from the exporter; for ``diagnose --cluster`` /
``--cluster-service``, no answer from any exporter). ``run`` exits 0 when SIGTERM/SIGINT stopped it
cleanly, within SHUTDOWN_DEADLINE, and 1 when that deadline cut work short (the log names what).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from prometheus_client import ProcessCollector

from . import __version__, logs
from .app import Exporter, service_addresses
from .config import Config, ConfigError, load_config, parse_listen
from .diagnose import Localizer, render_report
from .diagnose.cluster import ExporterAnswer, combine, render_cluster
from .diagnose.cluster import exit_status as cluster_exit_status
from .exposition import ExpositionRegistry
from .fields import DEFAULT_PORT
from .model import AnyTarget, PathClass, ProbeResult
from .probes import prepare as prepare_probes
from .probes import run_probe
from .server import MetricsServer, Response

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

log = logging.getLogger("netpath_exporter")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netpath-exporter",
        description="Probe every network path a Kubernetes request takes and export the results to Prometheus.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="probe continuously and serve /metrics, /healthz, /readyz")
    run.add_argument("--config", required=True, help="YAML config file")
    run.add_argument("--listen", help="override the config's listen address (ip:port)")
    logs.add_arguments(run)

    probe = sub.add_parser("probe", help="probe every target once and print what works and what doesn't")
    probe.add_argument("--config", required=True, help="YAML config file")
    probe.add_argument("--json", action="store_true", help="print JSON (one list of results) instead of a table")

    diagnose = sub.add_parser(
        "diagnose",
        help="name the likely cause: probe a few rounds now, ask a running exporter (--url) or all (--cluster)",
    )
    where = diagnose.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="YAML config file: probe its targets now, then report")
    where.add_argument("--url", help="a running exporter, e.g. http://10.42.1.2:10047: report its /diagnose")
    where.add_argument(
        "--cluster",
        nargs="+",
        metavar="URL",
        help="running exporters' base URLs: combine every node's /diagnose into one cluster report",
    )
    where.add_argument(
        "--cluster-service",
        metavar="HOST[:PORT]",
        help="the chart's headless Service, e.g. netpath-exporter-peers.monitoring.svc.cluster.local: ask every "
        f"pod it resolves to (A/AAAA) at PORT (default {DEFAULT_PORT}) and combine their /diagnose",
    )
    diagnose.add_argument("--json", action="store_true", help="print the /diagnose JSON instead of the report")
    diagnose.add_argument("--rounds", type=int, default=3, help="probe rounds with --config (default 3, 2-20)")
    diagnose.add_argument("--every", type=float, default=1.0, help="seconds between rounds (default 1)")

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")

    # Internal: the node-perspective worker the exporter starts itself (exporter/perspective.py).
    worker = sub.add_parser("worker")
    worker.add_argument("--netns", required=True)
    worker.add_argument("--max-concurrency", type=int, default=128)
    worker.add_argument("--jitter", type=float, default=0.1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        from .perspective import worker_main

        return worker_main(args.netns, max_concurrency=args.max_concurrency, jitter=args.jitter)
    if args.command == "diagnose":
        if not 2 <= args.rounds <= 20:
            print(f"netpath-exporter: --rounds: expected 2 to 20, got {args.rounds}", file=sys.stderr)
            return EXIT_CONFIG
        if not 0 < args.every <= 60:
            print(f"netpath-exporter: --every: expected 0 to 60 seconds, got {args.every}", file=sys.stderr)
            return EXIT_CONFIG
        if args.url:
            return _diagnose_url(args.url, as_json=args.json, out=sys.stdout)
        if args.cluster or args.cluster_service:
            return asyncio.run(_diagnose_cluster(args.cluster, args.cluster_service, as_json=args.json, out=sys.stdout))
    try:
        config = load_config(args.config if args.command != "check-config" else args.file)
        if args.command == "run" and args.listen:
            config = parse_listen(config, args.listen)
    except ConfigError as exc:
        print(f"netpath-exporter: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(f"{args.file}: ok, {len(config.targets)} targets")
        return EXIT_OK
    if args.command == "probe":
        return asyncio.run(_probe_once(config, as_json=args.json, out=sys.stdout))
    if args.command == "diagnose":
        return asyncio.run(
            _diagnose_now(config, rounds=args.rounds, every=args.every, as_json=args.json, out=sys.stdout)
        )
    logs.configure(args.log_level, args.log_format)
    return asyncio.run(_run(config))


# --- run ---


async def _run(config: Config) -> int:
    # The probe loop times connects while the render thread builds /metrics and /diagnose, and they share the
    # GIL: a waiting thread gets it only after the switch interval (default 5 ms). At 0.5 ms the probe loop waits
    # at most that long behind a rendering (docs/benchmarks.md: scheduler lag p99 with a scrape every second at
    # 1000 targets, 19.7 ms at 5 ms, 7.5 ms at 0.5 ms; CPU unchanged).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    _return_large_buffers_to_the_kernel()
    if config.discovery is not None:
        from .discovery import AccessError, resolve_access

        try:  # fail at start, with the reason, rather than in a background task
            resolve_access(config.discovery)
        except AccessError as exc:
            print(f"netpath-exporter: discovery: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    registry = ExpositionRegistry()  # per-target families pre-rendered; the rest through prometheus_client
    ProcessCollector(registry=registry)
    shutdown = _Shutdown(asyncio.get_running_loop())
    shutdown.install()
    async with Exporter(config, registry) as exporter:
        try:
            server = MetricsServer(
                config.listen_host,
                config.listen_port,
                registry,
                healthy=exporter.healthy,
                ready=exporter.ready,
                routes={"/diagnose": lambda: _json_response(exporter.diagnose().as_dict())},
            )
        except OSError as exc:
            print(
                f"netpath-exporter: cannot listen on {config.listen_host}:{config.listen_port}: {exc.strerror}",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        server.start()
        # Everything alive now (modules, the probes' prepared state, the targets) lives as long as the process:
        # out of the cyclic collector's way, so a full collection does not scan it. Measured at 1000 targets: a
        # gen-2 collection stalled every thread, the probe loop included, for 57 ms; after the freeze it scans the
        # fifth of the objects that come and go (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        logs.started(config, server.port)
        await shutdown.requested.wait()
        # The HTTP server's shutdown polls (up to 0.5 s): in a thread, alongside stopping the tasks.
        closing_server = asyncio.create_task(asyncio.to_thread(server.close), name="http server close")
        left = await exporter.close(deadline=_TASKS_DEADLINE)
        # A thread cannot be cancelled: wait for it, within what is left of the budget before the watchdog.
        _, server_left = await asyncio.wait({closing_server}, timeout=max(0.0, _SERVER_DEADLINE - shutdown.elapsed()))
        left += [task.get_name() for task in server_left]
        if left:  # exit now: leaving the block would wait for them once more
            log.error("shutdown cut short after %.2fs: still running: %s", shutdown.elapsed(), ", ".join(left))
            _exit_now(EXIT_FAILED)
    log.info("stopped in %.2fs", shutdown.elapsed())
    return EXIT_OK


GIL_SWITCH_INTERVAL = 0.0005  # seconds
_M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter (malloc.h)
MMAP_THRESHOLD = 256 * 1024


def _return_large_buffers_to_the_kernel() -> None:
    """Every scrape allocates and frees a few MiB (the body, its gzip). glibc serves a block that large with mmap
    and gives it back when freed, but then raises its threshold to that size, so the next scrape's body comes from
    the heap and stays in the process after it is freed. A fixed threshold keeps the first behaviour: at 1000
    targets with scrapes, 67.7 MiB RSS instead of 74.3 (docs/benchmarks.md). glibc only; elsewhere nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass


# SIGTERM/SIGINT to exit, at most: the chart's terminationGracePeriodSeconds stays well above it.
SHUTDOWN_DEADLINE = 2.0
_TASKS_DEADLINE = 1.0  # what the probe loops and background tasks get of it; the rest is the exit itself
_SERVER_DEADLINE = 1.5  # for the HTTP server's close, counted from the signal (it runs alongside)
_WATCHDOG_AFTER = 1.8  # then the process exits whatever is still running, saying what that was


class _Shutdown:
    """The first SIGTERM/SIGINT asks for a stop and arms a watchdog thread that ends the process at the
    deadline however stuck the event loop or a thread is; a second signal ends it at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.requested = asyncio.Event()
        self._since: float | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._on_signal, sig)

    def elapsed(self) -> float:
        return 0.0 if self._since is None else time.monotonic() - self._since

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self._since is not None:
            log.warning("%s again while stopping: exiting now", name)
            _exit_now(EXIT_FAILED)
        self._since = time.monotonic()
        log.info("%s: stopping (exit within %.1fs)", name, SHUTDOWN_DEADLINE)
        threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()
        self.requested.set()

    def _watchdog(self) -> None:
        time.sleep(_WATCHDOG_AFTER)
        try:
            running = sorted(t.get_name() for t in asyncio.all_tasks(self._loop) if not t.done())
        except RuntimeError:  # the loop is gone: what is left is the interpreter's own exit
            running = []
        log.error(
            "shutdown did not finish within %.1fs; exiting anyway; cut short: %s",
            _WATCHDOG_AFTER,
            ", ".join(running) or "the interpreter's exit (threads)",
        )
        _exit_now(EXIT_FAILED)


def _exit_now(code: int) -> None:
    """Exit without running anything else (no atexit joins of threads, no awaiting of tasks)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(code)


# --- probe ---


# The one-shot `probe` starts its probes PROBE_SPACING apart (at most PROBE_SPREAD for all of them), not all at
# once: a burst of tens of probes keeps the event loop busy (an HTTP probe is milliseconds of Python), and every
# connect that completes meanwhile is timed late. The running exporter spreads its targets over the interval and
# never sees that burst; spaced, `probe` reports what the exporter reports for the same path (docs/benchmarks.md).
PROBE_SPACING = 0.005
PROBE_SPREAD = 1.0


async def probe_all(config: Config) -> list[tuple[AnyTarget, ProbeResult]]:
    """Every target once, started a few milliseconds apart, concurrently within the config's bound, in config order."""
    prepare_probes()
    slots = asyncio.Semaphore(config.scheduler.max_concurrency)
    spacing = min(PROBE_SPACING, PROBE_SPREAD / max(1, len(config.targets)))

    async def one(index: int, target: AnyTarget) -> ProbeResult:
        await asyncio.sleep(index * spacing)
        async with slots:
            return await run_probe(target, target.timeout)

    results = await asyncio.gather(*(one(i, t) for i, t in enumerate(config.targets)))
    return list(zip(config.targets, results, strict=True))


def result_record(target: AnyTarget, result: ProbeResult) -> dict[str, Any]:
    """One probe as a JSON-ready dict: the target's labels plus what the probe found."""
    record: dict[str, Any] = {
        "name": target.name,
        "kind": target.kind,
        "path": target.path.value,
        "via": target.via.value,
        "transport": target.transport.value,
        "address": target.address,
        "target_node": target.target_node,
        "service": target.service,
        "ok": result.ok,
        "reason": result.reason.value,
        "duration": round(result.duration, 6),
        "detail": result.detail,
        "phases": {k: round(v, 6) for k, v in result.phases.items()},
    }
    if result.tcp_info is not None:
        record["syn_retransmits"] = result.tcp_info.syn_retransmits
        record["tcp_rtt"] = result.tcp_info.rtt_seconds
    if result.http_status is not None:
        record["http_status"] = result.http_status
    if result.body_bytes is not None:
        record["body_bytes"] = result.body_bytes
    if result.answers:
        record["answers"] = list(result.answers)
    return record


def format_table(config: Config, results: list[tuple[AnyTarget, ProbeResult]]) -> str:
    """A per-path table a person reads top to bottom: what works, what doesn't, how fast, why."""
    lines = [f"netpath-exporter probe from node {config.source_node} ({config.perspective.value} network)"]
    for path in PathClass:
        rows = [(t, r) for t, r in results if t.path == path]
        if not rows:
            continue
        failed = sum(not r.ok for _, r in rows)
        lines.append("")
        lines.append(f"{path.value}  ({len(rows) - failed}/{len(rows)} ok)")
        for target, result in rows:
            mark = "✅" if result.ok else "❌"
            node = f"→{target.target_node}" if target.target_node else ""
            outcome = _outcome(result)
            lines.append(
                f"  {mark} {target.name:<28} {target.transport.value:<3} {target.address:<34} "
                f"{node:<10} {result.duration * 1000:>8.1f} ms  {outcome}"
            )
    failed_total = sum(not r.ok for _, r in results)
    lines.append("")
    lines.append(f"{len(results) - failed_total} ok, {failed_total} failing")
    return "\n".join(lines)


def _outcome(result: ProbeResult) -> str:
    parts = [result.reason.value]
    if result.http_status is not None:
        parts.append(f"HTTP {result.http_status}")
    if result.tcp_info is not None and result.tcp_info.syn_retransmits:
        parts.append(f"{result.tcp_info.syn_retransmits} SYN retransmits")
    if not result.ok and result.detail:
        parts.append(result.detail[:60])
    return " · ".join(parts)


async def _probe_once(config: Config, *, as_json: bool, out: TextIO) -> int:
    results = await probe_all(config)
    if as_json:
        json.dump([result_record(t, r) for t, r in results], out, indent=1)
        out.write("\n")
    else:
        out.write(format_table(config, results) + "\n")
    return EXIT_OK if all(r.ok for _, r in results) else EXIT_FAILED


# --- diagnose ---


def _json_response(doc: dict[str, Any]) -> Response:
    # Compact: json's C encoder (indent= takes the pure-Python one, 3× slower on the 1000-target document, on a
    # thread that shares the GIL with the probe loop). `curl … | jq` for reading; `diagnose` prints it indented.
    return Response(200, "application/json", (json.dumps(doc, separators=(",", ":")) + "\n").encode())


def _print_diagnosis(doc: dict[str, Any], *, as_json: bool, out: TextIO) -> int:
    if as_json:
        json.dump(doc, out, indent=1)
        out.write("\n")
    else:
        out.write(render_report(doc))
    return EXIT_FAILED if doc["verdicts"] else EXIT_OK


async def _diagnose_now(config: Config, *, rounds: int, every: float, as_json: bool, out: TextIO) -> int:
    """Probe every target `rounds` times, `every` seconds apart, read the node facts, then diagnose."""
    localizer = Localizer(source_node=config.source_node, perspective=config.perspective)
    for i in range(rounds):
        if i:
            await asyncio.sleep(every)
        for target, result in await probe_all(config):
            localizer.record(target, result)
    if config.node_facts.enabled:
        from .node import read_node_facts

        snapshot = await asyncio.to_thread(
            read_node_facts, service_addresses(config.targets), netns=config.node_facts.netns or None
        )
        localizer.update_facts(snapshot)
    return _print_diagnosis(localizer.diagnose().as_dict(), as_json=as_json, out=out)


def _diagnose_url(url: str, *, as_json: bool, out: TextIO) -> int:
    (answer,) = asyncio.run(fetch_diagnoses([url]))  # one exporter: the cluster view's bounded fetch
    if answer.doc is None:
        print(f"netpath-exporter: --url: cannot read {url.rstrip('/')}/diagnose: {answer.error}", file=sys.stderr)
        return EXIT_CONFIG
    return _print_diagnosis(answer.doc, as_json=as_json, out=out)


# --- diagnose --cluster ---

CLUSTER_EXPORTER_TIMEOUT = 5.0  # per exporter: connect, request and read its /diagnose
CLUSTER_TOTAL_TIMEOUT = 15.0  # all of them, however many: what has not answered by then is "no answer"
CLUSTER_CONCURRENCY = 32  # exporters asked at once
_RESOLVE_TIMEOUT = 5.0


class UsageError(ValueError):
    pass


def parse_service(value: str) -> tuple[str, int]:
    """HOST[:PORT] (an IPv6 literal in brackets: [::1]:10047) → (host, port)."""
    host, port = value, DEFAULT_PORT
    if value.startswith("["):
        inside, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise UsageError(f"--cluster-service: expected HOST[:PORT], got {value!r}")
        host, port_text = inside, rest[1:]
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        port_text = ""
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"--cluster-service: port: expected 1 to 65535, got {port_text!r}")
        port = int(port_text)
    if not host:
        raise UsageError(f"--cluster-service: expected HOST[:PORT], got {value!r}")
    return host, port


async def resolve_service(host: str, port: int) -> list[str]:
    """Every address (A and AAAA) the name resolves to, as exporter base URLs, in resolver order."""
    import socket

    infos = await asyncio.wait_for(
        asyncio.to_thread(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM), _RESOLVE_TIMEOUT
    )
    urls = []
    for family, _, _, _, sockaddr in infos:
        address = str(sockaddr[0])
        urls.append(f"http://[{address}]:{port}" if family == socket.AF_INET6 else f"http://{address}:{port}")
    return list(dict.fromkeys(urls))


async def fetch_diagnoses(
    urls: Sequence[str],
    *,
    timeout: float = CLUSTER_EXPORTER_TIMEOUT,
    total: float = CLUSTER_TOTAL_TIMEOUT,
) -> list[ExporterAnswer]:
    """Every exporter's /diagnose, concurrently; one that does not answer (in time, or with a document) is an
    answer with the reason, never an exception. In the order given."""
    import httpx

    slots = asyncio.Semaphore(CLUSTER_CONCURRENCY)

    async def one(client: httpx.AsyncClient, url: str) -> ExporterAnswer:
        endpoint = url.rstrip("/") + "/diagnose"
        async with slots:
            try:
                response = await client.get(endpoint)
                response.raise_for_status()
                doc = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                return ExporterAnswer(url, error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if not isinstance(doc, dict) or not {"source_node", "targets", "verdicts"} <= doc.keys():
            return ExporterAnswer(url, error="not a /diagnose document (no source_node, targets, verdicts)")
        return ExporterAnswer(url, doc=doc)

    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        tasks = [asyncio.create_task(one(client, url), name=f"diagnose {url}") for url in urls]
        done, pending = await asyncio.wait(tasks, timeout=total)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    answers = []
    for url, task in zip(urls, tasks, strict=True):
        if task in done:
            answers.append(task.result())
        else:
            answers.append(ExporterAnswer(url, error=f"no answer within the {total:g} s bound for all exporters"))
    return answers


async def _diagnose_cluster(urls: Sequence[str] | None, service: str | None, *, as_json: bool, out: TextIO) -> int:
    if service:
        try:
            host, port = parse_service(service)
            urls = await resolve_service(host, port)
        except UsageError as exc:
            print(f"netpath-exporter: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except (OSError, TimeoutError) as exc:
            print(f"netpath-exporter: --cluster-service: cannot resolve {service!r}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    urls = list(dict.fromkeys(urls or ()))
    view = combine(await fetch_diagnoses(urls))
    if as_json:
        json.dump(view.as_dict(), out, indent=1)
        out.write("\n")
    else:
        out.write(render_cluster(view))
    if not view.nodes:
        print(f"netpath-exporter: no exporter answered ({len(urls)} asked)", file=sys.stderr)
    return cluster_exit_status(view)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
