import Glibc
import Logging
import MountCore

/// `[supervisor] metrics_file`: the metrics kept in a file for node_exporter's textfile
/// collector.
///
/// The file is replaced whole (written beside it, then renamed over it), so a reader never sees
/// half of it. It is rewritten only when something it shows changed, and at most once per
/// ``minimumInterval``: while mounts start by the thousand, one exposition per second rather
/// than one per loop turn; while nothing happens, no write and no timer at all. A write is a
/// few kilobytes to a local file (usually tmpfs); it is not synced, since a reader after a crash
/// finds either the old file or the new one, and the daemon rewrites it when it starts.
final class MetricsFile {
  static let minimumInterval: Duration = .seconds(1)

  private(set) var path: String
  private let logger: Logger
  /// Something changed since the last write (true at first: the file is written at start).
  private var due = true
  private var lastWrite: MonotonicInstant?
  /// The last failure to write, logged once until a write succeeds again.
  private var problem: String?

  init(path: String, logger: Logger) {
    self.path = path
    self.logger = logger
  }

  /// Something the metrics show changed: the file is rewritten at the next chance.
  func changed() { due = true }

  /// A reload moved the file; the next write goes to the new path (the old file is left).
  func move(to newPath: String) {
    guard newPath != path else { return }
    path = newPath
    problem = nil
    due = true
  }

  /// When the loop must wake to write a change held back by ``minimumInterval``, if ever.
  var nextDeadline: MonotonicInstant? {
    guard due, let lastWrite else { return nil }
    return lastWrite + Self.minimumInterval
  }

  /// Writes the file if something changed and the last write is long enough ago (or `force`,
  /// for the last write before the daemon exits).
  func writeIfDue(now: MonotonicInstant, force: Bool = false, _ exposition: () -> [UInt8]) {
    guard due else { return }
    if !force, let lastWrite, now < lastWrite + Self.minimumInterval { return }
    due = false
    lastWrite = now
    if let failure = write(exposition()) {
      guard failure != problem else { return }
      problem = failure
      let advice =
        "create its directory or change [supervisor] metrics_file (retried when the metrics change)"
      logger.error("cannot write the metrics file \(path): \(failure); \(advice)")
    } else if problem != nil {
      problem = nil
      logger.notice("metrics file \(path) written again")
    }
  }

  /// Writes `bytes` to a temporary file beside `path` and renames it over `path`; the reason on
  /// failure.
  private func write(_ bytes: [UInt8]) -> String? {
    let temporary = path + ".tmp"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
    guard fd >= 0 else { return "\(temporary): \(errorText(errno))" }
    var offset = 0
    while offset < bytes.count {
      let count = bytes.withUnsafeBytes {
        Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset)
      }
      if count < 0 {
        if errno == EINTR { continue }
        let code = errno
        close(fd)
        unlink(temporary)
        return "\(temporary): \(errorText(code))"
      }
      offset += count
    }
    close(fd)
    guard rename(temporary, path) == 0 else {
      let code = errno
      unlink(temporary)
      return "rename to \(path): \(errorText(code))"
    }
    return nil
  }
}
