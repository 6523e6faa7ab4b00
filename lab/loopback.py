"""Real servers on 127.0.0.0/8 for the probe tests and the loopback demo, each a context manager that cleans up.

Nothing here touches interfaces, routes or firewall rules: every behaviour comes from ordinary sockets (and a
real dnsmasq) on loopback addresses, on ports picked free at run time.

    tcp_listener()        accepts and closes                         -> probe ok
    closed_port()         bound, not listening: the kernel sends RST -> refused
    blackhole_listener()  accept queue full: SYNs are dropped        -> connect_timeout; .release() lets
                                                                        the next (retransmitted) SYN in
    dnsmasq(...)          a real dnsmasq with fixed records          -> answers, NXDOMAIN, REFUSED
    silent_dns()          UDP and TCP sockets that never answer      -> timeout
    truncating_dns()      answers every UDP query with TC set        -> truncated
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.query

DNSMASQ = "/usr/sbin/dnsmasq"
_POLL = 0.05  # how often server threads look at their stop flag


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class _AcceptLoop:
    """Accepts connections on a listening socket in a thread and closes them at once."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._stop = threading.Event()
        self.accepted = 0
        sock.settimeout(_POLL)
        self._thread = threading.Thread(target=self._run, name="loopback-accept", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()
            self.accepted += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


@dataclass
class Listener:
    host: str
    port: int
    sock: socket.socket

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@contextlib.contextmanager
def tcp_listener(host: str = "127.0.0.1") -> Iterator[Listener]:
    """A TCP port that accepts every connection and closes it."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    loop: _AcceptLoop | None = None
    try:
        sock.bind((host, 0))
        sock.listen(128)
        loop = _AcceptLoop(sock)
        yield Listener(host, sock.getsockname()[1], sock)
    finally:
        if loop is not None:
            loop.stop()
        sock.close()


@contextlib.contextmanager
def closed_port(host: str = "127.0.0.1") -> Iterator[Listener]:
    """A port that is bound (so nobody else takes it) but not listening: a SYN to it is answered with RST."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        yield Listener(host, sock.getsockname()[1], sock)
    finally:
        sock.close()


class BlackholeListener(Listener):
    """A listener whose accept queue is full, so the kernel drops every new SYN without answering.

    With a backlog of 0 the queue holds one connection; one "filler" connection occupies it. ``release()``
    accepts the filler and keeps accepting from then on: the next SYN (a client's retransmission, about one
    second after its first) gets through. That is a real lost SYN on loopback, without touching a firewall.
    """

    def __init__(self, host: str, port: int, sock: socket.socket, filler: socket.socket) -> None:
        super().__init__(host, port, sock)
        self._filler = filler
        self._accepting: _AcceptLoop | None = None
        self._timer: threading.Timer | None = None

    def release(self) -> None:
        if self._accepting is None:
            self._accepting = _AcceptLoop(self.sock)

    def release_after(self, seconds: float) -> None:
        """release() from a timer thread, so an async test can start its probe first."""
        self._timer = threading.Timer(seconds, self.release)
        self._timer.daemon = True
        self._timer.start()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._accepting is not None:
            self._accepting.stop()
        self._filler.close()
        self.sock.close()


@contextlib.contextmanager
def blackhole_listener(host: str = "127.0.0.1") -> Iterator[BlackholeListener]:
    """A TCP port that silently drops SYNs until ``release()``."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    filler = socket.socket(_family(host), socket.SOCK_STREAM)
    listener: BlackholeListener | None = None
    try:
        sock.bind((host, 0))
        sock.listen(0)
        port = sock.getsockname()[1]
        filler.settimeout(2)
        filler.connect((host, port))
        # The filler is counted in the accept queue once the server side processed its ACK: wait for that,
        # or the first SYN of a test could still slip in.
        readable, _, _ = select.select([sock], [], [], 2)
        if not readable:
            raise RuntimeError(f"blackhole listener {host}:{port}: filler connection never queued")
        listener = BlackholeListener(host, port, sock, filler)
        yield listener
    finally:
        if listener is not None:
            listener.close()
        else:
            filler.close()
            sock.close()


# --- DNS --------------------------------------------------------------------------------------------------


@dataclass
class DNSServer:
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _bind_udp_and_tcp(host: str) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same free port (DNS is served on both)."""
    for _ in range(50):
        udp = socket.socket(_family(host), socket.SOCK_DGRAM)
        udp.bind((host, 0))
        tcp = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            tcp.bind((host, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        return udp, tcp
    raise RuntimeError(f"no port on {host} free for both UDP and TCP")


@contextlib.contextmanager
def silent_dns(host: str = "127.0.0.1") -> Iterator[DNSServer]:
    """A DNS "server" that never answers: UDP queries are left unread, TCP connects are never accepted.

    TCP handshakes still complete (the kernel does them), so a TCP query times out waiting for the answer,
    which is what a CoreDNS that is reachable but hung looks like.
    """
    udp, tcp = _bind_udp_and_tcp(host)
    try:
        tcp.listen(64)
        yield DNSServer(host, udp.getsockname()[1])
    finally:
        udp.close()
        tcp.close()


@contextlib.contextmanager
def truncating_dns(host: str = "127.0.0.1") -> Iterator[DNSServer]:
    """Answers every UDP query with an empty response with TC (truncated) set: "ask me over TCP"."""
    udp = socket.socket(_family(host), socket.SOCK_DGRAM)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = udp.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
            except dns.exception.DNSException:
                continue
            response = dns.message.make_response(query)
            response.flags |= dns.flags.TC
            udp.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, name="truncating-dns", daemon=True)
    try:
        udp.bind((host, 0))
        udp.settimeout(_POLL)
        thread.start()
        yield DNSServer(host, udp.getsockname()[1])
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=2)
        udp.close()


@dataclass(frozen=True)
class SRVRecord:
    name: str  # e.g. "_http._tcp.web.lab.test"
    target: str
    port: int
    priority: int = 0
    weight: int = 0


@dataclass
class Dnsmasq(DNSServer):
    process: subprocess.Popen[bytes]
    hosts: Mapping[str, str | Sequence[str]]  # the records it serves, as passed in


def dnsmasq_args(
    address: str,
    port: int,
    hosts: Mapping[str, str | Sequence[str]],
    srv: Sequence[SRVRecord],
    local_zones: Sequence[str],
) -> list[str]:
    """The command line: only our records, nothing from the host (no /etc/hosts, resolv.conf, config)."""
    args = [
        DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--log-facility=-",
        "--pid-file=",  # empty: no pid file
        "--user=root",
        f"--port={port}",
        f"--listen-address={address}",
        "--bind-interfaces",
    ]
    # Authoritative for these zones: a name in them that we did not define is NXDOMAIN. Any other name
    # gets REFUSED, since there is no upstream to forward it to.
    args += [f"--local=/{zone}/" for zone in local_zones]
    for name, addresses in hosts.items():
        for ip in [addresses] if isinstance(addresses, str) else addresses:
            args.append(f"--host-record={name},{ip}")
    for record in srv:
        args.append(f"--srv-host={record.name},{record.target},{record.port},{record.priority},{record.weight}")
    return args


@contextlib.contextmanager
def dnsmasq(
    hosts: Mapping[str, str | Sequence[str]],
    srv: Sequence[SRVRecord] = (),
    local_zones: Sequence[str] = ("lab.test",),
    address: str = "127.0.0.1",
    start_timeout: float = 5.0,
) -> Iterator[Dnsmasq]:
    """Run a real dnsmasq on ``address`` (a free port) serving ``hosts`` (name -> IPs) and ``srv``.

    Waits until it answers; stops it (TERM, then KILL) on exit, also when the body raised.
    """
    if not os.access(DNSMASQ, os.X_OK):
        raise FileNotFoundError(f"{DNSMASQ} not found (Debian package dnsmasq-base)")
    for _attempt in range(3):  # the port we found free may be taken before dnsmasq binds it
        udp, tcp = _bind_udp_and_tcp(address)
        port = udp.getsockname()[1]
        udp.close()
        tcp.close()
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                dnsmasq_args(address, port, hosts, srv, local_zones),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            try:
                if _wait_answering(process, address, port, start_timeout):
                    yield Dnsmasq(address, port, process, hosts)
                    return
                log.seek(0)
                output = log.read().decode(errors="replace").strip()
            finally:
                _stop(process)
        if "in use" not in output:
            break
    raise RuntimeError(f"dnsmasq did not start on {address}:{port}: {output or 'no output'}")


def _wait_answering(process: subprocess.Popen[bytes], address: str, port: int, limit: float) -> bool:
    query = dns.message.make_query("ready.invalid.", "A")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        try:
            dns.query.udp(query, address, port=port, timeout=0.1)
            return True
        except (dns.exception.Timeout, OSError):
            continue
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
