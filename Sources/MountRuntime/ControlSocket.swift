import CLinuxSupport
import CSystemd
import Glibc
import Logging
import MountConfig

/// The listening control socket: passed by the service manager (socket activation), or made
/// at the configured path with mode 0660.
struct ControlSocket {
  let fd: Descriptor
  let path: String
  /// Device and inode of the socket file this daemon made, so that only that file is removed at
  /// exit; nil for a socket the service manager passed (it owns the file).
  let ownFile: (device: UInt64, inode: UInt64)?

  /// The socket systemd passed (socket activation) if there is one, else a new one at
  /// `settings.controlSocket`.
  static func open(
    settings: SupervisorSettings, passed: Descriptor?, unusedSockets: Int, logger: Logger
  ) throws -> ControlSocket {
    if let fd = passed {
      guard mountsup_sd_is_socket_unix(fd.raw, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0 else {
        throw RuntimeError(
          .controlSocket,
          "the service manager passed \(fd), which is not a listening unix stream socket",
          errno: ENOTSOCK)
      }
      try fd.setNonBlocking()
      if unusedSockets > 0 {
        logger.warning(
          "the service manager passed \(unusedSockets + 1) sockets; only the first (\(fd)) is used")
      }
      logger.info("control socket passed by the service manager (\(fd))")
      return ControlSocket(fd: fd, path: settings.controlSocket, ownFile: nil)
    }
    return try create(settings: settings, logger: logger)
  }

  private static func create(settings: SupervisorSettings, logger: Logger) throws -> ControlSocket {
    let path = settings.controlSocket
    guard let address = UnixAddress(path: path) else {
      throw RuntimeError(
        .controlSocket,
        "control socket \(path): the path is longer than \(UnixAddress.capacity) bytes",
        errno: ENAMETOOLONG)
    }
    do {
      try makeDirectories(directoryName(path))
    } catch {
      throw RuntimeError(.controlSocket, "control socket: \(error.operation)", errno: error.errno)
    }
    try removeStale(path, address: address, logger: logger)

    let fd = try newSocket()
    var info = stat()
    // Until listen() nobody can connect, so the mode and owner are set before anyone could.
    try system(.controlSocket, "control socket \(path)") {
      address.withSocketAddress { Glibc.bind(fd.raw, $0, $1) }
    }
    try system(.controlSocket, "control socket \(path)") { chmod(path, 0o660) }
    try system(.controlSocket, "control socket \(path)") { stat(path, &info) }
    grantGroups(path, settings: settings, logger: logger)
    do {
      try system(.controlSocket, "control socket \(path): listen") { listen(fd.raw, 128) }
    } catch {
      unlink(path)
      throw error
    }
    logger.info("control socket \(path)")
    return ControlSocket(fd: fd, path: path, ownFile: (UInt64(info.st_dev), UInt64(info.st_ino)))
  }

  private static func newSocket() throws(RuntimeError) -> Descriptor {
    Descriptor(
      try system(.controlSocket, "control socket: socket") {
        socket(
          AF_UNIX,
          Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
            | Int32(SOCK_NONBLOCK.rawValue), 0)
      })
  }

  /// Removes the socket file at exit, if it is still the one this daemon made.
  func close() {
    var info = stat()
    guard let ownFile, stat(path, &info) == 0, UInt64(info.st_dev) == ownFile.device,
      UInt64(info.st_ino) == ownFile.inode
    else { return }
    unlink(path)
  }

  /// A socket file nobody listens on (a crashed daemon's) is replaced; a live one means another
  /// daemon, which is never stolen from.
  private static func removeStale(_ path: String, address: UnixAddress, logger: Logger) throws {
    var info = stat()
    guard lstat(path, &info) == 0 else { return }
    guard info.st_mode & S_IFMT == S_IFSOCK else {
      throw RuntimeError(
        .controlSocket,
        "control socket \(path) exists and is not a socket; remove it or choose another [supervisor] control_socket",
        errno: EEXIST)
    }
    let probe = try newSocket()
    let connected = address.withSocketAddress { connect(probe.raw, $0, $1) }
    // EAGAIN: a live listener whose queue is full.
    if connected == 0 || errno == EAGAIN {
      throw RuntimeError(
        .controlSocket,
        "control socket \(path): another process (another mountsupd?) listens on it; stop it or choose "
          + "another [supervisor] control_socket", errno: EADDRINUSE)
    }
    guard unlink(path) == 0 || errno == ENOENT else {
      throw RuntimeError(
        .controlSocket, "control socket \(path): removing the stale socket", errno: errno)
    }
    logger.info("replaced the stale control socket \(path)")
  }

  private static func directoryName(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
    return String(path[..<slash])
  }

  /// Connecting needs write permission on the socket file: its group becomes `admin_group`
  /// (else `status_group`), and when both are set the other one gets a POSIX ACL entry, so that
  /// both groups reach the daemon, which then decides by `SO_PEERCRED` what each may do.
  private static func grantGroups(_ path: String, settings: SupervisorSettings, logger: Logger) {
    let groups = [settings.adminGroup, settings.statusGroup].compactMap { $0 }.compactMap { name in
      Accounts.groupID(of: name).map { (name, $0) }
    }
    guard let (ownerName, owner) = groups.first else { return }
    if chown(path, uid_t.max, owner) != 0 {
      let problem = errorText(errno)
      logger.warning("control socket \(path): cannot give it to group \(ownerName): \(problem)")
    }
    guard groups.count == 2, groups[1].1 != owner else { return }
    let (otherName, other) = groups[1]
    if let problem = addGroupACL(path, group: other) {
      let consequence =
        "members of status_group \(otherName) cannot connect unless also in \(ownerName)"
      logger.warning("control socket \(path): \(consequence): \(problem)")
    }
  }

  /// Writes `system.posix_acl_access` (Linux's xattr form of an ACL): owner rw, owning group
  /// rw, `group` rw, mask rw, others nothing, the same as mode 0660 plus one group.
  private static func addGroupACL(_ path: String, group: gid_t) -> String? {
    let undefined = UInt32.max
    let entries: [(tag: UInt16, permissions: UInt16, id: UInt32)] = [
      (0x01, 6, undefined),  // ACL_USER_OBJ
      (0x04, 6, undefined),  // ACL_GROUP_OBJ
      (0x08, 6, group),  // ACL_GROUP
      (0x10, 6, undefined),  // ACL_MASK
      (0x20, 0, undefined),  // ACL_OTHER
    ]
    var blob: [UInt8] = littleEndian(UInt32(2))  // POSIX_ACL_XATTR_VERSION
    for entry in entries {
      blob += littleEndian(entry.tag) + littleEndian(entry.permissions) + littleEndian(entry.id)
    }
    return setxattr(path, "system.posix_acl_access", blob, blob.count, 0) == 0
      ? nil : errorText(errno)
  }

  private static func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
  }
}

/// Who is at the other end of a control connection, as the kernel saw it at connect time.
struct ControlPeer {
  var pid: pid_t
  var uid: uid_t
  var gid: gid_t
  /// Supplementary groups (`SO_PEERGROUPS`), plus the primary one.
  var groups: Set<gid_t>

  init?(fd: Int32) {
    var pid: pid_t = 0
    var uid: uid_t = 0
    var gid: gid_t = 0
    guard mountsup_peer_credentials(fd, &pid, &uid, &gid) == 0 else { return nil }
    self.pid = pid
    self.uid = uid
    self.gid = gid
    groups = Set(Self.supplementaryGroups(fd) ?? Self.configuredGroups(uid, gid)).union([gid])
  }

  func isMember(of group: gid_t) -> Bool { groups.contains(group) }

  /// "uid 1000 (alice), pid 4242", for messages and the log.
  var description: String {
    var text = "uid \(uid)"
    if let entry = getpwuid(uid) { text += " (\(String(cString: entry.pointee.pw_name)))" }
    return text + ", pid \(pid)"
  }

  /// The groups the peer process had when it connected, race-free (Linux ≥ 4.13).
  private static func supplementaryGroups(_ fd: Int32) -> [gid_t]? {
    var groups = [gid_t](repeating: 0, count: 64)
    while true {
      var length = socklen_t(groups.count * MemoryLayout<gid_t>.size)
      if getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, &groups, &length) == 0 {
        return Array(groups.prefix(Int(length) / MemoryLayout<gid_t>.size))
      }
      guard errno == ERANGE, Int(length) > groups.count * MemoryLayout<gid_t>.size else {
        return nil
      }
      groups = [gid_t](repeating: 0, count: Int(length) / MemoryLayout<gid_t>.size)
    }
  }

  /// The groups the user database gives the uid: the fallback on kernels without SO_PEERGROUPS.
  private static func configuredGroups(_ uid: uid_t, _ gid: gid_t) -> [gid_t] {
    guard let entry = getpwuid(uid) else { return [] }
    return Accounts.groups(ofUser: entry.pointee.pw_name, primary: gid)
  }
}
