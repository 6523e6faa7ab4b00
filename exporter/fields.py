"""Typed readers for configuration values: each takes the raw YAML value and the field it came from.

Shared by the exporter's config and the discovery config, so every error reads the same way and names
its field (``targets[2].address: not an IP address: '10.0.0.300'``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar


class ConfigError(ValueError):
    """A configuration problem, always naming the field (``where``) it is about."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def read_duration(value: Any, where: str) -> float:
    """Seconds from a number or a Prometheus-style string ("500ms", "10s", "1m")."""
    if isinstance(value, bool):
        raise ConfigError(where, f"expected a duration like 5s or 500ms, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise ConfigError(where, f"expected a duration like 5s or 500ms, got {value!r}")
    if seconds <= 0:
        raise ConfigError(where, f"must be positive, got {value!r}")
    return seconds


def read_str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, f"expected a non-empty string, got {value!r}")
    return value.strip()


def read_int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(where, f"expected a whole number from {lo} to {hi}, got {value!r}")
    return value


def read_enum(cls: Callable[[str], T], value: Any, where: str, choices: list[str]) -> T:
    try:
        return cls(value)
    except ValueError:
        raise ConfigError(where, f"expected one of {', '.join(choices)}, got {value!r}") from None


def read_ip(value: Any, where: str) -> str:
    text = read_str(value, where)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(where, f"not an IP address: {text!r}") from None


def read_hostport(value: Any, where: str, default_port: int | None, *, lowest_port: int = 1) -> tuple[str, int]:
    """ "10.42.1.5:8080", "[fd00::1]:53" or, where a default port exists, a bare IP."""
    text = read_str(value, where)
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if m:
        host, port_text = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        port = int(port_text)
    elif default_port is not None:
        host, port = text.strip("[]"), default_port
    else:
        raise ConfigError(where, f"expected ip:port, got {text!r}")
    if not lowest_port <= port <= 65535:
        raise ConfigError(where, f"port {port} is outside {lowest_port}-65535")
    return read_ip(host, where), port


def check_keys(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"{prefix}{unknown[0]}", f"unknown key (allowed here: {', '.join(sorted(allowed))})"
        )


def read_mapping(value: Any, where: str) -> Mapping[str, Any]:
    """A mapping; an empty YAML section (None) reads as an empty one."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(where, f"expected a mapping, got {type(value).__name__}")
    return value


def read_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {value!r}")
    return value
