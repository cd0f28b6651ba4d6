import Glibc

/// One line of /proc/self/mountinfo: what the tests check the kernel's word against.
public struct MountInfoEntry: Equatable {
  /// The mount id; the kernel hands a freed one out again.
  public var id: Int
  public var mountpoint: String
  public var fsType: String
  /// The filesystem's own options (`user_id=…,group_id=…` for FUSE).
  public var superOptions: String

  /// A FUSE mount (`fuse` or `fuse.NAME`), not the `fusectl` control filesystem.
  public var isFUSE: Bool { fsType == "fuse" || fsType.hasPrefix("fuse.") }
}

/// The mount table of this process's namespace, in the kernel's order (mostly that of mounting).
public func mountTable() -> [MountInfoEntry] {
  // Read to EOF by hand: procfs files report a size of 0.
  let fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
  guard fd >= 0 else { return [] }
  defer { close(fd) }
  var bytes: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 65536)
  while case let count = read(fd, &chunk, chunk.count), count > 0 { bytes += chunk.prefix(count) }
  return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line in
    let fields = line.split(separator: " ", omittingEmptySubsequences: false)
    guard let dash = fields.firstIndex(of: "-"), dash > 4, dash + 3 < fields.count,
      let id = Int(fields[0])
    else { return nil }
    return MountInfoEntry(
      id: id, mountpoint: unescapeMountinfo(fields[4]), fsType: String(fields[dash + 1]),
      superOptions: String(fields[dash + 3]))
  }
}

/// The topmost FUSE mount at `path`, if there is one.
public func fuseMount(at path: String) -> MountInfoEntry? {
  mountTable().last { $0.mountpoint == path && $0.isFUSE }
}

/// A mountinfo field with the kernel's octal escapes (`\040` for a space, …) undone.
private func unescapeMountinfo(_ field: Substring) -> String {
  var bytes: [UInt8] = []
  var rest = Array(field.utf8)[...]
  while let byte = rest.popFirst() {
    if byte == UInt8(ascii: "\\"), rest.count >= 3,
      let value = UInt8(String(decoding: rest.prefix(3), as: UTF8.self), radix: 8)
    {
      bytes.append(value)
      rest = rest.dropFirst(3)
    } else {
      bytes.append(byte)
    }
  }
  return String(decoding: bytes, as: UTF8.self)
}
