import CMountWorkerKitSupport
import Glibc
import MountWorkerKit

/// The mirror's records in the worker state that the supervisor keeps across crashes
/// (``FUSEPersistentState``): which file each node id the kernel holds names, and which file and
/// open flags each open handle stands for. A successor reads them to give the kernel's ids the
/// meaning they had: node ids are record numbers, files are found again by their kernel file
/// handle (`name_to_handle_at`, then `open_by_handle_at`), handles are reopened with their flags.
///
/// Layout (native byte order): a header page, then `nodeCapacity` node records, then
/// `openCapacity` open records. A record is written completely before its number is given to
/// the kernel, and freed only when the kernel has given it back, so a worker killed half-way
/// through leaves at worst a record that nobody uses (leaked until the mount ends).
struct MirrorState: @unchecked Sendable {
  static let nodeCapacity = 1 << 20
  static let openCapacity = 1 << 18
  static let nodeSize = 176
  static let openSize = 32
  static let handleCapacity = 128
  static let headerSize = 4096
  static let size = headerSize + nodeCapacity * nodeSize + openCapacity * openSize
  private static let magic: UInt64 = 0x3130_5252_494D_534D  // "MSMIRR01"

  let bytes: UnsafeMutableRawBufferPointer
  let isInherited: Bool

  init(_ state: FUSEPersistentState) throws(FUSEError) {
    guard state.bytes.count >= Self.size else { throw FUSEError(EINVAL) }
    bytes = state.bytes
    isInherited =
      state.isInherited && state.bytes.load(fromByteOffset: 0, as: UInt64.self) == Self.magic
    if !isInherited {
      for index in 0..<5 { setHeader(index, 0) }
      setHeader(0, Self.magic)
    }
  }

  // Header words: 0 magic, 1 node records used, 2 first free node + 1, 3 open records used,
  // 4 first free open record + 1.
  private func header(_ index: Int) -> UInt64 {
    bytes.load(fromByteOffset: index * 8, as: UInt64.self)
  }

  private func setHeader(_ index: Int, _ value: UInt64) {
    bytes.storeBytes(of: value, toByteOffset: index * 8, as: UInt64.self)
  }

  // MARK: Nodes (record: lookups, device, inode, next free, handle type, handle length, handle)

  private func node(_ index: Int) -> Int { Self.headerSize + index * Self.nodeSize }

  var nodesUsed: Int { Int(header(1)) }

  func lookups(ofNode index: Int) -> UInt64 {
    bytes.load(fromByteOffset: node(index), as: UInt64.self)
  }

  func setLookups(ofNode index: Int, _ value: UInt64) {
    bytes.storeBytes(of: value, toByteOffset: node(index), as: UInt64.self)
  }

  func key(ofNode index: Int) -> SourceKey {
    SourceKey(
      device: bytes.load(fromByteOffset: node(index) + 8, as: UInt64.self),
      inode: bytes.load(fromByteOffset: node(index) + 16, as: UInt64.self))
  }

  /// A new node record for `key` with `handle` (a `struct file_handle` as the kernel filled it)
  /// and one lookup; nil when the table is full.
  func allocateNode(_ key: SourceKey, handle: UnsafeRawBufferPointer) -> Int? {
    let index: Int
    if case let free = header(2), free != 0 {
      index = Int(free - 1)
      setHeader(2, bytes.load(fromByteOffset: node(index) + 24, as: UInt64.self))
    } else {
      guard nodesUsed < Self.nodeCapacity else { return nil }
      index = nodesUsed
      setHeader(1, UInt64(index + 1))
    }
    let base = node(index)
    bytes.storeBytes(of: key.device, toByteOffset: base + 8, as: UInt64.self)
    bytes.storeBytes(of: key.inode, toByteOffset: base + 16, as: UInt64.self)
    let length = min(handle.count, Self.handleCapacity + 8)
    bytes.storeBytes(of: UInt32(length), toByteOffset: base + 32, as: UInt32.self)
    UnsafeMutableRawBufferPointer(rebasing: bytes[(base + 36)..<(base + 36 + length)])
      .copyMemory(from: UnsafeRawBufferPointer(rebasing: handle[..<length]))
    setLookups(ofNode: index, 1)
    return index
  }

  func freeNode(_ index: Int) {
    setLookups(ofNode: index, 0)
    bytes.storeBytes(of: header(2), toByteOffset: node(index) + 24, as: UInt64.self)
    setHeader(2, UInt64(index + 1))
  }

  /// The saved `struct file_handle` of a node.
  func handle(ofNode index: Int) -> UnsafeRawBufferPointer {
    let base = node(index)
    let length = Int(bytes.load(fromByteOffset: base + 32, as: UInt32.self))
    return UnsafeRawBufferPointer(rebasing: bytes[(base + 36)..<(base + 36 + length)])
  }

  // MARK: Open handles (record: node id, flags, kind, next free, generation)
  //
  // A handle is the record's number + 1 in its low 20 bits and the record's generation above:
  // a RELEASE that the kernel resends after a crash, for a handle whose record the dead worker
  // had already freed and another open has taken since, names an old generation and frees
  // nothing.

  private static let indexBits = 20

  /// The handle of record `index` in its current generation.
  func handle(ofOpen index: Int) -> UInt64 {
    bytes.load(fromByteOffset: open(index) + 24, as: UInt64.self) << Self.indexBits
      | UInt64(index + 1)
  }

  /// The record a handle names, if it is allocated in that generation.
  func openIndex(ofHandle handle: UInt64) -> Int? {
    let index = Int(handle & (1 << Self.indexBits - 1)) - 1
    guard index >= 0, index < Int(header(3)),
      bytes.load(fromByteOffset: open(index) + 12, as: Int32.self) != Kind.free.rawValue,
      self.handle(ofOpen: index) == handle
    else { return nil }
    return index
  }

  private func open(_ index: Int) -> Int {
    Self.headerSize + Self.nodeCapacity * Self.nodeSize + index * Self.openSize
  }

  enum Kind: Int32 {
    case free = 0
    case file = 1
    case directory = 2
  }

  func allocateOpen(node: UInt64, flags: Int32, kind: Kind) -> Int? {
    let index: Int
    if case let free = header(4), free != 0 {
      index = Int(free - 1)
      setHeader(4, bytes.load(fromByteOffset: open(index) + 16, as: UInt64.self))
    } else {
      guard header(3) < Self.openCapacity else { return nil }
      index = Int(header(3))
      setHeader(3, UInt64(index + 1))
    }
    let generation = bytes.load(fromByteOffset: open(index) + 24, as: UInt64.self)
    bytes.storeBytes(of: generation + 1, toByteOffset: open(index) + 24, as: UInt64.self)
    bytes.storeBytes(of: node, toByteOffset: open(index), as: UInt64.self)
    bytes.storeBytes(of: flags, toByteOffset: open(index) + 8, as: Int32.self)
    bytes.storeBytes(of: kind.rawValue, toByteOffset: open(index) + 12, as: Int32.self)
    return index
  }

  func openRecord(_ index: Int) -> (node: UInt64, flags: Int32, kind: Kind)? {
    let kind = Kind(rawValue: bytes.load(fromByteOffset: open(index) + 12, as: Int32.self))
    guard let kind, kind != .free else { return nil }
    return (
      bytes.load(fromByteOffset: open(index), as: UInt64.self),
      bytes.load(fromByteOffset: open(index) + 8, as: Int32.self), kind
    )
  }

  func freeOpen(_ index: Int) {
    bytes.storeBytes(of: Kind.free.rawValue, toByteOffset: open(index) + 12, as: Int32.self)
    bytes.storeBytes(of: header(4), toByteOffset: open(index) + 16, as: UInt64.self)
    setHeader(4, UInt64(index + 1))
  }
}
