import CLinuxSupport
import Glibc
import Logging
import MountCore

/// A kit worker's FUSE connection, which the supervisor holds for the life of the mount: a
/// duplicate of the worker's `/dev/fuse` descriptor (the connection lives while one is open),
/// the worker's state memfd, and the raw FUSE_INIT request that a successor replays to libfuse.
/// When the worker crashes, its successor gets all three (see `sendResume`) and serves the
/// same kernel mount; closing them once no worker serves it makes the kernel abort the
/// connection, so that waiting accesses fail instead of hanging.
final class HeldConnection {
  let fuse: Descriptor
  let state: Descriptor?
  let initRequest: [UInt8]
  /// The kernel mount it serves, for the successor's view of the mount table.
  let mountID: UInt64?

  init(fuse: Descriptor, state: Descriptor?, initRequest: [UInt8], mountID: UInt64?) {
    self.fuse = fuse
    self.state = state
    self.initRequest = initRequest
    self.mountID = mountID
  }

  /// The resume datagram a successor reads first on its fd 3: `FUSE_INIT=<hex>` with the FUSE
  /// descriptor and the state descriptor. Sent before the spawn; it waits in the socket.
  func sendResume(on channel: Descriptor) throws(RuntimeError) {
    let digits = Array("0123456789abcdef".utf8)
    var text = Array("FUSE_CONNECTION=1\nFUSE_INIT=".utf8)
    for byte in initRequest {
      text.append(digits[Int(byte >> 4)])
      text.append(digits[Int(byte & 15)])
    }
    let fds = [fuse.raw] + (state.map { [$0.raw] } ?? [])
    let code = text.withUnsafeBytes { bytes in
      mountsup_send_with_fds(channel.raw, bytes.baseAddress, bytes.count, fds, Int32(fds.count))
    }
    guard code == 0 else {
      throw RuntimeError(.io, "cannot pass the FUSE connection to the successor", errno: code)
    }
  }
}

/// The service manager's fd store (`FDSTORE=1`): under systemd a held connection is also kept
/// there, so that a crash of `mountsupd` itself does not end the mount. At the restart the
/// connections come back (`LISTEN_FDNAMES`) and each mount's new worker resumes its own.
extension HeldConnection {
  /// The names of a mount's descriptors in the store.
  enum StoredRole: String, CaseIterable {
    case fuse, state
    case initRequest = "init"

    func name(for mount: String) -> String { "\(rawValue).\(mount)" }
  }

  /// Stores the connection, its state memfd and a memfd with the INIT request. Said once when
  /// the mount's name cannot be a name in the store.
  func store(in notifier: ServiceNotifier, for mount: String, logger: Logger) {
    guard notifier.isEnabled, notifier.hasDescriptorStore else { return }
    guard ServiceNotifier.isValidStoreName(StoredRole.initRequest.name(for: mount)) else {
      logger.notice(
        "the mount's name cannot name descriptors in systemd's fd store: a crash of mountsupd ends this mount"
      )
      return
    }
    guard let request = try? Self.memoryFile(holding: initRequest) else { return }
    var stored = notifier.store([fuse.raw], name: StoredRole.fuse.name(for: mount))
    if let state {
      stored = stored && notifier.store([state.raw], name: StoredRole.state.name(for: mount))
    }
    stored = stored && notifier.store([request.raw], name: StoredRole.initRequest.name(for: mount))
    if !stored {
      logger.warning(
        "cannot keep the FUSE connection in systemd's fd store (FileDescriptorStoreMax= of the unit?): a crash of mountsupd ends this mount"
      )
    }
  }

  static func forgetStored(in notifier: ServiceNotifier, for mount: String) {
    guard notifier.isEnabled, notifier.hasDescriptorStore else { return }
    for role in StoredRole.allCases { notifier.forgetStored(name: role.name(for: mount)) }
  }

  /// A memfd with `bytes`, to put bytes in the fd store.
  static func memoryFile(holding bytes: [UInt8]) throws(RuntimeError) -> Descriptor {
    let fd = Descriptor(
      try system(.descriptors, "memfd_create") { mountsup_memfd("mountsupd-init") })
    mountsup_set_cloexec(fd.raw, 1)
    _ = try system(.io, "write the INIT request") {
      bytes.withUnsafeBytes { Glibc.write(fd.raw, $0.baseAddress, $0.count) }
    }
    return fd
  }

  /// The bytes of a memfd from the store.
  static func contents(of fd: Descriptor) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 4096)
    let count = pread(fd.raw, &bytes, bytes.count, 0)
    return count > 0 ? Array(bytes.prefix(count)) : []
  }
}
