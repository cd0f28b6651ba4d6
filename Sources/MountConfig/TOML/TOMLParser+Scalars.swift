/// Numbers, dates and times, and the byte-level reading all parts share.
extension TOMLParser {
  // MARK: Numbers, dates and times

  mutating func parseNumberOrDate() throws(TOMLSyntaxError) -> TOMLValue {
    let start = position
    if isDigit(peek()), isDigit(peek(at: 1)), peek(at: 2) == UInt8(ascii: ":") {
      return .time(try parseTime(from: start))
    }
    if (0..<4).allSatisfy({ isDigit(peek(at: $0)) }), peek(at: 4) == UInt8(ascii: "-") {
      return try parseDateOrDateTime(from: start)
    }
    while let byte = peek(), isNumberByte(byte) { position += 1 }
    let token = String(decoding: bytes[start..<position], as: UTF8.self)
    guard !token.isEmpty else { throw failure("expected a value, found \(describeNext())") }
    if let value = Self.integer(token) { return .integer(value) }
    if let value = Self.float(token) { return .float(value) }
    if Self.looksLikeInteger(token) {
      throw failure("the integer \(token) is out of range (64 bits)", at: start)
    }
    throw failure("\(token) is not a value (a string needs quotes)", at: start)
  }

  static func integer(_ token: String) -> Int? {
    var text = Substring(token)
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] where text.hasPrefix(prefix) {
      let digits = text.dropFirst(2)
      guard underscoresBetweenDigits(digits, radix: radix) else { return nil }
      return Int(digits.filter { $0 != "_" }, radix: radix)
    }
    var sign = ""
    if text.first == "+" || text.first == "-" {
      sign = text.first == "-" ? "-" : ""
      text = text.dropFirst()
    }
    guard underscoresBetweenDigits(text, radix: 10), text == "0" || text.first != "0" else {
      return nil
    }
    return Int(sign + text.filter { $0 != "_" })
  }

  static func looksLikeInteger(_ token: String) -> Bool {
    let body = token.first == "+" || token.first == "-" ? token.dropFirst() : Substring(token)
    return !body.isEmpty && body.allSatisfy { $0.isNumber || $0 == "_" } && body.first != "0"
  }

  static func float(_ token: String) -> Double? {
    var text = Substring(token)
    var negative = false
    if text.first == "+" || text.first == "-" {
      negative = text.first == "-"
      text = text.dropFirst()
    }
    if text == "inf" { return negative ? -.infinity : .infinity }
    if text == "nan" { return .nan }
    // decimal-int [ "." digits ] [ ("e"|"E") [sign] digits ], with a fraction or an exponent
    let exponentStart = text.firstIndex { $0 == "e" || $0 == "E" }
    let mantissa = text[..<(exponentStart ?? text.endIndex)]
    let parts = mantissa.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count <= 2, let whole = parts.first,
      underscoresBetweenDigits(whole, radix: 10), whole == "0" || whole.first != "0"
    else { return nil }
    if parts.count == 2 { guard underscoresBetweenDigits(parts[1], radix: 10) else { return nil } }
    if let exponentStart {
      var exponent = text[text.index(after: exponentStart)...]
      if exponent.first == "+" || exponent.first == "-" { exponent = exponent.dropFirst() }
      guard underscoresBetweenDigits(exponent, radix: 10) else { return nil }
    } else {
      guard parts.count == 2 else { return nil }
    }
    let value = Double(text.filter { $0 != "_" })
    return value.map { negative ? -$0 : $0 }
  }

  /// Digits of `radix`, at least one, an underscore only between two digits.
  static func underscoresBetweenDigits(_ text: Substring, radix: Int) -> Bool {
    var previousWasDigit = false
    for character in text {
      if character == "_" {
        guard previousWasDigit else { return false }
        previousWasDigit = false
      } else {
        guard character.hexDigitValue.map({ $0 < radix }) == true else { return false }
        previousWasDigit = true
      }
    }
    return previousWasDigit
  }

  /// `1979-05-27`, optionally with `T07:32:00` (or a space for the T) and an offset.
  mutating func parseDateOrDateTime(from start: Int) throws(TOMLSyntaxError) -> TOMLValue {
    guard let year = digits(4), consume("-"), let month = digits(2), consume("-"),
      let day = digits(2)
    else { throw failure("a date is written YYYY-MM-DD", at: start) }
    let days = [
      31, year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28, 31, 30, 31, 30, 31, 31,
      30, 31, 30, 31,
    ]
    guard (1...12).contains(month), (1...days[month - 1]).contains(day) else {
      throw failure("no such date", at: start)
    }
    let separator = peek()
    let hasTime =
      separator == UInt8(ascii: "T") || separator == UInt8(ascii: "t")
      || (separator == UInt8(ascii: " ") && isDigit(peek(at: 1)) && isDigit(peek(at: 2))
        && peek(at: 3) == UInt8(ascii: ":"))
    guard hasTime else { return .date(text(from: start)) }
    position += 1
    _ = try parseTime(from: start)
    if consume("Z") || consume("z") { return .dateTime(text(from: start)) }
    if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") {
      position += 1
      guard let hours = digits(2), consume(":"), let minutes = digits(2), hours < 24, minutes < 60
      else { throw failure("a time offset is written +HH:MM", at: start) }
    }
    return .dateTime(text(from: start))
  }

  /// `07:32:00` with optional fractional seconds; returns the text from `start`.
  mutating func parseTime(from start: Int) throws(TOMLSyntaxError) -> String {
    guard let hour = digits(2), consume(":"), let minute = digits(2), consume(":"),
      let second = digits(2), hour < 24, minute < 60, second <= 60
    else { throw failure("a time is written HH:MM:SS", at: start) }
    if consume(".") {
      guard isDigit(peek()) else { throw failure("fractional seconds need digits", at: start) }
      while isDigit(peek()) { position += 1 }
    }
    return text(from: start)
  }

  mutating func digits(_ count: Int) -> Int? {
    guard (0..<count).allSatisfy({ isDigit(peek(at: $0)) }) else { return nil }
    let value = bytes[position..<position + count].reduce(0) { $0 * 10 + Int($1 - 48) }
    position += count
    return value
  }

  func text(from start: Int) -> String {
    String(decoding: bytes[start..<position], as: UTF8.self)
  }

  // MARK: Bytes

  func peek(at offset: Int = 0) -> UInt8? {
    position + offset < bytes.count ? bytes[position + offset] : nil
  }

  mutating func consume(_ literal: String) -> Bool {
    let expected = Array(literal.utf8)
    guard position + expected.count <= bytes.count,
      bytes[position..<position + expected.count].elementsEqual(expected)
    else { return false }
    position += expected.count
    return true
  }

  mutating func expect(_ byte: UInt8, _ what: String) throws(TOMLSyntaxError) {
    skipWhitespace()
    guard peek() == byte else { throw failure("expected \(what), found \(describeNext())") }
    position += 1
  }

  mutating func skipWhitespace() {
    while peek() == UInt8(ascii: " ") || peek() == UInt8(ascii: "\t") { position += 1 }
  }

  mutating func skipWhitespaceCommentsAndNewlines() throws(TOMLSyntaxError) {
    while let byte = peek() {
      switch byte {
      case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"): position += 1
      case UInt8(ascii: "\r") where peek(at: 1) == UInt8(ascii: "\n"): position += 2
      case UInt8(ascii: "#"): try skipComment()
      default: return
      }
    }
  }

  func describeNext() -> String {
    guard let byte = peek() else { return "the end of the file" }
    switch byte {
    case UInt8(ascii: "\n"): return "the end of the line"
    case UInt8(ascii: "\r"):
      return peek(at: 1) == UInt8(ascii: "\n")
        ? "the end of the line" : "a carriage return without a line feed"
    case 0x21...0x7E: return "\"\(Character(Unicode.Scalar(byte)))\""
    default: return "a byte 0x\(String(byte, radix: 16))"
    }
  }

  func failure(_ message: String, at offset: Int? = nil) -> TOMLSyntaxError {
    let end = min(offset ?? position, bytes.count)
    var line = 1
    var lineStart = 0
    for index in 0..<end where bytes[index] == UInt8(ascii: "\n") {
      line += 1
      lineStart = index + 1
    }
    let column = String(decoding: bytes[lineStart..<end], as: UTF8.self).unicodeScalars.count + 1
    return TOMLSyntaxError(line: line, column: column, message: message)
  }
}

func isDigit(_ byte: UInt8?) -> Bool {
  byte.map { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) } ?? false
}

func isHexDigit(_ byte: UInt8) -> Bool {
  isDigit(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
}

func isBareKeyByte(_ byte: UInt8) -> Bool {
  isDigit(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
    || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
}

/// What a number may be made of: digits, signs, `_`, `.`, exponents, prefixes, inf and nan.
func isNumberByte(_ byte: UInt8) -> Bool {
  isBareKeyByte(byte) || byte == UInt8(ascii: "+") || byte == UInt8(ascii: ".")
}

/// A control character other than tab (TOML allows none of them raw in strings or comments).
func isControl(_ byte: UInt8) -> Bool {
  (byte < 0x20 && byte != UInt8(ascii: "\t")) || byte == 0x7F
}
