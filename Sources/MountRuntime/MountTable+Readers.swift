import CLinuxSupport
import Glibc
import MountConfig

/// The two ways the table learns of changes: fanotify mount events with statmount(2), and
/// mountinfo re-read on POLLPRI.
extension MountTable {
  // MARK: fanotify and statmount

  func readEvents() -> [MountChange] {
    var changes: [MountChange] = []
    let capacity = events.count
    while true {
      let got = mountsup_mount_events_read(fd, &events, capacity)
      guard got > 0 else { break }
      for event in events.prefix(got) {
        if event.mask & MOUNTSUP_MOUNT_OVERFLOW != 0 {
          // Events were lost: only a full comparison tells what changed. Should listmount fail,
          // the events still queued keep the table as current as they can.
          if let snapshot = try? Self.kernelSnapshot(buffer: &statmountBuffer) {
            changes += apply(snapshot: snapshot)
          }
          continue
        }
        let id = event.mount_id
        let attached = event.mask & MOUNTSUP_MOUNT_ATTACHED != 0
        let detached = event.mask & MOUNTSUP_MOUNT_DETACHED != 0
        if detached, let old = remove(id) { changes.append(.detached(old)) }
        // Known already when the initial load or a reload saw it after the event was queued.
        if attached, entries[id] == nil,
          let new = Self.describe(id, buffer: &statmountBuffer)
        {
          let there = idsByMountpoint[new.mountpoint] ?? []
          insert(new)
          changes.append(.attached(new))
          // Slipped beneath them (MOVE_MOUNT_BENEATH): the mounts there now have it as their
          // parent, and no event says so.
          for other in there where entries[other]?.parentID == new.parentID {
            if let fresh = Self.describe(other, buffer: &statmountBuffer) {
              reparent(other, to: fresh.parentID)
            }
          }
        }
        // A move reports both, for the moved mount alone; those below it moved too.
        if attached, detached { changes += refreshDescendants(of: id) }
      }
      // Fewer than fit: the queue is empty; spare the read that would say EAGAIN.
      if got < capacity { break }
    }
    return changes
  }

  /// listmount + statmount of every mount below this root, in attach order.
  static func kernelSnapshot(buffer: inout [UInt64]) throws -> [MountEntry] {
    var snapshot: [MountEntry] = []
    var ids = [UInt64](repeating: 0, count: 512)
    var after: UInt64 = 0
    while true {
      let got = mountsup_listmount(after, &ids, ids.count)
      guard got >= 0 else { throw RuntimeError(.mountTable, "listmount", errno: errno) }
      for id in ids.prefix(got) {
        if let entry = describe(id, buffer: &buffer) { snapshot.append(entry) }
      }
      if got < ids.count { return snapshot }
      after = ids[got - 1]
    }
  }

  /// One mount through statmount(2); nil when it is gone already or outside this root.
  static func describe(_ id: UInt64, buffer: inout [UInt64]) -> MountEntry? {
    while true {
      var code: Int32 = 0
      let entry: MountEntry? = buffer.withUnsafeMutableBytes { raw in
        var info = mountsup_mount_info()
        code = mountsup_statmount(id, raw.baseAddress, raw.count, &info)
        // A mount this process cannot reach from its root has no mountpoint; mountinfo omits
        // it too.
        guard code == 0, info.reported & MOUNTSUP_STATMOUNT_MNT_POINT != 0 else { return nil }
        let type = String(cString: info.fs_type)
        let subtype = String(cString: info.fs_subtype)
        return MountEntry(
          id: info.mount_id, parentID: info.parent_id,
          mountpoint: String(cString: info.mountpoint),
          fsType: subtype.isEmpty ? type : type + "." + subtype,
          source: String(cString: info.source),
          owner: MountOwner(superOptions: String(cString: info.options)),
          deviceMajor: info.device_major, deviceMinor: info.device_minor)
      }
      // Paths and options are bounded; a buffer of 1 MiB that is still too small never grows.
      guard code == EOVERFLOW, buffer.count < 131_072 else { return entry }
      buffer += [UInt64](repeating: 0, count: buffer.count)
    }
  }

  /// After a move: the mounts below the moved one now have other mountpoints.
  func refreshDescendants(of id: UInt64) -> [MountChange] {
    var changes: [MountChange] = []
    var queue = childIDs[id] ?? []
    var index = 0
    while index < queue.count {
      let child = queue[index]
      index += 1
      queue += childIDs[child] ?? []
      guard let old = entries[child] else { continue }
      let new = Self.describe(child, buffer: &statmountBuffer)
      guard new != old else { continue }
      _ = remove(child)
      changes.append(.detached(old))
      if let new {
        insert(new)
        changes.append(.attached(new))
      }
    }
    return changes
  }

  // MARK: mountinfo

  /// Re-reads mountinfo if it changed since the last read (or `force`) and applies the
  /// difference. A line equal to the last read's is the same mount and is not parsed again.
  func rereadMountinfo(force: Bool) -> [MountChange] {
    guard let mountinfo else { return [] }
    var poller = pollfd(fd: mountinfo.raw, events: Int16(POLLPRI), revents: 0)
    let changed = poll(&poller, 1, 0) > 0 && poller.revents & Int16(POLLPRI) != 0
    guard changed || force else { return [] }
    let length = readWhole(mountinfo.raw)
    var order: [UInt64] = []
    var lines: [UInt64: [UInt8]] = [:]
    var arriving: [MountEntry] = []
    var replaced = Set<UInt64>()
    var unchanged = 0
    order.reserveCapacity(entries.count + 16)
    lines.reserveCapacity(entries.count + 16)
    readBuffer.withUnsafeBufferPointer { buffer in
      guard let base = buffer.baseAddress else { return }
      var start = 0
      while start < length {
        let newline = memchr(base + start, Int32(UInt8(ascii: "\n")), length - start)
        let end =
          newline.map { UnsafePointer($0.assumingMemoryBound(to: UInt8.self)) - base } ?? length
        let line = UnsafeBufferPointer(start: base + start, count: end - start)
        start = end + 1
        guard let id = Self.leadingNumber(line), lines[id] == nil else { continue }
        if let previous = mountinfoLines[id], entries[id] != nil, previous.count == line.count,
          memcmp(previous, line.baseAddress!, line.count) == 0
        {
          unchanged += 1
          order.append(id)
          lines[id] = previous
          continue
        }
        guard let parsed = Self.parseMountinfoLine(ArraySlice(line)) else { continue }
        order.append(id)
        lines[id] = Array(line)
        if let known = entries[id] {
          // Options changed, or a mount went beneath it: the same mount for this table.
          if Self.sameMount(known, parsed) {
            reparent(id, to: parsed.parentID)
            unchanged += 1
            continue
          }
          replaced.insert(id)
        }
        arriving.append(parsed)
      }
    }
    // Only a scan of the old order finds what left, and only when something did.
    var departing: [UInt64] = []
    if unchanged + replaced.count < entries.count || !replaced.isEmpty {
      departing = mountinfoOrder.reversed().filter { lines[$0] == nil || replaced.contains($0) }
    }
    mountinfoLines = lines
    mountinfoOrder = order
    return commit(departing: departing, arriving: arriving)
  }

  /// Reads `fd` from the start to EOF into `readBuffer`, growing it; the length.
  func readWhole(_ fd: Int32) -> Int {
    var length = 0
    lseek(fd, 0, SEEK_SET)
    while true {
      if readBuffer.count - length < 65536 {
        readBuffer += [UInt8](repeating: 0, count: readBuffer.count)
      }
      let got = readBuffer.withUnsafeMutableBytes { buffer in
        retryingOnInterrupt {
          Glibc.read(fd, buffer.baseAddress! + length, buffer.count - length)
        }
      }
      if got <= 0 { return length }
      length += got
    }
  }

  static func leadingNumber(_ line: UnsafeBufferPointer<UInt8>) -> UInt64? {
    var value: UInt64 = 0
    var digits = 0
    for byte in line {
      guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { break }
      value = value &* 10 &+ UInt64(byte - UInt8(ascii: "0"))
      digits += 1
    }
    return digits > 0 ? value : nil
  }

  /// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`; a
  /// field may be empty (a source of ""), so empty fields count.
  static func parseMountinfoLine(_ line: ArraySlice<UInt8>) -> MountEntry? {
    let fields = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
    guard fields.count >= 10,
      let separator = fields[6...].firstIndex(where: { $0.elementsEqual([UInt8(ascii: "-")]) }),
      separator + 2 < fields.endIndex,
      let id = UInt64(String(decoding: fields[0], as: UTF8.self)),
      let parent = UInt64(String(decoding: fields[1], as: UTF8.self))
    else { return nil }
    let device = fields[2].split(separator: UInt8(ascii: ":"))
    guard device.count == 2, let major = UInt32(String(decoding: device[0], as: UTF8.self)),
      let minor = UInt32(String(decoding: device[1], as: UTF8.self))
    else { return nil }
    let superOptions =
      separator + 3 < fields.endIndex ? unescapeMountinfoField(fields[separator + 3]) : ""
    return MountEntry(
      id: id, parentID: parent, mountpoint: unescapeMountinfoField(fields[4]),
      fsType: unescapeMountinfoField(fields[separator + 1]),
      source: unescapeMountinfoField(fields[separator + 2]),
      owner: MountOwner(superOptions: superOptions), deviceMajor: major, deviceMinor: minor)
  }
}
