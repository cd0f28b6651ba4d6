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
      let line = trimmed(raw)
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
    let text = line.lowercased()
    let start = text.drop { !$0.isLetter }
    if chatter.contains(where: { start.hasPrefix($0) }) { return 0 }
    var score = 0
    if causes.contains(where: { text.contains($0) }) {
      score = 2
    } else if failures.contains(where: { text.contains($0) }) {
      score = 1
    }
    if score > 0, severities.contains(where: { text.contains($0) }) { score += 1 }
    return score
  }

  private static func trimmed(_ line: String) -> String {
    let characters = line.drop { $0.isWhitespace }
    return String(characters.reversed().drop { $0.isWhitespace }.reversed())
  }
}
