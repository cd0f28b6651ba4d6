import CLinuxSupport
import Foundation
import Glibc

/// Runs a call that may block forever (a `statfs` on a hung FUSE mount) on a thread of its own
/// and reports its errno back to the event loop through a pipe. A hung daemon can then hang only
/// that thread, never the supervisor.
enum BlockingCall {
  /// `work` returns 0 on success or an errno; `completion` runs on the loop's thread.
  static func start(
    on loop: EventLoop, work: @escaping @Sendable () -> Int32, completion: @escaping (Int32) -> Void
  ) {
    var fds: [Int32] = [-1, -1]
    guard mountsup_pipe(&fds) == 0 else {
      completion(errno)
      return
    }
    let (readEnd, writeEnd) = (fds[0], fds[1])
    do {
      try loop.add(readEnd) { _ in
        var result: Int32 = EIO
        _ = read(readEnd, &result, 4)
        loop.remove(readEnd)
        close(readEnd)
        completion(result)
      }
    } catch {
      close(readEnd)
      close(writeEnd)
      completion(EIO)
      return
    }
    Thread.detachNewThread {
      var result = work()
      _ = write(writeEnd, &result, 4)
      close(writeEnd)
    }
  }
}
