import Foundation
import Glibc

#if canImport(Testing)
  import Testing
#endif

/// A condition that did not come true in time, or a helper that could not do its job.
public struct TestFailure: Error, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// Records `problem` as an issue of the running test, for cleanup code that cannot throw.
/// Testing is missing only where no test runs: `swift build --static-swift-stdlib` (as `make`
/// runs it) builds this target too, and the static toolchain has no Testing module.
func recordIssue(_ problem: String) {
  #if canImport(Testing)
    Issue.record(Comment(rawValue: problem))
  #endif
}

/// Polls `condition` until it holds or `deadline` passes; false if it never held.
public func eventually(within deadline: Duration = .seconds(15), _ condition: () -> Bool) -> Bool {
  let end = ContinuousClock.now + deadline
  while ContinuousClock.now < end {
    if condition() { return true }
    usleep(10_000)
  }
  return condition()
}

/// A process started with `posix_spawn`, its stdout and stderr in files for the test to read. It
/// starts as a service manager would start it: no signal blocked or ignored (the test runner's
/// threads block some), stdin /dev/null, and no descriptor of the test runner but
/// `passing` as fds 3, 4, … (Foundation's pipes are not close-on-exec: a child holding another
/// test's pipe would keep that test waiting for EOF).
public final class Spawned {
  /// Its pid, to signal it.
  public let pid: pid_t
  /// Where its stdout goes.
  public let outputPath: String
  /// Where its stderr goes.
  public let errorPath: String
  /// The exit code, or 128 + signal like a shell; nil until reaped.
  public private(set) var status: Int32?

  /// Starts `arguments[0]` (an absolute path) with the test runner's environment, less any
  /// service manager variables, plus `environment` (a nil value removes the variable).
  public init(
    _ arguments: [String], outputPath: String, errorPath: String,
    environment: [String: String?] = [:],
    passing: [Int32] = []
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
    // Each goes to its place in turn: a descriptor numbered 3 or more must not be one of the
    // places (give it a higher number first, as fcntl(F_DUPFD) does).
    for (index, fd) in passing.enumerated() {
      posix_spawn_file_actions_adddup2(&actions, fd, 3 + Int32(index))
    }
    try addCloseFrom(&actions, 3 + Int32(passing.count))
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
  public func poll() -> Bool {
    if status != nil { return true }
    var raw: Int32 = 0
    guard waitpid(pid, &raw, WNOHANG) == pid else { return false }
    status = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
    return true
  }

  /// Waits up to `timeout` for the exit; SIGKILLs and reaps it after that.
  public func wait(timeout: Duration) async throws -> Int32 {
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

  /// The same without killing, for callers that cannot await; true once it has exited.
  public func waitBlocking(timeout: Duration) -> Bool {
    let deadline = ContinuousClock.now + timeout
    while !poll() {
      if ContinuousClock.now >= deadline { return false }
      usleep(10_000)
    }
    return true
  }

  /// What it wrote to stdout so far.
  public var output: String { readFile(outputPath) ?? "" }
  /// What it wrote to stderr so far.
  public var errors: String { readFile(errorPath) ?? "" }
}

/// Adds glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later) to `actions`: Swift's
/// Glibc module leaves it out with the other GNU extensions.
private func addCloseFrom(_ actions: inout posix_spawn_file_actions_t, _ lowest: Int32) throws {
  typealias AddCloseFrom =
    @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
  guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else {
    throw TestFailure("this glibc has no posix_spawn_file_actions_addclosefrom_np")
  }
  let code = unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, lowest)
  guard code == 0 else {
    throw TestFailure(
      "posix_spawn_file_actions_addclosefrom_np: \(String(cString: strerror(code)))")
  }
}

/// The whole text file at `path`, or nil when it cannot be read.
public func readFile(_ path: String) -> String? {
  try? String(contentsOfFile: path, encoding: .utf8)
}

/// Live (not zombie) processes whose command line contains `text`.
public func processes(mentioning text: String) -> [Int32] {
  let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
  return entries.compactMap(Int32.init).filter {
    processExists($0) && commandLine(of: $0).contains(text)
  }
}

/// Live children of `parent`: how a test finds the workers of a daemon.
public func childPIDs(of parent: Int32) -> [Int32] {
  let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
  return entries.compactMap(Int32.init).filter { pid in
    guard let fields = statFields(of: pid) else { return false }
    return fields.count > 2 && Int32(fields[1]) == parent && fields[0] != "Z"
  }
}

/// The arguments of `pid` joined by spaces; empty once it is gone.
public func commandLine(of pid: Int32) -> String {
  guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
  return String(decoding: data.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
}

/// Whether `pid` is alive: a zombie is not.
public func processExists(_ pid: Int32) -> Bool {
  guard let fields = statFields(of: pid) else { return false }
  return fields.first != "Z"
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces): state first.
private func statFields(of pid: Int32) -> [Substring]? {
  guard let stat = readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else {
    return nil
  }
  return stat[stat.index(after: close)...].split(separator: " ")
}

/// Runs a program to its end; its stdout and stderr together. Awaited, not waited for: a blocked
/// thread would starve the tests running beside it.
public func runProgram(_ arguments: [String], environment: [String: String] = [:]) async throws -> (
  status: Int32, output: String
) {
  let outputPath = FileManager.default.temporaryDirectory
    .appendingPathComponent("mountsup-kube-\(UUID().uuidString).log").path
  FileManager.default.createFile(atPath: outputPath, contents: nil)
  defer { try? FileManager.default.removeItem(atPath: outputPath) }
  let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
  defer { try? output.close() }
  let process = Process()
  process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
  process.arguments = arguments
  process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
  process.standardOutput = output
  process.standardError = output
  process.standardInput = FileHandle.nullDevice
  let status: Int32 = try await withCheckedThrowingContinuation { continuation in
    process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
    do {
      try process.run()
    } catch {
      process.terminationHandler = nil
      continuation.resume(throwing: error)
    }
  }
  return (status, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
}
