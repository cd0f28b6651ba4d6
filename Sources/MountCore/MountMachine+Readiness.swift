import MountConfig

/// How a start is confirmed: the worker's messages, its word or a probe, and the mount in the
/// table.
extension MountMachine {
  /// What confirms a start besides the mount in the table: the worker's word or a probe.
  enum Confirmation { case workerReady, probe }

  var confirmation: Confirmation {
    switch spec.readiness {
    case .protocol, .notify: .workerReady
    case .probe: .probe
    }
  }

  mutating func received(_ message: WorkerMessage, now: MonotonicInstant) -> [Effect] {
    guard pid != nil else { return [] }
    var effects: [Effect] = []
    if let status = message.status, status != workerStatus {
      workerStatus = status
      effects.append(.log(.info, "status: \(status)"))
    }
    if let error = message.errorText {
      workerError = error
      effects.append(.log(.error, "worker reports: \(error)"))
    }
    if let errno = message.errno { workerErrno = errno }
    if message.stopping { effects.append(.log(.info, "worker is stopping")) }
    if message.ready, confirmation == .workerReady {
      effects += updateStarting {
        $0.readySeen = true
        return []
      }
      effects += confirmIfComplete(now: now)
    }
    return effects
  }

  mutating func updateStarting(_ body: (inout Starting) -> [Effect]) -> [Effect] {
    guard case .starting(let number, let deadline, var starting) = phase else { return [] }
    let effects = body(&starting)
    phase = .starting(attempt: number, deadline: deadline, starting)
    return effects
  }

  mutating func confirmIfComplete(now: MonotonicInstant) -> [Effect] {
    guard case .starting(_, _, let starting) = phase, let pid = starting.pid, starting.mountSeen
    else { return [] }
    switch confirmation {
    case .workerReady: guard starting.readySeen else { return [] }
    case .probe: guard starting.probeAnswered else { return [] }
    }
    phase = .ready(pid: pid, since: now)
    if starting.resuming, let crashedAt {
      let gap = now - crashedAt
      resumes += 1
      lastResumeGap = gap
      self.crashedAt = nil
      return [
        .log(
          .notice,
          "resumed: the successor serves the FUSE connection at \(spec.mountpoint), \(gap.milliseconds) ms after the crash"
        )
      ]
    }
    let took = now - attemptStartedAt
    lastTimeToReady = took
    return [
      .log(
        .notice, "ready: FUSE mount confirmed at \(spec.mountpoint) after \(took.milliseconds) ms")
    ]
  }
}
