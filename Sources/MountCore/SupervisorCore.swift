import MountConfig

/// All mounts of one supervisor, and the service-level facts derived from them.
///
/// It routes events to the per-mount machines, starts nested mounts parent-first and stops them
/// child-first, and decides when the service is READY (every required mount confirmed), when it
/// has failed (a required mount gave up before READY) and when a shutdown is complete. Like the
/// machines it wraps, it is pure: the runtime carries out the effects.
///
/// Scale is part of its contract: the work of one event is proportional to the mounts it
/// concerns (the mount, its parent, the mounts nested in it), never to the number of mounts.
/// Counts, the mounts not ready and the deadlines are kept up to date as machines change, and
/// reconciliation visits only the mounts a change may concern.
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

  public internal(set) var machines: [String: MountMachine] = [:]
  /// Mount names, parents before the mounts nested inside them.
  public internal(set) var order: [String] = []
  /// Mounts an operator stopped: not started again until started by an operator.
  public internal(set) var held: Set<String> = []
  public internal(set) var readyAnnounced = false
  public internal(set) var shuttingDown = false
  /// The required mount whose failure before READY fails the service.
  public internal(set) var serviceFailure: (mount: String, failure: Failure)?
  var exitAnnounced = false

  // Topology, rebuilt only when the set of mounts changes.
  /// The nearest managed mount whose mountpoint contains this one's.
  var parents: [String: String] = [:]
  var children: [String: [String]] = [:]
  var position: [String: Int] = [:]

  /// Mounts that are no longer configured, kept until their workers are gone.
  var removing: Set<String> = []
  /// The mountpoints of `removing`: a mount that takes one over waits until the old one is gone.
  var removingAt: [String: String] = [:]
  /// Mounts to restart (operator or changed spec) once the mounts nested in them are down.
  var restarting: Set<String> = []

  // Aggregates, kept current by `account`.
  var unsettledCount = 0
  var unsettledDescendants: [String: Int] = [:]
  var requiredNotReadyCount = 0
  var activeCount = 0
  var activeReadyCount = 0
  /// Configured (not removed) mounts that are not ready, each with the generation of its one
  /// live entry in the heap that yields the first of them in `order` for the status line.
  var notReady: [String: Int] = [:]
  var notReadyGeneration = 0
  var notReadyByPosition = LazyHeap<Positioned>()
  var deadlines = LazyHeap<Timed>()
  var requiredDeadlines = LazyHeap<Timed>()
  /// Required mounts that may have become impossible to start; checked before READY.
  var blockedCandidates: Set<String> = []
  /// Mounts whose state changed since `takeChangedMounts()`.
  var changed: Set<String> = []
  /// Mounts to reconcile, in the order they were touched.
  var worklist: [String] = []
  var queued: Set<String> = []

  public init(specs: [MountSpec]) {
    for spec in specs { machines[spec.name] = MountMachine(spec: spec) }
    rebuild()
  }

  // MARK: Inputs

  /// Starts every mount whose parent (if any) is ready.
  public mutating func begin(now: MonotonicInstant) -> [Effect] {
    for name in order { enqueue(name) }
    return settle(now: now)
  }

  public mutating func handle(_ event: MountMachine.Event, for name: String, now: MonotonicInstant)
    -> [Effect]
  {
    guard machines[name] != nil else { return [] }
    return update(name) { $0.handle(event, now: now) } + settle(now: now)
  }

  /// Delivers `.timerFired` to every mount whose deadline has passed.
  public mutating func timerFired(now: MonotonicInstant) -> [Effect] {
    var effects: [Effect] = []
    let bound = Timed(deadline: now, name: "\u{10FFFF}")
    while let due = deadlines.popMin(through: bound, where: isCurrent) {
      guard machines[due.name]?.deadline == due.deadline else { continue }
      effects += update(due.name) { $0.handle(.timerFired, now: now) }
    }
    return effects + settle(now: now)
  }

  /// Before `begin`: the mount's first start resumes a connection an earlier run held (see
  /// `MountMachine.adoptHeldConnection`); false when the mount cannot take it.
  public mutating func adoptHeldConnection(_ name: String, now: MonotonicInstant) -> Bool {
    guard machines[name] != nil else { return false }
    var adopted = false
    _ = update(name) { machine in
      adopted = machine.adoptHeldConnection(now: now)
      return []
    }
    return adopted
  }

  /// Stops everything, children first; ends with `.exit`.
  public mutating func shutdown(now: MonotonicInstant) -> [Effect] {
    shuttingDown = true
    for name in order { enqueue(name) }
    return settle(now: now)
  }

  /// An operator's stop: it sticks until the operator starts the mount again.
  public mutating func operatorStop(_ name: String, now: MonotonicInstant) -> [Effect] {
    guard machines[name] != nil else { return [] }
    held.insert(name)
    enqueueSubtree(name)
    return settle(now: now)
  }

  /// An operator's start: clears a stop and a `failed` state.
  public mutating func operatorStart(_ name: String, now: MonotonicInstant) -> [Effect] {
    guard machines[name] != nil else { return [] }
    held.remove(name)
    enqueueSubtree(name)
    // A mount that may not run yet (parent down, shutdown) is started by `settle` once it may.
    guard isWanted(name) else { return settle(now: now) }
    return handle(.start, for: name, now: now)
  }

  /// An operator's abort of a hung mount: its connection is aborted, its worker ended, and the
  /// restart policy applies as after a detected hang.
  public mutating func operatorAbort(_ name: String, now: MonotonicInstant) -> [Effect] {
    guard machines[name] != nil else { return [] }
    return handle(.abort, for: name, now: now)
  }

  public mutating func operatorRestart(_ name: String, now: MonotonicInstant) -> [Effect] {
    guard machines[name] != nil else { return [] }
    held.remove(name)
    enqueueSubtree(name)
    guard isWanted(name) else { return settle(now: now) }
    return restart(name, now: now) + settle(now: now)
  }

  /// Restarts a mount at once, or, while mounts nested in it still run, once they are down.
  mutating func restart(_ name: String, now: MonotonicInstant) -> [Effect] {
    guard unsettledDescendants[name, default: 0] == 0 else {
      restarting.insert(name)
      enqueueSubtree(name)
      return []
    }
    return update(name) { $0.handle(.restart, now: now) }
  }

  /// What a reload changed, by mount name.
  public struct ReloadSummary: Equatable, Sendable, Codable, CustomStringConvertible {
    public var added: [String] = []
    public var removed: [String] = []
    public var changed: [String] = []
    public var unchanged: [String] = []

    /// "added photos, music; removed none; changed none; 3 unchanged", for the log.
    public var description: String {
      func names(_ list: [String]) -> String {
        list.isEmpty ? "none" : list.joined(separator: ", ")
      }
      return "added \(names(added)); removed \(names(removed)); changed \(names(changed)); "
        + "\(unchanged.count) unchanged"
    }

    public init(
      added: [String] = [], removed: [String] = [], changed: [String] = [],
      unchanged: [String] = []
    ) {
      self.added = added
      self.removed = removed
      self.changed = changed
      self.unchanged = unchanged
    }
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
    var restarts: [String] = []
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
      if !machine.isSettled || machine.isFailed { restarts.append(spec.name) }
    }
    rebuild()
    for name in order { enqueue(name) }
    for name in restarts { effects += restart(name, now: now) }
    return (summary, effects + settle(now: now))
  }

  // MARK: Reconciliation

  /// Brings each queued mount towards what it should be doing, then derives the service-level
  /// effects.
  mutating func settle(now: MonotonicInstant) -> [Effect] {
    var effects: [Effect] = []
    var next = 0
    while true {
      while next < worklist.count {
        let name = worklist[next]
        next += 1
        queued.remove(name)
        effects += reconcile(name, now: now)
      }
      worklist.removeAll(keepingCapacity: true)
      next = 0
      forgetRemovedMounts()
      effects += serviceEffects(now: now)
      if worklist.isEmpty { break }
    }
    return effects
  }

  mutating func reconcile(_ name: String, now: MonotonicInstant) -> [Effect] {
    guard let machine = machines[name] else { return [] }
    let descendantsSettled = unsettledDescendants[name, default: 0] == 0
    if restarting.contains(name), descendantsSettled {
      restarting.remove(name)
      enqueueSubtree(name)
      if isWanted(name) { return update(name) { $0.handle(.restart, now: now) } }
    }
    let wanted = isWanted(name)
    if wanted, machine.phase == .inactive {
      return update(name) { $0.handle(.start, now: now) }
    }
    if !wanted, !machine.isSettled, isStoppable(machine), descendantsSettled {
      return update(name) { $0.handle(.stop, now: now) }
    }
    return []
  }

  /// A stop is already under way, with nothing to change about it.
  func isStoppable(_ machine: MountMachine) -> Bool {
    if case .stopping(let stopping) = machine.phase { return stopping.then != .stay }
    return true
  }

  mutating func serviceEffects(now: MonotonicInstant) -> [Effect] {
    var effects: [Effect] = []
    if !readyAnnounced, serviceFailure == nil, !shuttingDown {
      let blocked = blockedCandidates.filter { name in
        machines[name].map { $0.spec.required } == true && !removing.contains(name)
          && failureBlocking(name) != nil
      }
      blockedCandidates.removeAll()
      if let name = blocked.min(by: { position[$0, default: 0] < position[$1, default: 0] }) {
        let failure = failureBlocking(name)!
        serviceFailure = (name, failure)
        shuttingDown = true
        for name in order { enqueue(name) }
        effects.append(.announceFailure(mount: name, failure))
      } else if requiredNotReadyCount == 0 {
        readyAnnounced = true
        effects.append(.announceReady)
      }
    } else {
      blockedCandidates.removeAll()
    }
    if shuttingDown, !exitAnnounced, unsettledCount == 0, worklist.isEmpty {
      exitAnnounced = true
      effects.append(.exit(code: serviceFailure == nil ? 0 : 1))
    }
    return effects
  }

  /// The failure that keeps a mount from ever becoming ready: its own, or a parent's.
  func failureBlocking(_ name: String) -> Failure? {
    var chain: [String] = [name]
    while let parent = parents[chain.last!] { chain.append(parent) }
    // The outermost failure explains the rest: walk from the top down.
    var blocking: (name: String, failure: Failure)?
    for current in chain.reversed() {
      if let (parent, failure) = blocking {
        blocking = (current, Failure(summary: "its parent mount \(parent) failed: \(failure)"))
        continue
      }
      guard let machine = machines[current] else { continue }
      if case .failed(let failure) = machine.phase {
        blocking = (current, failure)
      } else if case .exited(let status) = machine.phase {
        blocking = (current, Failure(summary: "the worker \(status) and is not restarted"))
      }
    }
    return blocking?.failure
  }

  /// Whether a mount should run: no shutdown, not held, removed or awaiting a restart, and its
  /// parent (if any) both wanted and ready. A parent that is to stop takes its nested mounts down
  /// first, so that its own unmount is not refused with EBUSY.
  func isWanted(_ name: String) -> Bool {
    guard !shuttingDown else { return false }
    if let spec = machines[name]?.spec, let previous = removingAt[spec.mountpoint], previous != name
    {
      return false
    }
    var current = name
    while true {
      guard !held.contains(current), !removing.contains(current), !restarting.contains(current)
      else { return false }
      guard let parent = parents[current] else { return true }
      guard machines[parent]?.isReady ?? true else { return false }
      current = parent
    }
  }
}
