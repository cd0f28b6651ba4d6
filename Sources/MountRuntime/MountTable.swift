import CLinuxSupport
import Glibc
import MountConfig

/// One mount, as the supervisor needs to know it.
struct MountEntry: Equatable, Sendable {
  /// The kernel's unique mount ID (never reused) with fanotify; mountinfo's reused ID otherwise.
  var id: UInt64
  var parentID: UInt64
  /// As this process sees it (relative to its root), unescaped.
  var mountpoint: String
  /// `fuse`, `fuse.sshfs`, `tmpfs`, … (type and subtype joined as mountinfo shows them).
  var fsType: String
  var source: String
  /// A FUSE mount's `user_id` and `group_id`: who mounted it.
  var owner: MountOwner?
  /// The superblock's device; a FUSE mount's minor is its fusectl connection number.
  var deviceMajor: UInt32
  var deviceMinor: UInt32

  /// `fuse`, `fuse.NAME` or `fuseblk`: a mount served by a user-space daemon.
  var isFUSE: Bool {
    fsType == "fuse" || fsType == "fuseblk" || fsType.hasPrefix("fuse.")
      || fsType.hasPrefix("fuseblk.")
  }
}

/// The user and group a FUSE mount belongs to. Without `allow_other` the kernel lets only them
/// reach its daemon: for anyone else, root included, `statfs` succeeds without asking the
/// daemon (even a dead one) and every other access fails with EACCES.
struct MountOwner: Equatable, Sendable {
  var uid: uid_t
  var gid: gid_t

  /// Parses `user_id=N,group_id=N` out of a FUSE mount's super options. By UTF-8 code unit:
  /// this runs for every mount the table reads, a thousand at an upgrade.
  init?(superOptions: String) {
    var uid: uid_t?
    var gid: gid_t?
    for option in superOptions.utf8.split(separator: UInt8(ascii: ",")) {
      if option.starts(with: "user_id=".utf8) {
        uid = Self.number(option.dropFirst(8))
      } else if option.starts(with: "group_id=".utf8) {
        gid = Self.number(option.dropFirst(9))
      }
    }
    guard let uid, let gid else { return nil }
    self.uid = uid
    self.gid = gid
  }

  /// Decimal digits as a 32-bit id; nil for anything else.
  private static func number(_ digits: Substring.UTF8View.SubSequence) -> UInt32? {
    guard !digits.isEmpty else { return nil }
    var value: UInt32 = 0
    for digit in digits {
      guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit) else { return nil }
      let (times10, overflow) = value.multipliedReportingOverflow(by: 10)
      let (sum, overflow2) = times10.addingReportingOverflow(UInt32(digit - UInt8(ascii: "0")))
      guard !overflow, !overflow2 else { return nil }
      value = sum
    }
    return value
  }

  /// Makes the calling thread this owner, unless it already is; 0, or the errno why it cannot.
  /// Only for a thread of its own that ends afterwards: it cannot change back.
  func assumeOnThisThread() -> Int32 {
    guard uid != geteuid() || gid != getegid() else { return 0 }
    return mountsup_thread_assume_ids(uid, gid) == 0 ? 0 : errno
  }
}

enum MountChange: Equatable, Sendable {
  case attached(MountEntry)
  case detached(MountEntry)
}

/// The kernel's mount table, kept current incrementally, so that a change costs what changed
/// and a lookup costs O(1) however many mounts there are.
///
/// Two mechanisms. With fanotify mount events (Linux 6.15, CAP_SYS_ADMIN) each attach or detach
/// arrives with its unique mount ID and `statmount(2)` describes just that mount. Without them,
/// `/proc/self/mountinfo` signals POLLPRI on any change and is re-read and compared whole.
/// `MOUNTSUP_MOUNT_TABLE=mountinfo` in the environment forces the fallback (for its tests, and
/// for a kernel whose fanotify misbehaves); `=fanotify` insists on fanotify.
///
/// Not thread-safe: one event loop owns it.
final class MountTable {
  enum Mechanism: Sendable, CustomStringConvertible {
    case fanotify
    case mountinfo

    var description: String {
      switch self {
      case .fanotify: "fanotify mount events (FAN_MNT_ATTACH/DETACH) with statmount(2)"
      case .mountinfo: "mountinfo POLLPRI"
      }
    }
  }

  static let path = "/proc/self/mountinfo"

  let mechanism: Mechanism
  /// Watch it with epoll for `epollEvents`, then call `readChanges()`.
  var fd: Int32 { descriptor.raw }
  let descriptor: Descriptor
  /// EPOLLIN for fanotify, EPOLLPRI for mountinfo.
  let epollEvents: UInt32
  /// Why the fallback runs, for the log; nil with fanotify.
  let fallbackReason: String?

  /// What the log should say about how mount changes are followed.
  var summary: String {
    fallbackReason.map { "\(mechanism) (\($0))" } ?? mechanism.description
  }

  var entries: [UInt64: MountEntry] = [:]
  /// Mount IDs by mountpoint in attach order: what makes `mounts(at:)` O(1).
  var idsByMountpoint: [String: [UInt64]] = [:]
  /// Child mount IDs by parent: a moved mount's children change path without an event of their
  /// own.
  var childIDs: [UInt64: [UInt64]] = [:]
  /// statmount's answer; 8-byte aligned, grown on EOVERFLOW.
  var statmountBuffer = [UInt64](repeating: 0, count: 2048)
  var events = [mountsup_mount_event](repeating: mountsup_mount_event(), count: 256)
  /// The mountinfo fallback: a second open file of it whose own POLLPRI says whether anything
  /// changed since this table last read it (epoll consumes that of `fd`).
  var mountinfo: Descriptor?
  /// mountinfo's IDs in its order (attach order), and its lines, to skip parsing unchanged ones.
  var mountinfoOrder: [UInt64] = []
  var mountinfoLines: [UInt64: [UInt8]] = [:]
  var readBuffer: [UInt8] = []

  /// Fanotify if this kernel has mount events and this process may use them, else mountinfo;
  /// loads the whole table.
  /// - Parameter forced: this mechanism, whatever `MOUNTSUP_MOUNT_TABLE` says; fanotify throws
  ///   when it is unavailable.
  init(mechanism forced: Mechanism? = nil) throws {
    let environment = getenv("MOUNTSUP_MOUNT_TABLE").map { String(cString: $0) }
    let wanted = forced ?? (environment == "mountinfo" ? .mountinfo : nil)
    let insist = forced == .fanotify || (forced == nil && environment == "fanotify")
    var reason: String
    if wanted == .mountinfo {
      reason = forced == nil ? "forced by MOUNTSUP_MOUNT_TABLE=mountinfo" : "forced"
    } else {
      // Events first, then the list: a mount attached in between is in both, never in neither.
      let opened = mountsup_mount_events_open()
      if opened >= 0 {
        let events = Descriptor(opened)
        do {
          var buffer = [UInt64](repeating: 0, count: 2048)
          let snapshot = try Self.kernelSnapshot(buffer: &buffer)
          statmountBuffer = buffer
          descriptor = events
          mechanism = .fanotify
          epollEvents = EPOLLIN.rawValue
          fallbackReason = nil
          _ = apply(snapshot: snapshot)
          return
        } catch {
          if insist { throw error }
          reason = "\(error)"
        }
      } else {
        let code = errno
        if insist { throw RuntimeError(.mountTable, "fanotify mount events", errno: code) }
        switch code {
        case EINVAL: reason = "the kernel lacks fanotify mount events"
        case EPERM: reason = "fanotify mount events need CAP_SYS_ADMIN"
        default: reason = "fanotify mount events: \(errorText(code))"
        }
      }
    }
    descriptor = Descriptor(
      try system(.mountTable, "open \(Self.path)") { open(Self.path, O_RDONLY | O_CLOEXEC) })
    mountinfo = Descriptor(
      try system(.mountTable, "open \(Self.path)") { open(Self.path, O_RDONLY | O_CLOEXEC) })
    mechanism = .mountinfo
    epollEvents = EPOLLPRI.rawValue
    fallbackReason = reason
    readBuffer = [UInt8](repeating: 0, count: 262_144)
    _ = rereadMountinfo(force: true)
  }

  /// Fanotify mount events on `fd`, which the binary before an upgrade opened: the events of the
  /// gap are queued in it; the table is loaded anew.
  init(adoptingEvents fd: Int32) throws {
    mountsup_set_cloexec(fd, 1)
    descriptor = Descriptor(fd)
    mechanism = .fanotify
    epollEvents = EPOLLIN.rawValue
    fallbackReason = nil
    _ = apply(snapshot: try Self.kernelSnapshot(buffer: &statmountBuffer))
  }

  var count: Int { entries.count }

  func entry(id: UInt64) -> MountEntry? { entries[id] }

  /// Mounts at exactly this path, bottom first (the last one is what the path shows).
  func mounts(at mountpoint: String) -> [MountEntry] {
    guard let ids = idsByMountpoint[mountpoint] else { return [] }
    let mounts = ids.compactMap { entries[$0] }
    return mounts.count > 1 ? Self.stacked(mounts) : mounts
  }

  func fuseMounts(at mountpoint: String) -> [MountEntry] {
    mounts(at: mountpoint).filter(\.isFUSE)
  }

  /// Consumes what is pending on `fd` without blocking and returns the changes since the last
  /// call (none if nothing happened), already applied to the table.
  func readChanges() -> [MountChange] {
    switch mechanism {
    case .fanotify: readEvents()
    case .mountinfo: rereadMountinfo(force: false)
    }
  }

  // MARK: The index

  /// Makes the table `snapshot` (listmount's, in attach order) and returns the difference. A
  /// changed mount under the same ID is a detach and an attach.
  func apply(snapshot: [MountEntry]) -> [MountChange] {
    var present = Set<UInt64>(minimumCapacity: snapshot.count)
    var arriving: [MountEntry] = []
    var replaced = Set<UInt64>()
    for entry in snapshot where present.insert(entry.id).inserted {
      guard let known = entries[entry.id] else {
        arriving.append(entry)
        continue
      }
      if Self.sameMount(known, entry) {
        reparent(entry.id, to: entry.parentID)
      } else {
        arriving.append(entry)
        replaced.insert(entry.id)
      }
    }
    let departing = entries.keys.sorted().reversed().filter {
      !present.contains($0) || replaced.contains($0)
    }
    return commit(departing: departing, arriving: arriving)
  }

  /// Removes `departing` (top first), then inserts `arriving` (in attach order).
  func commit(departing: [UInt64], arriving: [MountEntry]) -> [MountChange] {
    var changes: [MountChange] = []
    changes.reserveCapacity(departing.count + arriving.count)
    for id in departing {
      if let old = remove(id) { changes.append(.detached(old)) }
    }
    for entry in arriving {
      insert(entry)
      changes.append(.attached(entry))
    }
    return changes
  }

  func insert(_ entry: MountEntry) {
    entries[entry.id] = entry
    idsByMountpoint[entry.mountpoint, default: []].append(entry.id)
    if entry.parentID != entry.id { childIDs[entry.parentID, default: []].append(entry.id) }
  }

  /// A mount's parent changes without an attach or detach when another goes beneath it.
  func reparent(_ id: UInt64, to parentID: UInt64) {
    guard var entry = entries[id], entry.parentID != parentID else { return }
    if var siblings = childIDs[entry.parentID] {
      siblings.removeAll { $0 == id }
      childIDs[entry.parentID] = siblings.isEmpty ? nil : siblings
    }
    entry.parentID = parentID
    entries[id] = entry
    if parentID != id { childIDs[parentID, default: []].append(id) }
  }

  /// Equal but for the parent.
  static func sameMount(_ one: MountEntry, _ other: MountEntry) -> Bool {
    var other = other
    other.parentID = one.parentID
    return one == other
  }

  /// Removes a mount; its children's list stays, for a move's re-insert.
  func remove(_ id: UInt64) -> MountEntry? {
    guard let entry = entries.removeValue(forKey: id) else { return nil }
    if var ids = idsByMountpoint[entry.mountpoint] {
      ids.removeAll { $0 == id }
      idsByMountpoint[entry.mountpoint] = ids.isEmpty ? nil : ids
    }
    if var siblings = childIDs[entry.parentID] {
      siblings.removeAll { $0 == id }
      childIDs[entry.parentID] = siblings.isEmpty ? nil : siblings
    }
    return entry
  }

  /// Mounts stacked at one path, bottom first: a mount whose parent is another mount here is
  /// above it; otherwise attach order decides.
  static func stacked(_ mounts: [MountEntry]) -> [MountEntry] {
    var remaining = mounts
    var result: [MountEntry] = []
    result.reserveCapacity(mounts.count)
    while !remaining.isEmpty {
      let top = result.last?.id
      let next =
        remaining.firstIndex { top != nil && $0.parentID == top }
        ?? remaining.firstIndex { entry in
          !remaining.contains { $0.id == entry.parentID && $0.id != entry.id }
        } ?? 0
      result.append(remaining.remove(at: next))
    }
    return result
  }
}
