"""List + watch of one Kubernetes resource into a local store, the way client-go's reflector does it.

* List (paged) → replace the store wholesale, so objects deleted while we were not watching vanish too.
* Watch from the list's resourceVersion; every event moves our version forward (BOOKMARKs included).
* The server ends a watch after ``timeoutSeconds``: resume from our version, no relist, no duplicates.
* 410 Gone / ``Expired`` (as an HTTP status or an ERROR event): our version is compacted away → relist.
* Any other failure: count it, back off exponentially with jitter, then resume the watch from our version
  (or relist if we never listed). The store keeps its last contents meanwhile, so probing goes on with the
  last known targets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from .access import AccessError, ApiAccess

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
)


@dataclass
class ResourceStats:
    """What the self-metrics report per watched resource."""

    last_success: float = 0.0  # unix time the API last answered well for this resource
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_REASONS, 0))
    relists: int = 0  # lists after the first successful one: only 410 Gone leads to one
    up: bool = False  # the last request for this resource succeeded

    def success(self) -> None:
        self.last_success = time.time()
        self.up = True

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.up = False


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
    ) -> None:
        self.resource = resource
        self.store: dict[Key, Obj] = {}
        self.synced = asyncio.Event()  # set after the first successful list
        self.stats = ResourceStats()
        self.version = ""
        self._http = http
        self._access = access
        self._on_change = on_change
        self._watch_timeout = watch_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._lists = 0

    def backoff(self, failures: int) -> float:
        """Exponential, capped, with "equal jitter": half fixed, half random, so a fleet of DaemonSet pods
        that lost the API together does not come back in lockstep, yet nobody retries immediately."""
        ceiling = min(self._backoff_max, self._backoff_initial * 2.0 ** (failures - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

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
            meta = body.get("metadata") or {}
            for obj in body.get("items") or []:
                if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
                    items[object_key(obj)] = obj
            cont = str(meta.get("continue") or "")
            if not cont:
                version = str(meta.get("resourceVersion") or "")
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
            response = await self._http.get(self.resource.path, params=params, headers=self._access.headers())
        except AccessError as exc:
            raise ApiFailure("credentials", str(exc)) from None
        except httpx.HTTPError as exc:
            raise _transport_failure(exc) from None
        if response.status_code != 200:
            raise ApiFailure(
                status_reason(response.status_code), f"list: HTTP {response.status_code} {_message(response.content)}"
            )
        try:
            body = response.json()
        except ValueError:
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
                        body = await response.aread()
                        raise ApiFailure(
                            status_reason(response.status_code),
                            f"watch: HTTP {response.status_code} {_message(body)}",
                        )
                    self.stats.success()
                    async for line in response.aiter_lines():
                        if line.strip():
                            self._apply(line)
        except TimeoutError:
            raise ApiFailure("timeout", f"watch silent for {deadline:.0f}s") from None
        except AccessError as exc:
            raise ApiFailure("credentials", str(exc)) from None
        except httpx.HTTPError as exc:
            raise _transport_failure(exc) from None
        self.stats.success()  # a clean end: resume from self.version

    def _apply(self, line: str) -> None:
        try:
            event = json.loads(line)
            kind, obj = event["type"], event["object"]
            meta = obj["metadata"]
        except (ValueError, KeyError, TypeError):
            raise ApiFailure("decode", f"bad watch event: {line[:200]!r}") from None
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise Expired()
            raise ApiFailure(
                status_reason(code) if isinstance(code, int) else "decode",
                f"watch ERROR event: {obj.get('message', obj)}",
            )
        if version := meta.get("resourceVersion"):
            self.version = str(version)
        self.stats.success()
        if kind in ("ADDED", "MODIFIED"):
            self.store[object_key(obj)] = obj
        elif kind == "DELETED":
            self.store.pop(object_key(obj), None)
        else:  # BOOKMARK: only the version moves
            return
        self._on_change()


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
