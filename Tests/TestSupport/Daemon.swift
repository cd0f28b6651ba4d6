import Foundation
import Glibc

/// Where `swift test` put the built executables: beside the test runner.
public let binDirectory: String = {
  let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
  return (exe as NSString).deletingLastPathComponent
}()

/// The package's root directory (this file is Tests/TestSupport/Daemon.swift).
public let packageDirectory: String = {
  var url = URL(fileURLWithPath: #filePath)
  for _ in 0..<3 { url.deleteLastPathComponent() }
  return url.path
}()

/// The supervisor under test.
public let daemonBinary = binDirectory + "/mountsupd"

/// The FUSE worker whose behaviour the tests choose with options (`--fail`, `--linger`, …).
public let testWorker = binDirectory + "/mountsup-testworker"

/// A `mountsupd` run on a test config as its service manager would run it (see `Spawned`), its
/// stdout in `daemon.out` and its log (stderr) in `daemon.log` of the sandbox.
public final class Daemon {
  private let process: Spawned

  /// Starts the daemon; it runs until `stop()` or a signal ends it.
  /// - Parameters:
  ///   - notify: becomes its NOTIFY_SOCKET; none otherwise.
  ///   - launcher: a command that execs the daemon under its own pid (setpriv, a shell).
  ///   - passing: become its fds 3, 4, …, as a service manager passes sockets and stored
  ///     descriptors (`environment` gives LISTEN_FDS and LISTEN_FDNAMES).
  public init(
    config: String, sandbox: Sandbox, notify: NotifyReceiver? = nil, launcher: [String] = [],
    passing: [Int32] = [], environment: [String: String?] = [:]
  ) throws {
    var variables = environment
    if let notify { variables["NOTIFY_SOCKET"] = notify.path }
    process = try Spawned(
      launcher + [daemonBinary, "--config", config], outputPath: sandbox.path + "/daemon.out",
      errorPath: sandbox.path + "/daemon.log", environment: variables, passing: passing)
  }

  /// Everything it logged so far.
  public var log: String { process.errors }

  /// Its pid: the parent of its workers.
  public var pid: Int32 { process.pid }

  /// Whether it has not exited yet (it is reaped once it has).
  public var isRunning: Bool { !process.poll() }

  /// Sends `signal`, as an operator or a service manager would.
  public func signal(_ signal: Int32) { kill(pid, signal) }

  /// Waits for the exit; nil if it did not exit in time.
  public func exitCode(within deadline: Duration = .seconds(20)) -> Int32? {
    process.waitBlocking(timeout: deadline) ? process.status : nil
  }

  /// SIGTERM and wait; SIGKILL, recorded as an issue, if it hangs. Always safe to call. Returns
  /// the exit status unless it had to be killed.
  @discardableResult
  public func stop() -> Int32? {
    if process.poll() { return process.status }
    signal(SIGTERM)
    if let code = exitCode() { return code }
    recordIssue("mountsupd did not stop within 20 s of SIGTERM; killing it\n\(log)")
    signal(SIGKILL)
    _ = process.waitBlocking(timeout: .seconds(10))
    return nil
  }

  /// Pids of the daemon's direct children whose command line mentions `text`.
  public func workerPIDs(matching text: String) -> [Int32] {
    childPIDs(of: pid).filter { commandLine(of: $0).contains(text) }
  }
}

extension Sandbox {
  /// Writes a config of `mounts` and starts mountsupd on it, with a NOTIFY_SOCKET receiver as a
  /// service manager would have: the common start of a test. Stop the daemon in a `defer`.
  public func startDaemon(_ mounts: String) throws -> (notify: NotifyReceiver, daemon: Daemon) {
    let notify = try NotifyReceiver(in: self)
    let daemon = try Daemon(config: writeConfig(mounts), sandbox: self, notify: notify)
    return (notify, daemon)
  }
}
