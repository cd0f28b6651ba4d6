import Foundation
import Glibc
import MountControl
import Testing

/// A condition that did not come true in time, or a helper that could not do its job.
struct TestFailure: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// Where `swift test` put the built products: beside the test runner.
let productsDirectory: String = {
  let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
  return (path as NSString).deletingLastPathComponent
}()

let testWorker = productsDirectory + "/mountsup-testworker"
let mountctl = productsDirectory + "/mountctl"
let mountsupd = productsDirectory + "/mountsupd"

/// Polls `condition` until it holds, failing after `timeout`; never a bare sleep.
func waitFor(
  _ what: @autoclosure () -> String, timeout: Duration = .seconds(15),
  _ condition: () throws -> Bool
) async throws {
  let deadline = ContinuousClock.now + timeout
  var lastError: (any Error)?
  while ContinuousClock.now < deadline {
    do {
      if try condition() { return }
    } catch let failure as TestFailure {
      throw failure
    } catch {
      lastError = error
    }
    try await Task.sleep(for: .milliseconds(20))
  }
  throw TestFailure(
    "timed out after \(timeout) waiting for \(what())\(lastError.map { " (last error: \($0))" } ?? "")"
  )
}

/// The FUSE mounts whose mountpoint lies under `directory` (or is it), deepest first.
func fuseMounts(under directory: String) -> [String] {
  // Read to EOF by hand: procfs files report a size of 0.
  let fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
  guard fd >= 0 else { return [] }
  defer { close(fd) }
  var bytes: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 65536)
  while case let count = read(fd, &chunk, chunk.count), count > 0 { bytes += chunk.prefix(count) }
  let text = String(decoding: bytes, as: UTF8.self)
  var found: [String] = []
  for line in text.split(separator: "\n") {
    let fields = line.split(separator: " ")
    guard let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count, fields.count > 4 else {
      continue
    }
    let type = fields[dash + 1]
    guard type == "fuse" || type.hasPrefix("fuse.") else { continue }
    let mountpoint = unescapeMountinfo(String(fields[4]))
    if mountpoint == directory || mountpoint.hasPrefix(directory + "/") { found.append(mountpoint) }
  }
  return found.sorted { $0.count > $1.count }
}

func isFUSEMounted(_ path: String) -> Bool {
  fuseMounts(under: path).contains(path)
}

private func unescapeMountinfo(_ field: String) -> String {
  var result = ""
  var characters = Substring(field)
  while let first = characters.first {
    if first == "\\", characters.count >= 4,
      let value = UInt8(characters.dropFirst().prefix(3), radix: 8)
    {
      result.append(Character(UnicodeScalar(value)))
      characters = characters.dropFirst(4)
    } else {
      result.append(first)
      characters = characters.dropFirst()
    }
  }
  return result
}

/// A process started with `posix_spawn`, its output in files.
final class Spawned {
  let pid: pid_t
  let outputPath: String
  let errorPath: String
  private(set) var status: Int32?

  init(
    _ arguments: [String], outputPath: String, errorPath: String,
    environment: [String: String?] = [:],
    extraDescriptor: Int32? = nil
  ) throws {
    self.outputPath = outputPath
    self.errorPath = errorPath
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    let output = open(outputPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    let error = open(errorPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    defer {
      close(output)
      close(error)
    }
    guard output >= 0, error >= 0 else {
      throw TestFailure("cannot create \(outputPath) or \(errorPath)")
    }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, output, 1)
    posix_spawn_file_actions_adddup2(&actions, error, 2)
    // dup2 onto fd 3 clears close-on-exec there: the way a service manager passes a socket.
    if let extraDescriptor { posix_spawn_file_actions_adddup2(&actions, extraDescriptor, 3) }
    var variables = ProcessInfo.processInfo.environment
    for key in ["NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
      variables[key] = nil
    }
    for (key, value) in environment { variables[key] = value }
    let argv = arguments.map { strdup($0) } + [nil]
    let envp = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
      for pointer in argv + envp { free(pointer) }
    }
    // The test runner's threads may block signals; the child starts with none blocked or ignored.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE] { sigaddset(&defaults, signal) }
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var pid: pid_t = 0
    let code = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, envp)
    guard code == 0 else {
      throw TestFailure("cannot start \(arguments[0]): \(String(cString: strerror(code)))")
    }
    self.pid = pid
  }

  /// Reaps the process if it has exited; true once it has.
  @discardableResult
  func poll() -> Bool {
    if status != nil { return true }
    var raw: Int32 = 0
    guard waitpid(pid, &raw, WNOHANG) == pid else { return false }
    // Exit code, or 128 + signal like a shell.
    status = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
    return true
  }

  /// Waits up to `timeout` for the exit; SIGKILLs and reaps it after that.
  func wait(timeout: Duration) async throws -> Int32 {
    let deadline = ContinuousClock.now + timeout
    while !poll() {
      if ContinuousClock.now >= deadline {
        kill(pid, SIGKILL)
        while !poll() { try await Task.sleep(for: .milliseconds(5)) }
        throw TestFailure("\(outputPath): still running after \(timeout); killed")
      }
      try await Task.sleep(for: .milliseconds(10))
    }
    return status!
  }

  /// The same, for cleanup paths that cannot await.
  func waitBlocking(timeout: Duration) -> Bool {
    let deadline = ContinuousClock.now + timeout
    while !poll() {
      if ContinuousClock.now >= deadline { return false }
      usleep(10_000)
    }
    return true
  }

  var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
  var errors: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }
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
}

/// A `mountsupd` of a test, in a directory of its own (mountpoints, control socket, config,
/// logs). `stop()` cleans up on every path: SIGTERM and wait, as a last resort SIGKILL and a
/// lazy detach of every FUSE mount left under the directory. Nothing outside it is touched.
final class TestDaemon {
  let directory: String
  let configPath: String
  var socketPath: String
  private(set) var process: Spawned?
  private var runs = 0

  init() throws {
    var template = Array("/tmp/mountctl-test-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else {
      throw TestFailure("mkdtemp: \(String(cString: strerror(errno)))")
    }
    directory = String(cString: made)
    // `nobody` must reach the socket and run mountctl from here.
    chmod(directory, 0o755)
    configPath = directory + "/mounts.toml"
    socketPath = directory + "/run/control.sock"
  }

  func mountpoint(_ name: String) -> String { "\(directory)/mnt/\(name)" }

  /// Writes the configuration (the socket path, fast restarts, short stop timeouts).
  func write(_ mounts: [TestMount], supervisor: [String] = []) throws {
    var text =
      "[supervisor]\ncontrol_socket = \"\(socketPath)\"\n" + supervisor.map { $0 + "\n" }.joined()
    for mount in mounts {
      let command = ([testWorker] + mount.arguments + ["{mountpoint}"]).map { "\"\($0)\"" }.joined(
        separator: ", ")
      text += """

        [mounts.\(mount.name)]
        mountpoint = "\(mountpoint(mount.name))"
        command = [\(command)]
        restart_delay = "50ms"
        stop_timeout = "3s"

        """
      text += mount.settings.map { $0 + "\n" }.joined()
    }
    try text.write(toFile: configPath, atomically: true, encoding: .utf8)
  }

  /// Starts the daemon and waits until its control socket answers.
  func start(environment: [String: String?] = [:], passing socket: Int32? = nil) async throws {
    var arguments = [mountsupd, "--config", configPath]
    if socket != nil {
      // LISTEN_PID must be the daemon's own pid: a shell learns it and execs into the daemon.
      arguments = ["/bin/sh", "-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""] + arguments
    }
    let spawned = try Spawned(
      arguments, outputPath: directory + "/daemon.out", errorPath: directory + "/daemon.log",
      environment: environment, extraDescriptor: socket)
    process = spawned
    try await waitFor("mountsupd to answer on \(socketPath)\n\(log)") {
      if spawned.poll() { throw TestFailure("mountsupd exited with \(spawned.status!):\n\(log)") }
      return (try? status()) != nil
    }
  }

  var log: String { process?.errors ?? "" }

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

  /// SIGTERM and wait; SIGKILL and detach leftovers only if that fails. Returns the exit status
  /// of a clean stop.
  @discardableResult
  func stop() -> Int32? {
    var cleanStatus: Int32?
    if let process {
      kill(process.pid, SIGTERM)
      if process.waitBlocking(timeout: .seconds(20)) {
        cleanStatus = process.status
      } else {
        Issue.record("mountsupd did not stop within 20 s of SIGTERM; killing it\n\(log)")
        kill(process.pid, SIGKILL)
        _ = process.waitBlocking(timeout: .seconds(10))
      }
    }
    process = nil
    // Workers die with their daemon (death signal); what they may leave is only under here.
    let deadline = ContinuousClock.now + .seconds(5)
    while !fuseMounts(under: directory).isEmpty, ContinuousClock.now < deadline {
      for mountpoint in fuseMounts(under: directory) { umount2(mountpoint, Int32(MNT_DETACH)) }
      usleep(20_000)
    }
    if !fuseMounts(under: directory).isEmpty {
      Issue.record("FUSE mounts left under \(directory): \(fuseMounts(under: directory))")
    }
    return cleanStatus
  }

  /// Stops the daemon if it still runs and removes the directory (never through a mount).
  func finish() {
    stop()
    if fuseMounts(under: directory).isEmpty {
      try? FileManager.default.removeItem(atPath: directory)
    }
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
    fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      let bytes = Array(path.utf8)
      raw.copyBytes(from: bytes)
      raw[bytes.count] = 0
    }
    let result = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    guard result == 0 else {
      close(fd)
      throw TestFailure("connect \(path): \(String(cString: strerror(errno)))")
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

/// A stand-in for the service manager's notify socket: collects what `sd_notify` sends.
final class NotifyReceiver {
  let path: String
  private let fd: Int32
  private(set) var messages: [String] = []

  init(path: String) throws {
    self.path = path
    fd = socket(
      AF_UNIX,
      Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      let bytes = Array(path.utf8)
      raw.copyBytes(from: bytes)
      raw[bytes.count] = 0
    }
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    guard bound == 0 else {
      close(fd)
      throw TestFailure("cannot bind \(path): \(String(cString: strerror(errno)))")
    }
  }

  deinit { close(fd) }

  /// Takes every datagram that has arrived; returns all received so far.
  @discardableResult
  func receive() -> [String] {
    var buffer = [UInt8](repeating: 0, count: 65536)
    while case let count = recv(fd, &buffer, buffer.count, 0), count > 0 {
      messages.append(String(decoding: buffer.prefix(count), as: UTF8.self))
    }
    return messages
  }
}
