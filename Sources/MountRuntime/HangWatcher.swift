import CLinuxSupport
import Glibc
import Synchronization

/// The periodic hang check: one thread that, once per period, reads fusectl's `waiting` count
/// of every ready mount with a `hang_timeout` and reports the mounts whose server has requests
/// waiting. The loop starts a probe only for those; idle, healthy mounts cost one wake-up of this
/// thread per period in all, never one per mount, and nothing at all on the loop.
///
/// The period is a quarter of the shortest `hang_timeout` watched, between 250 ms and 15 s (15 s
/// with the default of 60 s): a hang is found within `hang_timeout` plus one period.
final class HangWatcher: @unchecked Sendable {
  struct Report: Equatable {
    var name: String
    var connection: UInt32
    var waiting: Int
  }

  static let shortestPeriod: Duration = .milliseconds(250)
  static let longestPeriod: Duration = .seconds(15)

  static func period(for timeout: Duration) -> Duration {
    min(max(timeout / 4, shortestPeriod), longestPeriod)
  }

  fileprivate struct Watched {
    var entries: [String: (connection: UInt32, timeout: Duration)] = [:]
    /// How many entries have each timeout: the shortest is found without a walk over all.
    var timeouts: [Duration: Int] = [:]

    var period: Duration? { timeouts.keys.min().map(HangWatcher.period(for:)) }
  }

  /// The read end the loop watches (`.hangWatcher`).
  let reports: Descriptor
  private let reportWriter: Descriptor
  /// Wakes the thread when the period got shorter (or the first mount is watched).
  private let wakeup: Descriptor
  private let wakeupWriter: Descriptor
  private let watched = Mutex(Watched())
  private var pending: [UInt8] = []

  init() throws(RuntimeError) {
    let (readEnd, writeEnd) = try Descriptor.pipe()
    try readEnd.setNonBlocking()
    reports = readEnd
    reportWriter = writeEnd
    (wakeup, wakeupWriter) = try Descriptor.pipe()
    try wakeup.setNonBlocking()
    try wakeupWriter.setNonBlocking()
    try startDetachedThread { [self] in run() }
  }

  /// Checks `name`'s connection from now on (again, with a new connection or timeout).
  func watch(_ name: String, connection: UInt32, timeout: Duration) {
    let shortened = watched.withLock { state -> Bool in
      let before = state.period
      if let old = state.entries[name] {
        if old.connection == connection, old.timeout == timeout { return false }
        state.remove(old.timeout)
      }
      state.entries[name] = (connection, timeout)
      state.timeouts[timeout, default: 0] += 1
      return before.map { state.period! < $0 } ?? true
    }
    if shortened {
      // A full pipe already holds a wake-up.
      _ = write(wakeupWriter.raw, "w", 1)
    }
  }

  func unwatch(_ name: String) {
    watched.withLock { state in
      guard let old = state.entries.removeValue(forKey: name) else { return }
      state.remove(old.timeout)
    }
  }

  /// The reports that arrived.
  func readReports() -> [Report] {
    var buffer = [UInt8](repeating: 0, count: 4096)
    while let got = buffer.withUnsafeMutableBytes({ try? reports.read(into: $0) }) ?? nil, got > 0 {
      pending += buffer.prefix(got)
    }
    var found: [Report] = []
    while let end = pending.firstIndex(of: 0) {
      let fields = pending[..<end].split(separator: UInt8(ascii: " "), maxSplits: 2)
      pending.removeSubrange(...end)
      guard fields.count == 3,
        let connection = UInt32(String(decoding: fields[0], as: UTF8.self)),
        let waiting = Int(String(decoding: fields[1], as: UTF8.self))
      else { continue }
      found.append(
        Report(
          name: String(decoding: fields[2], as: UTF8.self), connection: connection,
          waiting: waiting))
    }
    return found
  }

  /// The thread: sleeps until the next check (forever while nothing is watched), then reads
  /// each watched connection's `waiting` and reports those above zero.
  private func run() {
    let clock = ContinuousClock()
    var nextCheck: ContinuousClock.Instant?
    while true {
      guard let period = watched.withLock({ $0.period }) else {
        nextCheck = nil
        sleep(until: nil)
        continue
      }
      let now = clock.now
      let due = min(nextCheck ?? now + period, now + period)
      nextCheck = due
      guard now >= due else {
        sleep(until: due)
        continue
      }
      let entries = watched.withLock { Array($0.entries) }
      for (name, watched) in entries {
        guard let waiting = FuseControl.waiting(connection: watched.connection), waiting > 0
        else { continue }
        let record = Array("\(watched.connection) \(waiting) \(name)".utf8) + [0]
        _ = record.withUnsafeBytes { bytes in
          retryingOnInterrupt { write(reportWriter.raw, bytes.baseAddress, bytes.count) }
        }
      }
      nextCheck = clock.now + period
    }
  }

  /// Blocks until `deadline` (nil: forever) or a wake-up.
  private func sleep(until deadline: ContinuousClock.Instant?) {
    var poller = pollfd(fd: wakeup.raw, events: Int16(POLLIN), revents: 0)
    var timeout: Int32 = -1
    if let deadline {
      let left = ContinuousClock.now.duration(to: deadline) / .milliseconds(1)
      timeout = Int32(clamping: Int64(max(left.rounded(.up), 0)))
    }
    if poll(&poller, 1, timeout) > 0 {
      var drained = [UInt8](repeating: 0, count: 64)
      while read(wakeup.raw, &drained, drained.count) > 0 {}
    }
  }
}

extension HangWatcher.Watched {
  fileprivate mutating func remove(_ timeout: Duration) {
    timeouts[timeout, default: 1] -= 1
    if timeouts[timeout] == 0 { timeouts[timeout] = nil }
  }
}
