"""List + watch of one Kubernetes resource into a local store, the way client-go's reflector does it.

* List (paged) → replace the store wholesale, so objects deleted while we were not watching vanish too.
* Watch from the list's resourceVersion; every event moves our version forward (BOOKMARKs included).
* The server ends a watch after ``timeoutSeconds``: resume from our version, no relist, no duplicates.
* 410 Gone / ``Expired`` (as an HTTP status or an ERROR event): our version is compacted away → relist.
* Any other failure: count it, back off exponentially with jitter, then resume the watch from our version
  (or relist if we never listed). The store keeps its last contents meanwhile, so probing goes on with the
  last known targets.
* Reads are bounded: a watch line longer than ``max_line_bytes`` (no newline in sight) drops the stream and
  relists — the event it would have held is lost, so resuming from our version could skip it or meet it again;
  a list page larger than ``max_list_bytes`` fails the list. Nothing is buffered beyond those limits.
* Decoding is total (:mod:`.decode`): a list item or watch event that does not fit is skipped and counted by
  reason; the stream goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from .access import AccessError, ApiAccess
from .decode import DECODE_REASONS, decode, metadata_problem

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)

_LIST_PAGE = 500


@dataclass(frozen=True)
class Resource:
    """A watchable collection: ``/api/v1/nodes``, ``/api/v1/namespaces/x/pods?labelSelector=…``."""

    name: str  # the metrics label: nodes, pods, services, endpointslices, ingresses
    path: str
    label_selector: str = ""


class ApiFailure(Exception):
    """A failed list or watch; ``reason`` is one of a closed set, used as a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Expired(Exception):
    """Our resourceVersion is too old for a watch (410 Gone): only a relist helps."""


ERROR_REASONS = (
    "unreachable",  # connection refused / no route / DNS: the API server is not answering
    "timeout",  # connect or read timed out
    "connection",  # the connection broke mid-response
    "forbidden",  # 401/403: credentials or RBAC
    "server_error",  # 5xx
    "client_error",  # other 4xx
    "decode",  # the answer was not the JSON we expect
    "credentials",  # the token file could not be read
    "too_large",  # a watch line or list page over its byte limit: the stream was dropped (then relisted)
)


@dataclass
class ResourceStats:
    """What the self-metrics report per watched resource."""

    last_success: float = 0.0  # unix time the API last answered well for this resource
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_REASONS, 0))
    decode_errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DECODE_REASONS, 0))
    relists: int = 0  # lists after the first successful one: after 410 Gone or a dropped over-long watch line
    up: bool = False  # the last request for this resource succeeded

    def success(self) -> None:
        self.last_success = time.time()
        self.up = True

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.up = False


def jittered_backoff(failures: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential, capped, with "equal jitter": half fixed, half random, so a fleet of DaemonSet pods
    that lost the API together does not come back in lockstep, yet nobody retries immediately."""
    ceiling = min(maximum, initial * 2.0 ** min(failures - 1, 64))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def status_reason(code: int) -> str:
    if code in (401, 403):
        return "forbidden"
    return "server_error" if code >= 500 else "client_error"


class Informer:
    def __init__(
        self,
        resource: Resource,
        http: httpx.AsyncClient,
        access: ApiAccess,
        *,
        on_change: Callable[[], None],
        watch_timeout: float,
        backoff_initial: float,
        backoff_max: float,
        rng: random.Random | None = None,
        max_line_bytes: int = 4 * 1024 * 1024,
        max_list_bytes: int = 64 * 1024 * 1024,
        stats: ResourceStats | None = None,
    ) -> None:
        self.resource = resource
        self.store: dict[Key, Obj] = {}
        self.synced = asyncio.Event()  # set after the first successful list
        self.stats = stats or ResourceStats()  # handed over across restarts, so the counters never go back
        self.version = ""
        self._http = http
        self._access = access
        self._on_change = on_change
        self._watch_timeout = watch_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._lists = 0
        self._max_line = max_line_bytes
        self._max_list = max_list_bytes

    def backoff(self, failures: int) -> float:
        return jittered_backoff(failures, self._backoff_initial, self._backoff_max, self._rng)

    async def run(self) -> None:
        failures = 0
        expired_in_a_row = 0
        while True:
            try:
                if not self.version:
                    await self._list()
                await self._watch()
                failures = expired_in_a_row = 0
            except Expired:
                log.info("%s: resourceVersion %s expired, relisting", self.resource.name, self.version)
                self.version = ""
                failures = 0
                expired_in_a_row += 1
                if expired_in_a_row > 1:  # a fresh list's version expiring at once: don't spin on the API
                    await asyncio.sleep(self.backoff(expired_in_a_row - 1))
            except ApiFailure as exc:
                failures += 1
                self.stats.error(exc.reason)
                if exc.reason == "too_large":
                    self.version = ""  # an event was lost in the dropped line: only a relist is sure to see it
                delay = self.backoff(failures)
                log.warning("%s: %s; retrying in %.1fs", self.resource.name, exc, delay)
                await asyncio.sleep(delay)

    # --- list ----------------------------------------------------------------------------------------------

    async def _list(self) -> None:
        items: dict[Key, Obj] = {}
        cont = ""
        while True:
            params = {"limit": str(_LIST_PAGE)}
            if self.resource.label_selector:
                params["labelSelector"] = self.resource.label_selector
            if cont:
                params["continue"] = cont
            body = await self._get_json(params)
            meta = body.get("metadata")
            page = body.get("items")
            if not isinstance(meta, dict) or not isinstance(page, list | None):
                raise ApiFailure("decode", "list answer without metadata object or items list")
            for item in page or []:
                obj, reason = decode(self.resource.name, item)
                if obj is None:
                    self._skipped(str(reason), item)
                else:
                    items[object_key(obj)] = obj
            cont = meta.get("continue") or ""
            if not isinstance(cont, str):
                raise ApiFailure("decode", "list metadata.continue is not a string")
            if not cont:
                version = meta.get("resourceVersion") or ""
                if not isinstance(version, str):
                    raise ApiFailure("decode", "list metadata.resourceVersion is not a string")
                break
        if not version:
            raise ApiFailure("decode", "list without metadata.resourceVersion")
        if self._lists:
            self.stats.relists += 1
        self._lists += 1
        self.store = items
        self.version = version
        self.stats.success()
        self.synced.set()
        self._on_change()

    async def _get_json(self, params: dict[str, str]) -> Obj:
        try:
            async with self._http.stream(
                "GET", self.resource.path, params=params, headers=self._access.headers()
            ) as response:
                ok = response.status_code == 200
                content = await self._read_bounded(response, self._max_list if ok else 4096, truncate=not ok)
        except AccessError as exc:
            raise ApiFailure("credentials", str(exc)) from None
        except httpx.HTTPError as exc:
            raise _transport_failure(exc) from None
        if response.status_code != 200:
            code = response.status_code
            raise ApiFailure(status_reason(code), f"list: HTTP {code} {_message(content)}")
        try:
            body = json.loads(content)
        except (ValueError, RecursionError):
            raise ApiFailure("decode", "list answer is not JSON") from None
        if not isinstance(body, dict):
            raise ApiFailure("decode", "list answer is not an object")
        return body

    # --- watch ---------------------------------------------------------------------------------------------

    async def _watch(self) -> None:
        params = {
            "watch": "true",
            "resourceVersion": self.version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, round(self._watch_timeout))),
        }
        if self.resource.label_selector:
            params["labelSelector"] = self.resource.label_selector
        # The server ends the stream at timeoutSeconds; if it goes silent instead (a dead connection that
        # nobody reset), this deadline ends it from our side.
        deadline = self._watch_timeout * 1.2 + 5
        url = f"{self.resource.path}?{urlencode(params)}"
        try:
            async with asyncio.timeout(deadline):
                async with self._http.stream(
                    "GET", url, headers=self._access.headers(), timeout=httpx.Timeout(10.0, read=deadline)
                ) as response:
                    if response.status_code == 410:
                        raise Expired()
                    if response.status_code != 200:
                        body = await self._read_bounded(response, 4096, truncate=True)
                        raise ApiFailure(
                            status_reason(response.status_code),
                            f"watch: HTTP {response.status_code} {_message(body)}",
                        )
                    self.stats.success()
                    async for line in self._lines(response):
                        if line.strip():
                            self._apply(line)
        except TimeoutError:
            raise ApiFailure("timeout", f"watch silent for {deadline:.0f}s") from None
        except AccessError as exc:
            raise ApiFailure("credentials", str(exc)) from None
        except httpx.HTTPError as exc:
            raise _transport_failure(exc) from None
        self.stats.success()  # a clean end: resume from self.version

    async def _read_bounded(self, response: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
        """The body, or ApiFailure("too_large") once it passes ``limit`` bytes (an error body is cut there)."""
        declared = response.headers.get("content-length", "")
        if not truncate and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise ApiFailure("too_large", f"{self.resource.name}: answer of {declared} bytes is over {limit}")
        body = bytearray()
        async for chunk in _raw(response):
            body += chunk
            if len(body) > limit:
                if truncate:
                    return bytes(body[:limit])
                raise ApiFailure("too_large", f"{self.resource.name}: answer is over {limit} bytes")
        return bytes(body)

    async def _lines(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """Newline-delimited watch events, each at most ``max_line_bytes``: what httpx's aiter_lines does,
        without buffering a line that never ends."""
        buf = bytearray()
        scanned = 0  # no newline in buf[:scanned]
        async for chunk in _raw(response):
            buf += chunk
            while (end := buf.find(b"\n", scanned)) >= 0:
                if end > self._max_line:
                    break
                yield bytes(buf[:end])
                del buf[: end + 1]
                scanned = 0
            scanned = len(buf)
            if len(buf) > self._max_line:
                raise ApiFailure("too_large", f"watch line over {self._max_line} bytes; dropping the stream")
        if buf.strip():
            yield bytes(buf)

    def _skipped(self, reason: str, what: object) -> None:
        self.stats.decode_errors[reason] = self.stats.decode_errors.get(reason, 0) + 1
        log.warning("%s: skipped an object that does not decode (%s): %s", self.resource.name, reason, _brief(what))

    def _apply(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            self._skipped("not_json", line)
            return
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR") or not isinstance(obj, dict):
            self._skipped("bad_event", line)
            return
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise Expired()
            raise ApiFailure(
                status_reason(code) if isinstance(code, int) else "decode",
                f"watch ERROR event: {str(obj.get('message', ''))[:200]}",
            )
        if reason := metadata_problem(obj):
            self._skipped(reason, obj)  # no version, no key: nothing to do but skip it
            return
        if version := obj["metadata"].get("resourceVersion"):
            self.version = version
        self.stats.success()
        if kind == "BOOKMARK":  # only the version moves
            return
        key = object_key(obj)
        if kind == "DELETED":
            if not key[1]:
                self._skipped("bad_metadata", obj)
                return
            self.store.pop(key, None)
        else:
            decoded, reason = decode(self.resource.name, obj)
            if decoded is not None:
                self.store[key] = decoded
            else:
                self._skipped(str(reason), obj)
                # What it is now does not fit: it must not go on being probed as what it was.
                if self.store.pop(key, None) is None:
                    return
        self._on_change()


async def _raw(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it comes off the wire (de-chunked), refusing any content coding: a compressed chunk could
    inflate far past the byte limits before they are checked. We ask for identity; a server that compresses
    anyway is not answering what we asked."""
    coding = response.headers.get("content-encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        raise ApiFailure("decode", f"{response.url.path}: unrequested Content-Encoding {coding[:40]!r}")
    async for chunk in response.aiter_raw():
        yield chunk


def _brief(what: object) -> str:
    """A short, safe description for a log line: never the repr of a whole hostile object (it may be megabytes,
    or nested deep enough that repr itself fails)."""
    if isinstance(what, bytes):
        return repr(what[:200])
    meta = what.get("metadata") if isinstance(what, dict) else None
    if isinstance(meta, dict):
        ns, name = meta.get("namespace"), meta.get("name")
        ns_text = ns[:63] if isinstance(ns, str) else f"<{type(ns).__name__}>"
        name_text = name[:253] if isinstance(name, str) else f"<{type(name).__name__}>"
        return repr(f"{ns_text}/{name_text}")
    if isinstance(what, dict):
        return f"an object whose metadata is {type(meta).__name__}"
    return f"a JSON {type(what).__name__}"


def object_key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _transport_failure(exc: httpx.HTTPError) -> ApiFailure:
    if isinstance(exc, httpx.ConnectError):
        return ApiFailure("unreachable", str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        return ApiFailure("timeout", str(exc) or type(exc).__name__)
    return ApiFailure("connection", str(exc) or type(exc).__name__)


def _message(body: bytes) -> str:
    try:
        status = json.loads(body)
        return str(status.get("message", ""))[:200] if isinstance(status, dict) else ""
    except ValueError:
        return body[:200].decode(errors="replace")
