import CLinuxSupport
import Foundation
import Glibc
import Synchronization

/// Mode `probe`: checks, off the event loop, that a FUSE mount really reaches its daemon, with a
/// `statfs` (never answered from a cache) and, when configured, a stat and a listing of a path
/// inside it. Retries with a growing pause until it succeeds or is cancelled; each failure is
/// reported so that a start timeout can say what the probe saw. It probes as the mount's owner,
/// the one identity the kernel lets through to the daemon of a mount without `allow_other`.
final class MountProbe: Sendable {
  private let cancelled = Atomic<Bool>(false)
  private let readEnd: Int32
  private let writeEnd: Int32

  /// `report` runs on the loop's thread: nil when the mount answered, else the failure text.
  init?(
    mountpoint: String, probePath: String?, owner: MountOwner?, loop: EventLoop,
    report: @escaping (String?) -> Void
  ) {
    var fds: [Int32] = [-1, -1]
    guard mountsup_pipe(&fds) == 0 else { return nil }
    readEnd = fds[0]
    writeEnd = fds[1]
    let readEnd = readEnd
    do {
      try loop.add(readEnd) { _ in
        var buffer = [UInt8](repeating: 0, count: 4096)
        let got = read(readEnd, &buffer, buffer.count)
        guard got > 0 else {
          loop.remove(readEnd)
          close(readEnd)
          return
        }
        for record in buffer.prefix(got).split(separator: 0, omittingEmptySubsequences: false)
          .dropLast()
        {
          report(record.isEmpty ? nil : String(decoding: record, as: UTF8.self))
        }
      }
    } catch {
      close(fds[0])
      close(fds[1])
      return nil
    }
    let target = probePath.map { mountpoint + "/" + $0 }
    Thread.detachNewThread { [self] in
      if let owner, case let code = owner.assumeOnThisThread(), code != 0 {
        let who = "uid \(owner.uid), gid \(owner.gid)"
        send("cannot probe as the mount's owner (\(who)): \(errorText(code))")
        close(writeEnd)
        return
      }
      var pause: UInt32 = 50_000
      while !cancelled.load(ordering: .relaxed) {
        let failure = Self.probe(mountpoint, target)
        guard !cancelled.load(ordering: .relaxed) else { break }
        send(failure ?? "")
        if failure == nil { break }
        usleep(pause)
        pause = min(pause * 2, 1_000_000)
      }
      close(writeEnd)
    }
  }

  func cancel() { cancelled.store(true, ordering: .relaxed) }

  private func send(_ text: String) {
    var bytes = Array(text.utf8.prefix(400))
    bytes.append(0)
    _ = write(writeEnd, bytes, bytes.count)
  }

  private static func probe(_ mountpoint: String, _ target: String?) -> String? {
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
