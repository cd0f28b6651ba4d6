import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// The runtime's own guarantees, checked from outside: deadlines are facts, names of any length
/// work, a worker that prints without pause does not take the daemon over.
@Suite struct RuntimeShellTests {
  @Test("a READY read after the deadline is a timeout, even in the same loop turn as the timer")
  func lateReadyInTheSameTurnAsTheTimer() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/late"
    let marker = "\(sandbox.path)/ready-sent"
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection(
        "late", at: mountpoint, workerOptions: ["--ready-delay", "1500", "--ready-marker", marker],
        ["start_timeout": "\"1s\"", "restart": "\"never\""]))
    defer { daemon.stop() }
    // The worker mounts at once; once its mount is there, the daemon is stopped across the
    // deadline (1 s) and the late READY (1.5 s): continued, it reads both in one turn.
    #expect(eventually(within: .seconds(5)) { fuseMount(at: mountpoint) != nil })
    daemon.signal(SIGSTOP)
    let sent = eventually(within: .seconds(10)) { access(marker, F_OK) == 0 }
    daemon.signal(SIGCONT)
    #expect(sent, "the worker sent its READY while the daemon was stopped")
    #expect(daemon.exitCode() == 1, "log:\n\(daemon.log)")
    notify.drain()
    #expect(notify.count("READY=1") == 0)
    #expect(daemon.log.contains("no confirmed FUSE init within 1s"), "log:\n\(daemon.log)")
    #expect(fuseMount(at: mountpoint) == nil, "the late worker's mount was not cleaned")
  }

  @Test("a mount name of 200 characters, in mode notify, gets a NOTIFY_SOCKET that works")
  func longNameInNotifyMode() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let name = String(repeating: "n", count: 200)
    let mountpoint = "\(sandbox.path)/\(name)"
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection(
        name, at: mountpoint, workerOptions: ["--sd-notify"], ["readiness": "\"notify\""]))
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil, "log:\n\(daemon.log)")
    #expect(fuseMount(at: mountpoint) != nil)
  }

  @Test("a worker that prints without pause: status answers, its output is rate-limited and said")
  func noisyWorker() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let socket = "\(sandbox.path)/control.sock"
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection("noisy", at: "\(sandbox.path)/noisy", workerOptions: ["--spew"])
        + mountSection("quiet", at: "\(sandbox.path)/quiet"))
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil, "log:\n\(daemon.log)")
    // Past the rate limit: the log keeps a bounded number of the noisy worker's lines.
    #expect(
      eventually(within: .seconds(20)) {
        ctl(["logs", "noisy", "-n", "1", "--socket", socket]).output.contains("spew")
      })
    for _ in 0..<5 {
      let began = ContinuousClock.now
      let status = ctl(["status", "--socket", socket])
      #expect(status.status == 0, "\(status.output)")
      #expect(ContinuousClock.now - began < .seconds(5), "status took too long")
    }
    let restart = ctl(["restart", "quiet", "--socket", socket])
    #expect(restart.status == 0, "\(restart.output)")
    // The lines the limit held back are said once the worker ends.
    #expect(ctl(["stop", "noisy", "--socket", socket]).status == 0)
    let logs = ctl(["logs", "noisy", "--socket", socket])
    #expect(logs.status == 0)
    #expect(logs.output.contains("lines dropped]"), "\(logs.output.suffix(500))")
  }
}

/// Runs mountctl to completion: its exit status and standard output.
private func ctl(_ arguments: [String]) -> (status: Int32, output: String) {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: binDirectory + "/mountctl")
  process.arguments = arguments
  let pipe = Pipe()
  process.standardOutput = pipe
  process.standardError = FileHandle.nullDevice
  guard (try? process.run()) != nil else { return (-1, "") }
  let data = pipe.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

@Suite struct DescriptorLimitTests {
  @Test("the daemon raises its soft descriptor limit; its workers get the one it inherited")
  func descriptorLimits() throws {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    guard limit.rlim_max > 1024 else { return }  // nothing to raise on this machine
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/limits"
    // The worker says its own soft limit before it becomes the test worker.
    let notify = try NotifyReceiver(in: sandbox)
    let config = try sandbox.writeConfig(
      mountSection(
        "limits", at: mountpoint,
        command: [
          "/bin/sh", "-c", "echo \"soft limit $(ulimit -n)\" >&2; exec \"$0\" \"$@\"", testWorker,
          "{mountpoint}",
        ]))
    let daemon = try Daemon(
      config: config, sandbox: sandbox, notify: notify,
      launcher: ["/usr/bin/prlimit", "--nofile=1024:\(limit.rlim_max)", "--"])
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil, "log:\n\(daemon.log)")
    // Output is read after readiness in a loop turn: READY may come first.
    #expect(eventually { daemon.log.contains("soft limit 1024") }, "log:\n\(daemon.log)")
    let limits = try String(contentsOfFile: "/proc/\(daemon.pid)/limits", encoding: .utf8)
    let line = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") } ?? ""
    let fields = line.split(separator: " ", omittingEmptySubsequences: true)
    #expect(fields.count >= 5 && fields[3] == fields[4], "soft = hard: \(line)")
  }
}

@Suite struct NotifySocketTests {
  @Test("a service manager that does not read its notify socket never stalls supervision")
  func unreadNotifySocket() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let names = (0..<12).map { "m\($0)" }
    // The receiver reads nothing until asked: its queue fills after about ten datagrams.
    let (notify, daemon) = try sandbox.startDaemon(
      names.map { mountSection($0, at: "\(sandbox.path)/\($0)") }.joined(separator: "\n"))
    defer { daemon.stop() }
    let socket = "\(sandbox.path)/control.sock"
    #expect(
      eventually(within: .seconds(20)) {
        let status = unreadNotifyStatus(socket)
        return status.contains("12/12 mounts ready")
      }, "the daemon answers while its notifications wait:\n\(daemon.log)")
    // Once the receiver reads, what waited arrives, READY included, in order.
    #expect(notify.wait { $0.contains("READY=1") } != nil)
  }
}

/// `mountctl status --json`'s service status text.
private func unreadNotifyStatus(_ socket: String) -> String {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: binDirectory + "/mountctl")
  process.arguments = ["status", "--json", "--socket", socket]
  let pipe = Pipe()
  process.standardOutput = pipe
  process.standardError = FileHandle.nullDevice
  guard (try? process.run()) != nil else { return "" }
  let data = pipe.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  return String(decoding: data, as: UTF8.self)
}
