import CLinuxSupport
import Glibc

/// What the daemon's process itself needs before it supervises: its signals, read through a
/// signalfd, and a descriptor limit for thousands of mounts.
extension Supervisor {
  /// Blocks SIGTERM, SIGINT, SIGHUP and SIGUSR2 and returns a signalfd for them. Call it first
  /// thing in `main`, before any thread exists, so that every later thread inherits the mask.
  public static func captureSignals() throws -> Int32 {
    let fd = [SIGTERM, SIGINT, SIGHUP, SIGUSR2].withUnsafeBufferPointer {
      mountsup_signalfd($0.baseAddress, $0.count)
    }
    guard fd >= 0 else { throw RuntimeError(.eventLoop, "signalfd", errno: errno) }
    return fd
  }

  /// Every mount needs three descriptors (socketpair, output pipe, pidfd): a daemon started by
  /// hand with the usual soft limit of 1,024 would run out at about 330 mounts. The soft limit
  /// goes up to the hard one; the inherited one is what workers get.
  static func raiseDescriptorLimit() -> rlimit {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    let inherited = limit
    if limit.rlim_cur < limit.rlim_max {
      limit.rlim_cur = limit.rlim_max
      setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    return inherited
  }
}
