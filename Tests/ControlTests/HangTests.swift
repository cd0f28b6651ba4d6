import Foundation
import Glibc
import MountControl
import MountSupTestSupport
import Testing

/// Accesses of a mount that the test starts and may leave blocked on a hung server: each is
/// killed and reaped at the end, whatever happened (a process blocked on a request its server
/// had read is released when the connection is aborted or the server is gone: the daemon's stop
/// does that first).
final class Accesses {
  private(set) var started: [Spawned] = []
  let directory: String

  init(in directory: String) { self.directory = directory }

  /// Starts `arguments` (an absolute path first) with its output in the sandbox.
  @discardableResult
  func start(_ arguments: [String]) throws -> Spawned {
    let number = started.count + 1
    let spawned = try Spawned(
      arguments, outputPath: "\(directory)/access-\(number).out",
      errorPath: "\(directory)/access-\(number).err")
    started.append(spawned)
    return spawned
  }

  func finish() {
    for access in started where !access.poll() { kill(access.pid, SIGKILL) }
    for access in started { _ = access.waitBlocking(timeout: .seconds(20)) }
  }
}

/// The daemon's threads, open descriptors and zombie children, to see that nothing leaks.
struct DaemonResources: Equatable, CustomStringConvertible {
  var threads: Int
  var descriptors: Int
  var zombies: Int

  init(of pid: Int32) {
    let count = { (path: String) in
      (try? FileManager.default.contentsOfDirectory(atPath: path).count) ?? -1
    }
    threads = count("/proc/\(pid)/task")
    descriptors = count("/proc/\(pid)/fd")
    let children = (readFile("/proc/\(pid)/task/\(pid)/children") ?? "").split(separator: " ")
    zombies =
      children.filter { child in
        let stat = readFile("/proc/\(child)/stat") ?? ""
        return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
      }.count
  }

  var description: String { "\(threads) threads, \(descriptors) descriptors, \(zombies) zombies" }
}

/// Whether the process waits for the answer to a FUSE request.
func isWaitingOnFUSE(_ process: Spawned) -> Bool {
  (readFile("/proc/\(process.pid)/wchan") ?? "").contains("request_wait_answer")
}

@Suite("Hung mounts: found, aborted and restarted without a person")
struct HangTests {
  /// A mount that stops answering once `hang` is looked up in it.
  func hangingMount(_ name: String, hangTimeout: String = "\"2s\"") -> TestMount {
    TestMount(
      name: name, arguments: ["--hang-on", "hang"], settings: ["hang_timeout = \(hangTimeout)"],
      overrides: ["stop_timeout": "\"1s\""])
  }

  @Test("a worker that stops answering: blocked processes get an error, the mount serves again")
  func hungWorkerIsRecovered() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    try daemon.write([hangingMount("alpha"), TestMount(name: "beta")])
    let notify = try NotifyReceiver(in: daemon.sandbox)
    try await daemon.start(notify: notify)
    do {
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let before = try daemon.mount("alpha")
      let mountpoint = daemon.mountpoint("alpha")
      let accesses = Accesses(in: daemon.directory)
      defer { accesses.finish() }

      let trigger = try accesses.start(["/usr/bin/stat", "\(mountpoint)/hang"])
      // (Or already released: a busy machine may keep this task waiting past the hang_timeout.)
      try await waitFor("the stat blocked on the hung mount") {
        isWaitingOnFUSE(trigger) || trigger.poll()
      }
      let blocked = try accesses.start(["/bin/cat", "\(mountpoint)/hello"])
      // hang_timeout (2 s) plus one check period (500 ms), and the margin of a loaded machine.
      try await waitFor("the blocked processes to be released", timeout: .seconds(8)) {
        trigger.poll() && blocked.poll()
      }
      func aborted(_ access: Spawned) -> Bool {
        access.status != 0
          && (access.errors.contains("Software caused connection abort")
            || access.errors.contains("Transport endpoint is not connected"))
      }
      #expect(aborted(trigger), "\(trigger.errors)")
      // Queued behind the hung request, unless this task was kept waiting past the hang_timeout
      // (a busy machine): then it came after the abort, to the empty mountpoint between the
      // detach and the new mount, or to the new worker.
      let cameAfter =
        blocked.output == "hello from alpha\n"
        || blocked.errors.contains("No such file or directory")
      #expect(aborted(blocked) || cameAfter, "\(blocked.errors)")

      try await waitFor("alpha ready again with a new worker") {
        let now = try daemon.mount("alpha")
        return now.isReady && now.pid != before.pid
      }
      let after = try daemon.mount("alpha")
      #expect(after.hangs == 1 && after.restarts == 1)
      let error = try #require(after.lastError)
      #expect(
        error.hasPrefix("hung: statfs of \(mountpoint) unanswered for 2s, ")
          && error.contains("requests waiting; connection aborted, worker killed"), "\(error)")
      #expect(readFile("\(mountpoint)/hello") == "hello from alpha\n", "it serves again")
      #expect(daemon.log.contains("ERROR alpha: hung: statfs of \(mountpoint)"))
      #expect(try daemon.mount("beta").hangs == 0 && (try daemon.mount("beta").restarts) == 0)

      let table = try await daemon.ctl("status", "alpha")
      #expect(table.output.contains("hung: statfs of"), "\(table)")
      let json = try await daemon.ctl("status", "--json", "alpha")
      #expect(json.output.contains("\"hangs\" : 1"), "\(json)")
      // The metrics count it as a failure of kind hang.
      let metrics = try await daemon.ctl("metrics").output.split(separator: "\n")
      #expect(
        metrics.contains {
          $0.hasPrefix("mountsup_mount_failures_total{") && $0.contains("mount=\"alpha\"")
            && $0.contains("kind=\"hang\"") && $0.hasSuffix(" 1")
        }, "\(metrics)")
      // The service manager's STATUS said it while the mount was down.
      #expect(
        notify.drain().contains {
          // "stopping after: hung: …", or, when the receiver's queue was full and a later
          // STATUS took its place, "restarting after: hung: …".
          $0.text.contains("STATUS=") && $0.text.contains("after: hung: statfs of \(mountpoint)")
        }, "\(notify.messages.map(\.text))")
    }
  }

  @Test("a slow worker that keeps answering under load is never declared hung")
  func slowWorkerIsNotHung() async throws {
    let slow = TestMount(
      name: "slow", arguments: ["--slow", "1000"], settings: ["hang_timeout = \"2s\""])
    try await withDaemon([slow]) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let before = try daemon.mount("slow")
      let accesses = Accesses(in: daemon.directory)
      defer { accesses.finish() }
      // Three hang timeouts of continuous load: every request takes half of hang_timeout.
      let script = """
        end=$(($(date +%s) + 7)); while [ "$(date +%s)" -lt "$end" ]; do \
        cat "$0/hello" > /dev/null || exit 1; ls "$0" > /dev/null || exit 1; done
        """
      let load = try (1...4).map { _ in
        try accesses.start(["/bin/sh", "-c", script, daemon.mountpoint("slow")])
      }
      try await waitFor("the load to end", timeout: .seconds(30)) { load.allSatisfy { $0.poll() } }
      for process in load { #expect(process.status == 0, "\(process.errors)") }
      let after = try daemon.mount("slow")
      #expect(after.hangs == 0 && after.pid == before.pid && after.isReady, "\(after)")
      #expect(!daemon.log.contains("hung:"))
    }
  }

  @Test("mountctl abort: the same recovery on an operator's word; admins only")
  func operatorAbort() async throws {
    try await withDaemon(
      [hangingMount("alpha", hangTimeout: "0")], supervisor: ["status_group = \"nogroup\""]
    ) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let before = try daemon.mount("alpha")
      let refused = try await daemon.ctl("abort", "alpha", asNobody: true)
      #expect(refused.status == 77 && refused.errors.contains("permission denied"), "\(refused)")
      #expect(try daemon.mount("alpha").pid == before.pid)

      let accesses = Accesses(in: daemon.directory)
      defer { accesses.finish() }
      let blocked = try accesses.start(["/usr/bin/stat", "\(daemon.mountpoint("alpha"))/hang"])
      // hang_timeout = 0: nothing but the operator ends this.
      try await waitFor("stat blocked on the hung mount") { isWaitingOnFUSE(blocked) }

      let abort = try await daemon.ctl("abort", "alpha")
      #expect(abort.status == 0, "\(abort)")
      let after = try daemon.mount("alpha")
      #expect(abort.output == "alpha: ready (pid \(after.pid!))\n", "\(abort)")
      #expect(after.pid != before.pid && after.hangs == 0)
      #expect(after.lastError?.hasPrefix("aborted by an operator (mountctl abort)") == true)
      try await waitFor("the blocked stat released") { blocked.poll() }
      #expect(blocked.status != 0)

      #expect(try await daemon.ctl("stop", "alpha").status == 0)
      let idle = try await daemon.ctl("abort", "alpha")
      #expect(idle.status == 1 && idle.errors.contains("no worker runs to abort"), "\(idle)")
    }
  }

  @Test("50 hangs in a row leak no thread, descriptor or zombie")
  func manyHangs() async throws {
    let hanging = TestMount(
      name: "alpha", arguments: ["--hang-after", "0"],
      settings: ["hang_timeout = \"500ms\"", "start_limit_burst = 1000"],
      overrides: ["stop_timeout": "\"200ms\"", "restart_delay": "0"])
    try await withDaemon([hanging, TestMount(name: "beta")]) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let pid = try #require(daemon.process?.pid)
      let baseline = DaemonResources(of: pid)
      let accesses = Accesses(in: daemon.directory)
      defer { accesses.finish() }
      // Each stat blocks until the connection is aborted, then the next one waits on the new
      // worker.
      let load = try accesses.start([
        "/bin/sh", "-c", "while :; do stat \"$0/hello\" > /dev/null 2>&1; sleep 0.05; done",
        daemon.mountpoint("alpha"),
      ])
      var highest = baseline
      try await waitFor("50 hangs", timeout: .seconds(240)) {
        let now = DaemonResources(of: pid)
        highest.threads = max(highest.threads, now.threads)
        return try daemon.mount("alpha").hangs >= 50
      }
      kill(load.pid, SIGKILL)
      try await waitFor("the daemon back at its baseline (\(baseline))", timeout: .seconds(20)) {
        let now = DaemonResources(of: pid)
        return now.threads <= baseline.threads && now.descriptors <= baseline.descriptors
          && now.zombies == 0
      }
      #expect(highest.threads <= baseline.threads + 3, "one probe thread at a time: \(highest)")
      #expect(try daemon.mount("beta").restarts == 0)
    }
  }
}
