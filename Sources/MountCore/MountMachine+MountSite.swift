import MountConfig

extension MountMachine {
  /// The rules for what a start finds at its mountpoint: a dead FUSE mount, or one served by a
  /// worker an earlier run left behind, is cleared and the mountpoint looked at again; anything
  /// else that is mounted there belongs to someone else and is never touched.
  mutating func decide(_ site: MountSite, attempt number: Int, now: MonotonicInstant)
    -> [Effect]
  {
    let mountpoint = spec.mountpoint
    let refusal: String
    switch site {
    case .empty:
      return [.createMountpoint(attempt: number, mountpoint: mountpoint, user: spec.user)]
    case .other(let fsType, let source):
      refusal =
        "a \(fsType) mount (\(source)) is already at \(mountpoint); MountSupervisor only replaces "
        + "dead FUSE mounts and leaves this one alone: unmount it or choose another mountpoint"
    case .fuse(let fsType, let source, .foreign):
      refusal =
        "a live FUSE mount (\(fsType), \(source)) that this supervisor did not start is already at "
        + "\(mountpoint) and answers; it is left alone: unmount it (umount \(mountpoint)) or "
        + "choose another mountpoint"
    case .fuse(let fsType, let source, .otherSupervisor(let pid)):
      refusal =
        "the FUSE mount (\(fsType), \(source)) at \(mountpoint) is served by a worker of another "
        + "running mountsupd (pid \(pid)); it is left alone: stop that mount there (mountctl stop, "
        + "on that supervisor's control socket) or choose another mountpoint"
    case .fuse(let fsType, let source, .failing(let reason)):
      refusal =
        "the FUSE mount (\(fsType), \(source)) already at \(mountpoint) fails statfs with \(reason); "
        + "it is left alone: unmount it or choose another mountpoint"
    case .fuse(let fsType, let source, .gone(let reason)):
      return clear(
        at: mountpoint, attempt: number,
        because:
          "detached a dead FUSE mount (\(fsType), \(source)) left at \(mountpoint): \(reason)",
        ending: [], now: now)
    case .fuse(_, _, .leftover(let pids)):
      let list = pids.map(String.init).joined(separator: ", ")
      return clear(
        at: mountpoint, attempt: number,
        because: "a worker left by an earlier run of the supervisor (pid \(list)) still served "
          + "\(mountpoint): killed it and detached its mount",
        ending: pids, now: now)
    }
    return afterFailure(Failure(summary: refusal), now: now)
  }

  /// Ends the leftover workers, detaches the mount and looks at the mountpoint again.
  private mutating func clear(
    at mountpoint: String, attempt number: Int, because reason: String, ending pids: [Int32],
    now: MonotonicInstant
  ) -> [Effect] {
    inspections += 1
    guard inspections <= Self.inspectionLimit else {
      return afterFailure(
        Failure(
          summary:
            "a FUSE mount came back at \(mountpoint) after \(Self.inspectionLimit) detaches; "
            + "something else keeps mounting there: find it (findmnt \(mountpoint))"),
        now: now)
    }
    return (pids.isEmpty ? [] : [.endLeftoverWorkers(pids: pids)]) + [
      .detachStaleMount(attempt: number, mountpoint: mountpoint), .log(.warning, reason),
      .inspectMountpoint(attempt: number, mountpoint: mountpoint),
    ]
  }
}
