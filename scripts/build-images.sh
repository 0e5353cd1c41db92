#!/usr/bin/env bash
# Builds the compose sandbox's images without any image registry:
# - misim-sandbox:local (the services): release binaries from cargo, the shared
#   libraries `ldd` names for them, staged into deploy/rootfs/, then
#   deploy/Dockerfile (FROM scratch + COPY).
# - misim-vm:local (the VMs): a Debian bookworm rootfs made by mmdebstrap from
#   Debian's packages (installed with apt-get when missing), `docker import`ed
#   as misim-vm-base:bookworm, the Azure SDK's and CLI's wheels downloaded with pip into
#   deploy/vm/wheels/, then deploy/Dockerfile.vm on that base.
# Nothing is pulled from an image registry. The rootfs tarball is cached in
# target/misim-vm/ (keyed by its package list), the wheels in deploy/vm/wheels/.
# Usage: scripts/build-images.sh [--no-cargo]
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${MISIM_IMAGE:-misim-sandbox:local}
BINS=(misim misim-arm misim-entra misim-imds misim-keyvault misim-dns misim-oidc)
ROOT=deploy/rootfs

if [[ "${1:-}" != "--no-cargo" ]]; then
  echo "== cargo build --release (${BINS[*]})"
  cargo build --release --locked $(printf -- '--bin %s ' "${BINS[@]}")
fi

echo "== staging $ROOT"
rm -rf "$ROOT"
mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc" "$ROOT/tmp" "$ROOT/data"
chmod 1777 "$ROOT/tmp"
for b in "${BINS[@]}"; do
  install -m 0755 "target/release/$b" "$ROOT/usr/local/bin/$b"
done
# Every shared object the binaries load, at the path the loader expects
# (cp -L: the file itself, not the symlink).
libs=$(for b in "${BINS[@]}"; do ldd "target/release/$b"; done \
  | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
for lib in $libs; do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done
# glibc's resolver: /etc/hosts then DNS (compose's embedded DNS).
printf 'hosts: files dns\n' > "$ROOT/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/usr/local/bin/misim\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\n' > "$ROOT/etc/group"
echo "   $(echo "$libs" | wc -w) libraries: $(echo $libs | tr '\n' ' ')"

echo "== docker build -t $IMAGE deploy (FROM scratch, nothing pulled)"
docker build --pull=false -t "$IMAGE" deploy
docker image inspect "$IMAGE" --format '   {{.Id}} {{.Size}} bytes'

# ---- the VM image -----------------------------------------------------------
VM_IMAGE=${MISIM_VM_IMAGE:-misim-vm:local}
VM_BASE=misim-vm-base:bookworm
MIRROR=${MISIM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What debian:bookworm-slim + Dockerfile.vm's apt-get line would give, no docs.
MM_ARGS=(--variant=minbase --components=main
  --include=ca-certificates,curl,python3,python3-venv,dnsutils
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  bookworm)
KEY=$(printf '%s\n' "${MM_ARGS[@]}" | sha256sum | cut -c1-16)
CACHE=target/misim-vm/bookworm-$KEY.tar
t0=$(date +%s)
if [ "$(docker image inspect "$VM_BASE" --format '{{index .Config.Labels "misim.rootfs"}}' 2>/dev/null)" != "$KEY" ]; then
  if [ ! -s "$CACHE" ]; then
    if ! command -v mmdebstrap >/dev/null; then
      echo "== apt-get install mmdebstrap"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
    fi
    echo "== mmdebstrap bookworm -> $CACHE (from $MIRROR)"
    mkdir -p "$(dirname "$CACHE")"
    mmdebstrap --quiet --format=tar "${MM_ARGS[@]}" "$CACHE.part" "$MIRROR"
    mv "$CACHE.part" "$CACHE"
  fi
  echo "== docker import $CACHE as $VM_BASE"
  docker import --change "LABEL misim.rootfs=$KEY" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/sh"]' "$CACHE" "$VM_BASE" >/dev/null
fi

WHEELS=deploy/vm/wheels
# The SDK's and the Azure CLI's (two venvs in the image) wheels, side by side.
REQS=(deploy/vm/requirements.txt deploy/vm/requirements-az.txt)
if ! cat "${REQS[@]}" | cmp -s - "$WHEELS/.requirements" 2>/dev/null; then
  echo "== pip download (the VM's Python: CPython 3.11, glibc 2.36) -> $WHEELS"
  find "$WHEELS" -name '*.whl' -delete
  plat=(--platform manylinux2014_x86_64 --platform linux_x86_64)
  for v in 5 12 17 24 28 31 34 35 36; do plat+=(--platform "manylinux_2_${v}_x86_64"); done
  for req in "${REQS[@]}"; do  # resolved apart: each is its own venv
    python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
      --python-version 3.11 --implementation cp "${plat[@]}" -d "$WHEELS" -r "$req"
  done
  cat "${REQS[@]}" > "$WHEELS/.requirements"
fi

echo "== docker build -t $VM_IMAGE -f deploy/Dockerfile.vm (FROM $VM_BASE, --no-index wheels)"
docker build --pull=false -q --build-arg "VM_BASE=$VM_BASE" -t "$VM_IMAGE" -f deploy/Dockerfile.vm deploy >/dev/null
docker image inspect "$VM_IMAGE" --format "   {{.Id}} {{.Size}} bytes ($(( $(date +%s) - t0 )) s)"
