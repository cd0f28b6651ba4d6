import MountConfig

/// The life of one mount as a pure state machine: `(state, event) -> (state, [effect])`.
///
/// The machine never touches a process, a file descriptor or a clock; the runtime feeds it
/// events (with the time they happened) and carries out the effects it returns. Timeouts are
/// expressed as a `deadline` the runtime arms a timer for; when it passes, the runtime sends
/// `.timerFired`.
public struct MountMachine: Sendable {
  /// A readiness confirmation needs both the worker's word and the kernel's mount table.
  public struct Starting: Equatable, Sendable {
    public var pid: Int32?
    public var readySeen = false
    public var mountSeen = false
    public var probeStarted = false
    public var probeAnswered = false
    public var lastProbeError: String?
  }

  public enum AfterStop: Equatable, Sendable {
    /// Requested stop: end inactive.
    case stay
    /// Requested restart (operator or changed config): start again at once.
    case restart
    /// The worker was aborted because of this failure: apply the restart policy.
    case retry(Failure)
  }

  /// How hard the supervisor is currently asking a worker to go.
  public enum StopStage: Equatable, Sendable {
    /// The mount was unmounted; the worker should get FUSE destroy and exit by itself.
    case unmounting
    case terminating
    case killing
  }

  public struct Stopping: Equatable, Sendable {
    public var pid: Int32
    public var stage: StopStage
    public var deadline: MonotonicInstant?
    public var then: AfterStop
  }

  public enum Phase: Equatable, Sendable {
    /// Never started, or stopped on request.
    case inactive
    /// A dead mount is being cleaned and the mountpoint created before the spawn.
    case preparing(attempt: Int, deadline: MonotonicInstant)
    /// The worker runs; its FUSE init is not confirmed yet.
    case starting(attempt: Int, deadline: MonotonicInstant, Starting)
    case ready(pid: Int32, since: MonotonicInstant)
    /// Waiting out the restart delay after a failure.
    case backoff(until: MonotonicInstant)
    case stopping(Stopping)
    /// The worker ended and the restart policy says to leave it.
    case exited(ExitStatus)
    /// Gave up: restart policy `never`, or the start limit was reached.
    case failed(Failure)
  }

  /// A worker that stays ready this long has its restart delay reset.
  public static let stableAfter: Duration = .seconds(10)

  public internal(set) var spec: MountSpec
  public private(set) var phase: Phase = .inactive
  /// Start attempts, numbered from 1; async answers carry the number they belong to.
  public private(set) var attempt = 0
  /// Starts after the first one.
  public private(set) var restarts = 0
  public private(set) var lastFailure: Failure?
  /// The worker's latest `STATUS=` text.
  public private(set) var workerStatus: String?
  private var workerError: String?
  private var workerErrno: Int32?
  private var startHistory: [MonotonicInstant] = []
  private var attemptStartedAt = MonotonicInstant(nanoseconds: 0)
  private var consecutiveFailures = 0

  public init(spec: MountSpec) {
    self.spec = spec
  }

  // MARK: Derived facts

  /// When the runtime must send `.timerFired`, if ever.
  public var deadline: MonotonicInstant? {
    switch phase {
    case .preparing(_, let deadline), .starting(_, let deadline, _): deadline
    case .backoff(let until): until
    case .stopping(let stopping): stopping.deadline
    case .inactive, .ready, .exited, .failed: nil
    }
  }

  public var isReady: Bool {
    if case .ready = phase { return true }
    return false
  }

  /// No worker, nothing pending: the mount can be forgotten or its parent stopped.
  public var isSettled: Bool {
    switch phase {
    case .inactive, .exited, .failed: true
    case .preparing, .starting, .ready, .backoff, .stopping: false
    }
  }

  public var isFailed: Bool {
    if case .failed = phase { return true }
    return false
  }

  /// The worker's pid while one runs.
  public var pid: Int32? {
    switch phase {
    case .starting(_, _, let starting): starting.pid
    case .ready(let pid, _): pid
    case .stopping(let stopping): stopping.pid
    default: nil
    }
  }

  /// A one-word state for status output.
  public var stateName: String {
    switch phase {
    case .inactive: "stopped"
    case .preparing, .starting: "starting"
    case .ready: "ready"
    case .backoff: "backoff"
    case .stopping: "stopping"
    case .exited: "exited"
    case .failed: "failed"
    }
  }

  // MARK: Transitions

  public enum Event: Equatable, Sendable {
    /// Run this mount (clears `failed`).
    case start
    case stop
    case restart
    case prepared(attempt: Int)
    case prepareFailed(attempt: Int, Failure)
    case spawned(pid: Int32)
    case spawnFailed(Failure)
    case message(WorkerMessage)
    /// A FUSE mount that was not there before the spawn is now at the mountpoint.
    case mountAppeared
    case mountVanished
    case probeAnswered(attempt: Int)
    case probeFailed(attempt: Int, String)
    case exited(ExitStatus, outputTail: [String])
    case timerFired
  }

  public enum Effect: Equatable, Sendable {
    /// Detach a dead FUSE mount at the mountpoint, refuse a live or foreign one, create the
    /// mountpoint; answer `.prepared` or `.prepareFailed`.
    case prepare(attempt: Int)
    /// Answer `.spawned` or `.spawnFailed`.
    case spawn(attempt: Int)
    /// Mode `probe`: check off the event loop that the daemon answers; retried by the runtime
    /// until it answers or the attempt ends.
    case startProbe(attempt: Int)
    case cancelProbe
    /// Unmount, so that the worker gets FUSE destroy and exits by itself.
    case unmount
    /// Signal the worker's process group.
    case signal(Int32)
    /// Lazily detach whatever FUSE mount the worker left at the mountpoint.
    case detachMount
    case log(LogLevel, String)
  }

  public mutating func handle(_ event: Event, now: MonotonicInstant) -> [Effect] {
    switch event {
    case .start: return start(now: now)
    case .stop: return stop(now: now, then: .stay)
    case .restart: return stop(now: now, then: .restart)
    case .prepared(let number):
      guard case .preparing(number, let deadline) = phase else { return [] }
      phase = .starting(attempt: number, deadline: deadline, Starting())
      return [.spawn(attempt: number)]
    case .prepareFailed(let number, let failure):
      guard case .preparing(number, _) = phase else { return [] }
      return afterFailure(failure, now: now)
    case .spawned(let pid):
      return updateStarting {
        $0.pid = pid
        return []
      }
    case .spawnFailed(let failure):
      guard case .starting = phase else { return [] }
      return afterFailure(failure, now: now)
    case .message(let message):
      return received(message, now: now)
    case .mountAppeared:
      let probes = spec.readiness == .probe
      let number = attempt
      return updateStarting { starting in
        starting.mountSeen = true
        guard probes, !starting.probeStarted else { return [] }
        starting.probeStarted = true
        return [.startProbe(attempt: number)]
      } + confirmIfComplete(now: now)
    case .mountVanished:
      return mountVanished(now: now)
    case .probeAnswered(let number):
      guard number == attempt else { return [] }
      return updateStarting {
        $0.probeAnswered = true
        return []
      } + confirmIfComplete(now: now)
    case .probeFailed(let number, let reason):
      guard number == attempt else { return [] }
      return updateStarting {
        $0.lastProbeError = reason
        return []
      }
    case .exited(let status, let tail):
      return exited(status, outputTail: tail, now: now)
    case .timerFired:
      guard let deadline, deadline <= now else { return [] }
      return deadlinePassed(now: now)
    }
  }

  private mutating func start(now: MonotonicInstant) -> [Effect] {
    switch phase {
    case .inactive, .exited, .failed:
      startHistory.removeAll()
      consecutiveFailures = 0
      return beginStart(now: now)
    case .backoff:
      return beginStart(now: now)
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

  private mutating func beginStart(now: MonotonicInstant) -> [Effect] {
    startHistory.append(now)
    attemptStartedAt = now
    attempt += 1
    if attempt > 1 { restarts += 1 }
    workerStatus = nil
    workerError = nil
    workerErrno = nil
    phase = .preparing(attempt: attempt, deadline: now + spec.startTimeout)
    let note = attempt > 1 ? " (attempt \(attempt))" : ""
    return [
      .log(.info, "starting\(note): \(spec.command.joined(separator: " "))"),
      .prepare(attempt: attempt),
    ]
  }

  private mutating func stop(now: MonotonicInstant, then: AfterStop) -> [Effect] {
    switch phase {
    case .inactive, .exited, .failed, .backoff, .preparing:
      if then == .restart {
        if case .backoff = phase {} else { startHistory.removeAll() }
        consecutiveFailures = 0
        return beginStart(now: now)
      }
      if case .exited = phase { return [] }
      if case .failed = phase { return [] }
      phase = .inactive
      return []
    case .starting(_, _, let starting):
      guard let pid = starting.pid else {
        phase = .inactive
        return then == .restart ? beginStart(now: now) : []
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

  private mutating func received(_ message: WorkerMessage, now: MonotonicInstant) -> [Effect] {
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
    if message.ready, spec.readiness != .probe {
      effects += updateStarting {
        $0.readySeen = true
        return []
      }
      effects += confirmIfComplete(now: now)
    }
    return effects
  }

  private mutating func updateStarting(_ body: (inout Starting) -> [Effect]) -> [Effect] {
    guard case .starting(let number, let deadline, var starting) = phase else { return [] }
    let effects = body(&starting)
    phase = .starting(attempt: number, deadline: deadline, starting)
    return effects
  }

  private mutating func confirmIfComplete(now: MonotonicInstant) -> [Effect] {
    guard case .starting(_, _, let starting) = phase, let pid = starting.pid,
      starting.mountSeen,
      spec.readiness == .probe ? starting.probeAnswered : starting.readySeen
    else { return [] }
    phase = .ready(pid: pid, since: now)
    let took = now - attemptStartedAt
    return [
      .log(
        .notice, "ready: FUSE mount confirmed at \(spec.mountpoint) after \(took.milliseconds) ms")
    ]
  }

  private mutating func mountVanished(now: MonotonicInstant) -> [Effect] {
    switch phase {
    case .starting(let number, let deadline, var starting):
      starting.mountSeen = false
      phase = .starting(attempt: number, deadline: deadline, starting)
      return []
    case .ready(let pid, let since):
      readyRunEnded(since: since, now: now)
      let failure = Failure(
        summary: "its FUSE mount at \(spec.mountpoint) disappeared while the worker ran "
          + "(unmounted from outside? use `mountctl stop \(spec.name)` to stop a mount)")
      phase = .stopping(
        Stopping(
          pid: pid, stage: .terminating, deadline: now + spec.stopTimeout, then: .retry(failure)))
      return [.log(.warning, failure.summary), .signal(15)]
    default:
      return []
    }
  }

  private mutating func exited(_ status: ExitStatus, outputTail: [String], now: MonotonicInstant)
    -> [Effect]
  {
    let words = workerError ?? outputTail.last { !$0.allSatisfy(\.isWhitespace) }
    switch phase {
    case .starting:
      let failure = Failure(
        summary: "\(status) before its mount was ready", workerError: words, errno: workerErrno,
        outputTail: outputTail)
      return [.cancelProbe, .detachMount] + afterFailure(failure, now: now)
    case .ready(_, let since):
      let served = now - since
      readyRunEnded(since: since, now: now)
      // Output printed while it served is no explanation of a crash; only its ERROR= is.
      let failure = Failure(
        summary: "\(status) after \(served.milliseconds) ms ready", workerError: workerError,
        errno: workerErrno, outputTail: outputTail)
      if status.isSuccess, spec.restart != .always {
        phase = .exited(status)
        return [
          .detachMount,
          .log(.notice, "worker \(status); restart = \(spec.restart.rawValue), not restarting"),
        ]
      }
      return [.detachMount] + afterFailure(failure, now: now, countsAsFailure: !status.isSuccess)
    case .stopping(let stopping):
      switch stopping.then {
      case .stay:
        phase = .inactive
        return [.detachMount, .log(.info, "stopped (\(status))")]
      case .restart:
        return [.detachMount] + beginStart(now: now)
      case .retry(var failure):
        failure.workerError = failure.workerError ?? words
        failure.errno = failure.errno ?? workerErrno
        failure.outputTail = outputTail
        return [.detachMount] + afterFailure(failure, now: now)
      }
    default:
      return []
    }
  }

  private mutating func deadlinePassed(now: MonotonicInstant) -> [Effect] {
    switch phase {
    case .preparing:
      return afterFailure(
        Failure(
          summary:
            "the mountpoint \(spec.mountpoint) could not be prepared within \(formatDuration(spec.startTimeout))"
        ),
        now: now)
    case .starting(_, _, let starting):
      var missing: [String] = []
      if spec.readiness != .probe, !starting.readySeen {
        missing.append("the worker never sent READY=1")
      }
      if !starting.mountSeen { missing.append("no FUSE mount appeared at \(spec.mountpoint)") }
      if spec.readiness == .probe, starting.mountSeen, !starting.probeAnswered {
        missing.append(
          "the mount did not answer a probe (\(starting.lastProbeError ?? "no answer"))")
      }
      let failure = Failure(
        summary:
          "no confirmed FUSE init within \(formatDuration(spec.startTimeout)) (\(missing.joined(separator: "; ")))",
        workerError: workerError, errno: workerErrno)
      guard let pid = starting.pid else { return afterFailure(failure, now: now) }
      phase = .stopping(Stopping(pid: pid, stage: .killing, deadline: nil, then: .retry(failure)))
      return [.log(.error, failure.summary), .cancelProbe, .signal(9), .detachMount]
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
          ), .signal(9), .detachMount,
        ]
      case .killing:
        return []
      }
    case .inactive, .ready, .exited, .failed:
      return []
    }
  }

  /// A worker that stayed ready for `stableAfter` starts the restart delay over, however its run
  /// ended (exit, vanished mount, stop or restart).
  private mutating func readyRunEnded(since: MonotonicInstant, now: MonotonicInstant) {
    if now - since >= Self.stableAfter { consecutiveFailures = 0 }
  }

  /// Applies the restart policy, the start limit and the backoff after a failed start or a crash.
  private mutating func afterFailure(
    _ failure: Failure, now: MonotonicInstant, countsAsFailure: Bool = true
  ) -> [Effect] {
    lastFailure = failure
    if countsAsFailure { consecutiveFailures += 1 }
    if spec.restart == .never {
      phase = .failed(failure)
      return [.log(.error, "failed: \(failure); restart = never")]
    }
    startHistory.removeAll { now - $0 >= spec.startLimitInterval }
    if startHistory.count >= spec.startLimitBurst {
      let given = Failure(
        summary:
          "start limit reached (\(startHistory.count) starts within \(formatDuration(spec.startLimitInterval))), "
          + "giving up; last failure: \(failure.summary)",
        workerError: failure.workerError, errno: failure.errno, outputTail: failure.outputTail)
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

  private func backoffDelay() -> Duration {
    var delay = spec.restartDelay
    for _ in 1..<max(consecutiveFailures, 1) {
      delay *= 2
      if delay >= spec.restartDelayMax { return spec.restartDelayMax }
    }
    return min(delay, spec.restartDelayMax)
  }

  /// Replaces the spec; the runtime restarts the worker when `requiresRestart` says so.
  public mutating func update(spec newSpec: MountSpec) {
    spec = newSpec
  }
}

/// Log levels of the effects, mapped by the runtime onto its logger and the journal.
public enum LogLevel: String, Sendable, Equatable {
  case debug, info, notice, warning, error
}
