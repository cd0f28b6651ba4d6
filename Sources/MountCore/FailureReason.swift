/// Picks the line of a failed worker's last output that best says why it failed, rather than
/// merely the last line.
///
/// Workers seldom end on their reason: sshfs prints "read: Connection reset by peer" after the
/// "Connection refused" that explains it, a shell wrapper prints a usage or spam line after
/// "exec: mountsup-mirror: not found", libfuse prints a hint after "mountpoint is not empty".
/// So each line is scored by what it says, and the best-scoring line wins; among equals the
/// later one. A line that says nothing of the kind never beats one that does, however late it
/// comes; when no line says anything, the last non-blank line is the reason, as before.
///
/// Pure and cheap (a few substring checks per line of a short tail): safe on the event loop.
public enum FailureReason {
  /// The most useful non-blank line of `outputTail` (oldest first), trimmed; nil when every
  /// line is blank.
  public static func pick(from outputTail: [String]) -> String? {
    var best: (line: String, score: Int)?
    for raw in outputTail {
      let line = raw.trimmingWhitespace
      guard !line.isEmpty else { continue }
      let score = self.score(line)
      // `>=`: the later of two equally telling lines is closer to the failure.
      if best == nil || score >= best!.score { best = (line, score) }
    }
    return best?.line
  }

  /// Words that name a cause: the reason an operator can act on.
  static let causes = [
    "refused", "not found", "no such file", "no such device", "does not exist",
    "doesn't exist", "didn't find", "could not find", "cannot find", "denied", "permission",
    "not permitted", "not allowed", "no write access", "unreachable", "no route to host",
    "timed out", "timeout", "unknown", "not empty", "not a directory", "is a directory",
    "not connected", "resource busy", "read-only file system", "no space left",
    "could not resolve", "name or service not known", "authentication", "unauthorized",
    "forbidden", "invalid", "bad mount point", "missing", "not executable", "exec format error",
  ]

  /// Words that say something failed without saying why.
  static let failures = [
    "error", "failed", "failure", "cannot", "can't", "could not", "couldn't", "unable to",
    "fatal", "abort", "panic",
  ]

  /// Words that mark a line as the most serious kind a program prints.
  static let severities = ["fatal", "critical", "panic", "emerg"]

  /// Prefixes of lines that are chatter even when they mention an error ("warning: retrying
  /// after error").
  static let chatter = ["warning", "warn:", "warn ", "notice", "info", "debug", "trace", "note:"]

  /// 0 for a line that says nothing of a failure (or is only a warning, notice or debug line);
  /// 1 for a failure without a cause, 2 for a cause, each one more when the line calls itself
  /// fatal or critical.
  static func score(_ line: String) -> Int {
    // ASCII case folding on bytes: the words are English, and Foundation's case-insensitive
    // search costs more than the rest of a worker's exit.
    let text = Array(line.utf8).map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }
    let start = text.drop { !($0 >= 97 && $0 <= 122) && $0 < 0x80 }
    if chatter.contains(where: { start.starts(with: $0.utf8) }) { return 0 }
    var score = 0
    if causes.contains(where: { text.contains(bytes: $0) }) {
      score = 2
    } else if failures.contains(where: { text.contains(bytes: $0) }) {
      score = 1
    }
    if score > 0, severities.contains(where: { text.contains(bytes: $0) }) { score += 1 }
    return score
  }
}

extension [UInt8] {
  /// Whether the ASCII word occurs in these bytes.
  fileprivate func contains(bytes word: String) -> Bool {
    let needle = Array(word.utf8)
    guard needle.count <= count, let head = needle.first else { return needle.isEmpty }
    var index = 0
    while index + needle.count <= count {
      if self[index] == head, self[index..<(index + needle.count)].elementsEqual(needle) {
        return true
      }
      index += 1
    }
    return false
  }
}

extension String {
  /// Without leading and trailing whitespace (space, tab, line breaks), compared by UTF-8 code
  /// unit: what a worker or a binary printed, as one line for a message.
  public var trimmingWhitespace: String {
    let isSpace = { (byte: UInt8) in byte == 0x20 || (byte >= 0x09 && byte <= 0x0D) }
    guard let first = utf8.firstIndex(where: { !isSpace($0) }),
      let last = utf8.lastIndex(where: { !isSpace($0) })
    else { return "" }
    return String(self[first...last])
  }
}
