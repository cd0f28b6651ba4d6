import Foundation
import Glibc
import MountControl
import MountSupTestSupport
import Testing

@Suite("mountctl start, stop, restart, wait-ready, logs")
struct OperationTests {
  @Test("stop sticks, start and restart wait for ready, --no-block returns at once")
  func stopStartRestart() async throws {
    try await withDaemon([TestMount(name: "alpha"), TestMount(name: "beta")]) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let first = try daemon.mount("alpha")

      let stop = try await daemon.ctl("stop", "alpha")
      #expect(stop.status == 0, "\(stop)")
      #expect(stop.output == "alpha: stopped by operator\n")
      #expect(
        fuseMount(at: daemon.mountpoint("alpha")) == nil, "stop answers once the mount is gone")
      #expect(kill(first.pid!, 0) != 0, "and the worker too")
      var alpha = try daemon.mount("alpha")
      #expect(alpha.state == "stopped" && alpha.stoppedByOperator && alpha.pid == nil)

      // An operator's stop survives a reload, and wait-ready says why it will not be ready.
      #expect(try await daemon.ctl("reload").status == 0)
      #expect(try daemon.mount("alpha").state == "stopped")
      let waitStopped = try await daemon.ctl("wait-ready", "alpha")
      #expect(
        waitStopped.status == 1 && waitStopped.errors.contains("stopped by an operator"),
        "\(waitStopped)")
      let waitAll = try await daemon.ctl("wait-ready")
      #expect(
        waitAll.status == 0 && waitAll.output == "ready: beta\n",
        "without names: the mounts meant to run")

      let start = try await daemon.ctl("start", "alpha")
      #expect(start.status == 0, "\(start)")
      alpha = try daemon.mount("alpha")
      #expect(alpha.state == "ready" && !alpha.stoppedByOperator)
      #expect(start.output == "alpha: ready (pid \(alpha.pid!))\n")
      #expect(fuseMount(at: daemon.mountpoint("alpha")) != nil)

      let restart = try await daemon.ctl("restart", "alpha", "beta")
      #expect(restart.status == 0, "\(restart)")
      let restarted = try daemon.mount("alpha")
      #expect(
        restarted.state == "ready" && restarted.pid != alpha.pid
          && restarted.restarts == alpha.restarts,
        "an operator's restart is not counted with the automatic ones")
      #expect(try daemon.mount("beta").restarts == 0)

      let noBlockStop = try await daemon.ctl("stop", "beta", "--no-block")
      #expect(noBlockStop.status == 0, "\(noBlockStop)")
      #expect(
        noBlockStop.output.hasPrefix("beta: stopp"), "stopping or already stopped: \(noBlockStop)")
      try await waitFor("beta stopped") { try daemon.mount("beta").state == "stopped" }
      let noBlockStart = try await daemon.ctl("start", "beta", "--no-block")
      #expect(
        noBlockStart.status == 0 && noBlockStart.output.hasPrefix("beta: "), "\(noBlockStart)")
      let waited = try await daemon.ctl("wait-ready", "beta", "--timeout", "20s")
      #expect(waited.status == 0 && waited.output == "ready: beta\n", "\(waited)")

      let unknown = try await daemon.ctl("restart", "nosuch")
      #expect(unknown.status == 1 && unknown.errors.contains("\"nosuch\""))
      #expect(try daemon.mount("alpha").pid == restarted.pid, "a refused request changes nothing")
      let missingName = try await daemon.ctl("start")
      #expect(missingName.status != 0 && missingName.status != 4)
    }
  }

  @Test("a start that fails says why, in the worker's words")
  func failingStartReportsWhy() async throws {
    let broken = TestMount(
      name: "broken", arguments: ["--fail", "backend unreachable: connection refused"],
      settings: ["required = false", "start_limit_burst = 100"])
    try await withDaemon([TestMount(name: "alpha"), broken]) { daemon in
      let start = try await daemon.ctl("start", "broken")
      #expect(start.status == 1, "\(start)")
      #expect(start.errors.contains("start failed: broken:"))
      #expect(start.errors.contains("backend unreachable: connection refused"))
      #expect(
        start.errors.contains("  | testworker: backend unreachable"),
        "the worker's last output: \(start)")

      let wait = try await daemon.ctl("wait-ready", "--timeout", "5s", "alpha")
      #expect(wait.status == 0)
      let stop = try await daemon.ctl("stop", "broken")
      #expect(stop.status == 0, "\(stop)")
      #expect(try daemon.mount("broken").state == "stopped")
    }
  }

  @Test("wait-ready blocks until ready, times out with 3, fails fast with 1")
  func waitReady() async throws {
    let mounts = [
      TestMount(name: "slow", arguments: ["--mount-delay", "1500"]),
      TestMount(
        name: "silent", arguments: ["--no-ready"],
        settings: ["required = false", "start_timeout = \"60s\""]),
      TestMount(
        name: "broken", arguments: ["--fail", "no such bucket"],
        settings: ["required = false", "restart = \"never\""]),
    ]
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    try daemon.write(mounts)
    try await daemon.start()

    let slow = try await daemon.ctl("wait-ready", "slow")
    #expect(slow.status == 0, "\(slow)")
    #expect(try daemon.mount("slow").state == "ready", "answered once the mount was confirmed")

    let silent = try await daemon.ctl("wait-ready", "silent", "slow", "--timeout", "300ms")
    #expect(silent.status == 3, "\(silent)")
    #expect(
      silent.errors.contains("not ready within 300ms") && silent.errors.contains("silent: starting")
    )

    try await waitFor("broken failed") { try daemon.mount("broken").state == "failed" }
    let broken = try await daemon.ctl("wait-ready", "--timeout", "30s")
    #expect(broken.status == 1, "a failed mount ends the wait at once: \(broken)")
    #expect(broken.errors.contains("broken: failed") && broken.errors.contains("no such bucket"))

    let invalid = try await daemon.ctl("wait-ready", "--timeout", "soon")
    #expect(invalid.status == 64 && invalid.errors.contains("--timeout"), "\(invalid)")
  }

  @Test("logs: the captured output, -n, and -f streaming new lines")
  func logs() async throws {
    try await withDaemon([TestMount(name: "alpha")]) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let pid = try daemon.mount("alpha").pid!
      let all = try await daemon.ctl("logs", "alpha")
      #expect(all.status == 0, "\(all)")
      #expect(
        all.output.contains("testworker: pid \(pid) starting for \(daemon.mountpoint("alpha"))"))
      try await waitFor("the init line captured") {
        try ControlClient(socketPath: daemon.socketPath).request(
          ControlRequest(.logs, names: ["alpha"]), timeout: .seconds(5)
        )
        .lines?.contains("testworker: FUSE init done") == true
      }
      let last = try await daemon.ctl("logs", "alpha", "-n", "1")
      #expect(last.output == "testworker: FUSE init done\n", "\(last)")
      let none = try await daemon.ctl("logs", "alpha", "-n", "0")
      #expect(none.status == 0 && none.output.isEmpty)
      #expect(try await daemon.ctl("logs", "nosuch").status == 1)

      let follow = try daemon.spawnCtl(["logs", "alpha", "-n", "1", "-f"])
      defer {
        kill(follow.pid, SIGTERM)
        if !follow.waitBlocking(timeout: .seconds(10)) {
          Issue.record("mountctl logs -f ignored SIGTERM")
          kill(follow.pid, SIGKILL)
          _ = follow.waitBlocking(timeout: .seconds(10))
        }
      }
      try await waitFor("the follower's backlog") {
        follow.output == "testworker: FUSE init done\n"
      }
      #expect(try await daemon.ctl("restart", "alpha").status == 0)
      let next = try daemon.mount("alpha").pid!
      try await waitFor("new lines streamed to the follower") {
        follow.output.contains("testworker: session ended")
          && follow.output.contains("testworker: pid \(next) starting")
      }
      #expect(!follow.poll(), "a follower keeps following")
    }
  }
}
