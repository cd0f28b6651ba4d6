import Glibc
import MountCore

/// The lines a mount's workers printed: the last 200 are kept across restarts for status, logs
/// and failure reasons, and a rate limit keeps a worker that prints without pause from flooding
/// the log, the journal and the followers of `mountctl logs -f`.
///
/// The limit is journald's default idea per mount: at most `rateBurst` lines (and `rateBytes`
/// bytes) per `rateInterval`; what exceeds it is counted, not kept, and one line
/// "[N lines dropped]" takes its place when the next line is let through (or the worker exits).
struct OutputLog: Codable {
  static let capacity = 200
  static let rateInterval: Duration = .seconds(30)
  static let rateBurst = 10_000
  static let rateBytes = 8 << 20

  private var ring: [String] = []
  private var head = 0
  private var windowStart: MonotonicInstant?
  private var passedInWindow = 0
  private var bytesInWindow = 0
  /// Lines dropped by the rate limit and not yet reported.
  private(set) var dropped = 0

  /// The kept lines, oldest first.
  var lines: [String] {
    Array(ring[head...] + ring[..<head])
  }

  func tail(_ count: Int) -> [String] { Array(lines.suffix(count)) }

  /// Whether one more line of `length` bytes may pass now; a line that may not is counted as
  /// dropped.
  mutating func admit(now: MonotonicInstant, length: Int = 0) -> Bool {
    if windowStart.map({ now - $0 >= Self.rateInterval }) ?? true {
      windowStart = now
      passedInWindow = 0
      bytesInWindow = 0
    }
    guard passedInWindow < Self.rateBurst, bytesInWindow + length <= Self.rateBytes else {
      dropped += 1
      return false
    }
    passedInWindow += 1
    bytesInWindow += length
    return true
  }

  /// The marker for lines dropped since the last one, if any, resetting the count.
  mutating func takeDroppedMarker() -> String? {
    guard dropped > 0 else { return nil }
    defer { dropped = 0 }
    return "[\(dropped) line\(dropped == 1 ? "" : "s") dropped]"
  }

  mutating func append(_ line: String) {
    if ring.count < Self.capacity {
      ring.append(line)
    } else {
      ring[head] = line
      head = (head + 1) % Self.capacity
    }
  }
}

/// Cuts a worker's output stream into lines. A line longer than `maximumLineLength` is cut
/// there and the rest of it up to its newline dropped, so neither the buffer nor one kept line
/// can grow without bound.
struct LineSplitter: Codable {
  static let maximumLineLength = 16 * 1024

  private var partial: [UInt8] = []
  /// A line was cut: its remaining bytes are dropped until its newline.
  private var droppingRestOfLine = false

  /// Splits `bytes` onto what is left over from the last call: `line` gets every complete line
  /// for which `wanted(length)` says yes; lines it refuses are only counted (never decoded).
  mutating func split(
    _ bytes: UnsafeRawBufferPointer, wanted: (Int) -> Bool, line: (String) -> Void
  ) {
    var start = 0
    while start < bytes.count {
      let rest = UnsafeRawBufferPointer(rebasing: bytes[start...])
      guard let base = rest.baseAddress, let found = memchr(base, 0x0A, rest.count) else {
        guard !droppingRestOfLine else { return }
        partial.append(contentsOf: rest.prefix(Self.maximumLineLength - partial.count + 1))
        if partial.count > Self.maximumLineLength {
          emitPartial(wanted: wanted, line: line)
          droppingRestOfLine = true
        }
        return
      }
      let length = UnsafeRawPointer(found) - base
      let piece = UnsafeRawBufferPointer(rebasing: rest[..<length])
      if droppingRestOfLine {
        droppingRestOfLine = false
      } else if wanted(min(partial.count + length, Self.maximumLineLength)) {
        if partial.isEmpty {
          line(Self.decode(piece))
        } else {
          partial.append(contentsOf: piece.prefix(Self.maximumLineLength))
          line(Self.decode(partial))
        }
      }
      partial.removeAll(keepingCapacity: true)
      start += length + 1
    }
  }

  /// The unfinished last line, at the end of the stream.
  mutating func finish(wanted: (Int) -> Bool, line: (String) -> Void) {
    droppingRestOfLine = false
    guard !partial.isEmpty else { return }
    emitPartial(wanted: wanted, line: line)
  }

  private mutating func emitPartial(wanted: (Int) -> Bool, line: (String) -> Void) {
    if wanted(min(partial.count, Self.maximumLineLength)) {
      line(Self.decode(partial.prefix(Self.maximumLineLength)))
    }
    partial.removeAll(keepingCapacity: true)
  }

  private static func decode(_ bytes: some Collection<UInt8>) -> String {
    var text = String(decoding: bytes, as: UTF8.self)
    if text.utf8.count > maximumLineLength {
      text = String(decoding: text.utf8.prefix(maximumLineLength), as: UTF8.self)
    }
    return text
  }
}
