import CFuse3
import Glibc

/// The reply buffer of one readdir or readdirplus request, filled entry by entry.
///
/// Each entry carries the offset of the *next* entry: the kernel passes it back as the `offset`
/// of the following request to continue the listing, so it must be stable (for example a
/// `telldir` cookie or an index). Offset 0 always means "from the start".
public struct FUSEDirectoryBuffer: ~Copyable {
  let request: fuse_req_t
  let base: UnsafeMutablePointer<CChar>
  let capacity: Int
  /// Bytes filled so far.
  public private(set) var count: Int = 0

  init(request: fuse_req_t, capacity: Int) {
    self.request = request
    self.capacity = capacity
    base = .allocate(capacity: max(capacity, 1))
  }

  deinit { base.deallocate() }

  /// Whether no entry has been added yet.
  public var isEmpty: Bool { count == 0 }

  /// Adds a readdir entry; `false` (and nothing added) when it does not fit: stop listing there.
  /// `type` is the file type in `st_mode` form (`S_IFDIR`, ...), or 0 if unknown.
  public mutating func add(
    name: UnsafePointer<CChar>, inode: UInt64, type: mode_t, nextOffset: Int64
  ) -> Bool {
    var attributes = Glibc.stat()
    attributes.st_ino = ino_t(inode)
    attributes.st_mode = type
    let needed = fuse_add_direntry(
      request, base + count, capacity - count, name, &attributes, off_t(nextOffset))
    guard needed <= capacity - count else { return false }
    count += needed
    return true
  }

  /// ``add(name:inode:type:nextOffset:)`` for a Swift string.
  public mutating func add(name: String, inode: UInt64, type: mode_t, nextOffset: Int64) -> Bool {
    name.withCString { add(name: $0, inode: inode, type: type, nextOffset: nextOffset) }
  }

  /// Adds a readdirplus entry; `false` (and nothing added) when it does not fit.
  ///
  /// An added entry with a non-zero inode counts as a lookup, exactly like a reply to lookup.
  /// When this returns `false` the entry was not sent, so a lookup count taken for it must be
  /// given back with ``FUSEFileSystem/forget(inode:lookups:)``. For `.` and `..` pass an entry with inode 0 or any attributes: the kernel
  /// ignores them and does not count them.
  public mutating func addPlus(name: UnsafePointer<CChar>, entry: FUSEEntry, nextOffset: Int64)
    -> Bool
  {
    var parameter = entry.parameter
    let needed = fuse_add_direntry_plus(
      request, base + count, capacity - count, name, &parameter, off_t(nextOffset))
    guard needed <= capacity - count else { return false }
    count += needed
    return true
  }

  /// ``addPlus(name:entry:nextOffset:)`` for a Swift string.
  public mutating func addPlus(name: String, entry: FUSEEntry, nextOffset: Int64) -> Bool {
    name.withCString { addPlus(name: $0, entry: entry, nextOffset: nextOffset) }
  }
}
