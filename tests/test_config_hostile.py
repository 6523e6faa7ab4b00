"""Hostile config files (issue 15, rows 7-9): every one ends in exit 2 naming the field or the file position,
in bounded memory and time, never a traceback.

The table runs the real CLI (`python -m exporter check-config`) in a subprocess under RLIMIT_AS and RLIMIT_CPU:
a value that expands to gigabytes, or a loop, hits the limit and fails the test instead of passing slowly; the
subprocess timeout only guards against a read that blocks (a FIFO), which uses no CPU. The property tests feed
generated documents to the same entry point in-process (fast, so hypothesis can try hundreds) and a few through
the subprocess.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_config import GOOD as GOOD_BASE

from exporter.cli import main
from exporter.config import MAX_DEPTH, MAX_FILE_BYTES, MAX_VALUES, ConfigError, parse_config

REPO = Path(__file__).resolve().parent.parent

# Address space for the whole interpreter: a good config needs < 128 MiB here; the issue saw 2 GB.
MEMORY_LIMIT = 256 << 20
CPU_SECONDS = 10  # CPU time, far above what check-config needs (about 0.5 s, mostly imports)
HANG_GUARD = 60  # wall clock: only a blocking read could reach it
MAX_MESSAGE = 700  # characters of an error line: the field, the problem, a short value

# test_config's good file, with the sections the hostile values go into
GOOD = (
    GOOD_BASE
    + 'discovery: {namespace: netpath, cluster_domain: cluster.local, api_url: "http://127.0.0.1:8001"}\n'
    + "node_facts: {netns: nplab-node1}\n"
)


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def check_config_cli(path: Path | str) -> subprocess.CompletedProcess[str]:
    """The real `netpath-exporter check-config PATH`, memory- and CPU-limited."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=HANG_GUARD,
        preexec_fn=_limits,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


# --- the table: every example of rows 7-9 -----------------------------------------------------------------


def _target(**fields: Any) -> str:
    """GOOD with one more target (flow style, as given)."""
    body = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return GOOD.replace("targets:\n", f"targets:\n  - {{{body}}}\n", 1)


def _tcp(**fields: Any) -> str:
    return _target(**{"name": "x", "kind": "tcp", "path": "pod_ip", "address": '"10.0.0.1:80"', **fields})


def _http(**fields: Any) -> str:
    return _target(**{"name": "x", "kind": "http", "path": "ingress", "url": "http://10.0.0.1/", **fields})


def _dns(**fields: Any) -> str:
    return _target(**{"name": "x", "kind": "dns", "path": "dns", "address": "10.43.0.10", "query": "a.b", **fields})


def _bomb(levels: int = 9) -> str:
    """A billion-laughs document: `l9` stands for 10**9 scalars, written in ~300 bytes."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def _discovery(**fields: Any) -> str:
    section = {"namespace": "netpath", "cluster_domain": "cluster.local", "api_url": '"http://127.0.0.1:8001"'}
    body = ", ".join(f"{k}: {v}" for k, v in {**section, **fields}.items())
    return "\n".join(f"discovery: {{{body}}}" if x.startswith("discovery:") else x for x in GOOD.split("\n"))


FileMaker = Callable[[Path], Path]


def text(content: str) -> FileMaker:
    def make(tmp: Path) -> Path:
        (tmp / "config.yaml").write_text(content, encoding="utf-8")
        return tmp / "config.yaml"

    return make


def raw(content: bytes) -> FileMaker:
    def make(tmp: Path) -> Path:
        (tmp / "config.yaml").write_bytes(content)
        return tmp / "config.yaml"

    return make


def fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "config.yaml")  # no writer: a plain open() would block forever
    return tmp / "config.yaml"


def path(name: str) -> FileMaker:
    return lambda tmp: Path(name)


# (id, file, what the error line must name: the field or "config.yaml:LINE", and words of the problem)
HOSTILE: list[tuple[str, FileMaker, str, str]] = [
    # row 7
    ("binary", raw(random.Random(15).randbytes(4096)), "config.yaml:", "not UTF-8"),
    ("binary-nul", raw(b"\x00" * 4096), "config.yaml:1:1", "U+0000"),
    ("utf-16-bom", raw(GOOD.encode("utf-16")), "config.yaml:1:1", "UTF-16"),
    ("utf-16-le-no-bom", raw(GOOD.encode("utf-16-le")), "config.yaml:2:1", "U+0000"),
    ("latin-1", raw("source_node: nœud-café\n".encode("latin-1", errors="replace")), "config.yaml:1:", "not UTF-8"),
    ("kind-list", text(_tcp(kind="[tcp]")), "targets[0].kind", "expected one of"),
    ("nested-flow-50000", text("[" * 50_000), "config.yaml:1:", "nesting depth"),
    ("nested-block-50000", text("- " * 50_000 + "x\n"), "config.yaml:1:", f"deeper than {MAX_DEPTH}"),
    ("nested-mapping-30000", text("{a: " * 30_000), "config.yaml:1:", "nest"),
    ("dev-zero", path("/dev/zero"), "/dev/zero", "not a regular file"),
    ("fifo", fifo, "config.yaml", "not a regular file (a FIFO)"),
    ("directory", path("/"), "/", "not a regular file (a directory)"),
    ("too-large", text("#" * (MAX_FILE_BYTES + 1)), "config.yaml", f"at most {MAX_FILE_BYTES}"),
    ("bad-date", text("source_node: 2024-13-45\n"), "config.yaml:1:14", "month must be in 1..12"),
    ("huge-integer", text(f"defaults: {{interval: {'9' * 6000}}}\n"), "config.yaml:1:22", "cannot read this value"),
    ("two-documents", text(GOOD + "---\n" + GOOD), "config.yaml:", "single document"),
    ("python-tag", text("source_node: !!python/object/apply:os.system [true]\n"), "config.yaml:1:", "constructor"),
    # row 8: an alias bomb anywhere, refused while composing, before any value is built or shown
    ("bomb-source-node", text(_bomb() + "source_node: *l9\n"), "config.yaml:", f"more than {MAX_VALUES} values"),
    ("bomb-address", text(_bomb() + GOOD.replace('"10.42.1.5:8080"', "*l9")), "config.yaml:", "values"),
    ("bomb-dns-expect", text(_bomb() + GOOD.replace("[10.43.0.1]", "*l9")), "config.yaml:", "values"),
    (
        "bomb-merge-keys",
        text(
            "a: &a {x: 1, y: 2}\n"
            + "".join(
                f"b{i}: &b{i} {{<<: [{', '.join(['*a' if i == 0 else f'*b{i - 1}'] * 4)}], k{i}: 1}}\n"
                for i in range(12)
            )
        ),
        "config.yaml:",
        "values",
    ),
    ("alias-cycle", text("source_node: &a [*a]\n"), "config.yaml:1:", "cycle"),
    # row 9: values that were accepted
    ("interval-nan", text(_tcp(interval=".nan")), "targets[0].interval", "NaN"),
    ("interval-inf", text(_tcp(interval=".inf")), "targets[0].interval", "to 1h"),
    ("timeout-minus-inf", text(_tcp(timeout="-.inf")), "targets[0].timeout", "must be positive"),
    ("defaults-nan", text(GOOD.replace("interval: 5s", "interval: .NaN")), "defaults.interval", "NaN"),
    ("interval-years", text(_tcp(interval="87600h")), "targets[0].interval", "to 1h"),
    ("interval-1e9-seconds", text(_tcp(interval="1000000000")), "targets[0].interval", "to 1h"),
    ("interval-1us", text(_tcp(interval="0.000001", timeout="0.000001")), "targets[0].interval", "from 100ms"),
    ("timeout-1us", text(_tcp(timeout="0.000001")), "targets[0].timeout", "from 10ms"),
    ("node-facts-1us", text(GOOD.replace("{netns:", "{interval: 0.000001, netns:")), "node_facts.interval", "1s"),
    ("bucket-nan", text(GOOD + "latency_buckets: [0.1, .nan]\n"), "latency_buckets[1]", "NaN"),
    ("jitter-nan", text(GOOD + "scheduler: {jitter: .nan}\n"), "scheduler.jitter", "0 to 0.5"),
    ("timeout-over-interval", text(_tcp(interval="1s", timeout="2s")), "targets[0].timeout", "longer than"),
    (
        "defaults-timeout-over-interval",
        text(GOOD.replace("timeout: 1500ms", "timeout: 9s")),
        "defaults.timeout",
        "longer than",
    ),
    (
        "discovery-timeout-over-interval",
        text(_discovery(interval="1s", timeout="5s")),
        "discovery.timeout",
        "longer than",
    ),
    ("watch-timeout-inf", text(_discovery(watch_timeout=".inf")), "discovery.watch_timeout", "to 1h"),
    ("url-hostname", text(_http(url="http://example.com/")), "targets[0].url", "not an IP address"),
    ("url-localhost", text(_http(url="http://localhost:8080/")), "targets[0].url", "not an IP address"),
    ("url-port-0", text(_http(url="http://10.0.0.1:0/")), "targets[0].url", "port 0"),
    ("url-port-99999", text(_http(url="http://10.0.0.1:99999/")), "targets[0].url", "1 to 65535"),
    ("url-unbalanced-bracket", text(_http(url='"http://[10.0.0.1/"')), "targets[0].url", "expected http"),
    ("url-userinfo", text(_http(url='"http://user:pw@10.0.0.1/"')), "targets[0].url", "user info"),
    ("url-crlf", text(_http(url='"http://10.0.0.1/\\r\\nX: y"')), "targets[0].url", "control character"),
    ("address-hostname", text(_tcp(address='"localhost:80"')), "targets[0].address", "not an IP address"),
    ("address-port-0", text(_tcp(address='"10.0.0.1:0"')), "targets[0].address", "outside 1-65535"),
    ("dns-address-port-0", text(_dns(address='"10.43.0.10:0"')), "targets[0].address", "outside 1-65535"),
    ("api-url-port-0", text(_discovery(api_url='"http://127.0.0.1:0"')), "discovery.api_url", "port 1-65535"),
    ("target-node-list", text(_tcp(target_node="[node-b]")), "targets[0].target_node", "non-empty string"),
    ("service-list", text(_tcp(service="[default/web]")), "targets[0].service", "non-empty string"),
    ("service-not-namespaced", text(_tcp(service="web")), "targets[0].service", "namespace/name"),
    (
        "netns-list",
        text(GOOD.replace("netns: nplab-node1", "netns: [nplab-node1]")),
        "node_facts.netns",
        "non-empty string",
    ),
    (
        "perspective-netns-list",
        text(GOOD + "node_perspective: {netns: [a]}\n"),
        "node_perspective.netns",
        "non-empty string",
    ),
    ("netns-option", text(GOOD.replace("netns: nplab-node1", "netns: --help")), "node_facts.netns", "namespace name"),
    ("host-crlf", text(_http(host='"a.example\\r\\nX-Injected: 1"')), "targets[0].host", "control character"),
    ("host-lf", text(_http(host='"a.example\\nb"')), "targets[0].host", "control character"),
    ("host-space", text(_http(host='"a.example b"')), "targets[0].host", "host name or IP"),
    ("query-empty-label", text(_dns(query='"a..b"')), "targets[0].query", "DNS name"),
    ("query-dots", text(_dns(query='"..."')), "targets[0].query", "DNS name"),
    ("query-hyphen", text(_dns(query="-a.example")), "targets[0].query", "DNS name"),
    ("query-long-label", text(_dns(query="a" * 64 + ".example")), "targets[0].query", "DNS name"),
    ("query-too-long", text(_dns(query=".".join(["a" * 63] * 3 + ["a" * 62]))), "targets[0].query", "DNS name"),
    ("query-far-too-long", text(_dns(query=".".join(["a" * 63] * 5))), "targets[0].query", "longer than"),
    ("query-space", text(_dns(query='"exa mple.com"')), "targets[0].query", "DNS name"),
    ("discovery-name-dots", text(_discovery(dns="{names: ['...']}")), "discovery.dns.names[0]", "DNS name"),
    ("cluster-domain-dots", text(_discovery(cluster_domain="'...'")), "discovery.cluster_domain", "DNS name"),
    (
        "cluster-domain-space",
        text(_discovery(cluster_domain="'cluster local'")),
        "discovery.cluster_domain",
        "DNS name",
    ),
    ("duplicate-top-key", text(GOOD + "source_node: node-b\n"), "config.yaml:", "duplicate key 'source_node'"),
    (
        "duplicate-target-key",
        text(_tcp(timeout="1s", interval="2s").replace("interval: 2s", "interval: 2s, timeout: 2s")),
        "config.yaml:",
        "duplicate key 'timeout'",
    ),
    ("name-too-long", text(_tcp(name="n" * 300)), "targets[0].name", "longer than"),
    ("name-newline", text(_tcp(name='"a\\nb"')), "targets[0].name", "control character"),
    (
        "source-node-uppercase",
        text(GOOD.replace("source_node: node-a", "source_node: Node_A")),
        "source_node",
        "node name",
    ),
    (
        "source-node-long",
        text(GOOD.replace("source_node: node-a", "source_node: " + "a" * 300)),
        "source_node",
        "longer than",
    ),
    ("non-string-key", text(GOOD + "? [a, b]\n: 1\n"), "config.yaml:", "unhashable"),
    ("int-key", text(GOOD + "7: seven\n"), "(top level)", "keys are names"),
]


@pytest.mark.parametrize(("make", "where", "problem"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_config_exits_2_naming_the_field(tmp_path: Path, make: FileMaker, where: str, problem: str) -> None:
    result = check_config_cli(make(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:] or result.stdout[-2000:]
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line.startswith("netpath-exporter: config error: "), line[:500]
    assert where in line and problem in line, line
    assert len(line) <= MAX_MESSAGE and "\n" not in line


def test_the_good_file_passes_under_the_same_limits(tmp_path: Path) -> None:
    result = check_config_cli(text(GOOD)(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "5 targets" in result.stdout


# --- properties: generated documents, in-process ------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile") / "config.yaml"


@contextlib.contextmanager
def _quiet() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def check_config_in_process(file: Path, data: bytes) -> None:
    """`check-config` through cli.main: exit 0 or 2, an exception is a failure (it would be a traceback)."""
    file.write_bytes(data)
    with _quiet() as (out, err):
        code = main(["check-config", str(file)])
    assert code in (0, 2)
    if code == 2:
        line = err.getvalue().strip()
        assert line.startswith("netpath-exporter: config error: ") and "\n" not in line
        assert len(line) <= MAX_MESSAGE
    else:
        assert ": ok, " in out.getvalue()


PROPERTY = settings(
    max_examples=250,
    deadline=None,  # no timed asserts (docs: performance only in bench/); the subprocess cases have RLIMIT_CPU
    database=None,  # no example database; hypothesis keeps only its caches in .hypothesis/ (self-ignored)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

YAML_ALPHABET = st.sampled_from(list("[]{}:,-?&*!|>'\"#%@`. \n\t\\") + list("ax09_/=") + ["<<", "- ", ": ", "\r\n"])
yamlish = st.lists(st.one_of(YAML_ALPHABET, st.text(max_size=4)), max_size=120).map("".join)


@PROPERTY
@given(doc=yamlish)
def test_yaml_ish_text_never_crashes(scratch: Path, doc: str) -> None:
    check_config_in_process(scratch, doc.encode("utf-8", errors="surrogatepass"))


@PROPERTY
@given(data=st.binary(max_size=512))
def test_random_bytes_never_crash(scratch: Path, data: bytes) -> None:
    check_config_in_process(scratch, data)


@PROPERTY
@given(edits=st.lists(st.tuples(st.integers(0, len(GOOD)), st.integers(0, 3), yamlish), min_size=1, max_size=6))
def test_edited_good_text_never_crashes(scratch: Path, edits: list[tuple[int, int, str]]) -> None:
    doc = GOOD
    for at, cut, insert in edits:  # delete `cut` characters at `at`, insert a fragment
        doc = doc[:at] + insert + doc[at + cut :]
    check_config_in_process(scratch, doc.encode("utf-8", errors="surrogatepass"))


# Any YAML value, hostile leaves included: what a wrong ConfigMap could hold at any place.
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),  # nan, ±inf, subnormals
    st.text(max_size=20),
    st.sampled_from(
        [
            "10.0.0.1:80",
            "10.43.0.10",
            "http://10.0.0.1/",
            "5s",
            "500ms",
            "0s",
            "1h",
            "tcp",
            "dns",
            "pod_ip",
            "all",
            "a..b",
            "node-a",
            "default/web",
            "...",
            "\r\n",
            "-1",
            "udp",
            "",
        ]
    ),
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a decoded document: mapping keys and list indexes."""
    found = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _paths(v, (*prefix, i))
    return found


GOOD_DOC = yaml.safe_load(GOOD)
GOOD_PATHS = _paths(GOOD_DOC)[1:]


@PROPERTY
@given(changes=st.lists(st.tuples(st.sampled_from(GOOD_PATHS), values), min_size=1, max_size=3), data=st.data())
def test_a_good_config_with_any_value_anywhere_never_crashes(
    scratch: Path, changes: list[tuple[tuple[Any, ...], Any]], data: st.DataObject
) -> None:
    doc = yaml.safe_load(GOOD)
    for where, value in changes:
        parent = doc
        for step in where[:-1]:
            if not isinstance(parent, dict | list):
                break
            with contextlib.suppress(KeyError, IndexError, TypeError):
                parent = parent[step]
        if isinstance(parent, dict):
            parent[data.draw(st.sampled_from([where[-1], "extra"]))] = value
        elif isinstance(parent, list) and isinstance(where[-1], int) and where[-1] < len(parent):
            parent[where[-1]] = value
    try:
        dumped = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    check_config_in_process(scratch, dumped.encode("utf-8", errors="surrogatepass"))
    # the same document, given to the validator as objects (how tests and the lab call it)
    with contextlib.suppress(ConfigError):
        parse_config(yaml.safe_load(dumped))


@settings(max_examples=4, deadline=None, database=None)
@given(doc=st.one_of(yamlish, st.binary(max_size=256).map(lambda b: b.decode("latin-1"))))
def test_generated_documents_through_the_real_cli(tmp_path_factory: pytest.TempPathFactory, doc: str) -> None:
    file = tmp_path_factory.mktemp("cli") / "config.yaml"
    file.write_bytes(doc.encode("utf-8", errors="surrogatepass"))
    result = check_config_cli(file)
    assert result.returncode in (0, 2), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
