import CLinuxSupport
import Glibc

/// One line of `/proc/self/mountinfo`.
struct MountEntry: Equatable, Sendable {
  var id: Int
  var parentID: Int
  var mountpoint: String
  var fsType: String
  var source: String
  /// A FUSE mount's `user_id` and `group_id`: who mounted it.
  var owner: MountOwner?

  /// `fuse`, `fuse.NAME` or `fuseblk`: a mount served by a user-space daemon.
  var isFUSE: Bool { fsType == "fuse" || fsType == "fuseblk" || fsType.hasPrefix("fuse.") }
}

/// The user and group a FUSE mount belongs to. Without `allow_other` the kernel lets only them
/// reach its daemon: for anyone else, root included, `statfs` succeeds without asking the
/// daemon (even a dead one) and every other access fails with EACCES.
struct MountOwner: Equatable, Sendable {
  var uid: uid_t
  var gid: gid_t

  /// Parses `user_id=N,group_id=N` out of a FUSE mount's super options.
  init?(superOptions: String) {
    var uid: uid_t?
    var gid: gid_t?
    for option in superOptions.split(separator: ",") {
      if option.hasPrefix("user_id=") { uid = uid_t(option.dropFirst(8)) }
      if option.hasPrefix("group_id=") { gid = gid_t(option.dropFirst(9)) }
    }
    guard let uid, let gid else { return nil }
    self.uid = uid
    self.gid = gid
  }

  /// Makes the calling thread this owner, unless it already is; 0, or the errno why it cannot.
  /// Only for a thread of its own that ends afterwards: it cannot change back.
  func assumeOnThisThread() -> Int32 {
    guard uid != geteuid() || gid != getegid() else { return 0 }
    return mountsup_thread_assume_ids(uid, gid) == 0 ? 0 : errno
  }
}

/// The kernel's mount table, as this process sees it.
struct MountTable: Sendable {
  var entries: [MountEntry]

  static let path = "/proc/self/mountinfo"

  /// Reads and parses the whole table through `fd` (kept open so that POLLPRI keeps working).
  static func read(from fd: Int32) -> MountTable {
    lseek(fd, 0, SEEK_SET)
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
      let got = retryingOnInterrupt { Glibc.read(fd, &chunk, chunk.count) }
      if got <= 0 { break }
      data.append(contentsOf: chunk.prefix(got))
    }
    return MountTable(parsing: data)
  }

  init(entries: [MountEntry]) {
    self.entries = entries
  }

  /// Format: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`.
  init(parsing data: [UInt8]) {
    var entries: [MountEntry] = []
    for line in data.split(separator: UInt8(ascii: "\n")) {
      let fields = line.split(separator: UInt8(ascii: " "))
      guard fields.count >= 10, let separator = fields.firstIndex(of: [UInt8(ascii: "-")]),
        separator + 2 < fields.endIndex,
        let id = Int(String(decoding: fields[0], as: UTF8.self)),
        let parent = Int(String(decoding: fields[1], as: UTF8.self))
      else { continue }
      let superOptions = separator + 3 < fields.endIndex ? unescape(fields[separator + 3]) : ""
      entries.append(
        MountEntry(
          id: id, parentID: parent, mountpoint: unescape(fields[4]),
          fsType: unescape(fields[separator + 1]), source: unescape(fields[separator + 2]),
          owner: MountOwner(superOptions: superOptions)))
    }
    self.entries = entries
  }

  /// Mounts at exactly this path, bottom first (the last one is what the path shows).
  func mounts(at mountpoint: String) -> [MountEntry] {
    entries.filter { $0.mountpoint == mountpoint }
  }

  func fuseMounts(at mountpoint: String) -> [MountEntry] {
    mounts(at: mountpoint).filter(\.isFUSE)
  }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
private func unescape(_ field: ArraySlice<UInt8>) -> String {
  guard field.contains(UInt8(ascii: "\\")) else { return String(decoding: field, as: UTF8.self) }
  var bytes: [UInt8] = []
  var index = field.startIndex
  while index < field.endIndex {
    if field[index] == UInt8(ascii: "\\"), index + 3 < field.endIndex,
      let value = UInt8(String(decoding: field[(index + 1)...(index + 3)], as: UTF8.self), radix: 8)
    {
      bytes.append(value)
      index += 4
    } else {
      bytes.append(field[index])
      index += 1
    }
  }
  return String(decoding: bytes, as: UTF8.self)
}
