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

  /// Sends STATUS when the text changed and, while mounts are starting, how much more start-up
  /// time they may need (EXTEND_TIMEOUT_USEC, when the wish moved by a second or more), in one
  /// datagram: a receiver's queue holds only a few.
  func progress(status text: String?, extendBy microseconds: UInt64? = nil) {
    var fields: [String] = []
    if let text, text != lastStatus {
      lastStatus = text
      fields.append("STATUS=\(text)")
    }
    if let microseconds, lastExtension.map({ distance($0, microseconds) >= 1_000_000 }) ?? true {
      lastExtension = microseconds
      fields.append("EXTEND_TIMEOUT_USEC=\(microseconds)")
    }
    if !fields.isEmpty { send(fields) }
  }

  func status(_ text: String) { progress(status: text) }

  private func distance(_ a: UInt64, _ b: UInt64) -> UInt64 { a > b ? a - b : b - a }

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
}
