import CSystemd
import Glibc

/// The supervisor's side of sd_notify: READY, STATUS, ERRNO, STOPPING, RELOADING and
/// EXTEND_TIMEOUT_USEC to the service manager. Without `NOTIFY_SOCKET` every call is a no-op.
final class ServiceNotifier {
  private var lastStatus: String?
  private var lastExtension: UInt64?

  /// Read once: libsystemd reads the variable itself, and workers never see it.
  let isEnabled = getenv("NOTIFY_SOCKET") != nil

  func send(_ fields: [String]) {
    guard isEnabled else { return }
    _ = fields.joined(separator: "\n").withCString { sd_notify(0, $0) }
  }

  /// Sends STATUS only when the text changed.
  func status(_ text: String) {
    guard text != lastStatus else { return }
    lastStatus = text
    send(["STATUS=\(text)"])
  }

  func ready(status text: String) {
    lastStatus = text
    send(["READY=1", "STATUS=\(text)"])
  }

  func failure(status text: String, errno: Int32?) {
    lastStatus = text
    send(["STATUS=\(text)"] + (errno.map { ["ERRNO=\($0)"] } ?? []))
  }

  func stopping(status text: String) {
    lastStatus = text
    send(["STOPPING=1", "STATUS=\(text)"])
  }

  /// RELOADING=1 with the MONOTONIC_USEC systemd ≥ 253 wants; older ones ignore the extra key.
  func reloading() {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    send([
      "RELOADING=1",
      "MONOTONIC_USEC=\(UInt64(spec.tv_sec) * 1_000_000 + UInt64(spec.tv_nsec) / 1000)",
    ])
  }

  /// Asks for this much more start-up time from now, while mounts are still legitimately starting.
  func extendTimeout(microseconds: UInt64) {
    // Resend only when the wish moved by a second or more, not on every event.
    if let last = lastExtension,
      last > microseconds ? last - microseconds < 1_000_000 : microseconds - last < 1_000_000
    {
      return
    }
    lastExtension = microseconds
    send(["EXTEND_TIMEOUT_USEC=\(microseconds)"])
  }
}
