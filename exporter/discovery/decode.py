"""Total decoding of API objects: an object either fits the shape discovery reads, or it is skipped with a reason.

Anyone who may create a pod, annotate a Service or write an EndpointSlice in some namespace controls part of
what the watch streams carry, and an API server (or a proxy in front of it) may send anything. So every list
item and watch event is checked here, before it reaches the store: the fields :mod:`.derive` reads must have
the JSON type it expects (absent and ``null`` are fine, they read as empty). A mistyped object is skipped and
counted by ``reason`` — a closed set, used as a metric label — and the stream goes on.

The shapes list only what discovery reads; everything else in an object is ignored, whatever its type, and
not kept: :func:`decode` returns the object cut down to its shape (no managedFields, no pod specs, only the
``netpath.io/`` annotations), so the store's memory follows the number of objects, not what they carry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Why an object was skipped; the `reason` label of netpath_discovery_decode_errors_total.
DECODE_REASONS = (
    "not_json",  # a watch line that is not JSON (or nested beyond what the parser takes)
    "bad_event",  # a watch event without a string `type` and an object `object`, or of an unknown type
    "not_object",  # a list item that is not a JSON object
    "bad_metadata",  # `metadata` not an object; name missing or not a string; mistyped namespace, labels, …
    "bad_field",  # a field discovery reads has the wrong type or is out of range (a port of 70000)
)


class Port:
    """Marker: a whole number from 1 to 65535 (never a bool)."""


class StrMap:
    """Marker: an object whose values are all strings (labels, annotations)."""


class Name:
    """Marker: a Kubernetes object name (DNS subdomain, at most 253): it becomes part of a `target` label."""


class Host:
    """Marker: an Ingress host, a DNS subdomain or ``*.`` one: it becomes a Host header, so no CR/LF, no spaces."""


class UrlPath:
    """Marker: an absolute HTTP path of printable ASCII, no spaces, at most 1024 bytes: it becomes a request line."""


_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_HOST = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_PATH = re.compile(r"/[\x21-\x7e]{0,1023}")
_PATTERNS: dict[type, re.Pattern[str]] = {Name: _NAME, Host: _HOST, UrlPath: _PATH}


def valid_path(value: str) -> bool:
    return bool(_PATH.fullmatch(value))


# A shape: a type (str, bool, int, Port, StrMap), a dict of optional keys → shapes, or a one-element list [shape].
Shape = Any

_CONDITIONS: Shape = [{"type": str, "status": str}]
_METADATA: Shape = {
    "name": Name,
    "namespace": Name,
    "resourceVersion": str,
    "deletionTimestamp": str,
    "labels": StrMap,
    "annotations": StrMap,
}
_PORTS: Shape = [{"name": str, "port": Port, "protocol": str}]

SHAPES: dict[str, Shape] = {
    "nodes": {
        "spec": {"unschedulable": bool},
        "status": {"conditions": _CONDITIONS, "addresses": [{"type": str, "address": str}]},
    },
    "pods": {
        "spec": {"nodeName": Name},
        "status": {"phase": str, "podIP": str, "conditions": _CONDITIONS},
    },
    "services": {
        "spec": {"clusterIP": str, "ports": _PORTS},
        "status": {"loadBalancer": {"ingress": [{"ip": str}]}},
    },
    "endpointslices": {
        "endpoints": [
            {
                "addresses": [str],
                "nodeName": Name,
                "conditions": {"ready": bool, "terminating": bool},
                "targetRef": {"name": Name},
            }
        ],
        "ports": _PORTS,
    },
    "ingresses": {
        "spec": {
            "tls": [{"hosts": [str]}],
            "rules": [
                {
                    "host": Host,
                    "http": {
                        "paths": [
                            {
                                "path": UrlPath,
                                "pathType": str,
                                "backend": {"service": {"name": Name}},
                            }
                        ]
                    },
                }
            ],
        },
    },
}


def fits(value: Any, shape: Shape) -> bool:
    """True when ``value`` is absent (None) or has ``shape`` (recursively; unknown keys are ignored)."""
    if value is None:
        return True
    if isinstance(shape, dict):
        return isinstance(value, Mapping) and all(fits(value.get(k), s) for k, s in shape.items())
    if isinstance(shape, list):
        return isinstance(value, list) and all(fits(v, shape[0]) for v in value)
    if shape is Port:
        return type(value) is int and 1 <= value <= 65535
    if shape is StrMap:
        return isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values())
    if shape is int:
        return type(value) is int
    if (pattern := _PATTERNS.get(shape)) is not None:
        return isinstance(value, str) and pattern.fullmatch(value) is not None
    return isinstance(value, shape)


def metadata_problem(obj: Any) -> str | None:
    """The reason an object's metadata does not fit, or None. BOOKMARK objects carry only a version."""
    if not isinstance(obj, dict):
        return "not_object"
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not fits(meta, _METADATA):
        return "bad_metadata"
    return None


def project(value: Any, shape: Shape) -> Any:
    """``value`` (which fits ``shape``) with only the keys the shape names; absent and null keys dropped."""
    if isinstance(shape, dict):
        return {k: project(value[k], s) for k, s in shape.items() if value.get(k) is not None}
    if isinstance(shape, list):
        return [project(v, shape[0]) for v in value if v is not None]
    return value


_KEPT_ANNOTATIONS = "netpath.io/"


def decode(resource: str, obj: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(the object cut down to what discovery reads, None), or (None, the reason it does not fit)."""
    if reason := object_problem(resource, obj):
        return None, reason
    out: dict[str, Any] = project(obj, {"metadata": _METADATA, **SHAPES.get(resource, {})})
    meta = out["metadata"]
    if "annotations" in meta:
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k.startswith(_KEPT_ANNOTATIONS)}
    return out, None


def object_problem(resource: str, obj: Any) -> str | None:
    """The reason ``obj`` cannot be stored as a ``resource``, or None when it fits."""
    if reason := metadata_problem(obj):
        return reason
    if not obj["metadata"].get("name"):
        return "bad_metadata"
    if not fits({k: v for k, v in obj.items() if k != "metadata"}, SHAPES.get(resource, {})):
        return "bad_field"
    return None
