import MountConfig

/// Hung servers: a ready mount with requests waiting is probed, and a probe left unanswered for
/// `hang_timeout` aborts the connection, so that every process blocked on the mount is released
/// with an error, and ends the worker; the restart policy then applies as after a crash.
extension MountMachine {
  /// A probe of a ready mount that had requests waiting, while it is unanswered.
  public struct HangCheck: Equatable, Sendable, Codable {
    /// The attempt (worker) it belongs to.
    public var attempt: Int
    /// When the probe began: the mount is hung once it has waited `hang_timeout` from here.
    public var since: MonotonicInstant
    /// The access the probe waits for, e.g. "statfs of /mnt/photos".
    public var step: String
    /// Requests waiting on the connection at the latest check.
    public var waiting: Int
  }

  /// The hang check of the current ready worker; a stale one (of an earlier run) is none.
  var currentHangCheck: HangCheck? {
    guard case .ready(_, let since) = phase, let hangCheck, hangCheck.attempt == attempt,
      hangCheck.since >= since
    else { return nil }
    return hangCheck
  }

  /// The periodic check saw requests waiting: a ready mount that checks for hangs is probed,
  /// unless a probe already waits; a slow server that answers the probe is not hung.
  mutating func requestsWaiting(_ count: Int, now: MonotonicInstant) -> [Effect] {
    guard case .ready = phase, spec.hangTimeout > .zero, count > 0 else { return [] }
    if var check = currentHangCheck {
      check.waiting = count
      hangCheck = check
      return []
    }
    hangCheck = HangCheck(
      attempt: attempt, since: now, step: "statfs of \(spec.mountpoint)", waiting: count)
    return [
      .startHangProbe(attempt: attempt, mountpoint: spec.mountpoint, probePath: spec.probePath)
    ]
  }

  /// The probe has waited `hang_timeout`: the mount is hung.
  mutating func hangFound(now: MonotonicInstant) -> [Effect] {
    guard case .ready(let pid, let since) = phase, let check = currentHangCheck,
      check.since + spec.hangTimeout <= now
    else { return [] }
    hangs += 1
    let failure = Failure(
      summary:
        "hung: \(check.step) unanswered for \(formatDuration(spec.hangTimeout)), "
        + "\(counted(check.waiting, "request")) waiting; connection aborted, worker killed",
      kind: .hang)
    return endHungWorker(pid: pid, readySince: since, failure: failure, now: now)
  }

  /// `mountctl abort`: the same recovery, on an operator's word, for a worker that runs.
  mutating func abortedByOperator(now: MonotonicInstant) -> [Effect] {
    let failure = Failure(
      summary: "aborted by an operator (mountctl abort): connection aborted, worker killed",
      kind: .hang)
    switch phase {
    case .ready(let pid, let since):
      return endHungWorker(pid: pid, readySince: since, failure: failure, now: now)
    case .starting(_, _, let starting):
      guard let pid = starting.pid else { return [] }
      return [.cancelProbe] + endHungWorker(pid: pid, readySince: nil, failure: failure, now: now)
    default:
      return []
    }
  }

  /// Aborts the connection first (blocked processes get ECONNABORTED at once, and a worker
  /// stuck in a request gets an error too), then SIGTERM, with SIGCONT for a stopped worker,
  /// and SIGKILL after `stop_timeout`; the exit detaches the mount and applies the policy.
  private mutating func endHungWorker(
    pid: Int32, readySince: MonotonicInstant?, failure: Failure, now: MonotonicInstant
  ) -> [Effect] {
    if let readySince { readyRunEnded(since: readySince, now: now) }
    hangCheck = nil
    phase = .stopping(
      Stopping(
        pid: pid, stage: .terminating, deadline: now + spec.stopTimeout, then: .retry(failure)))
    return [
      .log(.error, failure.summary), .cancelHangProbe, .abortConnection, .signal(15),
      .signal(18),
    ]
  }
}
