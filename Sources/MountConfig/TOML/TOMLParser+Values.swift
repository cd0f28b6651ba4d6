/// Values: arrays, inline tables and the four kinds of strings.
extension TOMLParser {
  // MARK: Values

  mutating func parseValue() throws(TOMLSyntaxError) -> TOMLValue {
    guard let byte = peek() else { throw failure("expected a value, found the end of the file") }
    switch byte {
    case UInt8(ascii: "\""):
      if peek(at: 1) == UInt8(ascii: "\""), peek(at: 2) == UInt8(ascii: "\"") {
        return .string(try parseMultilineString(literal: false))
      }
      return .string(try parseBasicString())
    case UInt8(ascii: "'"):
      if peek(at: 1) == UInt8(ascii: "'"), peek(at: 2) == UInt8(ascii: "'") {
        return .string(try parseMultilineString(literal: true))
      }
      return .string(try parseLiteralString())
    case UInt8(ascii: "["):
      return try parseArray()
    case UInt8(ascii: "{"):
      return try parseInlineTable()
    case UInt8(ascii: "t"), UInt8(ascii: "f"):
      if consume("true") { return .boolean(true) }
      if consume("false") { return .boolean(false) }
      throw failure("expected a value, found \(describeNext())")
    default:
      return try parseNumberOrDate()
    }
  }

  mutating func parseArray() throws(TOMLSyntaxError) -> TOMLValue {
    position += 1
    var elements: [TOMLValue] = []
    while true {
      try skipWhitespaceCommentsAndNewlines()
      if peek() == UInt8(ascii: "]") {
        position += 1
        return .array(elements)
      }
      elements.append(try parseValue())
      try skipWhitespaceCommentsAndNewlines()
      switch peek() {
      case UInt8(ascii: ","): position += 1
      case UInt8(ascii: "]"):
        position += 1
        return .array(elements)
      default: throw failure("expected \",\" or \"]\" in the array, found \(describeNext())")
      }
    }
  }

  mutating func parseInlineTable() throws(TOMLSyntaxError) -> TOMLValue {
    position += 1
    let table = TOMLTable()
    kinds[ObjectIdentifier(table)] = .inline
    skipWhitespace()
    if peek() == UInt8(ascii: "}") {
      position += 1
      return .table(table)
    }
    while true {
      try parseKeyValue(into: table)
      skipWhitespace()
      switch peek() {
      case UInt8(ascii: ","): position += 1
      case UInt8(ascii: "}"):
        position += 1
        seal(table)
        return .table(table)
      default:
        throw failure("expected \",\" or \"}\" in the inline table, found \(describeNext())")
      }
    }
  }

  /// Closes an inline table and the tables its dotted keys made: nothing may be added later.
  mutating func seal(_ table: TOMLTable) {
    kinds[ObjectIdentifier(table)] = .inline
    for (_, value) in table {
      if case .table(let nested) = value, kinds[ObjectIdentifier(nested)] == .dotted {
        seal(nested)
      }
    }
  }

  // MARK: Strings

  mutating func parseBasicString() throws(TOMLSyntaxError) -> String {
    position += 1
    // Runs of plain text are decoded at once: every delimiter is ASCII, so a run never ends
    // inside a character.
    var result = ""
    var runStart = position
    while true {
      guard let byte = peek() else { throw failure("the string is not closed") }
      switch byte {
      case UInt8(ascii: "\""):
        result += String(decoding: bytes[runStart..<position], as: UTF8.self)
        position += 1
        return result
      case UInt8(ascii: "\\"):
        result += String(decoding: bytes[runStart..<position], as: UTF8.self)
        result.unicodeScalars.append(try parseEscape())
        runStart = position
      case UInt8(ascii: "\n"), UInt8(ascii: "\r"):
        throw failure("the string is not closed on its line")
      default:
        if isControl(byte) { throw failure("a control character in a string (write it escaped)") }
        position += 1
      }
    }
  }

  mutating func parseLiteralString() throws(TOMLSyntaxError) -> String {
    position += 1
    let start = position
    while true {
      guard let byte = peek() else { throw failure("the string is not closed") }
      if byte == UInt8(ascii: "'") {
        position += 1
        return String(decoding: bytes[start..<position - 1], as: UTF8.self)
      }
      if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") {
        throw failure("the string is not closed on its line")
      }
      if isControl(byte) { throw failure("a control character in a string") }
      position += 1
    }
  }

  /// `"""…"""` or `'''…'''`: a newline right after the opening is dropped; in the basic form a
  /// backslash at the end of a line drops the line break and the spaces after it; up to two
  /// quotes may stand right before the closing three.
  mutating func parseMultilineString(literal: Bool) throws(TOMLSyntaxError) -> String {
    let quote = bytes[position]
    position += 3
    if peek() == UInt8(ascii: "\n") {
      position += 1
    } else if peek() == UInt8(ascii: "\r"), peek(at: 1) == UInt8(ascii: "\n") {
      position += 2
    }
    var result = ""
    var runStart = position
    func flush(_ result: inout String, upTo end: Int) {
      result += String(decoding: bytes[runStart..<end], as: UTF8.self)
    }
    while true {
      guard let byte = peek() else { throw failure("the multi-line string is not closed") }
      if byte == quote, peek(at: 1) == quote, peek(at: 2) == quote {
        var run = 3
        while peek(at: run) == quote { run += 1 }
        guard run <= 5 else { throw failure("too many quotes at the end of the string") }
        flush(&result, upTo: position + run - 3)
        position += run
        return result
      }
      if !literal, byte == UInt8(ascii: "\\") {
        flush(&result, upTo: position)
        if let skipped = lineEndingBackslash() {
          position = skipped
        } else {
          result.unicodeScalars.append(try parseEscape())
        }
        runStart = position
        continue
      }
      if byte == UInt8(ascii: "\r"), peek(at: 1) == UInt8(ascii: "\n") {
        // A CRLF line break in the text is a line feed in the value.
        flush(&result, upTo: position)
        result += "\n"
        position += 2
        runStart = position
        continue
      }
      if byte != UInt8(ascii: "\n"), isControl(byte) {
        throw failure("a control character in a string\(literal ? "" : " (write it escaped)")")
      }
      position += 1
    }
  }

  /// Where the text goes on after a backslash that ends its line (spaces allowed before the
  /// break), past all whitespace and line breaks; nil if this backslash starts an escape.
  func lineEndingBackslash() -> Int? {
    var index = position + 1
    while index < bytes.count,
      bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t")
    {
      index += 1
    }
    guard index < bytes.count,
      bytes[index] == UInt8(ascii: "\n")
        || (bytes[index] == UInt8(ascii: "\r") && index + 1 < bytes.count
          && bytes[index + 1] == UInt8(ascii: "\n"))
    else { return nil }
    while index < bytes.count,
      [UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r")].contains(
        bytes[index])
    {
      index += 1
    }
    return index
  }

  mutating func parseEscape() throws(TOMLSyntaxError) -> Unicode.Scalar {
    let start = position
    position += 1
    guard let kind = peek() else { throw failure("the string is not closed") }
    position += 1
    switch kind {
    case UInt8(ascii: "b"): return "\u{08}"
    case UInt8(ascii: "t"): return "\t"
    case UInt8(ascii: "n"): return "\n"
    case UInt8(ascii: "f"): return "\u{0C}"
    case UInt8(ascii: "r"): return "\r"
    case UInt8(ascii: "\""): return "\""
    case UInt8(ascii: "\\"): return "\\"
    case UInt8(ascii: "u"), UInt8(ascii: "U"):
      let digits = kind == UInt8(ascii: "u") ? 4 : 8
      guard position + digits <= bytes.count,
        bytes[position..<position + digits].allSatisfy(isHexDigit),
        let value = UInt32(
          String(decoding: bytes[position..<position + digits], as: UTF8.self), radix: 16),
        let scalar = Unicode.Scalar(value)
      else {
        throw failure(
          "\\\(Character(Unicode.Scalar(kind))) needs \(digits) hex digits of a Unicode scalar value",
          at: start)
      }
      position += digits
      return scalar
    default:
      throw failure("unknown escape \\\(Character(Unicode.Scalar(kind)))", at: start)
    }
  }
}
