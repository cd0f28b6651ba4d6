#!/usr/bin/env bash
# Builds the container image localhost/mountsup:VERSION (and :latest) from the Containerfile,
# with podman, on this machine alone (as root):
# 1. the base, localhost/mountsup-base:bookworm, once: a minimal Debian 12 made by debootstrap
#    (with fuse3) and imported into podman; no image registry is needed;
# 2. mountsupd, mountctl and mountsup-mirror built in release mode with the Swift standard
#    library linked statically (they need only glibc, libfuse3 and libsystemd of the base), in a
#    build folder of their own (.build-image), so that it never waits for, nor holds up, a
#    `swift build` or `swift test` in .build (the image test runs inside `swift test`);
# 3. podman build of the Containerfile with those binaries.
# The Debian mirror is the first one in this machine's apt sources unless MOUNTSUP_DEBIAN_MIRROR
# names one. podman runs with deploy/container/containers.conf (see that file for why).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

[ "$(id -u)" = 0 ] || { echo "build-image.sh: run as root (debootstrap and podman need it)" >&2; exit 1; }
for tool in podman debootstrap swift; do
  command -v "$tool" >/dev/null || {
    echo "build-image.sh: $tool is missing: run scripts/setup.sh" >&2
    exit 1
  }
done
export CONTAINERS_CONF="$root/deploy/container/containers.conf"

version=$(sed -n 's/.*static let version = "\(.*\)".*/\1/p' Sources/MountControl/Version.swift)
base=localhost/mountsup-base:bookworm
image=localhost/mountsup
work="$root/.build-image/container"
mkdir -p "$work"

if ! podman image exists "$base"; then
  mirror=${MOUNTSUP_DEBIAN_MIRROR:-}
  if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 || true)
  fi
  if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  fi
  [ -n "$mirror" ] || { echo "build-image.sh: no Debian mirror in the apt sources; set MOUNTSUP_DEBIAN_MIRROR" >&2; exit 1; }
  rootfs="$work/rootfs"
  rm -rf "$rootfs"
  echo "build-image.sh: making the base $base with debootstrap (a few minutes, once)"
  debootstrap --variant=minbase --include=fuse3,libfuse3-3 bookworm "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    echo "build-image.sh: debootstrap failed; see $work/debootstrap.log" >&2
    tail -5 "$work/debootstrap.log" >&2
    exit 1
  }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --quiet - "$base" >/dev/null
  rm -rf "$rootfs"
fi

echo "build-image.sh: building the binaries (release, static Swift standard library)"
products=(mountsupd mountctl mountsup-mirror)
build=(swift build -c release --static-swift-stdlib --scratch-path "$root/.build-image")
for product in "${products[@]}"; do
  "${build[@]}" --product "$product" >"$work/swift-build-$product.log" 2>&1 || {
    echo "build-image.sh: swift build of $product failed; see $work/swift-build-$product.log" >&2
    tail -20 "$work/swift-build-$product.log" >&2
    exit 1
  }
done
bin=$("${build[@]}" --show-bin-path)

context="$work/context"
rm -rf "$context"
mkdir -p "$context"
for product in "${products[@]}"; do
  cp "$bin/$product" "$context/"
  strip "$context/$product"
done
cp deploy/container/mounts.toml "$context/"
cp -r deploy/container/demo "$context/demo"
podman build --quiet --file Containerfile --build-arg "BASE=$base" \
  --tag "$image:$version" --tag "$image:latest" "$context" >/dev/null
# The image this build replaced, now without a tag; only this project's (by its label).
podman image prune --force --filter label=org.opencontainers.image.title=mountsup >/dev/null
echo "build-image.sh: built $image:$version ($(podman image inspect --format '{{.Size}}' "$image:$version") bytes)"
