#!/usr/bin/env bash
# Fairness of mountsupd (see fairness.py): a noisy worker beside 10 quiet ones (status latency,
# restart, logs, logs -f of a slow reader, RSS), and a killed worker's recovery while control
# clients pipeline thousands of requests; each figure next to its target.
# Run as root from the repository (release build):
#   Benchmarks/supervisor/fairness.sh [--follow-seconds 30] [--status-count 20] [--restarts 5]
#       [--spew-line-length 65536] [--pipeline-clients 3] [--pipeline-requests 10000]
#       [--kill-rounds 3] [--timeout 30] [--nofile 1024]
#   Benchmarks/supervisor/fairness.sh --help
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
  echo "fairness.sh: run as root (the workers mount FUSE filesystems)" >&2
  exit 1
fi
for product in mountsupd mountctl mountsup-testworker; do
  swift build -c release --static-swift-stdlib --scratch-path .build-bench --product "$product" >/dev/null
done
exec python3 Benchmarks/supervisor/fairness.py "$(swift build -c release --static-swift-stdlib --scratch-path .build-bench --show-bin-path)" "$@"
