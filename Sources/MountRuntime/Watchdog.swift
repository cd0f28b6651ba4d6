import CLinuxSupport
import CSystemd
import Glibc

/// The service manager's watchdog (`WatchdogSec=`): a periodic timerfd in the event loop sends
/// `WATCHDOG=1` at half the interval systemd passed in `WATCHDOG_USEC`.
///
/// The pings come from the loop itself, so a loop that stops turning (a handler that blocks)
/// stops them and systemd restarts the service.
final class Watchdog {
  private let fd: Descriptor
  private let notifier: ServiceNotifier
  /// The interval systemd expects a ping within.
  let timeout: Duration

  /// Starts pinging from `loop` when the service manager asked for a watchdog, that is when
  /// `WATCHDOG_USEC` is set and `WATCHDOG_PID`, if set, names this process. Returns nil otherwise.
  static func start(on loop: EventLoop, notifier: ServiceNotifier) throws(RuntimeError) -> Watchdog?
  {
    var microseconds: UInt64 = 0
    guard notifier.isEnabled, mountsup_sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0
    else {
      return nil
    }
    let watchdog = try Watchdog(microseconds: microseconds, notifier: notifier)
    try loop.add(watchdog.fd, as: .watchdog)
    return watchdog
  }

  private init(microseconds: UInt64, notifier: ServiceNotifier) throws(RuntimeError) {
    fd = Descriptor(
      try system(.serviceManager, "timerfd_create") {
        timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC | TFD_NONBLOCK))
      })
    let period = max(microseconds / 2, 1)
    let interval = timespec(
      tv_sec: Int(period / 1_000_000), tv_nsec: Int(period % 1_000_000) * 1000)
    var spec = itimerspec(it_interval: interval, it_value: interval)
    let fd = fd
    try system(.serviceManager, "timerfd_settime") { timerfd_settime(fd.raw, 0, &spec, nil) }
    self.notifier = notifier
    timeout = .microseconds(microseconds)
  }

  /// Pings at once: after an upgrade, whose exec took part of the period.
  func ping() { notifier.send(["WATCHDOG=1"]) }

  /// The period passed: ping, unless the supervisor withholds it for its own reasons.
  func fired(healthy: Bool) {
    var expirations: UInt64 = 0
    _ = read(fd.raw, &expirations, 8)
    if healthy { notifier.send(["WATCHDOG=1"]) }
  }
}
