/// The backing files a worker registered for FUSE passthrough, kept in the kit's part of the
/// ``FUSEPersistentState`` so that a successor knows them: backing ids live on the connection,
/// and the kernel refuses a second backing file for a node that still has files open on the
/// first (the successor must reuse the id), and keeps every id until it is closed.
///
/// One record per open file that passes through: node id, handle, backing id. Layout (native
/// byte order): a header page (magic, whether passthrough was negotiated, records used, first
/// free record + 1), then `capacity` records of 32 bytes (node, handle, backing id, live flag,
/// next free). A record is filled before it is marked live and unmarked before it is freed, so
/// a worker killed half-way leaves at worst a record nobody uses, whose backing id then stays
/// registered until the mount ends.
struct PassthroughRecords: @unchecked Sendable {
  static let capacity = 1 << 18
  static let recordSize = 32
  static let headerSize = 4096
  static let size = headerSize + capacity * recordSize
  private static let magic: UInt64 = 0x3130_4854_5350_4B4D  // "MKPSTH01"

  let bytes: UnsafeMutableRawBufferPointer

  /// Prepares new, zeroed memory.
  static func format(_ bytes: UnsafeMutableRawBufferPointer) {
    bytes.storeBytes(of: magic, toByteOffset: 0, as: UInt64.self)
  }

  static func isFormatted(_ bytes: UnsafeRawBufferPointer) -> Bool {
    bytes.count >= size && bytes.load(fromByteOffset: 0, as: UInt64.self) == magic
  }

  /// Whether the worker that answered INIT negotiated passthrough with the kernel.
  var isNegotiated: Bool {
    get { header(1) != 0 }
    nonmutating set { setHeader(1, newValue ? 1 : 0) }
  }

  private func header(_ index: Int) -> UInt64 {
    bytes.load(fromByteOffset: index * 8, as: UInt64.self)
  }

  private func setHeader(_ index: Int, _ value: UInt64) {
    bytes.storeBytes(of: value, toByteOffset: index * 8, as: UInt64.self)
  }

  private func offset(_ index: Int) -> Int { Self.headerSize + index * Self.recordSize }

  /// A live record of `node`'s open file `handle` on `backingID`; nil when the table is full.
  func allocate(node: UInt64, handle: UInt64, backingID: Int32) -> Int? {
    let index: Int
    if case let free = header(3), free != 0 {
      index = Int(free - 1)
      setHeader(3, bytes.load(fromByteOffset: offset(index) + 24, as: UInt64.self))
    } else {
      guard header(2) < Self.capacity else { return nil }
      index = Int(header(2))
      setHeader(2, UInt64(index + 1))
    }
    let base = offset(index)
    bytes.storeBytes(of: node, toByteOffset: base, as: UInt64.self)
    bytes.storeBytes(of: handle, toByteOffset: base + 8, as: UInt64.self)
    bytes.storeBytes(of: backingID, toByteOffset: base + 16, as: Int32.self)
    bytes.storeBytes(of: 1, toByteOffset: base + 20, as: UInt32.self)
    return index
  }

  func free(_ index: Int) {
    let base = offset(index)
    bytes.storeBytes(of: 0, toByteOffset: base + 20, as: UInt32.self)
    bytes.storeBytes(of: header(3), toByteOffset: base + 24, as: UInt64.self)
    setHeader(3, UInt64(index + 1))
  }

  /// The live records, for a successor: (record, node, handle, backing id).
  var live: [(index: Int, node: UInt64, handle: UInt64, backingID: Int32)] {
    (0..<Int(header(2))).compactMap { index in
      let base = offset(index)
      guard bytes.load(fromByteOffset: base + 20, as: UInt32.self) != 0 else { return nil }
      return (
        index, bytes.load(fromByteOffset: base, as: UInt64.self),
        bytes.load(fromByteOffset: base + 8, as: UInt64.self),
        bytes.load(fromByteOffset: base + 16, as: Int32.self)
      )
    }
  }
}
