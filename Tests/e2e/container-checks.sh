#!/bin/bash
# The checks of systemd-e2e.sh, run inside the booted container as mountsup-e2e-check.service.
# Results go to /e2e/results as TAP-style lines ("ok - ...", "not ok - ...", "# note"); the
# last line is "done" when every phase ran. The container powers off when this unit ends.
set -u

results=/e2e/results
: >"$results"
units=/etc/systemd/system
mp=/mnt/e2e
broken_text="cannot reach bucket e2e-bucket: access denied"

ok() { echo "ok - $*" >>"$results"; }
not_ok() { echo "not ok - $*" >>"$results"; }
note() { echo "# $*" >>"$results"; }
# check DESCRIPTION COMMAND...: one result line from the command's exit status.
check() {
  local description=$1
  shift
  if "$@"; then ok "$description"; else not_ok "$description"; fi
}
# all COMMAND... [&& COMMAND...]: true when every command (separated by "&&" words) succeeds.
all() {
  local command=()
  for word in "$@" "&&"; do
    if [ "$word" = "&&" ]; then
      "${command[@]}" || return 1
      command=()
    else
      command+=("$word")
    fi
  done
}
negate() { ! "$@"; }
equal() { [ "$1" = "$2" ]; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }
sctl() { timeout 60 systemctl "$@"; }
property() { systemctl show -P "$2" "$1"; }
is_active() { equal "$(systemctl is-active "$1")" "${2:-active}"; }
main_pid_is() { equal "$(property mountsupd.service MainPID)" "$1"; }
main_pid_is_not() { ! main_pid_is "$1"; }

# FUSE mounts in this mount namespace, one mountpoint a line. (No awk: the container's /etc,
# and so /etc/alternatives, is empty.)
fuse_mounts() {
  local fields type i
  while read -r -a fields; do
    for ((i = 6; i < ${#fields[@]}; i++)); do
      if [ "${fields[i]}" = - ]; then
        type=${fields[i + 1]}
        [ "${type%%.*}" = fuse ] && echo "${fields[4]}"
        break
      fi
    done
  done </proc/self/mountinfo
}
fuse_mount_count() { fuse_mounts | grep -cx "$1"; }
no_fuse_mounts() { ! fuse_mounts | grep -q .; }
# The pids of running workers, each with its last argument (the mountpoint).
workers() {
  local dir argv
  for dir in /proc/[0-9]*; do
    mapfile -d '' argv <"$dir/cmdline" 2>/dev/null || continue
    [ ${#argv[@]} -gt 1 ] || continue
    case ${argv[0]##*/} in
    mountsup-testworker | mountsup-mirror) echo "${dir#/proc/} ${argv[-1]}" ;;
    esac
  done
}
# The pid of the worker of mount NAME, or nothing.
worker_pid() { workers | while read -r pid mountpoint; do [ "$mountpoint" = "$mp/$1" ] && echo "$pid"; done; }
no_worker() { [ -z "$(worker_pid "$1")" ]; }
no_workers() { [ -z "$(workers)" ]; }
worker_replaced() {
  local pid
  pid=$(worker_pid "$1")
  [ -n "$pid" ] && [ "$pid" != "$2" ]
}
# serves NAME: exactly one FUSE mount at the mountpoint, and its file has the expected text.
serves() {
  local file=hello text="hello from $1"
  if [ "$1" = mirror ]; then file=greeting text="mirrored by mountsup-mirror"; fi
  equal "$(fuse_mount_count "$mp/$1")" 1 && equal "$(cat "$mp/$1/$file" 2>/dev/null)" "$text"
}
journal_of() { journalctl --sync && journalctl -b --no-pager -o cat "$@"; }
# wait_until SECONDS COMMAND...: polls every 0.1 s.
wait_until() {
  local deadline=$(($(now_ms) + $1 * 1000))
  shift
  until "$@"; do
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}
contains() { grep -qF -- "$2" <<<"$1"; }
lacks() { ! grep -qF -- "$2" <<<"$1"; }

write_config() {
  {
    echo '[supervisor]'
    echo 'include = ["mounts.d/*.toml"]'
    for mount in "$@"; do
      echo
      echo "[mounts.$mount]"
      echo "mountpoint = \"$mp/$mount\""
      case $mount in
      slow) echo 'command = ["mountsup-testworker", "--mount-delay", "3000", "{mountpoint}"]' ;;
      late) echo 'command = ["mountsup-testworker", "--mount-delay", "1500", "{mountpoint}"]' ;;
      mirror) echo 'command = ["mountsup-mirror", "/srv/e2e-source", "{mountpoint}"]' ;;
      broken) echo "command = [\"mountsup-testworker\", \"--fail\", \"$broken_text\", \"{mountpoint}\"]" ;;
      *) echo 'command = ["mountsup-testworker", "{mountpoint}"]' ;;
      esac
      echo 'restart_delay = "100ms"'
    done
  } >/etc/mountsup/mounts.toml
}

phase_install() {
  note "phase: the installed unit"
  if [ -e /usr/local/share/man/man8/mountsupd.8 ]; then
    check "systemd-analyze verify passes for the installed unit" \
      systemd-analyze verify "$units/mountsupd.service"
  else
    note "man pages were not built (go-md2man missing): verifying without the man page check"
    check "systemd-analyze verify --man=no passes for the installed unit" \
      systemd-analyze verify --man=no "$units/mountsupd.service"
  fi
  check "the installed example configuration is valid" \
    mountsupd --check-config --config /etc/mountsup/mounts.toml
  # Quick watchdog pings (every 1.5 s) so that this test sees them.
  mkdir -p "$units/mountsupd.service.d"
  printf '[Service]\nWatchdogSec=3s\n' >"$units/mountsupd.service.d/e2e-watchdog.conf"
  systemctl daemon-reload
  mkdir -p /srv/e2e-source
  echo "mirrored by mountsup-mirror" >/srv/e2e-source/greeting
}

phase_start() {
  note "phase: systemctl start returns only when every mount is confirmed"
  write_config old photos slow
  local start elapsed
  start=$(now_ms)
  check "systemctl start mountsupd succeeds" sctl start mountsupd.service
  elapsed=$(($(now_ms) - start))
  note "systemctl start took ${elapsed} ms (the slow worker mounts after 3000 ms)"
  check "systemctl start waited for the slow mount" [ "$elapsed" -ge 3000 ]
  for mount in old photos slow; do
    check "$mount is a FUSE mount serving its file when start returns" serves "$mount"
  done
  check "the unit is active" is_active mountsupd.service
  local status
  status=$(systemctl status --no-pager --lines=0 mountsupd.service)
  note "$(grep 'Status:' <<<"$status" | sed 's/^ *//')"
  check "systemctl status shows the STATUS text" contains "$status" 'Status: "3/3 mounts ready"'

  local slow_lines slow_pid
  slow_lines=$(journal_of -u mountsupd.service MOUNT_NAME=slow)
  slow_pid=$(worker_pid slow)
  check "journalctl MOUNT_NAME=slow shows the slow mount's lines" contains "$slow_lines" "worker started"
  check "journalctl MOUNT_NAME=slow includes the worker's own output" \
    contains "$slow_lines" "testworker: pid $slow_pid starting for $mp/slow"
  check "journalctl MOUNT_NAME=slow shows no other mount's lines" \
    all lacks "$slow_lines" "$mp/photos" "&&" lacks "$slow_lines" "$mp/old"
  check "worker output carries MOUNT_NAME, WORKER_PID, PRIORITY and SYSLOG_IDENTIFIER" \
    contains "$(journalctl -b -o export MOUNT_NAME=slow WORKER_PID="$slow_pid" PRIORITY=6 SYSLOG_IDENTIFIER=mountsupd)" \
    "MESSAGE=testworker: pid $slow_pid starting"

  local main_pid ping_before ping_after
  main_pid=$(property mountsupd.service MainPID)
  ping_before=$(property mountsupd.service WatchdogTimestampMonotonic)
  sleep 2
  ping_after=$(property mountsupd.service WatchdogTimestampMonotonic)
  note "watchdog: a ping at ${ping_before} us, 2 s later the last at ${ping_after} us"
  check "WATCHDOG=1 pings keep arriving (WatchdogSec=3s)" \
    all [ "$ping_before" -gt 0 ] "&&" [ "$ping_after" -gt "$ping_before" ]
  check "the watchdog did not restart mountsupd" all is_active mountsupd.service "&&" main_pid_is "$main_pid"
}

phase_reload() {
  note "phase: systemctl reload applies a changed configuration synchronously"
  local main_pid photos_pid slow_pid
  main_pid=$(property mountsupd.service MainPID)
  photos_pid=$(worker_pid photos)
  slow_pid=$(worker_pid slow)
  write_config late mirror photos slow
  local start
  start=$(now_ms)
  check "systemctl reload succeeds" sctl reload mountsupd.service
  note "systemctl reload took $(($(now_ms) - start)) ms (the added mount late mounts after 1500 ms)"
  check "the added mounts (one mounting after 1.5 s, one mountsup-mirror) serve when reload returns" \
    all serves late "&&" serves mirror
  check "the removed mount is unmounted when reload returns" equal "$(fuse_mount_count "$mp/old")" 0
  check "the removed mount's worker is gone" no_worker old
  check "the untouched mounts kept their workers (same pids)" \
    all equal "$(worker_pid photos)" "$photos_pid" "&&" equal "$(worker_pid slow)" "$slow_pid"
  check "mountsupd itself was not restarted" main_pid_is "$main_pid"
  check "systemctl status shows the new set ready" \
    contains "$(systemctl status --no-pager --lines=0 mountsupd.service)" 'Status: "4/4 mounts ready"'
  local table table_status
  table=$(mountctl status)
  table_status=$?
  check "mountctl status exits 0 (every mount ready)" equal "$table_status" 0
  check "mountctl status lists the untouched photos mount with its pid" \
    grep -qE "^photos +ready +$photos_pid " <<<"$table"
}

phase_worker_crash() {
  note "phase: a killed worker is restarted while the unit stays active"
  local main_pid old_pid
  main_pid=$(property mountsupd.service MainPID)
  old_pid=$(worker_pid photos)
  kill -KILL "$old_pid"
  check "the killed worker was replaced and its mount serves again" \
    wait_until 10 all worker_replaced photos "$old_pid" "&&" serves photos
  check "the dead mount was detached (one FUSE mount at the mountpoint)" equal "$(fuse_mount_count "$mp/photos")" 1
  check "the unit stayed active with the same main process" all is_active mountsupd.service "&&" main_pid_is "$main_pid"
  check "the journal tells the photos mount's worker exit" \
    contains "$(journal_of -u mountsupd.service MOUNT_NAME=photos)" "restarting in"
}

phase_upgrade() {
  note "phase: mountctl upgrade replaces mountsupd while a consumer reads through a mount"
  if [ ! -x /e2e/mountsupd-other ]; then
    note "no second build (the binary names no git commit): upgrade checks skipped"
    not_ok "an upgrade under systemd (no second build to upgrade to)"
    return
  fi
  check "the reader unit starts" sctl start mountsup-reader.service
  local main_pid reader_id photos_pid slow_pid mount_ids pings
  main_pid=$(property mountsupd.service MainPID)
  reader_id=$(property mountsup-reader.service InvocationID)
  photos_pid=$(worker_pid photos)
  slow_pid=$(worker_pid slow)
  mount_ids=$(grep ' fuse' /proc/self/mountinfo | cut -d' ' -f1,5 | sort)
  sleep 0.5
  local upgraded back
  upgraded=$(mountctl upgrade --binary /e2e/mountsupd-other)
  check "mountctl upgrade to another build succeeds" contains "$upgraded" "to 0.3.0 (commit feedfacecafe"
  note "$upgraded"
  sleep 0.5
  check "status --json names the new build" \
    contains "$(mountctl status --json)" '"version" : "0.3.0 (commit feedfacecafe'
  back=$(mountctl upgrade)
  check "mountctl upgrade (the installed file, by default) goes back to it" \
    all contains "$back" "upgraded from 0.3.0 (commit feedfacecafe" "&&" lacks "$back" "to 0.3.0 (commit feedfacecafe"
  note "$back"
  sleep 0.5
  check "systemd kept the same MainPID, and the unit is active" \
    all main_pid_is "$main_pid" "&&" is_active mountsupd.service
  check "the reader was not restarted (same InvocationID) and runs" \
    all equal "$(property mountsup-reader.service InvocationID)" "$reader_id" "&&" is_active mountsup-reader.service
  check "the workers are the same processes" \
    all equal "$(worker_pid photos)" "$photos_pid" "&&" equal "$(worker_pid slow)" "$slow_pid"
  check "every mount kept its mount ID" equal "$(grep ' fuse' /proc/self/mountinfo | cut -d' ' -f1,5 | sort)" "$mount_ids"
  check "the reader saw no read error" [ ! -e /e2e/reader-errors ]
  check "NRestarts is still 0" equal "$(property mountsupd.service NRestarts)" 0
  pings=$(property mountsupd.service WatchdogTimestampMonotonic)
  sleep 2
  check "the watchdog pings go on after the upgrades" [ "$(property mountsupd.service WatchdogTimestampMonotonic)" -gt "$pings" ]
  check "the journal says what replaced what" \
    contains "$(journal_of -u mountsupd.service)" "upgraded from 0.3.0 (commit feedfacecafe"
  sctl stop mountsup-reader.service
}

# The mount ID of the FUSE mount at MOUNTPOINT (mountinfo's first field).
mount_id() { grep " $1 " /proc/self/mountinfo | grep ' fuse' | cut -d' ' -f1; }

phase_daemon_crash() {
  note "phase: a crashed mountsupd is restarted by systemd (Restart=on-failure)"
  check "the mirror's FUSE connection is held (a crash will be resumed)" \
    contains "$(mountctl status --json mirror)" '"holds_connection" : true'
  check "the mirror reader starts" sctl start mountsup-mirror-reader.service
  local main_pid mirror_id reader_id
  main_pid=$(property mountsupd.service MainPID)
  mirror_id=$(mount_id "$mp/mirror")
  reader_id=$(property mountsup-mirror-reader.service InvocationID)
  sleep 0.5
  local killed_at
  killed_at=$(date +%s.%N)
  systemctl kill --kill-who=main --signal=SIGKILL mountsupd.service
  check "systemd restarted mountsupd" wait_until 20 all main_pid_is_not "$main_pid" "&&" is_active mountsupd.service
  check "NRestarts is 1" equal "$(property mountsupd.service NRestarts)" 1
  for mount in late mirror photos slow; do
    check "$mount serves again, the old worker's dead mount detached" wait_until 10 serves "$mount"
  done
  sleep 0.5
  check "the mirror kept its mount (same mount ID): the held connection came back from the fd store" \
    equal "$(mount_id "$mp/mirror")" "$mirror_id"
  check "the mirror reader was not restarted" \
    equal "$(property mountsup-mirror-reader.service InvocationID)" "$reader_id"
  check "the journal says the connection was resumed" \
    contains "$(journal_of -u mountsupd.service MOUNT_NAME=mirror)" "resuming the FUSE connection an earlier mountsupd held"
  check "the mirror reader saw no error across the crash" [ ! -s /e2e/mirror-reader-errors ]
  [ -s /e2e/mirror-reader-errors ] &&
    note "reads failed at: $(tr '\n' '|' </e2e/mirror-reader-errors); mountsupd killed at $killed_at"
  sctl stop mountsup-mirror-reader.service
}

phase_stop() {
  note "phase: systemctl stop leaves no mount"
  check "systemctl stop succeeds" sctl stop mountsupd.service
  check "no FUSE mount is left" no_fuse_mounts
  check "no worker is left" no_workers
  check "the runtime directory is removed" [ ! -e /run/mountsup ]
}

phase_consumer() {
  note "phase: a unit ordered after mountsupd bind-mounts a managed mountpoint"
  write_config photos slow
  check "systemctl start of the consumer (which pulls in mountsupd) succeeds" sctl start mountsup-consumer.service
  local target_type
  target_type=$(findmnt -n -o FSTYPE /srv/consumer/slow)
  note "the bind target /srv/consumer/slow is of type ${target_type:-nothing}"
  check "the consumer's bind target is a FUSE mount serving the slow worker's file" \
    all equal "${target_type%%.*}" fuse "&&" equal "$(cat /srv/consumer/slow/hello)" "hello from slow"
  local ready consumer_start
  ready=$(property mountsupd.service ActiveEnterTimestampMonotonic)
  consumer_start=$(property mountsup-consumer.service ExecMainStartTimestampMonotonic)
  note "mountsupd ready at ${ready} us, the consumer's ExecStart at ${consumer_start} us"
  check "the consumer started only after mountsupd was ready" \
    all [ "$ready" -gt 0 ] "&&" [ "$consumer_start" -ge "$ready" ]
  check "systemctl stop mountsupd succeeds" sctl stop mountsupd.service
  check "the consumer was stopped with it" is_active mountsup-consumer.service inactive
  check "no FUSE mount is left (the bind included)" no_fuse_mounts
  check "no worker is left" no_workers
}

phase_failure() {
  note "phase: a required mount that cannot start fails systemctl start with its own error"
  write_config broken photos
  local start
  start=$(now_ms)
  check "systemctl start mountsupd fails" negate sctl start mountsupd.service
  note "systemctl start failed after $(($(now_ms) - start)) ms"
  sleep 1.5
  check "the unit is failed and not restarted (RestartPreventExitStatus=1)" \
    all is_active mountsupd.service failed "&&" equal "$(property mountsupd.service NRestarts)" 0
  local status
  status=$(systemctl status --no-pager --lines=20 mountsupd.service)
  note "$(grep -E 'Active:|Status:' <<<"$status" | sed 's/^ *//' | tr '\n' ' ')"
  check "systemctl status shows the worker's own error" contains "$status" "$broken_text"
  check "the unit's journal has the worker's own error" contains "$(journal_of -u mountsupd.service)" "$broken_text"
  check "journalctl MOUNT_NAME=broken has the worker's own output" \
    contains "$(journal_of MOUNT_NAME=broken MOUNTSUP_SOURCE=worker)" "testworker: $broken_text"
  check "no FUSE mount is left after the failed start" no_fuse_mounts
  check "no worker is left after the failed start" no_workers
}

phase_install
phase_start
phase_reload
phase_worker_crash
phase_upgrade
phase_daemon_crash
phase_stop
phase_consumer
phase_failure
journalctl -b --no-pager -o short-monotonic >/e2e/journal.txt 2>&1
echo done >>"$results"
