#!/usr/bin/env bash
# `make image`: build the Dockerfile with podman on a machine that reaches no container registry.
#
#   1. base   debian:bookworm-slim is produced locally: mmdebstrap builds a bookworm minbase root filesystem
#             from the machine's Debian apt sources (with the packages the Dockerfile would apt-get install,
#             so the build needs no mirror), `podman import` tags it docker.io/library/debian:bookworm-slim.
#   2. wheels the Python dependencies, built with `pip wheel` into .cache/image/wheels (PyPI is reachable,
#             the build is not meant to need it); the Dockerfile installs from there with PIP_NO_INDEX=1.
#   3. image  `podman build` of the repository's Dockerfile, tagged as the chart names it
#             (image.repository:appVersion), so a saved image imported on a node matches the DaemonSet.
#
# Each step is skipped when its inputs did not change (keys under .cache/image/), and podman's layer cache
# keeps an unchanged build to seconds. Nothing system-wide is configured: CONTAINERS_CONF points at
# deploy/containers.conf.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cache=$repo/.cache/image  # inside the build context: the Dockerfile COPYs the wheels from here
python=${PYTHON:-python3}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/deploy/containers.conf}

base_ref=docker.io/library/debian:bookworm-slim
# What the Dockerfile installs with apt-get when its base lacks it: python3, iptables, nftables (run time)
# and python3-venv (build stage). The local base carries all four; the runtime layer then also holds
# python3-venv's two bundled wheels (about 3 MB), which the registry-based build does not.
base_packages=python3,python3-venv,iptables,nftables
# As debian:bookworm-slim: merged /usr, no manuals, docs (copyright files kept) or translations.
mmdebstrap_args=(
  --variant=minbase --include="$base_packages"
  --aptopt='APT::Install-Recommends "false"'
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  bookworm
)

chart_field() {  # a top-level scalar of Chart.yaml / the image block of values.yaml, without a YAML parser
  sed -n "s/^$1:[[:space:]]*\"\{0,1\}\([^\"[:space:]]*\)\"\{0,1\}.*/\1/p" "$2" | head -1
}
app_version=$(chart_field appVersion charts/netpath-exporter/Chart.yaml)
repository=$(sed -n '/^image:/,/^[^ ]/s/^  repository:[[:space:]]*\([^[:space:]#]*\).*/\1/p' charts/netpath-exporter/values.yaml)
image=${IMAGE:-$repository:$app_version}

key_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }
mkdir -p "$cache"

# 1. base
base_key=$(key_of "${mmdebstrap_args[@]}")
if [[ ! -s $cache/base.tar || $(cat "$cache/base.key" 2>/dev/null) != "$base_key" ]]; then
  echo "image: building the bookworm base with mmdebstrap (about a minute)"
  rm -f "$cache/base.key"
  mmdebstrap --quiet "${mmdebstrap_args[@]}" "$cache/base.tmp.tar" >"$cache/mmdebstrap.log" 2>&1 ||
    { tail -20 "$cache/mmdebstrap.log"; exit 1; }
  mv "$cache/base.tmp.tar" "$cache/base.tar"
  echo "$base_key" >"$cache/base.key"
  fresh_base=1
fi
# A new base takes over the tag (the old image is left untagged; `podman image prune` removes it).
if [[ -n ${fresh_base:-} ]] || ! podman image exists "$base_ref"; then
  podman import --quiet --change 'CMD ["bash"]' "$cache/base.tar" "$base_ref" >/dev/null
fi

# 2. wheels
wheels_key=$(key_of "$(sha256sum pyproject.toml)" "$("$python" -c 'import sys; print(sys.version_info[:2])')")
if [[ $(cat "$cache/wheels.key" 2>/dev/null) != "$wheels_key" ]]; then
  echo "image: building wheels for the Python dependencies"
  "$python" -m pip --version >/dev/null 2>&1 ||
    { echo "image: $python has no pip (Debian: apt-get install python3-pip)" >&2; exit 1; }
  rm -rf "$cache/wheels" "$cache/wheels.key"
  # The project's runtime dependencies and the build backend (pyproject [build-system]); the project itself
  # is built inside the image from its source.
  "$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$cache/wheels" . 'setuptools>=68'
  rm -f "$cache"/wheels/netpath_exporter-*.whl
  rm -rf build ./*.egg-info
  echo "$wheels_key" >"$cache/wheels.key"
fi

# 3. image
echo "image: podman build -> $image"
# --network=none: the build needs no network (base and wheels are local), and podman's default network would
# create a bridge, an address and firewall rules in the machine's root namespace, which the project never touches.
podman build --quiet --pull=never --layers --network=none \
  --build-arg PIP_NO_INDEX=1 --build-arg WHEELS=.cache/image/wheels \
  --tag "$image" --file Dockerfile . >/dev/null
podman image ls --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' "$image"
