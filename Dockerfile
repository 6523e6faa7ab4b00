# syntax=docker/dockerfile:1
# netpath-exporter image: the package in a virtualenv on Debian bookworm's own python3 (3.11: the project's
# minimum and what CI tests), plus the iptables/nftables tools node facts run (iptables-legacy-save,
# iptables-nft-save, nft). Non-root by default (65534); the chart runs it as root only for the optional
# node-side features (docs/install.md).
#
# Two builds, one file:
# - release (.github/workflows/image.yml): debian:bookworm-slim from the registry, pinned by digest
#   (BASE_IMAGE=debian:bookworm-slim@sha256:…); the apt-get steps below install the packages, pip installs
#   from PyPI.
# - local (`make image`, scripts/build-image.sh): no registry is reachable, so debian:bookworm-slim is an
#   mmdebstrap bookworm minbase that already holds those packages (the apt-get steps find nothing to do), and
#   the Python dependencies come as wheels built beforehand (WHEELS, PIP_NO_INDEX=1): no network at all.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS base
# iptables: iptables-legacy-save and iptables-nft-save (both backends: the split is a cause the localizer
# names); nftables: nft. No iproute2 or ethtool: pyroute2 speaks netlink and ethtool ioctls itself.
COPY deploy/apt-install-missing /usr/local/sbin/
RUN apt-install-missing python3 iptables nftables

FROM base AS build
RUN apt-install-missing python3-venv
# Wheels built beforehand (`make image`); the release build passes an empty directory and uses PyPI.
ARG WHEELS=.cache/image/wheels
ARG PIP_NO_INDEX=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_FIND_LINKS=/wheels PIP_NO_INDEX=${PIP_NO_INDEX}
COPY ${WHEELS} /wheels
RUN python3 -m venv /opt/netpath
COPY pyproject.toml README.md /src/
COPY exporter /src/exporter
# A regular (non-editable) install compiles the bytecode now: the root filesystem is read-only at run time.
# pip and setuptools are not needed at run time.
RUN /opt/netpath/bin/pip install /src \
    && /opt/netpath/bin/pip uninstall --yes --quiet pip setuptools \
    && /opt/netpath/bin/netpath-exporter --version

FROM base
COPY --from=build /opt/netpath /opt/netpath
ENV PATH=/opt/netpath/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65534:65534
EXPOSE 10047
# Exec form: the exporter is PID 1 and gets the runtime's SIGTERM itself (it handles it; exporter/cli.py).
ENTRYPOINT ["netpath-exporter"]
CMD ["run", "--config", "/etc/netpath/config.yaml"]
