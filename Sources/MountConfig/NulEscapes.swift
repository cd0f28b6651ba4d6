/// NULs in a configuration: the one character no path, argument, user, group or environment
/// entry can hold, since C would cut the string there and the mount would run somewhere else than
/// written. Written raw, it is a syntax error with its place; written as an escape (`"\u0000"`), the
/// parser keeps it in the string and validation rejects the key.
enum NulEscapes {
  /// Where the first raw NUL character of `text` is (1-based line and column), if any.
  static func rawNul(in text: String) -> (line: Int, column: Int)? {
    guard text.utf8.contains(0) else { return nil }
    var line = 1
    var column = 1
    for scalar in text.unicodeScalars {
      if scalar == "\0" { return (line, column) }
      if scalar == "\n" {
        line += 1
        column = 1
      } else {
        column += 1
      }
    }
    return nil
  }

  /// Whether a parsed string (a value or a key) holds a NUL.
  static func containsNul(_ text: String) -> Bool {
    text.utf8.contains(0)
  }
}
