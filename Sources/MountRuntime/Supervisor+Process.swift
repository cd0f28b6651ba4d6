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

  /// Descriptors a mount may hold at once: its worker's pidfd, socketpair and output pipe, a
  /// notify socket, a held FUSE connection and a probe, with room to spare.
  static let descriptorsPerMount = 6

  /// Grows the descriptor table now to hold what `mounts` mounts need (up to the soft limit). The
  /// kernel grows it by doubling as descriptors open, and in a process with a second thread every
  /// growth waits for an RCU grace period (`expand_fdtable`): 20 to 30 ms measured here in which
  /// no worker is spawned, every worker started so far is done and both cores idle, four times on
  /// the way to 1,000 mounts. Before the first thread it costs nothing; the table never shrinks.
  func reserveDescriptors(forMounts mounts: Int) {
    let wanted = 256 + mounts * Self.descriptorsPerMount
    guard wanted > reservedDescriptors else { return }
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    let highest = Int32(clamping: min(UInt64(wanted), UInt64(limit.rlim_cur)) - 1)
    let probe = fcntl(signals.raw, F_DUPFD_CLOEXEC, highest)
    if probe >= 0 { close(probe) }
    reservedDescriptors = wanted
  }
}
