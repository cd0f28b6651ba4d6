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
/// (even after it is renamed or unlinked) without opening it for I/O. Its address is its FUSE
/// node id, so reaching it from a request costs no lookup.
final class MirrorNode: Sendable {
  let descriptor: Int32
  let key: SourceKey
  /// Until when (monotonic nanoseconds) the kernel holds a valid name and attributes for this
  /// file from our last entry reply; readdirplus leaves such entries out.
  private let freshUntil = Atomic<UInt64>(0)

  init(descriptor: Int32, key: SourceKey) {
    self.descriptor = descriptor
    self.key = key
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

/// The nodes the kernel holds, with their lookup counts. A node lives while its count is above
/// zero; the kernel never uses a node id after forgetting it, so node ids can be addresses.
final class InodeTable: Sendable {
  private struct Slot {
    let node: MirrorNode
    var lookups: UInt64
  }

  let root: MirrorNode
  private let slots = Mutex<[SourceKey: Slot]>([:])

  init(root: MirrorNode) { self.root = root }

  /// The node behind a node id the kernel sent.
  @inline(__always)
  func node(_ inode: FUSEInode) -> MirrorNode {
    if inode == .root { return root }
    return Unmanaged<MirrorNode>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(inode.rawValue))!)
      .takeUnretainedValue()
  }

  func id(of node: MirrorNode) -> FUSEInode {
    if node === root { return .root }
    return FUSEInode(UInt64(UInt(bitPattern: Unmanaged.passUnretained(node).toOpaque())))
  }

  /// Counts one more lookup of the known file `key`; `nil` if the kernel does not know it.
  func retainExisting(_ key: SourceKey) -> MirrorNode? {
    if key == root.key { return root }
    return slots.withLock { slots -> MirrorNode? in
      guard slots[key] != nil else { return nil }
      slots[key]!.lookups += 1
      return slots[key]!.node
    }
  }

  /// Counts one lookup of `node`'s file, adopting `node` if the file is new. When another
  /// thread adopted the same file first, that node is counted and returned, and `node` is
  /// dropped (closing its descriptor).
  func retain(_ node: MirrorNode) -> MirrorNode {
    if node.key == root.key { return root }
    return slots.withLock { slots -> MirrorNode in
      if slots[node.key] != nil {
        slots[node.key]!.lookups += 1
        return slots[node.key]!.node
      }
      slots[node.key] = Slot(node: node, lookups: 1)
      return node
    }
  }

  /// The known node of `key` without counting a lookup.
  func peek(_ key: SourceKey) -> MirrorNode? {
    slots.withLock { $0[key]?.node }
  }

  /// Gives back `count` lookups; the node is dropped at zero.
  func forget(_ inode: FUSEInode, count: UInt64) {
    guard inode != .root else { return }
    let key = node(inode).key
    let dropped = slots.withLock { slots -> Slot? in
      guard let slot = slots[key] else { return nil }
      if slot.lookups > count {
        slots[key]!.lookups -= count
        return nil
      }
      return slots.removeValue(forKey: key)
    }
    // The descriptor closes here, outside the lock.
    _ = dropped
  }
}
