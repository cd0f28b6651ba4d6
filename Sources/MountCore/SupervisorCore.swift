import MountConfig

/// All mounts of one supervisor, and the service-level facts derived from them.
///
/// It routes events to the per-mount machines, starts nested mounts parent-first and stops them
/// child-first, and decides when the service is READY (every required mount confirmed), when it
/// has failed (a required mount gave up before READY) and when a shutdown is complete. Like the
/// machines it wraps, it is pure: the runtime carries out the effects.
public struct SupervisorCore: Sendable {
  public enum Effect: Equatable, Sendable {
    case mount(String, MountMachine.Effect)
    /// Every required mount is confirmed: READY=1 to the service manager, exactly once.
    case announceReady
    /// A required mount gave up before READY: the service fails with its reason and stops.
    case announceFailure(mount: String, Failure)
    /// Shutdown is complete: no worker runs; the daemon exits with this code.
    case exit(code: Int32)
  }

  public private(set) var machines: [String: MountMachine] = [:]
  /// Mount names, parents before the mounts nested inside them.
  public private(set) var order: [String] = []
  /// The nearest managed mount whose mountpoint contains this one's.
  private var parents: [String: String] = [:]
  /// Mounts an operator stopped: not started again until started by an operator.
  public private(set) var held: Set<String> = []
  public private(set) var readyAnnounced = false
  public private(set) var shuttingDown = false
  /// The required mount whose failure before READY fails the service.
  public private(set) var serviceFailure: (mount: String, failure: Failure)?
  private var exitAnnounced = false

  public init(specs: [MountSpec]) {
    for spec in specs { machines[spec.name] = MountMachine(spec: spec) }
    recomputeTopology()
  }

  // MARK: Inputs

  /// Starts every mount whose parent (if any) is ready.
  public mutating func begin(now: MonotonicInstant) -> [Effect] {
    settle(now: now)
  }

  public mutating func handle(_ event: MountMachine.Event, for name: String, now: MonotonicInstant)
    -> [Effect]
  {
    guard machines[name] != nil else { return [] }
    let effects = machines[name]!.handle(event, now: now).map { Effect.mount(name, $0) }
    return effects + settle(now: now)
  }

  /// Delivers `.timerFired` to every mount whose deadline has passed.
  public mutating func timerFired(now: MonotonicInstant) -> [Effect] {
    var effects: [Effect] = []
    for name in order where (machines[name]?.deadline).map({ $0 <= now }) == true {
      effects += machines[name]!.handle(.timerFired, now: now).map { .mount(name, $0) }
    }
    return effects + settle(now: now)
  }

  /// Stops everything, children first; ends with `.exit`.
  public mutating func shutdown(now: MonotonicInstant) -> [Effect] {
    shuttingDown = true
    return settle(now: now)
  }

  /// An operator's stop: it sticks until the operator starts the mount again.
  public mutating func operatorStop(_ name: String, now: MonotonicInstant) -> [Effect] {
    guard machines[name] != nil else { return [] }
    held.insert(name)
    return settle(now: now)
  }

  /// An operator's start: clears a stop and a `failed` state.
  public mutating func operatorStart(_ name: String, now: MonotonicInstant) -> [Effect] {
    guard machines[name] != nil else { return [] }
    held.remove(name)
    // A mount that may not run yet (parent down, shutdown) is started by `settle` once it may.
    guard isWanted(name) else { return settle(now: now) }
    return handle(.start, for: name, now: now)
  }

  public mutating func operatorRestart(_ name: String, now: MonotonicInstant) -> [Effect] {
    guard machines[name] != nil else { return [] }
    held.remove(name)
    guard isWanted(name) else { return settle(now: now) }
    return restart(name, now: now) + settle(now: now)
  }

  /// Restarts a mount at once, or, while mounts nested in it still run, once they are down.
  private mutating func restart(_ name: String, now: MonotonicInstant) -> [Effect] {
    guard descendants(of: name).allSatisfy({ machines[$0]!.isSettled }) else {
      restarting.insert(name)
      return []
    }
    return machines[name]!.handle(.restart, now: now).map { .mount(name, $0) }
  }

  /// What a reload changed, by mount name.
  public struct ReloadSummary: Equatable, Sendable {
    public var added: [String] = []
    public var removed: [String] = []
    public var changed: [String] = []
    public var unchanged: [String] = []
  }

  /// Applies a new set of specs: removed mounts stop (and are forgotten once settled), added
  /// ones start, changed ones restart, unchanged ones are left alone.
  public mutating func apply(specs: [MountSpec], now: MonotonicInstant) -> (ReloadSummary, [Effect])
  {
    var summary = ReloadSummary()
    var effects: [Effect] = []
    let newNames = Set(specs.map(\.name))
    for name in order where !newNames.contains(name) && !removing.contains(name) {
      summary.removed.append(name)
      removing.insert(name)
    }
    for spec in specs {
      guard let machine = machines[spec.name], removing.remove(spec.name) == nil else {
        if machines[spec.name] == nil { machines[spec.name] = MountMachine(spec: spec) }
        machines[spec.name]!.update(spec: spec)
        summary.added.append(spec.name)
        continue
      }
      machines[spec.name]!.update(spec: spec)
      guard machine.spec.requiresRestart(comparedTo: spec) else {
        summary.unchanged.append(spec.name)
        continue
      }
      summary.changed.append(spec.name)
      if !machine.isSettled || machine.isFailed {
        effects += restart(spec.name, now: now)
      }
    }
    recomputeTopology()
    return (summary, effects + settle(now: now))
  }

  /// Mounts that are no longer configured, kept until their workers are gone.
  private var removing: Set<String> = []
  /// Mounts to restart (operator or changed spec) once the mounts nested in them are down.
  private var restarting: Set<String> = []

  // MARK: Derived facts

  /// The earliest moment a mount needs `timerFired`.
  public var nextDeadline: MonotonicInstant? {
    machines.values.compactMap(\.deadline).min()
  }

  /// The last moment a required mount can still become ready before READY (for
  /// EXTEND_TIMEOUT_USEC), or nil once READY was sent or nothing is pending.
  public var startupDeadline: MonotonicInstant? {
    guard !readyAnnounced, !shuttingDown else { return nil }
    return machines.values.filter { $0.spec.required && !$0.isReady }.compactMap(\.deadline).max()
  }

  public var requiredMountsReady: Bool {
    machines.values.allSatisfy {
      !$0.spec.required || $0.isReady || removing.contains($0.spec.name)
    }
  }

  /// The parent mount's name, if this mount's mountpoint lies inside another managed mount.
  public func parent(of name: String) -> String? { parents[name] }

  /// A line for the service manager's STATUS, e.g. "3/4 mounts ready; photos: starting, attempt 2".
  public var statusLine: String {
    if let (name, failure) = serviceFailure {
      return "failed: \(name): \(failure)"
    }
    let active = order.filter { !removing.contains($0) }
    if shuttingDown {
      let left = active.filter { !machines[$0]!.isSettled }.count
      return left == 0 ? "stopped" : "stopping: \(left) of \(active.count) mounts still up"
    }
    let ready = active.filter { machines[$0]!.isReady }
    var parts = ["\(ready.count)/\(active.count) mounts ready"]
    let notReady = active.filter { !machines[$0]!.isReady }
    for name in notReady.prefix(5) { parts.append("\(name): \(detail(of: name))") }
    if notReady.count > 5 { parts.append("and \(notReady.count - 5) more not ready") }
    return parts.joined(separator: "; ")
  }

  /// A short description of a mount's state for status output.
  public func detail(of name: String) -> String {
    guard let machine = machines[name] else { return "unknown" }
    switch machine.phase {
    case .inactive:
      if held.contains(name) { return "stopped" }
      if let parent = parents[name], !(machines[parent]?.isReady ?? true) {
        return "waiting for \(parent)"
      }
      return "stopped"
    case .preparing, .starting:
      return machine.attempt > 1 ? "starting, attempt \(machine.attempt)" : "starting"
    case .ready: return "ready"
    case .backoff: return "restarting after: \(machine.lastFailure?.description ?? "an exit")"
    case .stopping: return "stopping"
    case .exited(let status): return "\(status)"
    case .failed(let failure): return "failed: \(failure)"
    }
  }

  // MARK: Reconciliation

  /// Brings each mount towards what it should be doing, then derives the service-level effects.
  private mutating func settle(now: MonotonicInstant) -> [Effect] {
    var effects: [Effect] = []
    var changed = true
    while changed {
      changed = false
      for name in order {
        let machine = machines[name]!
        if restarting.contains(name), descendants(of: name).allSatisfy({ machines[$0]!.isSettled })
        {
          restarting.remove(name)
          if isWanted(name) {
            effects += machines[name]!.handle(.restart, now: now).map { .mount(name, $0) }
            changed = true
            continue
          }
        }
        let wanted = isWanted(name)
        var step: [MountMachine.Effect] = []
        if wanted, machine.phase == .inactive {
          step = machines[name]!.handle(.start, now: now)
        } else if !wanted, !machine.isSettled, isStoppable(machine),
          descendants(of: name).allSatisfy({ machines[$0]!.isSettled })
        {
          step = machines[name]!.handle(.stop, now: now)
        }
        if machines[name]!.phase != machine.phase { changed = true }
        effects += step.map { .mount(name, $0) }
      }
      // A forgotten parent lets its nested mounts run on their own: go round again.
      if forgetRemovedMounts() { changed = true }
    }
    effects += serviceEffects(now: now)
    return effects
  }

  /// A stop is already under way, with nothing to change about it.
  private func isStoppable(_ machine: MountMachine) -> Bool {
    if case .stopping(let stopping) = machine.phase { return stopping.then != .stay }
    return true
  }

  private mutating func serviceEffects(now: MonotonicInstant) -> [Effect] {
    var effects: [Effect] = []
    if !readyAnnounced, serviceFailure == nil, !shuttingDown {
      if let name = order.first(where: { machines[$0]!.spec.required && failureBlocking($0) != nil }
      ) {
        let failure = failureBlocking(name)!
        serviceFailure = (name, failure)
        shuttingDown = true
        effects.append(.announceFailure(mount: name, failure))
        effects += settle(now: now)
      } else if requiredMountsReady {
        readyAnnounced = true
        effects.append(.announceReady)
      }
    }
    if shuttingDown, !exitAnnounced, machines.values.allSatisfy(\.isSettled) {
      exitAnnounced = true
      effects.append(.exit(code: serviceFailure == nil ? 0 : 1))
    }
    return effects
  }

  /// The failure that keeps a mount from ever becoming ready: its own, or a parent's.
  private func failureBlocking(_ name: String) -> Failure? {
    guard let machine = machines[name] else { return nil }
    if case .failed(let failure) = machine.phase { return failure }
    if case .exited(let status) = machine.phase {
      return Failure(summary: "the worker \(status) and is not restarted")
    }
    guard let parent = parents[name], let parentFailure = failureBlocking(parent) else {
      return nil
    }
    return Failure(summary: "its parent mount \(parent) failed: \(parentFailure)")
  }

  /// Whether a mount should run: no shutdown, not held, removed or awaiting a restart, and its
  /// parent (if any) both wanted and ready. A parent that is to stop takes its nested mounts down
  /// first, so that its own unmount is not refused with EBUSY.
  private func isWanted(_ name: String) -> Bool {
    guard !shuttingDown, !held.contains(name), !removing.contains(name), !restarting.contains(name)
    else {
      return false
    }
    guard let parent = parents[name] else { return true }
    return isWanted(parent) && (machines[parent]?.isReady ?? true)
  }

  private func descendants(of name: String) -> [String] {
    order.filter { candidate in
      var current = parents[candidate]
      while let parent = current {
        if parent == name { return true }
        current = parents[parent]
      }
      return false
    }
  }

  /// Forgets removed mounts whose workers are gone; true when it forgot any.
  private mutating func forgetRemovedMounts() -> Bool {
    let gone = removing.filter { machines[$0]?.isSettled ?? true }
    guard !gone.isEmpty else { return false }
    for name in gone {
      machines[name] = nil
      held.remove(name)
      restarting.remove(name)
    }
    removing.subtract(gone)
    recomputeTopology()
    return true
  }

  private mutating func recomputeTopology() {
    let specs = machines.values.map(\.spec)
    parents = [:]
    for spec in specs {
      let containing = specs.filter {
        $0.name != spec.name && isInside(spec.mountpoint, $0.mountpoint)
      }
      parents[spec.name] = containing.max { $0.mountpoint.count < $1.mountpoint.count }?.name
    }
    order = specs.sorted { lhs, rhs in
      let (l, r) = (depth(lhs.mountpoint), depth(rhs.mountpoint))
      return l != r ? l < r : lhs.name < rhs.name
    }.map(\.name)
  }
}

/// Whether `path` lies strictly inside `directory` (both absolute and normalised).
func isInside(_ path: String, _ directory: String) -> Bool {
  directory == "/" ? path != "/" : path.hasPrefix(directory + "/")
}

private func depth(_ path: String) -> Int { path.split(separator: "/").count }
