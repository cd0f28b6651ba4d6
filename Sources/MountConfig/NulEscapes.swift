/// Makes a NUL written in a TOML string (`"\u0000"`, `"\U00000000"`) visible to validation.
///
/// toml++ keeps such a NUL, but TOMLKit hands strings (values and quoted keys) to Swift as C
/// strings, so `"/srv/n\u0000x"` arrived as `"/srv/n"`: the mount ran somewhere else than written,
/// silently. Before parsing, every NUL escape inside a basic string is therefore rewritten to the
/// escape of ``marker``, a Unicode noncharacter that no configuration has a use for, of the same
/// length (so syntax errors keep their line and column). Whatever string then holds the marker held
/// a NUL, and is rejected naming its file, mount and key. Comments and literal strings (where a
/// backslash is just a backslash) are left alone.
enum NulEscapes {
  /// Stands for a NUL in parsed strings.
  static let marker = Unicode.Scalar(0xFDD0 as UInt32)!

  private enum State { case normal, comment, basic, multilineBasic, literal, multilineLiteral }

  static func mark(_ text: String) -> String {
    let scalars = Array(text.unicodeScalars)
    // Fast path: no escape that could be a NUL.
    guard scalars.contains("\\") else { return text }
    var output = String.UnicodeScalarView()
    var state = State.normal
    var index = 0

    func starts(with delimiter: String, at position: Int) -> Bool {
      let characters = Array(delimiter.unicodeScalars)
      guard position + characters.count <= scalars.count else { return false }
      return Array(scalars[position..<position + characters.count]) == characters
    }
    /// Copies a closing `"""`/`'''` with up to two quotes before it that belong to the content.
    func closeMultiline(_ quote: Unicode.Scalar) {
      var count = 0
      while index < scalars.count, scalars[index] == quote, count < 5 {
        output.append(quote)
        index += 1
        count += 1
      }
      state = .normal
    }
    /// Copies one escape sequence of a basic string, rewriting a NUL.
    func escape() {
      let kind = index + 1 < scalars.count ? scalars[index + 1] : nil
      let digits = kind == "u" ? 4 : kind == "U" ? 8 : 0
      if digits > 0, index + 2 + digits <= scalars.count {
        let hex = String(String.UnicodeScalarView(scalars[index + 2..<index + 2 + digits]))
        if let value = UInt32(hex, radix: 16), value == 0, hex.allSatisfy(\.isHexDigit) {
          let replacement = digits == 4 ? "\\uFDD0" : "\\U0000FDD0"
          output.append(contentsOf: replacement.unicodeScalars)
          index += 2 + digits
          return
        }
      }
      // Any other escape (`\\`, `\"`, a line-ending backslash): both characters as they are.
      output.append(scalars[index])
      if let kind { output.append(kind) }
      index += kind == nil ? 1 : 2
    }

    while index < scalars.count {
      let scalar = scalars[index]
      switch state {
      case .normal:
        if scalar == "#" {
          state = .comment
        } else if starts(with: "\"\"\"", at: index) {
          output.append(contentsOf: "\"\"\"".unicodeScalars)
          index += 3
          state = .multilineBasic
          continue
        } else if scalar == "\"" {
          state = .basic
        } else if starts(with: "'''", at: index) {
          output.append(contentsOf: "'''".unicodeScalars)
          index += 3
          state = .multilineLiteral
          continue
        } else if scalar == "'" {
          state = .literal
        }
      case .comment:
        if scalar == "\n" { state = .normal }
      case .basic:
        if scalar == "\\" {
          escape()
          continue
        }
        if scalar == "\"" || scalar == "\n" { state = .normal }
      case .multilineBasic:
        if scalar == "\\" {
          escape()
          continue
        }
        if starts(with: "\"\"\"", at: index) {
          closeMultiline("\"")
          continue
        }
      case .literal:
        if scalar == "'" || scalar == "\n" { state = .normal }
      case .multilineLiteral:
        if starts(with: "'''", at: index) {
          closeMultiline("'")
          continue
        }
      }
      output.append(scalar)
      index += 1
    }
    return String(output)
  }

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

  /// Whether a parsed string held a NUL.
  static func containsNul(_ text: String) -> Bool {
    text.unicodeScalars.contains(marker)
  }
}
