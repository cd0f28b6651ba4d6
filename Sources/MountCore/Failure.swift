/// How a worker process ended, as `waitid` reports it.
public enum ExitStatus: Equatable, Hashable, Sendable, Codable, CustomStringConvertible {
  case exited(Int32)
  case signaled(Int32)

  public var isSuccess: Bool { self == .exited(0) }

  public var description: String {
    switch self {
    case .exited(let code): "exited with status \(code)"
    case .signaled(let signal): "killed by signal \(signal) (\(signalName(signal)))"
    }
  }
}

func signalName(_ signal: Int32) -> String {
  switch signal {
  case 1: "SIGHUP"
  case 2: "SIGINT"
  case 6: "SIGABRT"
  case 9: "SIGKILL"
  case 11: "SIGSEGV"
  case 13: "SIGPIPE"
  case 15: "SIGTERM"
  default: "signal \(signal)"
  }
}

/// Why a start attempt or a running worker failed, kept so that status, logs and the service
/// manager can show the worker's own words rather than only an exit code.
public struct Failure: Equatable, Hashable, Sendable, Codable, CustomStringConvertible {
  /// What kind of failure it was, for the failure counters of the metrics (label `kind`).
  ///
  /// A new kind is one new case: every counter of every mount lists all of them (zeros too),
  /// so that an alert on a kind has a series to watch before the first such failure.
  public enum Kind: String, Hashable, Sendable, CaseIterable, Codable {
    /// The worker exited with a status: before its mount was ready, or after.
    case exit
    /// The worker was killed by a signal it did not ask for.
    case signal
    /// No confirmed FUSE init within `start_timeout` (or the mountpoint not prepared in time).
    case timeout
    /// The mount vanished from the mount table while its worker ran.
    case vanished
    /// The worker could not be started at all: its mountpoint could not be prepared or
    /// cleared, or the spawn failed (command not found, unknown user).
    case start
    /// The mount was hung (a request unanswered for `hang_timeout`) and its connection
    /// aborted, or an operator aborted it (`mountctl abort`).
    case hang

    /// How a worker that ended with `status` failed.
    public init(_ status: ExitStatus) {
      switch status {
      case .exited: self = .exit
      case .signaled: self = .signal
      }
    }
  }

  /// What the supervisor observed, e.g. "exited with status 1 before its mount was ready".
  public var summary: String
  /// The worker's own explanation: its `ERROR=` message, or else the last line of its output.
  public var workerError: String?
  /// The worker's `ERRNO=`, passed on to the service manager.
  public var errno: Int32?
  /// The last lines of the worker's stdout/stderr at the time of the failure.
  public var outputTail: [String]
  /// The same start would fail the same way (the command does not exist, the user is unknown):
  /// retrying cannot help until the configuration or the system changes.
  public var isCertainToRepeat: Bool
  public var kind: Kind

  public init(
    summary: String, workerError: String? = nil, errno: Int32? = nil, outputTail: [String] = [],
    isCertainToRepeat: Bool = false, kind: Kind = .start
  ) {
    self.kind = kind
    self.summary = summary
    self.workerError = workerError
    self.errno = errno
    self.outputTail = outputTail
    self.isCertainToRepeat = isCertainToRepeat
  }

  public var description: String {
    guard let workerError, !workerError.isEmpty else { return summary }
    return "\(summary): \(workerError)"
  }
}
