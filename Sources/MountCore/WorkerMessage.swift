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
  /// `FUSE_INIT=<hex>`: the raw FUSE_INIT request of a worker that hands over its connection
  /// (`FUSE_CONNECTION=1`, with the descriptors passed along the datagram).
  public var fuseInit: [UInt8]?

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
      case "FUSE_INIT": fuseInit = Self.bytes(hex: value)
      default: continue
      }
    }
  }

  /// The bytes of a hexadecimal string; nil if it is not one.
  static func bytes(hex: String) -> [UInt8]? {
    let digits = Array(hex.utf8)
    guard digits.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(digits.count / 2)
    var index = 0
    while index < digits.count {
      guard let high = Self.nibble(digits[index]), let low = Self.nibble(digits[index + 1]) else {
        return nil
      }
      bytes.append(high << 4 | low)
      index += 2
    }
    return bytes
  }

  private static func nibble(_ digit: UInt8) -> UInt8? {
    switch digit {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
    default: nil
    }
  }

  /// Whether a raw FUSE_INIT request offers `FUSE_HAS_RESEND` (bit 39: bit 7 of `flags2`,
  /// which counts only with `FUSE_INIT_EXT`, bit 30 of `flags`): the kernel can then resend to a
  /// successor the requests a crashed worker had read but not answered.
  public static func initOffersResend(_ request: [UInt8]) -> Bool {
    // fuse_in_header (40 bytes), then major, minor, max_readahead, flags, flags2 (4 bytes each).
    guard request.count >= 60 else { return false }
    func word(_ offset: Int) -> UInt32 {
      (0..<4).reduce(0) { $0 | UInt32(request[offset + $1]) << (8 * $1) }
    }
    return word(52) & (1 << 30) != 0 && word(56) & (1 << 7) != 0
  }

  /// True when the datagram carried nothing the supervisor understands.
  public var isEmpty: Bool { self == WorkerMessage() }
}

extension String {
  func trimmingSpaces() -> String {
    String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
  }
}
