/// A point on the monotonic clock, in nanoseconds since an arbitrary origin.
///
/// The core never reads a clock: the shell passes `now` with every event, so the state machine
/// is deterministic and tests can move time by hand.
public struct MonotonicInstant: Comparable, Hashable, Sendable, Codable, CustomStringConvertible {
  public var nanoseconds: UInt64

  public init(nanoseconds: UInt64) {
    self.nanoseconds = nanoseconds
  }

  public static func < (lhs: Self, rhs: Self) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

  public static func + (lhs: Self, rhs: Duration) -> Self {
    let delta = rhs.nanosecondsClamped
    return Self(
      nanoseconds: delta >= 0 ? lhs.nanoseconds &+ UInt64(delta) : lhs.nanoseconds &- UInt64(-delta)
    )
  }

  public static func - (lhs: Self, rhs: Self) -> Duration {
    lhs >= rhs
      ? .nanoseconds(Int64(clamping: lhs.nanoseconds - rhs.nanoseconds))
      : .nanoseconds(-Int64(clamping: rhs.nanoseconds - lhs.nanoseconds))
  }

  public var description: String { "\(nanoseconds)ns" }
}

extension Duration {
  /// The duration in whole nanoseconds, saturating at the bounds of `Int64`.
  public var nanosecondsClamped: Int64 {
    let (seconds, attoseconds) = components
    let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    if overflow { return seconds < 0 ? .min : .max }
    return product.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
  }

  /// Whole milliseconds, for messages.
  public var milliseconds: Int64 { nanosecondsClamped / 1_000_000 }
}

extension MonotonicInstant {
  /// One number, not an object with a key: the state of an upgrade holds thousands.
  public init(from decoder: any Decoder) throws {
    nanoseconds = try decoder.singleValueContainer().decode(UInt64.self)
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(nanoseconds)
  }
}
