import MountConfig

/// The life of one mount as a pure state machine: `(state, event) -> (state, [effect])`.
///
/// The machine never touches a process, a file descriptor or a clock; the runtime feeds it
/// events (with the time they happened) and carries out the effects it returns. Timeouts are
/// expressed as a `deadline` the runtime arms a timer for; when it passes, the runtime sends
/// `.timerFired`.
public struct MountMachine: Sendable, Codable {
  /// A readiness confirmation needs both the worker's word and the kernel's mount table.
  public struct Starting: Equatable, Sendable, Codable {
    public var pid: Int32?
    public var readySeen = false
    public var mountSeen = false
    public var probeStarted = false
    public var probeAnswered = false
    public var lastProbeError: String?
    /// The worker is a successor serving the held FUSE connection of a crashed one: the mount
    /// is there from the start, and the attempt ends the resume when it fails.
    public var resuming = false
  }

  public enum AfterStop: Equatable, Sendable, Codable {
    /// Requested stop: end inactive.
    case stay
    /// Requested restart (operator or changed config): start again at once.
    case restart
    /// The worker was aborted because of this failure: apply the restart policy.
    case retry(Failure)
  }

  /// How hard the supervisor is currently asking a worker to go.
  public enum StopStage: Equatable, Sendable, Codable {
    /// The mount was unmounted; the worker should get FUSE destroy and exit by itself.
    case unmounting
    case terminating
    case killing
  }

  public struct Stopping: Equatable, Sendable, Codable {
    public var pid: Int32
    public var stage: StopStage
    public var deadline: MonotonicInstant?
    public var then: AfterStop
  }

  public enum Phase: Equatable, Sendable, Codable {
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

  /// The state of a mount as status output names it: one word per group of phases.
  public enum State: String, Sendable, Equatable, CaseIterable {
    case stopped, starting, ready, backoff, stopping, exited, failed

    /// No worker runs and nothing is pending: the mount can be forgotten or its parent stopped.
    public var isSettled: Bool {
      switch self {
      case .stopped, .exited, .failed: true
      case .starting, .ready, .backoff, .stopping: false
      }
    }
  }

  /// A worker that stays ready this long has its restart delay reset.
  public static let stableAfter: Duration = .seconds(10)

  public internal(set) var spec: MountSpec
  public internal(set) var phase: Phase = .inactive
  /// Start attempts, numbered from 1; async answers carry the number they belong to.
  public internal(set) var attempt = 0
  /// Automatic restarts after failures (operators' and reloads' restarts are not counted).
  public internal(set) var restarts = 0
  /// Attempts of the current run: since the last start by an operator, a reload or the
  /// supervisor's own start.
  public internal(set) var attemptInRun = 0
  public internal(set) var lastFailure: Failure?
  /// Failures by kind since the mount was configured: each one that the restart policy saw
  /// (a clean exit that `restart = always` restarts is not one).
  public internal(set) var failureCounts: [Failure.Kind: Int] = [:]
  /// How long the last start that became ready took, from its beginning to the confirmation.
  public internal(set) var lastTimeToReady: Duration?
  /// The worker's latest `STATUS=` text.
  public internal(set) var workerStatus: String?
  var workerError: String?
  var workerErrno: Int32?
  var startHistory: [MonotonicInstant] = []
  var attemptStartedAt = MonotonicInstant(nanoseconds: 0)
  var consecutiveFailures = 0
  /// Mounts found and cleared at the mountpoint during the current attempt.
  var inspections = 0
  /// The probe that tests a ready mount with requests waiting, while it is unanswered.
  public internal(set) var hangCheck: HangCheck?
  /// Times the mount was found hung and its connection aborted.
  public internal(set) var hangs = 0
  /// The supervisor holds the worker's FUSE connection (the worker handed it over and the
  /// kernel can resend requests): a crash is resumed by a successor instead of ending the mount.
  public internal(set) var holdsConnection = false
  /// Crashes resumed by a successor without the mount going away.
  public internal(set) var resumes = 0
  /// From the crash to the successor's READY, for the last resume.
  public internal(set) var lastResumeGap: Duration?
  /// When the worker whose connection is being resumed was seen gone.
  var crashedAt: MonotonicInstant?

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
    case .ready: currentHangCheck.map { $0.since + spec.hangTimeout }
    case .inactive, .exited, .failed: nil
    }
  }

  public var state: State {
    switch phase {
    case .inactive: .stopped
    case .preparing, .starting: .starting
    case .ready: .ready
    case .backoff: .backoff
    case .stopping: .stopping
    case .exited: .exited
    case .failed: .failed
    }
  }

  public var isReady: Bool { state == .ready }

  /// No worker, nothing pending: the mount can be forgotten or its parent stopped.
  public var isSettled: Bool { state.isSettled }

  public var isFailed: Bool { state == .failed }

  /// When the current worker became ready, while it is.
  public var readySince: MonotonicInstant? {
    if case .ready(_, let since) = phase { return since }
    return nil
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
  public var stateName: String { state.rawValue }

  // MARK: Transitions

  public enum Event: Equatable, Sendable {
    /// Run this mount (clears `failed`).
    case start
    case stop
    /// An operator's or a reload's restart: it starts a new run, with a fresh start limit.
    case restart
    /// What the runtime found at the mountpoint, answering `.inspectMountpoint`.
    case mountpointInspected(attempt: Int, MountSite)
    /// The mountpoint exists and is a directory: the worker can be spawned.
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
    /// The kernel holds this many requests of the mount's connection that its server has not
    /// answered (fusectl `waiting`), seen by the periodic hang check.
    case requestsWaiting(Int)
    /// The hang probe of this attempt moved on to its next access, e.g. "stat of /mnt/x/probe".
    case hangProbeStep(attempt: Int, String)
    /// Every access of the hang probe was answered (successfully or not): the server answers.
    case hangProbeAnswered(attempt: Int)
    /// No hang probe could be started; the next check tries again.
    case hangProbeUnavailable(attempt: Int, String)
    /// An operator's `mountctl abort`: abort the connection and restart by the policy.
    case abort
    /// The runtime holds the worker's FUSE connection, handed over with FUSE_HAS_RESEND.
    case connectionHeld
  }

  public enum Effect: Equatable, Sendable {
    /// Find out what is mounted at the mountpoint (without touching a mount whose server may
    /// hang) and answer `.mountpointInspected`.
    case inspectMountpoint(attempt: Int, mountpoint: String)
    /// Lazily detach the FUSE mount on top of the mountpoint, whose server is gone; answer
    /// `.prepareFailed` if that fails.
    case detachStaleMount(attempt: Int, mountpoint: String)
    /// Kill workers an earlier run of the supervisor left behind, with their process groups.
    case endLeftoverWorkers(pids: [Int32])
    /// `mkdir -p` the mountpoint (given to `user` when set) and answer `.prepared` or
    /// `.prepareFailed`.
    case createMountpoint(attempt: Int, mountpoint: String, user: String?)
    /// Start a worker for this spec; answer `.spawned` or `.spawnFailed`.
    case spawn(attempt: Int, MountSpec)
    /// Start a successor that serves the held FUSE connection instead of mounting; answer
    /// `.spawned` or `.spawnFailed`.
    case resume(attempt: Int, MountSpec)
    /// Close the held FUSE connection. With no worker left serving it, the kernel aborts it:
    /// waiting accesses fail instead of hanging. Always followed by `.detachMount`.
    case releaseConnection
    /// Mode `probe`: check off the event loop that the daemon answers; retried by the runtime
    /// until it answers or the attempt ends.
    case startProbe(attempt: Int, mountpoint: String, probePath: String?)
    case cancelProbe
    /// Unmount, so that the worker gets FUSE destroy and exits by itself.
    case unmount
    /// Signal the worker's process group.
    case signal(Int32)
    /// Lazily detach whatever FUSE mount the worker left at the mountpoint.
    case detachMount
    /// Off the loop, as the mount's owner: `statfs` of the mountpoint, then a stat of the probe
    /// path; report each step (`.hangProbeStep`) and the end (`.hangProbeAnswered`).
    case startHangProbe(attempt: Int, mountpoint: String, probePath: String?)
    case cancelHangProbe
    /// Abort the worker's FUSE connection (fusectl `abort`): every blocked request fails at once.
    case abortConnection
    case log(LogLevel, String)
  }

  /// How many times one attempt may find and clear something at its mountpoint before it gives
  /// up: a mount that comes back after every detach is not stale.
  static let inspectionLimit = 4

  public mutating func handle(_ event: Event, now: MonotonicInstant) -> [Effect] {
    // A spawned worker is always recorded, so that a timeout that is already due ends it.
    if case .spawned = event {
      let effects = handleInTime(event, now: now)
      return effects + handleInTime(.timerFired, now: now)
    }
    // An event read after the attempt's deadline comes after the timeout, whatever the order in
    // which the runtime saw the two: a READY at 10.001 s is no success for a 10 s timeout.
    var overdue: [Effect] = []
    if event != .timerFired, let deadline, deadline <= now, state == .starting {
      overdue = deadlinePassed(now: now)
    }
    return overdue + handleInTime(event, now: now)
  }

  private mutating func handleInTime(_ event: Event, now: MonotonicInstant) -> [Effect] {
    switch event {
    case .start: return start(now: now)
    case .stop: return stop(now: now, then: .stay)
    case .restart: return stop(now: now, then: .restart)
    case .mountpointInspected(let number, let site):
      guard case .preparing(number, _) = phase else { return [] }
      return decide(site, attempt: number, now: now)
    case .prepared(let number):
      guard case .preparing(number, _) = phase else { return [] }
      // Waiting for a turn to spawn is bounded too, but not by the preparation's deadline.
      phase = .starting(attempt: number, deadline: now + spec.startTimeout, Starting())
      return [.spawn(attempt: number, spec)]
    case .prepareFailed(let number, let failure):
      guard case .preparing(number, _) = phase else { return [] }
      return afterFailure(failure, now: now)
    case .spawned(let pid):
      // The start timeout is the worker's: it counts from its spawn, not from the wait for a
      // turn to spawn it (thousands of mounts start a few per loop turn).
      guard case .starting(let number, _, var starting) = phase, starting.pid == nil else {
        return []
      }
      starting.pid = pid
      phase = .starting(attempt: number, deadline: now + spec.startTimeout, starting)
      return []
    case .spawnFailed(let failure):
      guard case .starting = phase else { return [] }
      // A successor that cannot even start ends the resume, as one that exits would.
      return (holdsConnection ? endMount() : []) + afterFailure(failure, now: now)
    case .message(let message):
      return received(message, now: now)
    case .mountAppeared:
      let number = attempt
      let (mountpoint, probePath) = (spec.mountpoint, spec.probePath)
      let probes = confirmation == .probe
      return updateStarting { starting in
        starting.mountSeen = true
        guard probes, !starting.probeStarted else { return [] }
        starting.probeStarted = true
        return [.startProbe(attempt: number, mountpoint: mountpoint, probePath: probePath)]
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
    case .requestsWaiting(let count):
      return requestsWaiting(count, now: now)
    case .hangProbeStep(let number, let step):
      guard number == attempt, var check = currentHangCheck else { return [] }
      check.step = step
      hangCheck = check
      return []
    case .hangProbeAnswered(let number), .hangProbeUnavailable(let number, _):
      guard number == attempt, currentHangCheck != nil else { return [] }
      hangCheck = nil
      if case .hangProbeUnavailable(_, let reason) = event {
        return [.log(.warning, "cannot check whether the mount hangs: \(reason)")]
      }
      return []
    case .abort:
      return abortedByOperator(now: now)
    case .connectionHeld:
      guard pid != nil, !holdsConnection else { return [] }
      holdsConnection = true
      return [
        .log(.info, "holding the worker's FUSE connection: a crash will be resumed, not detached")
      ]
    }
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
