import Glibc

/// A compact binary form of `Codable` values, for the state an upgrade hands over: the state of
/// 1,000 mounts must cross an exec in milliseconds, and JSON took 80 ms each way.
///
/// Every value is a tag byte and its payload: nil, false, true, an 8-byte integer (signed or
/// not), an 8-byte double, a string (length and UTF-8), a keyed container (count, byte length,
/// then key and value per entry) or an unkeyed one (count, byte length, values). Keyed
/// containers keep every key, nil included, in the order written; a decoder that asks for keys in
/// the same order (as synthesized `Codable` does) finds each at once, any other order by a scan.
/// Lengths let a reader step over any value without reading it.
enum StateCoder {
  fileprivate enum Tag: UInt8 {
    case null = 0, no, yes, int, uint, double, string, keyed, unkeyed
  }

  static func encode(_ value: some Encodable) throws -> [UInt8] {
    let writer = Writer()
    try value.encode(to: StateEncoder(writer: writer))
    _ = try writer.fixLengths(at: 0)
    return writer.bytes
  }

  /// Checks the whole form first (every length within bounds, nothing left over), so that a
  /// damaged state is an error, not a value made of parts.
  static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
    let reader = Reader(bytes: bytes)
    guard try reader.validate(at: 0) == bytes.count else {
      throw corrupted([], "bytes left over after the value")
    }
    return try T(from: StateDecoder(reader: reader, offset: 0, codingPath: []))
  }

  fileprivate static func corrupted(_ path: [any CodingKey], _ what: String) -> DecodingError {
    DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: what))
  }
}

// MARK: Writing

extension StateCoder {
  fileprivate final class Writer {
    var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(1 << 20) }

    func tag(_ tag: Tag) { bytes.append(tag.rawValue) }

    func word32(_ value: UInt32) {
      withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    func word64(_ value: UInt64) {
      withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    func text(_ string: String) {
      var string = string
      string.withUTF8 { utf8 in
        word32(UInt32(utf8.count))
        bytes.append(contentsOf: utf8)
      }
    }

    func string(_ value: String) {
      tag(.string)
      text(value)
    }

    func int(_ value: Int64) {
      tag(.int)
      word64(UInt64(bitPattern: value))
    }

    func uint(_ value: UInt64) {
      tag(.uint)
      word64(value)
    }

    func double(_ value: Double) {
      tag(.double)
      word64(value.bitPattern)
    }

    /// A container's header; returns where its count is, to be raised per element.
    func open(_ tag: Tag) -> Int {
      self.tag(tag)
      let at = bytes.count
      word32(0)
      word32(0)
      return at
    }

    func countElement(at offset: Int) {
      let count = bytes.withUnsafeBytes {
        $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
      }
      bytes.withUnsafeMutableBytes {
        $0.storeBytes(
          of: (UInt32(littleEndian: count) + 1).littleEndian, toByteOffset: offset, as: UInt32.self)
      }
    }

    /// After the whole value is written: every container's byte length, so that a reader can
    /// step over it. Returns the end of the value at `offset`.
    func fixLengths(at offset: Int) throws -> Int {
      guard let tag = Tag(rawValue: bytes[offset]) else {
        throw StateCoder.corrupted([], "unknown tag \(bytes[offset]) at \(offset)")
      }
      switch tag {
      case .null, .no, .yes: return offset + 1
      case .int, .uint, .double: return offset + 9
      case .string: return offset + 5 + Int(word32(at: offset + 1))
      case .keyed, .unkeyed:
        let count = Int(word32(at: offset + 1))
        var position = offset + 9
        for _ in 0..<count {
          if tag == .keyed { position += 4 + Int(word32(at: position)) }
          position = try fixLengths(at: position)
        }
        let length = UInt32(position - offset - 9)
        bytes.withUnsafeMutableBytes {
          $0.storeBytes(of: length.littleEndian, toByteOffset: offset + 5, as: UInt32.self)
        }
        return position
      }
    }

    private func word32(at offset: Int) -> UInt32 {
      UInt32(
        littleEndian: bytes.withUnsafeBytes {
          $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
        })
    }
  }

  fileprivate struct StateEncoder: Encoder {
    let writer: Writer
    var codingPath: [any CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
      KeyedEncodingContainer(
        KeyedWriter(writer: writer, countAt: writer.open(.keyed), codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
      UnkeyedWriter(writer: writer, countAt: writer.open(.unkeyed), codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
      SingleWriter(writer: writer, codingPath: codingPath)
    }
  }

  /// Writes one value of any kind: what keyed, unkeyed and single-value containers share.
  fileprivate struct ValueWriter {
    let writer: Writer
    var codingPath: [any CodingKey]

    func null() { writer.tag(.null) }
    func bool(_ value: Bool) { writer.tag(value ? .yes : .no) }
    /// Primitives directly (a comparison of types each, no dynamic cast for the others); any
    /// other value by its own `encode(to:)`.
    func value<T: Encodable>(_ value: T) throws {
      if T.self == String.self {
        writer.string(value as! String)
      } else if T.self == Int.self {
        writer.int(Int64(value as! Int))
      } else if T.self == Int64.self {
        writer.int(value as! Int64)
      } else if T.self == Int32.self {
        writer.int(Int64(value as! Int32))
      } else if T.self == UInt64.self {
        writer.uint(value as! UInt64)
      } else if T.self == UInt32.self {
        writer.uint(UInt64(value as! UInt32))
      } else if T.self == Double.self {
        writer.double(value as! Double)
      } else if T.self == Bool.self {
        bool(value as! Bool)
      } else {
        try value.encode(to: StateEncoder(writer: writer, codingPath: codingPath))
      }
    }
  }

  fileprivate struct KeyedWriter<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let writer: Writer
    let countAt: Int
    var codingPath: [any CodingKey]

    private func entry(_ key: Key) -> ValueWriter {
      writer.countElement(at: countAt)
      writer.text(key.stringValue)
      return ValueWriter(writer: writer, codingPath: codingPath)
    }

    mutating func encodeNil(forKey key: Key) throws { entry(key).null() }
    mutating func encode(_ value: Bool, forKey key: Key) throws { entry(key).bool(value) }
    mutating func encode(_ value: String, forKey key: Key) throws { try entry(key).value(value) }
    mutating func encode(_ value: Double, forKey key: Key) throws { try entry(key).value(value) }
    mutating func encode(_ value: Float, forKey key: Key) throws {
      try entry(key).value(Double(value))
    }
    mutating func encode(_ value: Int, forKey key: Key) throws { try entry(key).value(value) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { try entry(key).value(Int(value)) }
    mutating func encode(_ value: Int16, forKey key: Key) throws {
      try entry(key).value(Int(value))
    }
    mutating func encode(_ value: Int32, forKey key: Key) throws { try entry(key).value(value) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { try entry(key).value(value) }
    mutating func encode(_ value: UInt, forKey key: Key) throws {
      try entry(key).value(UInt64(value))
    }
    mutating func encode(_ value: UInt8, forKey key: Key) throws {
      try entry(key).value(UInt64(value))
    }
    mutating func encode(_ value: UInt16, forKey key: Key) throws {
      try entry(key).value(UInt64(value))
    }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { try entry(key).value(value) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { try entry(key).value(value) }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
      try entry(key).value(value)
    }

    // nil is written, not left out: a reader then finds every key in the order written.
    mutating func encodeIfPresent(_ value: Bool?, forKey key: Key) throws {
      try present(value, key)
    }
    mutating func encodeIfPresent(_ value: String?, forKey key: Key) throws {
      try present(value, key)
    }
    mutating func encodeIfPresent(_ value: Double?, forKey key: Key) throws {
      try present(value, key)
    }
    mutating func encodeIfPresent(_ value: Float?, forKey key: Key) throws {
      try present(value.map(Double.init), key)
    }
    mutating func encodeIfPresent(_ value: Int?, forKey key: Key) throws { try present(value, key) }
    mutating func encodeIfPresent(_ value: Int8?, forKey key: Key) throws {
      try present(value.map(Int.init), key)
    }
    mutating func encodeIfPresent(_ value: Int16?, forKey key: Key) throws {
      try present(value.map(Int.init), key)
    }
    mutating func encodeIfPresent(_ value: Int32?, forKey key: Key) throws {
      try present(value, key)
    }
    mutating func encodeIfPresent(_ value: Int64?, forKey key: Key) throws {
      try present(value, key)
    }
    mutating func encodeIfPresent(_ value: UInt?, forKey key: Key) throws {
      try present(value.map(UInt64.init), key)
    }
    mutating func encodeIfPresent(_ value: UInt8?, forKey key: Key) throws {
      try present(value.map(UInt64.init), key)
    }
    mutating func encodeIfPresent(_ value: UInt16?, forKey key: Key) throws {
      try present(value.map(UInt64.init), key)
    }
    mutating func encodeIfPresent(_ value: UInt32?, forKey key: Key) throws {
      try present(value, key)
    }
    mutating func encodeIfPresent(_ value: UInt64?, forKey key: Key) throws {
      try present(value, key)
    }
    mutating func encodeIfPresent<T: Encodable>(_ value: T?, forKey key: Key) throws {
      try present(value, key)
    }

    private func present<T: Encodable>(_ value: T?, _ key: Key) throws {
      guard let value else { return entry(key).null() }
      try entry(key).value(value)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
      keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
      let path = entry(key).codingPath
      return KeyedEncodingContainer(
        KeyedWriter<NestedKey>(writer: writer, countAt: writer.open(.keyed), codingPath: path))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
      let path = entry(key).codingPath
      return UnkeyedWriter(writer: writer, countAt: writer.open(.unkeyed), codingPath: path)
    }

    mutating func superEncoder() -> any Encoder {
      StateEncoder(writer: writer, codingPath: entry(Key(stringValue: "super")!).codingPath)
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
      StateEncoder(writer: writer, codingPath: entry(key).codingPath)
    }
  }

  fileprivate struct UnkeyedWriter: UnkeyedEncodingContainer {
    let writer: Writer
    let countAt: Int
    var codingPath: [any CodingKey]
    private(set) var count = 0

    init(writer: Writer, countAt: Int, codingPath: [any CodingKey]) {
      self.writer = writer
      self.countAt = countAt
      self.codingPath = codingPath
    }

    private mutating func element() -> ValueWriter {
      writer.countElement(at: countAt)
      count += 1
      return ValueWriter(writer: writer, codingPath: codingPath)
    }

    mutating func encodeNil() throws { element().null() }
    mutating func encode(_ value: Bool) throws { element().bool(value) }
    mutating func encode(_ value: String) throws { try element().value(value) }
    mutating func encode(_ value: Double) throws { try element().value(value) }
    mutating func encode(_ value: Float) throws { try element().value(Double(value)) }
    mutating func encode(_ value: Int) throws { try element().value(value) }
    mutating func encode(_ value: Int8) throws { try element().value(Int(value)) }
    mutating func encode(_ value: Int16) throws { try element().value(Int(value)) }
    mutating func encode(_ value: Int32) throws { try element().value(value) }
    mutating func encode(_ value: Int64) throws { try element().value(value) }
    mutating func encode(_ value: UInt) throws { try element().value(UInt64(value)) }
    mutating func encode(_ value: UInt8) throws { try element().value(UInt64(value)) }
    mutating func encode(_ value: UInt16) throws { try element().value(UInt64(value)) }
    mutating func encode(_ value: UInt32) throws { try element().value(value) }
    mutating func encode(_ value: UInt64) throws { try element().value(value) }
    mutating func encode<T: Encodable>(_ value: T) throws { try element().value(value) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type)
      -> KeyedEncodingContainer<NestedKey>
    {
      _ = element()
      return KeyedEncodingContainer(
        KeyedWriter<NestedKey>(writer: writer, countAt: writer.open(.keyed), codingPath: codingPath)
      )
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
      _ = element()
      return UnkeyedWriter(writer: writer, countAt: writer.open(.unkeyed), codingPath: codingPath)
    }

    mutating func superEncoder() -> any Encoder {
      _ = element()
      return StateEncoder(writer: writer, codingPath: codingPath)
    }
  }

  fileprivate struct SingleWriter: SingleValueEncodingContainer {
    let writer: Writer
    var codingPath: [any CodingKey]

    private var value: ValueWriter { ValueWriter(writer: writer, codingPath: codingPath) }

    mutating func encodeNil() throws { value.null() }
    mutating func encode(_ value: Bool) throws { self.value.bool(value) }
    mutating func encode(_ value: String) throws { try self.value.value(value) }
    mutating func encode(_ value: Double) throws { try self.value.value(value) }
    mutating func encode(_ value: Float) throws { try self.value.value(Double(value)) }
    mutating func encode(_ value: Int) throws { try self.value.value(value) }
    mutating func encode(_ value: Int8) throws { try self.value.value(Int(value)) }
    mutating func encode(_ value: Int16) throws { try self.value.value(Int(value)) }
    mutating func encode(_ value: Int32) throws { try self.value.value(value) }
    mutating func encode(_ value: Int64) throws { try self.value.value(value) }
    mutating func encode(_ value: UInt) throws { try self.value.value(UInt64(value)) }
    mutating func encode(_ value: UInt8) throws { try self.value.value(UInt64(value)) }
    mutating func encode(_ value: UInt16) throws { try self.value.value(UInt64(value)) }
    mutating func encode(_ value: UInt32) throws { try self.value.value(value) }
    mutating func encode(_ value: UInt64) throws { try self.value.value(value) }
    mutating func encode<T: Encodable>(_ value: T) throws { try self.value.value(value) }
  }
}

// MARK: Reading

extension StateCoder {
  fileprivate final class Reader {
    let bytes: [UInt8]

    init(bytes: [UInt8]) { self.bytes = bytes }

    func tag(at offset: Int, _ path: [any CodingKey]) throws -> Tag {
      guard offset >= 0, offset < bytes.count, let tag = Tag(rawValue: bytes[offset]) else {
        throw StateCoder.corrupted(path, "no value at byte \(offset)")
      }
      return tag
    }

    /// 0 past the end: a damaged state then fails on a tag, never reads out of bounds.
    func word32(at offset: Int) -> UInt32 {
      guard offset >= 0, offset + 4 <= bytes.count else { return 0 }
      return UInt32(
        littleEndian: bytes.withUnsafeBytes {
          $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
        })
    }

    func word64(at offset: Int) -> UInt64 {
      guard offset >= 0, offset + 8 <= bytes.count else { return 0 }
      return UInt64(
        littleEndian: bytes.withUnsafeBytes {
          $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        })
    }

    /// The end of the value at `offset`, every part of it checked to lie within the bytes.
    func validate(at offset: Int) throws -> Int {
      func within(_ end: Int) throws -> Int {
        guard end <= bytes.count else { throw StateCoder.corrupted([], "the state is cut short") }
        return end
      }
      switch try tag(at: offset, []) {
      case .null, .no, .yes: return offset + 1
      case .int, .uint, .double: return try within(offset + 9)
      case .string:
        _ = try within(offset + 5)
        return try within(offset + 5 + Int(word32(at: offset + 1)))
      case .keyed, .unkeyed:
        let tag = try tag(at: offset, [])
        let header = try within(offset + 9)
        let end = try within(header + Int(word32(at: offset + 5)))
        var position = header
        for _ in 0..<word32(at: offset + 1) {
          if tag == .keyed {
            position = try within(try within(position + 4) + Int(word32(at: position)))
          }
          position = try validate(at: position)
        }
        guard position == end else {
          throw StateCoder.corrupted([], "a container's length is wrong")
        }
        return end
      }
    }

    /// The end of the value at `offset`: a step, whatever its size.
    func skip(at offset: Int, _ path: [any CodingKey]) throws -> Int {
      switch try tag(at: offset, path) {
      case .null, .no, .yes: return offset + 1
      case .int, .uint, .double: return offset + 9
      case .string: return offset + 5 + Int(word32(at: offset + 1))
      case .keyed, .unkeyed: return offset + 9 + Int(word32(at: offset + 5))
      }
    }

    /// Whether the key stored at `offset` (length, then UTF-8) is `key`.
    func keyMatches(at offset: Int, _ key: String) -> Bool {
      let length = Int(word32(at: offset))
      guard offset + 4 + length <= bytes.count else { return false }
      var key = key
      return key.withUTF8 { utf8 in
        guard utf8.count == length, let base = utf8.baseAddress else { return utf8.count == length }
        return bytes.withUnsafeBytes { memcmp($0.baseAddress! + offset + 4, base, length) == 0 }
      }
    }

    func text(at offset: Int) -> String {
      let start = min(offset + 4, bytes.count)
      let end = min(start + Int(word32(at: offset)), bytes.count)
      return String(decoding: bytes[start..<end], as: UTF8.self)
    }

    func string(at offset: Int, _ path: [any CodingKey]) throws -> String {
      guard try tag(at: offset, path) == .string else { throw mismatch(String.self, path) }
      return text(at: offset + 1)
    }

    func bool(at offset: Int, _ path: [any CodingKey]) throws -> Bool {
      switch try tag(at: offset, path) {
      case .yes: return true
      case .no: return false
      default: throw mismatch(Bool.self, path)
      }
    }

    func integer<T: FixedWidthInteger>(_ type: T.Type, at offset: Int, _ path: [any CodingKey])
      throws -> T
    {
      let value: T?
      switch try tag(at: offset, path) {
      case .int: value = T(exactly: Int64(bitPattern: word64(at: offset + 1)))
      case .uint: value = T(exactly: word64(at: offset + 1))
      default: throw mismatch(type, path)
      }
      guard let value else { throw StateCoder.corrupted(path, "\(type) out of range") }
      return value
    }

    func double(at offset: Int, _ path: [any CodingKey]) throws -> Double {
      guard try tag(at: offset, path) == .double else { throw mismatch(Double.self, path) }
      return Double(bitPattern: word64(at: offset + 1))
    }

    func value<T: Decodable>(_ type: T.Type, at offset: Int, _ path: [any CodingKey]) throws -> T {
      if T.self == String.self { return try string(at: offset, path) as! T }
      if T.self == Int.self { return try integer(Int.self, at: offset, path) as! T }
      if T.self == Int64.self { return try integer(Int64.self, at: offset, path) as! T }
      if T.self == Int32.self { return try integer(Int32.self, at: offset, path) as! T }
      if T.self == UInt64.self { return try integer(UInt64.self, at: offset, path) as! T }
      if T.self == UInt32.self { return try integer(UInt32.self, at: offset, path) as! T }
      if T.self == Bool.self { return try bool(at: offset, path) as! T }
      if T.self == Double.self { return try double(at: offset, path) as! T }
      return try T(from: StateDecoder(reader: self, offset: offset, codingPath: path))
    }

    private func mismatch(_ type: Any.Type, _ path: [any CodingKey]) -> DecodingError {
      DecodingError.typeMismatch(
        type, .init(codingPath: path, debugDescription: "another kind of value"))
    }
  }

  fileprivate struct StateDecoder: Decoder {
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

  fileprivate struct KeyedReader<Key: CodingKey>: KeyedDecodingContainerProtocol {
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

  fileprivate struct UnkeyedReader: UnkeyedDecodingContainer {
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

  fileprivate struct SingleReader: SingleValueDecodingContainer {
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
