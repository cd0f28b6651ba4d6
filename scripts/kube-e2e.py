#!/usr/bin/env python3
"""Runs deploy/kubernetes for real on this machine with `podman kube play`, and checks it.

What it shows, in order:
  1. the DaemonSet's pod starts; its readiness probe (the manifest's own command) fails while a
     required mount is not confirmed yet, and passes once it is;
  2. the mounts are visible on the host (under the hostPath) and inside the consumer pod, which
     its init container (`mountctl wait-ready`) held back until then;
  3. a worker killed inside the pod is restarted, and the consumer sees the new mount;
  4. a changed ConfigMap is applied by a reload, without restarting the pod.

Podman 4.3 plays Pods, not DaemonSets, so the DaemonSet's pod template is played as a Pod (what
the DaemonSet controller would create on this node). Podman does not update ConfigMap volumes
either, so the ConfigMap is laid out in a host directory exactly as the kubelet's atomic writer
does (`..<timestamp>/mounts.toml`, `..data` -> it, `mounts.toml` -> `..data/mounts.toml`) and a
change is made the kubelet's way: a new directory and a rename of `..data`. Host paths are moved
into a directory of this run, pods get names of this run; everything is removed on every path.

Exit status: 0 all checks passed, 1 a check failed, 77 podman cannot run here (the reason is
printed). Run as root; it runs scripts/build-image.sh first, so the image is the current code.
`--check` only tells (0 or 77) whether it could run here.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "localhost/mountsup:latest"
SKIP = 77


def log(text):
    print(f"kube-e2e: {text}", flush=True)


class CheckFailed(Exception):
    pass


def run(*arguments, check=True, timeout=120, env=None):
    """Runs a command; returns (status, stdout, stderr)."""
    result = subprocess.run(
        arguments, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and result.returncode != 0:
        raise CheckFailed(
            f"{' '.join(arguments)} exited with {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.returncode, result.stdout, result.stderr


def wait_for(what, condition, timeout=60.0):
    """Waits until condition() returns a true value (tried every 100 ms) and returns it."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        late = time.monotonic() >= deadline
        try:
            value = condition()
            if value:
                return value
        except (CheckFailed, subprocess.TimeoutExpired, OSError) as error:
            last = error
        if late:
            raise CheckFailed(f"timed out after {timeout} s waiting for {what}" + (f" (last: {last})" if last else ""))
        time.sleep(0.1)


def fuse_mounts_under(path):
    """Mountpoints of FUSE mounts at or below path, from this process's mount table."""
    found = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            separator = fields.index("-")
            mountpoint = fields[4].encode().decode("unicode_escape")
            if fields[separator + 1].startswith("fuse") and (
                mountpoint == path or mountpoint.startswith(path + "/")
            ):
                found.append(mountpoint)
    return found


def preconditions():
    """The reason podman cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/setup.sh installs it)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    status, out, err = run("podman", "info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if status != 0:
        return f"podman info failed: {err.strip() or out.strip()}"
    return None


class Run:
    def __init__(self):
        self.work = tempfile.mkdtemp(prefix="mountsup-kube-e2e.")
        self.suffix = str(os.getpid())
        self.mounts = os.path.join(self.work, "mnt")
        self.control = os.path.join(self.work, "run")
        self.config = os.path.join(self.work, "config")
        self.pod = f"mountsup-e2e-{self.suffix}"
        self.consumer = f"mountsup-e2e-consumer-{self.suffix}"
        self.played = []
        self.bound = False
        self.versions = 0
        self.daemon_log = ""

    # MARK: Setup

    def manifests(self):
        with open(os.path.join(ROOT, "deploy/kubernetes/mountsup.yaml")) as file:
            documents = list(yaml.safe_load_all(file))
        with open(os.path.join(ROOT, "deploy/kubernetes/consumer.yaml")) as file:
            consumer = yaml.safe_load(file)
        configmap = next(d for d in documents if d["kind"] == "ConfigMap")
        daemonset = next(d for d in documents if d["kind"] == "DaemonSet")
        return configmap, daemonset, consumer

    def relocate(self, volumes, configmap_name=None):
        """Host paths of this run instead of the node's; the ConfigMap as a host directory."""
        for volume in volumes:
            host = volume.get("hostPath")
            if host and host["path"] == "/mnt/mountsup":
                host["path"] = self.mounts
            elif host and host["path"] == "/run/mountsup":
                host["path"] = self.control
            elif volume.get("configMap", {}).get("name") == configmap_name:
                del volume["configMap"]
                volume["hostPath"] = {"path": self.config, "type": "Directory"}

    def write_config(self, text):
        """Writes a ConfigMap version the way the kubelet's atomic writer does."""
        self.versions += 1
        version = f"..2026_11_30_00_00_0{self.versions}.{self.suffix}"
        os.makedirs(os.path.join(self.config, version))
        with open(os.path.join(self.config, version, "mounts.toml"), "w") as file:
            file.write(text)
        link = os.path.join(self.config, "..data")
        if not os.path.lexists(link):
            os.symlink(version, link)
            os.symlink("..data/mounts.toml", os.path.join(self.config, "mounts.toml"))
            return
        os.symlink(version, os.path.join(self.config, "..data_tmp"))
        os.rename(os.path.join(self.config, "..data_tmp"), link)

    def setup(self):
        os.makedirs(self.mounts)
        os.makedirs(self.control)
        os.makedirs(self.config)
        # Bidirectional propagation needs a shared mount at the source, as on a Kubernetes node.
        run("mount", "--bind", self.mounts, self.mounts)
        self.bound = True
        run("mount", "--make-rshared", self.mounts)
        # The gate of the mount that keeps the pod unready until this script opens it.
        os.mkfifo(os.path.join(self.control, "gate"))

        configmap, daemonset, consumer = self.manifests()
        self.base_config = configmap["data"]["mounts.toml"]
        # One more required mount, whose worker waits for the gate: the probe must fail until
        # it is confirmed.
        self.write_config(
            self.base_config
            + '\n[mounts.gated]\nmountpoint = "/mnt/mountsup/gated"\n'
            + 'command = ["/bin/sh", "-c", "read go < /run/mountsup/gate && exec mountsup-mirror '
            + '/srv/mountsup-demo \\"$0\\"", "{mountpoint}"]\n'
            + 'required = true\nstart_timeout = "5m"\n'
        )

        template = daemonset["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.pod, "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
        }
        # A priority class is the scheduler's; there is none here.
        pod["spec"].pop("priorityClassName", None)
        self.relocate(pod["spec"]["volumes"], configmap["metadata"]["name"])
        container = pod["spec"]["containers"][0]
        self.readiness = container["readinessProbe"]["exec"]["command"]
        self.liveness = container["livenessProbe"]["exec"]["command"]
        self.daemon_container = f"{self.pod}-{container['name']}"

        consumer["metadata"]["name"] = self.consumer
        # Podman 4.3 removes a "once" init container right after it exits and sometimes finds
        # it still running; "always" keeps it (a podman matter, not the manifest's).
        consumer["metadata"].setdefault("annotations", {})[
            "io.podman.annotations.init.container.type"
        ] = "always"
        self.relocate(consumer["spec"]["volumes"])
        self.app_container = f"{self.consumer}-{consumer['spec']['containers'][0]['name']}"

        self.pod_file = os.path.join(self.work, "daemon-pod.yaml")
        self.consumer_file = os.path.join(self.work, "consumer.yaml")
        with open(self.pod_file, "w") as file:
            yaml.safe_dump(pod, file)
        with open(self.consumer_file, "w") as file:
            yaml.safe_dump(consumer, file)

    # MARK: Helpers

    def play(self, path):
        self.played.append(path)
        run("podman", "kube", "play", path, timeout=300)

    def exec(self, container, *command, check=False):
        return run("podman", "exec", container, *command, check=check, timeout=60)

    def status(self, name):
        """The mount's status object; CheckFailed while mountsupd does not answer or does not
        know the mount (yet)."""
        status, out, err = self.exec(self.daemon_container, "mountctl", "status", name, "--json")
        try:
            return json.loads(out)["mounts"][0]
        except (ValueError, KeyError, IndexError):
            raise CheckFailed(f"mountctl status {name} exited with {status}: {err.strip()}")

    def started_at(self, container):
        return run("podman", "inspect", "--format", "{{.State.StartedAt}} {{.RestartCount}}", container)[1].strip()

    def open_gate(self):
        path = os.path.join(self.control, "gate")

        def opened():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return False  # ENXIO: the worker has not opened its end yet
            os.write(fd, b"go\n")
            os.close(fd)
            return True

        wait_for("the gated worker to read its gate", opened)

    # MARK: The checks

    def check(self):
        started = time.monotonic()
        self.play(self.pod_file)
        log(f"played the DaemonSet's pod {self.pod} ({time.monotonic() - started:.1f} s)")

        # 1. Readiness fails while the gated mount waits, passes once it is confirmed.
        def probe():
            return self.exec(self.daemon_container, *self.readiness)

        first = wait_for("mountsupd to answer the readiness probe", lambda: (lambda r: r if r[0] != 4 else None)(probe()))
        if first[0] != 3:
            raise CheckFailed(f"readiness passed before the gated mount was confirmed: {first}")
        if self.status("gated")["state"] != "starting":
            raise CheckFailed(f"gated is not starting: {self.status('gated')}")
        log(f"readiness probe {' '.join(self.readiness)}: exit 3 (not ready) while gated waits")
        if self.exec(self.daemon_container, *self.liveness)[0] != 0:
            raise CheckFailed("the liveness probe fails while mountsupd answers")
        self.open_gate()
        wait_for("the readiness probe to pass", lambda: probe()[0] == 0, timeout=30)
        log("readiness probe: exit 0 once every required mount is confirmed")

        # 2. The mounts on the host and in the consumer.
        expected = sorted(os.path.join(self.mounts, name) for name in ("demo", "gated"))
        if sorted(fuse_mounts_under(self.mounts)) != expected:
            raise CheckFailed(f"FUSE mounts on the host: {fuse_mounts_under(self.mounts)}, expected {expected}")
        with open(os.path.join(self.mounts, "demo", "README")) as file:
            readme = file.read()
        log(f"on the host: FUSE mounts at {', '.join(expected)}; demo/README: {readme.strip()!r}")
        self.play(self.consumer_file)
        seen = wait_for(
            "the consumer to read the mount",
            lambda: (lambda r: r[1] if r[0] == 0 else None)(self.exec(self.app_container, "cat", "/data/demo/README")),
        )
        if seen != readme:
            raise CheckFailed(f"the consumer read {seen!r}, the host {readme!r}")
        log("in the consumer (after its init container's mountctl wait-ready): /data/demo/README is the same")

        # 3. A worker killed inside the pod is restarted; the consumer sees the new mount.
        before = self.status("demo")
        self.exec(self.daemon_container, "/bin/sh", "-c", f"kill -9 {before['pid']}", check=True)
        after = wait_for(
            "demo restarted and ready",
            lambda: (lambda s: s if s["state"] == "ready" and s["pid"] != before["pid"] else None)(self.status("demo")),
            timeout=30,
        )
        if after["restarts"] != before["restarts"] + 1:
            raise CheckFailed(f"restarts {before['restarts']} -> {after['restarts']}")
        wait_for(
            "the consumer to read the remounted demo",
            lambda: self.exec(self.app_container, "cat", "/data/demo/README")[1] == readme,
            timeout=30,
        )
        log(f"worker {before['pid']} killed with SIGKILL: restarted as {after['pid']} (restarts {after['restarts']}); the consumer reads it again")

        # 4. A ConfigMap change: reloaded by watch_config, the pod not restarted.
        daemon_started = self.started_at(self.daemon_container)
        self.write_config(
            self.base_config
            + '\n[mounts.gated]\nmountpoint = "/mnt/mountsup/gated"\n'
            + 'command = ["/bin/sh", "-c", "read go < /run/mountsup/gate && exec mountsup-mirror '
            + '/srv/mountsup-demo \\"$0\\"", "{mountpoint}"]\n'
            + 'required = true\nstart_timeout = "5m"\n'
            + '\n[mounts.extra]\nmountpoint = "/mnt/mountsup/extra"\n'
            + 'command = ["mountsup-mirror", "/srv/mountsup-demo", "{mountpoint}"]\n'
        )
        wait_for("the added mount extra to be ready", lambda: self.status("extra")["state"] == "ready", timeout=30)
        if self.started_at(self.daemon_container) != daemon_started:
            raise CheckFailed("the daemon's container was restarted by the ConfigMap change")
        if self.status("gated")["pid"] is None or self.status("demo")["pid"] != after["pid"]:
            raise CheckFailed("an unchanged mount was restarted by the reload")
        metrics = self.exec(self.daemon_container, "mountctl", "metrics", check=True)[1]
        if 'mountsup_reloads_total{result="applied"} 1' not in metrics:
            raise CheckFailed("the reload is not counted in the metrics:\n" + metrics)
        wait_for(
            "the consumer to see extra",
            lambda: self.exec(self.app_container, "cat", "/data/extra/README")[1] == readme,
            timeout=30,
        )
        log("ConfigMap changed (..data swapped): extra added by a reload, same container, unchanged mounts untouched, visible in the consumer")

    # MARK: Cleanup, on every path

    def cleanup(self):
        """Stops the pods (the daemon's last, as a node drains), removes everything; False if
        mounts were left behind. `podman kube down` alone would remove the pods without their
        grace period, killing mountsupd before it unmounts."""
        if self.pod_file in self.played:
            run("podman", "pod", "stop", "--time", "60", self.consumer, check=False, timeout=180)
            run("podman", "pod", "stop", "--time", "60", self.pod, check=False, timeout=180)
            self.daemon_log = "".join(run("podman", "logs", self.daemon_container, check=False)[1:])
        for path in reversed(self.played):
            run("podman", "kube", "down", path, check=False, timeout=180)
        # A worker killed mid-way may leave a mount; the stopped daemon should have left none.
        left = fuse_mounts_under(self.work)
        for mountpoint in sorted(left, reverse=True):
            run("umount", "-l", mountpoint, check=False)
        if self.bound:
            run("umount", "-l", self.mounts, check=False)
        shutil.rmtree(self.work, ignore_errors=True)
        if left:
            log(f"mounts left after the pod stopped (detached): {left}")
            return False
        return True


def main():
    os.environ["CONTAINERS_CONF"] = os.path.join(ROOT, "deploy/container/containers.conf")
    reason = preconditions()
    if reason:
        print(f"kube-e2e: SKIPPED: {reason}")
        return SKIP
    if sys.argv[1:] == ["--check"]:
        return 0
    started = time.monotonic()
    status, out, err = run(os.path.join(ROOT, "scripts/build-image.sh"), check=False, timeout=3000)
    if status != 0:
        print(f"kube-e2e: FAILED: the image did not build:\n{out}{err}")
        return 1
    log(f"image built ({time.monotonic() - started:.1f} s)")
    e2e = Run()
    failure = None
    try:
        e2e.setup()
        e2e.check()
    except (CheckFailed, subprocess.TimeoutExpired) as error:
        failure = str(error)
    except Exception:
        failure = traceback.format_exc()
    finally:
        clean = e2e.cleanup()
    if failure is None and not clean:
        failure = "mounts were left behind"
    if failure is not None:
        print(f"kube-e2e: FAILED: {failure}")
        print(f"the log of mountsupd:\n{e2e.daemon_log[-6000:]}")
        return 1
    log(f"all checks passed ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
