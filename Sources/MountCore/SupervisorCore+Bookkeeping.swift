import MountConfig

/// The aggregates kept current per change, and the topology rebuilt only when the set of
/// mounts changes.
extension SupervisorCore {

  /// What a mount contributes to the aggregates.
  struct Standing: Equatable {
    var state: MountMachine.State
    var deadline: MonotonicInstant?
    var required: Bool
    var active: Bool

    var isSettled: Bool { state.isSettled }
    var isReady: Bool { state == .ready }

    init(_ machine: borrowing MountMachine, active: Bool) {
      state = machine.state
      deadline = machine.deadline
      required = machine.spec.required
      self.active = active
    }
  }

  func standing(of name: String) -> Standing? {
    machines.index(forKey: name).map {
      Standing(machines.values[$0], active: !removing.contains(name))
    }
  }

  /// Runs one machine transition and brings the aggregates up to date with it. The machine is
  /// changed where it lies: a copy out of the table and back cost more than the transition.
  mutating func update(
    _ name: String, _ body: (inout MountMachine) -> [MountMachine.Effect]
  ) -> [Effect] {
    guard let index = machines.index(forKey: name) else {
      preconditionFailure("no machine for \(name)")
    }
    let active = !removing.contains(name)
    let before = Standing(machines.values[index], active: active)
    let effects = body(&machines.values[index])
    account(name, from: before, to: Standing(machines.values[index], active: active))
    return effects.map { .mount(name, $0) }
  }

  mutating func account(_ name: String, from before: Standing?, to after: Standing?) {
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
      if notReady[name] == nil { markNotReady(name) }
    } else {
      notReady[name] = nil
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

  mutating func enqueue(_ name: String) {
    if queued.insert(name).inserted { worklist.append(name) }
  }

  /// Queues a mount and every mount nested in it: whether they are wanted may have changed.
  mutating func enqueueSubtree(_ name: String) {
    var stack = [name]
    while let current = stack.popLast() {
      enqueue(current)
      stack += children[current] ?? []
    }
  }

  /// Forgets removed mounts whose workers are gone.
  mutating func forgetRemovedMounts() {
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
  mutating func rebuild() {
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
      // By UTF-8 code unit: a search by Character breaks graphemes, which cost most of a
      // thousand-mount rebuild (at every reload and upgrade).
      while path != "/", let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) {
        path = slash == path.startIndex ? "/" : String(path[..<slash])
        if let parent = byMountpoint[path], parent != spec.name {
          parents[spec.name] = parent
          children[parent, default: []].append(spec.name)
          break
        }
      }
    }
    // Depth computed once per mount, not per comparison.
    order = specs.map { (depth: depth($0.mountpoint), name: $0.name) }
      .sorted { $0.depth != $1.depth ? $0.depth < $1.depth : $0.name < $1.name }
      .map(\.name)
    position = Dictionary(uniqueKeysWithValues: order.enumerated().map { ($1, $0) })
    for name in children.keys {
      children[name]!.sort { position[$0, default: 0] < position[$1, default: 0] }
    }

    unsettledCount = 0
    unsettledDescendants = [:]
    requiredNotReadyCount = 0
    activeCount = 0
    activeReadyCount = 0
    notReady = [:]
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
        markNotReady(name)
      }
      if let deadline = standing.deadline {
        deadlines.push(Timed(deadline: deadline, name: name))
        if standing.required { requiredDeadlines.push(Timed(deadline: deadline, name: name)) }
      }
      if standing.state == .failed || standing.state == .exited { blockedCandidates.insert(name) }
    }
  }

  var unsettledActiveCount: Int {
    unsettledCount - removing.filter { machines[$0].map { !$0.isSettled } ?? false }.count
  }

  /// Records a mount that became not ready, with an entry in the heap that is the only live one
  /// for it (older entries of the name carry older generations).
  mutating func markNotReady(_ name: String) {
    notReadyGeneration += 1
    notReady[name] = notReadyGeneration
    notReadyByPosition.push(
      Positioned(position: position[name, default: 0], name: name, generation: notReadyGeneration))
  }

  func isCurrent(_ entry: Timed) -> Bool {
    machines[entry.name]?.deadline == entry.deadline
  }

  func isCurrentAndWaitedFor(_ entry: Timed) -> Bool {
    guard let machine = machines[entry.name], machine.deadline == entry.deadline else {
      return false
    }
    return machine.spec.required && !machine.isReady && !removing.contains(entry.name)
  }

  func isNotReadyEntry(_ entry: Positioned) -> Bool {
    notReady[entry.name] == entry.generation && position[entry.name] == entry.position
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
  var generation: Int

  static func < (lhs: Self, rhs: Self) -> Bool { lhs.position < rhs.position }
}

/// How many components a path has: parents sort before the mounts nested in them.
func depth(_ path: String) -> Int { path.utf8.split(separator: UInt8(ascii: "/")).count }
