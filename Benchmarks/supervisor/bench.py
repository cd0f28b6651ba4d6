"""Measures mountsupd against starting the same FUSE workers by hand.

Each figure is taken in the same run as its baseline; results are medians of several rounds.
Every mount and process this script makes is removed on every path (try/finally).
"""
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
WORKER = os.path.join(BIN, "mountsup-testworker")
DAEMON = os.path.join(BIN, "mountsupd")
ROUNDS = 5


def fuse_mounts_under(root):
    with open("/proc/self/mountinfo") as table:
        return [line.split()[4] for line in table if line.split(" - ")[1].startswith("fuse") and line.split()[4].startswith(root + "/")]


def wait_for_mounts(root, count, deadline=60):
    """Waits on mountinfo's POLLPRI (no busy polling) until `count` FUSE mounts are under root."""
    end = time.monotonic() + deadline
    with open("/proc/self/mountinfo") as watched:
        poller = select.poll()
        poller.register(watched, select.POLLPRI | select.POLLERR)
        while len(fuse_mounts_under(root)) < count:
            watched.seek(0)
            watched.read()
            if len(fuse_mounts_under(root)) >= count:
                break
            if time.monotonic() > end:
                raise RuntimeError(f"only {len(fuse_mounts_under(root))} of {count} mounts appeared")
            poller.poll(1000)


def detach_all(root):
    for mountpoint in reversed(fuse_mounts_under(root)):
        subprocess.run(["umount", "-l", mountpoint], stderr=subprocess.DEVNULL)


def direct(count):
    root = tempfile.mkdtemp(prefix="mountsup-bench-")
    workers = []
    try:
        for index in range(count):
            os.makedirs(f"{root}/m{index}")
        start = time.monotonic()
        for index in range(count):
            workers.append(subprocess.Popen([WORKER, f"{root}/m{index}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_mounts(root, count)
        return time.monotonic() - start
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait()
        detach_all(root)
        subprocess.run(["rm", "-rf", root])


class Supervised:
    """mountsupd with a NOTIFY_SOCKET receiver, for `count` test-worker mounts."""

    def __init__(self, count):
        self.root = tempfile.mkdtemp(prefix="mountsup-bench-")
        self.count = count
        with open(f"{self.root}/mounts.toml", "w") as config:
            config.write(f'[supervisor]\ncontrol_socket = "{self.root}/control.sock"\n')
            for index in range(count):
                config.write(f'[mounts.m{index}]\nmountpoint = "{self.root}/m{index}"\ncommand = ["{WORKER}", "{{mountpoint}}"]\n')
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(f"{self.root}/notify.sock")
        self.process = None

    def start_until_ready(self):
        environment = dict(os.environ, NOTIFY_SOCKET=f"{self.root}/notify.sock")
        start = time.monotonic()
        self.process = subprocess.Popen([DAEMON, "--config", f"{self.root}/mounts.toml"], env=environment, stderr=subprocess.DEVNULL)
        self.notify.settimeout(60)
        while b"READY=1" not in self.notify.recv(65536):
            pass
        return time.monotonic() - start

    def status(self, key):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def context_switches(self):
        total = 0
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            with open(f"/proc/{self.process.pid}/task/{task}/status") as status:
                for line in status:
                    if "ctxt_switches" in line:
                        total += int(line.split()[1])
        return total

    def cpu_seconds(self):
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        detach_all(self.root)
        self.notify.close()
        subprocess.run(["rm", "-rf", self.root])


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def main():
    print(f"{'mounts':>6} {'direct (ms)':>12} {'mountsupd (ms)':>15} {'ratio':>7}")
    for count in (1, 10, 100):
        baseline, supervised = [], []
        for _ in range(ROUNDS):
            baseline.append(direct(count))
            run = Supervised(count)
            try:
                supervised.append(run.start_until_ready())
            finally:
                run.close()
        b, s = median(baseline) * 1000, median(supervised) * 1000
        print(f"{count:>6} {b:>12.1f} {s:>15.1f} {s / b:>7.2f}")

    run = Supervised(100)
    try:
        run.start_until_ready()
        rss = run.status("VmRSS")
        cpu = run.cpu_seconds()
        before = run.context_switches()
        time.sleep(10)  # the measurement itself: how often an idle supervisor wakes in 10 s
        idle = run.context_switches() - before
        print(f"\nat 100 mounts: RSS {rss / 1024:.1f} MiB, CPU time to READY {cpu * 1000:.0f} ms, "
              f"wake-ups over 10 idle seconds: {idle}")
    finally:
        run.close()


if __name__ == "__main__":
    main()
