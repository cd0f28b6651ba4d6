import Glibc
import MountWorkerKit
import Synchronization

/// The files and directories the kernel holds open, by the handle it was given: a record of the
/// ``MirrorState`` with its generation (see there), which keeps the node and the open flags. A successor
/// worker opens the file again on first use with the same flags (creation and truncation
/// removed: they happened at the first open), so an open file works on across a crash. FUSE
/// sends every read and write with its offset, so nothing else of the open file matters.
final class OpenHandles: Sendable {
  enum Open: Sendable {
    case file(Int32)
    case directory(DirectoryHandle)
  }

  private let state: MirrorState
  private let nodes: InodeTable
  private let live = Mutex<[UInt64: Open]>([:])

  init(state: MirrorState, nodes: InodeTable) {
    self.state = state
    self.nodes = nodes
  }

  /// Records `open` of `node` opened with `flags`; its handle, or ENFILE when the table is full
  /// (the caller then closes what it opened).
  func add(_ open: Open, node: FUSEInode, flags: Int32) throws(FUSEError) -> UInt64 {
    try live.withLock { live throws(FUSEError) -> UInt64 in
      let kind: MirrorState.Kind
      switch open {
      case .file: kind = .file
      case .directory: kind = .directory
      }
      guard let index = state.allocateOpen(node: node.rawValue, flags: flags, kind: kind) else {
        throw FUSEError(ENFILE)
      }
      let handle = state.handle(ofOpen: index)
      live[handle] = open
      return handle
    }
  }

  /// The descriptor of an open file; opened again from its record after a crash.
  func file(_ handle: UInt64) throws(FUSEError) -> Int32 {
    guard case .file(let descriptor) = try open(handle) else { throw FUSEError(EBADF) }
    return descriptor
  }

  func directory(_ handle: UInt64) throws(FUSEError) -> DirectoryHandle {
    guard case .directory(let directory) = try open(handle) else { throw FUSEError(EBADF) }
    return directory
  }

  private func open(_ handle: UInt64) throws(FUSEError) -> Open {
    try live.withLock { live throws(FUSEError) -> Open in
      if let open = live[handle] { return open }
      guard let index = state.openIndex(ofHandle: handle), let record = state.openRecord(index)
      else { throw FUSEError(EBADF) }
      let node = try nodes.node(FUSEInode(record.node))
      let open: Open
      switch record.kind {
      case .directory:
        open = .directory(try DirectoryHandle(opening: node))
      case .file, .free:
        let flags = record.flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOFOLLOW)
        let descriptor = withProcPath(node.descriptor) { Glibc.open($0, flags | O_CLOEXEC) }
        guard descriptor >= 0 else { throw .current }
        open = .file(descriptor)
      }
      live[handle] = open
      return open
    }
  }

  /// Forgets the handle and closes what this process had open for it. A handle whose record is
  /// free or has been taken again since (a resent RELEASE) frees nothing.
  func remove(_ handle: UInt64) {
    let open = live.withLock { live -> Open? in
      guard let index = state.openIndex(ofHandle: handle) else { return nil }
      state.freeOpen(index)
      return live.removeValue(forKey: handle)
    }
    if case .file(let descriptor) = open { close(descriptor) }
  }
}
