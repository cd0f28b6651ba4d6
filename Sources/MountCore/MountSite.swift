/// What the runtime found at a mountpoint before a start: the facts the core decides on.
///
/// The runtime only gathers them (the mount table, the owner's `statfs`, `/proc`); which of
/// them may be cleared and which must be refused is ``MountMachine``'s rule, tested without
/// processes.
public enum MountSite: Equatable, Sendable {
  /// Nothing is mounted there (the directory may not exist yet).
  case empty
  /// A mount that is not FUSE: never touched.
  case other(fsType: String, source: String)
  /// A FUSE mount, and what became of its server.
  case fuse(fsType: String, source: String, server: FUSEServer)
}

/// The state of the server behind a FUSE mount found at a mountpoint.
public enum FUSEServer: Equatable, Sendable {
  /// `statfs` failed with ENOTCONN or ECONNABORTED: nobody serves the mount any more.
  case gone(reason: String)
  /// Served by workers that an earlier run of this supervisor left behind (they outlived it).
  case leftover(pids: [Int32])
  /// A live server that no run of this supervisor started.
  case foreign
  /// Served by a worker of another supervisor that runs (pid given): never touched.
  case otherSupervisor(pid: Int32)
  /// `statfs` fails with another error: something is wrong, but it is not known to be dead.
  case failing(reason: String)
}
