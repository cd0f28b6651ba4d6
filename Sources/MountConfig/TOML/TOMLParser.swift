/// Parses TOML 1.0 (https://toml.io/en/v1.0.0) into a ``TOMLTable``, with the rules on defining
/// tables that make a document mean one thing: no key or table defined twice, no table defined
/// by a header after dotted keys defined it (or the other way round), inline tables closed.
struct TOMLParser {
  private let bytes: [UInt8]
  private var position = 0
  private let root = TOMLTable()
  /// How each table came to be: what may still be added to it, and how.
  private var kinds: [ObjectIdentifier: TableKind] = [:]
  /// The keys that hold arrays of tables (`[[name]]`), which a header may append to.
  private var tableArrays: Set<Slot> = []

  private enum TableKind {
    /// Made on the way to a header's table: a later header may still define it.
    case implicit
    /// Defined by a `[header]`, or an element of an `[[array]]`.
    case header
    /// Made by dotted keys (`a.b = 1`): more dotted keys may add to it, no header.
    case dotted
    /// `{ … }`: complete as written.
    case inline
  }

  private struct Slot: Hashable {
    let table: ObjectIdentifier
    let key: String
  }

  static func parse(_ text: String) throws(TOMLSyntaxError) -> TOMLTable {
    var parser = TOMLParser(bytes: Array(text.utf8))
    try parser.parseDocument()
    return parser.root
  }

  private init(bytes: [UInt8]) {
    self.bytes = bytes
    kinds[ObjectIdentifier(root)] = .header
  }

  // MARK: Document structure

  private mutating func parseDocument() throws(TOMLSyntaxError) {
    var current = root
    while true {
      skipWhitespace()
      guard let byte = peek() else { return }
      switch byte {
      case UInt8(ascii: "#"), UInt8(ascii: "\n"), UInt8(ascii: "\r"):
        break
      case UInt8(ascii: "["):
        current =
          peek(at: 1) == UInt8(ascii: "[") ? try parseArrayTableHeader() : try parseTableHeader()
      default:
        try parseKeyValue(into: current)
      }
      try endOfLine()
    }
  }

  /// After an expression: spaces, a comment, then a newline or the end.
  private mutating func endOfLine() throws(TOMLSyntaxError) {
    skipWhitespace()
    if peek() == UInt8(ascii: "#") { try skipComment() }
    switch peek() {
    case nil: return
    case UInt8(ascii: "\n"): position += 1
    case UInt8(ascii: "\r") where peek(at: 1) == UInt8(ascii: "\n"): position += 2
    default: throw failure("expected the end of the line, found \(describeNext())")
    }
  }

  private mutating func skipComment() throws(TOMLSyntaxError) {
    position += 1
    while let byte = peek(), byte != UInt8(ascii: "\n") {
      if byte == UInt8(ascii: "\r"), peek(at: 1) == UInt8(ascii: "\n") { return }
      if isControl(byte) { throw failure("a control character in a comment") }
      position += 1
    }
  }

  /// `[a.b.c]`: defines the table a.b.c, making a and a.b on the way as needed.
  private mutating func parseTableHeader() throws(TOMLSyntaxError) -> TOMLTable {
    let start = position
    position += 1
    let keys = try parseKey()
    try expect(UInt8(ascii: "]"), "\"]\" to close the table header")
    let parent = try walk(keys.dropLast(), from: root, at: start)
    let last = keys.last!
    switch parent[last] {
    case nil:
      return makeTable(in: parent, key: last, kind: .header)
    case .table(let table) where kinds[ObjectIdentifier(table)] == .implicit:
      kinds[ObjectIdentifier(table)] = .header
      return table
    default:
      throw failure("the table [\(dotted(keys))] is defined more than once", at: start)
    }
  }

  /// `[[a.b.c]]`: a new table at the end of the array of tables a.b.c.
  private mutating func parseArrayTableHeader() throws(TOMLSyntaxError) -> TOMLTable {
    let start = position
    position += 2
    let keys = try parseKey()
    try expect(UInt8(ascii: "]"), "\"]]\" to close the array of tables header")
    guard peek() == UInt8(ascii: "]") else {
      throw failure("expected \"]]\" to close the array of tables header, found \(describeNext())")
    }
    position += 1
    let parent = try walk(keys.dropLast(), from: root, at: start)
    let last = keys.last!
    let element = TOMLTable()
    kinds[ObjectIdentifier(element)] = .header
    switch parent[last] {
    case nil:
      parent.set(last, .array([.table(element)]))
      tableArrays.insert(Slot(table: ObjectIdentifier(parent), key: last))
    case .array(let elements)
    where tableArrays.contains(Slot(table: ObjectIdentifier(parent), key: last)):
      parent.set(last, .array(elements + [.table(element)]))
    default:
      throw failure(
        "[[\(dotted(keys))]] is not an array of tables: the key is defined otherwise", at: start)
    }
    return element
  }

  /// Follows a header's leading keys: into tables (making missing ones), and into the last
  /// element of an array of tables.
  private mutating func walk(_ keys: ArraySlice<String>, from start: TOMLTable, at offset: Int)
    throws(TOMLSyntaxError) -> TOMLTable
  {
    var table = start
    for (index, key) in keys.enumerated() {
      switch table[key] {
      case nil:
        table = makeTable(in: table, key: key, kind: .implicit)
      case .table(let next) where kinds[ObjectIdentifier(next)] != .inline:
        table = next
      case .array(let elements)
      where tableArrays.contains(Slot(table: ObjectIdentifier(table), key: key)):
        // An array of tables holds tables only, at least one.
        if case .table(let last)? = elements.last { table = last }
      default:
        let path = dotted(Array(keys.prefix(index + 1)))
        throw failure("\(path) is already a value that cannot hold tables", at: offset)
      }
    }
    return table
  }

  private mutating func makeTable(in parent: TOMLTable, key: String, kind: TableKind) -> TOMLTable {
    let table = TOMLTable()
    kinds[ObjectIdentifier(table)] = kind
    parent.set(key, .table(table))
    return table
  }

  /// `a.b.c = value` in `table`, making a and a.b as tables of dotted keys where missing.
  private mutating func parseKeyValue(into table: TOMLTable) throws(TOMLSyntaxError) {
    let start = position
    let keys = try parseKey()
    try expect(UInt8(ascii: "="), "\"=\" after the key \(dotted(keys))")
    skipWhitespace()
    let value = try parseValue()
    var target = table
    for (index, key) in keys.dropLast().enumerated() {
      switch target[key] {
      case nil:
        target = makeTable(in: target, key: key, kind: .dotted)
      case .table(let next)
      where kinds[ObjectIdentifier(next)] == .dotted || kinds[ObjectIdentifier(next)] == .implicit:
        kinds[ObjectIdentifier(next)] = .dotted
        target = next
      default:
        let path = dotted(Array(keys.prefix(index + 1)))
        throw failure(
          "cannot add \(dotted(keys)) with dotted keys: \(path) is defined elsewhere", at: start)
      }
    }
    let last = keys.last!
    guard target[last] == nil else {
      throw failure("the key \(dotted(keys)) is defined more than once", at: start)
    }
    target.set(last, value)
  }

  // MARK: Keys

  /// One or more keys separated by dots, with optional spaces around them.
  private mutating func parseKey() throws(TOMLSyntaxError) -> [String] {
    var keys: [String] = []
    while true {
      skipWhitespace()
      keys.append(try parseSimpleKey())
      skipWhitespace()
      guard peek() == UInt8(ascii: ".") else { return keys }
      position += 1
    }
  }

  private mutating func parseSimpleKey() throws(TOMLSyntaxError) -> String {
    switch peek() {
    case UInt8(ascii: "\""):
      guard peek(at: 1) != UInt8(ascii: "\"") || peek(at: 2) != UInt8(ascii: "\"") else {
        throw failure("a key cannot be a multi-line string")
      }
      return try parseBasicString()
    case UInt8(ascii: "'"):
      guard peek(at: 1) != UInt8(ascii: "'") || peek(at: 2) != UInt8(ascii: "'") else {
        throw failure("a key cannot be a multi-line string")
      }
      return try parseLiteralString()
    default:
      let start = position
      while let byte = peek(), isBareKeyByte(byte) { position += 1 }
      guard position > start else { throw failure("expected a key, found \(describeNext())") }
      return String(decoding: bytes[start..<position], as: UTF8.self)
    }
  }

  // MARK: Values

  private mutating func parseValue() throws(TOMLSyntaxError) -> TOMLValue {
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

  private mutating func parseArray() throws(TOMLSyntaxError) -> TOMLValue {
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

  private mutating func parseInlineTable() throws(TOMLSyntaxError) -> TOMLValue {
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
  private mutating func seal(_ table: TOMLTable) {
    kinds[ObjectIdentifier(table)] = .inline
    for (_, value) in table {
      if case .table(let nested) = value, kinds[ObjectIdentifier(nested)] == .dotted {
        seal(nested)
      }
    }
  }

  // MARK: Strings

  private mutating func parseBasicString() throws(TOMLSyntaxError) -> String {
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

  private mutating func parseLiteralString() throws(TOMLSyntaxError) -> String {
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
  private mutating func parseMultilineString(literal: Bool) throws(TOMLSyntaxError) -> String {
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
  private func lineEndingBackslash() -> Int? {
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

  private mutating func parseEscape() throws(TOMLSyntaxError) -> Unicode.Scalar {
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

  // MARK: Numbers, dates and times

  private mutating func parseNumberOrDate() throws(TOMLSyntaxError) -> TOMLValue {
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

  private static func integer(_ token: String) -> Int? {
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

  private static func looksLikeInteger(_ token: String) -> Bool {
    let body = token.first == "+" || token.first == "-" ? token.dropFirst() : Substring(token)
    return !body.isEmpty && body.allSatisfy { $0.isNumber || $0 == "_" } && body.first != "0"
  }

  private static func float(_ token: String) -> Double? {
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
  private static func underscoresBetweenDigits(_ text: Substring, radix: Int) -> Bool {
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
  private mutating func parseDateOrDateTime(from start: Int) throws(TOMLSyntaxError) -> TOMLValue {
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
  private mutating func parseTime(from start: Int) throws(TOMLSyntaxError) -> String {
    guard let hour = digits(2), consume(":"), let minute = digits(2), consume(":"),
      let second = digits(2), hour < 24, minute < 60, second <= 60
    else { throw failure("a time is written HH:MM:SS", at: start) }
    if consume(".") {
      guard isDigit(peek()) else { throw failure("fractional seconds need digits", at: start) }
      while isDigit(peek()) { position += 1 }
    }
    return text(from: start)
  }

  private mutating func digits(_ count: Int) -> Int? {
    guard (0..<count).allSatisfy({ isDigit(peek(at: $0)) }) else { return nil }
    let value = bytes[position..<position + count].reduce(0) { $0 * 10 + Int($1 - 48) }
    position += count
    return value
  }

  private func text(from start: Int) -> String {
    String(decoding: bytes[start..<position], as: UTF8.self)
  }

  // MARK: Bytes

  private func peek(at offset: Int = 0) -> UInt8? {
    position + offset < bytes.count ? bytes[position + offset] : nil
  }

  private mutating func consume(_ literal: String) -> Bool {
    let expected = Array(literal.utf8)
    guard position + expected.count <= bytes.count,
      bytes[position..<position + expected.count].elementsEqual(expected)
    else { return false }
    position += expected.count
    return true
  }

  private mutating func expect(_ byte: UInt8, _ what: String) throws(TOMLSyntaxError) {
    skipWhitespace()
    guard peek() == byte else { throw failure("expected \(what), found \(describeNext())") }
    position += 1
  }

  private mutating func skipWhitespace() {
    while peek() == UInt8(ascii: " ") || peek() == UInt8(ascii: "\t") { position += 1 }
  }

  private mutating func skipWhitespaceCommentsAndNewlines() throws(TOMLSyntaxError) {
    while let byte = peek() {
      switch byte {
      case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"): position += 1
      case UInt8(ascii: "\r") where peek(at: 1) == UInt8(ascii: "\n"): position += 2
      case UInt8(ascii: "#"): try skipComment()
      default: return
      }
    }
  }

  private func describeNext() -> String {
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

  private func failure(_ message: String, at offset: Int? = nil) -> TOMLSyntaxError {
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

  private func dotted(_ keys: [String]) -> String {
    keys.map(tomlKey).joined(separator: ".")
  }
}

private func isDigit(_ byte: UInt8?) -> Bool {
  byte.map { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) } ?? false
}

private func isHexDigit(_ byte: UInt8) -> Bool {
  isDigit(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
}

private func isBareKeyByte(_ byte: UInt8) -> Bool {
  isDigit(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
    || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
}

/// What a number may be made of: digits, signs, `_`, `.`, exponents, prefixes, inf and nan.
private func isNumberByte(_ byte: UInt8) -> Bool {
  isBareKeyByte(byte) || byte == UInt8(ascii: "+") || byte == UInt8(ascii: ".")
}

/// A control character other than tab (TOML allows none of them raw in strings or comments).
private func isControl(_ byte: UInt8) -> Bool {
  (byte < 0x20 && byte != UInt8(ascii: "\t")) || byte == 0x7F
}
