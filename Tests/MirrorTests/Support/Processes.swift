import Glibc
import Testing

/// A failure of the test harness itself (spawning, waiting), with the reason.
struct HarnessError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// Monotonic seconds, for deadlines.
func now() -> Double {
  var time = timespec()
  clock_gettime(CLOCK_MONOTONIC, &time)
  return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// Polls `condition` every few milliseconds until it holds or `timeout` seconds pass.
@discardableResult
func waitUntil(timeout: Double = 10, _ condition: () -> Bool) -> Bool {
  let deadline = now() + timeout
  while !condition() {
    if now() > deadline { return false }
    usleep(5_000)
  }
  return true
}

/// A child process whose stdout and stderr go to one pipe that the test reads.
final class Child {
  let pid: pid_t
  private let output: Int32
  private var outputEnded = false
  private var collected: [UInt8] = []
  private var status: Int32?

  /// Starts `arguments[0]` (an absolute path) with `environment`; `notify`, if given, becomes
  /// the child's fd 3.
  init(_ arguments: [String], environment: [String: String], notify: Int32? = nil) throws {
    // A socketpair rather than a pipe: it can be created close-on-exec atomically, so that
    // children that parallel tests start never inherit it.
    var pipeEnds: [Int32] = [0, 0]
    let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
    guard socketpair(AF_UNIX, type, 0, &pipeEnds) == 0 else {
      throw HarnessError("socketpair failed")
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 2)
    var high: Int32 = -1
    if let notify {
      // A copy above 3, so that dup2 onto 3 always clears close-on-exec.
      high = fcntl(notify, F_DUPFD_CLOEXEC, 10)
      posix_spawn_file_actions_adddup2(&actions, high, 3)
    }
    defer { if high >= 0 { close(high) } }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // Its own process group, so that a test can signal everything it started; and a clean
    // signal state, since test threads block signals that the child must receive.
    posix_spawnattr_setflags(
      &attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    posix_spawnattr_setpgroup(&attributes, 0)
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE] { sigaddset(&defaults, signal) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)

    let argv = arguments.map { strdup($0) } + [nil]
    let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
      for pointer in argv + envp { free(pointer) }
    }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, envp)
    close(pipeEnds[1])
    guard result == 0 else {
      close(pipeEnds[0])
      throw HarnessError("cannot start \(arguments[0]): \(String(cString: strerror(result)))")
    }
    self.pid = pid
    output = pipeEnds[0]
  }

  deinit {
    if status == nil {
      kill(-pid, SIGKILL)
      var raw: Int32 = 0
      waitpid(pid, &raw, 0)
    }
    close(output)
  }

  /// Everything the child wrote so far (all of it once it has exited).
  var text: String {
    drain(timeout: 0)
    return String(decoding: collected, as: UTF8.self)
  }

  /// Reads output until EOF or `timeout` seconds; `true` at EOF.
  @discardableResult
  private func drain(timeout: Double) -> Bool {
    let deadline = now() + timeout
    var buffer = [UInt8](repeating: 0, count: 65536)
    while !outputEnded {
      var pollFD = pollfd(fd: output, events: Int16(POLLIN), revents: 0)
      let wait = max(0, Int32((deadline - now()) * 1000))
      guard poll(&pollFD, 1, wait) > 0 else { return false }
      let count = read(output, &buffer, buffer.count)
      if count <= 0 {
        outputEnded = true
      } else {
        collected.append(contentsOf: buffer[..<count])
      }
    }
    return true
  }

  /// Waits for the exit (reading output meanwhile); the raw wait status, or `nil` on timeout.
  func wait(timeout: Double = 120) -> Int32? {
    if let status { return status }
    let deadline = now() + timeout
    while now() < deadline {
      if drain(timeout: min(0.2, max(0, deadline - now()))) { usleep(2_000) }
      var raw: Int32 = 0
      if waitpid(pid, &raw, WNOHANG) == pid {
        drain(timeout: 0.5)
        status = raw
        return raw
      }
    }
    return nil
  }

  /// Waits for the exit; kills the child's process group and throws after `timeout`.
  func exitCode(timeout: Double = 120) throws -> Int32 {
    guard let raw = wait(timeout: timeout) else {
      kill(-pid, SIGKILL)
      _ = wait(timeout: 10)
      throw HarnessError("process \(pid) did not finish in \(timeout) s; output:\n\(text)")
    }
    return exitStatus(raw)
  }

  var hasExited: Bool {
    if status != nil { return true }
    var raw: Int32 = 0
    if waitpid(pid, &raw, WNOHANG) == pid {
      status = raw
      return true
    }
    return false
  }
}

/// The exit code of a wait status, or 128 + signal for a killed process.
func exitStatus(_ raw: Int32) -> Int32 {
  (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
}

/// The environment tests give to the programs they run: no supervisor channel, a fixed clock
/// and identity for git, and a private HOME.
func baseEnvironment(home: String) -> [String: String] {
  [
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": home, "LANG": "C", "LC_ALL": "C", "TZ": "UTC",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "Mirror Test",
    "GIT_AUTHOR_EMAIL": "mirror@example.invalid", "GIT_COMMITTER_NAME": "Mirror Test",
    "GIT_COMMITTER_EMAIL": "mirror@example.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
  ]
}

/// The result of a shell script.
struct ShellResult {
  var status: Int32
  var output: String
}

/// Runs `script` with /bin/sh in `directory`, as root or (with `asNobody`) as user nobody.
func shell(
  _ script: String, in directory: String, asNobody: Bool = false, timeout: Double = 300
) throws -> ShellResult {
  let arguments =
    asNobody
    ? [
      "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
      "cd \"$0\" && \(script)", directory,
    ] : ["/bin/sh", "-c", "cd \"$0\" && \(script)", directory]
  let home = asNobody ? "/tmp" : directory
  let child = try Child(arguments, environment: baseEnvironment(home: home))
  let status = try child.exitCode(timeout: timeout)
  return ShellResult(status: status, output: child.text)
}

/// Runs `script` and fails the test, showing the output, unless it exits 0. Returns the output.
@discardableResult
func mustRun(
  _ script: String, in directory: String, asNobody: Bool = false,
  sourceLocation: SourceLocation = #_sourceLocation
) throws -> String {
  let result = try shell(script, in: directory, asNobody: asNobody)
  #expect(
    result.status == 0, "`\(script)` in \(directory) exited \(result.status):\n\(result.output)",
    sourceLocation: sourceLocation)
  return result.output
}
