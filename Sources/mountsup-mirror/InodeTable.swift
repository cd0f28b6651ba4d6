import CMountWorkerKitSupport
import Glibc
import MountWorkerKit
import Synchronization

/// Identity of a file in SOURCE. Hard links share it, so they share one FUSE inode.
struct SourceKey: Hashable, Sendable {
  var device: UInt64
  var inode: UInt64

  init(device: UInt64, inode: UInt64) {
    self.device = device
    self.inode = inode
  }

  init(_ attributes: stat) {
    self.init(device: UInt64(attributes.st_dev), inode: UInt64(attributes.st_ino))
  }
}

/// One file of SOURCE that the kernel knows: an `O_PATH` descriptor that keeps the file reachable
/// (even after it is renamed or unlinked) without opening it for I/O, and its node id, the number
/// of its record in the ``MirrorState``.
final class MirrorNode: Sendable {
  let descriptor: Int32
  let key: SourceKey
  let id: FUSEInode
  /// Until when (monotonic nanoseconds) the kernel holds a valid name and attributes for this
  /// file from our last entry reply; readdirplus leaves such entries out.
  private let freshUntil = Atomic<UInt64>(0)

  init(descriptor: Int32, key: SourceKey, id: FUSEInode) {
    self.descriptor = descriptor
    self.key = key
    self.id = id
  }

  deinit { close(descriptor) }

  func markFresh(until deadline: UInt64) { freshUntil.store(deadline, ordering: .relaxed) }

  func isFresh(at instant: UInt64) -> Bool { freshUntil.load(ordering: .relaxed) > instant }
}

/// The monotonic clock in nanoseconds, the clock of entry and attribute timeouts.
func monotonicNanoseconds() -> UInt64 {
  var time = timespec()
  clock_gettime(CLOCK_MONOTONIC, &time)
  return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// The nodes the kernel holds, with their lookup counts, kept in the ``MirrorState`` so that a
/// successor worker knows them: node id = record number + 2 (1 is the root). A node lives while
/// its count is above zero. The open descriptors are this process's: a successor opens a node
/// again from its file handle when the kernel first names it.
///
/// Lookup counts err on the side of keeping: FORGETs that a crashed worker had read are lost, and
/// a lookup it had counted but not answered is counted again when resent. A node kept too long
/// costs a record, never a wrong answer.
final class InodeTable: Sendable {
  private struct Live {
    var byID: [UInt64: MirrorNode] = [:]
    var byKey: [SourceKey: UInt64] = [:]
  }

  let root: MirrorNode
  private let state: MirrorState
  private let live = Mutex(Live())
  /// SOURCE's root opened for reading: open_by_handle_at takes no `O_PATH` descriptor as the
  /// filesystem's (EBADF). -1 if it cannot be opened; nodes then cannot be opened again.
  private let mountDescriptor: Int32

  init(root: MirrorNode, state: MirrorState) {
    self.root = root
    self.state = state
    mountDescriptor = openat(root.descriptor, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard state.isInherited else { return }
    live.withLock { live in
      for index in 0..<state.nodesUsed where state.lookups(ofNode: index) > 0 {
        live.byKey[state.key(ofNode: index)] = UInt64(index + 2)
      }
    }
  }

  /// The node behind a node id the kernel sent; opened from its record after a crash.
  func node(_ inode: FUSEInode) throws(FUSEError) -> MirrorNode {
    if inode == .root { return root }
    let id = inode.rawValue
    return try live.withLock { live throws(FUSEError) -> MirrorNode in
      if let node = live.byID[id] { return node }
      return try reopen(id, into: &live)
    }
  }

  private func reopen(_ id: UInt64, into live: inout Live) throws(FUSEError) -> MirrorNode {
    let index = Int(id) - 2
    guard index >= 0, index < state.nodesUsed, state.lookups(ofNode: index) > 0,
      state.handle(ofNode: index).count >= 8
    else {
      throw FUSEError(ESTALE)
    }
    let descriptor = mwk_open_by_handle(
      mountDescriptor, state.handle(ofNode: index).baseAddress, MWK_O_PATH | O_CLOEXEC)
    guard descriptor >= 0 else { throw .current }
    let node = MirrorNode(descriptor: descriptor, key: state.key(ofNode: index), id: FUSEInode(id))
    live.byID[id] = node
    return node
  }

  /// Counts one more lookup of the known file `key`; `nil` if the kernel does not know it.
  func retainExisting(_ key: SourceKey) throws(FUSEError) -> MirrorNode? {
    if key == root.key { return root }
    return try live.withLock { live throws(FUSEError) -> MirrorNode? in
      guard let id = live.byKey[key] else { return nil }
      let node: MirrorNode
      if let known = live.byID[id] { node = known } else { node = try reopen(id, into: &live) }
      state.setLookups(ofNode: Int(id) - 2, state.lookups(ofNode: Int(id) - 2) + 1)
      return node
    }
  }

  /// Counts one lookup of the file open as the `O_PATH` `descriptor`, which the table takes
  /// over: a new node when the file is new, otherwise the known one (the descriptor closes).
  func retain(_ descriptor: Int32, key: SourceKey) throws(FUSEError) -> MirrorNode {
    if key == root.key {
      close(descriptor)
      return root
    }
    return try live.withLock { live throws(FUSEError) -> MirrorNode in
      if let id = live.byKey[key] {
        let index = Int(id) - 2
        state.setLookups(ofNode: index, state.lookups(ofNode: index) + 1)
        if let node = live.byID[id] {
          close(descriptor)
          return node
        }
        let node = MirrorNode(descriptor: descriptor, key: key, id: FUSEInode(id))
        live.byID[id] = node
        return node
      }
      let capacity = MirrorState.handleCapacity + 8
      let index = try withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 8) {
        handle throws(FUSEError) -> Int in
        // A SOURCE without file handles (overlayfs without nfs_export, some network file
        // systems) still serves: its nodes are recorded without one and cannot be reopened by
        // a successor, which answers ESTALE for them.
        let length = max(mwk_handle_of(descriptor, handle.baseAddress, capacity), 0)
        guard
          let index = state.allocateNode(
            key, handle: UnsafeRawBufferPointer(rebasing: handle[..<Int(length)]))
        else {
          close(descriptor)
          throw FUSEError(ENFILE)
        }
        return index
      }
      let id = UInt64(index + 2)
      let node = MirrorNode(descriptor: descriptor, key: key, id: FUSEInode(id))
      live.byID[id] = node
      live.byKey[key] = id
      return node
    }
  }

  /// The known node of `key` without counting a lookup; nil if it is not open in this process.
  func peek(_ key: SourceKey) -> MirrorNode? {
    live.withLock { live in live.byKey[key].flatMap { live.byID[$0] } }
  }

  /// Gives back `count` lookups; the node is dropped at zero.
  func forget(_ inode: FUSEInode, count: UInt64) {
    guard inode != .root else { return }
    let id = inode.rawValue
    let index = Int(id) - 2
    let dropped = live.withLock { live -> MirrorNode? in
      guard index >= 0, index < state.nodesUsed, case let lookups = state.lookups(ofNode: index),
        lookups > 0
      else { return nil }
      if lookups > count {
        state.setLookups(ofNode: index, lookups - count)
        return nil
      }
      live.byKey[state.key(ofNode: index)] = nil
      state.freeNode(index)
      return live.byID.removeValue(forKey: id)
    }
    // The descriptor closes here, outside the lock.
    _ = dropped
  }
}
