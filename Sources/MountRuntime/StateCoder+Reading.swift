import Glibc

/// The reading half of `StateCoder`: a `Decoder` over the bytes, which finds each key where the
/// writer put it and steps over what it does not ask for.
extension StateCoder {
  struct StateDecoder: Decoder {
    let reader: Reader
    let offset: Int
    var codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
      KeyedDecodingContainer(
        try KeyedReader<Key>(reader: reader, offset: offset, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
      try UnkeyedReader(reader: reader, offset: offset, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
      SingleReader(reader: reader, offset: offset, codingPath: codingPath)
    }
  }

  struct KeyedReader<Key: CodingKey>: KeyedDecodingContainerProtocol {
    /// Where the next key is looked for first, and where the last one found is (asked again
    /// after `decodeNil` said no): offsets only, so that a lookup stores no string.
    final class Cursor {
      var index = 0
      var offset: Int
      var lastEntry = -1
      init(offset: Int) { self.offset = offset }
    }

    let reader: Reader
    let count: Int
    let entries: Int
    let cursor: Cursor
    var codingPath: [any CodingKey]

    init(reader: Reader, offset: Int, codingPath: [any CodingKey]) throws {
      guard try reader.tag(at: offset, codingPath) == .keyed else {
        throw StateCoder.corrupted(codingPath, "expected a keyed container")
      }
      self.reader = reader
      count = Int(reader.word32(at: offset + 1))
      entries = offset + 9
      cursor = Cursor(offset: entries)
      self.codingPath = codingPath
    }

    /// The value of `key`: at the cursor when keys are asked in the order written, else found
    /// by a scan.
    private func find(_ key: Key) throws -> Int? {
      let name = key.stringValue
      func value(at entry: Int) -> Int { entry + 4 + Int(reader.word32(at: entry)) }
      if cursor.lastEntry >= 0, reader.keyMatches(at: cursor.lastEntry, name) {
        return value(at: cursor.lastEntry)
      }
      if cursor.index < count, reader.keyMatches(at: cursor.offset, name) {
        let found = value(at: cursor.offset)
        cursor.lastEntry = cursor.offset
        cursor.index += 1
        cursor.offset = try reader.skip(at: found, codingPath)
        return found
      }
      var position = entries
      for _ in 0..<count {
        let found = value(at: position)
        if reader.keyMatches(at: position, name) {
          cursor.lastEntry = position
          return found
        }
        position = try reader.skip(at: found, codingPath)
      }
      return nil
    }

    private func value(_ key: Key) throws -> Int {
      guard let offset = try find(key) else {
        throw DecodingError.keyNotFound(
          key, .init(codingPath: codingPath, debugDescription: "no \(key.stringValue)"))
      }
      return offset
    }

    var allKeys: [Key] {
      var keys: [Key] = []
      var position = entries
      for _ in 0..<count {
        if let key = Key(stringValue: reader.text(at: position)) { keys.append(key) }
        let value = position + 4 + Int(reader.word32(at: position))
        guard let next = try? reader.skip(at: value, codingPath) else { break }
        position = next
      }
      return keys
    }

    func contains(_ key: Key) -> Bool { (try? find(key)) != nil }

    func decodeNil(forKey key: Key) throws -> Bool {
      try reader.tag(at: value(key), codingPath) == .null
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
      try reader.value(type, at: value(key), codingPath)
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
      guard let offset = try find(key), try reader.tag(at: offset, codingPath) != .null else {
        return nil
      }
      return try reader.value(type, at: offset, codingPath)
    }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try decode(type, key) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try decode(type, key) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try decode(type, key) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float {
      Float(try decode(Double.self, key))
    }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try decode(type, key) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try integer(type, key) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try integer(type, key) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try decode(type, key) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try decode(type, key) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try integer(type, key) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try integer(type, key) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try integer(type, key) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try decode(type, key) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try decode(type, key) }

    func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? {
      try optional(type, key)
    }
    func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? {
      try optional(type, key)
    }
    func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? {
      try optional(type, key)
    }
    func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? {
      try optional(type, key)
    }
    func decodeIfPresent(_ type: Int32.Type, forKey key: Key) throws -> Int32? {
      try optional(type, key)
    }
    func decodeIfPresent(_ type: Int64.Type, forKey key: Key) throws -> Int64? {
      try optional(type, key)
    }
    func decodeIfPresent(_ type: UInt32.Type, forKey key: Key) throws -> UInt32? {
      try optional(type, key)
    }
    func decodeIfPresent(_ type: UInt64.Type, forKey key: Key) throws -> UInt64? {
      try optional(type, key)
    }

    private func decode<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T {
      try reader.value(type, at: value(key), codingPath)
    }

    private func optional<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T? {
      try decodeIfPresent(type, forKey: key)
    }

    private func integer<T: FixedWidthInteger>(_ type: T.Type, _ key: Key) throws -> T {
      try reader.integer(type, at: value(key), codingPath)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws
      -> KeyedDecodingContainer<NestedKey>
    {
      KeyedDecodingContainer(
        try KeyedReader<NestedKey>(
          reader: reader, offset: value(key), codingPath: codingPath + [key]))
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
      try UnkeyedReader(reader: reader, offset: value(key), codingPath: codingPath + [key])
    }

    func superDecoder() throws -> any Decoder {
      StateDecoder(
        reader: reader, offset: try value(Key(stringValue: "super")!), codingPath: codingPath)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
      StateDecoder(reader: reader, offset: try value(key), codingPath: codingPath + [key])
    }
  }

  struct UnkeyedReader: UnkeyedDecodingContainer {
    let reader: Reader
    var codingPath: [any CodingKey]
    let count: Int?
    private(set) var currentIndex = 0
    private var position: Int

    init(reader: Reader, offset: Int, codingPath: [any CodingKey]) throws {
      guard try reader.tag(at: offset, codingPath) == .unkeyed else {
        throw StateCoder.corrupted(codingPath, "expected an unkeyed container")
      }
      self.reader = reader
      self.codingPath = codingPath
      count = Int(reader.word32(at: offset + 1))
      position = offset + 9
    }

    var isAtEnd: Bool { currentIndex >= count! }

    private mutating func next() throws -> Int {
      guard !isAtEnd else {
        throw StateCoder.corrupted(codingPath, "no element \(currentIndex)")
      }
      let at = position
      position = try reader.skip(at: at, codingPath)
      currentIndex += 1
      return at
    }

    mutating func decodeNil() throws -> Bool {
      guard !isAtEnd, try reader.tag(at: position, codingPath) == .null else { return false }
      _ = try next()
      return true
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
      let at = try next()
      return try reader.value(type, at: at, codingPath)
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool {
      try reader.bool(at: next(), codingPath)
    }
    mutating func decode(_ type: String.Type) throws -> String {
      try reader.string(at: next(), codingPath)
    }
    mutating func decode(_ type: Double.Type) throws -> Double {
      try reader.double(at: next(), codingPath)
    }
    mutating func decode(_ type: Float.Type) throws -> Float {
      Float(try reader.double(at: next(), codingPath))
    }
    mutating func decode(_ type: Int.Type) throws -> Int {
      try reader.integer(type, at: next(), codingPath)
    }
    mutating func decode(_ type: Int8.Type) throws -> Int8 {
      try reader.integer(type, at: next(), codingPath)
    }
    mutating func decode(_ type: Int16.Type) throws -> Int16 {
      try reader.integer(type, at: next(), codingPath)
    }
    mutating func decode(_ type: Int32.Type) throws -> Int32 {
      try reader.integer(type, at: next(), codingPath)
    }
    mutating func decode(_ type: Int64.Type) throws -> Int64 {
      try reader.integer(type, at: next(), codingPath)
    }
    mutating func decode(_ type: UInt.Type) throws -> UInt {
      try reader.integer(type, at: next(), codingPath)
    }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 {
      try reader.integer(type, at: next(), codingPath)
    }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 {
      try reader.integer(type, at: next(), codingPath)
    }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 {
      try reader.integer(type, at: next(), codingPath)
    }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 {
      try reader.integer(type, at: next(), codingPath)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws
      -> KeyedDecodingContainer<NestedKey>
    {
      KeyedDecodingContainer(
        try KeyedReader<NestedKey>(reader: reader, offset: next(), codingPath: codingPath))
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
      try UnkeyedReader(reader: reader, offset: next(), codingPath: codingPath)
    }

    mutating func superDecoder() throws -> any Decoder {
      StateDecoder(reader: reader, offset: try next(), codingPath: codingPath)
    }
  }

  struct SingleReader: SingleValueDecodingContainer {
    let reader: Reader
    let offset: Int
    var codingPath: [any CodingKey]

    func decodeNil() -> Bool { (try? reader.tag(at: offset, codingPath)) == .null }
    func decode(_ type: Bool.Type) throws -> Bool { try reader.bool(at: offset, codingPath) }
    func decode(_ type: String.Type) throws -> String { try reader.string(at: offset, codingPath) }
    func decode(_ type: Double.Type) throws -> Double { try reader.double(at: offset, codingPath) }
    func decode(_ type: Float.Type) throws -> Float {
      Float(try reader.double(at: offset, codingPath))
    }
    func decode(_ type: Int.Type) throws -> Int { try reader.integer(type, at: offset, codingPath) }
    func decode(_ type: Int8.Type) throws -> Int8 {
      try reader.integer(type, at: offset, codingPath)
    }
    func decode(_ type: Int16.Type) throws -> Int16 {
      try reader.integer(type, at: offset, codingPath)
    }
    func decode(_ type: Int32.Type) throws -> Int32 {
      try reader.integer(type, at: offset, codingPath)
    }
    func decode(_ type: Int64.Type) throws -> Int64 {
      try reader.integer(type, at: offset, codingPath)
    }
    func decode(_ type: UInt.Type) throws -> UInt {
      try reader.integer(type, at: offset, codingPath)
    }
    func decode(_ type: UInt8.Type) throws -> UInt8 {
      try reader.integer(type, at: offset, codingPath)
    }
    func decode(_ type: UInt16.Type) throws -> UInt16 {
      try reader.integer(type, at: offset, codingPath)
    }
    func decode(_ type: UInt32.Type) throws -> UInt32 {
      try reader.integer(type, at: offset, codingPath)
    }
    func decode(_ type: UInt64.Type) throws -> UInt64 {
      try reader.integer(type, at: offset, codingPath)
    }
    func decode<T: Decodable>(_ type: T.Type) throws -> T {
      try reader.value(type, at: offset, codingPath)
    }
  }
}
