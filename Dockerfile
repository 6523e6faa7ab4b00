# syntax=docker/dockerfile:1
# netpath-exporter image: the package in a virtualenv on Debian's slim Python, plus the iptables/nftables tools
# node facts run (iptables-legacy-save, iptables-nft-save). Non-root by default (65534); the chart runs it as
# root only for the optional node-side features (docs/install.md).
#
# The base is named by tag here and pinned by digest at build time: .github/workflows/image.yml resolves the
# tag's digest, passes BASE_IMAGE=python:3.11-slim-bookworm@sha256:… and records it in the image's
# org.opencontainers.image.base.digest label. Python 3.11: the project's minimum and what CI tests.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/netpath
COPY pyproject.toml README.md /src/
COPY exporter /src/exporter
# A regular (non-editable) install compiles the bytecode now: the root filesystem is read-only at run time.
RUN /opt/netpath/bin/pip install /src \
    && /opt/netpath/bin/netpath-exporter --version

FROM ${BASE_IMAGE}
# iptables: iptables-legacy-save and iptables-nft-save (both backends: the split is a cause the localizer
# names); nftables: nft. No iproute2 or ethtool: pyroute2 speaks netlink and ethtool ioctls itself.
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables nftables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/netpath /opt/netpath
ENV PATH=/opt/netpath/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65534:65534
EXPOSE 10047
ENTRYPOINT ["netpath-exporter"]
CMD ["run", "--config", "/etc/netpath/config.yaml"]
