import Glibc

/// Unmounting as the supervisor does it: as root through `umount2`, as another user through
/// `fusermount3`, which is how such a user mounted in the first place.
enum Unmounting {
  /// Asks for a normal unmount so the worker gets FUSE destroy; falls back to a lazy detach when
  /// something still uses the mount (EBUSY). Returns an error text, or nil on success or when
  /// nothing is mounted there any more (EINVAL: the worker's exit detached it first).
  static func unmount(_ mountpoint: String, asRoot: Bool) -> String? {
    guard asRoot else {
      return runHelper(["fusermount3", "-u", mountpoint]) == .exited(0)
        ? nil : detach(mountpoint, asRoot: false)
    }
    if umount2(mountpoint, 0) == 0 || errno == EINVAL { return nil }
    if errno == EBUSY { return detach(mountpoint, asRoot: true) }
    return "umount \(mountpoint): \(errorText(errno))"
  }

  /// Lazily detaches the mount at `mountpoint` (MNT_DETACH): it works on dead and busy mounts
  /// and never blocks on a hung daemon. Returns an error text, or nil on success.
  static func detach(_ mountpoint: String, asRoot: Bool) -> String? {
    guard asRoot else {
      let status = runHelper(["fusermount3", "-uz", mountpoint])
      return status == .exited(0)
        ? nil : "fusermount3 -uz \(mountpoint) \(status.map { "\($0)" } ?? "could not run")"
    }
    return umount2(mountpoint, Int32(MNT_DETACH)) == 0
      ? nil : "umount -l \(mountpoint): \(errorText(errno))"
  }
}
