"""Configuration: a YAML file, parsed and validated once, at the edge, into frozen objects.

Every error names the field it is about (``targets[2].address``) and what is wrong with it, so that a
broken ConfigMap is fixed from the pod's log line alone.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.error import Mark
from yaml.events import AliasEvent, Event
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from .discovery.config import DiscoveryConfig, parse_discovery
from .fields import (
    BUCKET_BOUND,
    DEFAULT_PORT,
    FACTS_INTERVAL,
    check_keys,
    read_bool,
    read_duration,
    read_enum,
    read_fraction,
    read_hostport,
    read_int,
    read_list,
    read_mapping,
    read_name,
    read_namespaced_name,
    read_netns,
    read_node_name,
    read_optional,
    read_schedule,
    shown,
)
from .fields import ConfigError as ConfigError  # re-exported: callers catch config.ConfigError
from .model import AnyTarget, PathClass, Perspective, TargetKey, Via
from .probes import KINDS

DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"

DEFAULT_PATH_VIA = {
    PathClass.POD_IP: Via.POD,
    PathClass.CLUSTER_IP: Via.SERVICE,
    PathClass.DNS: Via.SERVICE,
    PathClass.INGRESS: Via.INGRESS,
}

# Buckets from 100 µs (same-node pod) to beyond the SYN-retransmit steps of 1 s and 3 s (1 + 2), so a
# connect that needed a retransmitted SYN lands in its own bucket instead of smearing the tail.
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    1.5,
    3.5,
    7.5,
)


@dataclass(frozen=True)
class SchedulerConfig:
    # Probes in flight at once; large enough that 100 blackholed targets don't starve the healthy ones.
    max_concurrency: int = 128
    jitter: float = 0.1  # fraction of the interval each wait is randomly spread by


@dataclass(frozen=True)
class NodeFactsConfig:
    """Reading the node's kernel state (exporter.node): on by default, since it is what names causes."""

    enabled: bool = True
    interval: float = 30.0  # facts change slowly; iptables-save on a big node costs tens of milliseconds
    netns: str = ""  # network namespace to read: "" this one; a name or path (e.g. /proc/1/ns/net) otherwise


@dataclass(frozen=True)
class NodePerspectiveConfig:
    """Probing every target a second time from the node's network namespace (see exporter/perspective.py)."""

    enabled: bool = False  # needs CAP_SYS_ADMIN and the namespace file: opt-in
    netns: str = "/proc/1/ns/net"  # the host's namespace as seen with hostPID; a name under /var/run/netns too


@dataclass(frozen=True)
class PeerReportsConfig:
    """Reading the peer exporters' own /diagnose (exporter/diagnose/peer_reports.py), so a failure seen through
    a component on another node is attributed to that node's named cause (docs/diagnosis.md, principle 3)."""

    enabled: bool = True  # needs nothing but the peers' port, which discovery already probes
    interval: float = 10.0  # seconds between rounds; a report older than 3 intervals is not used
    timeout: float = 2.0  # per peer: connect, request and read


@dataclass(frozen=True)
class Config:
    source_node: str
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    perspective: Perspective = Perspective.POD
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    latency_buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS
    targets: tuple[AnyTarget, ...] = ()
    discovery: DiscoveryConfig | None = None  # Kubernetes discovery; None: static targets only
    node_facts: NodeFactsConfig = field(default_factory=NodeFactsConfig)
    node_perspective: NodePerspectiveConfig = field(default_factory=NodePerspectiveConfig)
    peer_reports: PeerReportsConfig = field(default_factory=PeerReportsConfig)


# --- targets ---

_COMMON_KEYS = {"name", "kind", "path", "via", "target_node", "service", "interval", "timeout"}


def parse_target(raw: Any, where: str, default_interval: float, default_timeout: float) -> list[AnyTarget]:
    """One config entry → one target (two for a DNS entry asking over both UDP and TCP)."""
    entry = read_mapping(raw, where)
    name = entry.get("kind")
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ConfigError(f"{where}.kind", f"expected one of {', '.join(KINDS)}, got {shown(name)}")
    check_keys(entry, _COMMON_KEYS | kind.config_keys, where)
    path = read_enum(PathClass, entry.get("path"), f"{where}.path", [p.value for p in PathClass])
    interval, timeout = read_schedule(entry, where, default_interval, default_timeout)
    common: dict[str, Any] = {
        "name": read_name(entry.get("name"), f"{where}.name"),
        "path": path,
        "via": read_enum(Via, entry["via"], f"{where}.via", [v.value for v in Via])
        if "via" in entry
        else DEFAULT_PATH_VIA[path],
        "target_node": read_optional(read_node_name, entry.get("target_node"), f"{where}.target_node", ""),
        "service": read_optional(read_namespaced_name, entry.get("service"), f"{where}.service", ""),
        "interval": interval,
        "timeout": timeout,
    }
    return kind.parse(entry, where, common)


# --- the whole file ---

_TOP_KEYS = {
    "source_node",
    "listen",
    "perspective",
    "defaults",
    "scheduler",
    "latency_buckets",
    "targets",
    "discovery",
    "node_facts",
    "node_perspective",
    "peer_reports",
}


def default_source_node() -> str:
    """The downward API's node name when set (the DaemonSet sets NODE_NAME), else this host's name."""
    return os.environ.get("NODE_NAME") or socket.gethostname()


def parse_config(raw: Any) -> Config:
    """Validate a decoded YAML document into a Config, or raise ConfigError naming the field."""
    if raw is None:
        raw = {}
    doc = read_mapping(raw, "(top level)")
    check_keys(doc, _TOP_KEYS, "")

    source_node = read_node_name(doc["source_node"], "source_node") if "source_node" in doc else default_source_node()
    # Port 0 (any free port) is allowed for listening: tests and the lab use it.
    listen_host, listen_port = read_hostport(doc.get("listen", DEFAULT_LISTEN), "listen", None, lowest_port=0)
    perspective = read_enum(Perspective, doc.get("perspective", "pod"), "perspective", ["pod", "node"])

    defaults = read_mapping(doc.get("defaults", {}), "defaults")
    check_keys(defaults, {"interval", "timeout"}, "defaults")
    interval, timeout = read_schedule(defaults, "defaults", 10.0, 3.0)

    sched_raw = read_mapping(doc.get("scheduler", {}), "scheduler")
    check_keys(sched_raw, {"max_concurrency", "jitter"}, "scheduler")
    scheduler = SchedulerConfig(
        max_concurrency=read_int(sched_raw.get("max_concurrency", 128), "scheduler.max_concurrency", 1, 10000),
        jitter=read_fraction(sched_raw.get("jitter", 0.1), "scheduler.jitter", 0.0, 0.5),
    )

    buckets_raw = read_list(
        doc.get("latency_buckets", list(DEFAULT_LATENCY_BUCKETS)), "latency_buckets", "seconds", empty=False
    )
    if len(buckets_raw) > MAX_BUCKETS:  # each bucket is a series per target
        raise ConfigError("latency_buckets", f"at most {MAX_BUCKETS} buckets, got {len(buckets_raw)}")
    buckets = tuple(read_duration(b, f"latency_buckets[{i}]", *BUCKET_BOUND) for i, b in enumerate(buckets_raw))
    if list(buckets) != sorted(set(buckets)):
        raise ConfigError("latency_buckets", "must be strictly increasing")

    targets: list[AnyTarget] = []
    seen: dict[TargetKey, str] = {}
    for i, entry in enumerate(read_list(doc.get("targets", []), "targets", "targets")):
        for target in parse_target(entry, f"targets[{i}]", interval, timeout):
            if target.key in seen:
                raise ConfigError(f"targets[{i}].name", f"{shown(target.name)} is already used by {seen[target.key]}")
            seen[target.key] = f"targets[{i}]"
            targets.append(target)

    discovery = None
    if doc.get("discovery") is not None and doc.get("discovery") is not False:
        discovery = parse_discovery(doc["discovery"], default_interval=interval, default_timeout=timeout)

    facts_raw = read_mapping(doc.get("node_facts", {}), "node_facts")
    check_keys(facts_raw, {"enabled", "interval", "netns"}, "node_facts")
    node_facts = NodeFactsConfig(
        enabled=read_bool(facts_raw.get("enabled", True), "node_facts.enabled"),
        interval=read_duration(facts_raw.get("interval", 30.0), "node_facts.interval", *FACTS_INTERVAL),
        netns=read_optional(read_netns, facts_raw.get("netns"), "node_facts.netns", ""),
    )

    persp_raw = read_mapping(doc.get("node_perspective", {}), "node_perspective")
    check_keys(persp_raw, {"enabled", "netns"}, "node_perspective")
    node_perspective = NodePerspectiveConfig(
        enabled=read_bool(persp_raw.get("enabled", False), "node_perspective.enabled"),
        netns=read_netns(persp_raw.get("netns", NodePerspectiveConfig.netns), "node_perspective.netns"),
    )
    if node_perspective.enabled and perspective is Perspective.NODE:
        raise ConfigError(
            "node_perspective.enabled",
            "the exporter already runs in the node's namespace (perspective: node); there is no second view",
        )

    peer_raw = read_mapping(doc.get("peer_reports", {}), "peer_reports")
    check_keys(peer_raw, {"enabled", "interval", "timeout"}, "peer_reports")
    peer_interval = read_duration(peer_raw.get("interval", 10.0), "peer_reports.interval", 1.0, 300.0)
    peer_reports = PeerReportsConfig(
        enabled=read_bool(peer_raw.get("enabled", True), "peer_reports.enabled"),
        interval=peer_interval,
        # default: 2 s, or half the interval when that is shorter (a round ends before the next is due)
        timeout=read_duration(peer_raw["timeout"], "peer_reports.timeout", 0.1, 30.0)
        if "timeout" in peer_raw
        else min(2.0, peer_interval / 2),
    )
    if peer_reports.timeout >= peer_reports.interval:
        raise ConfigError("peer_reports.timeout", "must be shorter than peer_reports.interval")

    return Config(
        source_node=source_node,
        listen_host=listen_host,
        listen_port=listen_port,
        perspective=perspective,
        scheduler=scheduler,
        latency_buckets=buckets,
        targets=tuple(targets),
        discovery=discovery,
        node_facts=node_facts,
        node_perspective=node_perspective,
        peer_reports=peer_reports,
    )


def parse_listen(config: Config, listen: str) -> Config:
    """The config with its listen address replaced (the --listen flag), validated like the file's."""
    host, port = read_hostport(listen, "--listen", None, lowest_port=0)
    return dataclasses.replace(config, listen_host=host, listen_port=port)


# --- reading the file ---
#
# The file is hostile until parsed: bounded in size before it is read, strictly UTF-8, and composed into YAML
# nodes under a depth limit and a budget of values that counts every alias as the values it stands for,
# before any Python object is built. Every way of failing is a ConfigError naming the file position.

# A ConfigMap holds at most 1 MiB; an eighth of that is ~1 900 static targets in flow style (discovery finds
# the rest) and keeps the worst document's parse well under a second on a busy node (bench/config_load.py).
MAX_FILE_BYTES = 128 * 1024
MAX_DEPTH = 32  # the deepest valid config is 5 levels (discovery.dns.names[i])
MAX_VALUES = 25_000  # YAML nodes, each alias counted as the nodes it repeats (a static target is about 11)
MAX_BUCKETS = 64

_MERGE_TAG = "tag:yaml.org,2002:merge"
# YAML's printable set (YAML 1.1 §5.1): everything else is refused with its position before parsing.
_NOT_YAML_TEXT = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class _GuardedComposer(Composer, SafeConstructor, Resolver):
    """PyYAML's composer and safe constructor with the limits above; the scanner and parser underneath are
    iterative (no recursion however deep the nesting), so the depth limit is met before any stack grows."""

    if TYPE_CHECKING:  # provided by the parser class it is mixed with (_Loader)

        def check_event(self, *choices: type[Event]) -> bool: ...
        def peek_event(self) -> Event: ...

    def __init__(self) -> None:
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) → values it expands to; the nodes live as long as this
        self._values = 0  # values of the document so far, aliases expanded

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        # Counted as they come, so the budget stops the work, not only the result.
        event = self.peek_event()
        if self.check_event(AliasEvent):
            alias = super().compose_node(parent, index)
            if id(alias) not in self._sizes:
                raise _composer_error("an alias inside the value it names (a cycle)", event.start_mark)
            self._charge(self._sizes[id(alias)], event)
            return alias
        self._charge(1, event)
        if self._depth >= MAX_DEPTH:
            raise _composer_error(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = 1
        if isinstance(node, SequenceNode):
            size += sum(self._sizes[id(item)] for item in node.value)
        elif isinstance(node, MappingNode):
            size += sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
            _refuse_duplicate_keys(node)
        self._sizes[id(node)] = size
        return node

    def _charge(self, values: int, event: Event) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise _composer_error(
                f"more than {MAX_VALUES} values (aliases counted as what they repeat)", event.start_mark
            )

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date 2024-13-45, a 5 000-digit number
            raise ConstructorError(None, None, f"cannot read this value: {exc}", node.start_mark) from None


def _composer_error(problem: str, mark: Any) -> ComposerError:
    """A ComposerError at `mark`: a yaml.Mark, or libyaml's own mark type with the same line and column."""
    return ComposerError(None, None, problem, mark)


def _refuse_duplicate_keys(node: MappingNode) -> None:
    first: dict[tuple[str, str], Mark] = {}
    for key, _ in node.value:
        if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
            continue
        if (at := first.setdefault((key.tag, key.value), key.start_mark)) is not key.start_mark:
            raise ComposerError(
                None, None, f"duplicate key {shown(key.value)} (first at line {at.line + 1})", key.start_mark
            )


class _PythonParser(Reader, Scanner, Parser):
    """PyYAML's own scanner and parser (also iterative), for a PyYAML built without libyaml."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)


try:  # libyaml's scanner and parser, in C: the largest allowed file in well under a second
    from yaml._yaml import CParser as _EventParser
except ImportError:  # pragma: no cover
    _EventParser = _PythonParser  # type: ignore[assignment,misc]


class _Loader(_GuardedComposer, _EventParser):
    def __init__(self, text: str) -> None:
        _EventParser.__init__(self, text)
        _GuardedComposer.__init__(self)


def read_config_bytes(path: str | Path) -> bytes:
    """The file's bytes: a regular file of at most MAX_FILE_BYTES, read without ever blocking (a FIFO, a
    device such as /dev/zero, a directory or a socket is refused from its type before anything is read)."""
    name = str(path)
    try:
        before = os.stat(name)
        if not stat.S_ISREG(before.st_mode):
            raise ConfigError(name, f"not a regular file ({_file_type(before.st_mode)})")
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(name, "no such file") from None
    except OSError as exc:
        raise ConfigError(name, f"cannot read: {exc.strerror}") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):  # replaced between stat and open
            raise ConfigError(name, f"not a regular file ({_file_type(opened.st_mode)})")
        if opened.st_size > MAX_FILE_BYTES:
            raise ConfigError(name, f"{opened.st_size} bytes; a config file may have at most {MAX_FILE_BYTES}")
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES and (chunk := os.read(fd, MAX_FILE_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(name, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_FILE_BYTES:  # grew while read, or a /proc-like file whose size says 0
        raise ConfigError(name, f"more than {MAX_FILE_BYTES} bytes; a config file may have at most that")
    return b"".join(chunks)


def _file_type(mode: int) -> str:
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return "not a file"


def decode_config_text(data: bytes, name: str) -> str:
    """Strict UTF-8 in YAML's printable set; a file in another encoding fails at the first byte that shows it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        utf16 = " (UTF-16?)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(
            f"{name}:{line}:{column}",
            f"not UTF-8{utf16}: byte 0x{data[exc.start]:02x} at offset {exc.start}; save the file as UTF-8",
        ) from None
    if m := _NOT_YAML_TEXT.search(text):
        line = text.count("\n", 0, m.start()) + 1
        column = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
        nul = " (UTF-16 or a binary file?)" if m.group() == "\x00" else ""
        raise ConfigError(f"{name}:{line}:{column}", f"the control character U+{ord(m.group()):04X}{nul} is not text")
    return text


def parse_config_text(text: str, name: str = "<config>") -> Any:
    """The YAML document in `text` as Python values, within the limits above."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
        raise ConfigError(where, f"not valid YAML: {'; '.join(filter(None, (exc.context, exc.problem)))}") from None
    except yaml.YAMLError as exc:  # a ReaderError: no mark (the text was checked above; belt and braces)
        raise ConfigError(name, f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; every failure is a ConfigError naming the file or field."""
    name = str(path)
    return parse_config(parse_config_text(decode_config_text(read_config_bytes(path), name), name))
