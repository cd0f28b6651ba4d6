"""Fairness of mountsupd: one mount must not starve the others, nor a client the mounts.

1. A noisy worker (`mountsup-testworker --spew`, lines of --spew-line-length bytes) beside 10
   quiet ones. Measured: the latency of `mountctl status` (--status-count calls: median and
   max), `mountctl restart` of a quiet mount against the same in a run without the noisy mount,
   whether `mountctl logs -f NOISY` read slowly (1 KiB/s) stays connected for --follow-seconds,
   whether `mountctl logs NOISY` succeeds when the kept lines exceed 4 MiB, and the daemon's RSS
   sampled every second (first/max/last).
2. In the run without noise: a quiet worker is SIGKILLed while --pipeline-clients clients each
   pipeline --pipeline-requests `status` requests (all written at once, then read; a client
   starts over when its batch is done or cut off). Measured: the time from the kill until the
   mount serves again (its state is ready with a new worker, and a stat of a file inside it
   works), against the same kill without those clients.

Every wait has a deadline; every mount and process made here is removed on every path.
"""
import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from benchlib import (check_binaries, BenchFailure, Daemon, Interrupted, Sandbox, cleanup_all,
                      install_signal_handlers, log, median, wait_exit)

TARGET_STATUS_MS = 50        # mountctl status with a noisy mount, max of the calls
TARGET_RESTART_RATIO = 2.0   # restart of a quiet mount, noise / no noise
TARGET_RECOVERY_RATIO = 2.0  # killed mount serving again, pipelining clients / none
FOUR_MIB = 4 << 20

verdicts = []


def record(name, value, ok):
    """ok: True, False or None (could not be judged)."""
    verdicts.append((name, value, ok))
    mark = {True: "PASS", False: "FAIL", None: "n/a"}[ok]
    print(f"  {name:<72} {value:<40} {mark}", flush=True)


def parse_arguments():
    parser = argparse.ArgumentParser(
        prog="Benchmarks/supervisor/fairness.sh",
        description="mountsupd fairness: a noisy worker, pipelining clients, a killed worker.")
    parser.add_argument("bin", help="the release build directory")
    parser.add_argument("--follow-seconds", type=float, default=30,
                        help="how long `logs -f NOISY` is read slowly (default 30)")
    parser.add_argument("--follow-rate", type=int, default=1024,
                        help="bytes per second read from `logs -f` (default 1024)")
    parser.add_argument("--spew-line-length", type=int, default=65536,
                        help="the noisy worker's line length (default 65536: 200 kept lines are "
                             "12.5 MiB)")
    parser.add_argument("--status-count", type=int, default=20,
                        help="mountctl status calls (default 20)")
    parser.add_argument("--restarts", type=int, default=5,
                        help="mountctl restart calls per run, median (default 5)")
    parser.add_argument("--settle", type=float, default=2,
                        help="seconds of noise before measuring (default 2)")
    parser.add_argument("--pipeline-clients", type=int, default=3, help="(default 3)")
    parser.add_argument("--pipeline-requests", type=int, default=10000,
                        help="status requests each client writes at once (default 10000)")
    parser.add_argument("--kill-rounds", type=int, default=3,
                        help="kills with and without the clients, alternating, median; "
                             "at most 4 (default 3)")
    parser.add_argument("--restart-delay", metavar="DURATION",
                        help="restart_delay of the quiet mounts, e.g. 10ms (default: the "
                             "daemon's default, 100ms, which is part of every recovery)")
    parser.add_argument("--nofile", type=int, default=1024,
                        help="mountsupd's soft RLIMIT_NOFILE at its start (default 1024)")
    parser.add_argument("--timeout", type=float, default=30,
                        help="deadline in seconds for each wait: READY, a command, a recovery "
                             "(default 30)")
    arguments = parser.parse_args()
    arguments.kill_rounds = max(1, min(arguments.kill_rounds, 4))
    arguments.mountctl = os.path.join(arguments.bin, "mountctl")
    check_binaries(parser, arguments, arguments.mountctl)
    return arguments


class RssSampler(threading.Thread):
    """The daemon's RSS once a second."""

    def __init__(self, daemon):
        super().__init__(daemon=True)
        self.daemon_process = daemon
        self.samples = []
        self.finish = threading.Event()

    def run(self):
        while True:
            try:
                self.samples.append(self.daemon_process.rss_kib())
            except OSError:
                return
            if self.finish.wait(1.0):
                return

    def stop(self):
        self.finish.set()
        self.join(5)

    def report(self, label):
        if not self.samples:
            record(f"{label}: daemon RSS bounded", "no samples", None)
            return
        first, highest, last = self.samples[0], max(self.samples), self.samples[-1]
        # "Bounded": no more than 64 MiB over its size at the start of the run, and not still
        # climbing at the end (the last sample within 10% of the maximum is fine either way).
        grown = highest - first
        middle = self.samples[len(self.samples) // 2]
        rising = " (still rising at the end)" if last > middle * 1.1 + 1024 else ""
        record(f"{label}: daemon RSS (MiB, {len(self.samples)} samples) first / max / last",
               f"{first / 1024:.1f} / {highest / 1024:.1f} / {last / 1024:.1f}{rising}",
               grown <= 64 * 1024)


def mountctl(arguments, daemon, command, *words, timeout=None, stdout=subprocess.PIPE):
    """(ms, CompletedProcess or None on timeout) of `mountctl COMMAND --socket S WORDS...`."""
    start = time.monotonic()
    try:
        done = subprocess.run([arguments.mountctl, command, "--socket", daemon.control_socket,
                               *words], stdout=stdout, stderr=subprocess.PIPE,
                              timeout=timeout or arguments.timeout)
    except subprocess.TimeoutExpired:
        return (time.monotonic() - start) * 1000, None
    return (time.monotonic() - start) * 1000, done


def short(data, width=200):
    text = (data or b"").decode(errors="replace").strip().replace("\n", " | ")
    return text if len(text) <= width else text[:width] + "…"


def require_alive(daemon, step):
    if not daemon.alive():
        raise daemon.failure(f"mountsupd died before {step}")


class Control:
    """One connection speaking the JSON-lines protocol, every call with a deadline."""

    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buffer = b""

    def request(self, payload, timeout):
        self.sock.settimeout(max(0.001, timeout))
        self.sock.sendall(json.dumps(payload).encode() + b"\n")
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise BenchFailure("mountsupd closed the control connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def mount(self, name, timeout):
        answer = self.request({"version": 1, "command": "status", "names": [name]}, timeout)
        if not answer.get("ok"):
            raise BenchFailure(f"status {name}: {answer.get('error')}")
        return answer["mounts"][0]

    def close(self):
        self.sock.close()


def status_latency(arguments, daemon, label):
    times, codes = [], []
    for _ in range(arguments.status_count):
        require_alive(daemon, "mountctl status")
        elapsed, done = mountctl(arguments, daemon, "status")
        times.append(elapsed)
        codes.append(done.returncode if done else "timeout")
    bad = [code for code in codes if code not in (0, 3)]
    value = f"median {median(times):.1f} ms, max {max(times):.1f} ms"
    if bad:
        value += f"; {len(bad)} failed ({bad[0]})"
    return times, value, not bad


def restart_times(arguments, daemon, name):
    times, problems = [], []
    for _ in range(arguments.restarts):
        require_alive(daemon, f"mountctl restart {name}")
        elapsed, done = mountctl(arguments, daemon, "restart", name)
        if done is None:
            problems.append(f"timed out after {elapsed / 1000:.0f} s")
        elif done.returncode != 0:
            problems.append(f"exit {done.returncode}: {short(done.stderr)}")
        else:
            times.append(elapsed)
    return times, problems


def logs_whole(arguments, daemon, sandbox):
    """`mountctl logs noisy` into a file: (ok, value text, kept bytes)."""
    path = sandbox.path("logs-noisy.out")
    with open(path, "wb") as output:
        elapsed, done = mountctl(arguments, daemon, "logs", "noisy", stdout=output)
    size = os.path.getsize(path)
    with open(path, "rb") as output:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: output.read(1 << 20), b""))
    os.unlink(path)
    if done is None:
        return False, f"timed out after {elapsed / 1000:.0f} s ({size} bytes)", size
    if done.returncode != 0:
        return False, f"exit {done.returncode}: {short(done.stderr)}", size
    return True, f"{size / (1 << 20):.1f} MiB, {lines} lines in {elapsed:.0f} ms", size


def logs_follow(arguments, daemon):
    """Reads `mountctl logs -f noisy` at --follow-rate for --follow-seconds; then drains fast
    for 3 s: an EOF then means the daemon had dropped it (mountctl was still writing out what
    it had received). (ok, value text)."""
    process = subprocess.Popen(
        [arguments.mountctl, "logs", "--socket", daemon.control_socket, "noisy", "-f"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    received, ended_at, rate = 0, None, arguments.follow_rate
    try:
        fd = process.stdout.fileno()
        start = time.monotonic()
        next_read = start
        while time.monotonic() - start < arguments.follow_seconds:
            # 1 KiB each second, in one read: a slow consumer, on purpose.
            time.sleep(max(0, next_read - time.monotonic()))
            next_read += 1.0
            readable, _, _ = select.select([fd], [], [], 0)
            if readable:
                chunk = os.read(fd, rate)
                if not chunk:
                    ended_at = time.monotonic() - start
                    break
                received += len(chunk)
        still_running = process.poll() is None
        drained, drain_end = 0, time.monotonic() + 3
        if ended_at is None:
            while time.monotonic() < drain_end:
                readable, _, _ = select.select([fd], [], [], max(0, drain_end - time.monotonic()))
                if not readable:
                    continue
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    ended_at = time.monotonic() - start
                    break
                drained += len(chunk)
        if ended_at is None and process.poll() is None:
            return True, (f"connected after {arguments.follow_seconds:g} s ({received} B read "
                          f"slowly, then {drained / (1 << 20):.1f} MiB in 3 s)")
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        error = short(process.stderr.read()) if process.poll() is not None else ""
        when = (f"its output ended at {ended_at:.1f} s" if ended_at is not None
                else "it exited")
        slow = "" if still_running else " (before the fast drain)"
        return False, (f"DISCONNECTED: {when}{slow}, exit {process.poll()}: {error or 'no message'}")
    finally:
        if process.poll() is None:
            process.terminate()
            if not wait_exit(process.pid, 5):
                process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


class PipelineClient(threading.Thread):
    """Writes `requests` status requests at once, then reads their answers; starts over until
    stopped. Counts answers, batches cut off by the daemon, errors."""

    def __init__(self, path, requests, timeout):
        super().__init__(daemon=True)
        self.path, self.requests, self.timeout = path, requests, timeout
        self.payload = b'{"version":1,"command":"status"}\n' * requests
        self.finish = threading.Event()
        self.sending = threading.Event()
        self.sock = None
        self.answers = self.batches = self.complete = self.cut = 0
        self.errors = []
        self.error_codes = {}

    def run(self):
        while not self.finish.is_set():
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                self.sock = sock
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                self.sending.set()
                self.batches += 1
                try:
                    sock.sendall(self.payload)
                except (BrokenPipeError, ConnectionResetError) as error:
                    # Dropped while writing: what it answered before, and why, is still there.
                    self.errors.append(f"while writing: {type(error).__name__}")
                got, rest = 0, b""
                while got < self.requests:
                    try:
                        chunk = sock.recv(1 << 20)
                    except ConnectionResetError:
                        chunk = b""
                    if not chunk:
                        break
                    data = rest + chunk
                    lines = data.split(b"\n")
                    rest = lines.pop()
                    got += len(lines)
                    for line in lines:
                        if b'"ok":false' in line.replace(b" ", b""):
                            try:
                                code = json.loads(line)["error"]["code"]
                            except (ValueError, KeyError, TypeError):
                                code = "unparsable"
                            self.error_codes[code] = self.error_codes.get(code, 0) + 1
                self.answers += got
                if got >= self.requests:
                    self.complete += 1
                else:
                    self.cut += 1
            except OSError as error:  # includes socket.timeout
                if not self.finish.is_set():
                    self.cut += 1
                    self.errors.append(f"{type(error).__name__}: {error}")
            finally:
                if self.sock:
                    self.sock.close()
                self.sock = None

    def stop(self):
        self.finish.set()
        sock = self.sock
        if sock:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.join(10)


def stat_works(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def kill_and_recover(arguments, daemon, sandbox, name):
    """SIGKILL of the mount's worker; seconds until its state is ready with a new worker, and
    until a stat of `hello` in it works; (recovery, ready, stat). BenchFailure on a deadline."""
    control = Control(daemon.control_socket, arguments.timeout)
    try:
        before = control.mount(name, arguments.timeout)
        old = before.get("pid")
        if before.get("state") != "ready" or not old:
            raise BenchFailure(f"{name} is not ready before the kill: {before.get('detail')}")
        with open(f"/proc/{old}/cmdline", "rb") as cmdline:
            if sandbox.root.encode() not in cmdline.read():
                raise BenchFailure(f"pid {old} is not this benchmark's worker")
        pidfd = os.pidfd_open(old)
        start = time.monotonic()
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            select.select([pidfd], [], [], arguments.timeout)  # until it is really gone
        finally:
            os.close(pidfd)

        found = {}

        def watch_stat():  # a thread: a stat on a FUSE mount can block
            while "stat" not in found and not found.get("give up"):
                if stat_works(sandbox.path(f"{name}/hello")):
                    found["stat"] = time.monotonic() - start
                    return
                time.sleep(0.002)

        watcher = threading.Thread(target=watch_stat, daemon=True)
        watcher.start()
        deadline = start + arguments.timeout
        try:
            while "ready" not in found:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchFailure(f"{name} not ready again within {arguments.timeout:.0f} s")
                state = control.mount(name, remaining)
                if state.get("state") == "ready" and state.get("pid") not in (None, old):
                    found["ready"] = time.monotonic() - start
                else:
                    time.sleep(0.002)
            watcher.join(max(0, deadline - time.monotonic()))
            if "stat" not in found:
                raise BenchFailure(f"a stat inside {name} did not work within "
                                   f"{arguments.timeout:.0f} s of the kill")
        finally:
            found["give up"] = True
        return max(found["ready"], found["stat"]), found["ready"], found["stat"]
    finally:
        control.close()


def quiet_mounts(arguments):
    extra = {"restart_delay": json.dumps(arguments.restart_delay)} if arguments.restart_delay else None
    return [(f"q{index}", [arguments.worker, "{mountpoint}"], extra) for index in range(10)]


def noisy_run(arguments):
    print(f"\n1. a noisy worker (--spew, {arguments.spew_line_length}-byte lines) beside 10 quiet "
          "ones", flush=True)
    sandbox = Sandbox("fair")
    noisy = ("noisy", [arguments.worker, "--spew", "--spew-line-length",
                       str(arguments.spew_line_length), "{mountpoint}"], None)
    daemon = Daemon(arguments.daemon, sandbox, [noisy] + quiet_mounts(arguments),
                    arguments.nofile, log_tail_bytes=1 << 20)
    sampler = None
    results = {}
    try:
        daemon.start()
        daemon.wait_ready(arguments.timeout)
        sampler = RssSampler(daemon)
        sampler.start()
        cpu_start, wall_start = daemon.cpu_seconds(), time.monotonic()
        time.sleep(arguments.settle)  # let the noise build up
        times, value, ok = status_latency(arguments, daemon, "noise")
        results["status"] = times
        record(f"mountctl status with noise ({arguments.status_count}×), max < "
               f"{TARGET_STATUS_MS} ms", value, ok and max(times) < TARGET_STATUS_MS)
        restarts, problems = restart_times(arguments, daemon, "q0")
        results["restart"] = restarts
        results["restart_problems"] = problems
        whole_ok, whole_value, kept = logs_whole(arguments, daemon, sandbox)
        if whole_ok and kept <= FOUR_MIB:
            record("mountctl logs noisy (kept lines > 4 MiB)",
                   whole_value + " — not over 4 MiB, so not judged", None)
        else:
            record("mountctl logs noisy (kept lines > 4 MiB)", whole_value, whole_ok)
        require_alive(daemon, "mountctl logs -f")
        follow_ok, follow_value = logs_follow(arguments, daemon)
        record(f"mountctl logs -f noisy, read at {arguments.follow_rate} B/s for "
               f"{arguments.follow_seconds:g} s, stays connected", follow_value, follow_ok)
        require_alive(daemon, "the end of the noisy run")
        busy = (daemon.cpu_seconds() - cpu_start) / (time.monotonic() - wall_start)
        print(f"  (mountsupd used {busy * 100:.0f}% of a core during the noisy run)")
    except BenchFailure as error:
        record("noisy run", f"FAILED: {error}", False)
    finally:
        if sampler:
            sampler.stop()
            sampler.report("noisy run")
        daemon.close()
        sandbox.cleanup()
    return results


def quiet_run(arguments, noisy_results):
    print("\n2. the same without the noisy worker; then kills of quiet workers with and without "
          f"{arguments.pipeline_clients} clients pipelining {arguments.pipeline_requests} status "
          "requests each", flush=True)
    sandbox = Sandbox("fair")
    daemon = Daemon(arguments.daemon, sandbox, quiet_mounts(arguments), arguments.nofile,
                    log_tail_bytes=1 << 20)
    sampler = None
    try:
        daemon.start()
        daemon.wait_ready(arguments.timeout)
        sampler = RssSampler(daemon)
        sampler.start()
        times, value, ok = status_latency(arguments, daemon, "quiet")
        record("mountctl status without noise (reference)", value, ok)
        restarts, problems = restart_times(arguments, daemon, "q0")
        noisy_restarts = noisy_results.get("restart") or []
        all_problems = noisy_results.get("restart_problems", []) + problems
        if restarts and noisy_restarts and not all_problems:
            ratio = median(noisy_restarts) / median(restarts)
            record(f"mountctl restart q0, noise / no noise ≤ {TARGET_RESTART_RATIO}×",
                   f"{median(noisy_restarts):.1f} / {median(restarts):.1f} ms = {ratio:.2f}×",
                   ratio <= TARGET_RESTART_RATIO)
        else:
            record(f"mountctl restart q0, noise / no noise ≤ {TARGET_RESTART_RATIO}×",
                   "; ".join(all_problems) or "no restart measured", False)

        alone, loaded, totals = [], [], []
        mount_names = iter(f"q{index}" for index in range(1, 10))
        for round_index in range(arguments.kill_rounds):
            order = (False, True) if round_index % 2 == 0 else (True, False)
            for with_clients in order:
                require_alive(daemon, "a kill")
                name = next(mount_names)
                clients = []
                if with_clients:
                    clients = [PipelineClient(daemon.control_socket, arguments.pipeline_requests,
                                              arguments.timeout)
                               for _ in range(arguments.pipeline_clients)]
                    for client in clients:
                        client.start()
                    for client in clients:
                        client.sending.wait(arguments.timeout)
                    time.sleep(0.3)  # the daemon is busy with them now
                try:
                    recovery, ready, stat = kill_and_recover(arguments, daemon, sandbox, name)
                    busy_during = all(client.is_alive() for client in clients)
                finally:
                    for client in clients:
                        client.stop()
                (loaded if with_clients else alone).append(recovery)
                detail = (f"ready {ready * 1000:.1f} ms, stat {stat * 1000:.1f} ms")
                if with_clients:
                    totals.append(clients)
                    detail += ("; clients: " + ", ".join(
                        f"{c.answers} answers/{c.batches} batches ({c.cut} cut)" for c in clients))
                    if not busy_during:
                        detail += "; a client had stopped before the recovery"
                log(f"  kill {name} {'with' if with_clients else 'without'} clients: serves again "
                    f"after {recovery * 1000:.1f} ms ({detail})")
        ratio = median(loaded) / median(alone)
        delay = arguments.restart_delay or "100ms (default)"
        record(f"killed quiet worker serving again, clients / none ≤ {TARGET_RECOVERY_RATIO}×"
               f" (restart_delay {delay})",
               f"{median(loaded) * 1000:.1f} / {median(alone) * 1000:.1f} ms = {ratio:.2f}×",
               ratio <= TARGET_RECOVERY_RATIO)
        answers = sum(c.answers for clients in totals for c in clients)
        batches = sum(c.batches for clients in totals for c in clients)
        complete = sum(c.complete for clients in totals for c in clients)
        codes = {}
        for clients in totals:
            for client in clients:
                for code, number in client.error_codes.items():
                    codes[code] = codes.get(code, 0) + number
        errors = [e for clients in totals for c in clients for e in c.errors]
        kinds = {}
        for error in errors:
            kinds[error] = kinds.get(error, 0) + 1
        print(f"  pipelining clients: {answers} answers in {batches} batches, {complete} complete, "
              f"{batches - complete} cut off" + (f"; error answers {codes}" if codes else "")
              + (f"; errors {kinds}" if kinds else ""))
        require_alive(daemon, "the end of the quiet run")
    except BenchFailure as error:
        record("quiet run", f"FAILED: {error}", False)
    finally:
        if sampler:
            sampler.stop()
            sampler.report("quiet run")
        daemon.close()
        sandbox.cleanup()


def main():
    sys.stdout.reconfigure(line_buffering=True)
    arguments = parse_arguments()
    install_signal_handlers()
    print(f"mountsupd fairness (targets: status < {TARGET_STATUS_MS} ms, restart ≤ "
          f"{TARGET_RESTART_RATIO}×, recovery ≤ {TARGET_RECOVERY_RATIO}×; mountsupd starts with "
          f"soft RLIMIT_NOFILE {arguments.nofile})")
    try:
        noisy = noisy_run(arguments)
        quiet_run(arguments, noisy)
    except Interrupted as interruption:
        log(f"\ninterrupted ({interruption}); cleaning up")
        return 130
    finally:
        cleanup_all()
    failed = [name for name, _, ok in verdicts if ok is False]
    unjudged = [name for name, _, ok in verdicts if ok is None]
    print(f"\nchecks: {len(verdicts) - len(failed) - len(unjudged)} passed, {len(failed)} failed, "
          f"{len(unjudged)} not judged")
    for name in failed:
        print(f"  FAILED: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
