#!/usr/bin/env bash
# Benchmarks mountsup-mirror against bindfs and against SOURCE itself, all on one SOURCE
# directory, in one run: fio sequential write and read of SIZE, fio 4 KiB random reads, and a
# metadata run (create, stat, list with attributes, unlink of FILES files). The mirror runs
# twice: with FUSE passthrough (its default as root, where the kernel does reads and writes of
# open files itself) and with passthrough=off (every read and write through the worker).
#
# Usage: Benchmarks/mirror/run.sh [WORKDIR]      (default /var/tmp/mountsup-mirror-bench)
#
# Environment:
#   MIRROR_BIN          a mountsup-mirror to measure; otherwise a release build is made
#   SWIFT_SCRATCH_PATH  scratch path of that build (default: <repo>/.build)
#   SIZE=1g             file size for the sequential and random runs
#   RANDOM_IO=256m      bytes read by the random-read run (each 4 KiB block at most once)
#   FILES=10000         files in the metadata run
#   RUNS=5              repetitions, interleaved; the best and the median are reported
#   SOURCE_TMPFS=1      put SOURCE on a tmpfs mounted (and removed) by this script, which takes
#                       the disk filesystem's own costs and quirks out of the comparison
#   PIN_CPU=N           run every daemon and every client on CPU N only: on a VM, waking an idle
#                       vCPU costs more than a whole FUSE request, and which daemon happens to be
#                       woken where varies from run to run; pinned, the daemons' own cost shows
#
# Reads come from a file that is hot in SOURCE's page cache, so they measure the filesystem
# layers, not the disk; before each read run the FUSE mount's own cache of the file is dropped
# (fio invalidate=1), so every read goes through the FUSE layer (the daemon, or with passthrough
# the kernel's backing file). bindfs is measured in its
# default (single-threaded) mode and with --multithreaded; the ratio uses the better of the two.
# On a machine shared with other work, noise only ever slows a run down, so the best of RUNS is
# the closer estimate of each layer's own cost; the median is printed as well. The order of the
# targets rotates from run to run, so that no target always follows another's deletions.
# Needs root (FUSE mounts), fio, bindfs, python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${1:-/var/tmp/mountsup-mirror-bench}
SIZE=${SIZE:-1g}
RANDOM_IO=${RANDOM_IO:-256m}
FILES=${FILES:-10000}
RUNS=${RUNS:-5}
SOURCE_TMPFS=${SOURCE_TMPFS:-0}
PIN_CPU=${PIN_CPU:-}
pin=()
[[ -n $PIN_CPU ]] && pin=(taskset -c "$PIN_CPU")

for tool in fio bindfs python3 fusermount3; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "run.sh: run as root (FUSE mounts with allow_other)" >&2; exit 2; }

if [[ -z ${MIRROR_BIN:-} ]]; then
  scratch=${SWIFT_SCRATCH_PATH:-$repo/.build}
  echo "building mountsup-mirror (release) in $scratch ..." >&2
  (cd "$repo" && swift build -c release --product mountsup-mirror --scratch-path "$scratch" >&2)
  MIRROR_BIN="$(cd "$repo" && swift build -c release --scratch-path "$scratch" --show-bin-path)/mountsup-mirror"
fi

if [[ -e $work && ! -e $work/.mountsup-mirror-bench ]]; then
  echo "run.sh: $work exists and is not a benchmark directory; choose another WORKDIR" >&2
  exit 2
fi
mkdir -p "$work"
touch "$work/.mountsup-mirror-bench"
src=$work/src
results=$work/results.tsv
targets=(native mirror mirror-nopt bindfs bindfs-mt)
daemons=()

is_mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }

cleanup() {
  local status=$?
  # The daemons unmount themselves on SIGTERM; whatever is left (a daemon that died) is detached.
  for pid in "${daemons[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${daemons[@]}"; do wait "$pid" 2>/dev/null || true; done
  for name in mirror mirror-nopt bindfs bindfs-mt src; do
    while is_mounted "$work/$name"; do
      umount -l "$work/$name" 2>/dev/null || fusermount3 -uz "$work/$name" 2>/dev/null || break
    done
  done
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_mounted() {
  local deadline=$((SECONDS + 10))
  until is_mounted "$1"; do
    ((SECONDS < deadline)) || { echo "run.sh: nothing mounted at $1" >&2; exit 1; }
    sleep 0.01
  done
}

rm -rf "$src" && mkdir -p "$src" "$work/mirror" "$work/mirror-nopt" "$work/bindfs" "$work/bindfs-mt"
if [[ $SOURCE_TMPFS == 1 ]]; then
  mount -t tmpfs -o size=4g,mode=0755 mountsup-mirror-bench "$src"
fi
"${pin[@]}" "$MIRROR_BIN" "$src" "$work/mirror" -o allow_other,passthrough=on &
daemons+=($!)
"${pin[@]}" "$MIRROR_BIN" "$src" "$work/mirror-nopt" -o allow_other,passthrough=off &
daemons+=($!)
"${pin[@]}" bindfs -f "$src" "$work/bindfs" &
daemons+=($!)
"${pin[@]}" bindfs -f --multithreaded "$src" "$work/bindfs-mt" &
daemons+=($!)
for name in mirror mirror-nopt bindfs bindfs-mt; do wait_mounted "$work/$name"; done

dir_of() { if [[ $1 == native ]]; then echo "$src"; else echo "$work/$1"; fi; }
invalidate_of() { if [[ $1 == native ]]; then echo 0; else echo 1; fi; }

# One fio job; prints a number picked from its JSON by the python expression $1.
fio_value() {
  local pick=$1
  shift
  "${pin[@]}" fio --output-format=json "$@" | python3 -c "import json, sys; j = json.load(sys.stdin)['jobs'][0]; print($pick)"
}

echo "preparing $SIZE read files in SOURCE ..." >&2
fio --name=prepare --directory="$src" --filename=read.dat --rw=write --bs=1M --size="$SIZE" \
  --ioengine=psync --output-format=terse >/dev/null
fio --name=prepare --directory="$src" --filename=random.dat --rw=write --bs=1M --size="$SIZE" \
  --ioengine=psync --output-format=terse >/dev/null
cat "$src/read.dat" "$src/random.dat" >/dev/null
sync

metadata_script='
import os, sys, time
directory, count = sys.argv[1], int(sys.argv[2])
os.mkdir(directory)
names = [os.path.join(directory, "file-%d" % i) for i in range(count)]
def timed(action):
    start = time.perf_counter(); action(); return count / (time.perf_counter() - start)
def create():
    for name in names: os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644))
def stat():
    for name in names: os.stat(name)
def listing():
    found = 0
    with os.scandir(directory) as entries:
        for entry in entries: entry.stat(follow_symlinks=False); found += 1
    assert found == count
def unlink():
    for name in names: os.unlink(name)
print(timed(create), timed(stat), timed(listing), timed(unlink))
os.rmdir(directory)
'

: >"$results"
for run in $(seq 1 "$RUNS"); do
  rotation=$(( (run - 1) % ${#targets[@]} ))
  for target in "${targets[@]:rotation}" "${targets[@]:0:rotation}"; do
    dir=$(dir_of "$target")
    inv=$(invalidate_of "$target")
    echo "run $run/$RUNS: $target" >&2
    sync
    value=$(fio_value "j['write']['bw'] / 1024" --name=seqwrite --directory="$dir" \
      --filename="write.$target" --rw=write --bs=1M --size="$SIZE" --ioengine=psync)
    printf 'seq write 1M (MiB/s)\t%s\t%s\n' "$target" "$value" >>"$results"
    rm -f "$dir/write.$target"
    sync
    value=$(fio_value "j['read']['bw'] / 1024" --name=seqread --directory="$dir" \
      --filename=read.dat --rw=read --bs=1M --size="$SIZE" --ioengine=psync --invalidate="$inv")
    printf 'seq read 1M (MiB/s)\t%s\t%s\n' "$target" "$value" >>"$results"
    value=$(fio_value "j['read']['iops']" --name=randread --directory="$dir" \
      --filename=random.dat --rw=randread --bs=4k --size="$SIZE" --io_size="$RANDOM_IO" \
      --ioengine=psync --invalidate="$inv")
    printf 'rand read 4k (IOPS)\t%s\t%s\n' "$target" "$value" >>"$results"
    read -r create stat listing unlink < <(
      "${pin[@]}" python3 -c "$metadata_script" "$dir/meta-$target" "$FILES")
    printf 'create (files/s)\t%s\t%s\n' "$target" "$create" >>"$results"
    printf 'stat (files/s)\t%s\t%s\n' "$target" "$stat" >>"$results"
    printf 'list+stat (files/s)\t%s\t%s\n' "$target" "$listing" >>"$results"
    printf 'unlink (files/s)\t%s\t%s\n' "$target" "$unlink" >>"$results"
  done
done

echo
placement=${PIN_CPU:+all on CPU $PIN_CPU}
echo "mountsup-mirror (with passthrough; no-pt: passthrough=off) vs bindfs $(bindfs --version | awk '{print $2}') vs native; $(uname -sr), $(nproc) CPUs;" \
  "SOURCE on $(stat -f -c %T "$src"); SIZE=$SIZE RANDOM_IO=$RANDOM_IO FILES=$FILES; $RUNS runs;" \
  "${placement:-unpinned}"
python3 - "$results" <<'EOF'
import statistics, sys
rows, order = {}, []
for line in open(sys.argv[1]):
    test, target, value = line.rstrip("\n").split("\t")
    if test not in rows:
        rows[test] = {}
        order.append(test)
    rows[test].setdefault(target, []).append(float(value))
head = ("test", "native", "mirror", "no-pt", "bindfs", "bindfs-mt", "mirror/native",
        "no-pt/native", "mirror/bindfs")
for title, pick in (("best", max), ("median", statistics.median)):
    print("\n%s of runs (higher is better; mirror/bindfs against the better bindfs)" % title)
    print("%-20s %9s %9s %9s %9s %9s %14s %13s %14s" % head)
    for test in order:
        value = {target: pick(values) for target, values in rows[test].items()}
        best_bindfs = max(value["bindfs"], value["bindfs-mt"])
        print("%-20s %9.0f %9.0f %9.0f %9.0f %9.0f %14.2f %13.2f %14.2f" % (
            test, value["native"], value["mirror"], value["mirror-nopt"], value["bindfs"],
            value["bindfs-mt"], value["mirror"] / value["native"],
            value["mirror-nopt"] / value["native"], value["mirror"] / best_bindfs))
EOF
