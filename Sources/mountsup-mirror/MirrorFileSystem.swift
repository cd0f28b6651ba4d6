import CMountWorkerKitSupport
import Glibc
import MountWorkerKit
import Synchronization

/// A passthrough of the directory SOURCE: every operation is the same syscall on the same file
/// of SOURCE, made relative to the `O_PATH` descriptor of the node it concerns (as libfuse's
/// passthrough_ll does), so renames and unlinks under an open file never confuse it.
///
/// Writes go straight to SOURCE (no kernel writeback cache): once write(2) has returned in the
/// mount, the data is in SOURCE and survives the worker being killed; fsync(2) reaches SOURCE's
/// disk. Permission checks are the kernel's (`default_permissions`); files created for another
/// user are given to that user when the worker runs as root.
final class MirrorFileSystem: FUSEFileSystem {
  let nodes: InodeTable
  let handles: OpenHandles
  let timeouts: MirrorTimeouts
  let passthrough: PassthroughMode
  /// How deeply SOURCE's filesystem is stacked itself (1 on overlayfs or FUSE), for passthrough.
  let sourceStackDepth: UInt32
  let runsAsRoot = geteuid() == 0

  /// How long an entry reply keeps the kernel's name and attributes valid, in nanoseconds.
  private let freshFor: UInt64
  /// SOURCE's device when SOURCE is on a local filesystem, whose close(2) never reports an
  /// error; files there are opened without flush, which saves a round trip per close.
  private let localDevice: UInt64?
  private let descriptorsExhausted = Atomic<Bool>(false)

  init(
    root: MirrorNode, state: MirrorState, timeouts: MirrorTimeouts,
    passthrough: PassthroughMode
  ) {
    nodes = InodeTable(root: root, state: state)
    handles = OpenHandles(state: state, nodes: nodes)
    self.timeouts = timeouts
    self.passthrough = passthrough
    // Capped at 30 years, which keeps the nanoseconds within UInt64.
    freshFor = UInt64(min(timeouts.attributes, timeouts.entries, 1e9) * 1e9)
    let type = mwk_filesystem_type(root.descriptor)
    localDevice = MirrorFileSystem.localFilesystemTypes.contains(type) ? root.key.device : nil
    sourceStackDepth = MirrorFileSystem.stackedFilesystemTypes.contains(type) ? 1 : 0
  }

  // MARK: Names and attributes

  func lookup(_ request: FUSERequest, parent: FUSEInode, name: FUSEName) throws(FUSEError)
    -> FUSEEntry
  {
    do throws(FUSEError) {
      return try entry(in: nodes.node(parent), name: name)
    } catch {
      guard error.errno == ENOENT, timeouts.negativeEntries > 0 else { throw error }
      return .negative(timeout: timeouts.negativeEntries)
    }
  }

  /// Looks `name` up in `directory` and counts the lookup. A file the kernel already knows
  /// costs one fstatat; a new one is opened with `O_PATH` and adopted.
  func entry(in directory: MirrorNode, name: UnsafePointer<CChar>) throws(FUSEError)
    -> FUSEEntry
  {
    var attributes = stat()
    guard fstatat(directory.descriptor, name, &attributes, AT_SYMLINK_NOFOLLOW) == 0 else {
      throw .current
    }
    if let node = try nodes.retainExisting(SourceKey(attributes)) {
      return entry(node, attributes)
    }
    let descriptor = openat(directory.descriptor, name, MWK_O_PATH | O_NOFOLLOW | O_CLOEXEC)
    guard descriptor >= 0 else { throw failure(.current) }
    return try adopt(descriptor)
  }

  /// `error`, after telling the operator (once) when it means the descriptor limit is reached:
  /// the kernel then holds more files of this mount than the worker may keep open, and every
  /// new file fails with EMFILE until the kernel forgets some.
  private func failure(_ error: FUSEError) -> FUSEError {
    guard error.errno == EMFILE || error.errno == ENFILE,
      !descriptorsExhausted.exchange(true, ordering: .relaxed)
    else { return error }
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    let message =
      "out of file descriptors (limit \(limit.rlim_cur)): the kernel holds more files of this "
      + "mount than that; new files fail with EMFILE until it forgets some. Raise the limit "
      + "(LimitNOFILE=, or run as root)."
    let line = "mountsup-mirror: warning: \(message)\n"
    _ = line.utf8CString.withUnsafeBufferPointer { Glibc.write(2, $0.baseAddress, $0.count - 1) }
    SupervisorNotifier.shared.status(message)
    return error
  }

  func entry(in directory: MirrorNode, name: FUSEName) throws(FUSEError) -> FUSEEntry {
    try entry(in: directory, name: name.cString)
  }

  /// Counts a lookup of the file behind the new `O_PATH` descriptor, which it takes over.
  /// `known` are its attributes when the caller has just read them.
  private func adopt(_ descriptor: Int32, known: stat? = nil) throws(FUSEError) -> FUSEEntry {
    var attributes = known ?? stat()
    if known == nil {
      guard fstatat(descriptor, "", &attributes, MWK_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0
      else {
        let error = FUSEError.current
        close(descriptor)
        throw error
      }
    }
    let node = try nodes.retain(descriptor, key: SourceKey(attributes))
    return entry(node, attributes)
  }

  private func entry(_ node: MirrorNode, _ attributes: stat) -> FUSEEntry {
    node.markFresh(until: monotonicNanoseconds() + freshFor)
    return FUSEEntry(
      inode: node.id, attributes: FUSEAttributes(attributes),
      attributeTimeout: timeouts.attributes, entryTimeout: timeouts.entries)
  }

  func forget(inode: FUSEInode, lookups: UInt64) {
    nodes.forget(inode, count: lookups)
  }

  func getattr(_ request: FUSERequest, inode: FUSEInode, handle: UInt64?) throws(FUSEError)
    -> FUSEAttributeReply
  {
    FUSEAttributeReply(
      attributes: try attributes(of: inode, handle: handle), timeout: timeouts.attributes)
  }

  private func attributes(of inode: FUSEInode, handle: UInt64?) throws(FUSEError)
    -> FUSEAttributes
  {
    var attributes = stat()
    let result =
      if let handle {
        fstat(try handles.file(handle), &attributes)
      } else {
        fstatat(
          try nodes.node(inode).descriptor, "", &attributes, MWK_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW
        )
      }
    guard result == 0 else { throw .current }
    return FUSEAttributes(attributes)
  }

  func setattr(
    _ request: FUSERequest, inode: FUSEInode, changes: FUSESetAttributes, handle: UInt64?
  ) throws(FUSEError) -> FUSEAttributeReply {
    let node = try nodes.node(inode)
    let file = try handle.map { handle throws(FUSEError) in try handles.file(handle) }
    // Ownership first: chown clears set-id bits that a chmod in the same request may set.
    if changes.uid != nil || changes.gid != nil {
      let uid = changes.uid ?? uid_t.max
      let gid = changes.gid ?? gid_t.max
      guard
        fchownat(node.descriptor, "", uid, gid, MWK_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0
      else { throw .current }
    }
    if let mode = changes.mode {
      let result =
        if let file { fchmod(file, mode) } else {
          withProcPath(node.descriptor) { chmod($0, mode) }
        }
      guard result == 0 else { throw .current }
    }
    if let size = changes.size {
      let result =
        if let file {
          ftruncate(file, off_t(size))
        } else {
          withProcPath(node.descriptor) { truncate($0, off_t(size)) }
        }
      guard result == 0 else { throw .current }
    }
    if changes.accessTime != nil || changes.modificationTime != nil {
      let omit = timespec(tv_sec: 0, tv_nsec: Int(MWK_UTIME_OMIT))
      let times = [
        changes.accessTime?.timespec ?? omit, changes.modificationTime?.timespec ?? omit,
      ]
      let result =
        if let file {
          futimens(file, times)
        } else {
          utimensat(node.descriptor, "", times, MWK_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)
        }
      guard result == 0 else { throw .current }
    }
    return FUSEAttributeReply(
      attributes: try attributes(of: inode, handle: handle), timeout: timeouts.attributes)
  }

  func readlink(_ request: FUSERequest, inode: FUSEInode) throws(FUSEError) -> String {
    let capacity = Int(PATH_MAX) + 1
    let node = try nodes.node(inode)
    return try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) {
      buffer throws(FUSEError) -> String in
      let length = buffer.withMemoryRebound(to: CChar.self) {
        readlinkat(node.descriptor, "", $0.baseAddress!, capacity)
      }
      guard length >= 0 else { throw .current }
      guard length < capacity else { throw FUSEError(ENAMETOOLONG) }
      return String(decoding: UnsafeBufferPointer(rebasing: buffer[..<length]), as: UTF8.self)
    }
  }

  // MARK: Files

  /// Open flags for SOURCE: `O_DIRECT` is answered with direct I/O in the kernel instead
  /// (SOURCE stays buffered, so no alignment rules apply to the worker's buffers).
  private func ioFlags(_ flags: Int32) -> Int32 {
    (flags & ~MWK_O_DIRECT) | O_CLOEXEC
  }

  /// Records the open file under a handle that a successor worker can open again.
  private func openReply(_ descriptor: Int32, flags: Int32, node: MirrorNode) throws(FUSEError)
    -> FUSEOpenReply
  {
    let handle = try handles.add(.file(descriptor), node: node.id, flags: flags)
    return FUSEOpenReply(
      handle: handle, keepCache: true, directIO: flags & MWK_O_DIRECT != 0,
      noFlush: flags & O_ACCMODE == O_RDONLY || node.key.device == localDevice,
      passthrough: passthrough == .off ? nil : descriptor)
  }

  func open(_ request: FUSERequest, inode: FUSEInode, flags: Int32) throws(FUSEError)
    -> FUSEOpenReply
  {
    let node = try nodes.node(inode)
    // Through the magic link, which O_NOFOLLOW would refuse; it names the node's file itself.
    let descriptor = withProcPath(node.descriptor) {
      Glibc.open($0, ioFlags(flags) & ~O_NOFOLLOW)
    }
    guard descriptor >= 0 else { throw .current }
    do throws(FUSEError) {
      return try openReply(descriptor, flags: flags, node: node)
    } catch {
      close(descriptor)
      throw error
    }
  }

  func create(
    _ request: FUSERequest, parent: FUSEInode, name: FUSEName, mode: mode_t, flags: Int32
  ) throws(FUSEError) -> (entry: FUSEEntry, open: FUSEOpenReply) {
    let directory = try nodes.node(parent)
    // O_EXCL stays as asked; O_NOFOLLOW is added so that a symlink put into SOURCE behind the
    // kernel's back is never followed out of SOURCE by a root worker.
    let descriptor = openat(
      directory.descriptor, name.cString, ioFlags(flags) | O_CREAT | O_NOFOLLOW, mode)
    guard descriptor >= 0 else { throw .current }
    do throws(FUSEError) {
      try giveToCaller(
        request, directory: directory, name: name, removeFlags: 0, descriptor: descriptor)
      let entry = try node(for: descriptor, in: directory, name: name)
      return (entry, try openReply(descriptor, flags: flags, node: nodes.node(entry.inode)))
    } catch {
      close(descriptor)
      throw error
    }
  }

  /// The entry of the file open as `descriptor`, just created as `name`. Its `O_PATH`
  /// descriptor comes from the name, the cheap way; should SOURCE have put another file there
  /// meanwhile, the open file itself is reopened through /proc.
  private func node(for descriptor: Int32, in directory: MirrorNode, name: FUSEName)
    throws(FUSEError) -> FUSEEntry
  {
    var created = stat()
    guard fstat(descriptor, &created) == 0 else { throw .current }
    let path = openat(directory.descriptor, name.cString, MWK_O_PATH | O_NOFOLLOW | O_CLOEXEC)
    if path >= 0 {
      var named = stat()
      if fstatat(path, "", &named, MWK_AT_EMPTY_PATH) == 0, SourceKey(named) == SourceKey(created) {
        return try adopt(path, known: named)
      }
      close(path)
    }
    let reopened = withProcPath(descriptor) { Glibc.open($0, MWK_O_PATH | O_CLOEXEC) }
    guard reopened >= 0 else { throw failure(.current) }
    return try adopt(reopened, known: created)
  }

  func read(_ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64, size: Int)
    throws(FUSEError) -> FUSEReadReply
  {
    .file(descriptor: try handles.file(handle), offset: offset, length: size)
  }

  func write(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64,
    data: UnsafeRawBufferPointer
  ) throws(FUSEError) -> Int {
    let written = pwrite(try handles.file(handle), data.baseAddress, data.count, off_t(offset))
    guard written >= 0 else { throw .current }
    return written
  }

  func flush(_ request: FUSERequest, inode: FUSEInode, handle: UInt64) throws(FUSEError) {
    // Closing a duplicate reports errors SOURCE defers to close (NFS, for one) to the caller.
    let duplicate = dup(try handles.file(handle))
    guard duplicate >= 0, close(duplicate) == 0 else { throw .current }
  }

  func release(inode: FUSEInode, handle: UInt64, flags: Int32) {
    handles.remove(handle)
  }

  func fsync(_ request: FUSERequest, inode: FUSEInode, handle: UInt64, dataOnly: Bool)
    throws(FUSEError)
  {
    let descriptor = try handles.file(handle)
    guard (dataOnly ? fdatasync(descriptor) : Glibc.fsync(descriptor)) == 0 else {
      throw .current
    }
  }

  func fallocate(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, mode: Int32, offset: Int64,
    length: Int64
  ) throws(FUSEError) {
    guard try mwk_fallocate(handles.file(handle), mode, offset, length) == 0 else {
      throw .current
    }
  }

  func copyFileRange(
    _ request: FUSERequest, from source: FUSEInode, handle sourceHandle: UInt64,
    offset sourceOffset: Int64, to target: FUSEInode, handle targetHandle: UInt64,
    offset targetOffset: Int64, length: Int, flags: UInt32
  ) throws(FUSEError) -> Int {
    let copied = try mwk_copy_file_range(
      handles.file(sourceHandle), sourceOffset, handles.file(targetHandle), targetOffset, length,
      flags)
    guard copied >= 0 else { throw .current }
    return copied
  }

  func lseek(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64, whence: Int32
  ) throws(FUSEError) -> Int64 {
    let result = Glibc.lseek(try handles.file(handle), off_t(offset), whence)
    guard result >= 0 else { throw .current }
    return Int64(result)
  }
}
