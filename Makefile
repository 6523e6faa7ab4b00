# Two entry points (see README): `make demo` and `make test`. Each installs what it needs: Debian packages
# with apt-get (only when a tool is missing, so reruns are fast) and Python packages into .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# tool on PATH -> Debian package that provides it
DEB_TOOLS := ip:iproute2 iptables:iptables nft:nftables dnsmasq:dnsmasq-base nginx:nginx \
             prometheus:prometheus promtool:prometheus amtool:prometheus-alertmanager \
             prometheus-alertmanager:prometheus-alertmanager \
             prometheus-blackbox-exporter:prometheus-blackbox-exporter ethtool:ethtool conntrack:conntrack \
             sysctl:procps openssl:openssl podman:podman buildah:buildah runc:runc mmdebstrap:mmdebstrap

.PHONY: help deps venv image lint typecheck test test-fast test-lab test-slow test-layouts demo bench clean dashboards dashboards-preview chart-sync

help:
	@echo "make demo   - run the network lab, exporters, Prometheus and a diagnosis report"
	@echo "make test   - lint, type-check and run every test (lab tests included)"
	@echo "make image  - build the container image with podman, no registry needed (docs/install.md)"

deps:
	@missing=""; for pair in $(DEB_TOOLS); do tool=$${pair%%:*}; pkg=$${pair#*:}; \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$tool >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  pkgs=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	  echo "installing Debian packages:$$pkgs"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(STAMP)

# The container image from the Dockerfile, with podman and without a registry: a local debian:bookworm-slim
# (mmdebstrap) and prebuilt wheels, cached under .cache/image; reruns take seconds (scripts/build-image.sh).
image: deps
	PATH="$$PATH:/usr/sbin:/sbin" PYTHON=$(PYTHON) scripts/build-image.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# Everything, lab included: the lab needs root and network namespaces, which CI has.
test: deps venv lint typecheck
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/pytest -q -p no:cacheprovider

test-fast: venv
	$(BIN)/pytest -q -m "not lab"

test-lab: deps venv
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/pytest -q -m lab

# The tests too slow for CI's 30-minute budget (real alert `for:` durations at the chart's cadence: ~3 minutes).
test-slow: deps venv
	NETPATH_SLOW_TESTS=1 PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/pytest -q -p no:cacheprovider -m lab tests/lab/test_intermittent_live.py

# The diagnosis matrix on layouts drawn from seeds (lab/topology.py seeded_layout), one lab each, ~7 min a layout.
LAYOUTS ?= seed:12 seed:0
test-layouts: deps venv image
	NETPATH_LAYOUTS="$(LAYOUTS)" PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/pytest -q -p no:cacheprovider -m lab tests/lab/test_diagnosis.py

# The healthy lab watched for 10 minutes for any verdict, on the reported layout (one ingress controller): ~12 min.
test-soak: deps venv image
	NETPATH_LAYOUTS=one-node NETPATH_HEALTHY_SOAK=600 PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/pytest -q -p no:cacheprovider --timeout 900 -m lab tests/lab/test_diagnosis.py -k healthy

demo: deps venv
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/python -m lab.demo $(DEMO_ARGS)

bench: deps venv
	$(BIN)/python bench/probe_cost.py

# Regenerate grafana/dashboards/*.json from grafana/generate.py (tests/test_dashboards.py checks they match).
dashboards: venv
	$(BIN)/python -m grafana.generate

# Lab up, Prometheus, a short healthy run, clusterip-nat on node2, one PNG per dashboard under out/dashboards/,
# heal, lab down (always, also on failure). Grafana itself cannot be installed here; see docs/dashboards.md.
dashboards-preview: deps venv
	PATH="$$PATH:/usr/sbin:/sbin" $(BIN)/python -m grafana.preview

# Helm reads only files inside the chart: copy alerts/*.rules.yml and grafana's dashboards into it
# (tests/test_chart.py fails while the copies differ).
chart-sync:
	$(PYTHON) scripts/sync-chart.py

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache out .cache
