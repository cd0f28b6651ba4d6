import MountConfig

/// What of the core crosses the exec of an upgrade (`mountctl upgrade`): every machine and the
/// decisions of operators and of the service; the topology and every count are rebuilt from
/// them, as at a start.
extension SupervisorCore {
  public struct Snapshot: Codable, Sendable {
    var machines: [MountMachine]
    var held: Set<String>
    var readyAnnounced: Bool
    var shuttingDown: Bool
    var serviceFailureMount: String?
    var serviceFailure: Failure?
    var exitAnnounced: Bool
    var removing: Set<String>
    var restarting: Set<String>

    /// The spec of every mount, removed ones included.
    public var specs: [MountSpec] { machines.map(\.spec) }

    /// The machines apart, for a transport that carries them in parts (they are most of it).
    public var separatingMachines: (rest: Snapshot, machines: [MountMachine]) {
      var rest = self
      rest.machines = []
      return (rest, machines)
    }

    /// The snapshot `separatingMachines` took apart.
    public func joining(_ machines: [MountMachine]) -> Snapshot {
      var whole = self
      whole.machines += machines
      return whole
    }
  }

  public var snapshot: Snapshot {
    Snapshot(
      machines: order.compactMap { machines[$0] }, held: held, readyAnnounced: readyAnnounced,
      shuttingDown: shuttingDown, serviceFailureMount: serviceFailure?.mount,
      serviceFailure: serviceFailure?.failure, exitAnnounced: exitAnnounced,
      removing: removing, restarting: restarting)
  }

  /// The core as it was when `snapshot` was taken; every mount counts as changed, so that the
  /// runtime looks at each once.
  public init(snapshot: Snapshot) {
    for machine in snapshot.machines { machines[machine.spec.name] = machine }
    held = snapshot.held
    readyAnnounced = snapshot.readyAnnounced
    shuttingDown = snapshot.shuttingDown
    if let mount = snapshot.serviceFailureMount, let failure = snapshot.serviceFailure {
      serviceFailure = (mount, failure)
    }
    exitAnnounced = snapshot.exitAnnounced
    removing = snapshot.removing
    restarting = snapshot.restarting
    rebuild()
    changed = Set(order)
  }
}
