"""Measures mountsupd against the C launcher (launcher.c), "the physical limit" of starting the
same FUSE workers under the same worker protocol without a supervisor.

For every N of --counts, --rounds rounds alternate a launcher round and a mountsupd round in one
run; the figures are medians. Per N: time to READY of both, their ratio, mountsupd's CPU time
(utime+stime at READY) per mount, and the stop time of both (launcher: unmount everything and
wait for every worker; mountsupd: SIGTERM until the process has exited), next to the targets.
Then the wake-ups of an idle mountsupd with 100 mounts (--idle SECONDS), and the time of an
upgrade in place (mountctl upgrade) with 1000 mounts (--upgrade N). --scale N instead makes
one run of N mounts under the launcher and under mountsupd and reports whether and when READY
came.

Time to READY is measured from the spawn of the process (launcher or daemon) in this script:
for mountsupd until READY=1 arrives on the NOTIFY_SOCKET this script binds; for the launcher
until the moment it has seen every worker's READY and mount (it reports that CLOCK_MONOTONIC
instant). mountsupd starts with the soft RLIMIT_NOFILE --nofile (1024, a daemon started by
hand); it is expected to raise its own limit. A daemon that dies or times out is reported with
its output's tail; the benchmark goes on.

Every mount and process this script makes is removed on every path, Ctrl-C included.
"""
import argparse
import os
import sys
import time

from benchlib import (check_binaries, BenchFailure, Daemon, Interrupted, Launcher, Sandbox, SandboxBase, cleanup_all, clip,
                      install_signal_handlers, log, median, mounts_under, processes_naming)

TARGET_RATIO = 1.25          # time to READY at 100 and 1000 mounts, mountsupd / launcher
TARGET_OVER_AT_ONE = 5.0     # ms over the launcher at 1 mount
TARGET_CPU_PER_MOUNT = 0.3   # ms of daemon CPU per mount to READY, at 100 and 1000
TARGET_CPU_FLAT = 1.25       # "flat from 100 to 1000": per-mount CPU at 1000 ≤ 1.25 × at 100
TARGET_STOP_RATIO = 1.5      # stop time, mountsupd / launcher, at STOP_TARGET_COUNT mounts
STOP_TARGET_COUNT = 1000
TARGET_UPGRADE_MS = 100      # mountctl upgrade at 1000 mounts: request to the new binary serving


def parse_arguments():
    parser = argparse.ArgumentParser(
        prog="Benchmarks/supervisor/run.sh",
        description="mountsupd against the C launcher: time to READY, CPU, stop, idle wake-ups.")
    parser.add_argument("bin", help="the release build directory (swift build --show-bin-path)")
    parser.add_argument("launcher", help="the compiled launcher.c")
    parser.add_argument("--counts", default="1,10,100,1000",
                        help="mount counts, comma-separated (default 1,10,100,1000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per count (default 5)")
    parser.add_argument("--idle", type=float, default=60,
                        help="seconds of the idle measurement at --idle-mounts mounts; 0 skips it "
                             "(default 60)")
    parser.add_argument("--idle-mounts", type=int, default=100, help="(default 100)")
    parser.add_argument("--upgrade", type=int, default=1000, metavar="N",
                        help="mounts of the upgrade measurement (mountctl upgrade, 5 times); "
                             "0 skips it (default 1000)")
    parser.add_argument("--scale", type=int, metavar="N",
                        help="instead of the table: one run of N mounts (e.g. 5000) under the "
                             "launcher and under mountsupd")
    parser.add_argument("--timeout", type=float,
                        help="seconds to wait for READY (default max(30, 0.06 s × N), with "
                             "--scale max(120, 0.06 s × N))")
    parser.add_argument("--nofile", type=int, default=1024,
                        help="mountsupd's soft RLIMIT_NOFILE at its start (default 1024)")
    arguments = parser.parse_args()
    arguments.counts = [int(c) for c in arguments.counts.split(",") if c.strip()]
    if arguments.rounds < 1 or any(c < 1 for c in arguments.counts):
        parser.error("counts and rounds must be positive")
    check_binaries(parser, arguments, arguments.launcher)
    return arguments


def ready_timeout(arguments, count, scale=False):
    if arguments.timeout:
        return arguments.timeout
    return max(120 if scale else 30, 0.06 * count)


def stop_timeout(count):
    return max(30, 0.05 * count)


def test_mounts(worker, count):
    return [(f"m{index}", [worker, "{mountpoint}"], None) for index in range(count)]


def launcher_round(arguments, count, timeout):
    sandbox = Sandbox("bench")
    launcher = None
    try:
        launcher = Launcher(arguments.launcher, arguments.worker, sandbox, count)
        ready_ms, own_ms = launcher.wait_ready(timeout)
        stop_ms = launcher.stop(stop_timeout(count) + 70)
        return {"ready": ready_ms, "own": own_ms, "stop": stop_ms}
    finally:
        if launcher:
            launcher.close()
        sandbox.cleanup()


def daemon_round(arguments, count, timeout, progress=None, keep=None):
    """One start and stop of mountsupd with `count` test-worker mounts. keep(daemon) runs while
    it is ready, before the stop (the idle measurement)."""
    sandbox = Sandbox("bench")
    daemon = Daemon(arguments.daemon, sandbox, test_mounts(arguments.worker, count),
                    arguments.nofile)
    try:
        daemon.start()
        ready = daemon.wait_ready(timeout, progress)
        result = {"ready": ready * 1000, "cpu": daemon.cpu_seconds() * 1000,
                  "rss": daemon.rss_kib(), "threads": daemon.threads(), "notes": []}
        mounted = len(mounts_under(sandbox.root, fuse_only=True))
        if mounted != count:
            result["notes"].append(f"{mounted} of {count} FUSE mounts in the table at READY")
        if keep:
            keep(daemon, result)
        result["stop"] = daemon.stop(stop_timeout(count)) * 1000
        left_mounts = mounts_under(sandbox.root, fuse_only=True)
        left_processes = processes_naming(sandbox.root)
        if left_mounts or left_processes:
            result["notes"].append(f"after the stop: {len(left_mounts)} FUSE mounts and "
                                   f"{len(left_processes)} workers were left")
        return result
    finally:
        daemon.close()
        sandbox.cleanup()


def plural(count):
    return f"{count} mount" + ("" if count == 1 else "s")


def verdict(ok):
    return "PASS" if ok else "FAIL"


def fmt(value, digits=1):
    return "—" if value is None else f"{value:.{digits}f}"


def table(arguments):
    print(f"mountsupd against the C launcher (the physical limit): medians of {arguments.rounds} "
          f"interleaved rounds; mountsupd starts with soft RLIMIT_NOFILE {arguments.nofile}; "
          f"mountpoints are made in {SandboxBase.get()}\n")
    header = (f"{'mounts':>6} | {'launcher':>9} {'mountsupd':>10} {'ratio':>6}  {'target':<22}|"
              f" {'CPU/mount':>9}  {'target':<14}| {'stop L':>8} {'stop D':>8} {'ratio':>6}"
              f"  {'target':<11}")
    print(header)
    print(f"{'':>6} | {'ms':>9} {'ms':>10} {'':>6}  {'':<22}| {'ms':>9}  {'':<14}|"
          f" {'ms':>8} {'ms':>8}")
    print("-" * len(header))
    results = {}
    for count in arguments.counts:
        timeout = ready_timeout(arguments, count)
        launched, supervised, failure, launcher_failure = [], [], None, None
        for round_index in range(arguments.rounds):
            try:
                launched.append(launcher_round(arguments, count, timeout))
            except BenchFailure as error:
                launcher_failure = str(error)
                break
            try:
                supervised.append(daemon_round(arguments, count, timeout))
            except BenchFailure as error:
                failure = f"round {round_index + 1}: {error}"
                break
            log(f"  N={count} round {round_index + 1}/{arguments.rounds}: launcher "
                f"{launched[-1]['ready']:.1f} ms (its own clock {launched[-1]['own']:.1f}), stop "
                f"{launched[-1]['stop']:.1f} ms; mountsupd {supervised[-1]['ready']:.1f} ms, CPU "
                f"{supervised[-1]['cpu']:.0f} ms, stop {supervised[-1]['stop']:.1f} ms"
                + "".join(f"; {note}" for note in supervised[-1]["notes"]))
        row = {
            "launcher": median([r["ready"] for r in launched]),
            "launcher_stop": median([r["stop"] for r in launched]),
            "daemon": median([r["ready"] for r in supervised]) if not failure else None,
            "daemon_stop": median([r["stop"] for r in supervised]) if not failure else None,
            "cpu": median([r["cpu"] for r in supervised]) if not failure else None,
            "failure": failure, "launcher_failure": launcher_failure,
            "notes": sorted({note for r in supervised for note in r["notes"]}),
        }
        results[count] = row
        print_row(count, row)
    return results


def ready_target(count, row):
    if row["daemon"] is None or row["launcher"] is None:
        if count == 1:
            return "≤ +5 ms", None
        if count in (100, 1000):
            return "≤ 1.25", None
        return "", None
    if count == 1:
        over = row["daemon"] - row["launcher"]
        return f"+{over:.1f} ≤ +{TARGET_OVER_AT_ONE:.0f} ms", over <= TARGET_OVER_AT_ONE
    if count in (100, 1000):
        return f"≤ {TARGET_RATIO}", row["daemon"] / row["launcher"] <= TARGET_RATIO
    return "", None


def print_row(count, row):
    ratio = (row["daemon"] / row["launcher"]) if row["daemon"] and row["launcher"] else None
    target, ok = ready_target(count, row)
    target_text = f"{target} {verdict(ok)}" if ok is not None else (f"{target} —" if target else "")
    cpu = row["cpu"] / count if row["cpu"] is not None else None
    cpu_target = ""
    if count >= 100 and cpu is not None:
        cpu_target = f"≤ {TARGET_CPU_PER_MOUNT} {verdict(cpu <= TARGET_CPU_PER_MOUNT)}"
    elif count >= 100:
        cpu_target = f"≤ {TARGET_CPU_PER_MOUNT} —"
    stop_ratio = (row["daemon_stop"] / row["launcher_stop"]
                  if row["daemon_stop"] is not None and row["launcher_stop"] else None)
    stop_target = ""
    if count == STOP_TARGET_COUNT:
        stop_target = (f"≤ {TARGET_STOP_RATIO} {verdict(stop_ratio <= TARGET_STOP_RATIO)}"
                       if stop_ratio is not None else f"≤ {TARGET_STOP_RATIO} —")
    daemon_text = fmt(row["daemon"]) if not row["failure"] else "FAILED"
    print(f"{count:>6} | {fmt(row['launcher']):>9} {daemon_text:>10} {fmt(ratio, 2):>6}  "
          f"{target_text:<22}| {fmt(cpu, 3):>9}  {cpu_target:<14}| "
          f"{fmt(row['launcher_stop']):>8} {fmt(row['daemon_stop']):>8} {fmt(stop_ratio, 2):>6}"
          f"  {stop_target:<11}", flush=True)
    for note in row["notes"]:
        print(f"{'':>6}   note: {note}")
    if row["launcher_failure"]:
        print(f"{'':>6}   the launcher failed, no comparison: {row['launcher_failure']}")
    if row["failure"]:
        print(f"{'':>6}   mountsupd FAILED at {count} mounts, {row['failure']}", flush=True)


def summary(results):
    print("\ntargets:")
    lines = []

    def add(text, value, ok):
        lines.append(f"  {text:<58} {value:<28} {'n/a' if ok is None else verdict(ok)}")

    if 1 in results:
        row = results[1]
        if row["daemon"] is not None and row["launcher"] is not None:
            over = row["daemon"] - row["launcher"]
            add("1 mount: at most 5 ms over the launcher", f"+{over:.1f} ms", over <= TARGET_OVER_AT_ONE)
        else:
            add("1 mount: at most 5 ms over the launcher", "mountsupd failed", False)
    for count in (100, 1000):
        if count not in results:
            continue
        row = results[count]
        if row["daemon"] is not None and row["launcher"]:
            ratio = row["daemon"] / row["launcher"]
            add(f"{count} mounts: time to READY ≤ {TARGET_RATIO}× the launcher", f"{ratio:.2f}×",
                ratio <= TARGET_RATIO)
            cpu = row["cpu"] / count
            add(f"{count} mounts: CPU ≤ {TARGET_CPU_PER_MOUNT} ms per mount", f"{cpu:.3f} ms",
                cpu <= TARGET_CPU_PER_MOUNT)
        else:
            add(f"{count} mounts: time to READY ≤ {TARGET_RATIO}× the launcher", "mountsupd failed",
                False)
            add(f"{count} mounts: CPU ≤ {TARGET_CPU_PER_MOUNT} ms per mount", "mountsupd failed", False)
    if 100 in results and 1000 in results:
        low, high = results[100]["cpu"], results[1000]["cpu"]
        if low is not None and high is not None:
            growth = (high / 1000) / (low / 100)
            add(f"CPU per mount flat from 100 to 1000 (≤ {TARGET_CPU_FLAT}×)", f"{growth:.2f}×",
                growth <= TARGET_CPU_FLAT)
        else:
            add(f"CPU per mount flat from 100 to 1000 (≤ {TARGET_CPU_FLAT}×)", "mountsupd failed", False)
    if STOP_TARGET_COUNT in results:
        row = results[STOP_TARGET_COUNT]
        text = f"{plural(STOP_TARGET_COUNT)}: stop ≤ {TARGET_STOP_RATIO}× the launcher"
        if row["daemon_stop"] is not None and row["launcher_stop"]:
            ratio = row["daemon_stop"] / row["launcher_stop"]
            add(text, f"{ratio:.2f}×", ratio <= TARGET_STOP_RATIO)
        else:
            add(text, "mountsupd failed", False)
    print("\n".join(lines))
    if any(count < STOP_TARGET_COUNT for count in results):
        print("  (a stop of a few mounts is dominated by a fixed ~7-15 ms at mountsupd's exit: the\n"
              "   kernel tears down its fanotify group of mount events after an RCU grace period)")


def idle(arguments):
    count, seconds = arguments.idle_mounts, arguments.idle

    def measure(daemon, result):
        cpu_before = daemon.cpu_seconds()
        before = daemon.context_switches()
        time.sleep(seconds)  # the measurement itself: how often an idle supervisor wakes
        result["wakeups"] = daemon.context_switches() - before
        result["idle_cpu"] = (daemon.cpu_seconds() - cpu_before) * 1000
        result["rss_after"] = daemon.rss_kib()

    print(f"\nidle: mountsupd with {count} ready mounts, {seconds:g} s")
    try:
        result = daemon_round(arguments, count, ready_timeout(arguments, count), keep=measure)
    except BenchFailure as error:
        print(f"  mountsupd FAILED: {error}")
        return
    print(f"  wake-ups (context switches of all {result['threads']} threads): {result['wakeups']} "
          f"({result['wakeups'] / seconds:.2f}/s; the design: only the hang check's thread, once per "
          f"period: 15 s with the default hang_timeout of 60 s)")
    print(f"  CPU while idle {result['idle_cpu']:.0f} ms; CPU to READY {result['cpu']:.0f} ms; "
          f"RSS {result['rss'] / 1024:.1f} MiB at READY, {result['rss_after'] / 1024:.1f} MiB after")


def upgrade(arguments):
    """Upgrades in place of a daemon with N ready mounts: from the request to the new binary
    answering `status`, measured from outside, next to what the daemon itself logs."""
    count = arguments.upgrade

    def measure(daemon, result):
        pids = {mount["name"]: mount["pid"] for mount in daemon.control("status")["mounts"]}
        times, own = [], []
        for _ in range(5):
            started = time.monotonic()
            answer = daemon.control("upgrade", timeout=60)
            if not answer.get("ok"):
                raise BenchFailure(f"upgrade failed: {answer.get('error')}")
            status = daemon.control("status")
            times.append((time.monotonic() - started) * 1000)
            own.append(answer["upgrade"]["milliseconds"])
            kept = {mount["name"]: mount["pid"] for mount in status["mounts"]}
            if kept != pids:
                raise BenchFailure("an upgrade changed the workers")
        result["upgrade"] = median(times)
        result["upgrade_own"] = median(own)

    print(f"\nupgrade: mountctl upgrade of mountsupd with {count} ready mounts, median of 5")
    try:
        result = daemon_round(arguments, count, ready_timeout(arguments, count), keep=measure)
    except BenchFailure as error:
        print(f"  mountsupd FAILED: {error}")
        return
    ok = result["upgrade"] < TARGET_UPGRADE_MS
    print(f"  from the request to the new binary answering status: {result['upgrade']:.1f} ms "
          f"(the daemon's own count to its resume: {result['upgrade_own']:.1f} ms); "
          f"target < {TARGET_UPGRADE_MS} ms {verdict(ok)}; every worker kept")


def scale(arguments):
    count = arguments.scale
    timeout = ready_timeout(arguments, count, scale=True)
    print(f"scale: {count} mounts, READY awaited up to {timeout:.0f} s; mountsupd starts with soft "
          f"RLIMIT_NOFILE {arguments.nofile}")
    try:
        launched = launcher_round(arguments, count, timeout)
        print(f"  launcher:  all {count} ready after {launched['ready']:.0f} ms, stopped in "
              f"{launched['stop']:.0f} ms", flush=True)
    except BenchFailure as error:
        launched = None
        print(f"  launcher FAILED: {error}", flush=True)

    started = time.monotonic()

    def progress(daemon, elapsed):
        try:
            state = (f"mountsupd CPU {daemon.cpu_seconds():.1f} s, RSS {daemon.rss_kib() / 1024:.0f} "
                     f"MiB, last STATUS {clip(daemon.last_status, 120)!r}")
        except OSError:
            state = "mountsupd gone"
        log(f"  … {elapsed:.0f} s: {len(mounts_under(daemon.sandbox.root, True))} FUSE mounts; {state}")

    try:
        result = daemon_round(arguments, count, timeout, progress=progress)
    except BenchFailure as error:
        print(f"  mountsupd FAILED after {time.monotonic() - started:.1f} s: {error}")
        return
    ratio = f" ({result['ready'] / launched['ready']:.2f}× the launcher)" if launched else ""
    print(f"  mountsupd: READY after {result['ready']:.0f} ms{ratio}, CPU {result['cpu']:.0f} ms "
          f"({result['cpu'] / count:.3f} ms per mount), RSS {result['rss'] / 1024:.1f} MiB, "
          f"stopped in {result['stop']:.0f} ms")
    for note in result["notes"]:
        print(f"  note: {note}")


def main():
    sys.stdout.reconfigure(line_buffering=True)
    arguments = parse_arguments()
    install_signal_handlers()
    try:
        if arguments.scale:
            scale(arguments)
        else:
            results = table(arguments)
            summary(results)
            if arguments.idle > 0:
                idle(arguments)
            if arguments.upgrade > 0:
                upgrade(arguments)
    except Interrupted as interruption:
        log(f"\ninterrupted ({interruption}); cleaning up")
        return 130
    finally:
        cleanup_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
