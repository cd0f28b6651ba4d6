#!/usr/bin/env bash
# Supervisor overhead: time to READY for 1, 10 and 100 test-worker mounts, beside starting the same
# workers directly in parallel and waiting for their mounts; RSS and CPU time at 100 mounts;
# wake-ups over 10 idle seconds. Run as root from the repository: Benchmarks/supervisor/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --product mountsupd >/dev/null
swift build -c release --product mountsup-testworker >/dev/null
exec python3 Benchmarks/supervisor/bench.py "$(swift build -c release --show-bin-path)" "$@"
