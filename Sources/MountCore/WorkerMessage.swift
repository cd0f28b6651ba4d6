/// One datagram from a worker, in sd_notify syntax (newline-separated `KEY=VALUE`).
///
/// The same parser serves the protocol socketpair and the per-worker `NOTIFY_SOCKET`, so both
/// readiness modes map keys identically. Unknown keys and lines without `=` are ignored.
public struct WorkerMessage: Equatable, Sendable {
  public var ready = false
  public var stopping = false
  public var status: String?
  public var errorText: String?
  public var errno: Int32?

  public init(
    ready: Bool = false, stopping: Bool = false, status: String? = nil,
    errorText: String? = nil, errno: Int32? = nil
  ) {
    self.ready = ready
    self.stopping = stopping
    self.status = status
    self.errorText = errorText
    self.errno = errno
  }

  /// Parses a datagram. A datagram that is only a newline is READY, the s6 notification-fd
  /// convention, so s6-style workers work unchanged.
  public init(datagram bytes: some Collection<UInt8>) {
    if bytes.count == 1, bytes.first == UInt8(ascii: "\n") {
      ready = true
      return
    }
    let text = String(decoding: bytes, as: UTF8.self)
    for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
      guard let equals = line.firstIndex(of: "=") else { continue }
      let key = line[..<equals]
      let value = String(line[line.index(after: equals)...])
      switch key {
      case "READY": ready = ready || value == "1"
      case "STOPPING": stopping = stopping || value == "1"
      case "STATUS": status = value
      case "ERROR": errorText = value
      case "ERRNO": errno = Int32(value.trimmingSpaces()) ?? errno
      default: continue
      }
    }
  }

  /// True when the datagram carried nothing the supervisor understands.
  public var isEmpty: Bool { self == WorkerMessage() }
}

extension String {
  func trimmingSpaces() -> String {
    String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
  }
}
