import Glibc

/// Who serves a mountpoint, found in `/proc` without touching the mount (whose server may hang).
///
/// Every worker, and every helper it starts (sshfs's ssh), carries `MOUNTSUP_MOUNTPOINT` and
/// `MOUNTSUP_SUPERVISOR` (the supervisor's pid and start time) in its environment. A process
/// whose supervisor no longer runs is a leftover of an earlier run, ours to end; one whose
/// supervisor runs belongs to that supervisor and is never touched.
enum LeftoverWorkers {
  /// The processes serving `mountpoint` that belong to no running supervisor, and the running
  /// supervisors other than this one that serve it.
  struct Finding: Equatable {
    var leftovers: [pid_t] = []
    var otherSupervisors: [pid_t] = []
  }

  /// This process as workers name it: "PID:START", the start time in clock ticks since boot,
  /// so that a recycled pid is never taken for a live supervisor.
  static let identity: String = "\(getpid()):\(startTime(of: getpid()) ?? 0)"

  static func serving(_ mountpoint: String) -> Finding {
    guard let directory = opendir("/proc") else { return Finding() }
    defer { closedir(directory) }
    let needle = "MOUNTSUP_MOUNTPOINT=\(mountpoint)"
    let me = getpid()
    var finding = Finding()
    while let entry = readdir(directory) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) {
        String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
      }
      guard let pid = pid_t(name), pid != me else { continue }
      let variables = environment(of: pid)
      guard variables.contains(needle) else { continue }
      let supervisor = variables.first { $0.hasPrefix("MOUNTSUP_SUPERVISOR=") }
        .map { String($0.dropFirst("MOUNTSUP_SUPERVISOR=".count)) }
      switch supervisor {
      case identity?:
        continue  // one of ours, on its way out
      case let other?:
        let fields = other.split(separator: ":")
        if fields.count == 2, let owner = pid_t(fields[0]),
          startTime(of: owner).map(String.init) == String(fields[1])
        {
          if !finding.otherSupervisors.contains(owner) { finding.otherSupervisors.append(owner) }
        } else {
          finding.leftovers.append(pid)
        }
      case nil:
        // A worker of a release that did not name its supervisor: judged by its parent.
        guard let parent = parent(of: pid), parent != me else { continue }
        if isSupervisor(parent) {
          if !finding.otherSupervisors.contains(parent) { finding.otherSupervisors.append(parent) }
        } else {
          finding.leftovers.append(pid)
        }
      }
    }
    return finding
  }

  private static func environment(of pid: pid_t) -> [String] {
    read("/proc/\(pid)/environ").split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
  }

  private static func isSupervisor(_ pid: pid_t) -> Bool {
    read("/proc/\(pid)/comm") == Array("mountsupd\n".utf8)
  }

  /// Fields of `/proc/PID/stat` after "pid (comm)": state is the first.
  private static func statFields(of pid: pid_t) -> [Substring]? {
    let bytes = read("/proc/\(pid)/stat")
    guard let close = bytes.lastIndex(of: UInt8(ascii: ")")) else { return nil }
    return String(decoding: bytes[(close + 1)...], as: UTF8.self).split(separator: " ")
  }

  private static func parent(of pid: pid_t) -> pid_t? {
    statFields(of: pid).flatMap { $0.count > 1 ? pid_t($0[1]) : nil }
  }

  /// `starttime`, field 22 of `/proc/PID/stat`.
  static func startTime(of pid: pid_t) -> UInt64? {
    statFields(of: pid).flatMap { $0.count > 19 ? UInt64($0[19]) : nil }
  }

  private static func read(_ path: String) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16384)
    while case let got = retryingOnInterrupt({ Glibc.read(fd, &chunk, chunk.count) }), got > 0 {
      data += chunk.prefix(got)
    }
    return data
  }
}
