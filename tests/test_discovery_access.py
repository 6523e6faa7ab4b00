"""Finding the API: in-cluster service account, kubeconfig, explicit URL."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from exporter.discovery.access import AccessError, ApiAccess, in_cluster_access, kubeconfig_access, resolve_access
from exporter.discovery.config import DiscoveryConfig


@pytest.fixture
def ca_pem(tmp_path: Path) -> Path:
    """A throwaway self-signed CA, so the SSL context really loads it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key, crt = tmp_path / "ca.key", tmp_path / "ca.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return crt


def test_in_cluster_uses_the_service_env_the_ca_and_the_token_file(tmp_path: Path, ca_pem: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    shutil.copy(ca_pem, sa / "ca.crt")
    (sa / "token").write_text("abc\n")
    access = in_cluster_access({"KUBERNETES_SERVICE_HOST": "10.43.0.1", "KUBERNETES_SERVICE_PORT": "443"}, str(sa))
    assert access.base_url == "https://10.43.0.1:443"
    assert isinstance(access.verify, ssl.SSLContext)
    assert access.headers()["Authorization"] == "Bearer abc"
    v6 = in_cluster_access({"KUBERNETES_SERVICE_HOST": "fd00:43::1", "KUBERNETES_SERVICE_PORT": "443"}, str(sa))
    assert v6.base_url == "https://[fd00:43::1]:443"


def test_in_cluster_without_the_env_says_so(tmp_path: Path) -> None:
    with pytest.raises(AccessError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster_access({}, str(tmp_path))


def test_a_missing_token_file_is_an_access_error(tmp_path: Path, ca_pem: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    shutil.copy(ca_pem, sa / "ca.crt")
    access = in_cluster_access({"KUBERNETES_SERVICE_HOST": "10.43.0.1"}, str(sa))
    with pytest.raises(AccessError, match="token"):
        access.headers()


def kubeconfig(tmp_path: Path, user: dict[str, object], cluster: dict[str, object]) -> Path:
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dev",
                "contexts": [{"name": "dev", "context": {"cluster": "k3s", "user": "me"}}],
                "clusters": [{"name": "k3s", "cluster": cluster}],
                "users": [{"name": "me", "user": user}],
            }
        )
    )
    return path


def test_kubeconfig_current_context_with_token_and_inline_ca(tmp_path: Path, ca_pem: Path) -> None:
    path = kubeconfig(
        tmp_path,
        {"token": "t0k"},
        {
            "server": "https://192.168.50.1:6443/",
            "certificate-authority-data": base64.b64encode(ca_pem.read_bytes()).decode(),
        },
    )
    access = kubeconfig_access(str(path))
    assert access.base_url == "https://192.168.50.1:6443"
    assert isinstance(access.verify, ssl.SSLContext)
    assert access.headers()["Authorization"] == "Bearer t0k"


def test_kubeconfig_exec_plugins_point_at_kubectl_proxy(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"exec": {"command": "aws"}}, {"server": "https://x:6443"})
    with pytest.raises(AccessError, match="kubectl proxy"):
        kubeconfig_access(str(path))


def test_kubeconfig_missing_file_is_an_access_error(tmp_path: Path) -> None:
    with pytest.raises(AccessError, match="cannot read kubeconfig"):
        kubeconfig_access(str(tmp_path / "nope"))


def test_an_explicit_api_url_wins() -> None:
    access = resolve_access(DiscoveryConfig(api_url="http://127.0.0.1:8001"), env={"KUBERNETES_SERVICE_HOST": "x"})
    assert access.base_url == "http://127.0.0.1:8001" and "Authorization" not in access.headers()


async def test_api_connections_probe_an_idle_watch_so_a_dead_path_fails_within_seconds() -> None:
    """A watch through a ClusterIP whose NAT vanished gets no bytes and no error; TCP keepalive makes it one."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        access = ApiAccess(base_url=f"http://127.0.0.1:{port}")
        async with access.client(httpx.Timeout(5.0)) as client, client.stream("GET", "/api/v1/nodes") as resp:
            sock = resp.extensions["network_stream"].get_extra_info("socket")
            options = {
                "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            }
            await resp.aread()
    finally:
        server.close()
    assert options == {"keepalive": 1, "idle": 15, "interval": 5, "count": 3, "user_timeout_ms": 30_000}
