import CLinuxSupport
import Glibc
import Synchronization

/// Work that may block forever, such as a `statfs` of a FUSE mount whose server hangs, runs on a
/// thread of its own and reports back through a pipe the event loop watches: a hung server can
/// hang that thread, never the supervisor.
///
/// The number of such threads is capped (`threadLimit`): a thread stuck on a hung mount stays
/// until the mount is aborted or detached, and many hung mounts must not take the process down.
final class OffLoopWork {
  static let threadLimit = 64
  private static let running = Atomic<Int>(0)

  let id: Int
  /// The read end the loop watches; end of file once the thread is done.
  let reports: Descriptor
  private let cancelled = Flag()
  private var pending: [UInt8] = []

  /// Starts `body` on a new thread; `report` sends one text to the loop. Returns nil, having
  /// started nothing, when `threadLimit` threads are already busy or no pipe or thread can be
  /// made.
  init?(
    id: Int,
    body: @escaping @Sendable (_ report: (String) -> Void, _ isCancelled: () -> Bool) -> Void
  ) {
    guard Self.running.add(1, ordering: .relaxed).newValue <= Self.threadLimit,
      let (readEnd, writeEnd) = try? Descriptor.pipe(), (try? readEnd.setNonBlocking()) != nil
    else {
      Self.running.subtract(1, ordering: .relaxed)
      return nil
    }
    self.id = id
    reports = readEnd
    let cancelled = cancelled
    do {
      try startDetachedThread {
        defer { Self.running.subtract(1, ordering: .relaxed) }
        body(
          { text in
            var bytes = Array(text.utf8.prefix(1000))
            bytes.append(0)
            _ = retryingOnInterrupt { write(writeEnd.raw, bytes, bytes.count) }
          }, { cancelled.isSet })
      }
    } catch {
      Self.running.subtract(1, ordering: .relaxed)
      return nil
    }
  }

  /// Asks the thread to stop at its next chance; its reports are ignored from now on.
  func cancel() { cancelled.set() }

  var isCancelled: Bool { cancelled.isSet }

  /// A flag the loop sets and the thread reads.
  private final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
  }

  /// The reports that arrived, and whether the thread is done.
  func readReports() -> (reports: [String], finished: Bool) {
    var buffer = [UInt8](repeating: 0, count: 4096)
    var finished = false
    while true {
      let count = buffer.withUnsafeMutableBytes { try? reports.read(into: $0) }
      guard let got = count ?? nil else { break }
      if got == 0 {
        finished = true
        break
      }
      pending += buffer.prefix(got)
    }
    var texts: [String] = []
    while let end = pending.firstIndex(of: 0) {
      texts.append(String(decoding: pending[..<end], as: UTF8.self))
      pending.removeSubrange(...end)
    }
    return (texts, finished)
  }
}

/// The checks that reach a FUSE server, made by the threads of `OffLoopWork`.
enum MountAccess {
  /// `statfs` of the mount as its owner: 0 or the errno. For anyone but the owner, the kernel
  /// answers the `statfs` of a mount without `allow_other` itself, and a dead mount looks alive.
  static func statfsError(_ path: String, as owner: MountOwner?) -> Int32 {
    if let code = owner?.assumeOnThisThread(), code != 0 { return code }
    var fs = statfs()
    return statfs(path, &fs) == 0 ? 0 : errno
  }

  /// Mode `probe`: a `statfs` (never answered from a cache) and, when configured, a stat and a
  /// listing of a path inside the mount; nil when all answered, else what failed.
  static func probe(_ mountpoint: String, _ target: String?) -> String? {
    var fs = statfs()
    if statfs(mountpoint, &fs) != 0 { return "statfs \(mountpoint): \(errorText(errno))" }
    guard let target else { return nil }
    var info = stat()
    if stat(target, &info) != 0 { return "stat \(target): \(errorText(errno))" }
    if info.st_mode & S_IFMT == S_IFDIR {
      guard let directory = opendir(target) else { return "opendir \(target): \(errorText(errno))" }
      defer { closedir(directory) }
      errno = 0
      while readdir(directory) != nil {}
      if errno != 0 { return "readdir \(target): \(errorText(errno))" }
    }
    return nil
  }
}
