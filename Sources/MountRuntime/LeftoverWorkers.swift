import Glibc

/// Workers that an earlier run of a supervisor started and that outlived it (one that ignored
/// its death signal, say). Every worker carries `MOUNTSUP_MOUNTPOINT` in its environment, so a
/// process that serves this mountpoint but is not a child of this supervisor is such a leftover.
enum LeftoverWorkers {
  /// The pids of processes whose environment names `mountpoint` as theirs and whose parent is
  /// no running supervisor (a worker of another live mountsupd is that one's business).
  static func serving(_ mountpoint: String) -> [pid_t] {
    guard let directory = opendir("/proc") else { return [] }
    defer { closedir(directory) }
    let needle = Array("MOUNTSUP_MOUNTPOINT=\(mountpoint)".utf8)
    let me = getpid()
    var found: [pid_t] = []
    while let entry = readdir(directory) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) {
        String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
      }
      guard let pid = pid_t(name), pid != me, let parent = parent(of: pid), parent != me,
        !isSupervisor(parent), environment(of: pid).contains(where: { $0.elementsEqual(needle) })
      else { continue }
      found.append(pid)
    }
    return found
  }

  private static func environment(of pid: pid_t) -> [ArraySlice<UInt8>] {
    let fd = open("/proc/\(pid)/environ", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16384)
    while case let got = read(fd, &chunk, chunk.count), got > 0 { data += chunk.prefix(got) }
    return data.split(separator: 0)
  }

  private static func isSupervisor(_ pid: pid_t) -> Bool {
    let fd = open("/proc/\(pid)/comm", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 64)
    let got = read(fd, &buffer, buffer.count)
    return got > 0 && String(decoding: buffer.prefix(got), as: UTF8.self) == "mountsupd\n"
  }

  private static func parent(of pid: pid_t) -> pid_t? {
    let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 1024)
    let got = read(fd, &buffer, buffer.count)
    guard got > 0, let close = buffer.prefix(got).lastIndex(of: UInt8(ascii: ")")) else {
      return nil
    }
    // After "pid (comm)": state, then the parent's pid.
    let fields = buffer[(close + 1)..<got].split(separator: UInt8(ascii: " "))
    return fields.count > 1 ? pid_t(String(decoding: fields[1], as: UTF8.self)) : nil
  }
}
