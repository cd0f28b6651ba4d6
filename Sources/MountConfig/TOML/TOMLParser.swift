/// Parses TOML 1.0 (https://toml.io/en/v1.0.0) into a ``TOMLTable``, with the rules on defining
/// tables that make a document mean one thing: no key or table defined twice, no table defined
/// by a header after dotted keys defined it (or the other way round), inline tables closed.
struct TOMLParser {
  let bytes: [UInt8]
  var position = 0
  let root = TOMLTable()
  /// How each table came to be: what may still be added to it, and how.
  var kinds: [ObjectIdentifier: TableKind] = [:]
  /// The keys that hold arrays of tables (`[[name]]`), which a header may append to.
  var tableArrays: Set<Slot> = []

  enum TableKind {
    /// Made on the way to a header's table: a later header may still define it.
    case implicit
    /// Defined by a `[header]`, or an element of an `[[array]]`.
    case header
    /// Made by dotted keys (`a.b = 1`): more dotted keys may add to it, no header.
    case dotted
    /// `{ … }`: complete as written.
    case inline
  }

  struct Slot: Hashable {
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

  mutating func parseDocument() throws(TOMLSyntaxError) {
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
  mutating func endOfLine() throws(TOMLSyntaxError) {
    skipWhitespace()
    if peek() == UInt8(ascii: "#") { try skipComment() }
    switch peek() {
    case nil: return
    case UInt8(ascii: "\n"): position += 1
    case UInt8(ascii: "\r") where peek(at: 1) == UInt8(ascii: "\n"): position += 2
    default: throw failure("expected the end of the line, found \(describeNext())")
    }
  }

  mutating func skipComment() throws(TOMLSyntaxError) {
    position += 1
    while let byte = peek(), byte != UInt8(ascii: "\n") {
      if byte == UInt8(ascii: "\r"), peek(at: 1) == UInt8(ascii: "\n") { return }
      if isControl(byte) { throw failure("a control character in a comment") }
      position += 1
    }
  }

  /// `[a.b.c]`: defines the table a.b.c, making a and a.b on the way as needed.
  mutating func parseTableHeader() throws(TOMLSyntaxError) -> TOMLTable {
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
  mutating func parseArrayTableHeader() throws(TOMLSyntaxError) -> TOMLTable {
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
  mutating func walk(_ keys: ArraySlice<String>, from start: TOMLTable, at offset: Int)
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

  mutating func makeTable(in parent: TOMLTable, key: String, kind: TableKind) -> TOMLTable {
    let table = TOMLTable()
    kinds[ObjectIdentifier(table)] = kind
    parent.set(key, .table(table))
    return table
  }

  /// `a.b.c = value` in `table`, making a and a.b as tables of dotted keys where missing.
  mutating func parseKeyValue(into table: TOMLTable) throws(TOMLSyntaxError) {
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
  mutating func parseKey() throws(TOMLSyntaxError) -> [String] {
    var keys: [String] = []
    while true {
      skipWhitespace()
      keys.append(try parseSimpleKey())
      skipWhitespace()
      guard peek() == UInt8(ascii: ".") else { return keys }
      position += 1
    }
  }

  mutating func parseSimpleKey() throws(TOMLSyntaxError) -> String {
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

  func dotted(_ keys: [String]) -> String {
    keys.map(tomlKey).joined(separator: ".")
  }
}
