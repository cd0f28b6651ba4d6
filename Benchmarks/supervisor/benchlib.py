"""Shared parts of the supervisor benchmarks (bench.py, fairness.py).

Sandboxes (a temporary root per run) that clean up after themselves on every path, mountsupd
with a NOTIFY_SOCKET receiver, the C launcher, and waiting without busy polling and always with
a deadline. Nothing here touches a mount or a process outside a sandbox this script created: a
process belongs to a sandbox when its command line names the sandbox's unique root.
"""
import ctypes
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class BenchFailure(Exception):
    """A measured program failed; the message says how, with its output's tail."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP: stop measuring and clean up."""


def install_signal_handlers():
    def interrupt(signum, frame):
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def check_binaries(parser, arguments, *extra):
    """Sets arguments.worker and arguments.daemon from arguments.bin and checks that they and
    `extra` are executable, and that this runs as root; a parser error otherwise."""
    arguments.worker = os.path.join(arguments.bin, "mountsup-testworker")
    arguments.daemon = os.path.join(arguments.bin, "mountsupd")
    for path in (arguments.worker, arguments.daemon, *extra):
        if not os.access(path, os.X_OK):
            parser.error(f"{path} is missing (build it first)")
    if os.geteuid() != 0:
        parser.error("run as root: the workers mount FUSE filesystems")


def log(text):
    print(text, file=sys.stderr, flush=True)


def median(values):
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _unescape(field):
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(root, fuse_only=False):
    """Mountpoints (unescaped) strictly below root, in mount-table order."""
    found = []
    prefix = root.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            fstype = line.split(" - ", 1)[1].split()[0]
            mountpoint = _unescape(fields[4])
            if mountpoint.startswith(prefix) and (not fuse_only or fstype.startswith("fuse")):
                found.append(mountpoint)
    return found


def processes_naming(root):
    """Pids (not ours) whose command line contains root."""
    needle = root.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if needle in cmdline.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def detach(path):
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        error = ctypes.get_errno()
        if error not in (22, 2):  # EINVAL: not a mount (any more); ENOENT
            subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)


def wait_exit(pid, timeout):
    """Waits (pidfd, no polling) up to timeout seconds for pid to exit. True when it has."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0, timeout) * 1000))
    finally:
        os.close(fd)


_sandboxes = []


class SandboxBase:
    """A tmpfs of the benchmark's own under which every sandbox is made (unmounted by
    cleanup_all). On the ext4 root of these machines a mkdir costs ~0.1 ms once the benchmark's
    own churn has filled the inode tables with recently deleted inodes (ext4's recently_deleted()
    scan): both sides would pay it, but it is the file system's cost, not the supervisor's, and it
    hid a third of the daemon's CPU. Without a tmpfs (mount failed) sandboxes go to /tmp."""

    path = None

    @classmethod
    def get(cls):
        if cls.path is None:
            candidate = tempfile.mkdtemp(prefix="mountsup-benchfs-")
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "mountsup-bench",
                                      candidate], stderr=subprocess.DEVNULL).returncode == 0
            if not mounted:
                os.rmdir(candidate)
                candidate = tempfile.gettempdir()
            cls.path, cls.mounted = candidate, mounted
        return cls.path

    @classmethod
    def release(cls):
        if cls.path is None or not cls.mounted or mounts_under(cls.path):
            return
        detach(cls.path)
        try:
            os.rmdir(cls.path)
        except OSError as error:
            log(f"warning: cannot remove {cls.path}: {error}")
        cls.path = None


class Sandbox:
    """A temporary root; cleanup() kills every process naming it, detaches every mount under it
    (deepest first) and removes it."""

    def __init__(self, label="bench"):
        self.root = tempfile.mkdtemp(prefix=f"mountsup-{label}-", dir=SandboxBase.get())
        _sandboxes.append(self)

    def path(self, name):
        return os.path.join(self.root, name)

    def cleanup(self):
        if self not in _sandboxes:
            return
        pids = processes_naming(self.root)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            wait_exit(pid, 5)
        for _ in range(5):
            mounts = mounts_under(self.root)
            if not mounts:
                break
            for mountpoint in sorted(mounts, key=lambda p: -p.count("/")):
                detach(mountpoint)
        left = mounts_under(self.root)
        if left:
            log(f"warning: {len(left)} mounts remain under {self.root}; not removing it")
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", self.root])
        _sandboxes.remove(self)


def cleanup_all():
    """For the last finally: no signal may interrupt the cleanup."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    for sandbox in list(_sandboxes):
        sandbox.cleanup()
    SandboxBase.release()


def tail(path, lines=15, width=300):
    try:
        with open(path, "rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            size = log_file.tell()
            log_file.seek(max(0, size - 256 * 1024))
            text = log_file.read().decode(errors="replace").splitlines()
    except OSError:
        return "(no output)"
    picked = [line if len(line) <= width else line[:width] + "…" for line in text[-lines:]]
    return "\n".join("    | " + line for line in picked) or "    | (no output)"


def first_problems(path, count=3, width=300):
    """The first lines of a log at WARNING or above, and the head of a crash report (the
    Swift runtime's backtrace), where the cause usually is."""
    found, crash, crash_left = [], [], 0
    try:
        with open(path, "rb") as log_file:
            for raw in log_file:
                line = raw.decode(errors="replace").rstrip("\n")
                short = line if len(line) <= width else line[:width] + "…"
                if crash_left > 0:
                    if line.strip():
                        crash.append(short)
                        crash_left -= 1
                elif not crash and ("crashed" in line.lower() or "fatal error" in line.lower()):
                    crash.append(short)
                    crash_left = 8
                elif len(found) < count and line.split(" ", 1)[0] in ("WARNING", "ERROR",
                                                                      "CRITICAL"):
                    found.append(short)
    except OSError:
        return ""
    text = ""
    if found:
        text += "  its first warnings:\n" + "\n".join("    | " + line for line in found) + "\n"
    if crash:
        text += "  its crash report begins:\n" + "\n".join("    | " + line for line in crash) + "\n"
    return text


def clip(text, width=240):
    if text is None:
        return None
    return text if len(text) <= width else text[:width] + "…"


def exit_text(status):
    if status is None:
        return "running"
    return f"status {status}" if status >= 0 else f"signal {signal.Signals(-status).name}"


def toml_string(text):
    return json.dumps(text)


class Daemon:
    """mountsupd over a generated mounts.toml in a sandbox, with a NOTIFY_SOCKET receiver.

    mounts: list of (name, [argv...], {extra key: TOML literal}). "{mountpoint}" in argv is
    substituted by the daemon. The daemon starts with soft RLIMIT_NOFILE `nofile` (hard limit
    unchanged): it is expected to raise its own limit."""

    def __init__(self, daemon_path, sandbox, mounts, nofile=1024, log_tail_bytes=None):
        self.daemon_path = daemon_path
        # With log_tail_bytes, the daemon's output (which carries every line its workers print)
        # goes through `tail -c` and only its end reaches the log file: a spewing worker would
        # otherwise write gigabytes. The file is then written when the daemon exits.
        self.log_tail_bytes = log_tail_bytes
        self.tail_process = None
        self.sandbox = sandbox
        self.nofile = nofile
        self.config = sandbox.path("mounts.toml")
        self.control_socket = sandbox.path("control.sock")
        self.log_path = sandbox.path("mountsupd.log")
        with open(self.config, "w") as config:
            config.write(f"[supervisor]\ncontrol_socket = {toml_string(self.control_socket)}\n")
            for name, argv, extra in mounts:
                config.write(f"\n[mounts.{name}]\n")
                config.write(f"mountpoint = {toml_string(sandbox.path(name))}\n")
                config.write(f"command = [{', '.join(toml_string(a) for a in argv)}]\n")
                for key, literal in (extra or {}).items():
                    config.write(f"{key} = {literal}\n")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.notify.bind(sandbox.path("notify.sock"))
        self.process = None
        self.pidfd = None
        self.started_ns = None
        self.ready_ns = None
        self.last_status = None
        self._ready_r, self._ready_w = os.pipe2(os.O_CLOEXEC)
        self._quit_r, self._quit_w = os.pipe2(os.O_CLOEXEC)
        self._drainer = None

    @property
    def pid(self):
        return self.process.pid

    def start(self):
        environment = dict(os.environ, NOTIFY_SOCKET=self.sandbox.path("notify.sock"))
        if self.log_tail_bytes:
            with open(self.log_path, "wb") as log_file:
                self.tail_process = subprocess.Popen(
                    ["tail", "-c", str(self.log_tail_bytes)], stdin=subprocess.PIPE,
                    stdout=log_file, start_new_session=True)
            log_file = self.tail_process.stdin
        else:
            log_file = open(self.log_path, "wb")
        # The soft limit is lowered in this process around the spawn rather than in a
        # preexec_fn: a preexec_fn makes Python fork() instead of vfork(), which costs ~1.8 ms
        # here and would be charged to the daemon's time to READY.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(self.nofile, hard), hard))
        try:
            self.started_ns = time.monotonic_ns()
            self.process = subprocess.Popen(
                [self.daemon_path, "--config", self.config], env=environment,
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                start_new_session=True)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            log_file.close()
        self.pidfd = os.pidfd_open(self.process.pid)
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self):
        """Takes every datagram at once, as systemd does: the queue of a datagram socket holds
        only net.unix.max_dgram_qlen (10) messages, and a blocked sd_notify would stall the
        daemon. The first READY=1 is timed here, on arrival."""
        poller = select.poll()
        poller.register(self.notify, select.POLLIN)
        poller.register(self._quit_r, select.POLLIN)
        while True:
            events = poller.poll()
            if any(fd == self._quit_r for fd, _ in events):
                return
            try:
                message = self.notify.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            lines = message.split(b"\n")
            if self.ready_ns is None and b"READY=1" in lines:
                self.ready_ns = time.monotonic_ns()
                os.write(self._ready_w, b"r")
            for line in lines:
                if line.startswith(b"STATUS="):
                    self.last_status = line[7:].decode(errors="replace")

    def failure(self, what):
        if self.tail_process and self.process.poll() is not None:
            try:
                self.tail_process.wait(5)  # the log is complete once the daemon has exited
            except subprocess.TimeoutExpired:
                pass
        return BenchFailure(f"{what}\n{first_problems(self.log_path)}"
                            "  mountsupd output, last lines:\n"
                            f"{tail(self.log_path)}")

    def wait_ready(self, timeout, progress=None):
        """Seconds from the spawn until READY=1 on the NOTIFY_SOCKET. Raises BenchFailure when
        the daemon exits first or the deadline passes. progress(daemon, elapsed) is called every ~5 s."""
        poller = select.poll()
        poller.register(self._ready_r, select.POLLIN)
        poller.register(self.pidfd, select.POLLIN)
        deadline = time.monotonic() + timeout
        next_progress = time.monotonic() + 5
        while self.ready_ns is None:
            now = time.monotonic()
            if now >= deadline:
                raise self.failure(
                    f"no READY within {timeout:.0f} s ({len(mounts_under(self.sandbox.root, True))} "
                    f"FUSE mounts in the mount table, daemon {exit_text(self.process.poll())}, "
                    f"its last STATUS: {clip(self.last_status)!r})")
            wait = min(deadline, next_progress if progress else deadline) - now
            events = poller.poll(wait * 1000)
            if self.ready_ns is not None:
                break
            if any(fd == self.pidfd for fd, _ in events):
                # A READY sent just before the exit is still queued: let the drainer take it.
                select.select([self._ready_r], [], [], 0.2)
                if self.ready_ns is not None:
                    break
                status = self.process.wait()
                raise self.failure(
                    f"mountsupd exited ({exit_text(status)}) "
                    f"{(time.monotonic_ns() - self.started_ns) / 1e9:.1f} s after the start, "
                    f"before READY (its last STATUS: {clip(self.last_status)!r})")
            if progress and time.monotonic() >= next_progress:
                progress(self, (time.monotonic_ns() - self.started_ns) / 1e9)
                next_progress = time.monotonic() + 5
        return (self.ready_ns - self.started_ns) / 1e9

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def _stat_fields(self):
        with open(f"/proc/{self.pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()

    def cpu_seconds(self):
        """CPU time of the daemon, all its threads. utime+stime of /proc/PID/stat count in
        10 ms ticks (and include ended threads); the run time of the live threads in
        /proc/PID/task/*/schedstat is exact to the nanosecond but misses ended threads. Both
        are lower bounds: the larger is returned."""
        fields = self._stat_fields()
        ticks = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        exact = 0
        for task in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{task}/schedstat") as schedstat:
                    exact += int(schedstat.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return max(ticks, exact / 1e9)

    def control(self, command, timeout=30, **fields):
        """One request on a connection of its own; the decoded response."""
        request = json.dumps({"version": 1, "command": command, **fields}) + "\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect(self.control_socket)
            client.sendall(request.encode())
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = client.recv(1 << 20)
                if not chunk:
                    raise BenchFailure(f"mountsupd closed the connection; {command} unanswered")
                answer += chunk
        return json.loads(answer)

    def status_value(self, key):
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def rss_kib(self):
        return self.status_value("VmRSS")

    def threads(self):
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def context_switches(self):
        total = 0
        for task in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{task}/status") as status:
                    for line in status:
                        if "ctxt_switches" in line:
                            total += int(line.split()[1])
            except OSError:
                pass  # a thread that ended meanwhile
        return total

    def stop(self, timeout):
        """SIGTERM; seconds until the process has exited. BenchFailure after timeout (the daemon
        is then killed)."""
        if not self.alive():
            raise self.failure(f"mountsupd was not running at the stop ({exit_text(self.process.poll())})")
        start = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        if not wait_exit(self.pid, timeout):
            self.process.kill()
            self.process.wait()
            raise self.failure(f"mountsupd had not exited {timeout:.0f} s after SIGTERM (killed)")
        elapsed = time.monotonic() - start
        status = self.process.wait()
        if status != 0:
            raise self.failure(f"mountsupd exited with {exit_text(status)} after SIGTERM")
        return elapsed

    def close(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            if not wait_exit(self.pid, 15):
                self.process.kill()
            self.process.wait()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.tail_process:
            try:
                self.tail_process.wait(10)
            except subprocess.TimeoutExpired:
                self.tail_process.kill()
                self.tail_process.wait()
            self.tail_process = None
        if self._drainer:
            os.write(self._quit_w, b"q")
            self._drainer.join()
            self._drainer = None
        for fd in (self._ready_r, self._ready_w, self._quit_r, self._quit_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._ready_r = self._ready_w = self._quit_r = self._quit_w = -1
        self.notify.close()


class Launcher:
    """The C launcher (launcher.c) for `count` workers in a sandbox."""

    def __init__(self, launcher_path, worker_path, sandbox, count, worker_args=()):
        self.sandbox = sandbox
        self.count = count
        self.log_path = sandbox.path("launcher.log")
        log_file = open(self.log_path, "wb")
        try:
            self.started_ns = time.monotonic_ns()
            self.process = subprocess.Popen(
                [launcher_path, worker_path, sandbox.root, str(count), *worker_args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
                start_new_session=True)
        finally:
            log_file.close()
        self.buffer = b""

    def _line(self, deadline):
        """The next stdout line, or None at EOF. BenchFailure at the deadline."""
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchFailure(f"launcher: no answer within the deadline\n{tail(self.log_path)}")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def _expect(self, key, timeout):
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(deadline)
            if line is None:
                status = self.process.wait()
                raise BenchFailure(f"launcher exited ({exit_text(status)}) without {key}\n"
                                   f"{tail(self.log_path)}")
            fields = dict(item.split("=", 1) for item in line.split(" ") if "=" in item)
            if line.startswith("error="):
                raise BenchFailure(f"launcher: {line[6:]}")
            if key in fields:
                return fields

    def wait_ready(self, timeout):
        """(ms from the spawn of the launcher to all confirmed, the launcher's own ready_ms)."""
        fields = self._expect("ready_ms", timeout)
        return (int(fields["ready_ns"]) - self.started_ns) / 1e6, float(fields["ready_ms"])

    def stop(self, timeout):
        """The launcher's stop_ms (unmount all, every worker exited)."""
        try:
            self.process.stdin.write(b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it exited: _expect reports how
        fields = self._expect("stop_ms", timeout)
        self.process.wait()
        return float(fields["stop_ms"])

    def close(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the launcher then stops its workers
            if not wait_exit(self.process.pid, 70):
                self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
