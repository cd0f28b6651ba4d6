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

  public private(set) var machines: [String: MountMachine] = [:]
  /// Mount names, parents before the mounts nested inside them.
  public private(set) var order: [String] = []
  /// Mounts an operator stopped: not started again until started by an operator.
  public private(set) var held: Set<String> = []
  public private(set) var readyAnnounced = false
  public private(set) var shuttingDown = false
  /// The required mount whose failure before READY fails the service.
  public private(set) var serviceFailure: (mount: String, failure: Failure)?
  private var exitAnnounced = false

  // Topology, rebuilt only when the set of mounts changes.
  /// The nearest managed mount whose mountpoint contains this one's.
  private var parents: [String: String] = [:]
  private var children: [String: [String]] = [:]
  private var position: [String: Int] = [:]

  /// Mounts that are no longer configured, kept until their workers are gone.
  private var removing: Set<String> = []
  /// The mountpoints of `removing`: a mount that takes one over waits until the old one is gone.
  private var removingAt: [String: String] = [:]
  /// Mounts to restart (operator or changed spec) once the mounts nested in them are down.
  private var restarting: Set<String> = []

  // Aggregates, kept current by `account`.
  private var unsettledCount = 0
  private var unsettledDescendants: [String: Int] = [:]
  private var requiredNotReadyCount = 0
  private var activeCount = 0
  private var activeReadyCount = 0
  /// Configured (not removed) mounts that are not ready, and a heap that yields the first of
  /// them in `order` for the status line.
  private var notReady: Set<String> = []
  private var notReadyByPosition = LazyHeap<Positioned>()
  private var deadlines = LazyHeap<Timed>()
  private var requiredDeadlines = LazyHeap<Timed>()
  /// Required mounts that may have become impossible to start; checked before READY.
  private var blockedCandidates: Set<String> = []
  /// Mounts whose state changed since `takeChangedMounts()`.
  private var changed: Set<String> = []
  /// Mounts to reconcile, in the order they were touched.
  private var worklist: [String] = []
  private var queued: Set<String> = []

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

  public mutating func operatorRestart(_ name: String, now: MonotonicInstant) -> [Effect] {
    guard machines[name] != nil else { return [] }
    held.remove(name)
    enqueueSubtree(name)
    guard isWanted(name) else { return settle(now: now) }
    return restart(name, now: now) + settle(now: now)
  }

  /// Restarts a mount at once, or, while mounts nested in it still run, once they are down.
  private mutating func restart(_ name: String, now: MonotonicInstant) -> [Effect] {
    guard unsettledDescendants[name, default: 0] == 0 else {
      restarting.insert(name)
      enqueueSubtree(name)
      return []
    }
    return update(name) { $0.handle(.restart, now: now) }
  }

  /// What a reload changed, by mount name.
  public struct ReloadSummary: Equatable, Sendable, CustomStringConvertible {
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

  // MARK: Queries

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
      let shown = notReadyByPosition.smallest(5 + duplicateAllowance, where: isNotReadyEntry)
      var names: [String] = []
      for entry in shown where names.count < 5 && !names.contains(entry.name) {
        names.append(entry.name)
      }
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
    case .stopping: return "stopping"
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
      workerStatus: machine.workerStatus)
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

  // MARK: Reconciliation

  /// Brings each queued mount towards what it should be doing, then derives the service-level
  /// effects.
  private mutating func settle(now: MonotonicInstant) -> [Effect] {
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

  private mutating func reconcile(_ name: String, now: MonotonicInstant) -> [Effect] {
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
  private func isStoppable(_ machine: MountMachine) -> Bool {
    if case .stopping(let stopping) = machine.phase { return stopping.then != .stay }
    return true
  }

  private mutating func serviceEffects(now: MonotonicInstant) -> [Effect] {
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
  private func failureBlocking(_ name: String) -> Failure? {
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
  private func isWanted(_ name: String) -> Bool {
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

  // MARK: Bookkeeping

  /// What a mount contributes to the aggregates.
  private struct Standing: Equatable {
    var state: MountMachine.State
    var deadline: MonotonicInstant?
    var required: Bool
    var active: Bool

    var isSettled: Bool { state.isSettled }
    var isReady: Bool { state == .ready }
  }

  private func standing(of name: String) -> Standing? {
    guard let machine = machines[name] else { return nil }
    return Standing(
      state: machine.state, deadline: machine.deadline, required: machine.spec.required,
      active: !removing.contains(name))
  }

  /// Runs one machine transition and brings the aggregates up to date with it.
  private mutating func update(
    _ name: String, _ body: (inout MountMachine) -> [MountMachine.Effect]
  ) -> [Effect] {
    let before = standing(of: name)
    let effects = body(&machines[name]!)
    account(name, from: before, to: standing(of: name))
    return effects.map { .mount(name, $0) }
  }

  private mutating func account(_ name: String, from before: Standing?, to after: Standing?) {
    guard before != after else { return }
    let wasUnsettled = before.map { !$0.isSettled } ?? false
    let isUnsettled = after.map { !$0.isSettled } ?? false
    if wasUnsettled != isUnsettled {
      let delta = isUnsettled ? 1 : -1
      unsettledCount += delta
      var current = name
      while let parent = parents[current] {
        unsettledDescendants[parent, default: 0] += delta
        current = parent
      }
      if let parent = parents[name] { enqueue(parent) }
    }
    func requiredNotReady(_ standing: Standing?) -> Bool {
      standing.map { $0.required && $0.active && !$0.isReady } ?? false
    }
    requiredNotReadyCount += (requiredNotReady(after) ? 1 : 0) - (requiredNotReady(before) ? 1 : 0)
    activeCount += (after?.active == true ? 1 : 0) - (before?.active == true ? 1 : 0)
    func activeReady(_ standing: Standing?) -> Bool {
      standing.map { $0.active && $0.isReady } ?? false
    }
    activeReadyCount += (activeReady(after) ? 1 : 0) - (activeReady(before) ? 1 : 0)
    if let after, after.active, !after.isReady {
      if notReady.insert(name).inserted {
        notReadyByPosition.push(Positioned(position: position[name, default: 0], name: name))
      }
    } else {
      notReady.remove(name)
    }
    if let deadline = after?.deadline, deadline != before?.deadline {
      deadlines.push(Timed(deadline: deadline, name: name))
      if after?.required == true { requiredDeadlines.push(Timed(deadline: deadline, name: name)) }
      deadlines.compact(liveCount: unsettledCount, where: isCurrent)
      requiredDeadlines.compact(liveCount: requiredNotReadyCount, where: isCurrentAndWaitedFor)
    }
    if before?.state != after?.state {
      changed.insert(name)
      enqueue(name)
      if before?.isReady != after?.isReady {
        // Nested mounts may start (or must stop) when their parent's readiness changes.
        for child in children[name] ?? [] { enqueueSubtree(child) }
      }
      if let state = after?.state, state == .failed || state == .exited {
        var stack = [name]
        while let current = stack.popLast() {
          blockedCandidates.insert(current)
          stack += children[current] ?? []
        }
      }
    }
  }

  private mutating func enqueue(_ name: String) {
    if queued.insert(name).inserted { worklist.append(name) }
  }

  /// Queues a mount and every mount nested in it: whether they are wanted may have changed.
  private mutating func enqueueSubtree(_ name: String) {
    var stack = [name]
    while let current = stack.popLast() {
      enqueue(current)
      stack += children[current] ?? []
    }
  }

  /// Forgets removed mounts whose workers are gone.
  private mutating func forgetRemovedMounts() {
    let gone = removing.filter { machines[$0]?.isSettled ?? true }
    guard !gone.isEmpty else { return }
    for name in gone {
      machines[name] = nil
      held.remove(name)
      restarting.remove(name)
      changed.insert(name)
    }
    removing.subtract(gone)
    rebuild()
    // A forgotten parent lets its nested mounts run on their own.
    for name in order { enqueue(name) }
  }

  /// Recomputes the topology and every aggregate from scratch: at start and when the set of
  /// mounts changes (a reload), never per event.
  private mutating func rebuild() {
    let specs = machines.values.map(\.spec)
    parents = [:]
    children = [:]
    removingAt = [:]
    for name in removing {
      if let spec = machines[name]?.spec { removingAt[spec.mountpoint] = name }
    }
    // The nearest containing mountpoint, found by walking up each path: O(depth) per mount.
    let byMountpoint = Dictionary(
      specs.map { ($0.mountpoint, $0.name) }, uniquingKeysWith: { first, _ in first })
    for spec in specs {
      var path = spec.mountpoint
      while path != "/", let slash = path.lastIndex(of: "/") {
        path = slash == path.startIndex ? "/" : String(path[..<slash])
        if let parent = byMountpoint[path], parent != spec.name {
          parents[spec.name] = parent
          children[parent, default: []].append(spec.name)
          break
        }
      }
    }
    order = specs.sorted { lhs, rhs in
      let (l, r) = (depth(lhs.mountpoint), depth(rhs.mountpoint))
      return l != r ? l < r : lhs.name < rhs.name
    }.map(\.name)
    position = Dictionary(uniqueKeysWithValues: order.enumerated().map { ($1, $0) })
    for name in children.keys {
      children[name]!.sort { position[$0, default: 0] < position[$1, default: 0] }
    }

    unsettledCount = 0
    unsettledDescendants = [:]
    requiredNotReadyCount = 0
    activeCount = 0
    activeReadyCount = 0
    notReady = []
    notReadyByPosition = LazyHeap()
    deadlines = LazyHeap()
    requiredDeadlines = LazyHeap()
    for name in order {
      let standing = standing(of: name)!
      if !standing.isSettled {
        unsettledCount += 1
        var current = name
        while let parent = parents[current] {
          unsettledDescendants[parent, default: 0] += 1
          current = parent
        }
      }
      if standing.required, standing.active, !standing.isReady { requiredNotReadyCount += 1 }
      if standing.active { activeCount += 1 }
      if standing.active, standing.isReady { activeReadyCount += 1 }
      if standing.active, !standing.isReady {
        notReady.insert(name)
        notReadyByPosition.push(Positioned(position: position[name]!, name: name))
      }
      if let deadline = standing.deadline {
        deadlines.push(Timed(deadline: deadline, name: name))
        if standing.required { requiredDeadlines.push(Timed(deadline: deadline, name: name)) }
      }
      if standing.state == .failed || standing.state == .exited { blockedCandidates.insert(name) }
    }
  }

  private var unsettledActiveCount: Int {
    unsettledCount - removing.filter { machines[$0].map { !$0.isSettled } ?? false }.count
  }

  /// The status line may meet the same name twice in the heap before it is compacted.
  private var duplicateAllowance: Int { 5 }

  private func isCurrent(_ entry: Timed) -> Bool {
    machines[entry.name]?.deadline == entry.deadline
  }

  private func isCurrentAndWaitedFor(_ entry: Timed) -> Bool {
    guard let machine = machines[entry.name], machine.deadline == entry.deadline else {
      return false
    }
    return machine.spec.required && !machine.isReady && !removing.contains(entry.name)
  }

  private func isNotReadyEntry(_ entry: Positioned) -> Bool {
    notReady.contains(entry.name) && position[entry.name] == entry.position
  }
}

/// A mount's deadline, ordered by time.
struct Timed: Comparable, Sendable {
  var deadline: MonotonicInstant
  var name: String

  static func < (lhs: Self, rhs: Self) -> Bool {
    (lhs.deadline, lhs.name) < (rhs.deadline, rhs.name)
  }
}

/// A mount ordered by its place in `order`.
struct Positioned: Comparable, Sendable {
  var position: Int
  var name: String

  static func < (lhs: Self, rhs: Self) -> Bool { lhs.position < rhs.position }
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
}

private func depth(_ path: String) -> Int { path.split(separator: "/").count }
