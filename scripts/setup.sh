#!/usr/bin/env bash
# Installs what MountSupervisor needs on Debian 12 (run as root) and creates the demo directory
# that the example configuration mirrors. Safe to run again.
set -euo pipefail

packages=(
  libfuse3-dev fuse3 libsystemd-dev pkg-config  # build and run
  systemd-container make go-md2man               # the end-to-end test boots a real systemd
                                                 # on an installed copy (make install, man pages)
  bindfs squashfuse squashfs-tools rclone sshfs openssh-server openssh-client  # third-party workers
  fio git attr                                   # tests and benchmarks
  podman runc catatonit debootstrap              # the container image and its podman kube play
                                                 # test (scripts/build-image.sh, kube-e2e.py)
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The tests check the metrics with the real Prometheus parser, and the Kubernetes manifests
# against the Kubernetes schemas (both from PyPI).
python_packages=(prometheus_client kubernetes-validate)
if ! python3 -c 'import prometheus_client, kubernetes_validate' 2>/dev/null; then
  python3 -m pip --version >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends python3-pip
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${python_packages[@]}" \
    || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      --break-system-packages "${python_packages[@]}"
fi

demo=/srv/mountsup-demo
if [ ! -e "$demo" ]; then
  mkdir -p "$demo"
  printf 'Served through mountsup-mirror by mountsupd.\n' >"$demo/README"
fi
