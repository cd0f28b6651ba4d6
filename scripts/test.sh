#!/usr/bin/env bash
# The README's test run (as root). Most suites run in parallel in one process; three run on their
# own afterwards:
# - the end-to-end test boots a whole systemd in a container for about 20 s;
# - the Kubernetes end-to-end test builds the container image (release binaries; the first time
#   also its Debian base) and plays deploy/kubernetes with podman, about a minute once built;
# - the mirror's descriptor-limit test counts on the kernel sending FORGET for deleted files,
#   which it was seen to hold back while dozens of other mounts were busy in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
isolated="SystemdE2ETests|KubePlayE2ETests|unprivilegedDescriptorLimit"
swift test --skip "$isolated"
swift test --skip-build --filter "unprivilegedDescriptorLimit"
swift test --skip-build --filter "SystemdE2ETests"
swift test --skip-build --filter "KubePlayE2ETests"
