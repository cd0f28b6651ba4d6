#!/usr/bin/env bash
# End-to-end test of MountSupervisor under a real systemd.
#
# Boots systemd in a container (systemd-nspawn --volatile=yes over this machine's /usr, with
# /dev/fuse), with mountsupd, mountctl, mountsup-mirror, the unit and the example configuration
# installed by `make install-only` into a staging root, and runs Tests/e2e/container-checks.sh
# inside it as a unit. That script starts, reloads, crashes, stops and fails mountsupd through
# systemctl and writes its results to a bound directory; the container then powers off.
#
# Usage: Tests/e2e/systemd-e2e.sh [--check] [BIN_DIR]     (default BIN_DIR: .build/debug)
#   --check   only find out whether this machine can run the test (exit 0 or 77)
# Exit status: 0 every check passed; 1 a check failed; 77 this machine cannot run the test
# (the reason is printed), which counts as skipped, never as passed.
set -euo pipefail

only_check=no
if [ "${1:-}" = --check ]; then
  only_check=yes
  shift
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$(cd "${1:-$repo/.build/debug}" && pwd)
boot_timeout=150
machine=mountsup-e2e-$$

skip() {
  echo "SKIPPED: the systemd end-to-end test cannot run here: $*" >&2
  exit 77
}

[ "$(uname -s)" = Linux ] || skip "it needs Linux"
[ "$(id -u)" = 0 ] || skip "it needs root (systemd-nspawn and FUSE mounts)"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn is not installed (apt-get install systemd-container)"
[ -x /usr/lib/systemd/systemd ] || skip "there is no systemd in /usr/lib/systemd/systemd to boot"
[ -c /dev/fuse ] || skip "/dev/fuse is missing (modprobe fuse)"
for program in mountsupd mountctl mountsup-mirror mountsup-testworker; do
  [ -x "$bin/$program" ] || {
    echo "systemd-e2e: $bin/$program is missing: build first (swift build)" >&2
    exit 1
  }
done

# systemd-nspawn makes these on a host without systemd and leaves them: remove what it made.
nspawn_dirs=()
for dir in /run/systemd/nspawn/propagate /run/systemd/nspawn /run/systemd/nspawn-root; do
  [ -e "$dir" ] || nspawn_dirs+=("$dir")
done
work=
cleanup() {
  rmdir "/run/systemd/nspawn/propagate/$machine" 2>/dev/null || true
  for dir in "${nspawn_dirs[@]}"; do rmdir "$dir" 2>/dev/null || true; done
  [ -n "$work" ] || return 0
  # Everything the container mounted lived in its own mount namespace; refuse to delete through
  # a mount all the same.
  if grep -q " $work" /proc/self/mountinfo; then
    echo "systemd-e2e: mounts left under $work; not deleting it" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

nspawn_probe=$(systemd-nspawn --quiet --volatile=yes --directory=/ --register=no --keep-unit \
  --machine="$machine" /bin/true 2>&1) ||
  skip "systemd-nspawn cannot start a container: $nspawn_probe"
[ $only_check = no ] || exit 0

work=$(mktemp -d /tmp/mountsup-e2e.XXXXXX)

# The installation, exactly as `make install` makes it, into a staging root.
root=$work/root
make -s -C "$repo" install-only CONFIGURATION=debug BUILDDIR="$bin" DESTDIR="$root" \
  MANBUILD="$work/man" >"$work/install.log" 2>&1 || {
  cat "$work/install.log" >&2
  exit 1
}
install -m 0755 "$bin/mountsup-testworker" "$root/usr/local/bin/"

# The test's own units: a consumer that bind-mounts a managed mountpoint, and the check unit.
cat >"$root/etc/systemd/system/mountsup-consumer.service" <<'EOF'
[Unit]
Description=A consumer of a supervised mount (bind-mounts it elsewhere)
Requires=mountsupd.service
After=mountsupd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mkdir -p /srv/consumer/slow
ExecStart=/bin/mount --bind /mnt/e2e/slow /srv/consumer/slow
ExecStart=/bin/sh -c 'test "$$(cat /srv/consumer/slow/hello)" = "hello from slow" && findmnt -n -o FSTYPE /srv/consumer/slow | grep -q "^fuse"'
# The bind keeps the FUSE connection alive after mountsupd unmounted the original.
ExecStop=/bin/umount /srv/consumer/slow
EOF
# A reader through a mount, across upgrades of mountsupd: every failed read is written down.
cat >"$root/etc/systemd/system/mountsup-reader.service" <<'EOF'
[Unit]
Description=A consumer reading through a supervised mount
Requires=mountsupd.service
After=mountsupd.service

[Service]
ExecStart=/bin/sh -c 'while :; do cat /mnt/e2e/photos/hello >/dev/null || echo "read failed at $$(date +%%s.%%N)" >>/e2e/reader-errors; sleep 0.02; done'
EOF
# A reader through the mirror across a crash of mountsupd: the mount must not go away.
cat >"$root/etc/systemd/system/mountsup-mirror-reader.service" <<'EOF'
[Unit]
Description=A consumer reading through the mirror mount
Wants=mountsupd.service
After=mountsupd.service

[Service]
ExecStart=/bin/sh -c 'while :; do cat /mnt/e2e/mirror/greeting 2>>/e2e/mirror-reader-errors >/dev/null || echo "read failed at $$(date +%%s.%%N)" >>/e2e/mirror-reader-errors; sleep 0.02; done'
EOF
cat >"$root/etc/systemd/system/mountsup-e2e-check.service" <<'EOF'
[Unit]
Description=MountSupervisor end-to-end checks
After=basic.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/bin/bash /e2e/container-checks.sh
TimeoutStartSec=120s
EOF
cat >"$root/etc/systemd/system/mountsup-e2e.target" <<'EOF'
[Unit]
Description=MountSupervisor end-to-end test
Requires=basic.target mountsup-e2e-check.service
After=basic.target
EOF

mkdir -p "$work/e2e"
install -m 0644 "$repo/Tests/e2e/container-checks.sh" "$work/e2e/"
# Another build to upgrade to: the same binary with another commit in its identity.
commit=$("$bin/mountsupd" --version | sed -n 's/.*(commit \([0-9a-f]\{12\}\).*/\1/p')
if [ -n "$commit" ]; then
  perl -0777 -pe "s/$commit/feedfacecafe/g" "$bin/mountsupd" >"$work/e2e/mountsupd-other"
  chmod 0755 "$work/e2e/mountsupd-other"
fi

# The binaries may link the Swift runtime from the toolchain: bind its directory in.
swift_runtime=$(ldd "$bin/mountsupd" | awk '/libswiftCore\.so/ { print $3 }')
binds=(--bind=/dev/fuse --bind-ro="$root/usr/local:/usr/local"
  --bind="$root/etc/systemd/system:/etc/systemd/system" --bind="$root/etc/mountsup:/etc/mountsup"
  --bind="$work/e2e:/e2e")
[ -n "$swift_runtime" ] && binds+=(--bind-ro="$(dirname "$swift_runtime")")
[ -e /etc/manpath.config ] && binds+=(--bind-ro=/etc/manpath.config)

started=$(date +%s)
echo "systemd-e2e: booting $machine (systemd-nspawn --volatile=yes over /usr)"
status=0
# open_by_handle_at, which the mirror's resumed workers reopen files with, is one of the calls
# nspawn denies by default (as Docker and podman do: the "shocker" escape): let it through.
timeout --kill-after=10 "$boot_timeout" systemd-nspawn --quiet --volatile=yes --directory=/ \
  --system-call-filter="open_by_handle_at name_to_handle_at" \
  --register=no --keep-unit --link-journal=no --machine="$machine" --console=pipe \
  "${binds[@]}" --boot systemd.unit=mountsup-e2e.target systemd.firstboot=off \
  </dev/null >"$work/console.log" 2>&1 || status=$?
echo "systemd-e2e: the container ended (status $status) after $(($(date +%s) - started)) s"

results=$work/e2e/results
[ -f "$results" ] && cat "$results"
passed=$(grep -c '^ok ' "$results" 2>/dev/null || true)
failed=$(grep -c '^not ok ' "$results" 2>/dev/null || true)
passed=${passed:-0}
failed=${failed:-0}
complete=yes
if [ "$(tail -n 1 "$results" 2>/dev/null)" != done ]; then
  complete=no
  echo "not ok - the checks did not run to the end (container status $status, timeout ${boot_timeout}s)"
  failed=$((failed + 1))
fi
if [ "$failed" != 0 ]; then
  echo "--- the container's journal (last 80 lines) ---"
  tail -n 80 "$work/e2e/journal.txt" 2>/dev/null || true
  if [ $complete = no ]; then
    echo "--- the console (last 40 lines) ---"
    tail -n 40 "$work/console.log"
  fi
fi
echo "systemd-e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]
