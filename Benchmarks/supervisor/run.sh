#!/usr/bin/env bash
# Supervisor overhead: mountsupd against launcher.c (the physical limit: the same workers started
# in parallel under the same protocol, no supervisor), interleaved rounds, medians: time to READY,
# CPU per mount, stop time, each next to its target; then idle wake-ups at 100 mounts.
# Run as root from the repository (release build):
#   Benchmarks/supervisor/run.sh [--counts 1,10,100,1000] [--rounds 5] [--idle 60] [--nofile 1024]
#   Benchmarks/supervisor/run.sh --scale 5000 [--timeout SECONDS]
#   Benchmarks/supervisor/run.sh --help
# Fairness (a noisy worker, pipelining control clients): Benchmarks/supervisor/fairness.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
  echo "run.sh: run as root (the workers mount FUSE filesystems)" >&2
  exit 1
fi
# Built as `make install` builds it (the Swift runtime linked in), in a folder of its own.
build=(swift build -c release --static-swift-stdlib --scratch-path .build-bench)
"${build[@]}" --product mountsupd >/dev/null
"${build[@]}" --product mountctl >/dev/null
"${build[@]}" --product mountsup-testworker >/dev/null
bin="$("${build[@]}" --show-bin-path)"
mkdir -p .build/bench
cc -O2 -Wall -o .build/bench/launcher Benchmarks/supervisor/launcher.c
exec python3 Benchmarks/supervisor/bench.py "$bin" .build/bench/launcher "$@"
