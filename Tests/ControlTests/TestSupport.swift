import Foundation
import Glibc
import MountControl
import MountSupTestSupport
import Testing

let mountctl = binDirectory + "/mountctl"

/// Polls `condition` until it holds, failing after `timeout`; never a bare sleep. The condition
/// is tried once more after the deadline: in a parallel run the cooperative pool can be taken by
/// other tests' blocking waits for longer than the timeout, and this task resumes only after it.
func waitFor(
  _ what: @autoclosure () -> String, timeout: Duration = .seconds(15),
  _ condition: () throws -> Bool
) async throws {
  let deadline = ContinuousClock.now + timeout
  var lastError: (any Error)?
  while true {
    let late = ContinuousClock.now >= deadline
    do {
      if try condition() { return }
    } catch let failure as TestFailure {
      throw failure
    } catch {
      lastError = error
    }
    if late { break }
    try await Task.sleep(for: .milliseconds(20))
  }
  throw TestFailure(
    "timed out after \(timeout) waiting for \(what())\(lastError.map { " (last error: \($0))" } ?? "")"
  )
}

/// What a finished `mountctl` run left.
struct Run: CustomStringConvertible {
  var status: Int32
  var output: String
  var errors: String

  var description: String { "exit \(status)\nstdout:\n\(output)\nstderr:\n\(errors)" }
}

/// One mount of a test configuration, served by `mountsup-testworker`.
struct TestMount {
  var name: String
  var arguments: [String] = []
  /// More TOML lines for the mount's table.
  var settings: [String] = []
  /// Values that replace the test defaults (`restart_delay`, `stop_timeout`), as TOML literals.
  var overrides: [String: String] = [:]
}

/// A `mountsupd` of a test, in a sandbox of its own (mountpoints, control socket, config, logs).
/// `finish()` cleans up on every path: the daemon stopped, then the sandbox.
final class TestDaemon {
  let sandbox: Sandbox
  let configPath: String
  var socketPath: String
  private(set) var process: Daemon?
  private var runs = 0

  init() throws {
    sandbox = try Sandbox()
    configPath = sandbox.path + "/mounts.toml"
    socketPath = sandbox.path + "/run/control.sock"
  }

  var directory: String { sandbox.path }

  func mountpoint(_ name: String) -> String { "\(directory)/mnt/\(name)" }

  /// Writes the configuration (the socket path, fast restarts, short stop timeouts).
  func write(_ mounts: [TestMount], supervisor: [String] = []) throws {
    let sections = mounts.map { mount in
      mountSection(
        mount.name, at: mountpoint(mount.name), workerOptions: mount.arguments,
        ["restart_delay": "\"50ms\"", "stop_timeout": "\"3s\""].merging(mount.overrides) { $1 })
        + mount.settings.map { $0 + "\n" }.joined()
    }
    try sandbox.writeConfig(
      sections.joined(separator: "\n"), controlSocket: socketPath, supervisor: supervisor)
  }

  /// Writes a configuration of ready-made `[mounts.NAME]` tables (any worker).
  func write(sections: [String], supervisor: [String] = []) throws {
    try sandbox.writeConfig(
      sections.joined(separator: "\n"), controlSocket: socketPath, supervisor: supervisor)
  }

  /// Starts the daemon and waits until its control socket answers.
  func start(notify: NotifyReceiver? = nil, passing socket: Int32? = nil) async throws {
    // LISTEN_PID must be the daemon's own pid: a shell learns it and execs into the daemon.
    let launcher =
      socket == nil ? [] : ["/bin/sh", "-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""]
    let daemon = try Daemon(
      config: configPath, sandbox: sandbox, notify: notify, launcher: launcher,
      passing: socket.map { [$0] } ?? [])
    process = daemon
    try await waitFor("mountsupd to answer on \(socketPath)\n\(log)") {
      if let code = daemon.exitCode(within: .zero) {
        throw TestFailure("mountsupd exited with \(code):\n\(log)")
      }
      return (try? status()) != nil
    }
  }

  var log: String { process?.log ?? "" }

  /// `status` straight through the protocol (for polling; commands go through `mountctl`).
  func status(_ names: [String] = []) throws -> ControlResponse {
    try ControlClient(socketPath: socketPath).request(
      ControlRequest(.status, names: names), timeout: .seconds(5))
  }

  func mount(_ name: String) throws -> MountStatus {
    guard let mount = try status([name]).mounts?.first else {
      throw TestFailure("no status for \(name)")
    }
    return mount
  }

  /// Runs `mountctl ARGS --socket THIS` to completion; as `nobody` (no groups but `nogroup`)
  /// when asked.
  func ctl(_ arguments: String..., asNobody: Bool = false, timeout: Duration = .seconds(60))
    async throws -> Run
  {
    try await ctl(arguments, asNobody: asNobody, timeout: timeout)
  }

  func ctl(_ arguments: [String], asNobody: Bool = false, timeout: Duration = .seconds(60))
    async throws -> Run
  {
    let spawned = try spawnCtl(arguments, asNobody: asNobody)
    let status = try await spawned.wait(timeout: timeout)
    return Run(status: status, output: spawned.output, errors: spawned.errors)
  }

  /// Starts `mountctl` without waiting for it.
  func spawnCtl(_ arguments: [String], asNobody: Bool = false) throws -> Spawned {
    runs += 1
    let prefix =
      asNobody ? ["/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] : []
    return try Spawned(
      prefix + [mountctl] + arguments + ["--socket", socketPath],
      outputPath: "\(directory)/ctl-\(runs).out", errorPath: "\(directory)/ctl-\(runs).err")
  }

  /// Stops the daemon if it runs (SIGTERM, wait, SIGKILL); the exit status of a clean stop.
  @discardableResult
  func stop() -> Int32? {
    defer { process = nil }
    return process?.stop()
  }

  /// Stops the daemon if it still runs and cleans the sandbox up.
  func finish() {
    stop()
    sandbox.cleanUp()
  }
}

/// Runs `body` with a daemon of its own, always stopping it and cleaning up afterwards.
func withDaemon(
  _ mounts: [TestMount], supervisor: [String] = [], _ body: (TestDaemon) async throws -> Void
) async throws {
  let daemon = try TestDaemon()
  defer { daemon.finish() }
  try daemon.write(mounts, supervisor: supervisor)
  try await daemon.start()
  try await body(daemon)
}

/// A raw connection for clients that misbehave on purpose.
final class RawClient {
  let fd: Int32

  init(_ path: String) throws {
    fd = try unixSocket(Int32(SOCK_STREAM.rawValue), at: path, "connect to") {
      connect($0, $1, $2)
    }
  }

  deinit { close(fd) }

  func send(_ text: String) { send(Array(text.utf8)) }

  func send(_ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
      let count = bytes[offset...].withUnsafeBytes {
        Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
      }
      guard count > 0 else { return }
      offset += count
    }
  }

  /// Whether something (data or EOF) is there to read right now.
  var hasInput: Bool {
    var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    return poll(&poller, 1, 0) > 0
  }

  /// Everything until a newline, or EOF (nil), within `timeout`.
  func readLine(timeout: Duration = .seconds(10)) throws -> String? {
    var line: [UInt8] = []
    let deadline = ContinuousClock.now + timeout
    while true {
      var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
      let left = ContinuousClock.now.duration(to: deadline)
      guard left > .zero else {
        throw TestFailure("no line within \(timeout); got \(line.count) bytes")
      }
      guard poll(&poller, 1, Int32(left.components.seconds * 1000 + 1)) > 0 else { continue }
      var byte: UInt8 = 0
      let count = read(fd, &byte, 1)
      if count <= 0 { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
      if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
      line.append(byte)
    }
  }

  func response(timeout: Duration = .seconds(10)) throws -> ControlResponse {
    guard let line = try readLine(timeout: timeout) else { throw TestFailure("connection closed") }
    return try ControlProtocol.decode(ControlResponse.self, from: Array(line.utf8))
  }
}
