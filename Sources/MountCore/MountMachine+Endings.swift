import MountConfig

/// How attempts and runs end: a vanished mount, an exit, a passed deadline, and what the
/// restart policy, the start limit and the backoff make of a failure.
extension MountMachine {
  mutating func mountVanished(now: MonotonicInstant) -> [Effect] {
    switch phase {
    case .starting(let number, let deadline, var starting):
      starting.mountSeen = false
      phase = .starting(attempt: number, deadline: deadline, starting)
      return []
    case .ready(let pid, let since):
      readyRunEnded(since: since, now: now)
      let failure = Failure(
        summary: "its FUSE mount at \(spec.mountpoint) disappeared while the worker ran "
          + "(unmounted from outside? use `mountctl stop \(spec.name)` to stop a mount)",
        kind: .vanished)
      phase = .stopping(
        Stopping(
          pid: pid, stage: .terminating, deadline: now + spec.stopTimeout, then: .retry(failure)))
      return [.log(.warning, failure.summary), .signal(15)]
    default:
      return []
    }
  }

  mutating func exited(_ status: ExitStatus, outputTail: [String], now: MonotonicInstant)
    -> [Effect]
  {
    // Only a failure needs the reason: a clean stop does not search the output for it.
    var words: String? { workerError ?? FailureReason.pick(from: outputTail) }
    switch phase {
    case .starting:
      let failure = Failure(
        summary: "\(status) before its mount was ready", workerError: words, errno: workerErrno,
        outputTail: outputTail, kind: Failure.Kind(status))
      return [.cancelProbe] + endMount() + afterFailure(failure, now: now)
    case .ready(_, let since):
      let served = now - since
      readyRunEnded(since: since, now: now)
      // Output printed while it served is no explanation of a crash; only its ERROR= is.
      let failure = Failure(
        summary: "\(status) after \(served.milliseconds) ms ready", workerError: workerError,
        errno: workerErrno, outputTail: outputTail, kind: Failure.Kind(status))
      if status.isSuccess, spec.restart != .always {
        phase = .exited(status)
        return endMount() + [
          .log(.notice, "worker \(status); restart = \(spec.restart.rawValue), not restarting")
        ]
      }
      if holdsConnection {
        let effects = afterFailure(failure, now: now, countsAsFailure: !status.isSuccess)
        guard case .backoff = phase else { return endMount() + effects }
        // The mount stays: accesses wait in the kernel's queue for the successor.
        crashedAt = now
        return effects
      }
      return [.detachMount] + afterFailure(failure, now: now, countsAsFailure: !status.isSuccess)
    case .stopping(let stopping):
      switch stopping.then {
      case .stay:
        phase = .inactive
        return endMount() + [.log(.info, "stopped (\(status))")]
      case .restart:
        return endMount() + beginRun(now: now)
      case .retry(var failure):
        failure.workerError = failure.workerError ?? words
        failure.errno = failure.errno ?? workerErrno
        failure.outputTail = outputTail
        return endMount() + afterFailure(failure, now: now)
      }
    default:
      return []
    }
  }

  mutating func deadlinePassed(now: MonotonicInstant) -> [Effect] {
    switch phase {
    case .preparing:
      return afterFailure(
        Failure(
          summary:
            "the mountpoint \(spec.mountpoint) could not be prepared within \(formatDuration(spec.startTimeout))",
          kind: .timeout),
        now: now)
    case .starting(_, _, let starting):
      var missing: [String] = []
      if confirmation == .workerReady, !starting.readySeen {
        missing.append("the worker never sent READY=1")
      }
      if !starting.mountSeen { missing.append("no FUSE mount appeared at \(spec.mountpoint)") }
      if confirmation == .probe, starting.mountSeen, !starting.probeAnswered {
        missing.append(
          "the mount did not answer a probe (\(starting.lastProbeError ?? "no answer"))")
      }
      let failure = Failure(
        summary:
          "no confirmed FUSE init within \(formatDuration(spec.startTimeout)) (\(missing.joined(separator: "; ")))",
        workerError: workerError, errno: workerErrno, kind: .timeout)
      guard let pid = starting.pid else { return afterFailure(failure, now: now) }
      phase = .stopping(Stopping(pid: pid, stage: .killing, deadline: nil, then: .retry(failure)))
      return [.log(.error, failure.summary), .cancelProbe, .signal(9)] + endMount()
    case .backoff:
      return beginStart(now: now)
    case .stopping(var stopping):
      switch stopping.stage {
      case .unmounting:
        stopping.stage = .terminating
        stopping.deadline = now + spec.stopTimeout
        phase = .stopping(stopping)
        return [
          .log(
            .warning,
            "worker did not exit within \(formatDuration(spec.stopTimeout)) of the unmount; sending SIGTERM"
          ), .signal(15),
        ]
      case .terminating:
        stopping.stage = .killing
        stopping.deadline = nil
        phase = .stopping(stopping)
        return [
          .log(
            .warning,
            "worker did not exit within \(formatDuration(spec.stopTimeout)) of SIGTERM; sending SIGKILL"
          ), .signal(9),
        ] + endMount()
      case .killing:
        return []
      }
    case .ready:
      return hangFound(now: now)
    case .inactive, .exited, .failed:
      return []
    }
  }

  /// Detaches the worker's mount, releasing the held FUSE connection first: the effects that
  /// end a mount for good.
  mutating func endMount() -> [Effect] {
    guard holdsConnection else { return [.detachMount] }
    holdsConnection = false
    crashedAt = nil
    return [.releaseConnection, .detachMount]
  }

  /// A worker that stayed ready for `stableAfter` starts the restart delay over, however its run
  /// ended (exit, vanished mount, stop or restart).
  mutating func readyRunEnded(since: MonotonicInstant, now: MonotonicInstant) {
    hangCheck = nil
    if now - since >= Self.stableAfter { consecutiveFailures = 0 }
  }

  /// Applies the restart policy, the start limit and the backoff after a failed start or a crash.
  mutating func afterFailure(
    _ failure: Failure, now: MonotonicInstant, countsAsFailure: Bool = true
  ) -> [Effect] {
    lastFailure = failure
    if countsAsFailure {
      consecutiveFailures += 1
      failureCounts[failure.kind, default: 0] += 1
    }
    if spec.restart == .never {
      phase = .failed(failure)
      return [.log(.error, "failed: \(failure); restart = never")]
    }
    if failure.isCertainToRepeat {
      // Said once, not five times: the next attempt would fail the same way.
      phase = .failed(failure)
      return [
        .log(
          .error,
          "failed: \(failure); not retried, since it would fail the same way: fix it, then "
            + "`mountctl start \(spec.name)` or reload")
      ]
    }
    startHistory.removeAll { now - $0 >= spec.startLimitInterval }
    if startHistory.count >= spec.startLimitBurst {
      let given = Failure(
        summary:
          "start limit reached (\(counted(startHistory.count, "start")) within \(formatDuration(spec.startLimitInterval))), "
          + "giving up; last failure: \(failure.summary)",
        workerError: failure.workerError, errno: failure.errno, outputTail: failure.outputTail,
        kind: failure.kind)
      lastFailure = given
      phase = .failed(given)
      return [.log(.error, "failed: \(given)")]
    }
    let delay = backoffDelay()
    phase = .backoff(until: now + delay)
    return [
      .log(countsAsFailure ? .error : .notice, "\(failure); restarting in \(formatDuration(delay))")
    ]
  }

  func backoffDelay() -> Duration {
    var delay = spec.restartDelay
    for _ in 1..<max(consecutiveFailures, 1) {
      delay *= 2
      if delay >= spec.restartDelayMax { return spec.restartDelayMax }
    }
    return min(delay, spec.restartDelayMax)
  }
}
