#!/usr/bin/env bash
# Builds the compose sandbox's image (misim-sandbox:local) without any image
# registry: release binaries from cargo, the shared libraries `ldd` names for
# them, staged into deploy/rootfs/, then deploy/Dockerfile (FROM scratch +
# COPY). Nothing is pulled. Usage: scripts/build-images.sh [--no-cargo]
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${MISIM_IMAGE:-misim-sandbox:local}
BINS=(misim misim-arm misim-entra misim-imds misim-keyvault misim-dns)
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
