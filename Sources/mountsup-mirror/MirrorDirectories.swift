import Glibc
import MountWorkerKit
import Synchronization

// Directories: opening, listing (readdirplus sends attributes with names) and syncing.
extension MirrorFileSystem {
  func opendir(_ request: FUSERequest, inode: FUSEInode, flags: Int32) throws(FUSEError)
    -> FUSEOpenReply
  {
    let node = try nodes.node(inode)
    let handle = try handles.add(
      .directory(DirectoryHandle(opening: node)), node: node.id, flags: flags)
    return FUSEOpenReply(handle: handle)
  }

  private func directory(_ handle: UInt64) throws(FUSEError) -> DirectoryHandle {
    try handles.directory(handle)
  }

  func releasedir(inode: FUSEInode, handle: UInt64) {
    handles.remove(handle)
  }

  func fsyncdir(_ request: FUSERequest, inode: FUSEInode, handle: UInt64, dataOnly: Bool)
    throws(FUSEError)
  {
    let descriptor = dirfd(try directory(handle).stream)
    guard (dataOnly ? fdatasync(descriptor) : Glibc.fsync(descriptor)) == 0 else {
      throw .current
    }
  }

  func readdir(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64,
    into buffer: inout FUSEDirectoryBuffer
  ) throws(FUSEError) {
    try directory(handle).list(from: offset) { entry, nextOffset in
      withDirentName(entry) { name in
        buffer.add(
          name: name, inode: UInt64(entry.pointee.d_ino),
          type: mode_t(entry.pointee.d_type) << 12, nextOffset: nextOffset)
      }
    }
  }

  func readdirplus(
    _ request: FUSERequest, inode: FUSEInode, handle: UInt64, offset: Int64,
    into buffer: inout FUSEDirectoryBuffer
  ) throws(FUSEError) {
    let parent = try nodes.node(inode)
    let instant = monotonicNanoseconds()
    try directory(handle).list(from: offset) { entry, nextOffset throws(FUSEError) in
      try withDirentName(entry) { name throws(FUSEError) in
        // An entry with node id 0 is a plain name for the kernel: no attributes, no lookup
        // counted. That suits "." and "..", and files whose name and attributes the kernel
        // still holds as valid: refreshing them would cost a stat here and work in the
        // kernel, and it would keep the kernel choosing readdirplus for listings that do not
        // need it (its heuristic follows the entries that came with attributes).
        let key = SourceKey(device: parent.key.device, inode: UInt64(entry.pointee.d_ino))
        if FUSEName(name).isDotOrDotDot || nodes.peek(key)?.isFresh(at: instant) == true {
          var attributes = stat()
          attributes.st_ino = entry.pointee.d_ino
          attributes.st_mode = mode_t(entry.pointee.d_type) << 12
          let nameOnly = FUSEEntry(
            inode: FUSEInode(0), attributes: FUSEAttributes(attributes), attributeTimeout: 0,
            entryTimeout: 0)
          return buffer.addPlus(name: name, entry: nameOnly, nextOffset: nextOffset)
        }
        let found: FUSEEntry
        do throws(FUSEError) {
          found = try self.entry(in: parent, name: name)
        } catch {
          // Removed since the listing was read: leave it out.
          guard error.errno == ENOENT else { throw error }
          return true
        }
        guard buffer.addPlus(name: name, entry: found, nextOffset: nextOffset) else {
          nodes.forget(found.inode, count: 1)
          return false
        }
        return true
      }
    }
  }
}

/// Runs `body` with the NUL-terminated name of a directory entry.
@inline(__always)
private func withDirentName<Result, Failure: Error>(
  _ entry: UnsafeMutablePointer<dirent>,
  _ body: (UnsafePointer<CChar>) throws(Failure) -> Result
) throws(Failure) -> Result {
  let name = UnsafeRawPointer(entry).advanced(by: MemoryLayout<dirent>.offset(of: \.d_name)!)
    .assumingMemoryBound(to: CChar.self)
  return try body(name)
}

/// An open directory: its stream and where the stream stands, so that consecutive readdir
/// requests continue without seeking. Requests on one handle are serialised.
final class DirectoryHandle: Sendable {
  /// The `DIR *`, only used under `position`'s lock.
  nonisolated(unsafe) let stream: OpaquePointer
  /// The offset the stream will read next.
  private let position = Mutex<Int64>(0)

  init(stream: OpaquePointer) { self.stream = stream }

  /// Opens the directory `node` for listing.
  convenience init(opening node: MirrorNode) throws(FUSEError) {
    let descriptor = openat(node.descriptor, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard descriptor >= 0 else { throw .current }
    guard let stream = fdopendir(descriptor) else {
      let error = FUSEError.current
      close(descriptor)
      throw error
    }
    self.init(stream: stream)
  }

  deinit { closedir(stream) }

  /// Feeds entries from `offset` on to `add` until it returns `false` (full) or the directory
  /// ends. `add` gets each entry with the offset of the entry after it.
  func list(
    from offset: Int64,
    _ add: (UnsafeMutablePointer<dirent>, Int64) throws(FUSEError) -> Bool
  ) throws(FUSEError) {
    try position.withLock { position throws(FUSEError) in
      if position != offset {
        seekdir(stream, Int(offset))
        position = offset
      }
      while true {
        Glibc.errno = 0
        guard let entry = Glibc.readdir(stream) else {
          if Glibc.errno != 0 { throw FUSEError.current }
          return
        }
        let next = Int64(entry.pointee.d_off)
        position = next
        // An entry that did not fit is asked for again by offset, which seeks back to it.
        guard try add(entry, next) else { return }
      }
    }
  }
}
