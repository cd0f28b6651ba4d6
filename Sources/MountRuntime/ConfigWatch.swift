import Glibc
import Logging
import MountConfig
import MountCore

/// `[supervisor] watch_config`: reloads when a configuration file changes, as SIGHUP does.
///
/// inotify watches the directories that hold the configuration files, not the files: an editor
/// that saves by renaming, and a Kubernetes ConfigMap volume, which swaps the `..data` symlink
/// to a new directory in one rename, both replace a file without writing to it. Events are
/// filtered to the names that can matter (a `.toml` file, a configuration file's own name, or
/// `..data`). The reload waits until no such event came for ``settleTime``: an editor that saves
/// a drop-in by renaming the old one away and writing a new one must not make a reload that
/// finds the file missing and stops its mounts. The wait is a deadline of the loop's timer, set
/// only while events are pending. Requests that arrive while a reload runs are served together
/// by the next one (see ReloadCoordinator).
final class ConfigWatch {
  static let settleTime: Duration = .milliseconds(200)

  let fd: Descriptor
  private let logger: Logger
  /// The names of configuration files in each watched directory, by watch descriptor.
  private var directories: [Int32: Set<String>] = [:]
  private var buffer = [UInt8](repeating: 0, count: 64 * 1024)
  /// When to reload, while relevant events wait for the configuration to settle.
  private(set) var reloadDeadline: MonotonicInstant?

  static let mask = UInt32(IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM)

  init(loop: EventLoop, logger: Logger) throws(RuntimeError) {
    self.logger = logger
    fd = Descriptor(
      try system(.configWatch, "inotify_init1") {
        inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
      })
    try loop.add(fd, as: .configWatch)
  }

  /// Watches the directories of `configuration`'s files and those its `include` patterns look
  /// in (again after each reload: a reload may add a drop-in from another directory).
  func watch(_ configuration: Configuration) {
    var wanted: [String: Set<String>] = [:]
    for file in configuration.files + configuration.dropInsWithoutMounts {
      let (directory, name) = Self.split(file)
      wanted[directory, default: []].insert(name)
    }
    for directory in configuration.includeDirectories where wanted[directory] == nil {
      wanted[directory] = []
    }
    for (directory, names) in wanted {
      let descriptor = inotify_add_watch(fd.raw, directory, Self.mask)
      guard descriptor >= 0 else {
        let code = errno
        if code == ENOENT, names.isEmpty {
          // An include directory that does not exist (yet): nothing there to watch.
          logger.info(
            "watch_config: \(directory) does not exist; a drop-in put there later needs `mountctl reload`"
          )
        } else {
          let problem = errorText(code)
          logger.error(
            "watch_config: cannot watch \(directory): \(problem); changes there need `mountctl reload`"
          )
        }
        continue
      }
      directories[descriptor] = names
    }
  }

  /// Reads the pending events; one that concerns the configuration (re)starts the wait for it to
  /// settle.
  func readEvents(now: MonotonicInstant) {
    if readRelevantEvents() { reloadDeadline = now + Self.settleTime }
  }

  /// True, once, when the configuration has settled after a change: time to reload.
  func takeDueReload(now: MonotonicInstant) -> Bool {
    guard let reloadDeadline, reloadDeadline <= now else { return false }
    self.reloadDeadline = nil
    return true
  }

  private func readRelevantEvents() -> Bool {
    var relevant = false
    while true {
      let count = buffer.withUnsafeMutableBytes { try? fd.read(into: $0) }
      guard let count = count ?? nil, count > 0 else { return relevant }
      var offset = 0
      while offset + MemoryLayout<inotify_event>.size <= count {
        let (descriptor, mask, length) = buffer.withUnsafeBytes { raw in
          let event = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
          return (event.wd, event.mask, Int(event.len))
        }
        let nameStart = offset + MemoryLayout<inotify_event>.size
        let nameBytes = buffer[nameStart..<nameStart + length].prefix { $0 != 0 }
        let name = String(decoding: nameBytes, as: UTF8.self)
        offset = nameStart + length
        // Events were lost: one of them may have been a change.
        if mask & UInt32(IN_Q_OVERFLOW) != 0 { relevant = true }
        guard let names = directories[descriptor] else { continue }
        if name == "..data" || name.hasSuffix(".toml") || names.contains(name) { relevant = true }
      }
    }
  }

  private static func split(_ path: String) -> (directory: String, name: String) {
    guard let slash = path.lastIndex(of: "/") else { return (".", path) }
    let directory = String(path[..<slash])
    return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
  }
}
