import CLinuxSupport
import CSystemd
import Glibc

/// The service manager's watchdog (`WatchdogSec=`): a periodic timerfd in the event loop sends
/// `WATCHDOG=1` at half the interval systemd passed in `WATCHDOG_USEC`.
///
/// The pings come from the loop itself, so a loop that stops turning (a handler that blocks)
/// stops them and systemd restarts the service; `isHealthy` withholds them for the supervisor's
/// own reasons.
final class Watchdog {
  private let fd: Int32
  private let notifier: ServiceNotifier
  private let isHealthy: () -> Bool
  /// The interval systemd expects a ping within.
  let timeout: Duration

  /// Starts pinging from `loop` when the service manager asked for a watchdog, that is when
  /// `WATCHDOG_USEC` is set and `WATCHDOG_PID`, if set, names this process. Returns nil otherwise.
  static func start(
    on loop: EventLoop, notifier: ServiceNotifier, isHealthy: @escaping () -> Bool
  ) throws -> Watchdog? {
    var microseconds: UInt64 = 0
    guard notifier.isEnabled, sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 else {
      return nil
    }
    let watchdog = try Watchdog(
      microseconds: microseconds, notifier: notifier, isHealthy: isHealthy)
    try loop.add(watchdog.fd) { [unowned watchdog] _ in watchdog.fired() }
    return watchdog
  }

  private init(microseconds: UInt64, notifier: ServiceNotifier, isHealthy: @escaping () -> Bool)
    throws
  {
    let fd = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC | TFD_NONBLOCK))
    guard fd >= 0 else { throw RuntimeError("timerfd_create") }
    let period = max(microseconds / 2, 1)
    let interval = timespec(
      tv_sec: Int(period / 1_000_000), tv_nsec: Int(period % 1_000_000) * 1000)
    var spec = itimerspec(it_interval: interval, it_value: interval)
    guard timerfd_settime(fd, 0, &spec, nil) == 0 else {
      let code = errno
      close(fd)
      throw RuntimeError("timerfd_settime", errno: code)
    }
    self.fd = fd
    self.notifier = notifier
    self.isHealthy = isHealthy
    timeout = .microseconds(microseconds)
  }

  deinit { close(fd) }

  private func fired() {
    var expirations: UInt64 = 0
    _ = read(fd, &expirations, 8)
    if isHealthy() { notifier.send(["WATCHDOG=1"]) }
  }
}
