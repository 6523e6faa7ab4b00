"""How to reach the Kubernetes API: in-cluster service account, a kubeconfig, or an explicit URL.

In a pod: ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` with the service account's CA and
bearer token. The token file is re-read for every request (list or watch, not per event): projected
service-account tokens are rotated by the kubelet and an old one stops working after about an hour.

Outside a cluster (development): the current context of a kubeconfig, with a token, a token file or a
client certificate. Exec and auth-provider plugins are not supported; run ``kubectl proxy`` and point
``discovery.api_url`` at it instead.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from .config import SERVICE_ACCOUNT_DIR, DiscoveryConfig

# A watch is a long-lived connection that is idle between events. When the path under it dies (the node's
# ClusterIP NAT gone, conntrack flushed, the API server's node lost), nothing arrives and nothing fails: without
# probes the client waits for its silent-watch deadline (1.2 x watch_timeout + 5 s, over 6 minutes by default).
# TCP keepalive probes an idle connection after 15 s, every 5 s, and gives up after 3 unanswered probes; the
# user timeout does the same for data left unacknowledged. A dead watch is then an error within ~30 s, counted
# (netpath_discovery_errors_total) and retried with backoff, as client-go's 30 s keepalive dialer does.
KEEPALIVE_OPTIONS: list[tuple[int, int, int]] = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 15),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
    (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 30_000),
]


class AccessError(Exception):
    """The API's address or credentials could not be worked out; the message says what is missing."""


@dataclass(frozen=True)
class ApiAccess:
    base_url: str  # scheme://host:port, no trailing slash
    verify: ssl.SSLContext | bool = True
    token: str = ""
    token_file: str = ""  # re-read per request; wins over ``token``
    client_cert: tuple[str, str] | None = None  # (cert file, key file)

    def headers(self) -> dict[str, str]:
        token = self.token
        if self.token_file:
            try:
                token = Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise AccessError(f"cannot read token file {self.token_file}: {exc.strerror}") from None
        # identity: a compressed answer's size says nothing about what it inflates to, and reads are bounded.
        headers = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "netpath-exporter"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def client(self, timeout: httpx.Timeout) -> httpx.AsyncClient:
        verify: ssl.SSLContext | bool = self.verify
        if self.client_cert is not None:
            ctx = self.verify if isinstance(self.verify, ssl.SSLContext) else ssl.create_default_context()
            if self.verify is False:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            ctx.load_cert_chain(*self.client_cert)
            verify = ctx
        transport = httpx.AsyncHTTPTransport(verify=verify, socket_options=KEEPALIVE_OPTIONS)
        return httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=timeout, trust_env=False)


def resolve_access(cfg: DiscoveryConfig, env: Mapping[str, str] | None = None) -> ApiAccess:
    """The explicit ``api_url`` if set, else in-cluster when running in a pod, else the kubeconfig."""
    env = os.environ if env is None else env
    if cfg.api_url:
        return ApiAccess(base_url=cfg.api_url)
    if env.get("KUBERNETES_SERVICE_HOST") and Path(SERVICE_ACCOUNT_DIR, "token").exists():
        return in_cluster_access(env)
    path = cfg.kubeconfig or env.get("KUBECONFIG", "").split(os.pathsep)[0] or str(Path.home() / ".kube/config")
    return kubeconfig_access(path)


def in_cluster_access(env: Mapping[str, str], sa_dir: str = SERVICE_ACCOUNT_DIR) -> ApiAccess:
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise AccessError("KUBERNETES_SERVICE_HOST is not set: not running in a pod")
    if ":" in host:
        host = f"[{host}]"
    ca = Path(sa_dir, "ca.crt")
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise AccessError(f"cannot load the service account CA {ca}: {exc}") from None
    return ApiAccess(base_url=f"https://{host}:{port}", verify=ctx, token_file=str(Path(sa_dir, "token")))


def kubeconfig_access(path: str) -> ApiAccess:
    """The current context of a kubeconfig file."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise AccessError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise AccessError(f"kubeconfig {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise AccessError(f"kubeconfig {path} is not a mapping")
    base = Path(path).parent

    def named(section: str, name: str) -> dict[str, Any]:
        for entry in doc.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                body = entry.get(section[:-1])
                if isinstance(body, dict):
                    return body
        raise AccessError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")

    context = named("contexts", str(doc.get("current-context") or ""))
    cluster = named("clusters", str(context.get("cluster", "")))
    user = named("users", str(context.get("user", ""))) if context.get("user") else {}
    server = str(cluster.get("server", "")).rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise AccessError(f"kubeconfig {path}: cluster server {server!r} is not an http(s) URL")
    if "exec" in user or "auth-provider" in user:
        raise AccessError(
            f"kubeconfig {path}: exec/auth-provider credentials are not supported; "
            "run `kubectl proxy` and set discovery.api_url: http://127.0.0.1:8001"
        )

    def file_or_data(key: str) -> str | None:
        if data := cluster.get(f"{key}-data") or user.get(f"{key}-data"):
            fd, name = tempfile.mkstemp(prefix="netpath-kubeconfig-")
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(data))
            return name
        if value := cluster.get(key) or user.get(key):
            return str(base / str(value))
        return None

    verify: ssl.SSLContext | bool = True
    if cluster.get("insecure-skip-tls-verify"):
        verify = False
    elif ca := file_or_data("certificate-authority"):
        verify = ssl.create_default_context(cafile=ca)
    cert, key = file_or_data("client-certificate"), file_or_data("client-key")
    token_file = user.get("tokenFile")
    return ApiAccess(
        base_url=server,
        verify=verify,
        token=str(user.get("token") or ""),
        token_file=str(base / str(token_file)) if token_file else "",
        client_cert=(cert, key) if cert and key else None,
    )
