import MountConfig
import Testing

@testable import MountCore

/// Swift Testing has an `ExitStatus` of its own (for exit tests); ours is the worker's.
typealias ExitStatus = MountCore.ExitStatus

// MARK: Time

/// A fake "boot time" well away from zero, so that a deadline computed from the wrong origin
/// (e.g. from instant 0) cannot pass for a right one.
let origin = MonotonicInstant(nanoseconds: 5_000 * 1_000_000_000)

// MARK: Specs

/// A mount spec with the documented defaults unless a test says otherwise.
func makeSpec(
  _ name: String = "photos", mountpoint: String? = nil, command: [String]? = nil,
  readiness: ReadinessMode = .protocol, restart: RestartPolicy = .onFailure,
  required: Bool = true, startTimeout: Duration = .seconds(10),
  stopTimeout: Duration = .seconds(10), restartDelay: Duration = .milliseconds(100),
  restartDelayMax: Duration = .seconds(30), startLimitBurst: Int = 5,
  startLimitInterval: Duration = .seconds(60)
) -> MountSpec {
  let mountpoint = mountpoint ?? "/mnt/\(name)"
  return MountSpec(
    name: name, mountpoint: mountpoint,
    command: command ?? ["mountsup-testworker", mountpoint],
    readiness: readiness, restart: restart, required: required,
    startTimeout: startTimeout, stopTimeout: stopTimeout, restartDelay: restartDelay,
    restartDelayMax: restartDelayMax, startLimitBurst: startLimitBurst,
    startLimitInterval: startLimitInterval, sourceFile: "/etc/mountsup/mounts.toml")
}

// MARK: Messages

let readyMessage = WorkerMessage(ready: true)

func datagram(_ text: String) -> WorkerMessage {
  WorkerMessage(datagram: Array(text.utf8))
}

// MARK: Effects

extension Array where Element == MountMachine.Effect {
  /// The effects that make the runtime do something, without log lines.
  var actions: [MountMachine.Effect] {
    filter {
      if case .log = $0 { return false }
      return true
    }
  }
}

extension Array where Element == SupervisorCore.Effect {
  /// Everything but the mounts' log lines.
  var actions: [SupervisorCore.Effect] {
    filter {
      if case .mount(_, .log) = $0 { return false }
      return true
    }
  }

  /// One mount's effects, without log lines.
  func actions(for name: String) -> [MountMachine.Effect] {
    compactMap {
      if case .mount(name, let effect) = $0 { return effect }
      return nil
    }.actions
  }

  /// The service-level effects (READY, failure, exit).
  var service: [SupervisorCore.Effect] {
    filter {
      if case .mount = $0 { return false }
      return true
    }
  }

  var announcesReady: Bool { contains(.announceReady) }

  var exitCodes: [Int32] {
    compactMap {
      if case .exit(let code) = $0 { return code }
      return nil
    }
  }

  var failures: [(mount: String, failure: Failure)] {
    compactMap {
      if case .announceFailure(let mount, let failure) = $0 { return (mount, failure) }
      return nil
    }
  }

  /// Names of the mounts that got any non-log effect.
  var touchedMounts: Set<String> {
    Set(
      actions.compactMap {
        if case .mount(let name, _) = $0 { return name }
        return nil
      })
  }
}

// MARK: Phase accessors

extension MountMachine {
  var starting: Starting? {
    if case .starting(_, _, let starting) = phase { return starting }
    return nil
  }

  var stopping: Stopping? {
    if case .stopping(let stopping) = phase { return stopping }
    return nil
  }

  var failure: Failure? {
    if case .failed(let failure) = phase { return failure }
    return nil
  }

  var backoffUntil: MonotonicInstant? {
    if case .backoff(let until) = phase { return until }
    return nil
  }

  var isPreparing: Bool {
    if case .preparing = phase { return true }
    return false
  }

  var isInBackoff: Bool { backoffUntil != nil }
}

// MARK: One machine, driven by hand

/// Drives one `MountMachine` with a fake clock.
struct MachineHarness {
  var machine: MountMachine
  var now: MonotonicInstant

  init(_ spec: MountSpec = makeSpec(), now: MonotonicInstant = origin) {
    machine = MountMachine(spec: spec)
    self.now = now
  }

  var spec: MountSpec { machine.spec }
  var phase: MountMachine.Phase { machine.phase }

  @discardableResult
  mutating func send(_ event: MountMachine.Event) -> [MountMachine.Effect] {
    machine.handle(event, now: now)
  }

  mutating func advance(_ duration: Duration) {
    now = now + duration
  }

  /// Moves the clock exactly onto the machine's deadline and fires the timer there.
  @discardableResult
  mutating func fireDeadline(sourceLocation: SourceLocation = #_sourceLocation) -> [MountMachine
    .Effect]
  {
    guard let deadline = machine.deadline else {
      Issue.record("no deadline in phase \(machine.phase)", sourceLocation: sourceLocation)
      return []
    }
    #expect(deadline >= now, "deadline in the past", sourceLocation: sourceLocation)
    now = deadline
    return send(.timerFired)
  }

  /// Begins an attempt (start, or the end of the backoff) and carries it to a running worker:
  /// prepared, spawned. Nothing is confirmed yet.
  @discardableResult
  mutating func runWorker(pid: Int32 = 100, sourceLocation: SourceLocation = #_sourceLocation)
    -> [MountMachine.Effect]
  {
    var effects: [MountMachine.Effect] = []
    switch machine.phase {
    case .inactive, .exited, .failed: effects += send(.start)
    case .backoff: effects += fireDeadline(sourceLocation: sourceLocation)
    case .preparing: break
    default:
      Issue.record(
        "cannot begin an attempt in phase \(machine.phase)", sourceLocation: sourceLocation)
    }
    effects += send(.prepared(attempt: machine.attempt))
    effects += send(.spawned(pid: pid))
    #expect(machine.pid == pid, sourceLocation: sourceLocation)
    return effects
  }

  /// Runs a worker and confirms it the way its readiness mode requires.
  @discardableResult
  mutating func makeReady(pid: Int32 = 100, sourceLocation: SourceLocation = #_sourceLocation)
    -> [MountMachine.Effect]
  {
    var effects = runWorker(pid: pid, sourceLocation: sourceLocation)
    if spec.readiness == .probe {
      effects += send(.mountAppeared)
      effects += send(.probeAnswered(attempt: machine.attempt))
    } else {
      effects += send(.message(readyMessage))
      effects += send(.mountAppeared)
    }
    #expect(machine.phase == .ready(pid: pid, since: now), sourceLocation: sourceLocation)
    return effects
  }

  /// Runs a worker that exits before it is confirmed.
  @discardableResult
  mutating func failStart(
    pid: Int32 = 100, status: ExitStatus = .exited(1), outputTail: [String] = [],
    sourceLocation: SourceLocation = #_sourceLocation
  ) -> [MountMachine.Effect] {
    runWorker(pid: pid, sourceLocation: sourceLocation)
      + send(.exited(status, outputTail: outputTail))
  }
}

/// Named phases a machine can be brought into, for tables of "this event in every phase".
enum Stage: String, CaseIterable, Sendable, CustomStringConvertible {
  case inactive
  case preparing
  case startingWithoutPid
  case starting
  case startingMounted
  case ready
  case backoff
  case stopping
  case exited
  case failed

  var description: String { rawValue }

  /// A machine in this stage, built from `spec` (stage `failed` uses `restart = never`).
  func harness(_ spec: MountSpec = makeSpec()) -> MachineHarness {
    var spec = spec
    if self == .failed { spec.restart = .never }
    var harness = MachineHarness(spec)
    switch self {
    case .inactive: break
    case .preparing: harness.send(.start)
    case .startingWithoutPid:
      harness.send(.start)
      harness.send(.prepared(attempt: 1))
    case .starting: harness.runWorker()
    case .startingMounted:
      harness.runWorker()
      harness.send(.mountAppeared)
    case .ready: harness.makeReady()
    case .backoff: harness.failStart()
    case .stopping:
      harness.makeReady()
      harness.send(.stop)
    case .exited:
      harness.makeReady()
      harness.advance(.seconds(1))
      harness.send(.exited(.exited(0), outputTail: []))
    case .failed: harness.failStart()
    }
    return harness
  }
}

// MARK: The aggregate, driven by hand

/// Drives a `SupervisorCore` with a fake clock.
struct CoreHarness {
  var core: SupervisorCore
  var now: MonotonicInstant

  init(_ specs: [MountSpec], now: MonotonicInstant = origin) {
    core = SupervisorCore(specs: specs)
    self.now = now
  }

  func machine(_ name: String) -> MountMachine { core.machines[name]! }

  mutating func advance(_ duration: Duration) {
    now = now + duration
  }

  @discardableResult
  mutating func begin() -> [SupervisorCore.Effect] {
    core.begin(now: now)
  }

  @discardableResult
  mutating func send(_ event: MountMachine.Event, to name: String) -> [SupervisorCore.Effect] {
    core.handle(event, for: name, now: now)
  }

  /// Moves the clock to the earliest deadline and fires the timer there.
  @discardableResult
  mutating func fireTimers(sourceLocation: SourceLocation = #_sourceLocation) -> [SupervisorCore
    .Effect]
  {
    guard let deadline = core.nextDeadline else {
      Issue.record("no deadline pending", sourceLocation: sourceLocation)
      return []
    }
    if deadline > now { now = deadline }
    return core.timerFired(now: now)
  }

  /// Carries a mount that is preparing to a running worker (prepared, spawned).
  @discardableResult
  mutating func runWorker(
    _ name: String, pid: Int32, sourceLocation: SourceLocation = #_sourceLocation
  )
    -> [SupervisorCore.Effect]
  {
    #expect(
      machine(name).isPreparing, "\(name) is \(machine(name).phase)", sourceLocation: sourceLocation
    )
    let attempt = machine(name).attempt
    return send(.prepared(attempt: attempt), to: name) + send(.spawned(pid: pid), to: name)
  }

  /// Carries a mount that is preparing to ready.
  @discardableResult
  mutating func makeReady(
    _ name: String, pid: Int32, sourceLocation: SourceLocation = #_sourceLocation
  )
    -> [SupervisorCore.Effect]
  {
    var effects = runWorker(name, pid: pid, sourceLocation: sourceLocation)
    effects += send(.message(readyMessage), to: name)
    effects += send(.mountAppeared, to: name)
    #expect(
      machine(name).isReady, "\(name) is \(machine(name).phase)", sourceLocation: sourceLocation)
    return effects
  }

  @discardableResult
  mutating func exit(
    _ name: String, _ status: ExitStatus = .exited(0), outputTail: [String] = []
  ) -> [SupervisorCore.Effect] {
    send(.exited(status, outputTail: outputTail), to: name)
  }
}
