import MountConfig

/// What the runtime and the control layer ask of the mounts; none of it changes a mount.
extension SupervisorCore {

  /// The earliest moment a mount needs `timerFired`.
  public var nextDeadline: MonotonicInstant? {
    mutating get { deadlines.min(where: isCurrent)?.deadline }
  }

  /// The last moment a required mount can still become ready before READY (for
  /// EXTEND_TIMEOUT_USEC), or nil once READY was sent or nothing is pending.
  public var startupDeadline: MonotonicInstant? {
    mutating get {
      guard !readyAnnounced, !shuttingDown else { return nil }
      return requiredDeadlines.max(where: isCurrentAndWaitedFor)?.deadline
    }
  }

  public var requiredMountsReady: Bool { requiredNotReadyCount == 0 }

  /// The parent mount's name, if this mount's mountpoint lies inside another managed mount.
  public func parent(of name: String) -> String? { parents[name] }

  /// A line for the service manager's STATUS, e.g. "3/4 mounts ready; photos: starting, attempt 2".
  public var statusLine: String {
    mutating get {
      if let (name, failure) = serviceFailure {
        return "failed: \(name): \(failure)"
      }
      if shuttingDown {
        let left = order.isEmpty ? 0 : unsettledActiveCount
        return left == 0 ? "stopped" : "stopping: \(left) of \(activeCount) mounts still up"
      }
      var parts = ["\(activeReadyCount)/\(activeCount) mounts ready"]
      // One live heap entry per name: the first five in `order`, without a scan.
      let names = notReadyByPosition.smallest(5, where: isNotReadyEntry).map(\.name)
      for name in names { parts.append("\(name): \(detail(of: name))") }
      let more = notReady.count - names.count
      if more > 0 { parts.append("and \(more) more not ready") }
      notReadyByPosition.compact(liveCount: notReady.count, where: isNotReadyEntry)
      return parts.joined(separator: "; ")
    }
  }

  /// A short description of a mount's state for status output.
  public func detail(of name: String) -> String {
    guard let machine = machines[name] else { return "unknown" }
    switch machine.phase {
    case .inactive:
      if held.contains(name) { return "stopped by operator" }
      if let parent = parents[name], !(machines[parent]?.isReady ?? true) {
        return "waiting for \(parent)"
      }
      if let previous = removingAt[machines[name]!.spec.mountpoint], previous != name {
        return "waiting for the removed mount \(previous) to leave its mountpoint"
      }
      return "stopped"
    case .preparing, .starting:
      return machine.attemptInRun > 1 ? "starting, attempt \(machine.attemptInRun)" : "starting"
    case .ready: return "ready"
    case .backoff: return "restarting after: \(machine.lastFailure?.description ?? "an exit")"
    case .stopping(let stopping):
      // A worker ended for a failure (a hang, a vanished mount) says which while it goes.
      if case .retry(let failure) = stopping.then { return "stopping after: \(failure.summary)" }
      return "stopping"
    case .exited(let status): return "\(status)"
    case .failed(let failure): return "failed: \(failure)"
    }
  }

  /// Everything status output shows about one mount, or nil for an unknown name.
  public func report(of name: String) -> MountReport? {
    guard let machine = machines[name] else { return nil }
    return MountReport(
      name: name, state: machine.state, detail: detail(of: name), pid: machine.pid,
      readySince: machine.readySince, restarts: machine.restarts,
      mountpoint: machine.spec.mountpoint, required: machine.spec.required,
      stoppedByOperator: held.contains(name), lastFailure: machine.lastFailure,
      workerStatus: machine.workerStatus, hangs: machine.hangs,
      failureCounts: machine.failureCounts, lastTimeToReady: machine.lastTimeToReady,
      resumes: machine.resumes, lastResumeGap: machine.lastResumeGap,
      holdsConnection: machine.holdsConnection)
  }

  /// Whether the mount's attempt still waits for its worker to be spawned (a stop may have
  /// come first).
  public func awaitsSpawn(_ name: String, attempt: Int) -> Bool {
    guard case .starting(attempt, _, let starting) = machines[name]?.phase else { return false }
    return starting.pid == nil
  }

  /// Whether `name` is configured (and not on its way out after a reload removed it).
  public func isConfigured(_ name: String) -> Bool {
    machines[name] != nil && !removing.contains(name)
  }

  /// What an operator or a waiting client waits for.
  public enum Goal: Sendable {
    /// The mount is confirmed ready. With `failingOnRetry`, a failed attempt that will be
    /// retried counts as failure (a `start` reports the first failure, with its reason);
    /// without it, only a state no retry leaves does (`wait-ready`).
    case ready(failingOnRetry: Bool)
    /// No worker runs (a stop has completed).
    case settled
  }

  public enum Progress: Equatable, Sendable {
    case reached
    case pending
    /// The goal cannot be reached without an operator; the reason says why.
    case failed(String)
  }

  /// How far a mount has got towards a goal.
  public func progress(of name: String, toward goal: Goal) -> Progress {
    guard let machine = machines[name] else { return .failed("removed from the configuration") }
    let failingOnRetry: Bool
    switch goal {
    case .settled: return machine.isSettled ? .reached : .pending
    case .ready(let flag): failingOnRetry = flag
    }
    switch machine.phase {
    case .ready:
      return .reached
    case .failed(let failure):
      return .failed("failed: \(failure)")
    case .exited(let status):
      return .failed(
        "the worker \(status) and is not restarted (restart = \(machine.spec.restart.rawValue))")
    case .backoff where failingOnRetry:
      return .failed(detail(of: name))
    case .inactive where held.contains(name):
      return .failed("stopped by an operator (mountctl start \(name))")
    case .inactive:
      if let parent = parents[name], let parentMachine = machines[parent],
        parentMachine.isFailed || parentMachine.state == .exited
      {
        return .failed("its parent mount \(parent) is \(detail(of: parent))")
      }
    case .preparing, .starting, .backoff, .stopping:
      break
    }
    return shuttingDown ? .failed("mountsupd is stopping every mount") : .pending
  }

  /// Whether a reload's added or changed mount has got as far as it will without more events:
  /// ready, or at its first failure, or stopped.
  public func hasSettledAfterReload(_ name: String) -> Bool {
    guard let machine = machines[name] else { return true }
    switch machine.state {
    case .ready, .failed, .exited, .stopped: return true
    case .starting, .stopping: return false
    case .backoff: return machine.lastFailure != nil
    }
  }

  /// Mounts whose state changed since the last call, for the runtime to re-check only what
  /// waits on them.
  public mutating func takeChangedMounts() -> Set<String> {
    defer { changed.removeAll(keepingCapacity: true) }
    return changed
  }
}

/// Everything status output shows about one mount.
public struct MountReport: Equatable, Sendable {
  public var name: String
  public var state: MountMachine.State
  public var detail: String
  public var pid: Int32?
  public var readySince: MonotonicInstant?
  public var restarts: Int
  public var mountpoint: String
  public var required: Bool
  public var stoppedByOperator: Bool
  public var lastFailure: Failure?
  public var workerStatus: String?
  /// Times the mount was found hung and its connection aborted.
  public var hangs: Int
  /// Failures by kind, for the metrics; a kind that never happened is absent.
  public var failureCounts: [Failure.Kind: Int]
  /// How long the last start that became ready took.
  public var lastTimeToReady: Duration?
  /// Crashes resumed on the held FUSE connection, the gap of the last one, and whether the
  /// connection is held now.
  public var resumes = 0
  public var lastResumeGap: Duration?
  public var holdsConnection = false
}
