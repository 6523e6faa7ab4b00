"""Typed readers for configuration values: each takes the raw YAML value and the field it came from.

Shared by the exporter's config and the discovery config, so every error reads the same way and names
its field (``targets[2].address: not an IP address: '10.0.0.300'``). Every reader checks the type first and
then a documented range or syntax (README "Config rules"); values are shown in messages through
:func:`shown`, which is bounded however large or deeply nested the value is.
"""

from __future__ import annotations

import ipaddress
import math
import re
import reprlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: nothing a name, a path or
# a header value may hold, and what would split a log line or an HTTP header.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# A message is one log line: the field and what is wrong, never a whole value.
_MAX_WHERE, _MAX_PROBLEM = 200, 400


def _cut(text: str, limit: int) -> str:
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)  # one line, whatever a key or value held
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ConfigError(ValueError):
    """A configuration problem, always naming the field (``where``) it is about."""

    def __init__(self, where: str, problem: str) -> None:
        where, problem = _cut(where, _MAX_WHERE), _cut(problem, _MAX_PROBLEM)
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


# reprlib looks at a bounded number of items per level and a bounded number of levels, so showing a value
# costs the same for a 3-item list and for a shared-reference structure that would print as gigabytes.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


def shown(value: Any) -> str:
    """A short repr of a config value for an error message: at most ~100 characters, in bounded time."""
    return _cut(_REPR.repr(value), 100)


T = TypeVar("T")

# --- numbers ---------------------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,12})?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

# The documented ranges (README "Config rules"). Probe intervals below 100 ms are a load generator, not a
# monitor; above an hour the series go stale between probes many times over.
PROBE_INTERVAL = (0.1, 3600.0)
PROBE_TIMEOUT = (0.01, 3600.0)  # and never longer than the target's interval
# The exporter's metrics port (and the peers' port discovery probes). Free in the Prometheus default port
# allocations as far as we could read them: 9100-9999 is exhausted and new exporters take ports above 10000.
# 10047 avoids the Kubernetes node ports (10248-10259).
DEFAULT_PORT = 10047
BUCKET_BOUND = (1e-6, 3600.0)
FACTS_INTERVAL = (1.0, 3600.0)  # iptables-save every second is already a real cost on a big node
WATCH_TIMEOUT = (1.0, 3600.0)  # the API server ends a watch after at most --min-request-timeout × 2 anyway
BACKOFF = (0.01, 3600.0)
MIN_DURATION, MAX_DURATION = 0.001, 3600.0  # any other duration


def seconds_text(seconds: float) -> str:
    """1.5 → "1.5s", 0.1 → "100ms", 3600 → "1h": how the ranges are written in messages."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def read_duration(value: Any, where: str, lo: float = MIN_DURATION, hi: float = MAX_DURATION) -> float:
    """Seconds from a number or a Prometheus-style string ("500ms", "10s", "1m"), finite and in [lo, hi]."""
    expected = f"expected a duration from {seconds_text(lo)} to {seconds_text(hi)} (like 5s or 500ms)"
    if isinstance(value, bool):
        raise ConfigError(where, f"{expected}, got {shown(value)}")
    seconds: float
    if isinstance(value, int):
        seconds = float(value) if -(2**53) <= value <= 2**53 else math.inf  # float() of a huge int overflows
    elif isinstance(value, float):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise ConfigError(where, f"{expected}, got {shown(value)}")
    if math.isnan(seconds):
        raise ConfigError(where, f"{expected}, got NaN")
    if seconds <= 0:
        raise ConfigError(where, f"must be positive, got {shown(value)}")
    if not lo <= seconds <= hi:  # also ±inf
        raise ConfigError(where, f"{expected}, got {shown(value)}")
    return seconds


def read_int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(where, f"expected a whole number from {lo} to {hi}, got {shown(value)}")
    return value


def read_fraction(value: Any, where: str, lo: float, hi: float) -> float:
    """A finite number in [lo, hi] (NaN compares false to everything, so it is refused by the range)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ConfigError(where, f"expected a number from {lo:g} to {hi:g}, got {shown(value)}")
    return float(value)


def read_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {shown(value)}")
    return value


# --- strings ---------------------------------------------------------------------------------------------


def read_str(value: Any, where: str, *, max_len: int = 4096) -> str:
    """A non-empty string of at most max_len characters, without control characters (CR, LF, NUL…)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, f"expected a non-empty string, got {shown(value)}")
    text = value.strip()
    if len(text) > max_len:
        raise ConfigError(where, f"longer than {max_len} characters ({len(text)}): {shown(text)}")
    if m := _CONTROL.search(text):
        raise ConfigError(where, f"contains the control character U+{ord(m.group()):04X}: {shown(text)}")
    return text


def read_optional(reader: Callable[[Any, str], T], value: Any, where: str, empty: T) -> T:
    """`reader`'s value, or `empty` when the key is absent, null or ""."""
    return empty if value is None or value == "" else reader(value, where)


# Kubernetes object names (apimachinery validation): a DNS-1123 label (namespaces, Services) and a DNS-1123
# subdomain (nodes).
_K8S_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_K8S_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def read_k8s_label(value: Any, where: str) -> str:
    """A Kubernetes DNS-1123 label: a namespace or Service name (lowercase, digits, '-', at most 63)."""
    text = read_str(value, where, max_len=63)
    if not _K8S_LABEL.fullmatch(text):
        raise ConfigError(where, f"not a Kubernetes object name (lowercase DNS label): {shown(text)}")
    return text


def read_node_name(value: Any, where: str) -> str:
    """A Kubernetes node name: a DNS-1123 subdomain (lowercase labels joined by '.', at most 253)."""
    text = read_str(value, where, max_len=253)
    if not _K8S_SUBDOMAIN.fullmatch(text):
        raise ConfigError(where, f"not a Kubernetes node name (lowercase DNS subdomain): {shown(text)}")
    return text


def read_namespaced_name(value: Any, where: str) -> str:
    """ "namespace/name" of a Kubernetes object, each part a DNS-1123 label."""
    text = read_str(value, where, max_len=127)
    parts = text.split("/")
    if len(parts) != 2 or not all(_K8S_LABEL.fullmatch(p) for p in parts):
        raise ConfigError(where, f"expected namespace/name (lowercase DNS labels), got {shown(text)}")
    return text


# A target name is a label value on every series of the target: printable, no spaces, bounded (discovery's
# names, e.g. "dns/coredns/coredns-7b9f/kubernetes.default.svc.cluster.local", fit comfortably).
MAX_NAME = 256
_NAME = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]+")


def read_name(value: Any, where: str) -> str:
    text = read_str(value, where, max_len=MAX_NAME)
    if not _NAME.fullmatch(text):
        raise ConfigError(where, f"a target name may not contain spaces: {shown(text)}")
    return text


# A DNS name (RFC 1035 §2.3.4): labels of 1-63 letters, digits and '-' not starting or ending with '-', at most
# 253 characters without the final dot. Query names may also hold '_' (SRV names such as _http._tcp.…, RFC 2782).
_DNS_LDH = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?")
_DNS_SRV = re.compile(r"[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?")


def read_dns_name(value: Any, where: str, *, underscore: bool = True, lowercase: bool = False) -> str:
    """A DNS name as written (a single final dot allowed and kept); '..', '...' and empty labels refused."""
    text = read_str(value, where, max_len=254)
    labels = (text[:-1] if text.endswith(".") else text).split(".")
    label = _DNS_SRV if underscore else _DNS_LDH
    bad = next((x for x in labels if not label.fullmatch(x)), None)
    if bad is not None or len(text.rstrip(".")) > 253 or (lowercase and text != text.lower()):
        what = f"the label {shown(bad)} is not" if bad else "not"
        case = "lowercase " if lowercase else ""
        raise ConfigError(where, f"{what} a valid {case}DNS name (RFC 1035 labels joined by '.'): {shown(text)}")
    return text


def read_host_header(value: Any, where: str) -> str:
    """An HTTP Host header (RFC 9110 §7.2): a DNS name or an IP, and an optional port — nothing else."""
    text = read_str(value, where, max_len=260)
    m = re.fullmatch(r"(\[[^\]]+\]|[^:\[\]]+)(?::(\d{1,5}))?", text)
    host = m.group(1) if m else ""
    port = int(m.group(2)) if m and m.group(2) else None
    ok = m is not None and (port is None or 1 <= port <= 65535)
    if ok and host.startswith("["):
        ok = _is_ip(host[1:-1], version=6)
    elif ok and not _is_ip(host, version=4):
        ok = host.rstrip(".") != "" and all(_DNS_LDH.fullmatch(x) for x in host.rstrip(".").split("."))
    if not ok:
        raise ConfigError(where, f"expected a host name or IP, optionally with :port, got {shown(text)}")
    return text


def _is_ip(text: str, *, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


_NETNS_NAME = re.compile(r"[A-Za-z0-9_][-A-Za-z0-9_.]{0,254}")


def read_netns(value: Any, where: str) -> str:
    """A network namespace: a name under /run/netns (as `ip netns` names them) or an absolute path."""
    text = read_str(value, where, max_len=4095)
    if not (text.startswith("/") or _NETNS_NAME.fullmatch(text)):
        raise ConfigError(
            where, f"expected a namespace name (letters, digits, '-', '_', '.') or an absolute path, got {shown(text)}"
        )
    return text


def read_enum(cls: Callable[[str], T], value: Any, where: str, choices: list[str]) -> T:
    try:
        if isinstance(value, str):
            return cls(value)
    except ValueError:
        pass
    raise ConfigError(where, f"expected one of {', '.join(choices)}, got {shown(value)}")


# --- addresses -------------------------------------------------------------------------------------------


def read_ip(value: Any, where: str) -> str:
    text = read_str(value, where, max_len=64)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(where, f"not an IP address (host names are not resolved here): {shown(text)}") from None


def read_hostport(value: Any, where: str, default_port: int | None, *, lowest_port: int = 1) -> tuple[str, int]:
    """ "10.42.1.5:8080", "[fd00::1]:53" or, where a default port exists, a bare IP."""
    text = read_str(value, where, max_len=80)
    m = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text)
    if m:
        host, port_text = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        port = int(port_text)
    elif default_port is not None:
        host, port = text.strip("[]"), default_port
    elif re.fullmatch(r".*:\d{6,}", text):
        raise ConfigError(where, f"port outside {lowest_port}-65535: {shown(text)}")
    else:
        raise ConfigError(where, f"expected ip:port, got {shown(text)}")
    if not lowest_port <= port <= 65535:
        raise ConfigError(where, f"port {port} is outside {lowest_port}-65535")
    return read_ip(host, where), port


# --- structure -------------------------------------------------------------------------------------------


def check_keys(raw: Mapping[Any, Any], allowed: set[str], where: str) -> None:
    prefix = f"{where}." if where else ""
    for key in raw:
        if not isinstance(key, str):
            raise ConfigError(where or "(top level)", f"keys are names, got the key {shown(key)}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        key = unknown[0] if re.fullmatch(r"[\w.-]{1,60}", unknown[0]) else shown(unknown[0])
        raise ConfigError(f"{prefix}{key}", f"unknown key (allowed here: {', '.join(sorted(allowed))})")


def read_mapping(value: Any, where: str) -> Mapping[str, Any]:
    """A mapping; an empty YAML section (None) reads as an empty one."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(where, f"expected a mapping, got {_kind(value)}")
    return value


def read_list(value: Any, where: str, what: str, *, empty: bool = True) -> list[Any]:
    """A YAML sequence (`what` says of what, for the message); `empty=False` also refuses []."""
    if not isinstance(value, list) or (not value and not empty):
        raise ConfigError(where, f"expected a {'' if empty else 'non-empty '}list of {what}, got {shown(value)}")
    return value


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def read_schedule(entry: Mapping[str, Any], where: str, interval: float, timeout: float) -> tuple[float, float]:
    """(interval, timeout) of a target or section: each in its documented range, the timeout never longer."""
    interval = read_duration(entry.get("interval", interval), f"{where}.interval", *PROBE_INTERVAL)
    timeout = read_duration(entry.get("timeout", timeout), f"{where}.timeout", *PROBE_TIMEOUT)
    if timeout > interval:
        raise ConfigError(
            f"{where}.timeout", f"{seconds_text(timeout)} is longer than the interval {seconds_text(interval)}"
        )
    return interval, timeout
