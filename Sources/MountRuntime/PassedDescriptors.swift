import CLinuxSupport
import CSystemd
import Glibc

/// What the service manager passed at start (`LISTEN_FDS`, `LISTEN_FDNAMES`): the control
/// socket of socket activation, and the FUSE connections an earlier run of `mountsupd` kept in
/// the fd store (see `HeldConnection.store`). Read once, first thing; the variables are unset so
/// that nothing started later takes the descriptors for its own.
struct PassedDescriptors {
  /// The first passed descriptor that is not a stored connection: the control socket.
  var controlSocket: Descriptor?
  /// Further sockets, which are not used.
  var unusedSockets = 0
  /// Stored descriptors by their name (`fuse.NAME`, `state.NAME`, `init.NAME`).
  var stored: [String: Descriptor] = [:]
  /// Why descriptors that were passed cannot be taken (libsystemd missing), or nil.
  var problem: String?

  static func take() -> PassedDescriptors {
    var passed = PassedDescriptors()
    var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
    let count = mountsup_sd_listen_fds_with_names(1, &names)
    if count == -ENOSYS {
      let why = mountsup_sd_load_error().map { String(cString: $0) } ?? "libsystemd missing"
      passed.problem = "LISTEN_FDS is set, but \(why): the passed descriptors are not taken"
    }
    guard count > 0 else { return passed }
    defer {
      if let names {
        for index in 0..<Int(count) { free(names[index]) }
        free(names)
      }
    }
    for index in 0..<Int(count) {
      let fd = MOUNTSUP_SD_LISTEN_FDS_START + Int32(index)
      mountsup_set_cloexec(fd, 1)
      let name = names?[index].map { String(cString: $0) } ?? ""
      if HeldConnection.StoredRole.allCases.contains(where: { name.hasPrefix($0.rawValue + ".") }) {
        passed.stored[name] = Descriptor(fd)
      } else if passed.controlSocket == nil {
        passed.controlSocket = Descriptor(fd)
      } else {
        passed.unusedSockets += 1
        close(fd)
      }
    }
    return passed
  }
}
