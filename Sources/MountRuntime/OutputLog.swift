/// The last lines a mount's workers printed, kept across restarts for status, logs and failure
/// reasons.
struct OutputLog {
  static let capacity = 200
  private(set) var lines: [String] = []

  mutating func append(_ line: String) {
    if lines.count == Self.capacity { lines.removeFirst() }
    lines.append(line)
  }

  func tail(_ count: Int) -> [String] { Array(lines.suffix(count)) }
}
