import MountConfig

/// How runs begin and end on request: a start (or the adoption of a connection an earlier
/// supervisor held), the beginning of each attempt, and a stop or restart.
extension MountMachine {
  mutating func start(now: MonotonicInstant) -> [Effect] {
    switch phase {
    case .inactive, .exited, .failed, .backoff:
      return beginRun(now: now)
    case .stopping(var stopping):
      if stopping.then == .stay {
        stopping.then = .restart
        phase = .stopping(stopping)
      }
      return []
    case .preparing, .starting, .ready:
      return []
    }
  }

  /// A connection an earlier run of the supervisor held (systemd's fd store gave it back): the
  /// mount is there and its worker is gone, so the first start resumes it, as after a crash,
  /// instead of preparing the mountpoint. Only before that start.
  public mutating func adoptHeldConnection(now: MonotonicInstant) -> Bool {
    guard phase == .inactive, attempt == 0 else { return false }
    holdsConnection = true
    crashedAt = now
    return true
  }

  /// A start asked for by an operator or a reload: a new run, with a fresh start limit and
  /// restart delay; it is not counted as a restart.
  mutating func beginRun(now: MonotonicInstant) -> [Effect] {
    startHistory.removeAll()
    consecutiveFailures = 0
    attemptInRun = 0
    return beginStart(now: now)
  }

  mutating func beginStart(now: MonotonicInstant) -> [Effect] {
    startHistory.append(now)
    attemptStartedAt = now
    attempt += 1
    attemptInRun += 1
    if attemptInRun > 1 { restarts += 1 }
    workerStatus = nil
    workerError = nil
    workerErrno = nil
    inspections = 0
    if holdsConnection {
      // The mount is still there, held: no preparation, the successor serves it.
      var starting = Starting()
      starting.mountSeen = true
      starting.resuming = true
      phase = .starting(attempt: attempt, deadline: now + spec.startTimeout, starting)
      return [
        .log(
          .info,
          "resuming the FUSE connection (attempt \(attemptInRun)): \(spec.command.joined(separator: " "))"
        ),
        .resume(attempt: attempt, spec),
      ]
    }
    phase = .preparing(attempt: attempt, deadline: now + spec.startTimeout)
    let note = attemptInRun > 1 ? " (attempt \(attemptInRun))" : ""
    return [
      .log(.info, "starting\(note): \(spec.command.joined(separator: " "))"),
      .inspectMountpoint(attempt: attempt, mountpoint: spec.mountpoint),
    ]
  }

  mutating func stop(now: MonotonicInstant, then: AfterStop) -> [Effect] {
    switch phase {
    case .inactive, .exited, .failed, .backoff, .preparing:
      // A restart (a changed spec, an operator) starts anew: a held mount of the old worker ends.
      if then == .restart { return (holdsConnection ? endMount() : []) + beginRun(now: now) }
      if case .exited = phase { return [] }
      if case .failed = phase { return [] }
      phase = .inactive
      // A stop between a crash and its successor ends the held mount too.
      return holdsConnection ? endMount() : []
    case .starting(_, _, let starting):
      guard let pid = starting.pid else {
        phase = .inactive
        return then == .restart ? beginRun(now: now) : []
      }
      if starting.mountSeen {
        phase = .stopping(
          Stopping(pid: pid, stage: .unmounting, deadline: now + spec.stopTimeout, then: then))
        return [.cancelProbe, .unmount]
      }
      phase = .stopping(
        Stopping(pid: pid, stage: .terminating, deadline: now + spec.stopTimeout, then: then))
      return [.cancelProbe, .signal(15)]
    case .ready(let pid, let since):
      readyRunEnded(since: since, now: now)
      phase = .stopping(
        Stopping(pid: pid, stage: .unmounting, deadline: now + spec.stopTimeout, then: then))
      return [.log(.info, "stopping: unmounting \(spec.mountpoint)"), .unmount]
    case .stopping(var stopping):
      stopping.then = then
      phase = .stopping(stopping)
      return []
    }
  }
}
