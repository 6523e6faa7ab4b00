"""The test backend app: its routes, its in-process handle and its command line."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from lab.apps import httpapp
from lab.apps.httpapp import BIG_BODY, STALL_DECLARED_BYTES, STALL_FIRST_CHUNK, RunningApp


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        yield client


def test_root_names_the_replica_its_address_and_the_host_it_was_asked_for(
    httpapp_server: RunningApp, client: httpx.Client
) -> None:
    response = client.get(httpapp_server.url + "/", headers={"Host": "keybuzz.example.test"})

    assert response.status_code == 200
    assert f"replica-a on 127.0.0.1:{httpapp_server.port}" in response.text
    assert "host: keybuzz.example.test" in response.text
    assert response.headers["X-Served-By"] == "replica-a"


def test_big_healthz_and_unknown_paths(httpapp_server: RunningApp, client: httpx.Client) -> None:
    big = client.get(httpapp_server.url + "/big")
    assert big.status_code == 200
    assert big.content == BIG_BODY and len(BIG_BODY) >= 64 * 1024

    assert client.get(httpapp_server.url + "/healthz").text == "ok\n"
    assert client.get(httpapp_server.url + "/nope").status_code == 404


@pytest.mark.parametrize("code", [200, 404, 502, 503, 504])
def test_status_answers_the_asked_code(httpapp_server: RunningApp, client: httpx.Client, code: int) -> None:
    assert client.get(f"{httpapp_server.url}/status/{code}").status_code == code


@pytest.mark.parametrize("path", ["/status/abc", "/status/99", "/slow?delay=abc", "/slow?delay=-1"])
def test_bad_parameters_get_400_naming_the_parameter(
    httpapp_server: RunningApp, client: httpx.Client, path: str
) -> None:
    response = client.get(httpapp_server.url + path)

    assert response.status_code == 400
    assert response.text.split(":")[0] in ("status", "delay")


def test_slow_answers_after_the_asked_delay(httpapp_server: RunningApp, client: httpx.Client) -> None:
    response = client.get(httpapp_server.url + "/slow?delay=0.2")

    assert response.status_code == 200
    assert response.text == "slept 0.2s\n"
    assert response.elapsed.total_seconds() >= 0.2


def test_stall_sends_headers_and_a_first_chunk_then_nothing(httpapp_server: RunningApp) -> None:
    with socket.create_connection(("127.0.0.1", httpapp_server.port), timeout=2) as sock:
        sock.sendall(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while len(received.partition(b"\r\n\r\n")[2]) < len(STALL_FIRST_CHUNK):
            received += sock.recv(65536)
        headers, _, body = received.partition(b"\r\n\r\n")
        assert f"Content-Length: {STALL_DECLARED_BYTES}".encode() in headers
        assert body == STALL_FIRST_CHUNK
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)


def test_close_does_not_wait_for_stalled_requests() -> None:
    app = httpapp.serve_in_thread()
    sock = socket.create_connection(("127.0.0.1", app.port), timeout=2)
    sock.sendall(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.recv(1)
    started = time.monotonic()

    app.close()

    assert time.monotonic() - started < 2
    sock.close()


def test_the_command_line_prints_its_address_and_serves() -> None:
    with socket.socket() as probe_sock:  # a free port for the app
        probe_sock.bind(("127.0.0.1", 0))
        port = probe_sock.getsockname()[1]
    with subprocess.Popen(
        [sys.executable, "-m", "lab.apps.httpapp", "--listen", f"127.0.0.1:{port}", "--name", "cli"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == f"listening on 127.0.0.1:{port}"
            response = httpx.get(f"http://127.0.0.1:{port}/", trust_env=False, timeout=2)
            assert response.text.startswith(f"cli on 127.0.0.1:{port}")
        finally:
            process.terminate()


@pytest.mark.parametrize(
    ("args", "names"),
    [(["--listen", "localhost"], "--listen"), (["--listen", "127.0.0.1:1", "--slow-delay", "x"], "--slow-delay")],
)
def test_bad_arguments_exit_non_zero_naming_the_option(args: list[str], names: str) -> None:
    done = subprocess.run([sys.executable, "-m", "lab.apps.httpapp", *args], capture_output=True, text=True, timeout=10)

    assert done.returncode != 0
    assert names in done.stderr


def test_an_address_in_use_exits_non_zero_naming_it(httpapp_server: RunningApp) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lab.apps.httpapp", "--listen", f"127.0.0.1:{httpapp_server.port}"],
        capture_output=True,
        text=True,
        timeout=10,
    )

    assert done.returncode == 1
    assert f"127.0.0.1:{httpapp_server.port}" in done.stderr


def test_a_slow_delay_file_changes_slow_without_a_restart(tmp_path, client: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    delay_file = tmp_path / "delay"
    app = httpapp.RunningApp(
        httpapp.AppServer("127.0.0.1", 0, name="a", slow_delay=0.0, quiet=True, slow_delay_file=delay_file)
    )
    try:
        assert app.server.slow_delay == 0.0  # no file: --slow-delay
        delay_file.write_text("0.4\n")
        start = time.monotonic()
        assert client.get(f"{app.url}/slow").status_code == 200
        assert time.monotonic() - start >= 0.4
        delay_file.write_text("not a number")
        assert app.server.slow_delay == 0.0
        delay_file.unlink()
        assert app.server.slow_delay == 0.0
    finally:
        app.close()
