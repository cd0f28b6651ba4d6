import Glibc

/// The writing half of `StateCoder`: an `Encoder` that appends tagged values to one buffer and
/// fills in every container's byte length at the end.
extension StateCoder {
  final class Writer {
    /// Unchecked: the writer is used by one thread at a time, and the runtime's exclusivity
    /// check on every append was a tenth of the encoding.
    @exclusivity(unchecked) var bytes: [UInt8] = []

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

    func duration(_ value: Duration) {
      tag(.duration)
      let parts = value.components
      word64(UInt64(bitPattern: parts.seconds))
      word64(UInt64(bitPattern: parts.attoseconds))
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
      case .duration: return offset + 17
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

  struct StateEncoder: Encoder {
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
  struct ValueWriter {
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
      } else if T.self == Duration.self {
        writer.duration(value as! Duration)
      } else {
        try value.encode(to: StateEncoder(writer: writer, codingPath: codingPath))
      }
    }
  }

  struct KeyedWriter<Key: CodingKey>: KeyedEncodingContainerProtocol {
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

  struct UnkeyedWriter: UnkeyedEncodingContainer {
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

  struct SingleWriter: SingleValueEncodingContainer {
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
