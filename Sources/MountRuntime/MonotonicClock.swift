import Glibc
import MountCore

extension MonotonicInstant {
  /// CLOCK_MONOTONIC, the clock the event loop's timerfd uses.
  static func now() -> MonotonicInstant {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return MonotonicInstant(nanoseconds: UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec))
  }
}
