import CLinuxSupport
import Glibc

/// The supervisor's side of sd_notify: READY, STATUS, ERRNO, STOPPING, RELOADING,
/// EXTEND_TIMEOUT_USEC and WATCHDOG to the service manager. Without `NOTIFY_SOCKET` every call
/// is a no-op.
///
/// Unlike libsystemd's `sd_notify`, it never blocks the event loop: it sends without waiting
/// on a connected socket, and what the receiver's queue has no room for waits here, in order,
/// until the loop sees the socket writable (`hasBacklog`, `flush`). A newer STATUS replaces an
/// older one that still waits.
final class ServiceNotifier {
  private var lastStatus: String?
  private var lastExtension: UInt64?
  private let address: UnixAddress?
  /// Connected to `NOTIFY_SOCKET`; made anew when the service manager's end went away.
  private(set) var socket: Descriptor?
  private var backlog: [String] = []
  /// Messages waiting beyond this are progress only (STATUS, EXTEND_TIMEOUT_USEC): the oldest
  /// are dropped.
  static let backlogLimit = 64

  /// Read once at start; workers never see the variable.
  init() {
    let value = getenv("NOTIFY_SOCKET").map { String(cString: $0) } ?? ""
    switch value.first {
    case "@": address = UnixAddress(abstract: String(value.dropFirst()))
    case "/": address = UnixAddress(path: value)
    default: address = nil
    }
    _ = connect()
  }

  var isEnabled: Bool { address != nil }

  /// Messages wait for room in the service manager's queue.
  var hasBacklog: Bool { !backlog.isEmpty }

  func send(_ fields: [String]) {
    guard isEnabled else { return }
    let message = fields.joined(separator: "\n")
    if backlog.isEmpty, transmit(message) { return }
    if let last = backlog.last, Self.isProgressOnly(last), Self.isProgressOnly(message) {
      backlog[backlog.count - 1] = message
    } else {
      backlog.append(message)
    }
    if backlog.count > Self.backlogLimit, let index = backlog.firstIndex(where: Self.isProgressOnly)
    {
      backlog.remove(at: index)
    }
  }

  /// Sends what waits, in order, as far as the receiver takes it.
  func flush() {
    while let first = backlog.first, transmit(first) { backlog.removeFirst() }
  }

  /// At exit: what still waits gets up to `patience` to go out (the loop no longer runs).
  func flushBeforeExit(patience: Duration = .seconds(1)) {
    let deadline = ContinuousClock.now + patience
    flush()
    while hasBacklog, let socket, ContinuousClock.now < deadline {
      var writable = pollfd(fd: socket.raw, events: Int16(POLLOUT), revents: 0)
      _ = poll(&writable, 1, 100)
      flush()
    }
  }

  /// One datagram without waiting: true when it went out, or can never go (dropped); false when
  /// the receiver's queue is full.
  private func transmit(_ message: String) -> Bool {
    for _ in 0..<2 {
      guard let socket = socket ?? (connect() ? self.socket : nil) else { return true }
      let result = Array(message.utf8).withUnsafeBytes { bytes in
        Result { () throws(RuntimeError) in try socket.send(bytes) }
      }
      switch result {
      case .success(nil): return false
      case .success: return true
      case .failure:
        // The service manager's socket went away (it was restarted): connect anew, once.
        self.socket = nil
      }
    }
    return true
  }

  private func connect() -> Bool {
    guard let address,
      let fd = try? system(
        .serviceManager, "socket(AF_UNIX, SOCK_DGRAM)",
        {
          Glibc.socket(
            AF_UNIX,
            Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
              | Int32(SOCK_NONBLOCK.rawValue), 0)
        })
    else { return false }
    let candidate = Descriptor(fd)
    guard address.withSocketAddress({ Glibc.connect(candidate.raw, $0, $1) }) == 0 else {
      return false
    }
    socket = candidate
    return true
  }

  private static func isProgressOnly(_ message: String) -> Bool {
    message.split(separator: "\n").allSatisfy {
      $0.hasPrefix("STATUS=") || $0.hasPrefix("EXTEND_TIMEOUT_USEC=")
    }
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

  /// Whether the service manager keeps descriptors for this service: `FDSTORE` names the size of
  /// its store (systemd 254 and later set it from `FileDescriptorStoreMax=`; the unit sets it for
  /// older ones). Without it nothing is sent: a receiver that is not such a store could hold a
  /// connection alive in its queue long after the supervisor let go of it.
  let hasDescriptorStore = (getenv("FDSTORE").flatMap { Int(String(cString: $0)) } ?? 0) > 0

  /// Puts descriptors in the service manager's fd store under `name` (`FDSTORE=1`), so that
  /// they survive a crash of this process and come back at its restart (`LISTEN_FDNAMES`).
  /// Waits up to a second for room in the receiver's queue; false when they could not go.
  @discardableResult
  func store(_ descriptors: [Int32], name: String) -> Bool {
    guard isEnabled, hasDescriptorStore, Self.isValidStoreName(name),
      let socket = socket ?? (connect() ? socket : nil)
    else { return false }
    let message = Array("FDSTORE=1\nFDNAME=\(name)".utf8)
    for _ in 0..<10 {
      let code = message.withUnsafeBytes {
        mountsup_send_with_fds(
          socket.raw, $0.baseAddress, $0.count, descriptors, Int32(descriptors.count))
      }
      guard code == EAGAIN else { return code == 0 }
      var writable = pollfd(fd: socket.raw, events: Int16(POLLOUT), revents: 0)
      _ = poll(&writable, 1, 100)
    }
    return false
  }

  /// Takes descriptors out of the fd store.
  func forgetStored(name: String) {
    guard hasDescriptorStore, Self.isValidStoreName(name) else { return }
    send(["FDSTOREREMOVE=1", "FDNAME=\(name)"])
  }

  /// systemd's rule for FDNAME: 1 to 255 printable ASCII characters, no colon.
  static func isValidStoreName(_ name: String) -> Bool {
    !name.isEmpty && name.utf8.count <= 255
      && name.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") }
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
